//! Per-video arrays in a numpy `.npz` (a zip of `.npy` files, read with `ndarray-npy`).
//!
//! Two layouts: `<video>/features` [T, D] with `<video>/intervals` [T, 2] (the SDK's own
//! export layout), or one `<video>` array [T, D] per video, timed by `fps`.
//!
//! Sizes come from the file: each member's `.npy` header is parsed here first, and its
//! shape × item size (checked arithmetic) must equal the bytes the member holds, and the
//! member's declared size must fit in the file (stored, or deflated at the best ratio
//! deflate can reach), before `ndarray-npy` allocates anything for it.
#![warn(clippy::cast_possible_truncation, clippy::arithmetic_side_effects)]

use std::collections::BTreeMap;
use std::io::{Cursor, Read, Seek};
use std::path::{Path, PathBuf};

use mmflow_schemas::files::open_regular;
use ndarray::ArrayD;
use ndarray_npy::ReadNpyExt;
use zip::read::ZipFile;
use zip::{CompressionMethod, ZipArchive};

use super::align::{Sequence, Values};
use super::readers::{SourceError, TimingOptions};

/// The most deflate can expand data: about 1032 to 1.
const MAX_INFLATE: u64 = 1032;
/// The longest `.npy` header accepted (numpy itself refuses headers past 10 000 bytes).
const MAX_HEADER: usize = 1 << 16;
/// The widest feature vector a features table can hold (Arrow list sizes are i32).
const MAX_WIDTH: usize = i32::MAX as usize;

/// An `.npz` file's videos, read at open.
pub struct NpzSource {
    path: PathBuf,
    videos: Vec<String>,
    data: BTreeMap<String, Sequence>,
}

enum Loaded {
    F32(ArrayD<f32>),
    F64(ArrayD<f64>),
}

impl Loaded {
    fn shape(&self) -> &[usize] {
        match self {
            Loaded::F32(a) => a.shape(),
            Loaded::F64(a) => a.shape(),
        }
    }
}

/// The element types read from `.npz` files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Float {
    F32,
    F64,
}

impl Float {
    /// The type of a numpy type string `ndarray-npy` reads as f32/f64, with its size.
    fn of_descr(descr: &str) -> Option<(Float, usize)> {
        match descr {
            "<f4" | ">f4" => Some((Float::F32, 4)),
            "<f8" | ">f8" => Some((Float::F64, 8)),
            _ => None,
        }
    }
}

/// What a `.npy` header declares.
#[derive(Debug, Clone, PartialEq, Eq)]
struct NpyHeader {
    /// The numpy type string.
    descr: String,
    /// Dimensions.
    shape: Vec<usize>,
    /// Bytes of the header, magic string included: the data starts here.
    len: usize,
}

impl NpyHeader {
    /// Reads and parses the header at the start of `reader` (at most [`MAX_HEADER`] bytes
    /// are read); returns it with the bytes read.
    fn read(reader: &mut impl Read) -> Result<(NpyHeader, Vec<u8>), String> {
        let mut bytes = vec![0u8; 10];
        reader
            .read_exact(&mut bytes)
            .map_err(|e| format!("the .npy header is cut short ({e})"))?;
        if !bytes.starts_with(b"\x93NUMPY") {
            return Err("not a .npy array (no \\x93NUMPY magic string)".into());
        }
        let (prefix, dict_len) = match bytes[6] {
            1 => (
                10usize,
                usize::from(u16::from_le_bytes([bytes[8], bytes[9]])),
            ),
            2 | 3 => {
                let mut more = [0u8; 2];
                reader
                    .read_exact(&mut more)
                    .map_err(|e| format!("the .npy header is cut short ({e})"))?;
                bytes.extend_from_slice(&more);
                let n = u32::from_le_bytes([bytes[8], bytes[9], more[0], more[1]]);
                (12, usize::try_from(n).unwrap_or(usize::MAX))
            }
            v => {
                return Err(format!(
                    ".npy format version {v} is not supported (1–3 are)"
                ))
            }
        };
        if dict_len > MAX_HEADER {
            return Err(format!(
                "the .npy header declares {dict_len} bytes, more than the {MAX_HEADER} accepted"
            ));
        }
        let mut dict = vec![0u8; dict_len];
        reader
            .read_exact(&mut dict)
            .map_err(|e| format!("the .npy header is cut short ({e})"))?;
        bytes.extend_from_slice(&dict);
        let text = std::str::from_utf8(&dict)
            .ok()
            .filter(|t| t.is_ascii())
            .ok_or("the .npy header is not ASCII text")?;
        let mut header = parse_header_dict(text)?;
        header.len = prefix.saturating_add(dict_len);
        Ok((header, bytes))
    }
}

/// Parses `{'descr': '<f4', 'fortran_order': False, 'shape': (3, 4), }` (numpy's own
/// format: a Python dict literal of exactly these keys).
fn parse_header_dict(text: &str) -> Result<NpyHeader, String> {
    let bad = || format!("malformed .npy header {:?}", text.trim_end());
    let body = text
        .trim()
        .strip_prefix('{')
        .and_then(|t| t.strip_suffix('}'))
        .ok_or_else(bad)?;
    let (mut descr, mut shape) = (None, None);
    let mut rest = body.trim_start();
    while !rest.is_empty() {
        let (key, after) = quoted(rest).ok_or_else(bad)?;
        let after = after
            .trim_start()
            .strip_prefix(':')
            .ok_or_else(bad)?
            .trim_start();
        rest = match key {
            "descr" => {
                let (value, after) = quoted(after).ok_or_else(|| {
                    "the .npy dtype is not a plain type string (structured arrays are not supported)"
                        .to_string()
                })?;
                descr = Some(value.to_string());
                after
            }
            "shape" => {
                let inner = after.strip_prefix('(').ok_or_else(bad)?;
                let end = inner.find(')').ok_or_else(bad)?;
                shape = Some(parse_shape(&inner[..end]).ok_or_else(bad)?);
                &inner[end..][1..]
            }
            "fortran_order" => {
                // ndarray-npy reads the order itself; only the form is checked here.
                let end = after.find([',', '}']).unwrap_or(after.len());
                match after[..end].trim() {
                    "True" | "False" => &after[end..],
                    _ => return Err(bad()),
                }
            }
            _ => return Err(bad()),
        };
        rest = rest.trim_start();
        rest = rest.strip_prefix(',').unwrap_or(rest).trim_start();
    }
    match (descr, shape) {
        (Some(descr), Some(shape)) => Ok(NpyHeader {
            descr,
            shape,
            len: 0,
        }),
        _ => Err(bad()),
    }
}

/// A `'…'` or `"…"` string at the start of `text`, and what follows it.
fn quoted(text: &str) -> Option<(&str, &str)> {
    let quote = text.chars().next().filter(|c| *c == '\'' || *c == '"')?;
    let inner = &text[1..];
    let end = inner.find(quote)?;
    Some((&inner[..end], &inner[end..][1..]))
}

/// `3, 4` / `3,` / `` (a scalar) / `3L, 4L` (Python 2).
fn parse_shape(text: &str) -> Option<Vec<usize>> {
    text.split(',')
        .map(str::trim)
        .filter(|d| !d.is_empty())
        .map(|d| d.trim_end_matches('L').parse().ok())
        .collect()
}

impl NpzSource {
    /// Reads every array of the file.
    pub fn open(path: &Path, timing: &TimingOptions) -> Result<NpzSource, SourceError> {
        let fail = |message: String| SourceError {
            path: path.to_path_buf(),
            message,
        };
        let (file, size) = open_regular(path).map_err(|e| fail(e.to_string()))?;
        let mut zip = ZipArchive::new(file)
            .map_err(|e| fail(format!("not a readable .npz (zip) file ({e})")))?;
        let mut arrays = BTreeMap::new();
        for index in 0..zip.len() {
            let member = zip
                .by_index(index)
                .map_err(|e| fail(format!("cannot read zip member {index} ({e})")))?;
            let name = member.name().to_string();
            let key = name.strip_suffix(".npy").unwrap_or(&name).to_string();
            let loaded =
                read_member(member, size).map_err(|m| fail(format!("array `{key}`: {m}")))?;
            arrays.insert(key, loaded);
        }
        let names: Vec<&String> = arrays.keys().collect();
        let paired = names.iter().any(|n| n.ends_with("/features"));
        let mut data = BTreeMap::new();
        if paired {
            for name in names.iter().filter(|n| n.ends_with("/features")) {
                let video = name.trim_end_matches("/features").to_string();
                let features = &arrays[*name];
                let intervals = arrays.get(&format!("{video}/intervals")).ok_or_else(|| {
                    fail(format!(
                        "video `{video}`: `{video}/features` has no `{video}/intervals`"
                    ))
                })?;
                let seq = to_sequence(&video, features, Some(intervals), None).map_err(fail)?;
                data.insert(video, seq);
            }
        } else {
            let fps = timing.fps.ok_or_else(|| {
                fail(
                    "arrays carry no intervals (`<video>/intervals`): set `fps` for this modality"
                        .into(),
                )
            })?;
            for (name, array) in &arrays {
                let seq = to_sequence(name, array, None, Some(fps)).map_err(fail)?;
                data.insert(name.clone(), seq);
            }
        }
        Ok(NpzSource {
            path: path.to_path_buf(),
            videos: data.keys().cloned().collect(),
            data,
        })
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Video ids, sorted.
    pub fn videos(&self) -> &[String] {
        &self.videos
    }

    /// A video's frames.
    pub fn read(&self, video: &str) -> Result<Sequence, SourceError> {
        self.data.get(video).cloned().ok_or_else(|| SourceError {
            path: self.path.clone(),
            message: format!("video `{video}` is not in the file"),
        })
    }
}

/// Reads one member, once its header's declared size is known to be what the member holds
/// and what the file can hold.
fn read_member<R: Read + Seek>(
    mut member: ZipFile<'_, R>,
    file_size: u64,
) -> Result<Loaded, String> {
    let declared = member.size();
    let stored = member.compressed_size();
    let most = match member.compression() {
        CompressionMethod::Stored => stored,
        _ => stored.saturating_mul(MAX_INFLATE),
    };
    if stored > file_size || declared > most {
        return Err(format!(
            "the zip entry declares {declared} bytes ({stored} stored), more than the {file_size}-byte file can hold: truncated or corrupt file"
        ));
    }
    let (header, header_bytes) = NpyHeader::read(&mut member)?;
    let Some((float, item)) = Float::of_descr(&header.descr) else {
        return Err(format!(
            "dtype {:?}, expected float32 or float64 ('<f4', '<f8')",
            header.descr
        ));
    };
    let data_bytes = header
        .shape
        .iter()
        .try_fold(item, |acc, &d| acc.checked_mul(d))
        .and_then(|b| u64::try_from(b).ok());
    let held = declared.checked_sub(u64::try_from(header.len).unwrap_or(u64::MAX));
    if data_bytes.is_none() || data_bytes != held {
        return Err(format!(
            "shape {:?} of {item}-byte values needs {} bytes, the file holds {}",
            header.shape,
            data_bytes.map_or_else(|| "more than 2^64".to_string(), |b| b.to_string()),
            held.unwrap_or(0)
        ));
    }
    let reader = Cursor::new(header_bytes).chain(member);
    let read = match float {
        Float::F32 => ArrayD::<f32>::read_npy(reader).map(Loaded::F32),
        Float::F64 => ArrayD::<f64>::read_npy(reader).map(Loaded::F64),
    };
    read.map_err(|e| format!("unreadable data ({e})"))
}

fn to_sequence(
    video: &str,
    features: &Loaded,
    intervals: Option<&Loaded>,
    fps: Option<f64>,
) -> Result<Sequence, String> {
    let shape = features.shape();
    let (frames, dim) = match *shape {
        [t, d] => (t, d),
        [t] => (t, 1),
        ref other => {
            return Err(format!(
                "video `{video}`: features of shape {other:?}, expected [frames, dim]"
            ))
        }
    };
    if dim == 0 || dim > MAX_WIDTH {
        return Err(format!(
            "video `{video}`: features of shape {shape:?} are {dim} wide, expected 1 to {MAX_WIDTH} features"
        ));
    }
    let values = match features {
        Loaded::F32(a) => Values::F32(a.iter().copied().collect()),
        Loaded::F64(a) => Values::F64(a.iter().copied().collect()),
    };
    let intervals: Vec<[f64; 2]> = match (intervals, fps) {
        (Some(iv), _) => {
            if iv.shape() != [frames, 2] {
                return Err(format!(
                    "video `{video}`: {frames} feature rows but intervals of shape {:?}",
                    iv.shape()
                ));
            }
            let flat: Vec<f64> = match iv {
                Loaded::F32(a) => a.iter().map(|&x| f64::from(x)).collect(),
                Loaded::F64(a) => a.iter().copied().collect(),
            };
            flat.chunks_exact(2).map(|c| [c[0], c[1]]).collect()
        }
        (None, Some(fps)) => (0..frames)
            .map(|t| [t as f64 / fps, (t as f64 + 1.0) / fps])
            .collect(),
        (None, None) => return Err(format!("video `{video}`: no intervals and no fps")),
    };
    Ok(Sequence {
        intervals,
        values,
        dim,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numpy_headers_parse() {
        let h =
            parse_header_dict("{'descr': '<f4', 'fortran_order': False, 'shape': (3, 4), }   \n")
                .unwrap();
        assert_eq!((h.descr.as_str(), h.shape), ("<f4", vec![3, 4]));
        let h =
            parse_header_dict("{'descr': '<f8', 'fortran_order': True, 'shape': (5,), }").unwrap();
        assert_eq!(h.shape, vec![5]);
        let h =
            parse_header_dict("{'descr': '<f8', 'fortran_order': False, 'shape': (), }").unwrap();
        assert_eq!(h.shape, Vec::<usize>::new());
        assert_eq!(
            parse_header_dict("{'descr': '<f4', 'fortran_order': False, 'shape': (2L, 3L)}")
                .unwrap()
                .shape,
            vec![2, 3]
        );
    }

    #[test]
    fn malformed_headers_are_errors() {
        for text in [
            "",
            "{",
            "{'descr': '<f4'}",
            "{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': (1,), }",
            "{'descr': '<f4', 'fortran_order': Maybe, 'shape': (1,), }",
            "{'descr': '<f4', 'fortran_order': False, 'shape': (-1,), }",
            "{'descr': '<f4', 'fortran_order': False, 'shape': (99999999999999999999999,), }",
            "{'descr': '<f4', 'fortran_order': False, 'shape': (1,), 'extra': 1}",
            "{'descr': '<f4', 'fortran_order': False, 'shape': (1, }",
        ] {
            assert!(parse_header_dict(text).is_err(), "{text:?}");
        }
    }
}
