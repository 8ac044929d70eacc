//! The shapes of the datasets the `synthetic` stage imitates.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Which dataset to imitate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema, Default)]
#[serde(rename_all = "snake_case")]
pub enum Profile {
    /// CMU-MOSEI: 3228 videos, 22856 segments (16326/1871/4659), GloVe 300-d, COVAREP 74-d,
    /// OpenFace2 713-d, sentiment in [-3, 3] and six emotions in [0, 3].
    #[default]
    Mosei,
    /// CMU-MOSI as re-extracted in the transfer study: 93 videos, 2199 segments
    /// (1284/229/686), GloVe 300-d, COVAREP 74-d, MediaPipe FaceMesh 65-d, sentiment in [-3, 3].
    Mosi,
    /// Texts by 137 users with valence in [-2, 2] and arousal in [0, 2], per-user baselines.
    ValenceArousal,
}

/// A modality: its name, width, and how it is generated.
#[derive(Debug, Clone, Copy)]
pub struct ModalitySpec {
    /// Output/modality name.
    pub name: &'static str,
    /// Feature width.
    pub dim: usize,
    /// Which feature space it lives in.
    pub space: Space,
    /// Standard deviation of the per-segment noise on the sentiment latent this modality
    /// sees: the smaller, the more informative the modality.
    pub segment_noise: f64,
    /// Per-frame probability that a value of one of the `inf_columns` is -inf.
    pub neginf_rate: f64,
    /// Per-frame probability that the whole frame is NaN (e.g. the face was lost).
    pub nan_frame_rate: f64,
}

/// The space a modality's features live in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Space {
    /// Word embeddings (GloVe): shared by every dataset built with the same `shared_space_seed`.
    Text,
    /// COVAREP acoustic features: the same extractor everywhere, so shared as well (with a
    /// per-dataset offset for recording conditions).
    Acoustic,
    /// A visual extractor specific to this dataset (OpenFace2, MediaPipe): its own space.
    Visual,
}

/// The full-size shape of a dataset.
#[derive(Debug, Clone)]
pub struct Shape {
    /// Dataset name written into the tables.
    pub dataset: &'static str,
    /// Segments per split at full size (train, valid, test).
    pub segments: [usize; 3],
    /// Distinct speakers/users at full size.
    pub speakers: usize,
    /// Median number of words per segment.
    pub median_length: f64,
    /// Spread of log(length).
    pub length_spread: f64,
    /// Label columns.
    pub labels: &'static [&'static str],
    /// The modalities.
    pub modalities: &'static [ModalitySpec],
}

const TEXT: ModalitySpec = ModalitySpec {
    name: "text",
    dim: 300,
    space: Space::Text,
    segment_noise: 0.6,
    neginf_rate: 0.0,
    nan_frame_rate: 0.0,
};

const COVAREP: ModalitySpec = ModalitySpec {
    name: "audio",
    dim: 74,
    space: Space::Acoustic,
    segment_noise: 1.0,
    neginf_rate: 0.01,
    nan_frame_rate: 0.0,
};

impl Profile {
    /// The dataset's full-size shape.
    pub fn shape(self) -> Shape {
        match self {
            Profile::Mosei => Shape {
                dataset: "mosei",
                segments: [16326, 1871, 4659],
                speakers: 1000,
                median_length: 20.0,
                length_spread: 0.5,
                labels: &[
                    "sentiment",
                    "happy",
                    "sad",
                    "anger",
                    "surprise",
                    "disgust",
                    "fear",
                ],
                modalities: &[
                    TEXT,
                    COVAREP,
                    ModalitySpec {
                        name: "visual",
                        dim: 713,
                        space: Space::Visual,
                        segment_noise: 1.2,
                        neginf_rate: 0.0,
                        nan_frame_rate: 0.005,
                    },
                ],
            },
            Profile::Mosi => Shape {
                dataset: "mosi",
                segments: [1284, 229, 686],
                speakers: 89,
                median_length: 10.0,
                length_spread: 0.6,
                labels: &["sentiment"],
                modalities: &[
                    TEXT,
                    COVAREP,
                    ModalitySpec {
                        name: "visual",
                        dim: 65,
                        space: Space::Visual,
                        segment_noise: 1.2,
                        neginf_rate: 0.0,
                        nan_frame_rate: 0.005,
                    },
                ],
            },
            Profile::ValenceArousal => Shape {
                dataset: "valence_arousal",
                segments: [0, 0, 0], // set by the users' text counts
                speakers: 137,
                median_length: 40.0,
                length_spread: 0.4,
                labels: &["valence", "arousal"],
                modalities: &[TEXT],
            },
        }
    }
}
