//! `model.safetensors`: the header read and checked tensor by tensor before any weight is
//! used (its length within the file; each tensor's dtype, shape and byte range, the ranges
//! within the data, in order, neither overlapping nor leaving bytes to no tensor), then the
//! network's parameters given from it ([`Parameters`]), each checked against the shape the
//! config gives it, its dtype a float one, its values finite. Every problem names the file and
//! the tensor. Names may carry a `bert.` prefix (as `BertForMaskedLM` and others save them).

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor};
use mmflow_pipeline::StageError;
use serde::Deserialize;

use super::folder::File;
use crate::bert::Parameters;

/// The prefix of a checkpoint saved from a model with heads (`bert.embeddings…`).
const BERT_PREFIX: &str = "bert.";
/// A name every BERT checkpoint holds, to tell whether its names carry the prefix.
const PROBE: &str = "embeddings.word_embeddings.weight";
/// The header's entry of free-form metadata (not a tensor).
const METADATA: &str = "__metadata__";

/// A safetensors dtype: its name in the header and its size in bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Dtype {
    name: &'static str,
    bits: usize,
    /// The float dtypes the encoder reads weights in, as candle knows them.
    float: Option<DType>,
}

/// Every dtype of the safetensors format.
const DTYPES: [Dtype; 22] = {
    const fn other(name: &'static str, bits: usize) -> Dtype {
        Dtype {
            name,
            bits,
            float: None,
        }
    }
    const fn float(name: &'static str, bits: usize, dtype: DType) -> Dtype {
        Dtype {
            name,
            bits,
            float: Some(dtype),
        }
    }
    [
        other("BOOL", 8),
        other("F4", 4),
        other("F6_E2M3", 6),
        other("F6_E3M2", 6),
        other("U8", 8),
        other("I8", 8),
        other("F8_E5M2", 8),
        other("F8_E4M3", 8),
        other("F8_E8M0", 8),
        other("F8_E4M3FNUZ", 8),
        other("F8_E5M2FNUZ", 8),
        other("I16", 16),
        other("U16", 16),
        float("F16", 16, DType::F16),
        float("BF16", 16, DType::BF16),
        other("I32", 32),
        other("U32", 32),
        float("F32", 32, DType::F32),
        other("C64", 64),
        float("F64", 64, DType::F64),
        other("I64", 64),
        other("U64", 64),
    ]
};

/// One tensor of the header: dtype, shape and where its bytes are in the data.
#[derive(Debug, Clone)]
struct Entry {
    dtype: Dtype,
    shape: Vec<usize>,
    start: usize,
    end: usize,
}

/// A tensor's entry as the header writes it.
#[derive(Debug, Deserialize)]
struct RawEntry {
    dtype: String,
    shape: Vec<usize>,
    data_offsets: (usize, usize),
}

/// The weights file, its header checked.
pub struct Weights {
    file: File,
    /// Where the data starts (after the 8-byte length and the header).
    data: usize,
    tensors: HashMap<String, Entry>,
    /// `""` or [`BERT_PREFIX`].
    prefix: &'static str,
}

/// Why a parameter could not be given: the file's fault (named), or candle's.
#[derive(Debug)]
pub enum LoadError {
    /// A tensor the network needs is missing, of another shape or dtype, or not finite.
    File(StageError),
    /// Candle failed on weights that passed every check.
    Candle(candle_core::Error),
}

impl From<candle_core::Error> for LoadError {
    fn from(e: candle_core::Error) -> Self {
        LoadError::Candle(e)
    }
}

/// Reads the header of the weights file and checks it.
pub fn read(file: File) -> Result<Weights, StageError> {
    let (data, header) = header(&file)?;
    let data_len = file.bytes.len() - data;
    let mut tensors = HashMap::with_capacity(header.len());
    for (name, value) in header {
        if name == METADATA {
            check_metadata(&file, value)?;
            continue;
        }
        let entry = entry(&file, &name, value, data_len)?;
        tensors.insert(name, entry);
    }
    check_layout(&file, &tensors, data_len)?;
    let prefix =
        if !tensors.contains_key(PROBE) && tensors.contains_key(&format!("{BERT_PREFIX}{PROBE}")) {
            BERT_PREFIX
        } else {
            ""
        };
    Ok(Weights {
        file,
        data,
        tensors,
        prefix,
    })
}

/// Where the data starts, and the header as a JSON object.
fn header(file: &File) -> Result<(usize, serde_json::Map<String, serde_json::Value>), StageError> {
    let bytes = &file.bytes;
    let Some(length) = bytes.first_chunk::<8>() else {
        return Err(file.error(format!(
            "{} bytes, shorter than the 8-byte length that starts a safetensors file",
            bytes.len()
        )));
    };
    let n = u64::from_le_bytes(*length);
    let after = (bytes.len() - 8) as u64;
    if n > after {
        return Err(file.error(format!(
            "its header length {n} is beyond the {after} bytes that follow it: not a safetensors file, or cut short"
        )));
    }
    let end = 8 + n as usize;
    let header = serde_json::from_slice(&bytes[8..end])
        .map_err(|e| file.error(format!("its header is not a JSON object of tensors ({e})")))?;
    Ok((end, header))
}

/// `__metadata__` is a map of strings.
fn check_metadata(file: &File, value: serde_json::Value) -> Result<(), StageError> {
    serde_json::from_value::<HashMap<String, String>>(value)
        .map(drop)
        .map_err(|e| file.error(format!("header entry `{METADATA}`: {e}")))
}

/// A tensor's entry, its dtype known and its byte range the size of its shape and within the data.
fn entry(
    file: &File,
    name: &str,
    value: serde_json::Value,
    data_len: usize,
) -> Result<Entry, StageError> {
    let fault = |message: String| file.error(format!("tensor `{name}`: {message}"));
    let raw: RawEntry = serde_json::from_value(value).map_err(|e| fault(e.to_string()))?;
    let Some(&dtype) = DTYPES.iter().find(|d| d.name == raw.dtype) else {
        return Err(fault(format!(
            "dtype `{}` is not a safetensors dtype",
            raw.dtype
        )));
    };
    let (start, end) = raw.data_offsets;
    if start > end {
        return Err(fault(format!(
            "data_offsets [{start}, {end}] run backwards"
        )));
    }
    if end > data_len {
        return Err(fault(format!(
            "data_offsets [{start}, {end}] lie outside the data ({data_len} bytes after the header)"
        )));
    }
    let bits = raw
        .shape
        .iter()
        .try_fold(dtype.bits, |n, &d| n.checked_mul(d));
    let needed = match bits {
        Some(bits) if bits % 8 == 0 => bits / 8,
        _ => {
            return Err(fault(format!(
                "shape {:?} of {} is not a whole number of bytes that fits in memory",
                raw.shape, dtype.name
            )))
        }
    };
    if end - start != needed {
        return Err(fault(format!(
            "data_offsets [{start}, {end}] hold {} bytes, but shape {:?} of {} is {needed} bytes",
            end - start,
            raw.shape,
            dtype.name
        )));
    }
    Ok(Entry {
        dtype,
        shape: raw.shape,
        start,
        end,
    })
}

/// The tensors' bytes follow one another without overlaps or gaps and end with the file (an
/// overlap is named before a gap: one tensor moved onto another leaves both).
fn check_layout(
    file: &File,
    tensors: &HashMap<String, Entry>,
    data_len: usize,
) -> Result<(), StageError> {
    let mut order: Vec<(&String, &Entry)> = tensors.iter().collect();
    order.sort_by_key(|(name, e)| (e.start, e.end, *name));
    let fault = |name: &str, e: &Entry, message: String| {
        file.error(format!(
            "tensor `{name}`: data_offsets [{}, {}] {message}",
            e.start, e.end
        ))
    };
    for pair in order.windows(2) {
        let ((before, b), (name, e)) = (pair[0], pair[1]);
        if e.start < b.end {
            return Err(fault(
                name,
                e,
                format!("overlap tensor `{before}`'s bytes (up to {})", b.end),
            ));
        }
    }
    let mut at = 0;
    for (name, e) in order {
        if e.start > at {
            return Err(fault(
                name,
                e,
                format!("leave bytes {at} to {} of the data to no tensor", e.start),
            ));
        }
        at = e.end;
    }
    if at != data_len {
        return Err(file.error(format!(
            "the data holds {data_len} bytes, but its tensors end at {at}"
        )));
    }
    Ok(())
}

/// The index of the first value that is NaN or infinite, reading `bytes` as `dtype`.
fn first_non_finite(bytes: &[u8], dtype: DType) -> Option<usize> {
    match dtype {
        DType::F32 => bytes
            .chunks_exact(4)
            .position(|b| !f32::from_le_bytes([b[0], b[1], b[2], b[3]]).is_finite()),
        DType::F64 => bytes
            .chunks_exact(8)
            .position(|b| !f64::from_le_bytes(b.try_into().unwrap_or([0; 8])).is_finite()),
        // A half float is NaN or infinite when its exponent bits are all set.
        DType::F16 => bytes
            .chunks_exact(2)
            .position(|b| u16::from_le_bytes([b[0], b[1]]) & 0x7c00 == 0x7c00),
        DType::BF16 => bytes
            .chunks_exact(2)
            .position(|b| u16::from_le_bytes([b[0], b[1]]) & 0x7f80 == 0x7f80),
        _ => None,
    }
}

impl Weights {
    /// An error about tensor `name`, naming the file.
    fn fault(&self, name: &str, message: impl std::fmt::Display) -> LoadError {
        LoadError::File(self.file.error(format!("tensor `{name}`: {message}")))
    }
}

impl Parameters for Weights {
    type Error = LoadError;

    fn get(&self, name: &str, shape: &[usize], device: &Device) -> Result<Tensor, LoadError> {
        let name = format!("{}{name}", self.prefix);
        let Some(e) = self.tensors.get(&name) else {
            return Err(self.fault(
                &name,
                "is missing (the network config.json describes needs it)",
            ));
        };
        let Some(dtype) = e.dtype.float else {
            return Err(self.fault(
                &name,
                format!(
                    "dtype {} is not a float dtype (F32, F16, BF16, F64)",
                    e.dtype.name
                ),
            ));
        };
        if e.shape != shape {
            return Err(self.fault(
                &name,
                format!("shape {:?}, but config.json describes {shape:?}", e.shape),
            ));
        }
        let bytes = &self.file.bytes[self.data + e.start..self.data + e.end];
        if let Some(i) = first_non_finite(bytes, dtype) {
            return Err(self.fault(&name, format!("value {i} is not finite (NaN or infinite)")));
        }
        let tensor = Tensor::from_raw_buffer(bytes, dtype, shape, &Device::Cpu)?
            .to_dtype(DType::F32)?
            .to_device(device)?;
        Ok(tensor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    /// A safetensors file of `tensors` (name, dtype, shape, bytes), laid out in order, with
    /// `edit` applied to the header before it is written.
    fn file(
        tensors: &[(&str, &str, Vec<usize>, Vec<u8>)],
        edit: impl FnOnce(&mut serde_json::Map<String, serde_json::Value>),
    ) -> File {
        let mut header = serde_json::Map::new();
        let mut data = Vec::new();
        for (name, dtype, shape, bytes) in tensors {
            header.insert(
                name.to_string(),
                serde_json::json!({"dtype": dtype, "shape": shape,
                    "data_offsets": [data.len(), data.len() + bytes.len()]}),
            );
            data.extend_from_slice(bytes);
        }
        edit(&mut header);
        let text = serde_json::Value::Object(header).to_string();
        let mut bytes = (text.len() as u64).to_le_bytes().to_vec();
        bytes.extend_from_slice(text.as_bytes());
        bytes.extend_from_slice(&data);
        File {
            path: PathBuf::from("m/model.safetensors"),
            bytes,
        }
    }

    fn f32s(values: &[f32]) -> Vec<u8> {
        values.iter().flat_map(|v| v.to_le_bytes()).collect()
    }

    fn two() -> Vec<(&'static str, &'static str, Vec<usize>, Vec<u8>)> {
        vec![
            ("a", "F32", vec![2, 2], f32s(&[1.0, 2.0, 3.0, 4.0])),
            ("b", "F16", vec![3], vec![0, 0x3c, 0, 0x40, 0, 0x42]),
        ]
    }

    fn error(file: File) -> String {
        match read(file) {
            Ok(_) => panic!("no error"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn tensors_are_read_by_name_shape_and_dtype() {
        let w = read(file(&two(), |_| {})).unwrap();
        let a = w.get("a", &[2, 2], &Device::Cpu).unwrap();
        assert_eq!(
            a.to_vec2::<f32>().unwrap(),
            vec![vec![1.0, 2.0], vec![3.0, 4.0]]
        );
        let b = w.get("b", &[3], &Device::Cpu).unwrap();
        assert_eq!(b.to_vec1::<f32>().unwrap(), vec![1.0, 2.0, 3.0]);
        let says = |e: LoadError, what: &str| match e {
            LoadError::File(e) => {
                let e = e.to_string();
                assert!(e.contains("m/model.safetensors") && e.contains(what), "{e}");
            }
            LoadError::Candle(e) => panic!("candle: {e}"),
        };
        says(
            w.get("a", &[4], &Device::Cpu).unwrap_err(),
            "tensor `a`: shape [2, 2], but config.json describes [4]",
        );
        says(
            w.get("c", &[4], &Device::Cpu).unwrap_err(),
            "tensor `c`: is missing",
        );
        let ints = read(file(&[("i", "I32", vec![1], vec![0; 4])], |_| {})).unwrap();
        says(
            ints.get("i", &[1], &Device::Cpu).unwrap_err(),
            "tensor `i`: dtype I32 is not a float dtype",
        );
        let nan = read(file(
            &[("n", "F32", vec![2], f32s(&[0.0, f32::NAN]))],
            |_| {},
        ))
        .unwrap();
        says(
            nan.get("n", &[2], &Device::Cpu).unwrap_err(),
            "tensor `n`: value 1 is not finite",
        );
        let inf = read(file(&[("h", "BF16", vec![1], vec![0x80, 0x7f])], |_| {})).unwrap();
        says(
            inf.get("h", &[1], &Device::Cpu).unwrap_err(),
            "tensor `h`: value 0 is not finite",
        );
    }

    #[test]
    fn a_bert_prefix_is_followed() {
        let t = vec![
            (
                "bert.embeddings.word_embeddings.weight",
                "F32",
                vec![1],
                f32s(&[5.0]),
            ),
            ("embeddings.LayerNorm.weight", "F32", vec![1], f32s(&[6.0])),
        ];
        let w = read(file(&t, |_| {})).unwrap();
        let got = w.get(PROBE, &[1], &Device::Cpu).unwrap();
        assert_eq!(got.to_vec1::<f32>().unwrap(), vec![5.0]);
    }

    #[test]
    fn bad_headers_name_the_file_and_the_tensor() {
        let offsets = |name: &'static str, s: usize, e: usize| {
            move |h: &mut serde_json::Map<String, serde_json::Value>| {
                h[name]["data_offsets"] = serde_json::json!([s, e]);
            }
        };
        let says = |e: String, what: &[&str]| {
            assert!(e.contains("m/model.safetensors"), "{e}");
            for w in what {
                assert!(e.contains(w), "`{e}` does not say `{w}`");
            }
        };
        says(
            error(File {
                path: "m/model.safetensors".into(),
                bytes: vec![1, 2],
            }),
            &["shorter than the 8-byte length"],
        );
        let mut long = file(&two(), |_| {});
        long.bytes[..8].copy_from_slice(&u64::MAX.to_le_bytes());
        says(
            error(long),
            &["header length 18446744073709551615 is beyond"],
        );
        let mut cut = file(&two(), |_| {});
        cut.bytes.truncate(cut.bytes.len() - 1);
        says(error(cut), &["tensor `b`", "outside the data (21 bytes"]);
        let mut extra = file(&two(), |_| {});
        extra.bytes.push(0);
        says(error(extra), &["holds 23 bytes, but its tensors end at 22"]);
        says(
            error(file(&two(), offsets("b", 14, 20))),
            &["tensor `b`", "overlap tensor `a`'s bytes"],
        );
        says(
            error(file(&two(), offsets("b", 18, 16))),
            &["tensor `b`", "run backwards"],
        );
        says(
            error(file(&two(), offsets("b", 16, 20))),
            &[
                "tensor `b`",
                "hold 4 bytes, but shape [3] of F16 is 6 bytes",
            ],
        );
        says(
            error(file(&two(), |h| h["a"]["dtype"] = "F17".into())),
            &["tensor `a`", "dtype `F17` is not a safetensors dtype"],
        );
        says(
            error(file(&two(), |h| {
                h["a"]["shape"] = serde_json::json!([1usize << 40, 1usize << 40])
            })),
            &["tensor `a`", "fits in memory"],
        );
        says(
            error(file(&two(), |h| h["a"]["shape"] = serde_json::json!([-1]))),
            &["tensor `a`", "invalid value"],
        );
        says(
            error(file(&two(), |h| {
                h.insert(METADATA.into(), serde_json::json!({"format": 1}));
            })),
            &["`__metadata__`"],
        );
        let gap = vec![
            ("a", "F32", vec![1], f32s(&[1.0])),
            ("b", "F32", vec![1], f32s(&[2.0])),
        ];
        says(
            error(file(&gap, offsets("a", 0, 0))),
            &["tensor `a`", "hold 0 bytes"],
        );
        let skipped = file(&gap, |h| {
            h.remove("a");
        });
        says(
            error(skipped),
            &["tensor `b`", "leave bytes 0 to 4 of the data to no tensor"],
        );
    }
}
