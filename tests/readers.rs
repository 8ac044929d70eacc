//! The file readers against `EXPECTED.json` (what numpy/h5py read from the same files).

use std::path::Path;

use serde_json::Value;

use mmflow_stages::ingest::align::Values;
use mmflow_stages::ingest::csd_file::CsdFile;
use mmflow_stages::ingest::pickle::{self, ArrayData, PyValue};

use crate::sources::{data, fixtures};

/// `EXPECTED.json` of a fixture folder: numpy/h5py's view of each of its files.
fn expected(root: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(root.join("EXPECTED.json")).unwrap()).unwrap()
}

/// Checks values against an EXPECTED entry: shape, finite sum, NaN/±inf counts, first values.
fn check_stats(what: &str, shape: &[usize], values: &[f64], want: &Value) {
    let want_shape: Vec<usize> = want["shape"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as usize)
        .collect();
    assert_eq!(shape, want_shape.as_slice(), "{what}: shape");
    let finite: f64 = values.iter().filter(|x| x.is_finite()).sum();
    let sum = want["finite_sum"].as_f64().unwrap();
    assert!(
        (finite - sum).abs() <= 1e-6 * sum.abs().max(1.0) + 1e-3,
        "{what}: finite sum {finite} vs {sum}"
    );
    let count = |f: fn(&f64) -> bool| values.iter().filter(|x| f(x)).count() as u64;
    assert_eq!(
        count(|x| x.is_nan()),
        want["nan"].as_u64().unwrap(),
        "{what}: NaN count"
    );
    assert_eq!(
        count(|x| *x == f64::INFINITY),
        want["posinf"].as_u64().unwrap(),
        "{what}: +inf count"
    );
    assert_eq!(
        count(|x| *x == f64::NEG_INFINITY),
        want["neginf"].as_u64().unwrap(),
        "{what}: -inf count"
    );
    for (i, f) in want["first"].as_array().unwrap().iter().enumerate() {
        // JSON's decimal text of a float may parse one ulp away: far below float32 resolution.
        let w = f.as_f64().unwrap();
        assert!(
            (values[i] - w).abs() <= 1e-12 * w.abs().max(1e-30),
            "{what}: value {i}: {} vs {w}",
            values[i]
        );
    }
}

#[test]
fn every_csd_fixture_reads_as_h5py_reads_it() {
    // Four files of MOSI and MOSEI in each of the basic and edge sets.
    assert_eq!(check_csd_files(&fixtures()), 16);
}

/// With `MMFLOW_FULL_FIXTURES` naming the full fixture sets tests/data/sdk was cut from
/// (same layout), the readers are checked on every video and clip of them as well.
#[test]
fn the_full_fixture_sets_read_as_numpy_and_h5py_read_them_when_given() {
    let Some(root) = std::env::var_os("MMFLOW_FULL_FIXTURES") else {
        return;
    };
    let root = Path::new(&root);
    assert!(check_csd_files(root) > 0);
    assert!(check_pickles(root).0 > 0);
}

/// Every .csd file of `root`'s EXPECTED.json reads as h5py read it; returns their number.
fn check_csd_files(root: &Path) -> usize {
    let expected = expected(root);
    let mut files = 0;
    for (name, want) in expected.as_object().unwrap() {
        if !name.ends_with(".csd") {
            continue;
        }
        files += 1;
        let csd = CsdFile::open(&root.join(name)).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(csd.root(), want["root"].as_str().unwrap(), "{name}");
        let videos: Vec<&String> = want["videos"].as_object().unwrap().keys().collect();
        assert_eq!(
            csd.videos().iter().collect::<Vec<_>>(),
            videos,
            "{name}: videos"
        );
        for (video, arrays) in want["videos"].as_object().unwrap() {
            let seq = csd.read(video).unwrap();
            let values: Vec<f64> = match &seq.values {
                Values::F32(v) => v.iter().map(|&x| x as f64).collect(),
                Values::F64(v) => v.clone(),
            };
            let dtype = arrays["features"]["dtype"].as_str().unwrap();
            assert_eq!(
                matches!(seq.values, Values::F64(_)),
                dtype == "float64",
                "{name} {video}: dtype"
            );
            check_stats(
                &format!("{name} {video} features"),
                &[seq.len(), seq.dim],
                &values,
                &arrays["features"],
            );
            let intervals: Vec<f64> = seq.intervals.iter().flat_map(|i| *i).collect();
            check_stats(
                &format!("{name} {video} intervals"),
                &[seq.len(), 2],
                &intervals,
                &arrays["intervals"],
            );
        }
        for (key, value) in want["metadata"].as_object().unwrap() {
            assert_eq!(
                csd.metadata().get(key).map(String::as_str),
                value.as_str(),
                "{name}: metadata {key}"
            );
        }
    }
    files
}

fn array_values(v: &PyValue) -> (Vec<usize>, Vec<f64>) {
    match v {
        PyValue::Array(a) => {
            let values = match &a.data {
                ArrayData::F32(x) => x.iter().map(|&v| v as f64).collect(),
                ArrayData::F64(x) => x.clone(),
                ArrayData::I64(x) => x.iter().map(|&v| v as f64).collect(),
                other => panic!("not numeric: {other:?}"),
            };
            (a.shape.clone(), values)
        }
        PyValue::List(items) => (
            vec![items.len()],
            items
                .iter()
                .map(|x| match x {
                    PyValue::Int(i) => *i as f64,
                    PyValue::Float(f) => *f,
                    other => panic!("not numeric: {other:?}"),
                })
                .collect(),
        ),
        other => panic!("not an array: {other:?}"),
    }
}

fn strings(v: &PyValue) -> Vec<String> {
    match v {
        PyValue::Array(a) => match &a.data {
            ArrayData::Str(s) => s.clone(),
            ArrayData::Bytes(b) => b
                .iter()
                .map(|x| String::from_utf8(x.clone()).unwrap())
                .collect(),
            ArrayData::Object(items) => items
                .iter()
                .map(|x| match x {
                    PyValue::Str(s) => s.clone(),
                    other => panic!("{other:?}"),
                })
                .collect(),
            other => panic!("{other:?}"),
        },
        other => panic!("{other:?}"),
    }
}

#[test]
fn every_mmsa_pickle_reads_as_numpy_reads_it() {
    let (files, arrays) = check_pickles(&fixtures());
    // numpy 1.x protocol 4, numpy 2.x protocols 4 and 5: every split, every key.
    assert_eq!(files, 3);
    assert!(arrays >= 30 * files, "{arrays}");
}

/// Every .pkl file of `root`'s EXPECTED.json reads as numpy read it; returns the number of
/// files and of arrays checked.
fn check_pickles(root: &Path) -> (usize, usize) {
    let expected = expected(root);
    let (mut files, mut arrays) = (0, 0);
    for (name, want) in expected.as_object().unwrap() {
        if !name.ends_with(".pkl") {
            continue;
        }
        files += 1;
        let bytes = std::fs::read(root.join(name)).unwrap();
        let pickled = pickle::read(&bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
        for (split, keys) in want.as_object().unwrap() {
            let got = pickled
                .get(split)
                .unwrap_or_else(|| panic!("{name}: no split {split}"));
            for (key, stats) in keys.as_object().unwrap() {
                let value = got
                    .get(key)
                    .unwrap_or_else(|| panic!("{name}: {split}.{key} missing"));
                let what = format!("{name} {split}.{key}");
                if stats["dtype"] == "str" {
                    let s = strings(value);
                    assert_eq!(
                        s.len(),
                        stats["shape"][0].as_u64().unwrap() as usize,
                        "{what}"
                    );
                    for (i, f) in stats["first"].as_array().unwrap().iter().enumerate() {
                        assert_eq!(s[i], f.as_str().unwrap(), "{what}");
                    }
                } else {
                    let (shape, values) = array_values(value);
                    check_stats(&what, &shape, &values, stats);
                }
                arrays += 1;
            }
        }
    }
    (files, arrays)
}

#[test]
fn protocols_2_and_3_read_like_protocol_4() {
    let bytes = std::fs::read(fixtures().join("mmsa_mosei_numpy1_p4.pkl")).unwrap();
    let full = pickle::read(&bytes).unwrap();
    let train = full.get("train").unwrap();
    for protocol in ["p2", "p3"] {
        let bytes = std::fs::read(data().join(format!("pickle/{protocol}.pkl"))).unwrap();
        let small = pickle::read(&bytes).unwrap_or_else(|e| panic!("{protocol}: {e}"));
        let small = small.get("train").unwrap();
        for key in ["audio", "vision", "text", "regression_labels"] {
            let (shape, values) = array_values(small.get(key).unwrap());
            let (full_shape, full_values) = array_values(train.get(key).unwrap());
            assert_eq!(shape[0], 2);
            assert_eq!(&shape[1..], &full_shape[1..]);
            let n = values.len();
            assert!(
                values
                    .iter()
                    .zip(&full_values[..n])
                    .all(|(a, b)| a == b || (a.is_nan() && b.is_nan())),
                "{protocol} {key}"
            );
        }
        assert_eq!(
            strings(small.get("id").unwrap()),
            strings(train.get("id").unwrap())[..2].to_vec()
        );
    }
}

#[test]
fn a_pickle_that_would_run_code_is_refused() {
    let bytes = std::fs::read(data().join("pickle/evil.pkl")).unwrap();
    let err = pickle::read(&bytes).unwrap_err();
    assert!(
        err.message.contains("refusing global `posix.system`"),
        "{err}"
    );
}
