//! The datasets mmflow knows by name: their label columns and, for MOSI and MOSEI, standard
//! folds. Any other dataset name is allowed; it then needs its label names and a folds file in
//! the config.

use crate::folds::{self, Folds};

/// Emotion label names of MOSEI, in the SDK's column order.
pub const EMOTIONS: [&str; 6] = ["happy", "sad", "anger", "surprise", "disgust", "fear"];

/// The label column every known dataset has.
pub const SENTIMENT: &str = "sentiment";

/// CH-SIMS's per-modality sentiment labels (MMSA's `regression_labels_T/A/V`, `label.csv`'s
/// `label_T/A/V`), in that order.
pub const SIMS_MODALITY_SENTIMENTS: [&str; 3] = ["sentiment_T", "sentiment_A", "sentiment_V"];

/// A dataset whose label columns mmflow knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KnownDataset {
    /// CMU-MOSI: 93 videos, sentiment in [-3, 3].
    Mosi,
    /// CMU-MOSEI: 3228 videos, sentiment in [-3, 3] and six emotion intensities in [0, 3].
    Mosei,
    /// CH-SIMS: sentiment in [-1, 1], overall and per modality; its splits come with its file.
    Sims,
    /// CH-SIMS v2: labelled like CH-SIMS; its splits come with its file.
    SimsV2,
}

impl KnownDataset {
    /// Every known dataset.
    pub const ALL: [KnownDataset; 4] = [
        KnownDataset::Mosi,
        KnownDataset::Mosei,
        KnownDataset::Sims,
        KnownDataset::SimsV2,
    ];

    /// The known dataset called `name` (as written in configs and tables), if any.
    pub fn named(name: &str) -> Option<KnownDataset> {
        KnownDataset::ALL.into_iter().find(|d| d.name() == name)
    }

    /// The known dataset called `name` whose standard folds ship with mmflow (`mosi`, `mosei`),
    /// if any: a source of features files takes its labels and folds from it. CH-SIMS's splits
    /// come inside its own files, so such a source names them like any other dataset's (label
    /// columns and a folds file).
    pub fn from_name(name: &str) -> Option<KnownDataset> {
        KnownDataset::named(name).filter(|d| d.ships_folds())
    }

    /// Its name in configs and tables.
    pub fn name(self) -> &'static str {
        match self {
            KnownDataset::Mosi => "mosi",
            KnownDataset::Mosei => "mosei",
            KnownDataset::Sims => "sims",
            KnownDataset::SimsV2 => "simsv2",
        }
    }

    /// Its label columns, in the SDK's (or MMSA's) order.
    pub fn labels(self) -> Vec<&'static str> {
        match self {
            KnownDataset::Mosi => vec![SENTIMENT],
            KnownDataset::Mosei => std::iter::once(SENTIMENT).chain(EMOTIONS).collect(),
            KnownDataset::Sims | KnownDataset::SimsV2 => std::iter::once(SENTIMENT)
                .chain(SIMS_MODALITY_SENTIMENTS)
                .collect(),
        }
    }

    /// Whether its standard folds ship with mmflow (rather than come with its file).
    pub fn ships_folds(self) -> bool {
        match self {
            KnownDataset::Mosi | KnownDataset::Mosei => true,
            KnownDataset::Sims | KnownDataset::SimsV2 => false,
        }
    }

    /// Its standard folds (the SDK's), or None where the splits come with the dataset's file.
    pub fn standard_folds(self) -> Option<Folds> {
        match self {
            KnownDataset::Mosi => Some(folds::mosi()),
            KnownDataset::Mosei => Some(folds::mosei()),
            KnownDataset::Sims | KnownDataset::SimsV2 => None,
        }
    }

    /// Its standard folds, for a dataset [`KnownDataset::from_name`] returns; a dataset whose
    /// splits come with its file has none and lists no video.
    pub fn folds(self) -> Folds {
        self.standard_folds().unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sims_labels_are_known_and_its_splits_come_with_its_file() {
        for dataset in KnownDataset::ALL {
            assert_eq!(KnownDataset::named(dataset.name()), Some(dataset));
        }
        for name in ["sims", "simsv2"] {
            let sims = KnownDataset::named(name).unwrap();
            assert_eq!(
                sims.labels(),
                ["sentiment", "sentiment_T", "sentiment_A", "sentiment_V"]
            );
            assert!(sims.standard_folds().is_none() && sims.folds().train.is_empty());
            // A source of features files asks for a folds file, as for any other dataset.
            assert_eq!(KnownDataset::from_name(name), None);
        }
        assert_eq!(KnownDataset::from_name("mosi"), Some(KnownDataset::Mosi));
        assert_eq!(KnownDataset::Mosei.folds().train.len(), 2250);
        assert_eq!(KnownDataset::named("cmu-mosi"), None);
    }
}
