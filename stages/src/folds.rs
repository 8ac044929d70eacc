//! The standard MOSI and MOSEI folds (video ids per split), as published with the CMU
//! Multimodal SDK; shipped in `data/standard_folds.json`.

use std::collections::HashMap;

use mmflow_schemas::Split;
use serde::Deserialize;

/// The video ids of each split of one dataset.
#[derive(Debug, Clone, Deserialize)]
pub struct Folds {
    /// Training videos.
    pub train: Vec<String>,
    /// Validation videos.
    pub valid: Vec<String>,
    /// Test videos.
    pub test: Vec<String>,
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

    /// Video id → split.
    pub fn lookup(&self) -> HashMap<&str, Split> {
        Split::ALL
            .iter()
            .flat_map(|&s| self.split(s).iter().map(move |v| (v.as_str(), s)))
            .collect()
    }
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
    }
}
