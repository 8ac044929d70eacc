//! The datasets mmflow knows by name: their label columns and standard folds. Any other
//! dataset name is allowed; it then needs its label names and a folds file in the config.

use crate::folds::{self, Folds};

/// Emotion label names of MOSEI, in the SDK's column order.
pub const EMOTIONS: [&str; 6] = ["happy", "sad", "anger", "surprise", "disgust", "fear"];

/// The label column every known dataset has.
pub const SENTIMENT: &str = "sentiment";

/// A dataset whose labels and folds ship with mmflow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KnownDataset {
    /// CMU-MOSI: 93 videos, sentiment in [-3, 3].
    Mosi,
    /// CMU-MOSEI: 3228 videos, sentiment in [-3, 3] and six emotion intensities in [0, 3].
    Mosei,
}

impl KnownDataset {
    /// The known dataset called `name` (as written in configs and tables), if any.
    pub fn from_name(name: &str) -> Option<KnownDataset> {
        match name {
            "mosi" => Some(KnownDataset::Mosi),
            "mosei" => Some(KnownDataset::Mosei),
            _ => None,
        }
    }

    /// Its name in configs and tables.
    pub fn name(self) -> &'static str {
        match self {
            KnownDataset::Mosi => "mosi",
            KnownDataset::Mosei => "mosei",
        }
    }

    /// Its label columns, in the SDK's order.
    pub fn labels(self) -> Vec<&'static str> {
        match self {
            KnownDataset::Mosi => vec![SENTIMENT],
            KnownDataset::Mosei => std::iter::once(SENTIMENT).chain(EMOTIONS).collect(),
        }
    }

    /// Its standard folds (the SDK's).
    pub fn folds(self) -> Folds {
        match self {
            KnownDataset::Mosi => folds::mosi(),
            KnownDataset::Mosei => folds::mosei(),
        }
    }
}
