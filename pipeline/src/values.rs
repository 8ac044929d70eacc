//! Param values whose range is part of their type: a finite number ≥ 0, a finite number
//! greater than 0, a fraction in [0, 1), a count ≥ 1. Each refuses a value out of range when
//! it is read, with one message for every param of its type (located at the key by
//! [`crate::collect`]); each is serialised, documented and fingerprinted as the plain number it
//! holds.

use std::fmt;

use schemars::JsonSchema;
use serde::{Deserialize, Deserializer, Serialize};

/// A number type whose values satisfy `|v| ok`, told `refusal` otherwise.
macro_rules! ranged {
    ($(#[$doc:meta])* $name:ident($inner:ty), |$v:ident| $ok:expr, $refusal:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, PartialOrd, Serialize, JsonSchema)]
        #[serde(transparent)]
        pub struct $name($inner);

        impl $name {
            /// What a value out of range is told.
            pub const REFUSAL: &'static str = $refusal;

            /// `value`, which must be in range (for constants: checked at compile time there).
            pub const fn new(value: $inner) -> Self {
                let $v = value;
                assert!($ok, $refusal);
                $name(value)
            }

            /// `value` when it is in range.
            pub fn try_new(value: $inner) -> Option<Self> {
                let $v = value;
                ($ok).then_some($name(value))
            }

            /// The number.
            pub const fn get(self) -> $inner {
                self.0
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let value = <$inner>::deserialize(deserializer)?;
                $name::try_new(value).ok_or_else(|| serde::de::Error::custom(Self::REFUSAL))
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }
    };
}

ranged!(
    /// A finite number ≥ 0 (a weight, a tolerance, a standard deviation's floor).
    NonNegative(f64),
    |v| v.is_finite() && v >= 0.0,
    "must be a finite number ≥ 0"
);

ranged!(
    /// A finite number > 0 (a learning rate, a clipping norm).
    Positive(f64),
    |v| v.is_finite() && v > 0.0,
    "must be a positive number"
);

ranged!(
    /// A fraction in [0, 1): a dropout rate (1 would drop everything).
    Fraction(f32),
    |v| matches!(v, 0.0..1.0),
    "must be in [0, 1)"
);

ranged!(
    /// A count ≥ 1 (epochs, a batch's size, clusters, a length).
    AtLeastOne(usize),
    |v| v >= 1,
    "must be at least 1"
);

impl Fraction {
    /// No dropout.
    pub const ZERO: Fraction = Fraction(0.0);
}

impl AtLeastOne {
    /// One (a default).
    pub fn one() -> AtLeastOne {
        AtLeastOne(1)
    }

    /// Whether it is one (a default left out of canonical params).
    pub fn is_one(&self) -> bool {
        self.0 == 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize, Serialize)]
    struct Params {
        weight: NonNegative,
        count: AtLeastOne,
        #[serde(default = "one")]
        rate: Positive,
        #[serde(default)]
        dropout: Option<Fraction>,
    }

    fn one() -> Positive {
        Positive::new(1.0)
    }

    fn read(text: &str) -> Result<Params, String> {
        toml::from_str(text).map_err(|e| e.message().to_string())
    }

    #[test]
    fn values_in_range_are_read_and_written_as_plain_numbers() {
        let p = read("weight = 0\ncount = 3").unwrap();
        assert_eq!((p.weight.get(), p.count.get()), (0.0, 3));
        let p = read("weight = 2.5\ncount = 1").unwrap();
        assert_eq!(
            toml::to_string(&p).unwrap(),
            "weight = 2.5\ncount = 1\nrate = 1.0\n"
        );
    }

    #[test]
    fn values_out_of_range_are_refused_with_their_message() {
        for weight in ["-0.5", "nan", "inf", "-inf"] {
            let e = read(&format!("weight = {weight}\ncount = 1")).unwrap_err();
            assert_eq!(e, NonNegative::REFUSAL, "{weight}");
        }
        assert_eq!(
            read("weight = 1\ncount = 0").unwrap_err(),
            AtLeastOne::REFUSAL
        );
        for dropout in ["1", "1.5", "-0.1", "nan"] {
            let e = read(&format!("weight = 1\ncount = 1\ndropout = {dropout}")).unwrap_err();
            assert_eq!(e, Fraction::REFUSAL, "{dropout}");
        }
        assert_eq!(
            read("weight = 1\ncount = 1\ndropout = 0.5")
                .unwrap()
                .dropout,
            Some(Fraction::new(0.5))
        );
        for rate in ["0", "-1e-3", "nan", "inf"] {
            let e = read(&format!("weight = 1\ncount = 1\nrate = {rate}")).unwrap_err();
            assert_eq!(e, Positive::REFUSAL, "{rate}");
        }
        // A value of the wrong type keeps serde's own message.
        assert!(read("weight = \"a\"\ncount = 1")
            .unwrap_err()
            .contains("invalid type"));
        assert!(read("weight = 1\ncount = -1")
            .unwrap_err()
            .contains("invalid value"));
    }

    #[test]
    fn the_schema_is_the_plain_numbers() {
        assert_eq!(
            schemars::schema_for!(NonNegative).as_value()["type"],
            schemars::schema_for!(f64).as_value()["type"]
        );
        assert_eq!(
            schemars::schema_for!(AtLeastOne).as_value()["type"],
            schemars::schema_for!(usize).as_value()["type"]
        );
    }
}
