//! The standard MOSI and MOSEI folds (video ids per split), as published with the CMU
//! Multimodal SDK; shipped in `data/standard_folds.json`. Users' folds files are read with
//! [`Folds::read`], which refuses a video listed more than once.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use mmflow_schemas::Split;
use serde::Deserialize;

/// The video ids of each split of one dataset.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Folds {
    /// Training videos.
    pub train: Vec<String>,
    /// Validation videos.
    pub valid: Vec<String>,
    /// Test videos.
    pub test: Vec<String>,
}

/// A folds file as text: a regular file (never a FIFO or a device), UTF-8.
fn read_text(path: &Path) -> std::io::Result<String> {
    let bytes = mmflow_schemas::files::read_regular(path)?;
    String::from_utf8(bytes)
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidData, "not UTF-8 text"))
}

impl Folds {
    /// The videos of one split.
    pub fn split(&self, split: Split) -> &[String] {
        match split {
            Split::Train => &self.train,
            Split::Valid => &self.valid,
            Split::Test => &self.test,
        }
    }

    /// Reads a folds file: JSON `{"train": [...], "valid": [...], "test": [...]}`, either at
    /// the top level or under `dataset`. Every video is listed once.
    pub fn read(path: &Path, dataset: &str) -> Result<Folds, FoldsError> {
        let invalid = |message: String| FoldsError::Invalid {
            path: path.to_path_buf(),
            message,
        };
        let text = read_text(path).map_err(|source| FoldsError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let json: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| invalid(format!("not JSON ({e})")))?;
        let node = if json.get("train").is_some() {
            &json
        } else {
            &json[dataset]
        };
        let folds: Folds = serde_json::from_value(node.clone()).map_err(|e| {
            invalid(format!(
                "expected {{\"train\": [...], \"valid\": [...], \"test\": [...]}} (optionally under \"{dataset}\"): {e}"
            ))
        })?;
        folds.check_each_video_once().map_err(invalid)?;
        Ok(folds)
    }

    /// An error naming the first video listed twice (in two splits, or twice in one).
    fn check_each_video_once(&self) -> Result<(), String> {
        let mut first: HashMap<&str, Split> = HashMap::new();
        for &split in &Split::ALL {
            for video in self.split(split) {
                if let Some(before) = first.insert(video, split) {
                    return Err(if before == split {
                        format!(
                            "video `{video}` is listed twice in `{}` (a video belongs to one split, once)",
                            split.as_str()
                        )
                    } else {
                        format!(
                            "video `{video}` is in both `{}` and `{}` (a video belongs to one split)",
                            before.as_str(),
                            split.as_str()
                        )
                    });
                }
            }
        }
        Ok(())
    }

    /// Video id → split.
    pub fn lookup(&self) -> HashMap<&str, Split> {
        Split::ALL
            .iter()
            .flat_map(|&s| self.split(s).iter().map(move |v| (v.as_str(), s)))
            .collect()
    }
}

/// Why a folds file cannot be used; names the file.
#[derive(Debug, thiserror::Error)]
pub enum FoldsError {
    /// It cannot be read.
    #[error("{}: {source}", path.display())]
    Io {
        /// The folds file.
        path: PathBuf,
        /// What happened.
        source: std::io::Error,
    },
    /// Its content is unusable.
    #[error("{}: {message}", path.display())]
    Invalid {
        /// The folds file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
}

#[derive(Deserialize)]
struct Standard {
    mosi: Folds,
    mosei: Folds,
}

const STANDARD_FOLDS: &str = include_str!("../../data/standard_folds.json");

fn standard() -> Standard {
    serde_json::from_str(STANDARD_FOLDS).expect("the shipped folds file is valid JSON")
}

/// The standard CMU-MOSI folds (52/10/31 videos).
pub fn mosi() -> Folds {
    standard().mosi
}

/// The standard CMU-MOSEI folds (2250/300/678 videos).
pub fn mosei() -> Folds {
    standard().mosei
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn standard_fold_sizes() {
        let count = |f: &Folds| [f.train.len(), f.valid.len(), f.test.len()];
        assert_eq!(count(&mosi()), [52, 10, 31]);
        assert_eq!(count(&mosei()), [2250, 300, 678]);
        assert!(mosi().check_each_video_once().is_ok());
        assert!(mosei().check_each_video_once().is_ok());
    }

    #[test]
    fn a_video_listed_twice_is_refused_naming_it_and_its_splits() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("folds.json");
        let read = |text: &str| {
            std::fs::write(&path, text).unwrap();
            Folds::read(&path, "mosi")
                .map(|_| ())
                .map_err(|e| e.to_string())
        };
        assert!(read(r#"{"train": ["a"], "valid": ["b"], "test": ["c"]}"#).is_ok());
        let e = read(r#"{"mosi": {"train": ["a", "x"], "valid": [], "test": ["x"]}}"#).unwrap_err();
        assert!(
            e.contains("folds.json: video `x` is in both `train` and `test`"),
            "{e}"
        );
        let e = read(r#"{"train": ["a"], "valid": ["b", "b"], "test": []}"#).unwrap_err();
        assert!(e.contains("video `b` is listed twice in `valid`"), "{e}");
    }
}
