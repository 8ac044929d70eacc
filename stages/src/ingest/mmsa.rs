//! The `mmsa_pickle` source: the processed pickles MMSA and MulT distribute
//! (`{train, valid, test} → {id, text, audio, vision, regression_labels, *_lengths, …}`),
//! read with mmflow's data-only pickle reader ([`super::pickle`]): nothing in the file is
//! ever executed.
//!
//! Ids `video$_$clip` become segment ids `video[clip]`. Sequences `[N, L, D]` are cut to
//! `<key>_lengths` when the file has them (MMSA pads at the end), else kept whole.
//!
//! Memory stays bounded whatever the file's size: the file is parsed with positioned reads
//! ([`pickle::read_from`] over a [`FileSource`]), which leaves the arrays' numbers in the
//! file, and each feature array is then read [`CHUNK_BYTES`] of rows at a time, each chunk
//! written as one row group. A run reads the file twice: once whole when the executor
//! hashes it for the fingerprint (skipped when its size and modification time are those it
//! last hashed), and once here, the structure while parsing and each array's bytes as they
//! are written (arrays no parameter names are skipped).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use mmflow_pipeline::files::open_regular;
use mmflow_pipeline::{
    BoundInputs, InputSlot, OutputPort, ParamProblem, RunContext, StageError, StageKind,
};
use mmflow_schemas::features::{FeatureBatch, FeatureInfo, FeatureWriter};
use mmflow_schemas::segments::{Segment, SegmentTable};
use mmflow_schemas::Split;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::pickle::{self, ArrayData, FileSource, NdArray, PyValue};
use super::source::NonFinitePolicy;
use crate::tables::{FEATURES, SEGMENTS};

/// Parameters of the `mmsa_pickle` stage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct MmsaParams {
    /// The pickle file.
    pub path: PathBuf,
    /// Dataset name written to the tables.
    pub dataset: String,
    /// Output modality name → the key of its `[N, L, D]` array in each split.
    pub modalities: BTreeMap<String, String>,
    /// Label column name → the key of its `[N]` array in each split.
    pub labels: BTreeMap<String, String>,
    /// Per output modality: NaN/±inf values `keep` (default), `zero` (as MulT/MMSA do to -inf) or `error`.
    pub nonfinite: BTreeMap<String, NonFinitePolicy>,
    /// Cut sequences to `<key>_lengths` when the file has such an array or list.
    pub use_lengths: bool,
}

impl Default for MmsaParams {
    fn default() -> Self {
        MmsaParams {
            path: PathBuf::new(),
            dataset: "mosi".into(),
            modalities: [("text", "text"), ("audio", "audio"), ("visual", "vision")]
                .iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect(),
            labels: [("sentiment".to_string(), "regression_labels".to_string())].into(),
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
    const VERSION: u32 = 1;
    const ABOUT: &'static str = "MMSA/MulT processed pickles (read as data, never executed)";

    fn check(&self, p: &MmsaParams) -> Vec<ParamProblem> {
        let mut problems = Vec::new();
        if p.path.as_os_str().is_empty() {
            problems.push(ParamProblem::new("path", "is required"));
        }
        if p.modalities.is_empty() {
            problems.push(ParamProblem::new(
                "modalities",
                "name at least one modality",
            ));
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
        let PyValue::Dict(splits) = root else {
            return Err(StageError::input(format!(
                "{}: the pickle holds a {}, expected a dict of splits (train, valid, test)",
                p.path.display(),
                root.type_name()
            )));
        };
        let fail = |split: &str, key: &str, message: String| {
            StageError::input(format!(
                "{}: split `{split}`, key `{key}`: {message}",
                p.path.display()
            ))
        };
        let mut by_split: Vec<(Split, String, BTreeMap<String, PyValue>)> = Vec::new();
        for (k, v) in splits {
            let PyValue::Str(name) = k else { continue };
            let Some(split) = Split::parse(&name) else {
                return Err(StageError::input(format!(
                    "{}: unknown split `{name}` (expected train, valid, test)",
                    p.path.display()
                )));
            };
            let PyValue::Dict(items) = v else {
                return Err(fail(&name, "", "is not a dict".into()));
            };
            let items = items
                .into_iter()
                .filter_map(|(k, v)| match k {
                    PyValue::Str(k) => Some((k, v)),
                    _ => None,
                })
                .collect();
            by_split.push((split, name, items));
        }
        by_split.sort_by_key(|(s, _, _)| *s);
        if by_split.is_empty() {
            return Err(StageError::input(format!(
                "{}: no train/valid/test split",
                p.path.display()
            )));
        }

        let mut writers: BTreeMap<String, (FeatureWriter, usize)> = BTreeMap::new();
        let mut rows = Vec::new();
        let mut report_nonfinite: BTreeMap<String, usize> = BTreeMap::new();
        let mut report_lengths: BTreeMap<String, bool> = BTreeMap::new();
        let mut unused: BTreeMap<String, ()> = BTreeMap::new();
        let mut seen: BTreeMap<String, usize> = BTreeMap::new();
        let mut first_split: BTreeMap<String, Split> = BTreeMap::new();
        let mut repeated: Vec<String> = Vec::new();
        for (split, name, mut items) in by_split {
            let ids = take_strings(&mut items, "id").map_err(|m| fail(&name, "id", m))?;
            let n = ids.len();
            let segment_ids = segment_ids(&ids, &mut seen);
            for (id, seg) in ids.iter().zip(&segment_ids) {
                match first_split.get(id) {
                    Some(first) => {
                        repeated.push(format!("`{id}` ({first} and {split}, now `{seg}`)"))
                    }
                    None => {
                        first_split.insert(id.clone(), split);
                    }
                }
            }
            let mut labels: Vec<Vec<Option<f32>>> = vec![Vec::new(); n];
            for key in p.labels.values() {
                let values =
                    take_floats(&mut items, key, n, &source).map_err(|m| fail(&name, key, m))?;
                for (row, v) in labels.iter_mut().zip(values) {
                    row.push(Some(v));
                }
            }
            for (modality, key) in &p.modalities {
                let array = match items.remove(key) {
                    Some(PyValue::Array(a)) => a,
                    Some(other) => {
                        return Err(fail(
                            &name,
                            key,
                            format!("is a {}, expected a float array", other.type_name()),
                        ))
                    }
                    None => return Err(fail(&name, key, "is missing".into())),
                };
                let Sequences { count, steps, dim } =
                    sequences(&array).map_err(|m| fail(&name, key, m))?;
                if count != n {
                    return Err(fail(&name, key, format!("{count} sequences for {n} ids")));
                }
                let lengths = if p.use_lengths {
                    match items.remove(&format!("{key}_lengths")) {
                        Some(v) => lengths_of(v, n, &source)
                            .map_err(|m| fail(&name, &format!("{key}_lengths"), m))?,
                        None => None,
                    }
                } else {
                    None
                };
                report_lengths.insert(modality.clone(), lengths.is_some());
                let policy = p.nonfinite.get(modality).copied().unwrap_or_default();
                let (writer, width) = match writers.get_mut(modality) {
                    Some(w) => w,
                    None => {
                        let info = FeatureInfo {
                            dataset: p.dataset.clone(),
                            modality: modality.clone(),
                            dim,
                        };
                        let w =
                            FeatureWriter::create(ctx.output(modality)?, &info, ctx.table_meta())?;
                        writers.entry(modality.clone()).or_insert((w, dim))
                    }
                };
                if *width != dim {
                    return Err(fail(
                        &name,
                        key,
                        format!("{dim} features wide, but {width} in the first split"),
                    ));
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
                        .read_rows_f32(&source, rows.clone(), &mut values)
                        .map_err(|e| fail(&name, key, e.to_string()))?;
                    let mut batch = FeatureBatch::new(dim);
                    for (k, i) in rows.enumerate() {
                        let id = &segment_ids[i];
                        let len = lengths
                            .as_ref()
                            .and_then(|l| l.get(i))
                            .map_or(steps, |&l| l.min(steps));
                        let start = k.saturating_mul(row);
                        let frames =
                            &mut values[start..start.saturating_add(len.saturating_mul(dim))];
                        let bad = frames.iter().filter(|x| !x.is_finite()).count();
                        if bad > 0 {
                            *report_nonfinite.entry(modality.clone()).or_default() += bad;
                            match policy {
                                NonFinitePolicy::Keep => {}
                                NonFinitePolicy::Zero => frames.iter_mut().filter(|x| !x.is_finite()).for_each(|x| *x = 0.0),
                                NonFinitePolicy::Error => {
                                    return Err(fail(&name, key, format!("segment `{id}`: {bad} non-finite values (nonfinite = \"error\")")))
                                }
                            }
                        }
                        batch.push(id.clone(), frames);
                    }
                    writer.write(&batch)?;
                }
            }
            for (i, id) in segment_ids.into_iter().enumerate() {
                let (video, _) = split_id(&ids[i]);
                rows.push(Segment {
                    dataset: p.dataset.clone(),
                    video_id: video.to_string(),
                    segment_id: id,
                    split,
                    speaker_id: None,
                    start: None,
                    end: None,
                    labels: std::mem::take(&mut labels[i]),
                });
            }
            for key in items.keys() {
                unused.insert(key.clone(), ());
            }
        }
        for (_, (w, _)) in writers {
            w.finish()?;
        }
        let table = SegmentTable {
            label_names: p.labels.keys().cloned().collect(),
            rows,
        };
        table.write(ctx.output("segments")?, ctx.table_meta())?;
        if !repeated.is_empty() {
            tracing::warn!(
                "{}: {} ids occur more than once in {} (check for leakage between splits): {}",
                ctx.stage_id,
                repeated.len(),
                p.path.display(),
                repeated
                    .iter()
                    .take(5)
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        ctx.report("segments", table.split_counts());
        ctx.report("repeated_ids", repeated);
        ctx.report("nonfinite_values", report_nonfinite);
        ctx.report("cut_to_lengths", report_lengths);
        ctx.report("keys_not_used", unused.into_keys().collect::<Vec<_>>());
        Ok(())
    }
}

/// `video$_$clip` → (`video`, Some(`clip`)).
fn split_id(id: &str) -> (&str, Option<&str>) {
    match id.split_once("$_$") {
        Some((v, c)) => (v, Some(c)),
        None => (id, None),
    }
}

/// Segment ids `video[clip]`; ids without a clip number are numbered by occurrence, and
/// an id met again (in this or an earlier split) gets a `~2`, `~3`, … suffix.
fn segment_ids(ids: &[String], seen: &mut BTreeMap<String, usize>) -> Vec<String> {
    let mut unnumbered: BTreeMap<&str, usize> = BTreeMap::new();
    ids.iter()
        .map(|id| {
            let base = match split_id(id) {
                (video, Some(clip)) => format!("{video}[{clip}]"),
                (video, None) => {
                    let k = unnumbered.entry(video).or_default();
                    *k += 1;
                    format!("{video}[{}]", *k - 1)
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

fn take_strings(items: &mut BTreeMap<String, PyValue>, key: &str) -> Result<Vec<String>, String> {
    let value = items.remove(key).ok_or("is missing")?;
    let list = match value {
        PyValue::Array(a) => match owned(a) {
            NdArray {
                data: ArrayData::Str(v),
                ..
            } => return Ok(v),
            NdArray {
                data: ArrayData::Object(v),
                ..
            } => v,
            other => return Err(format!("is a {} array, expected strings", other.kind())),
        },
        PyValue::List(v) => v,
        other => return Err(format!("is a {}, expected strings", other.type_name())),
    };
    list.into_iter()
        .map(|v| match v {
            PyValue::Str(s) => Ok(s),
            PyValue::Bytes(b) => Ok(String::from_utf8_lossy(&b).into_owned()),
            other => Err(format!("holds a {}, expected strings", other.type_name())),
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
