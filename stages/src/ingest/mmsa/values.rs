//! The small per-segment arrays of a split — labels, raw text and sequence lengths — each
//! checked against the split's ids as MMSA's loader would use it: one label per id, a finite
//! number; a length per id, a whole number within the sequence; a text per id. A value wrong
//! at one row is a [`Refusal::Row`], which the stage reports with that row's segment id.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use super::super::pickle::{ArrayData, NdArray, PyValue, Source};

/// Why a split's array was refused: as a whole, or at one row (the caller names its segment).
#[derive(Debug, PartialEq)]
pub(super) enum Refusal {
    Array(String),
    Row(usize, String),
}

impl From<String> for Refusal {
    fn from(message: String) -> Self {
        Refusal::Array(message)
    }
}

/// The array, moved out when nothing else references it, else copied (small arrays only:
/// ids, labels and lengths; feature arrays are read a chunk of rows at a time).
pub(super) fn owned(array: Arc<NdArray>) -> NdArray {
    Arc::try_unwrap(array).unwrap_or_else(|shared| (*shared).clone())
}

/// A small array with its elements in memory: read from the file when they lie there.
fn loaded<S: Source + ?Sized>(array: Arc<NdArray>, source: &S) -> Result<NdArray, String> {
    match array.data {
        ArrayData::Stored(_) => array.load(source).map_err(|e| e.to_string()),
        _ => Ok(owned(array)),
    }
}

/// A split's raw text: one UTF-8 string per segment, from a string array `[N]` (`U` or `S`,
/// items as numpy reads them), an object array or a list.
pub(super) fn texts_of(value: PyValue) -> Result<Vec<String>, String> {
    let items = match value {
        PyValue::Array(a) => {
            if a.shape.len() != 1 {
                return Err(format!("has shape {:?}, expected N strings", a.shape));
            }
            match owned(a).data {
                ArrayData::Str(v) => return Ok(v),
                ArrayData::Bytes(v) => v.into_iter().map(PyValue::Bytes).collect(),
                ArrayData::Object(v) => v,
                other => return Err(format!("is a {} array, expected strings", other.kind())),
            }
        }
        PyValue::List(v) | PyValue::Tuple(v) => v,
        other => return Err(format!("is a {}, expected strings", other.type_name())),
    };
    items
        .into_iter()
        .enumerate()
        .map(|(i, v)| match v {
            PyValue::Str(s) => Ok(s),
            PyValue::Bytes(b) => String::from_utf8(b)
                .map_err(|_| format!("item {i} is bytes that are not UTF-8 text")),
            other => Err(format!(
                "item {i} is a {}, expected a str",
                other.type_name()
            )),
        })
        .collect()
}

/// One number of a numeric array or list, as the file holds it (for exact checks and
/// messages that show it as numpy would).
#[derive(Debug, Clone, Copy, PartialEq)]
enum Number {
    Int(i64),
    Float32(f32),
    Float64(f64),
}

impl fmt::Display for Number {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Number::Int(v) => write!(f, "{v}"),
            // Debug: `2.0` (a float, as the file holds it), `1e300` rather than 301 digits.
            Number::Float32(v) => write!(f, "{v:?}"),
            Number::Float64(v) => write!(f, "{v:?}"),
        }
    }
}

/// The numbers of an array in memory (ints, floats), in C order.
fn numbers(array: NdArray) -> Result<Vec<Number>, String> {
    Ok(match array.data {
        ArrayData::I64(v) => v.into_iter().map(Number::Int).collect(),
        ArrayData::F32(v) => v.into_iter().map(Number::Float32).collect(),
        ArrayData::F64(v) => v.into_iter().map(Number::Float64).collect(),
        other => return Err(format!("is a {} array, expected numbers", other.kind())),
    })
}

/// The shapes a layout's label arrays may have: `N` (one label per id), then one of
/// `trailing` (`[]` for `[N]`, `[1]` for `[N, 1]`, …).
pub(super) struct LabelShapes {
    pub(super) layout: &'static str,
    pub(super) trailing: &'static [&'static [usize]],
}

impl LabelShapes {
    /// Whether `shape` holds one label for each of `n` ids in a shape the layout allows.
    fn check(&self, shape: &[usize], n: usize) -> Result<(), String> {
        match shape.split_first() {
            Some((&count, rest)) if self.trailing.contains(&rest) => {
                if count == n {
                    Ok(())
                } else {
                    Err(format!("{count} values for {n} ids"))
                }
            }
            _ => Err(format!(
                "has shape {shape:?}; the `{}` layout takes one label per id: shape {}",
                self.layout,
                self.listed(n)
            )),
        }
    }

    /// The allowed shapes for `n` ids, for messages: `[n] or [n, 1]`.
    fn listed(&self, n: usize) -> String {
        let shapes: Vec<String> = self
            .trailing
            .iter()
            .map(|rest| format!("{:?}", [&[n][..], rest].concat()))
            .collect();
        shapes.join(" or ")
    }
}

/// The labels of array `key`: one per id (`n`), in a shape `shapes` allows, each a finite
/// number once cast to float32 (as MMSA casts them).
pub(super) fn take_labels<S: Source + ?Sized>(
    items: &mut BTreeMap<String, PyValue>,
    key: &str,
    n: usize,
    shapes: &LabelShapes,
    source: &S,
) -> Result<Vec<f32>, Refusal> {
    label_numbers(items.remove(key), n, shapes, source)?
        .into_iter()
        .enumerate()
        .map(|(row, x)| label(x).map_err(|m| Refusal::Row(row, m)))
        .collect()
}

/// The numbers of a label array, once its type and shape are right.
fn label_numbers<S: Source + ?Sized>(
    value: Option<PyValue>,
    n: usize,
    shapes: &LabelShapes,
    source: &S,
) -> Result<Vec<Number>, String> {
    let a = match value {
        Some(PyValue::Array(a)) => a,
        Some(other) => {
            return Err(format!(
                "is a {}, expected a float array",
                other.type_name()
            ))
        }
        None => return Err("is missing".into()),
    };
    if !a.data.is_number() {
        return Err(format!("is a {} array, expected numbers", a.kind()));
    }
    shapes.check(&a.shape, n)?;
    numbers(loaded(a, source)?)
}

/// A label as float32, when finite.
fn label(x: Number) -> Result<f32, String> {
    let value = match x {
        Number::Int(v) => v as f32,
        Number::Float32(v) => v,
        Number::Float64(v) => v as f32,
    };
    if value.is_finite() {
        Ok(value)
    } else {
        Err(format!("label {x} is not a finite float32"))
    }
}

/// A modality's lengths (`<key>_lengths`): how many of its `steps` steps each of `n` ids
/// keeps, from an int or float array `[N]` or a list; `None` is no lengths. A length is a whole
/// number from 0 to `steps` (a float length must be one: NaN, ±inf, negative and fractional
/// ones are refused, as is one past the sequence).
pub(super) fn lengths_of<S: Source + ?Sized>(
    value: PyValue,
    n: usize,
    steps: usize,
    source: &S,
) -> Result<Option<Vec<usize>>, Refusal> {
    let values = match value {
        PyValue::None => return Ok(None),
        PyValue::Array(a) => length_array(a, n, source)?,
        PyValue::List(items) | PyValue::Tuple(items) => length_list(items, n)?,
        other => return Err(format!("is a {}, expected lengths", other.type_name()).into()),
    };
    values
        .into_iter()
        .enumerate()
        .map(|(row, x)| length(x, steps).map_err(|m| Refusal::Row(row, m)))
        .collect::<Result<_, _>>()
        .map(Some)
}

/// The numbers of a lengths array: ints or floats, one per id.
fn length_array<S: Source + ?Sized>(
    a: Arc<NdArray>,
    n: usize,
    source: &S,
) -> Result<Vec<Number>, String> {
    if !a.data.is_number() {
        return Err(format!("is a {} array, expected lengths", a.kind()));
    }
    if a.shape.len() != 1 {
        return Err(format!(
            "has shape {:?}, expected one length per id: shape [{n}]",
            a.shape
        ));
    }
    if a.len() != n {
        return Err(format!("{} lengths for {n} ids", a.len()));
    }
    numbers(loaded(a, source)?)
}

/// The numbers of a lengths list: ints or floats (numpy scalars read as such), one per id.
fn length_list(items: Vec<PyValue>, n: usize) -> Result<Vec<Number>, Refusal> {
    if items.len() != n {
        return Err(format!("{} lengths for {n} ids", items.len()).into());
    }
    items
        .into_iter()
        .enumerate()
        .map(|(row, v)| match v {
            PyValue::Int(i) => Ok(Number::Int(i)),
            PyValue::Float(f) => Ok(Number::Float64(f)),
            other => Err(Refusal::Row(
                row,
                format!("length is a {}, expected an int", other.type_name()),
            )),
        })
        .collect()
}

/// A length: a whole number from 0 to `steps`.
fn length(x: Number, steps: usize) -> Result<usize, String> {
    let whole = match x {
        Number::Int(v) => Ok(v),
        Number::Float32(v) => whole_number(f64::from(v)),
        Number::Float64(v) => whole_number(v),
    }
    .map_err(|why| format!("length {x} {why}"))?;
    match usize::try_from(whole) {
        Err(_) => Err(format!("length {x} is negative")),
        Ok(len) if len > steps => Err(format!(
            "length {x} is past the {steps} steps of the sequences"
        )),
        Ok(len) => Ok(len),
    }
}

/// A float that is a whole number, as an int (saturating past the range of an i64, far past
/// any sequence), or why it is not one.
fn whole_number(f: f64) -> Result<i64, &'static str> {
    if f.is_nan() {
        Err("is NaN")
    } else if f.is_infinite() {
        Err("is infinite")
    } else if f.fract() != 0.0 {
        Err("is not a whole number")
    } else {
        Ok(f as i64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strs(items: &[&str]) -> Vec<PyValue> {
        items.iter().map(|s| PyValue::Str(s.to_string())).collect()
    }

    fn array(shape: Vec<usize>, data: ArrayData) -> PyValue {
        PyValue::Array(Arc::new(NdArray { shape, data }))
    }

    /// No file: every array of these tests is in memory.
    const NO_FILE: &[u8] = &[];

    #[test]
    fn raw_text_must_be_strings() {
        assert_eq!(
            texts_of(PyValue::List(strs(&["你好", ""]))).unwrap(),
            ["你好", ""]
        );
        assert_eq!(
            texts_of(array(
                vec![1],
                ArrayData::Object(vec![PyValue::Bytes("é".as_bytes().to_vec())])
            ))
            .unwrap(),
            ["é"]
        );
        assert_eq!(
            texts_of(array(vec![1], ArrayData::Bytes(vec![b"a\0b".to_vec()]))).unwrap(),
            ["a\0b"]
        );
        for (value, says) in [
            (
                PyValue::List(vec![PyValue::Str("a".into()), PyValue::Float(1.0)]),
                "item 1 is a float, expected a str",
            ),
            (
                PyValue::List(vec![PyValue::Bytes(vec![0xff])]),
                "item 0 is bytes that are not UTF-8",
            ),
            (
                array(vec![1], ArrayData::Bytes(vec![vec![0xff]])),
                "item 0 is bytes that are not UTF-8",
            ),
            (
                array(vec![2], ArrayData::F64(vec![1.0, 2.0])),
                "float64 array, expected strings",
            ),
            (
                array(vec![1, 2], ArrayData::Str(vec!["a".into(), "b".into()])),
                "has shape [1, 2]",
            ),
            (PyValue::Int(3), "is a int, expected strings"),
        ] {
            let e = texts_of(value).unwrap_err();
            assert!(e.contains(says), "{e}");
        }
    }

    const MMSA: LabelShapes = LabelShapes {
        layout: "mmsa",
        trailing: &[&[], &[1]],
    };

    fn labels(value: PyValue, n: usize) -> Result<Vec<f32>, Refusal> {
        let mut items = [("l".to_string(), value)].into_iter().collect();
        take_labels(&mut items, "l", n, &MMSA, NO_FILE)
    }

    #[test]
    fn labels_are_one_finite_number_per_id_in_a_shape_the_layout_allows() {
        let two = |shape| array(shape, ArrayData::F64(vec![0.5, -1.25]));
        assert_eq!(labels(two(vec![2]), 2).unwrap(), [0.5, -1.25]);
        assert_eq!(labels(two(vec![2, 1]), 2).unwrap(), [0.5, -1.25]);
        let ints = array(vec![2], ArrayData::I64(vec![3, -2]));
        assert_eq!(labels(ints, 2).unwrap(), [3.0, -2.0]);
        for (shape, n, says) in [
            (
                vec![1, 2],
                2,
                "has shape [1, 2]; the `mmsa` layout takes one label per id: shape [2] or [2, 1]",
            ),
            (vec![2, 1, 1], 2, "has shape [2, 1, 1]"),
            (vec![2], 3, "2 values for 3 ids"),
            (vec![], 1, "has shape []"),
        ] {
            let e = labels(two(shape), n).unwrap_err();
            assert!(matches!(&e, Refusal::Array(m) if m.contains(says)), "{e:?}");
        }
        for (x, says) in [
            (f64::NAN, "label NaN is not a finite float32"),
            (f64::NEG_INFINITY, "label -inf"),
            (1e300, "label 1e300 is not a finite float32"),
        ] {
            let e = labels(array(vec![2], ArrayData::F64(vec![0.0, x])), 2).unwrap_err();
            assert!(
                matches!(&e, Refusal::Row(1, m) if m.contains(says)),
                "{e:?}"
            );
        }
        let bools = array(vec![2], ArrayData::Bool(vec![true, false]));
        assert!(matches!(labels(bools, 2), Err(Refusal::Array(m)) if m.contains("bool array")));
    }

    fn lengths(value: PyValue, n: usize, steps: usize) -> Result<Option<Vec<usize>>, Refusal> {
        lengths_of(value, n, steps, NO_FILE)
    }

    #[test]
    fn lengths_are_whole_numbers_within_the_sequence() {
        let floats = array(vec![3], ArrayData::F32(vec![0.0, 2.0, 5.0]));
        assert_eq!(lengths(floats, 3, 5).unwrap(), Some(vec![0, 2, 5]));
        let ints = array(vec![2], ArrayData::I64(vec![1, 4]));
        assert_eq!(lengths(ints, 2, 4).unwrap(), Some(vec![1, 4]));
        let list = PyValue::List(vec![PyValue::Int(3), PyValue::Float(-0.0)]);
        assert_eq!(lengths(list, 2, 3).unwrap(), Some(vec![3, 0]));
        assert_eq!(lengths(PyValue::None, 2, 3).unwrap(), None);
        for (x, says) in [
            (f32::NAN, "length NaN is NaN"),
            (2.7, "length 2.7 is not a whole number"),
            (-1.0, "length -1.0 is negative"),
            (f32::INFINITY, "length inf is infinite"),
            (6.0, "length 6.0 is past the 5 steps of the sequences"),
            (1e30, "past the 5 steps"),
        ] {
            let e = lengths(array(vec![2], ArrayData::F32(vec![1.0, x])), 2, 5).unwrap_err();
            assert!(
                matches!(&e, Refusal::Row(1, m) if m.contains(says)),
                "{x}: {e:?}"
            );
        }
        let e = lengths(array(vec![1], ArrayData::I64(vec![-3])), 1, 5).unwrap_err();
        assert_eq!(e, Refusal::Row(0, "length -3 is negative".into()));
        let list = PyValue::List(vec![PyValue::Int(1), PyValue::Bool(true)]);
        assert_eq!(
            lengths(list, 2, 5).unwrap_err(),
            Refusal::Row(1, "length is a bool, expected an int".into())
        );
        for (value, says) in [
            (
                array(vec![1, 2], ArrayData::I64(vec![1, 2])),
                "has shape [1, 2], expected one length per id: shape [2]",
            ),
            (
                array(vec![0], ArrayData::I64(vec![])),
                "0 lengths for 2 ids",
            ),
            (PyValue::List(vec![PyValue::Int(1)]), "1 lengths for 2 ids"),
            (
                array(vec![2], ArrayData::Bool(vec![true, true])),
                "bool array",
            ),
            (PyValue::Str("5".into()), "is a str, expected lengths"),
        ] {
            let e = lengths(value, 2, 5).unwrap_err();
            assert!(matches!(&e, Refusal::Array(m) if m.contains(says)), "{e:?}");
        }
    }
}
