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

use mmflow_pipeline::files::open_regular;
use mmflow_pipeline::{
    BoundInputs, InputSlot, OutputPort, ParamProblem, RunContext, StageError, StageKind,
};
use mmflow_schemas::features::{FeatureBatch, FeatureInfo, FeatureWriter};
use mmflow_schemas::segments::{label_name_problems, Segment, SegmentTable};
use mmflow_schemas::{segment_id, Split};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::pickle::{self, ArrayData, FileSource, NdArray, PyValue};
use super::source::NonFinitePolicy;
use crate::datasets::{KnownDataset, SENTIMENT, SIMS_MODALITY_SENTIMENTS};
use crate::tables::{FEATURES, SEGMENTS};

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

/// The key of every layout's segment ids.
const ID: &str = "id";

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
    /// Label column name → the key of its `N` values in each split (`[N]`, or `[N, 1, 1]` as
    /// MulT stores them); default: the layout's (`mmsa`: `sentiment` ← `regression_labels`;
    /// `sims`: also `sentiment_T/A/V` ← `regression_labels_T/A/V`; `mult`: `sentiment` ← `labels`).
    pub labels: Option<BTreeMap<String, String>>,
    /// The key of each segment's raw text (`N` strings), written as the segments table's `text`
    /// column; default: `raw_text`, read when a split has it. A key named here is required.
    pub text: Option<String>,
    /// Per output modality: NaN/±inf values `keep` (default), `zero` (as MulT/MMSA do to -inf) or `error`.
    pub nonfinite: BTreeMap<String, NonFinitePolicy>,
    /// Cut sequences to `<key>_lengths` when the file has such an array or list.
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
    const VERSION: u32 = 2;
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
        let mut ports = vec![OutputPort::new("segments", SEGMENTS)];
        ports.extend(
            p.modalities
                .keys()
                .map(|m| OutputPort::new(m.clone(), FEATURES)),
        );
        Ok(ports)
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
        let ids = file.take_ids(&mut splits)?;
        let numbered = number_segments(&ids);

        // Labels and texts of every split first: they are small, and a bad one should not
        // wait for the features of the splits before it to be written.
        let mut labelled = Vec::with_capacity(splits.len());
        for (split, ids) in splits.iter_mut().zip(&ids) {
            let n = ids.len();
            let mut label_rows: Vec<Vec<Option<f32>>> = vec![Vec::new(); n];
            for key in labels.values() {
                let values = take_floats(&mut split.items, key, n, &source)
                    .map_err(|m| file.fail(&split.name, key, m))?;
                for (row, v) in label_rows.iter_mut().zip(values) {
                    row.push(Some(v));
                }
            }
            let texts = file.take_text(split, p, n)?;
            labelled.push((label_rows, texts));
        }

        let mut writers: BTreeMap<String, (FeatureWriter, usize)> = BTreeMap::new();
        let mut rows = Vec::new();
        let mut report = Report::default();
        let mut first_split: BTreeMap<&str, Split> = BTreeMap::new();
        let each_split = splits.iter_mut().zip(&ids).zip(numbered).zip(labelled);
        for (((split, ids), segment_ids), (label_rows, texts)) in each_split {
            for (id, seg) in ids.iter().zip(&segment_ids) {
                match first_split.get(id.raw.as_str()) {
                    Some(first) => report.repeated.push(format!(
                        "`{}` ({first} and {}, now `{seg}`)",
                        id.raw, split.split
                    )),
                    None => {
                        first_split.insert(&id.raw, split.split);
                    }
                }
            }
            for (modality, key) in &p.modalities {
                let features = ModalityRead {
                    modality,
                    key,
                    segment_ids: &segment_ids,
                    policy: p.nonfinite.get(modality).copied().unwrap_or_default(),
                    use_lengths: p.use_lengths,
                };
                file.write_modality(split, &features, &dataset, &mut writers, &mut report, ctx)?;
            }
            let texts = texts.map_or_else(
                || vec![None; ids.len()],
                |t| t.into_iter().map(Some).collect(),
            );
            for (((id, segment_id), labels), text) in
                ids.iter().zip(segment_ids).zip(label_rows).zip(texts)
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
        table.write(ctx.output("segments")?, ctx.table_meta())?;
        if !report.repeated.is_empty() {
            tracing::warn!(
                "{}: {} ids occur more than once in {} (check for leakage between splits): {}",
                ctx.stage_id,
                report.repeated.len(),
                p.path.display(),
                report
                    .repeated
                    .iter()
                    .take(5)
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        ctx.report("layout", layout.name());
        ctx.report("segments", table.split_counts());
        ctx.report(
            "segments_with_text",
            table.rows.iter().filter(|r| r.text.is_some()).count(),
        );
        ctx.report("repeated_ids", report.repeated);
        ctx.report("nonfinite_values", report.nonfinite);
        ctx.report("cut_to_lengths", report.lengths);
        ctx.report("keys_not_used", report.unused);
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

/// One split of the file: its keys, the ids and arrays still to be taken out.
struct SplitItems {
    split: Split,
    name: String,
    items: BTreeMap<String, PyValue>,
}

/// One modality of one split to write: which array, under which name, how.
struct ModalityRead<'a> {
    modality: &'a str,
    key: &'a str,
    segment_ids: &'a [String],
    policy: NonFinitePolicy,
    use_lengths: bool,
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
        let mut by_split = Vec::new();
        for (k, v) in splits {
            let PyValue::Str(name) = k else { continue };
            let Some(split) = Split::parse(&name) else {
                return Err(StageError::input(format!(
                    "{}: unknown split `{name}` (expected train, valid, test)",
                    self.path.display()
                )));
            };
            let PyValue::Dict(items) = v else {
                return Err(self.fail(&name, "", "is not a dict".into()));
            };
            let items = items
                .into_iter()
                .filter_map(|(k, v)| match k {
                    PyValue::Str(k) => Some((k, v)),
                    _ => None,
                })
                .collect();
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
            .map(|s| {
                take_id_rows(&mut s.items)
                    .and_then(|rows| rows.into_iter().map(SegmentKey::of_row).collect())
                    .map_err(|m| self.fail(&s.name, ID, m))
            })
            .collect()
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
    fn write_modality(
        &self,
        split: &mut SplitItems,
        m: &ModalityRead<'_>,
        dataset: &str,
        writers: &mut BTreeMap<String, (FeatureWriter, usize)>,
        report: &mut Report,
        ctx: &mut RunContext<'_>,
    ) -> Result<(), StageError> {
        let (name, key, n) = (split.name.as_str(), m.key, m.segment_ids.len());
        let fail = |message: String| self.fail(name, key, message);
        let array = match split.items.remove(key) {
            Some(PyValue::Array(a)) => a,
            Some(other) => {
                return Err(fail(format!(
                    "is a {}, expected a float array",
                    other.type_name()
                )))
            }
            None => return Err(fail("is missing".into())),
        };
        let Sequences { count, steps, dim } = sequences(&array).map_err(fail)?;
        if count != n {
            return Err(fail(format!("{count} sequences for {n} ids")));
        }
        let lengths = if m.use_lengths {
            let lengths_key = format!("{key}_lengths");
            match split.items.remove(&lengths_key) {
                Some(v) => {
                    lengths_of(v, n, self.source).map_err(|e| self.fail(name, &lengths_key, e))?
                }
                None => None,
            }
        } else {
            None
        };
        report
            .lengths
            .insert(m.modality.to_string(), lengths.is_some());
        let (writer, width) = match writers.get_mut(m.modality) {
            Some(w) => w,
            None => {
                let info = FeatureInfo {
                    dataset: dataset.to_string(),
                    modality: m.modality.to_string(),
                    dim,
                };
                let w = FeatureWriter::create(ctx.output(m.modality)?, &info, ctx.table_meta())?;
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
                let len = lengths
                    .as_ref()
                    .and_then(|l| l.get(i))
                    .map_or(steps, |&l| l.min(steps));
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
                                "segment `{id}`: {bad} non-finite values (nonfinite = \"error\")"
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

/// Where a segment comes from, as its id tells: its video and, when the id says so, its clip
/// number (MMSA's `video$_$clip`) or its interval (MulT's `[video, start, end]` rows).
#[derive(Debug, Clone, PartialEq)]
struct SegmentKey {
    /// The id as the file holds it, for messages and for finding ids met twice.
    raw: String,
    video: String,
    clip: Option<String>,
    start: Option<f64>,
    end: Option<f64>,
}

impl SegmentKey {
    /// One id: a string (`video$_$clip` or a video), or a row of strings whose first is the
    /// video and whose second and third, when both are finite numbers, its start and end.
    fn of_row(row: Vec<String>) -> Result<SegmentKey, String> {
        match row.as_slice() {
            [] => Err("holds an empty id row".into()),
            [one] => {
                let (video, clip) = split_id(one);
                Ok(SegmentKey {
                    raw: one.clone(),
                    video: video.to_string(),
                    clip: clip.map(str::to_string),
                    start: None,
                    end: None,
                })
            }
            [video, rest @ ..] => {
                let number = |s: Option<&String>| {
                    s.and_then(|s| s.trim().parse::<f64>().ok())
                        .filter(|x| x.is_finite())
                };
                let (start, end) = match (number(rest.first()), number(rest.get(1))) {
                    (Some(s), Some(e)) => (Some(s), Some(e)),
                    _ => (None, None),
                };
                Ok(SegmentKey {
                    raw: format!("({})", row.join(", ")),
                    video: video.clone(),
                    clip: None,
                    start,
                    end,
                })
            }
        }
    }
}

/// Segment ids for every split's ids, in the same order.
///
/// An id with a clip becomes `video[clip]`. The segments of a video whose ids all carry an
/// interval (MulT) are numbered `video[0]`, `video[1]`, … in the order of their start (then
/// end, then place in the file) over the whole file, so the aligned and unaligned files of one
/// dataset give the same ids. Other ids without a clip are numbered by occurrence within their
/// split. An id met again (in this or an earlier split) gets a `~2`, `~3`, … suffix.
fn number_segments(splits: &[Vec<SegmentKey>]) -> Vec<Vec<String>> {
    let timed = timed_numbers(splits);
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    splits
        .iter()
        .enumerate()
        .map(|(s, keys)| {
            let mut unnumbered: BTreeMap<&str, usize> = BTreeMap::new();
            keys.iter()
                .enumerate()
                .map(|(i, key)| {
                    let base = match (&key.clip, timed.get(&(s, i))) {
                        (Some(clip), _) => format!("{}[{clip}]", key.video),
                        (None, Some(&k)) => segment_id(&key.video, k),
                        (None, None) => {
                            let k = unnumbered.entry(&key.video).or_default();
                            *k += 1;
                            segment_id(&key.video, *k - 1)
                        }
                    };
                    let n = seen.entry(base.clone()).or_default();
                    *n += 1;
                    if *n == 1 {
                        base
                    } else {
                        format!("{base}~{n}")
                    }
                })
                .collect()
        })
        .collect()
}

/// For the videos whose ids all carry an interval and no clip: each id's (split, place) → its
/// rank among the video's segments by (start, end, place in the file).
fn timed_numbers(splits: &[Vec<SegmentKey>]) -> BTreeMap<(usize, usize), usize> {
    let mut by_video: BTreeMap<&str, Vec<(f64, f64, usize, usize)>> = BTreeMap::new();
    let mut untimed: BTreeSet<&str> = BTreeSet::new();
    for (s, keys) in splits.iter().enumerate() {
        for (i, key) in keys.iter().enumerate() {
            match (key.start, key.end, &key.clip) {
                (Some(start), Some(end), None) => by_video
                    .entry(&key.video)
                    .or_default()
                    .push((start, end, s, i)),
                _ => {
                    untimed.insert(&key.video);
                }
            }
        }
    }
    let mut ranks = BTreeMap::new();
    for (video, mut segments) in by_video {
        if untimed.contains(video) {
            continue;
        }
        segments.sort_by(|a, b| {
            a.0.total_cmp(&b.0)
                .then(a.1.total_cmp(&b.1))
                .then((a.2, a.3).cmp(&(b.2, b.3)))
        });
        for (rank, (_, _, s, i)) in segments.into_iter().enumerate() {
            ranks.insert((s, i), rank);
        }
    }
    ranks
}

/// `video$_$clip` → (`video`, Some(`clip`)).
fn split_id(id: &str) -> (&str, Option<&str>) {
    match id.split_once("$_$") {
        Some((v, c)) => (v, Some(c)),
        None => (id, None),
    }
}

/// The array, moved out when nothing else references it, else copied (small arrays only:
/// ids, labels and lengths; feature arrays are read a chunk of rows at a time).
fn owned(array: Arc<NdArray>) -> NdArray {
    Arc::try_unwrap(array).unwrap_or_else(|shared| (*shared).clone())
}

/// A small array with its elements in memory: read from the file when they lie there.
fn loaded(array: Arc<NdArray>, source: &FileSource) -> Result<NdArray, String> {
    match array.data {
        ArrayData::Stored(_) => array.load(source).map_err(|e| e.to_string()),
        _ => Ok(owned(array)),
    }
}

/// The ids of a split, each as a row of strings: one string per id (MMSA), or several
/// (MulT's `[video, start, end]`), from a string array `[N]` or `[N, k]`, an object array or a
/// list.
fn take_id_rows(items: &mut BTreeMap<String, PyValue>) -> Result<Vec<Vec<String>>, String> {
    let value = items.remove(ID).ok_or("is missing")?;
    let (shape, values) = match value {
        PyValue::Array(a) => match owned(a) {
            NdArray {
                shape,
                data: ArrayData::Str(v),
            } => (shape, v.into_iter().map(PyValue::Str).collect()),
            NdArray {
                shape,
                data: ArrayData::Object(v),
            } => (shape, v),
            other => return Err(format!("is a {} array, expected strings", other.kind())),
        },
        PyValue::List(v) | PyValue::Tuple(v) => (vec![v.len()], v),
        other => return Err(format!("is a {}, expected strings", other.type_name())),
    };
    let per_row = match shape.as_slice() {
        [_] => 1,
        [_, k] if *k > 0 => *k,
        other => {
            return Err(format!(
                "has shape {other:?}, expected N ids or N rows of strings"
            ))
        }
    };
    let mut rows = Vec::with_capacity(values.len() / per_row);
    let mut values = values.into_iter().enumerate();
    while let Some((i, first)) = values.next() {
        let row = if per_row == 1 {
            match first {
                PyValue::List(row) | PyValue::Tuple(row) => row,
                one => vec![one],
            }
        } else {
            std::iter::once(first)
                .chain(values.by_ref().take(per_row - 1).map(|(_, v)| v))
                .collect()
        };
        let row = row
            .into_iter()
            .map(|v| match v {
                PyValue::Str(s) => Ok(s),
                PyValue::Bytes(b) => Ok(String::from_utf8_lossy(&b).into_owned()),
                other => Err(format!(
                    "id {} holds a {}, expected strings",
                    i / per_row,
                    other.type_name()
                )),
            })
            .collect::<Result<Vec<_>, _>>()?;
        rows.push(row);
    }
    Ok(rows)
}

/// A split's raw text: one UTF-8 string per segment, from a string array `[N]`, an object
/// array or a list.
fn texts_of(value: PyValue) -> Result<Vec<String>, String> {
    let items = match value {
        PyValue::Array(a) => {
            if a.shape.len() != 1 {
                return Err(format!("has shape {:?}, expected N strings", a.shape));
            }
            match owned(a).data {
                ArrayData::Str(v) => return Ok(v),
                ArrayData::Object(v) => v,
                other => return Err(format!("is a {} array, expected strings", other.kind())),
            }
        }
        PyValue::List(v) | PyValue::Tuple(v) => v,
        other => return Err(format!("is a {}, expected strings", other.type_name())),
    };
    items
        .into_iter()
        .enumerate()
        .map(|(i, v)| match v {
            PyValue::Str(s) => Ok(s),
            PyValue::Bytes(b) => String::from_utf8(b)
                .map_err(|_| format!("item {i} is bytes that are not UTF-8 text")),
            other => Err(format!(
                "item {i} is a {}, expected a str",
                other.type_name()
            )),
        })
        .collect()
}

/// The `n` numbers of array `key`, as f32.
fn take_floats(
    items: &mut BTreeMap<String, PyValue>,
    key: &str,
    n: usize,
    source: &FileSource,
) -> Result<Vec<f32>, String> {
    let a = match items.remove(key).ok_or("is missing")? {
        PyValue::Array(a) => a,
        other => {
            return Err(format!(
                "is a {}, expected a float array",
                other.type_name()
            ))
        }
    };
    if !a.data.is_number() {
        return Err(format!("is a {} array, expected numbers", a.kind()));
    }
    if a.len() != n {
        return Err(format!("{} values for {n} ids", a.len()));
    }
    match loaded(a, source)?.data {
        ArrayData::F32(v) => Ok(v),
        ArrayData::F64(v) => Ok(v.into_iter().map(|x| x as f32).collect()),
        ArrayData::I64(v) => Ok(v.into_iter().map(|x| x as f32).collect()),
        other => Err(format!("is a {} array, expected numbers", other.kind())),
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

fn lengths_of(value: PyValue, n: usize, source: &FileSource) -> Result<Option<Vec<usize>>, String> {
    let values: Vec<i64> = match value {
        PyValue::Array(a) => {
            if !a.data.is_number() {
                return Err(format!("is a {} array, expected lengths", a.kind()));
            }
            if a.is_empty() {
                return Ok(None);
            }
            if a.len() != n {
                return Err(format!("{} lengths for {n} ids", a.len()));
            }
            match loaded(a, source)?.data {
                ArrayData::I64(v) => v,
                ArrayData::F32(v) => v.into_iter().map(|x| x as i64).collect(),
                ArrayData::F64(v) => v.into_iter().map(|x| x as i64).collect(),
                other => return Err(format!("is a {} array, expected lengths", other.kind())),
            }
        }
        PyValue::List(items) => items
            .into_iter()
            .map(|v| match v {
                PyValue::Int(i) => Ok(i),
                PyValue::Float(f) => Ok(f as i64),
                other => Err(format!("holds a {}, expected ints", other.type_name())),
            })
            .collect::<Result<_, _>>()?,
        PyValue::None => return Ok(None),
        other => return Err(format!("is a {}, expected lengths", other.type_name())),
    };
    if values.is_empty() {
        return Ok(None);
    }
    if values.len() != n {
        return Err(format!("{} lengths for {n} ids", values.len()));
    }
    values
        .into_iter()
        .map(|v| usize::try_from(v).map_err(|_| format!("negative length {v}")))
        .collect::<Result<Vec<_>, _>>()
        .map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strs(items: &[&str]) -> Vec<PyValue> {
        items.iter().map(|s| PyValue::Str(s.to_string())).collect()
    }

    fn keys(names: &[&str]) -> BTreeMap<String, PyValue> {
        names
            .iter()
            .map(|k| (k.to_string(), PyValue::None))
            .collect()
    }

    fn array(shape: Vec<usize>, data: ArrayData) -> PyValue {
        PyValue::Array(Arc::new(NdArray { shape, data }))
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

    #[test]
    fn id_rows_come_from_string_arrays_object_arrays_and_lists() {
        let mut items = BTreeMap::new();
        items.insert(
            ID.to_string(),
            array(
                vec![2, 3],
                ArrayData::Str(
                    ["a", "1.5", "2.5", "b", "0", "1"]
                        .map(str::to_string)
                        .to_vec(),
                ),
            ),
        );
        assert_eq!(
            take_id_rows(&mut items).unwrap(),
            [vec!["a", "1.5", "2.5"], vec!["b", "0", "1"]]
        );
        items.insert(
            ID.to_string(),
            PyValue::List(vec![
                PyValue::Tuple(strs(&["v", "3", "4"])),
                PyValue::Bytes(b"w$_$2".to_vec()),
            ]),
        );
        assert_eq!(
            take_id_rows(&mut items).unwrap(),
            [vec!["v", "3", "4"], vec!["w$_$2"]]
        );
        items.insert(
            ID.to_string(),
            array(
                vec![2],
                ArrayData::Object(vec![PyValue::Str("a".into()), PyValue::Int(3)]),
            ),
        );
        let e = take_id_rows(&mut items).unwrap_err();
        assert!(e.contains("id 1 holds a int"), "{e}");
        items.insert(
            ID.to_string(),
            array(vec![2], ArrayData::F32(vec![1.0, 2.0])),
        );
        assert!(take_id_rows(&mut items)
            .unwrap_err()
            .contains("float32 array"));
        assert_eq!(take_id_rows(&mut items).unwrap_err(), "is missing");
    }

    fn key(row: &[&str]) -> SegmentKey {
        SegmentKey::of_row(row.iter().map(|s| s.to_string()).collect()).unwrap()
    }

    #[test]
    fn mult_rows_are_numbered_by_start_within_their_video_over_every_split() {
        let train = vec![
            key(&["v", "10.0", "12.0"]),
            key(&["w", "1", "2"]),
            key(&["v", "2.5", "4"]),
        ];
        let test = vec![key(&["v", "0", "1"]), key(&["v", "10.0", "11.0"])];
        assert_eq!(train[0].start, Some(10.0));
        assert_eq!(train[0].raw, "(v, 10.0, 12.0)");
        let ids = number_segments(&[train, test]);
        assert_eq!(ids, [vec!["v[3]", "w[0]", "v[1]"], vec!["v[0]", "v[2]"]]);
    }

    #[test]
    fn mmsa_ids_keep_their_clip_and_repeats_get_a_suffix() {
        let train = vec![key(&["a$_$3"]), key(&["plain"]), key(&["plain"])];
        let valid = vec![key(&["a$_$3"]), key(&["plain"])];
        let ids = number_segments(&[train, valid]);
        assert_eq!(
            ids,
            [
                vec!["a[3]", "plain[0]", "plain[1]"],
                vec!["a[3]~2", "plain[0]~2"]
            ]
        );
        // A row whose times are not numbers: the video is numbered by occurrence.
        let rows = vec![key(&["m", "x", "y"]), key(&["m", "5", "6"])];
        assert_eq!(rows[0].start, None);
        assert_eq!(number_segments(&[rows]), [vec!["m[0]", "m[1]"]]);
    }

    #[test]
    fn raw_text_must_be_strings() {
        assert_eq!(
            texts_of(PyValue::List(strs(&["你好", ""]))).unwrap(),
            ["你好", ""]
        );
        assert_eq!(
            texts_of(array(
                vec![1],
                ArrayData::Object(vec![PyValue::Bytes("é".as_bytes().to_vec())])
            ))
            .unwrap(),
            ["é"]
        );
        for (value, says) in [
            (
                PyValue::List(vec![PyValue::Str("a".into()), PyValue::Float(1.0)]),
                "item 1 is a float, expected a str",
            ),
            (
                PyValue::List(vec![PyValue::Bytes(vec![0xff])]),
                "item 0 is bytes that are not UTF-8",
            ),
            (
                array(vec![2], ArrayData::F64(vec![1.0, 2.0])),
                "float64 array, expected strings",
            ),
            (
                array(vec![1, 2], ArrayData::Str(vec!["a".into(), "b".into()])),
                "has shape [1, 2]",
            ),
            (PyValue::Int(3), "is a int, expected strings"),
        ] {
            let e = texts_of(value).unwrap_err();
            assert!(e.contains(says), "{e}");
        }
    }
}
