//! Per-video timed feature sequences, whatever file format they come from.
#![warn(clippy::cast_possible_truncation, clippy::arithmetic_side_effects)]

use std::path::Path;

use mmflow_schemas::files::regular_file_size;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::align::Sequence;
use super::csd_file::CsdFile;
use super::readers::{SourceError, TimingOptions};
use super::{csv_dir::CsvSource, npz_file::NpzSource};

/// A file format holding one modality (or the labels) for many videos.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Format {
    /// A CMU-MultimodalSDK computational sequence (HDF5).
    Csd,
    /// A numpy `.npz`: `<video>/features` + `<video>/intervals` arrays, or `<video>` arrays
    /// timed by `fps`.
    Npz,
    /// A directory of per-video CSV files (or one CSV with a video column) with a timestamp
    /// column, e.g. OpenFace 2 or MediaPipe output.
    Csv,
}

impl Format {
    /// Its name in configs.
    pub fn as_str(self) -> &'static str {
        match self {
            Format::Csd => "csd",
            Format::Npz => "npz",
            Format::Csv => "csv",
        }
    }

    /// The format a path's extension suggests.
    pub fn of_path(path: &Path) -> Option<Format> {
        match path.extension().and_then(|e| e.to_str()) {
            Some("csd" | "h5" | "hdf5") => Some(Format::Csd),
            Some("npz") => Some(Format::Npz),
            Some("csv") => Some(Format::Csv),
            _ if path.is_dir() => Some(Format::Csv),
            _ => None,
        }
    }
}

/// What to do with NaN and ±inf values in a modality's aligned features.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema, Default)]
#[serde(rename_all = "snake_case")]
pub enum NonFinitePolicy {
    /// Leave them, as the SDK does (they are counted and reported).
    #[default]
    Keep,
    /// Replace them by 0, as MulT and MMSA do to COVAREP's -inf.
    Zero,
    /// Fail, naming the file, video and segment.
    Error,
}

/// One modality (or the labels) of many videos.
pub enum Source {
    /// `.csd`: read lazily, video by video.
    Csd(CsdFile),
    /// `.npz`: read at open.
    Npz(NpzSource),
    /// CSV: read at open.
    Csv(CsvSource),
}

impl Source {
    /// Opens `path` in `format`. Only regular files (and, for CSV, directories of them) are
    /// read: a FIFO, device or socket is refused before it is opened.
    pub fn open(
        path: &Path,
        format: Format,
        timing: &TimingOptions,
    ) -> Result<Source, SourceError> {
        let csv_directory = format == Format::Csv && path.is_dir();
        if !csv_directory {
            regular_file_size(path).map_err(|e| SourceError {
                path: path.to_path_buf(),
                message: e.to_string(),
            })?;
        }
        Ok(match format {
            Format::Csd => Source::Csd(CsdFile::open(path)?),
            Format::Npz => Source::Npz(NpzSource::open(path, timing)?),
            Format::Csv => Source::Csv(CsvSource::open(path, timing)?),
        })
    }

    /// Video ids, sorted.
    pub fn videos(&self) -> &[String] {
        match self {
            Source::Csd(s) => s.videos(),
            Source::Npz(s) => s.videos(),
            Source::Csv(s) => s.videos(),
        }
    }

    /// The file or directory.
    pub fn path(&self) -> &Path {
        match self {
            Source::Csd(s) => s.path(),
            Source::Npz(s) => s.path(),
            Source::Csv(s) => s.path(),
        }
    }

    /// The feature width of a video, without reading its frames where the format allows.
    pub fn width(&self, video: &str) -> Result<usize, SourceError> {
        match self {
            Source::Csd(s) => s.shape(video).map(|s| s.dim),
            Source::Npz(s) => s.read(video).map(|q| q.dim),
            Source::Csv(s) => s.read(video).map(|q| q.dim),
        }
    }

    /// Each of a video's frames' text, in the order of [`Source::read`]'s frames: CSV files
    /// with a text column only.
    pub fn texts(&self, video: &str) -> Option<&[String]> {
        match self {
            Source::Csv(s) => s.texts(video),
            Source::Csd(_) | Source::Npz(_) => None,
        }
    }

    /// A video's frames.
    pub fn read(&self, video: &str) -> Result<Sequence, SourceError> {
        match self {
            Source::Csd(s) => s.read(video),
            Source::Npz(s) => s.read(video),
            Source::Csv(s) => s.read(video),
        }
    }
}
