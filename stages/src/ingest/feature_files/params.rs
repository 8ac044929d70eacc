//! The params of the `csd`, `npz` and `csv` sources, and their checks: each modality's
//! file and how its frames are taken, the labels, the words, the alignment.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use mmflow_pipeline::values::{AtLeastOne, NonNegative};
use mmflow_pipeline::{KeyPath, Moved, ParamProblem};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::super::align::{self, Collapse};
use super::super::readers::TimingOptions;
use super::super::source::{Format, NonFinitePolicy};

/// What to do with a video whose features are not the modality's width (real MOSEI has
/// ~200 segments of 43-d COVAREP among 74-d).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema, Default)]
#[serde(rename_all = "snake_case")]
pub enum WidthPolicy {
    /// Fail, naming the file and video.
    #[default]
    Error,
    /// Drop the video from this modality (and so from the dataset, as the SDK's unify does).
    Drop,
    /// Pad with zeros (or cut) to the modality's width.
    Pad,
}

/// The SDK's alignment recipe or none.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema, Default)]
#[serde(rename_all = "snake_case")]
pub enum AlignMode {
    /// Every modality to the words of `reference` (collapsed), then to the label intervals.
    #[default]
    Words,
    /// No word alignment: each modality's frames cut to each label interval.
    None,
}

/// Which frames `max_length` keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema, Default)]
#[serde(rename_all = "snake_case")]
pub enum Keep {
    /// The first `max_length` frames (drop the end).
    #[default]
    First,
    /// The last `max_length` frames (drop the start).
    Last,
}

/// One modality's (or the labels') file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct ModalitySource {
    /// The file (`.csd`, `.npz`) or directory of per-video CSVs.
    pub path: PathBuf,
    /// `csd`, `npz` or `csv`; default: the stage kind's format.
    pub format: Option<Format>,
    /// NaN/±inf in the aligned features: `keep` (default, as the SDK), `zero` (MulT/MMSA) or `error`.
    pub nonfinite: NonFinitePolicy,
    /// Feature width (1 to 2^20); default: the most common width in the file.
    pub dim: Option<usize>,
    /// Videos of another width: `error` (default), `drop` or `pad`.
    pub width_mismatch: WidthPolicy,
    /// npz/csv: frames per second (finite, > 0), when frames carry no intervals (npz) or to
    /// set a CSV frame's duration (default: the median timestamp step).
    pub fps: Option<f64>,
    /// CSV files only: which columns hold the timestamps, the features and the video id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub csv: Option<CsvColumns>,
}

/// How a CSV source's columns are read (`csv = { … }` of a CSV modality or label file).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct CsvColumns {
    /// The timestamp column (seconds); every row needs a finite timestamp.
    pub timestamp_column: String,
    /// Feature columns, matched by name in every file; default: every column of the first
    /// file (by name) not in `exclude`, and every other file must have exactly those. Every
    /// feature cell must be a number (`nan`, `inf` count as numbers); an empty or text cell
    /// is an error naming file, row and column.
    pub columns: Option<Vec<String>>,
    /// Columns that are never features (default: OpenFace 2's bookkeeping columns `frame`,
    /// `face_id`, `timestamp`, `confidence`, `success`).
    pub exclude: Vec<String>,
    /// The video id column, when one file holds every video.
    pub video_column: Option<String>,
    /// A column of text, never a feature: in the label file, each row's text becomes its
    /// segment's `text` (e.g. CH-SIMS's `label.csv`); default: the column `text`, when the
    /// header has one and `columns` does not list it.
    pub text_column: Option<String>,
}

impl Default for CsvColumns {
    fn default() -> Self {
        CsvColumns {
            timestamp_column: "timestamp".into(),
            columns: None,
            exclude: ["frame", "face_id", "timestamp", "confidence", "success"]
                .iter()
                .map(|s| s.to_string())
                .collect(),
            video_column: None,
            text_column: None,
        }
    }
}

impl Default for ModalitySource {
    fn default() -> Self {
        ModalitySource {
            path: PathBuf::new(),
            format: None,
            nonfinite: NonFinitePolicy::Keep,
            dim: None,
            width_mismatch: WidthPolicy::Error,
            fps: None,
            csv: None,
        }
    }
}

impl ModalitySource {
    pub(super) fn timing(&self) -> TimingOptions {
        let csv = self.csv.clone().unwrap_or_default();
        TimingOptions {
            fps: self.fps,
            timestamp_column: csv.timestamp_column,
            columns: csv.columns,
            exclude: csv.exclude,
            video_column: csv.video_column,
            text_column: csv.text_column,
        }
    }
}

/// The file of timed words the segments' `text` is made of (`text = { … }`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct TextSource {
    /// A words computational sequence (`.csd`), as the SDK's `CMU_MOSI_TimestampedWords.csd`:
    /// one word per interval, as strings. A segment's text is the words whose intervals the
    /// SDK's alignment puts in its label interval, in time order, joined by single spaces.
    pub path: PathBuf,
    /// Words left out of the text (default: `sp`, the SDK's silence marker).
    pub skip: Vec<String>,
}

impl Default for TextSource {
    fn default() -> Self {
        TextSource {
            path: PathBuf::new(),
            skip: vec!["sp".into()],
        }
    }
}

/// Parameters of the `csd`, `npz` and `csv` sources.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct AlignedParams {
    /// Dataset name written to the tables. `mosi` and `mosei` also select the standard folds
    /// (shipped in `data/`) and label column names.
    pub dataset: String,
    /// Modalities: output name → its file. One of them is the `reference` (the words).
    /// May be empty (`{}`) when `text` is given: the segments table alone, with its text.
    pub modalities: BTreeMap<String, ModalitySource>,
    /// The words each segment's `text` is made of (for `embed_text`); none by default. A
    /// video the file lacks is dropped, as a modality's is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub text: Option<TextSource>,
    /// The label file: one interval per opinion segment, one column per label.
    pub labels: ModalitySource,
    /// Names of the label file's columns; default `sentiment` (mosi) or `sentiment` + the six
    /// emotions (mosei). Non-empty, unique, no comma or surrounding whitespace, not a fixed
    /// column of the segments table.
    pub label_columns: Option<Vec<String>>,
    /// The modality whose intervals are the words.
    pub reference: String,
    /// `words` (the SDK's standard recipe, default) or `none` (each modality's frames cut to
    /// each label interval: unaligned, as MulT's unaligned data).
    pub align: AlignMode,
    /// How the frames inside a word are collapsed: `mean` (default), `min`, `max`, `std`,
    /// `first`, `last`, computed in the file's dtype exactly as numpy does.
    pub collapse: Collapse,
    /// Interval tolerance in seconds: the SDK's `epsilon` (`10e-4` in the SDK release on PyPI,
    /// which produced the reference results).
    pub epsilon: NonNegative,
    /// Keep only segments that every modality covers (as the SDK's `get_tensors` does);
    /// with `false`, a segment missing a modality is simply absent from that modality's table.
    pub require_all_modalities: bool,
    /// Keep at most this many steps per segment (MMSA and MulT use 50); none by default.
    pub max_length: Option<AtLeastOne>,
    /// Which steps `max_length` keeps: `first` (default) or `last`.
    pub keep: Keep,
    /// A folds file (JSON `{"train": [...], "valid": [...], "test": [...]}`, optionally under
    /// the dataset's name) replacing the standard folds; a video listed twice (in two splits,
    /// or twice in one) is an error.
    pub folds: Option<PathBuf>,
    /// Videos processed (and written as one row group) at a time: bounds memory.
    pub chunk_videos: AtLeastOne,
}

impl Default for AlignedParams {
    fn default() -> Self {
        AlignedParams {
            dataset: "mosi".into(),
            modalities: BTreeMap::new(),
            text: None,
            labels: ModalitySource::default(),
            label_columns: None,
            reference: "words".into(),
            align: AlignMode::Words,
            collapse: Collapse::Mean,
            epsilon: NonNegative::new(align::SDK_EPSILON),
            require_all_modalities: true,
            max_length: None,
            keep: Keep::First,
            folds: None,
            chunk_videos: AtLeastOne::new(32),
        }
    }
}

/// The widest `dim` a modality may declare: far above any extractor's output, far below a
/// width whose per-frame buffers would not fit in memory.
pub const MAX_DIM: usize = 1 << 20;

/// The CSV settings that were a source's own keys before they moved under `csv`.
pub(super) const MOVED_UNDER_CSV: [Moved; 8] = [
    Moved {
        at: "modalities.*",
        key: "timestamp_column",
        now: "csv.timestamp_column",
    },
    Moved {
        at: "modalities.*",
        key: "columns",
        now: "csv.columns",
    },
    Moved {
        at: "modalities.*",
        key: "exclude",
        now: "csv.exclude",
    },
    Moved {
        at: "modalities.*",
        key: "video_column",
        now: "csv.video_column",
    },
    Moved {
        at: "labels",
        key: "timestamp_column",
        now: "csv.timestamp_column",
    },
    Moved {
        at: "labels",
        key: "columns",
        now: "csv.columns",
    },
    Moved {
        at: "labels",
        key: "exclude",
        now: "csv.exclude",
    },
    Moved {
        at: "labels",
        key: "video_column",
        now: "csv.video_column",
    },
];

/// Checks one modality's (or the labels') file settings; `at` is its path below `params`.
pub(super) fn check_source(
    at: &KeyPath,
    m: &ModalitySource,
    format: Format,
    problems: &mut Vec<ParamProblem>,
) {
    if let Some(csv) = &m.csv {
        if format != Format::Csv {
            problems.push(ParamProblem::at(
                at.key("csv"),
                format!(
                    "`csv` settings apply to CSV files only; this file's format is `{}`",
                    format.as_str()
                ),
            ));
        }
        check_csv(&at.key("csv"), csv, problems);
    }
    if let Some(fps) = m.fps {
        if !(fps.is_finite() && fps > 0.0) {
            problems.push(ParamProblem::at(
                at.key("fps"),
                format!("frames per second must be a finite number > 0, not {fps}"),
            ));
        }
    }
    if let Some(dim) = m.dim {
        if !(1..=MAX_DIM).contains(&dim) {
            problems.push(ParamProblem::at(
                at.key("dim"),
                format!("the feature width must be between 1 and {MAX_DIM}, not {dim}"),
            ));
        }
    }
}

/// Checks a CSV source's column settings; `at` is the `csv` table's path below `params`.
fn check_csv(at: &KeyPath, m: &CsvColumns, problems: &mut Vec<ParamProblem>) {
    if m.timestamp_column.trim().is_empty() {
        problems.push(ParamProblem::at(
            at.key("timestamp_column"),
            "name the timestamp column",
        ));
    }
    if let Some(text) = &m.text_column {
        if text.trim().is_empty() {
            problems.push(ParamProblem::at(
                at.key("text_column"),
                "name the text column (or leave `text_column` out for a column named `text`)",
            ));
        } else if m.columns.as_ref().is_some_and(|c| c.contains(text)) {
            problems.push(ParamProblem::at(
                at.key("text_column"),
                format!("`{text}` is also listed in `columns`: a column is text or a feature"),
            ));
        }
    }
    if let Some(columns) = &m.columns {
        if columns.is_empty() {
            problems.push(ParamProblem::at(
                at.key("columns"),
                "list at least one column (or leave `columns` out to read every column)",
            ));
        }
        let mut seen = BTreeSet::new();
        for (i, name) in columns.iter().enumerate() {
            if !seen.insert(name) {
                problems.push(ParamProblem::at(
                    at.key("columns").index(i),
                    format!("column `{name}` is listed twice"),
                ));
            }
        }
    }
}
