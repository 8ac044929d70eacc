//! Reading CMU-MultimodalSDK computational sequences (`.csd`, HDF5) without libhdf5.
//!
//! Layout: `/<root>/data/<video>/{features [T, D], intervals [T, 2]}` and
//! `/<root>/metadata/<key>` (one variable-length string each). Features may be float32 or
//! float64, contiguous or gzip-chunked; groups old-style or dense. The file is memory-mapped
//! by `hdf5-reader` (pure Rust), and `CsdFile` can be shared between threads.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use hdf5_reader::{Datatype, Hdf5File};

use super::align::{Sequence, Values};

/// An open computational sequence.
pub struct CsdFile {
    path: PathBuf,
    file: Hdf5File,
    root: String,
    videos: Vec<String>,
    metadata: BTreeMap<String, String>,
}

/// Why a computational sequence cannot be read; names the file (and video).
#[derive(Debug, thiserror::Error)]
#[error("{}: {message}", path.display())]
pub struct CsdError {
    /// The file.
    pub path: PathBuf,
    /// What is wrong (naming the video when one is at fault).
    pub message: String,
}

/// Shape and dtype of one video's features, read from the dataset header only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EntryShape {
    /// Frames.
    pub frames: usize,
    /// Feature width.
    pub dim: usize,
}

impl CsdFile {
    /// Opens a `.csd` file and lists its videos (sorted, as h5py lists them).
    pub fn open(path: &Path) -> Result<CsdFile, CsdError> {
        let fail = |message: String| CsdError {
            path: path.to_path_buf(),
            message,
        };
        if !path.is_file() {
            return Err(fail("file not found".into()));
        }
        let file =
            Hdf5File::open(path).map_err(|e| fail(format!("not a readable HDF5 file ({e})")))?;
        let top = file
            .root_group()
            .and_then(|g| g.member_names())
            .map_err(|e| fail(format!("cannot list the root group ({e})")))?;
        let mut roots = top.0;
        roots.sort();
        let Some(root) = roots.first().cloned() else {
            return Err(fail(
                "no top-level group: not a computational sequence".into(),
            ));
        };
        let data = file.group(&format!("/{root}/data")).map_err(|_| {
            fail(format!(
                "no `/{root}/data` group: not a computational sequence"
            ))
        })?;
        let (mut videos, stray) = data
            .member_names()
            .map_err(|e| fail(format!("cannot list `/{root}/data` ({e})")))?;
        if let Some(d) = stray.first() {
            return Err(fail(format!(
                "`/{root}/data/{d}` is a dataset, expected one group per video"
            )));
        }
        videos.sort();
        let mut metadata = BTreeMap::new();
        if let Ok(group) = file.group(&format!("/{root}/metadata")) {
            if let Ok((_, keys)) = group.member_names() {
                for key in keys {
                    let value = file
                        .dataset(&format!("/{root}/metadata/{key}"))
                        .and_then(|d| d.read_strings())
                        .map(|v| v.join("\n"))
                        .unwrap_or_default();
                    metadata.insert(key, value);
                }
            }
        }
        Ok(CsdFile {
            path: path.to_path_buf(),
            file,
            root,
            videos,
            metadata,
        })
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The root group's name (the sequence's name in the SDK).
    pub fn root(&self) -> &str {
        &self.root
    }

    /// Video ids, sorted.
    pub fn videos(&self) -> &[String] {
        &self.videos
    }

    /// The metadata strings.
    pub fn metadata(&self) -> &BTreeMap<String, String> {
        &self.metadata
    }

    fn fail(&self, video: &str, message: impl std::fmt::Display) -> CsdError {
        CsdError {
            path: self.path.clone(),
            message: format!("video `{video}`: {message}"),
        }
    }

    /// The shape of a video's features, from the header (no data read).
    pub fn shape(&self, video: &str) -> Result<EntryShape, CsdError> {
        let ds = self
            .file
            .dataset(&format!("/{}/data/{video}/features", self.root))
            .map_err(|e| self.fail(video, format!("no `features` dataset ({e})")))?;
        match ds.shape() {
            [t, d] => Ok(EntryShape {
                frames: *t as usize,
                dim: *d as usize,
            }),
            [t] => Ok(EntryShape {
                frames: *t as usize,
                dim: 1,
            }),
            other => Err(self.fail(
                video,
                format!("`features` has shape {other:?}, expected [frames, dim]"),
            )),
        }
    }

    /// Reads a video's intervals and features.
    pub fn read(&self, video: &str) -> Result<Sequence, CsdError> {
        let base = format!("/{}/data/{video}", self.root);
        let features = self
            .file
            .dataset(&format!("{base}/features"))
            .map_err(|e| self.fail(video, format!("no `features` dataset ({e})")))?;
        let intervals = self
            .file
            .dataset(&format!("{base}/intervals"))
            .map_err(|e| self.fail(video, format!("no `intervals` dataset ({e})")))?;
        let shape = self.shape(video)?;
        let interval_shape = intervals.shape().to_vec();
        if interval_shape.len() != 2 || interval_shape[1] != 2 {
            return Err(self.fail(
                video,
                format!("`intervals` has shape {interval_shape:?}, expected [frames, 2]"),
            ));
        }
        if interval_shape[0] as usize != shape.frames {
            return Err(self.fail(
                video,
                format!(
                    "{} feature rows but {} intervals",
                    shape.frames, interval_shape[0]
                ),
            ));
        }
        let n = shape.frames * shape.dim;
        let values = match features.dtype() {
            Datatype::FloatingPoint { size: 4, .. } => {
                let mut v = vec![0f32; n];
                features
                    .read_into(&mut v)
                    .map_err(|e| self.fail(video, format!("reading `features`: {e}")))?;
                Values::F32(v)
            }
            Datatype::FloatingPoint { size: 8, .. } => {
                let mut v = vec![0f64; n];
                features
                    .read_into(&mut v)
                    .map_err(|e| self.fail(video, format!("reading `features`: {e}")))?;
                Values::F64(v)
            }
            other => {
                return Err(self.fail(
                    video,
                    format!("`features` has type {other:?}, expected float32 or float64"),
                ))
            }
        };
        let mut flat = vec![0f64; shape.frames * 2];
        match intervals.dtype() {
            Datatype::FloatingPoint { size: 8, .. } => intervals.read_into(&mut flat),
            Datatype::FloatingPoint { size: 4, .. } => {
                let mut v = vec![0f32; shape.frames * 2];
                let r = intervals.read_into(&mut v);
                flat.iter_mut().zip(v).for_each(|(a, b)| *a = b as f64);
                r
            }
            other => {
                return Err(self.fail(
                    video,
                    format!("`intervals` has type {other:?}, expected float"),
                ));
            }
        }
        .map_err(|e| self.fail(video, format!("reading `intervals`: {e}")))?;
        Ok(Sequence {
            intervals: flat.chunks_exact(2).map(|c| [c[0], c[1]]).collect(),
            values,
            dim: shape.dim,
        })
    }
}
