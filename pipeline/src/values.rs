//! Param values whose range is part of their type: a finite number ≥ 0, a finite number
//! greater than 0, a fraction in [0, 1), a count ≥ 1. Each refuses a value out of range when it is read, with one
//! message for every param of its type (located at the key by [`crate::collect`]); each is
//! serialised, documented and fingerprinted as the plain number it holds.

use std::fmt;

use schemars::JsonSchema;
use serde::{Deserialize, Deserializer, Serialize};

/// A finite number ≥ 0 (a weight, a tolerance, a standard deviation's floor).
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd, Serialize, JsonSchema)]
#[serde(transparent)]
pub struct NonNegative(f64);

impl NonNegative {
    /// What a value out of range is told.
    pub const REFUSAL: &'static str = "must be a finite number ≥ 0";

    /// `value`, which must be finite and ≥ 0 (for constants; checked at compile time there).
    pub const fn new(value: f64) -> Self {
        assert!(
            value.is_finite() && value >= 0.0,
            "must be a finite number ≥ 0"
        );
        NonNegative(value)
    }

    /// `value` when it is finite and ≥ 0.
    pub fn try_new(value: f64) -> Option<Self> {
        (value.is_finite() && value >= 0.0).then_some(NonNegative(value))
    }

    /// The number.
    pub const fn get(self) -> f64 {
        self.0
    }
}

impl<'de> Deserialize<'de> for NonNegative {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = f64::deserialize(deserializer)?;
        NonNegative::try_new(value).ok_or_else(|| serde::de::Error::custom(Self::REFUSAL))
    }
}

impl fmt::Display for NonNegative {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A finite number > 0 (a learning rate, a clipping norm).
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd, Serialize, JsonSchema)]
#[serde(transparent)]
pub struct Positive(f64);

impl Positive {
    /// What a value out of range is told.
    pub const REFUSAL: &'static str = "must be a positive number";

    /// `value`, which must be finite and > 0 (for constants; checked at compile time there).
    pub const fn new(value: f64) -> Self {
        assert!(
            value.is_finite() && value > 0.0,
            "must be a positive number"
        );
        Positive(value)
    }

    /// `value` when it is finite and > 0.
    pub fn try_new(value: f64) -> Option<Self> {
        (value.is_finite() && value > 0.0).then_some(Positive(value))
    }

    /// The number.
    pub const fn get(self) -> f64 {
        self.0
    }
}

impl<'de> Deserialize<'de> for Positive {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = f64::deserialize(deserializer)?;
        Positive::try_new(value).ok_or_else(|| serde::de::Error::custom(Self::REFUSAL))
    }
}

impl fmt::Display for Positive {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A fraction in [0, 1): a dropout rate (1 would drop everything).
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd, Serialize, JsonSchema)]
#[serde(transparent)]
pub struct Fraction(f32);

impl Fraction {
    /// What a value out of range is told.
    pub const REFUSAL: &'static str = "must be in [0, 1)";
    /// No dropout.
    pub const ZERO: Fraction = Fraction(0.0);

    /// `value`, which must be in [0, 1) (for constants; checked at compile time there).
    pub const fn new(value: f32) -> Self {
        assert!(value >= 0.0 && value < 1.0, "must be in [0, 1)");
        Fraction(value)
    }

    /// `value` when it is in [0, 1).
    pub fn try_new(value: f32) -> Option<Self> {
        (0.0..1.0).contains(&value).then_some(Fraction(value))
    }

    /// The number.
    pub const fn get(self) -> f32 {
        self.0
    }
}

impl<'de> Deserialize<'de> for Fraction {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = f32::deserialize(deserializer)?;
        Fraction::try_new(value).ok_or_else(|| serde::de::Error::custom(Self::REFUSAL))
    }
}

impl fmt::Display for Fraction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A count ≥ 1 (epochs, a batch's size, clusters, a length).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, JsonSchema)]
#[serde(transparent)]
pub struct AtLeastOne(usize);

impl AtLeastOne {
    /// What a value out of range is told.
    pub const REFUSAL: &'static str = "must be at least 1";

    /// `value`, which must be ≥ 1 (for constants; checked at compile time there).
    pub const fn new(value: usize) -> Self {
        assert!(value >= 1, "must be at least 1");
        AtLeastOne(value)
    }

    /// `value` when it is ≥ 1.
    pub fn try_new(value: usize) -> Option<Self> {
        (value >= 1).then_some(AtLeastOne(value))
    }

    /// The count.
    pub const fn get(self) -> usize {
        self.0
    }
}

impl<'de> Deserialize<'de> for AtLeastOne {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = usize::deserialize(deserializer)?;
        AtLeastOne::try_new(value).ok_or_else(|| serde::de::Error::custom(Self::REFUSAL))
    }
}

impl fmt::Display for AtLeastOne {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
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
