//! The `train_adapters` stage: one MLP per adapted modality, mapping the source dataset's
//! features into the target dataset's space (e.g. MOSI's MediaPipe 65-d visual → MOSEI's
//! OpenFace2 713-d), trained on the targets `select_targets` chose.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use candle_core::{Device, Tensor};
use mmflow_pipeline::problem::listed;
use mmflow_pipeline::values::Fraction;
use mmflow_pipeline::{
    Arity, BoundInputs, InputSlot, KeyPath, Moved, OutputPort, ParamProblem, ResolvedInput,
    RunContext, StageError, StageKind,
};
use mmflow_schemas::features::FeatureReader;
use mmflow_schemas::history;
use mmflow_schemas::targets::TargetTable;
use mmflow_schemas::Split;
use rand::SeedableRng;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::checkpoint::{adapter_prefix, AdapterSpec, AdaptersCheckpoint};
use super::device::{err, open};
use super::fit::{fit, Measures, Trainable};
use super::nn::{Activation, Mlp, MlpConfig, Pass};
use super::optim::scalar;
use super::settings::{AdapterDefaults, Measure, Optim, MOVED_INTO_OPTIM, TOTAL};
use super::weights::ParamStore;
use crate::slots;
use crate::tables::{ADAPTERS, FEATURES, HISTORY, TARGETS};

/// This kind's own inputs and outputs.
mod slot {
    use mmflow_pipeline::Slot;

    /// `source`.
    pub const SOURCE: Slot = Slot::new("source");
    /// `targets`.
    pub const TARGETS: Slot = Slot::new("targets");
}

/// The adapter's training objective.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema, Default)]
#[serde(rename_all = "snake_case")]
pub enum AdapterLoss {
    /// Mean squared error to the target vector.
    #[default]
    Mse,
    /// 1 − cosine similarity to the target vector.
    Cosine,
}

/// Parameters of the `train_adapters` stage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct TrainAdaptersParams {
    /// The MLP: hidden widths (the transfer study's visual adapter: 256, 512, 1024), activation,
    /// dropout, layer norm, residual; the output width is the target's.
    pub mlp: MlpConfig,
    /// `mse` (default) or `cosine`.
    pub loss: AdapterLoss,
    /// How each adapter is optimised (`monitor` is the validation `loss`).
    pub optim: Optim<AdapterDefaults>,
}

impl Default for TrainAdaptersParams {
    fn default() -> Self {
        TrainAdaptersParams {
            mlp: MlpConfig {
                hidden: vec![256, 512, 1024],
                activation: Activation::Relu,
                dropout: Fraction::new(0.1),
                layer_norm: false,
                residual: false,
            },
            loss: AdapterLoss::Mse,
            optim: Optim::default(),
        }
    }
}

/// The `train_adapters` stage kind.
pub struct TrainAdapters;

impl StageKind for TrainAdapters {
    type Params = TrainAdaptersParams;
    const KIND: &'static str = "train_adapters";
    const VERSION: u32 = 4;
    const ABOUT: &'static str =
        "one MLP per modality mapping source features into the target dataset's space";
    const MOVED: &'static [Moved] = &MOVED_INTO_OPTIM;

    fn check(&self, p: &TrainAdaptersParams) -> Vec<ParamProblem> {
        let optim = KeyPath::keys(["optim"]);
        let mut problems = p.optim.check(&optim);
        problems.extend(p.optim.check_monitor(&optim, |m| {
            if m.is_total_loss() {
                Ok(())
            } else {
                Err(
                    "an adapter is selected on its validation `loss`: monitor must be `loss`"
                        .into(),
                )
            }
        }));
        problems
    }

    fn inputs(&self, _: &TrainAdaptersParams) -> Vec<InputSlot> {
        vec![
            InputSlot {
                name: slot::SOURCE,
                kind: FEATURES,
                arity: Arity::Many,
                about: "the source dataset's features of each adapted modality",
            },
            InputSlot {
                name: slot::TARGETS,
                kind: TARGETS,
                arity: Arity::Many,
                about: "targets tables from select_targets (one per modality)",
            },
        ]
    }

    fn outputs(
        &self,
        _: &TrainAdaptersParams,
        inputs: &BoundInputs,
    ) -> Result<Vec<OutputPort>, Vec<ParamProblem>> {
        let source: Vec<&str> = inputs
            .get(slot::SOURCE.name())
            .into_iter()
            .flatten()
            .map(|r| r.output.as_str())
            .collect();
        let in_source: BTreeSet<&str> = source.iter().copied().collect();
        let problems: Vec<ParamProblem> = inputs
            .get("targets")
            .into_iter()
            .flatten()
            .filter(|r| !in_source.contains(r.output.as_str()))
            .map(|r| ParamProblem::new("", format!("targets `{r}` are for modality `{}`, which is not among the `source` inputs ({})", r.output, listed(&source, source.len()))))
            .collect();
        if !problems.is_empty() {
            return Err(problems);
        }
        Ok(vec![
            OutputPort::new(slots::ADAPTERS, ADAPTERS),
            OutputPort::new(slots::HISTORY, HISTORY),
        ])
    }

    fn uses_device(&self, _: &TrainAdaptersParams) -> bool {
        true
    }

    fn run(&self, p: &TrainAdaptersParams, ctx: &mut RunContext<'_>) -> Result<(), StageError> {
        let device = open(ctx.device)?;
        let mut store = ParamStore::new(ctx.seed, &device);
        let mut specs = BTreeMap::new();
        let mut rows = Vec::new();
        let mut summary = BTreeMap::new();
        for target_input in ctx.inputs(slot::TARGETS).to_vec() {
            let modality = target_input.reference.output.clone();
            let source_input = ctx
                .inputs(slot::SOURCE)
                .iter()
                .find(|s| s.reference.output == modality)
                .cloned()
                .ok_or_else(|| StageError::Internal(format!("no source for `{modality}`")))?;
            let pairs = Pairs::read(&source_input, &target_input)?;
            let (train, valid) = (pairs.rows(Split::Train), pairs.rows(Split::Valid));
            if train.is_empty() || valid.is_empty() {
                return Err(StageError::input(format!(
                    "{} and {}: {} train and {} validation segments in common; adapters need both",
                    source_input.reference,
                    target_input.reference,
                    train.len(),
                    valid.len()
                )));
            }
            let mlp = Mlp::new(
                &mut store,
                &adapter_prefix(&modality),
                pairs.input,
                &p.mlp,
                Some(pairs.output),
            )?;
            let task = AdapterTask {
                mlp: &mlp,
                pairs: &pairs,
                loss: p.loss,
                modality: &modality,
                device: &device,
            };
            let config = p.optim.fit_config("train", ctx.seed, false);
            let vars = store.vars_with_prefix(&format!("{}.", adapter_prefix(&modality)));
            let fitted = fit(
                &task,
                &store,
                vec![vars.into()],
                &train,
                &valid,
                &config,
                ctx.progress,
            )?;
            tracing::info!(
                "{}: adapter `{modality}` {}→{}: best epoch {}, validation loss {:.4}{}",
                ctx.stage_id,
                pairs.input,
                pairs.output,
                fitted.best_epoch,
                fitted.best_value,
                fitted
                    .stopped
                    .as_ref()
                    .map(|s| format!("; {s}"))
                    .unwrap_or_default()
            );
            summary.insert(
                modality.clone(),
                serde_json::json!({"input": pairs.input, "output": pairs.output, "train": train.len(), "valid": valid.len(), "best_epoch": fitted.best_epoch, "valid_loss": fitted.best_value, "stopped": fitted.stopped}),
            );
            for mut row in fitted.history {
                if row.subject == TOTAL {
                    row.subject = modality.clone();
                }
                rows.push(row);
            }
            specs.insert(
                modality,
                AdapterSpec {
                    input: pairs.input,
                    output: pairs.output,
                    mlp: p.mlp.clone(),
                },
            );
        }
        AdaptersCheckpoint { adapters: specs }.save(&store, ctx.output(slots::ADAPTERS)?)?;
        history::write(&rows, ctx.output(slots::HISTORY)?, ctx.table_meta())?;
        ctx.report("adapters", summary);
        Ok(())
    }
}

/// Source vectors and their targets for one modality.
struct Pairs {
    input: usize,
    output: usize,
    x: Vec<f32>,
    y: Vec<f32>,
    splits: Vec<Split>,
}

impl Pairs {
    /// Each target row with its segment's pooled source vector (rows whose segment the source
    /// lacks are left out; a non-finite source value is an input error).
    fn read(source: &ResolvedInput, targets: &ResolvedInput) -> Result<Self, StageError> {
        let table = TargetTable::read(&targets.path)?;
        let features = FeatureReader::open_pooled(&source.path)?.read_all()?;
        let index: HashMap<&str, usize> = features
            .segment_ids
            .iter()
            .enumerate()
            .map(|(i, s)| (s.as_str(), i))
            .collect();
        let mut pairs = Pairs {
            input: features.dim,
            output: table.info.dim,
            x: Vec::new(),
            y: Vec::new(),
            splits: Vec::new(),
        };
        for (i, row) in table.rows.iter().enumerate() {
            let Some(&j) = index.get(row.segment_id.as_str()) else {
                continue;
            };
            let x = features.pooled_of(j);
            if let Some(bad) = x.iter().position(|v| !v.is_finite()) {
                return Err(StageError::input(format!(
                    "{}: segment `{}` has a non-finite value at feature {bad}: normalise with nonfinite = \"zero\" first",
                    source.reference, row.segment_id
                )));
            }
            pairs.x.extend_from_slice(x);
            pairs.y.extend_from_slice(table.vector(i));
            pairs.splits.push(row.split);
        }
        Ok(pairs)
    }

    /// The pairs of one split.
    fn rows(&self, split: Split) -> Vec<usize> {
        (0..self.splits.len())
            .filter(|&i| self.splits[i] == split)
            .collect()
    }
}

impl Pairs {
    fn batch(&self, rows: &[usize], device: &Device) -> Result<(Tensor, Tensor), StageError> {
        let mut x = Vec::with_capacity(rows.len() * self.input);
        let mut y = Vec::with_capacity(rows.len() * self.output);
        for &r in rows {
            x.extend_from_slice(&self.x[r * self.input..(r + 1) * self.input]);
            y.extend_from_slice(&self.y[r * self.output..(r + 1) * self.output]);
        }
        Ok((
            Tensor::from_vec(x, (rows.len(), self.input), device).map_err(err("adapter batch"))?,
            Tensor::from_vec(y, (rows.len(), self.output), device).map_err(err("adapter batch"))?,
        ))
    }
}

struct AdapterTask<'a> {
    mlp: &'a Mlp,
    pairs: &'a Pairs,
    loss: AdapterLoss,
    modality: &'a str,
    device: &'a Device,
}

fn adapter_loss(pred: &Tensor, target: &Tensor, loss: AdapterLoss) -> candle_core::Result<Tensor> {
    match loss {
        AdapterLoss::Mse => (pred - target)?.sqr()?.mean_all(),
        AdapterLoss::Cosine => {
            let dot = (pred * target)?.sum(1)?;
            let norms = (pred.sqr()?.sum(1)?.sqrt()? * target.sqr()?.sum(1)?.sqrt()?)?;
            (dot / (norms + 1e-8)?)?.mean_all()?.affine(-1.0, 1.0)
        }
    }
}

impl Trainable for AdapterTask<'_> {
    fn loss(&self, rows: &[usize], pass: &mut Pass<'_>) -> Result<Tensor, StageError> {
        let (x, y) = self.pairs.batch(rows, self.device)?;
        let pred = self.mlp.forward(&x, pass)?;
        adapter_loss(&pred, &y, self.loss).map_err(err("adapter loss"))
    }

    fn measure(&self, rows: &[usize]) -> Result<Measures, StageError> {
        candle_core::backprop::no_grad(|| self.measure_in_passes(rows))
    }
}

impl AdapterTask<'_> {
    /// [`Trainable::measure`] in passes of 1,024 pairs.
    fn measure_in_passes(&self, rows: &[usize]) -> Result<Measures, StageError> {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
        let (mut sum, mut n) = (0.0, 0usize);
        let mut cos = (0.0, 0usize);
        for chunk in rows.chunks(1024) {
            let (x, y) = self.pairs.batch(chunk, self.device)?;
            let pred = self.mlp.forward(
                &x,
                &mut Pass {
                    train: false,
                    rng: &mut rng,
                },
            )?;
            sum += scalar(&adapter_loss(&pred, &y, self.loss).map_err(err("adapter loss"))?)?
                * chunk.len() as f64;
            n += chunk.len();
            cos.0 +=
                (1.0 - scalar(
                    &adapter_loss(&pred, &y, AdapterLoss::Cosine).map_err(err("adapter loss"))?,
                )?) * chunk.len() as f64;
            cos.1 += chunk.len();
        }
        let mut out = Measures::new();
        out.insert(
            (TOTAL.into(), Measure::Loss.key().into()),
            sum / n.max(1) as f64,
        );
        out.insert(
            (self.modality.to_string(), Measure::Cosine.key().into()),
            cos.0 / cos.1.max(1) as f64,
        );
        Ok(out)
    }
}
