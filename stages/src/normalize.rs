//! The `normalize` stage: per-feature statistics fitted on the train split only, applied to
//! every split.
//!
//! Statistics are over frames (time steps) of the train segments, in f64, skipping and
//! counting non-finite values (see [`crate::moments`]). Each value becomes a z-score
//! `(x − mean) / std` (features with `std < min_std` are only centred), optionally clipped
//! to ±`clip`. With a `match_to` statistics table, z-scores are mapped onto the other
//! dataset's statistics instead: `z · std_ref + mean_ref` (the transfer study's
//! "normalise adapted features to MOSEI statistics"). Non-finite values follow `nonfinite`.
//! Pooled vectors are recomputed as the mean of the normalised frames.

use std::collections::{BTreeSet, HashMap};
use std::path::Path;

use mmflow_pipeline::values::NonNegative;
use mmflow_pipeline::{
    Arity, BoundInputs, InputSlot, OutputPort, ParamProblem, RunContext, Slot, StageError,
    StageKind,
};
use mmflow_schemas::features::{FeatureBatch, FeatureReader, FeatureWriter};
use mmflow_schemas::norm_stats::{ModalityStats, NormStatsTable};
use mmflow_schemas::segments::SegmentTable;
use mmflow_schemas::Split;
use rayon::prelude::*;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::moments::Moments;
use crate::slots;
use crate::tables::{FEATURES, NORM_STATS, SEGMENTS};

/// This kind's own inputs and outputs.
mod slot {
    use mmflow_pipeline::Slot;

    /// `match_to`.
    pub const MATCH_TO: Slot = Slot::new("match_to");
}

/// What to do with NaN and ±inf feature values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema, Default)]
#[serde(rename_all = "snake_case")]
pub enum NonFinite {
    /// Replace by the feature's mean (z-score 0), as MulT and MMSA do to COVAREP's -inf.
    #[default]
    Zero,
    /// Leave them (models downstream will see them).
    Keep,
    /// Fail, naming the modality, segment and feature.
    Error,
}

/// Parameters of the `normalize` stage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct NormalizeParams {
    /// Clip normalised values to ±clip (in standard deviations); none by default.
    pub clip: Option<f64>,
    /// Non-finite values: `zero` (default), `keep` or `error`.
    pub nonfinite: NonFinite,
    /// Features with a standard deviation below this are centred but not scaled.
    pub min_std: NonNegative,
}

impl Default for NormalizeParams {
    fn default() -> Self {
        NormalizeParams {
            clip: None,
            nonfinite: NonFinite::Zero,
            min_std: NonNegative::new(1e-6),
        }
    }
}

/// The `normalize` stage kind.
pub struct Normalize;

const STATS: Slot = Slot::new("stats");

impl StageKind for Normalize {
    type Params = NormalizeParams;
    const KIND: &'static str = "normalize";
    const VERSION: u32 = 1;
    const ABOUT: &'static str =
        "per-feature statistics on the train split; z-scores (or another dataset's statistics)";

    fn check(&self, p: &NormalizeParams) -> Vec<ParamProblem> {
        let mut problems = Vec::new();
        if let Some(c) = p.clip {
            if !(c.is_finite() && c > 0.0) {
                problems.push(ParamProblem::new(
                    "clip",
                    format!("must be a positive number, got {c}"),
                ));
            }
        }
        problems
    }

    fn uses_seed(&self, _: &NormalizeParams) -> bool {
        false
    }

    fn inputs(&self, _: &NormalizeParams) -> Vec<InputSlot> {
        vec![
            InputSlot {
                name: slots::SEGMENTS,
                kind: SEGMENTS,
                arity: Arity::One,
                about: "the segments table (splits)",
            },
            InputSlot {
                name: slots::FEATURES,
                kind: FEATURES,
                arity: Arity::Many,
                about: "feature tables to normalise",
            },
            InputSlot {
                name: slot::MATCH_TO,
                kind: NORM_STATS,
                arity: Arity::Optional,
                about: "statistics of another dataset to map the features onto",
            },
        ]
    }

    fn outputs(
        &self,
        _: &NormalizeParams,
        inputs: &BoundInputs,
    ) -> Result<Vec<OutputPort>, Vec<ParamProblem>> {
        let mut ports = Vec::new();
        let mut named = BTreeSet::new();
        let mut problems = Vec::new();
        for r in inputs.get(slots::FEATURES.name()).into_iter().flatten() {
            if r.output == STATS.name() || !named.insert(r.output.as_str()) {
                problems.push(ParamProblem::new(
                    "",
                    format!(
                        "two inputs would both produce an output `{}` (outputs are named after their inputs; `{STATS}` is reserved)",
                        r.output
                    ),
                ));
            } else {
                ports.push(OutputPort::new(r.output.clone(), FEATURES));
            }
        }
        ports.push(OutputPort::new(STATS, NORM_STATS));
        if problems.is_empty() {
            Ok(ports)
        } else {
            Err(problems)
        }
    }

    fn run(&self, p: &NormalizeParams, ctx: &mut RunContext<'_>) -> Result<(), StageError> {
        let segments_path = ctx.input(slots::SEGMENTS)?.path.clone();
        let segments = SegmentTable::read(&segments_path)?;
        let split_of: HashMap<&str, Split> = segments
            .rows
            .iter()
            .map(|r| (r.segment_id.as_str(), r.split))
            .collect();
        let reference = match ctx.optional_input(slot::MATCH_TO) {
            Some(r) => Some((r.reference.to_string(), NormStatsTable::read(&r.path)?)),
            None => None,
        };
        let mut stats = NormStatsTable::default();
        let inputs = ctx.inputs(slots::FEATURES).to_vec();
        for input in inputs {
            let name = input.reference.output.clone();
            let fitted = fit(&input.path, &split_of, &segments_path)?;
            let modality = fitted.modality.clone();
            let target = match &reference {
                None => None,
                Some((table_ref, table)) => {
                    let m = table.modality(&modality.modality).ok_or_else(|| {
                        StageError::config(format!(
                            "input `match_to` ({table_ref}) has no statistics for modality `{}` (of `{}`)",
                            modality.modality, input.reference
                        ))
                    })?;
                    if m.features.len() != modality.features.len() {
                        return Err(StageError::config(format!(
                            "input `match_to` ({table_ref}): modality `{}` has {} features, `{}` has {}",
                            modality.modality,
                            m.features.len(),
                            input.reference,
                            modality.features.len()
                        )));
                    }
                    Some(m.clone())
                }
            };
            let affine = Affine::new(&modality, target.as_ref(), p);
            let counts = apply(
                &input.path,
                ctx.output_named(&name)?,
                ctx,
                &affine,
                p,
                &split_of,
                &segments_path,
            )?;
            ctx.report(
                name.clone(),
                serde_json::json!({
                    "fitted_frames": fitted.frames,
                    "nonfinite_in_train": fitted.nonfinite,
                    "constant_features": affine.constant,
                    "nonfinite_replaced": counts.replaced,
                    "clipped": counts.clipped,
                }),
            );
            if counts.replaced > 0 {
                tracing::info!(
                    "{}: {name}: {} non-finite values replaced by the mean",
                    ctx.stage_id,
                    counts.replaced
                );
            }
            stats.modalities.push(modality);
        }
        stats.write(ctx.output(STATS)?, ctx.table_meta())?;
        Ok(())
    }
}

struct Fitted {
    modality: ModalityStats,
    frames: u64,
    nonfinite: u64,
}

/// Pass 1: moments of the train segments' frames.
fn fit(
    path: &Path,
    split_of: &HashMap<&str, Split>,
    segments_path: &Path,
) -> Result<Fitted, StageError> {
    let reader = FeatureReader::open(path)?;
    let info = reader.info().clone();
    let mut moments = Moments::new(info.dim);
    let mut frames = 0u64;
    for batch in reader {
        let batch = batch?;
        for (start, end) in train_runs(&batch, split_of, path, segments_path)? {
            let rows =
                &batch.frames[batch.offsets[start] * info.dim..batch.offsets[end] * info.dim];
            moments.add_rows(rows);
            frames += (batch.offsets[end] - batch.offsets[start]) as u64;
        }
    }
    if frames == 0 {
        return Err(StageError::input(format!(
            "{}: no frames of train segments to fit statistics on",
            path.display()
        )));
    }
    let nonfinite = moments.nonfinite.iter().sum();
    Ok(Fitted {
        modality: ModalityStats {
            dataset: info.dataset,
            modality: info.modality,
            features: moments.to_stats(),
        },
        frames,
        nonfinite,
    })
}

/// Maximal runs `[start, end)` of consecutive train segments in a batch.
fn train_runs(
    batch: &FeatureBatch,
    split_of: &HashMap<&str, Split>,
    path: &Path,
    segments_path: &Path,
) -> Result<Vec<(usize, usize)>, StageError> {
    let mut runs = Vec::new();
    let mut open: Option<usize> = None;
    for (i, id) in batch.segment_ids.iter().enumerate() {
        let split = split_of.get(id.as_str()).ok_or_else(|| {
            StageError::input(format!(
                "{}: segment `{id}` is not in the segments table {}",
                path.display(),
                segments_path.display()
            ))
        })?;
        match (*split == Split::Train, open) {
            (true, None) => open = Some(i),
            (false, Some(s)) => {
                runs.push((s, i));
                open = None;
            }
            _ => {}
        }
    }
    if let Some(s) = open {
        runs.push((s, batch.len()));
    }
    Ok(runs)
}

/// Per-feature `y = x · a + b`, with the value non-finite inputs get.
struct Affine {
    a: Vec<f32>,
    b: Vec<f32>,
    /// What a non-finite value becomes (the z-score 0 mapped through the target).
    fill: Vec<f32>,
    lo: Vec<f32>,
    hi: Vec<f32>,
    constant: usize,
}

impl Affine {
    fn new(own: &ModalityStats, target: Option<&ModalityStats>, p: &NormalizeParams) -> Self {
        let d = own.features.len();
        let mut affine = Affine {
            a: vec![1.0; d],
            b: vec![0.0; d],
            fill: vec![0.0; d],
            lo: vec![f32::NEG_INFINITY; d],
            hi: vec![f32::INFINITY; d],
            constant: 0,
        };
        for (j, f) in own.features.iter().enumerate() {
            let (mean, std) = if f.count == 0 {
                (0.0, 1.0)
            } else {
                (f.mean, f.std)
            };
            let inv = if std < p.min_std.get() {
                affine.constant += 1;
                1.0
            } else {
                1.0 / std
            };
            // z = (x - mean) * inv; y = z * ts + tm
            let (tm, ts) = match target.map(|t| t.features[j]) {
                Some(t) if t.count > 0 => (t.mean, t.std),
                _ => (0.0, 1.0),
            };
            affine.a[j] = (inv * ts) as f32;
            affine.b[j] = (tm - mean * inv * ts) as f32;
            affine.fill[j] = tm as f32;
            if let Some(c) = p.clip {
                affine.lo[j] = (tm - c * ts) as f32;
                affine.hi[j] = (tm + c * ts) as f32;
            }
        }
        affine
    }
}

#[derive(Default)]
struct Counts {
    replaced: u64,
    clipped: u64,
}

/// Pass 2: transforms every batch and writes it.
fn apply(
    input: &Path,
    output: &Path,
    ctx: &RunContext<'_>,
    affine: &Affine,
    p: &NormalizeParams,
    split_of: &HashMap<&str, Split>,
    segments_path: &Path,
) -> Result<Counts, StageError> {
    let reader = FeatureReader::open(input)?;
    let info = reader.info().clone();
    let dim = info.dim;
    let mut writer = FeatureWriter::create(output, &info, ctx.table_meta())?;
    let mut counts = Counts::default();
    for batch in reader {
        let mut batch = batch?;
        for id in &batch.segment_ids {
            if !split_of.contains_key(id.as_str()) {
                return Err(StageError::input(format!(
                    "{}: segment `{id}` is not in the segments table {}",
                    input.display(),
                    segments_path.display()
                )));
            }
        }
        if p.nonfinite == NonFinite::Error {
            if let Some(pos) = batch.frames.iter().position(|x| !x.is_finite()) {
                let row = pos / dim.max(1);
                let seg = batch.offsets.partition_point(|&o| o <= row) - 1;
                return Err(StageError::input(format!(
                    "{}: segment `{}`, feature {} holds {} (nonfinite = \"error\")",
                    input.display(),
                    batch.segment_ids[seg],
                    pos % dim.max(1),
                    batch.frames[pos]
                )));
            }
        }
        let keep = p.nonfinite == NonFinite::Keep;
        let (replaced, clipped) = batch
            .frames
            .par_chunks_mut(dim.max(1) * 256)
            .map(|rows| {
                let (mut replaced, mut clipped) = (0u64, 0u64);
                for row in rows.chunks_exact_mut(dim) {
                    for (j, value) in row.iter_mut().enumerate() {
                        let x = *value;
                        if !x.is_finite() {
                            if !keep {
                                *value = affine.fill[j];
                                replaced += 1;
                            }
                            continue;
                        }
                        let y = x * affine.a[j] + affine.b[j];
                        let c = y.clamp(affine.lo[j], affine.hi[j]);
                        clipped += (c != y) as u64;
                        *value = c;
                    }
                }
                (replaced, clipped)
            })
            .reduce(|| (0, 0), |a, b| (a.0 + b.0, a.1 + b.1));
        counts.replaced += replaced;
        counts.clipped += clipped;
        batch.repool();
        writer.write(batch)?;
    }
    writer.finish()?;
    Ok(counts)
}
