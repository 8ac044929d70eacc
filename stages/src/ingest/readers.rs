//! What every format reader shares: the options of formats without their own timing or
//! column metadata, and the error that names the file (and the video at fault).

use std::path::PathBuf;

/// Options for formats without their own timing or column metadata.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TimingOptions {
    /// Frames per second, for arrays without intervals (frame t spans [t/fps, (t+1)/fps]),
    /// or to set each CSV frame's duration (default: the median step of its timestamps).
    pub fps: Option<f64>,
    /// CSV: the timestamp column, in seconds.
    pub timestamp_column: String,
    /// CSV: the feature columns (default: every numeric column not in `exclude`).
    pub columns: Option<Vec<String>>,
    /// CSV: columns that are never features.
    pub exclude: Vec<String>,
    /// CSV: a column holding the video id, when one file holds many videos.
    pub video_column: Option<String>,
    /// CSV: a column holding each row's text (default: a column named `text`, if any).
    pub text_column: Option<String>,
}

/// Why a source (a `.csd`, `.npz` or CSV file, or a folder of CSV files) cannot be read:
/// names the file (and the video when one is at fault).
#[derive(Debug, thiserror::Error)]
#[error("{}: {message}", path.display())]
pub struct SourceError {
    /// The file or directory.
    pub path: PathBuf,
    /// What is wrong (naming the video when one is at fault).
    pub message: String,
}
