//! The `mmsa_pickle` source: the processed pickles MMSA and MulT distribute
//! (`{train, valid, test} → {id, text, audio, vision, regression_labels, *_lengths, …}`),
//! read with mmflow's data-only pickle reader ([`super::pickle`]): nothing in the file is
//! ever executed.
//!
//! Three layouts ([`Layout`]), told by the keys of the splits or forced with `layout`:
//! MMSA's MOSI/MOSEI files (`mmsa`), MMSA's CH-SIMS files (`sims`: per-modality labels too) and
//! MulT's (`mult`: `labels` `[N, 1, 1]`, `id` rows `[video, start, end]`). A layout gives the
//! default label columns and dataset name; the modalities' keys are the same in all three.
//!
//! Ids `video$_$clip` become segment ids `video[clip]`; MulT's rows become `video[k]`, `k`
//! numbering the video's segments by start time, with `start`/`end` kept (see
//! [`number_segments`]). Each segment's raw text (`raw_text`) becomes the segments table's
//! `text` column. Sequences `[N, L, D]` are cut to `<key>_lengths` when the file has them
//! (MMSA pads at the end), else kept whole.
//!
//! What the file holds is read as numpy reads it and used as MMSA's loader uses it, or
//! refused with the file, split, key and (for one bad value) the segment named: ids whole
//! (`ids.rs`: inner NULs kept, never two ids merged into one segment), one finite label per id
//! in a shape the layout allows, one whole length per id within its sequence (`values.rs`),
//! `raw_text` and each `<key>_lengths` in every split or in none, and every split and key
//! named by a string (MMSA finds them by name). Everything but the features is checked before
//! the first feature is written.
//!
//! Memory stays bounded whatever the file's size: the file is parsed with positioned reads
//! ([`pickle::read_from`] over a [`FileSource`]), which leaves the arrays' numbers in the
//! file, and each feature array is then read [`CHUNK_BYTES`] of rows at a time, each chunk
//! written as one row group. A run reads the file twice: once whole when the executor
//! hashes it for the fingerprint (skipped when its size and modification time are those it
//! last hashed), and once here, the structure while parsing and each array's bytes as they
//! are written (arrays no parameter names are skipped).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use mmflow_pipeline::{
    BoundInputs, InputSlot, OutputPort, ParamProblem, RunContext, StageError, StageKind,
};
use mmflow_schemas::features::{FeatureBatch, FeatureInfo, FeatureWriter};
use mmflow_schemas::files::open_regular;
use mmflow_schemas::segments::{label_name_problems, Segment, SegmentTable};
use mmflow_schemas::Split;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::pickle::{self, FileSource, NdArray, PyValue};
use super::source::NonFinitePolicy;
use crate::datasets::{KnownDataset, SENTIMENT, SIMS_MODALITY_SENTIMENTS};
use crate::slots;
use crate::tables::source_outputs;
use ids::{escaped, number_segments, take_keys, SegmentKey, ID};
use values::{lengths_of, take_labels, texts_of, LabelShapes, Refusal};

mod ids;
mod values;

/// The pickle layouts mmflow reads, each told by the keys of its splits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Layout {
    /// MMSA's MOSI/MOSEI `Processed/{aligned,unaligned}_50.pkl`: `id` strings `video$_$clip`,
    /// `regression_labels`, `raw_text`, `text`/`audio`/`vision` with `audio_lengths`/`vision_lengths`.
    Mmsa,
    /// MMSA's CH-SIMS and CH-SIMS v2 `unaligned_39.pkl`: the `mmsa` keys plus the per-modality
    /// labels `regression_labels_T`, `regression_labels_A`, `regression_labels_V`.
    Sims,
    /// MulT's `{name}_data.pkl` / `{name}_data_noalign.pkl`: `labels` shaped `[N, 1, 1]` and
    /// `id` rows `[video, start, end]`.
    Mult,
}

/// The `layout` param: told by the file's keys, or one layout forced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum LayoutChoice {
    /// The first layout whose keys every split has: `sims` (`id`, `regression_labels`,
    /// `regression_labels_T/A/V`), then `mmsa` (`id`, `regression_labels`), then `mult` (`id`,
    /// `labels`).
    #[default]
    Auto,
    /// MMSA's MOSI/MOSEI pickles.
    Mmsa,
    /// MMSA's CH-SIMS / CH-SIMS v2 pickles.
    Sims,
    /// MulT's pickles.
    Mult,
}

impl Layout {
    /// In the order `auto` tries them: `sims` holds every key `mmsa` needs.
    const DETECTED_IN_ORDER: [Layout; 3] = [Layout::Sims, Layout::Mmsa, Layout::Mult];

    /// Its name in configs and reports.
    pub fn name(self) -> &'static str {
        match self {
            Layout::Mmsa => "mmsa",
            Layout::Sims => "sims",
            Layout::Mult => "mult",
        }
    }

    /// The keys every split of a file in this layout has.
    pub fn needs(self) -> &'static [&'static str] {
        match self {
            Layout::Mmsa => &[ID, "regression_labels"],
            Layout::Sims => &[
                ID,
                "regression_labels",
                "regression_labels_T",
                "regression_labels_A",
                "regression_labels_V",
            ],
            Layout::Mult => &[ID, "labels"],
        }
    }

    /// Label column → key, when the config names none: MMSA's regression labels as
    /// `sentiment` (and CH-SIMS's per-modality ones as `sentiment_T/A/V`), MulT's `labels`.
    pub fn default_labels(self) -> BTreeMap<String, String> {
        let pairs: Vec<(&str, &str)> = match self {
            Layout::Mmsa => vec![(SENTIMENT, "regression_labels")],
            Layout::Sims => std::iter::once((SENTIMENT, "regression_labels"))
                .chain(SIMS_MODALITY_SENTIMENTS.into_iter().zip([
                    "regression_labels_T",
                    "regression_labels_A",
                    "regression_labels_V",
                ]))
                .collect(),
            Layout::Mult => vec![(SENTIMENT, "labels")],
        };
        pairs
            .into_iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    /// The shapes its label arrays may have: one label per id, `[N]` or `[N, 1]`, and in
    /// MulT's layout also `[N, 1, 1]`, as MulT stores them.
    fn label_shapes(self) -> LabelShapes {
        LabelShapes {
            layout: self.name(),
            trailing: match self {
                Layout::Mmsa | Layout::Sims => &[&[], &[1]],
                Layout::Mult => &[&[], &[1], &[1, 1]],
            },
        }
    }

    /// The dataset name written when the config names none.
    pub fn default_dataset(self) -> &'static str {
        match self {
            Layout::Sims => KnownDataset::Sims.name(),
            Layout::Mmsa | Layout::Mult => KnownDataset::Mosi.name(),
        }
    }

    /// Whether a split with these keys has every key the layout needs.
    fn fits(self, keys: &BTreeMap<String, PyValue>) -> bool {
        self.needs().iter().all(|k| keys.contains_key(*k))
    }

    /// The layout of a split's keys, if one fits.
    fn of_keys(keys: &BTreeMap<String, PyValue>) -> Option<Layout> {
        Layout::DETECTED_IN_ORDER.into_iter().find(|l| l.fits(keys))
    }
}

impl LayoutChoice {
    /// The layout forced, if one is.
    fn forced(self) -> Option<Layout> {
        match self {
            LayoutChoice::Auto => None,
            LayoutChoice::Mmsa => Some(Layout::Mmsa),
            LayoutChoice::Sims => Some(Layout::Sims),
            LayoutChoice::Mult => Some(Layout::Mult),
        }
    }
}

/// The key read for each segment's raw text when `text` names none.
pub const RAW_TEXT: &str = "raw_text";

/// Parameters of the `mmsa_pickle` stage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct MmsaParams {
    /// The pickle file.
    pub path: PathBuf,
    /// How the file's keys are read: told by the keys every split has, or one layout forced
    /// whatever the keys.
    pub layout: LayoutChoice,
    /// Dataset name written to the tables (`sims`, `simsv2` select CH-SIMS's metrics); default:
    /// `sims` for a file in the `sims` layout, else `mosi`.
    pub dataset: Option<String>,
    /// Output modality name → the key of its `[N, L, D]` array in each split; the default names
    /// the keys every layout uses. `{}` reads no features: only the segments table is written
    /// (labels and `text`), and the raw text is then required.
    pub modalities: BTreeMap<String, String>,
    /// Label column name → the key of its `N` values in each split (`[N]` or `[N, 1]`, and in
    /// the `mult` layout `[N, 1, 1]` as MulT stores them; each a finite number); default: the layout's (`mmsa`: `sentiment` ← `regression_labels`;
    /// `sims`: also `sentiment_T/A/V` ← `regression_labels_T/A/V`; `mult`: `sentiment` ← `labels`).
    pub labels: Option<BTreeMap<String, String>>,
    /// The key of each segment's raw text (`N` strings), written as the segments table's `text`
    /// column; default: `raw_text`, read when a split has it. A key named here is required.
    pub text: Option<String>,
    /// Per output modality: NaN/±inf values `keep` (default), `zero` (as MulT/MMSA do to -inf) or `error`.
    pub nonfinite: BTreeMap<String, NonFinitePolicy>,
    /// Cut sequences to `<key>_lengths` when the file has such an array or list (one whole
    /// number per id, from 0 to the sequence's length; in every split or in none).
    pub use_lengths: bool,
}

impl Default for MmsaParams {
    fn default() -> Self {
        MmsaParams {
            path: PathBuf::new(),
            layout: LayoutChoice::Auto,
            dataset: None,
            modalities: [("text", "text"), ("audio", "audio"), ("visual", "vision")]
                .iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect(),
            labels: None,
            text: None,
            nonfinite: BTreeMap::new(),
            use_lengths: true,
        }
    }
}

/// The `mmsa_pickle` stage kind.
pub struct MmsaPickle;

impl StageKind for MmsaPickle {
    type Params = MmsaParams;
    const KIND: &'static str = "mmsa_pickle";
    const VERSION: u32 = 3;
    const ABOUT: &'static str =
        "MMSA (MOSI/MOSEI, CH-SIMS) and MulT processed pickles (read as data, never executed)";

    fn check(&self, p: &MmsaParams) -> Vec<ParamProblem> {
        let mut problems = Vec::new();
        if p.path.as_os_str().is_empty() {
            problems.push(ParamProblem::new("path", "is required"));
        }
        for name in p.modalities.keys() {
            if name == "segments"
                || !name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
            {
                problems.push(ParamProblem::new(
                    &format!("modalities.{name}"),
                    "modality names are output names: letters, digits, `_`, `-`, and not `segments`",
                ));
            }
        }
        if let Some(labels) = &p.labels {
            let names: Vec<String> = labels.keys().cloned().collect();
            for (i, problem) in label_name_problems(&names) {
                problems.push(ParamProblem::new(&format!("labels.{}", names[i]), problem));
            }
        }
        if p.text.as_deref().is_some_and(str::is_empty) {
            problems.push(ParamProblem::new(
                "text",
                "name the key of the raw text (or leave `text` out for `raw_text`)",
            ));
        }
        for name in p.nonfinite.keys() {
            if !p.modalities.contains_key(name) {
                problems.push(ParamProblem::new(
                    &format!("nonfinite.{name}"),
                    "is not one of the modalities",
                ));
            }
        }
        problems
    }

    fn uses_seed(&self, _: &MmsaParams) -> bool {
        false
    }

    fn inputs(&self, _: &MmsaParams) -> Vec<InputSlot> {
        Vec::new()
    }

    fn outputs(
        &self,
        p: &MmsaParams,
        _: &BoundInputs,
    ) -> Result<Vec<OutputPort>, Vec<ParamProblem>> {
        Ok(source_outputs(p.modalities.keys().cloned()))
    }

    fn external_files(&self, p: &MmsaParams) -> Vec<PathBuf> {
        vec![p.path.clone()]
    }

    fn run(&self, p: &MmsaParams, ctx: &mut RunContext<'_>) -> Result<(), StageError> {
        let io = |source| StageError::Io {
            path: p.path.clone(),
            source,
        };
        let (file, size) = open_regular(&p.path).map_err(io)?;
        let source = FileSource::new(file, size).map_err(io)?;
        let root = pickle::read_from(&source)
            .map_err(|e| StageError::input(format!("{}: {e}", p.path.display())))?;
        let file = PickleFile {
            path: &p.path,
            source: &source,
        };
        let mut splits = file.splits(root)?;
        let layout = match p.layout.forced() {
            Some(layout) => layout,
            None => file.detect_layout(&splits)?,
        };
        let dataset = p
            .dataset
            .clone()
            .unwrap_or_else(|| layout.default_dataset().to_string());
        let labels = p.labels.clone().unwrap_or_else(|| layout.default_labels());
        file.check_optional_keys(&splits, &optional_keys(p))?;
        let ids = file.take_ids(&mut splits)?;
        let numbered = file.number(&splits, &ids)?;

        // Labels, texts, lengths and feature shapes of every split first: they are small, and
        // a bad one should not wait for the features of the splits before it to be written.
        let mut checked = Vec::with_capacity(splits.len());
        for (split, segment_ids) in splits.iter_mut().zip(&numbered) {
            checked.push(file.split_values(split, p, layout, &labels, segment_ids)?);
        }

        let mut writers: BTreeMap<String, (FeatureWriter, usize)> = BTreeMap::new();
        let mut rows = Vec::new();
        let mut report = Report::default();
        let mut first_split: BTreeMap<&[String], Split> = BTreeMap::new();
        let each_split = splits.iter().zip(&ids).zip(numbered).zip(checked);
        for (((split, ids), segment_ids), values) in each_split {
            report.note_repeats(&mut first_split, split.split, ids, &segment_ids);
            for (modality, sequences) in values.sequences {
                report
                    .lengths
                    .insert(modality.clone(), sequences.lengths.is_some());
                let features = ModalityRead {
                    modality: &modality,
                    key: &p.modalities[&modality],
                    segment_ids: &segment_ids,
                    policy: p.nonfinite.get(&modality).copied().unwrap_or_default(),
                };
                file.write_modality(
                    &split.name,
                    &features,
                    sequences,
                    &dataset,
                    &mut writers,
                    &mut report,
                    ctx,
                )?;
            }
            let texts = values.texts.map_or_else(
                || vec![None; ids.len()],
                |t| t.into_iter().map(Some).collect(),
            );
            for (((id, segment_id), labels), text) in
                ids.iter().zip(segment_ids).zip(values.labels).zip(texts)
            {
                rows.push(Segment {
                    dataset: dataset.clone(),
                    video_id: id.video.clone(),
                    segment_id,
                    split: split.split,
                    speaker_id: None,
                    start: id.start,
                    end: id.end,
                    labels,
                    text,
                });
            }
            report.unused.extend(split.items.keys().cloned());
        }
        for (_, (w, _)) in writers {
            w.finish()?;
        }
        let table = SegmentTable {
            label_names: labels.keys().cloned().collect(),
            rows,
        };
        table.write(ctx.output(slots::SEGMENTS)?, ctx.table_meta())?;
        report.warn_repeats(ctx.stage_id, &p.path);
        ctx.report("layout", layout.name());
        report.record(ctx, &table);
        Ok(())
    }
}

/// What the stage counts while reading, for its report.
#[derive(Default)]
struct Report {
    repeated: Vec<String>,
    nonfinite: BTreeMap<String, usize>,
    lengths: BTreeMap<String, bool>,
    unused: BTreeSet<String>,
}

impl Report {
    /// Notes each id of `split` already seen in an earlier split (`first_split`: where each
    /// id was first seen).
    fn note_repeats<'k>(
        &mut self,
        first_split: &mut BTreeMap<&'k [String], Split>,
        split: Split,
        ids: &'k [SegmentKey],
        segment_ids: &[String],
    ) {
        for (id, seg) in ids.iter().zip(segment_ids) {
            match first_split.get(id.row.as_slice()) {
                Some(first) => self.repeated.push(format!(
                    "`{}` ({first} and {split}, now `{}`)",
                    id.shown(),
                    escaped(seg)
                )),
                None => {
                    first_split.insert(&id.row, split);
                }
            }
        }
    }

    /// The counts, in the stage's report.
    fn record(self, ctx: &mut RunContext<'_>, table: &SegmentTable) {
        ctx.report("segments", table.split_counts());
        ctx.report(
            "segments_with_text",
            table.rows.iter().filter(|r| r.text.is_some()).count(),
        );
        ctx.report("repeated_ids", self.repeated);
        ctx.report("nonfinite_values", self.nonfinite);
        ctx.report("cut_to_lengths", self.lengths);
        ctx.report("keys_not_used", self.unused);
    }

    /// Repeated ids, in the log (the first five): a sign of leakage between splits.
    fn warn_repeats(&self, stage: &str, path: &Path) {
        if self.repeated.is_empty() {
            return;
        }
        tracing::warn!(
            "{stage}: {} ids occur more than once in {} (check for leakage between splits): {}",
            self.repeated.len(),
            path.display(),
            self.repeated
                .iter()
                .take(5)
                .cloned()
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
}

/// One split of the file: its keys, the ids and arrays still to be taken out.
struct SplitItems {
    split: Split,
    name: String,
    items: BTreeMap<String, PyValue>,
}

/// One modality of one split to write: under which name, from which key, how.
struct ModalityRead<'a> {
    modality: &'a str,
    key: &'a str,
    segment_ids: &'a [String],
    policy: NonFinitePolicy,
}

/// What a split holds for its segments, checked before any feature is written: a row of
/// labels and a text per segment, and each modality's array with its lengths.
struct SplitValues {
    labels: Vec<Vec<Option<f32>>>,
    texts: Option<Vec<String>>,
    sequences: BTreeMap<String, CheckedSequences>,
}

/// A modality's array in one split, its shape checked against the ids, and the steps each
/// segment keeps (`None`: all of them).
struct CheckedSequences {
    array: Arc<NdArray>,
    shape: Sequences,
    lengths: Option<Vec<usize>>,
}

/// The keys a split may lack, but then every split must: the raw text (unless required: then
/// each split needs it) and, with `use_lengths`, each modality's `<key>_lengths`.
fn optional_keys(p: &MmsaParams) -> Vec<String> {
    let mut keys = vec![p.text.clone().unwrap_or_else(|| RAW_TEXT.to_string())];
    if p.use_lengths {
        keys.extend(p.modalities.values().map(|key| lengths_key(key)));
    }
    keys
}

/// The key of a feature array's per-segment lengths.
fn lengths_key(key: &str) -> String {
    format!("{key}_lengths")
}

/// The file being read: its path for messages, its bytes for the arrays left in it.
struct PickleFile<'a> {
    path: &'a Path,
    source: &'a FileSource,
}

impl PickleFile<'_> {
    /// An input error naming the file, the split and the key.
    fn fail(&self, split: &str, key: &str, message: String) -> StageError {
        StageError::input(format!(
            "{}: split `{split}`, key `{key}`: {message}",
            self.path.display()
        ))
    }

    /// The root dict's splits, in the order train, valid, test.
    fn splits(&self, root: PyValue) -> Result<Vec<SplitItems>, StageError> {
        let PyValue::Dict(splits) = root else {
            return Err(StageError::input(format!(
                "{}: the pickle holds a {}, expected a dict of splits (train, valid, test)",
                self.path.display(),
                root.type_name()
            )));
        };
        // A key met again replaces the earlier value, as in Python's dict.
        let mut by_name: BTreeMap<String, PyValue> = BTreeMap::new();
        for (k, v) in splits {
            let PyValue::Str(name) = k else {
                return Err(StageError::input(format!(
                    "{}: the pickle's dict has a key that is a {}, expected split names (train, valid, test)",
                    self.path.display(),
                    k.type_name()
                )));
            };
            by_name.insert(name, v);
        }
        let mut by_split: Vec<SplitItems> = Vec::new();
        for (name, v) in by_name {
            let Some(split) = Split::parse(&name) else {
                return Err(StageError::input(format!(
                    "{}: unknown split `{}` (expected train, valid, test)",
                    self.path.display(),
                    escaped(&name)
                )));
            };
            if let Some(other) = by_split.iter().find(|s| s.split == split) {
                return Err(StageError::input(format!(
                    "{}: splits `{}` and `{name}` are both the {split} split (keep one)",
                    self.path.display(),
                    other.name
                )));
            }
            let items = self.split_keys(&name, v)?;
            by_split.push(SplitItems { split, name, items });
        }
        by_split.sort_by_key(|s| s.split);
        if by_split.is_empty() {
            return Err(StageError::input(format!(
                "{}: no train/valid/test split",
                self.path.display()
            )));
        }
        Ok(by_split)
    }

    /// A split's dict, by key: every key a str (MMSA's loader finds its keys by name; a key of
    /// another type would be silently left out). A key met again replaces the earlier value.
    fn split_keys(
        &self,
        name: &str,
        split: PyValue,
    ) -> Result<BTreeMap<String, PyValue>, StageError> {
        let PyValue::Dict(items) = split else {
            return Err(StageError::input(format!(
                "{}: split `{name}` is a {}, expected a dict of keys",
                self.path.display(),
                split.type_name()
            )));
        };
        items
            .into_iter()
            .map(|(k, v)| match k {
                PyValue::Str(k) => Ok((k, v)),
                other => Err(StageError::input(format!(
                    "{}: split `{name}` has a key that is a {}, expected str keys",
                    self.path.display(),
                    other.type_name()
                ))),
            })
            .collect()
    }

    /// The layout every split's keys fit, or an error naming the keys found and what each
    /// layout needs.
    fn detect_layout(&self, splits: &[SplitItems]) -> Result<Layout, StageError> {
        let mut found: Option<(Layout, &str)> = None;
        for s in splits {
            let Some(layout) = Layout::of_keys(&s.items) else {
                let needs: Vec<String> = Layout::DETECTED_IN_ORDER
                    .iter()
                    .map(|l| format!("`{}` needs {}", l.name(), quoted(l.needs())))
                    .collect();
                return Err(StageError::input(format!(
                    "{}: split `{}` fits none of the known layouts: its keys are {}; {} (or set `layout` and name the keys in `labels`)",
                    self.path.display(),
                    s.name,
                    quoted(s.items.keys()),
                    needs.join("; ")
                )));
            };
            match found {
                Some((first, name)) if first != layout => {
                    return Err(StageError::input(format!(
                        "{}: split `{name}` is in the `{}` layout but split `{}` in the `{}` layout (set `layout` to read them as one)",
                        self.path.display(),
                        first.name(),
                        s.name,
                        layout.name()
                    )))
                }
                Some(_) => {}
                None => found = Some((layout, &s.name)),
            }
        }
        Ok(found.map_or(Layout::Mmsa, |(l, _)| l))
    }

    /// Every split's ids, taken out of its items.
    fn take_ids(&self, splits: &mut [SplitItems]) -> Result<Vec<Vec<SegmentKey>>, StageError> {
        splits
            .iter_mut()
            .map(|s| take_keys(&mut s.items).map_err(|m| self.fail(&s.name, ID, m)))
            .collect()
    }

    /// Every split's segment ids (see [`number_segments`]); two different ids that would
    /// become one are an error naming both.
    fn number(
        &self,
        splits: &[SplitItems],
        ids: &[Vec<SegmentKey>],
    ) -> Result<Vec<Vec<String>>, StageError> {
        let names: Vec<&str> = splits.iter().map(|s| s.name.as_str()).collect();
        number_segments(&names, ids).map_err(|c| self.fail(names[c.split], ID, c.message))
    }

    /// Each of `keys` is in every split or in none (a `None` counts as none): MMSA reads them
    /// from each split, and a split without them would silently differ (its sequences uncut,
    /// its segments without text).
    fn check_optional_keys(
        &self,
        splits: &[SplitItems],
        keys: &[String],
    ) -> Result<(), StageError> {
        for key in keys {
            let has = |s: &&SplitItems| s.items.get(key).is_some_and(|v| *v != PyValue::None);
            if let (Some(with), Some(without)) =
                (splits.iter().find(has), splits.iter().find(|s| !has(s)))
            {
                return Err(self.fail(
                    &without.name,
                    key,
                    format!(
                        "is missing, but split `{}` has it: every split needs it, or none",
                        with.name
                    ),
                ));
            }
        }
        Ok(())
    }

    /// An error in one of a split's arrays: at one row, named by its segment id.
    fn refused(&self, split: &str, key: &str, segment_ids: &[String], r: Refusal) -> StageError {
        match r {
            Refusal::Array(message) => self.fail(split, key, message),
            Refusal::Row(row, message) => {
                let segment = segment_ids
                    .get(row)
                    .map_or_else(String::new, |s| escaped(s));
                self.fail(
                    split,
                    key,
                    format!("segment `{segment}` (row {row}): {message}"),
                )
            }
        }
    }

    /// A split's labels, text, and each modality's array shape and lengths, checked against
    /// its ids; the keys read are taken out of its items.
    fn split_values(
        &self,
        split: &mut SplitItems,
        p: &MmsaParams,
        layout: Layout,
        labels: &BTreeMap<String, String>,
        segment_ids: &[String],
    ) -> Result<SplitValues, StageError> {
        let n = segment_ids.len();
        let mut label_rows: Vec<Vec<Option<f32>>> = vec![Vec::new(); n];
        for key in labels.values() {
            let values = take_labels(
                &mut split.items,
                key,
                n,
                &layout.label_shapes(),
                self.source,
            )
            .map_err(|r| self.refused(&split.name, key, segment_ids, r))?;
            for (row, v) in label_rows.iter_mut().zip(values) {
                row.push(Some(v));
            }
        }
        let texts = self.take_text(split, p, n)?;
        let mut sequences = BTreeMap::new();
        for (modality, key) in &p.modalities {
            let checked = self.sequences_of(split, key, p.use_lengths, segment_ids)?;
            sequences.insert(modality.clone(), checked);
        }
        // Taken out only now: two modalities may read the same key.
        for key in p.modalities.values() {
            split.items.remove(key);
            if p.use_lengths {
                split.items.remove(&lengths_key(key));
            }
        }
        Ok(SplitValues {
            labels: label_rows,
            texts,
            sequences,
        })
    }

    /// The feature array `key` of a split, `[N, L, D]` floats with N the ids, and (when
    /// `use_lengths` and the split has them) the steps each segment keeps.
    fn sequences_of(
        &self,
        split: &SplitItems,
        key: &str,
        use_lengths: bool,
        segment_ids: &[String],
    ) -> Result<CheckedSequences, StageError> {
        let (name, n) = (split.name.as_str(), segment_ids.len());
        let fail = |message: String| self.fail(name, key, message);
        let array = match split.items.get(key) {
            Some(PyValue::Array(a)) => Arc::clone(a),
            Some(other) => {
                return Err(fail(format!(
                    "is a {}, expected a float array",
                    other.type_name()
                )))
            }
            None => return Err(fail("is missing".into())),
        };
        let shape = sequences(&array).map_err(fail)?;
        if shape.count != n {
            return Err(fail(format!("{} sequences for {n} ids", shape.count)));
        }
        let lengths_key = lengths_key(key);
        let lengths = match split.items.get(&lengths_key) {
            Some(v) if use_lengths => lengths_of(v.clone(), n, shape.steps, self.source)
                .map_err(|r| self.refused(name, &lengths_key, segment_ids, r))?,
            _ => None,
        };
        Ok(CheckedSequences {
            array,
            shape,
            lengths,
        })
    }

    /// The split's raw text, one string per id: the `text` key, else `raw_text` when present
    /// (required when no modality is read).
    fn take_text(
        &self,
        split: &mut SplitItems,
        p: &MmsaParams,
        n: usize,
    ) -> Result<Option<Vec<String>>, StageError> {
        let key = p.text.as_deref().unwrap_or(RAW_TEXT);
        let required = p.text.is_some() || p.modalities.is_empty();
        let Some(value) = split.items.remove(key) else {
            if !required {
                return Ok(None);
            }
            let why = if p.modalities.is_empty() {
                " (`modalities = {}` reads only labels and text, so the text is required)"
            } else {
                ""
            };
            return Err(self.fail(&split.name, key, format!("is missing{why}")));
        };
        let texts = texts_of(value).map_err(|m| self.fail(&split.name, key, m))?;
        if texts.len() != n {
            return Err(self.fail(
                &split.name,
                key,
                format!("{} texts for {n} ids", texts.len()),
            ));
        }
        Ok(Some(texts))
    }

    /// Reads one modality's array of a split and writes it, a chunk of rows at a time.
    #[expect(
        clippy::too_many_arguments,
        reason = "the split's name and array, the modality, and the writers and report every split shares"
    )]
    fn write_modality(
        &self,
        split: &str,
        m: &ModalityRead<'_>,
        sequences: CheckedSequences,
        dataset: &str,
        writers: &mut BTreeMap<String, (FeatureWriter, usize)>,
        report: &mut Report,
        ctx: &mut RunContext<'_>,
    ) -> Result<(), StageError> {
        let (key, n) = (m.key, m.segment_ids.len());
        let fail = |message: String| self.fail(split, key, message);
        let CheckedSequences {
            array,
            shape: Sequences { steps, dim, .. },
            lengths,
        } = sequences;
        let (writer, width) = match writers.get_mut(m.modality) {
            Some(w) => w,
            None => {
                let info = FeatureInfo {
                    dataset: dataset.to_string(),
                    modality: m.modality.to_string(),
                    dim,
                };
                let w =
                    FeatureWriter::create(ctx.output_named(m.modality)?, &info, ctx.table_meta())?;
                writers.entry(m.modality.to_string()).or_insert((w, dim))
            }
        };
        if *width != dim {
            return Err(fail(format!(
                "{dim} features wide, but {width} in the first split"
            )));
        }
        // `count × steps × dim` elements are in the file (checked when it was read),
        // so these products cannot overflow and every slice is in range.
        let row = steps.saturating_mul(dim);
        let chunk_rows = (CHUNK_BYTES / row.saturating_mul(4).max(1)).max(1);
        let mut values = Vec::new();
        for first in (0..n).step_by(chunk_rows) {
            let rows = first..first.saturating_add(chunk_rows).min(n);
            values.clear();
            array
                .read_rows_f32(self.source, rows.clone(), &mut values)
                .map_err(|e| fail(e.to_string()))?;
            let mut batch = FeatureBatch::new(dim);
            for (k, i) in rows.enumerate() {
                let id = &m.segment_ids[i];
                // Lengths were checked to be at most `steps`.
                let len = lengths
                    .as_ref()
                    .and_then(|l| l.get(i))
                    .map_or(steps, |&l| l);
                let start = k.saturating_mul(row);
                let frames = &mut values[start..start.saturating_add(len.saturating_mul(dim))];
                let bad = frames.iter().filter(|x| !x.is_finite()).count();
                if bad > 0 {
                    *report.nonfinite.entry(m.modality.to_string()).or_default() += bad;
                    match m.policy {
                        NonFinitePolicy::Keep => {}
                        NonFinitePolicy::Zero => frames
                            .iter_mut()
                            .filter(|x| !x.is_finite())
                            .for_each(|x| *x = 0.0),
                        NonFinitePolicy::Error => {
                            return Err(fail(format!(
                                "segment `{}`: {bad} non-finite values (nonfinite = \"error\")",
                                escaped(id)
                            )))
                        }
                    }
                }
                batch.push(id.clone(), frames);
            }
            writer.write(batch)?;
        }
        Ok(())
    }
}

/// `items` as a list of backquoted names, for messages.
fn quoted<S: AsRef<str>>(items: impl IntoIterator<Item = S>) -> String {
    let names: Vec<String> = items
        .into_iter()
        .map(|k| format!("`{}`", k.as_ref()))
        .collect();
    if names.is_empty() {
        "none".into()
    } else {
        names.join(", ")
    }
}

/// The shape of `N` sequences of `L` steps of `D` features, row-major.
struct Sequences {
    count: usize,
    steps: usize,
    dim: usize,
}

/// The widest feature vector a features table can hold (Arrow list sizes are i32).
const MAX_WIDTH: usize = i32::MAX as usize;

/// Feature arrays are read and written this many bytes of rows at a time (at least one
/// row), each chunk one row group: what bounds the stage's memory.
const CHUNK_BYTES: usize = 16 << 20;

/// `[N, L, D]` (or `[N, D]`, taken as L = 1) float data, with `D` a usable width.
fn sequences(array: &NdArray) -> Result<Sequences, String> {
    let (count, steps, dim) = match array.shape.as_slice() {
        [n, l, d] => (*n, *l, *d),
        [n, d] => (*n, 1, *d),
        other => return Err(format!("has shape {other:?}, expected [N, L, D] or [N, D]")),
    };
    if dim == 0 {
        return Err(format!(
            "has shape {:?}: 0 features wide, expected at least one feature",
            array.shape
        ));
    }
    if dim > MAX_WIDTH {
        return Err(format!(
            "has shape {:?}: {dim} features wide, more than the {MAX_WIDTH} a features table holds",
            array.shape
        ));
    }
    if !array.data.is_float() {
        return Err(format!("is a {} array, expected floats", array.kind()));
    }
    Ok(Sequences { count, steps, dim })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(names: &[&str]) -> BTreeMap<String, PyValue> {
        names
            .iter()
            .map(|k| (k.to_string(), PyValue::None))
            .collect()
    }

    #[test]
    fn layouts_are_told_by_their_keys() {
        let mmsa = [
            "id",
            "raw_text",
            "text",
            "audio",
            "vision",
            "regression_labels",
        ];
        assert_eq!(Layout::of_keys(&keys(&mmsa)), Some(Layout::Mmsa));
        let sims = [
            "id",
            "regression_labels",
            "regression_labels_T",
            "regression_labels_A",
            "regression_labels_V",
        ];
        assert_eq!(Layout::of_keys(&keys(&sims)), Some(Layout::Sims));
        // Two of the three per-modality labels: still MOSI/MOSEI's keys.
        assert_eq!(Layout::of_keys(&keys(&sims[..4])), Some(Layout::Mmsa));
        let mult = ["id", "text", "audio", "vision", "labels"];
        assert_eq!(Layout::of_keys(&keys(&mult)), Some(Layout::Mult));
        assert_eq!(Layout::of_keys(&keys(&["id", "audio", "score"])), None);
        assert_eq!(Layout::of_keys(&keys(&["labels", "audio"])), None);
    }

    #[test]
    fn each_layout_has_its_default_labels_and_dataset() {
        let sims = Layout::Sims.default_labels();
        assert_eq!(
            sims.iter()
                .map(|(a, b)| format!("{a}={b}"))
                .collect::<Vec<_>>(),
            [
                "sentiment=regression_labels",
                "sentiment_A=regression_labels_A",
                "sentiment_T=regression_labels_T",
                "sentiment_V=regression_labels_V"
            ]
        );
        assert_eq!(Layout::Mult.default_labels()["sentiment"], "labels");
        assert_eq!(Layout::Mmsa.default_labels().len(), 1);
        assert_eq!(Layout::Sims.default_dataset(), "sims");
        assert_eq!(Layout::Mult.default_dataset(), "mosi");
        for layout in Layout::DETECTED_IN_ORDER {
            for key in layout.default_labels().values() {
                assert!(layout.needs().contains(&key.as_str()), "{layout:?} {key}");
            }
        }
    }
}
