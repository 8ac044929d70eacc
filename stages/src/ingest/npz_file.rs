//! Per-video arrays in a numpy `.npz` (read with `ndarray-npy`).
//!
//! Two layouts: `<video>/features` [T, D] with `<video>/intervals` [T, 2] (the SDK's own
//! export layout), or one `<video>` array [T, D] per video, timed by `fps`.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use ndarray::{ArrayD, IxDyn, OwnedRepr};
use ndarray_npy::NpzReader;

use super::align::{Sequence, Values};
use super::source::{SourceError, TimingOptions};

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

impl NpzSource {
    /// Reads every array of the file.
    pub fn open(path: &Path, timing: &TimingOptions) -> Result<NpzSource, SourceError> {
        let fail = |message: String| SourceError {
            path: path.to_path_buf(),
            message,
        };
        let file = File::open(path).map_err(|e| fail(format!("cannot open ({e})")))?;
        let mut npz =
            NpzReader::new(file).map_err(|e| fail(format!("not a readable .npz ({e})")))?;
        let names: Vec<String> = npz
            .names()
            .map_err(|e| fail(format!("cannot list arrays ({e})")))?
            .into_iter()
            .map(|n| n.strip_suffix(".npy").unwrap_or(&n).to_string())
            .collect();
        let mut arrays = BTreeMap::new();
        for name in &names {
            let loaded = match npz.by_name::<OwnedRepr<f32>, IxDyn>(name) {
                Ok(a) => Loaded::F32(a),
                Err(_) => match npz.by_name::<OwnedRepr<f64>, IxDyn>(name) {
                    Ok(a) => Loaded::F64(a),
                    Err(e) => {
                        return Err(fail(format!(
                            "array `{name}`: not float32/float64 data ({e})"
                        )))
                    }
                },
            };
            arrays.insert(name.clone(), loaded);
        }
        let paired = names.iter().any(|n| n.ends_with("/features"));
        let mut data = BTreeMap::new();
        if paired {
            for name in names.iter().filter(|n| n.ends_with("/features")) {
                let video = name.trim_end_matches("/features").to_string();
                let features = &arrays[name];
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

fn to_sequence(
    video: &str,
    features: &Loaded,
    intervals: Option<&Loaded>,
    fps: Option<f64>,
) -> Result<Sequence, String> {
    let shape = features.shape();
    let (frames, dim) = match shape {
        [t, d] => (*t, *d),
        [t] => (*t, 1),
        other => {
            return Err(format!(
                "video `{video}`: features of shape {other:?}, expected [frames, dim]"
            ))
        }
    };
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
                Loaded::F32(a) => a.iter().map(|&x| x as f64).collect(),
                Loaded::F64(a) => a.iter().copied().collect(),
            };
            flat.chunks_exact(2).map(|c| [c[0], c[1]]).collect()
        }
        (None, Some(fps)) => (0..frames)
            .map(|t| [t as f64 / fps, (t + 1) as f64 / fps])
            .collect(),
        (None, None) => return Err(format!("video `{video}`: no intervals and no fps")),
    };
    Ok(Sequence {
        intervals,
        values,
        dim,
    })
}
