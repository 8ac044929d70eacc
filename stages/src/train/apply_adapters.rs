//! The `apply_adapters` stage: features tables mapped through trained adapters into the
//! target dataset's space, written as ordinary features tables (every frame through the
//! adapter), so they can be normalised, inspected or fed to any stage — the transfer study's
//! "normalise the adapted features to the target's statistics" step.

use std::collections::BTreeSet;

use candle_core::Tensor;
use mmflow_pipeline::{
    Arity, BoundInputs, InputSlot, OutputPort, ParamProblem, RunContext, StageError, StageKind,
};
use mmflow_schemas::features::{FeatureBatch, FeatureInfo, FeatureReader, FeatureWriter};
use rand::SeedableRng;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::checkpoint::AdaptersCheckpoint;
use super::device::{err, open};
use super::nn::{Mlp, Pass};
use crate::slots;
use crate::tables::{ADAPTERS, FEATURES};

/// What the adapted table's pooled vector is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema, Default)]
#[serde(rename_all = "snake_case")]
pub enum PooledFrom {
    /// The mean of the adapted frames (the features-table convention: pooled = mean of frames).
    #[default]
    MeanOfFrames,
    /// The adapter applied to the source's pooled vector (what the adapter was trained on and
    /// what a pooled encoder sees when the adapters sit in front of a model).
    AdaptPooled,
}

/// Parameters of the `apply_adapters` stage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema, Default)]
#[serde(deny_unknown_fields, default)]
pub struct ApplyAdaptersParams {
    /// `mean_of_frames` (default) or `adapt_pooled`.
    pub pooled: PooledFrom,
}

/// The `apply_adapters` stage kind.
pub struct ApplyAdapters;

impl StageKind for ApplyAdapters {
    type Params = ApplyAdaptersParams;
    const KIND: &'static str = "apply_adapters";
    const VERSION: u32 = 1;
    const ABOUT: &'static str =
        "features tables mapped through trained adapters (one output per input)";

    fn check(&self, _: &ApplyAdaptersParams) -> Vec<ParamProblem> {
        Vec::new()
    }

    fn uses_seed(&self, _: &ApplyAdaptersParams) -> bool {
        false
    }

    fn inputs(&self, _: &ApplyAdaptersParams) -> Vec<InputSlot> {
        vec![
            InputSlot {
                name: slots::ADAPTERS,
                kind: ADAPTERS,
                arity: Arity::One,
                about: "trained adapters (train_adapters or finetune)",
            },
            InputSlot {
                name: slots::FEATURES,
                kind: FEATURES,
                arity: Arity::Many,
                about: "tables of adapted modalities, named as the adapters' modalities",
            },
        ]
    }

    fn outputs(
        &self,
        _: &ApplyAdaptersParams,
        inputs: &BoundInputs,
    ) -> Result<Vec<OutputPort>, Vec<ParamProblem>> {
        let mut names = BTreeSet::new();
        let mut problems = Vec::new();
        for r in inputs.get(slots::FEATURES.name()).into_iter().flatten() {
            if !names.insert(r.output.clone()) {
                problems.push(ParamProblem::new("", format!("two inputs would both produce an output `{}` (outputs are named after their inputs)", r.output)));
            }
        }
        if problems.is_empty() {
            Ok(names
                .into_iter()
                .map(|n| OutputPort::new(n, FEATURES))
                .collect())
        } else {
            Err(problems)
        }
    }

    fn uses_device(&self, _: &ApplyAdaptersParams) -> bool {
        true
    }

    fn run(&self, p: &ApplyAdaptersParams, ctx: &mut RunContext<'_>) -> Result<(), StageError> {
        let device = open(ctx.device)?;
        let adapters_input = ctx.input(slots::ADAPTERS)?.clone();
        let loaded = AdaptersCheckpoint::load(&adapters_input.path, &device)?;
        let mut counts = Vec::new();
        for input in ctx.inputs(slots::FEATURES).to_vec() {
            let modality = &input.reference.output;
            let Some((in_dim, output_dim, mlp)) = loaded.adapters.mlps.get(modality) else {
                return Err(StageError::config(format!(
                    "{} has no adapter for modality `{modality}` (it has: {})",
                    adapters_input.reference,
                    loaded
                        .adapters
                        .mlps
                        .keys()
                        .cloned()
                        .collect::<Vec<_>>()
                        .join(", ")
                )));
            };
            let in_dim = *in_dim;
            let reader = FeatureReader::open(&input.path)?;
            let info = reader.info().clone();
            if info.dim != in_dim {
                return Err(StageError::input(format!(
                    "{}: `{modality}` is {} wide, its adapter takes {in_dim}",
                    input.reference, info.dim
                )));
            }
            let out_info = FeatureInfo {
                dim: *output_dim,
                ..info
            };
            let mut writer =
                FeatureWriter::create(ctx.output_named(modality)?, &out_info, ctx.table_meta())?;
            let mut rows = 0u64;
            for batch in reader {
                let batch = batch?;
                if let Some(bad) = batch.frames.iter().position(|v| !v.is_finite()) {
                    let seg = batch.offsets.partition_point(|&o| o <= bad / in_dim.max(1)) - 1;
                    return Err(StageError::input(format!(
                        "{}: segment `{}` has a non-finite feature: normalise with nonfinite = \"zero\" first",
                        input.reference, batch.segment_ids[seg]
                    )));
                }
                let frames = forward(mlp, &batch.frames, in_dim, &device)?;
                let pooled = match p.pooled {
                    PooledFrom::AdaptPooled => Some(forward(mlp, &batch.pooled, in_dim, &device)?),
                    PooledFrom::MeanOfFrames => None,
                };
                let mut out = FeatureBatch::new(*output_dim);
                for i in 0..batch.len() {
                    let f =
                        &frames[batch.offsets[i] * output_dim..batch.offsets[i + 1] * output_dim];
                    match &pooled {
                        Some(pooled) => out.push_with_pooled(
                            batch.segment_ids[i].clone(),
                            f,
                            &pooled[i * output_dim..(i + 1) * output_dim],
                        ),
                        None => out.push(batch.segment_ids[i].clone(), f),
                    }
                }
                rows += out.len() as u64;
                writer.write(out)?;
            }
            writer.finish()?;
            counts.push(serde_json::json!({"modality": modality, "segments": rows, "from": info.dim, "to": output_dim}));
        }
        ctx.report("adapted", counts);
        Ok(())
    }
}

/// The adapter over rows of `values` (`n × dim`), in chunks, evaluation mode (no graph kept
/// for backward).
fn forward(
    mlp: &Mlp,
    values: &[f32],
    dim: usize,
    device: &candle_core::Device,
) -> Result<Vec<f32>, StageError> {
    candle_core::backprop::no_grad(|| forward_in_chunks(mlp, values, dim, device))
}

/// [`forward`] in chunks of 4,096 rows.
fn forward_in_chunks(
    mlp: &Mlp,
    values: &[f32],
    dim: usize,
    device: &candle_core::Device,
) -> Result<Vec<f32>, StageError> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
    let mut out = Vec::with_capacity(values.len() / dim.max(1) * mlp.output_dim);
    for chunk in values.chunks(4096 * dim.max(1)) {
        let x = Tensor::from_slice(chunk, (chunk.len() / dim.max(1), dim), device)
            .map_err(err("adapter input"))?;
        let y = mlp.forward(
            &x,
            &mut Pass {
                train: false,
                rng: &mut rng,
            },
        )?;
        out.extend(
            y.flatten_all()
                .and_then(|t| t.to_vec1::<f32>())
                .map_err(err("adapter output"))?,
        );
    }
    Ok(out)
}
