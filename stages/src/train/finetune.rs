//! The `finetune` stage: continues a trained model (and the adapters in front of it) on
//! another dataset in phases — e.g. the transfer study's "adapters frozen, lr 1e-4" then
//! "everything unfrozen, lr 1e-5" — each phase early-stopped on validation data and never
//! allowed to end worse than it started.

use std::collections::{BTreeMap, BTreeSet};

use mmflow_pipeline::{
    Arity, BoundInputs, InputSlot, KeyPath, OutputPort, ParamProblem, RunContext, StageError,
    StageKind,
};
use mmflow_schemas::history;
use mmflow_schemas::Split;
use serde::{Deserialize, Serialize};

use super::checkpoint::Restored;
use super::device::resolve;
use super::fit::{fit, FitConfig, Monitor, OnNan};
use super::loss::LossWeights;
use super::optim::Schedule;
use super::train_model::{check_data, check_training, save_model, Task};
use crate::kinds::{ADAPTERS, FEATURES, HISTORY, MODEL, SEGMENTS};

/// One phase of fine-tuning.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Phase {
    /// Name in the history table.
    pub name: String,
    /// Modules left untouched in this phase: `adapters` (all), `adapter.<modality>`,
    /// `encoders` (all), `encoder.<modality>`, `fusion`, `users`, `heads` (all), `head.<head>`.
    pub freeze: Vec<String>,
    /// Most epochs.
    pub epochs: usize,
    /// AdamW learning rate.
    pub learning_rate: f64,
    /// AdamW decoupled weight decay.
    pub weight_decay: f64,
    /// Stop after this many epochs without improving `monitor` (0 = train all epochs).
    pub patience: usize,
    /// Loss weights per head for this phase (default: the stage's `heads`).
    pub heads: Option<BTreeMap<String, LossWeights>>,
}

impl Default for Phase {
    fn default() -> Self {
        Phase {
            name: "phase".into(),
            freeze: Vec::new(),
            epochs: 10,
            learning_rate: 1e-4,
            weight_decay: 1e-4,
            patience: 3,
            heads: None,
        }
    }
}

/// Parameters of the `finetune` stage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FinetuneParams {
    /// The phases, in order; each starts from the best weights of the one before.
    pub phases: Vec<Phase>,
    /// Loss weights per head (default: MSE for each of the model's heads).
    pub heads: BTreeMap<String, LossWeights>,
    /// Segments per batch.
    pub batch_size: usize,
    /// Clip the global gradient norm (none to disable).
    pub grad_clip: Option<f64>,
    /// Validation measure that picks the best epoch: `loss` or `<head>:<metric>`.
    pub monitor: String,
    /// Learning-rate schedule within each phase: `constant` (default), `plateau` or `cosine`.
    pub schedule: Schedule,
    /// Plateau schedule: multiply the rate by this.
    pub plateau_factor: f64,
    /// Plateau schedule: epochs without improvement before reducing.
    pub plateau_patience: usize,
    /// A NaN loss: `stop` (keep the best weights so far, flag it) or `fail`.
    pub on_nan: OnNan,
}

impl Default for FinetuneParams {
    fn default() -> Self {
        FinetuneParams {
            phases: vec![
                Phase {
                    name: "adapters_frozen".into(),
                    freeze: vec!["adapters".into()],
                    learning_rate: 1e-4,
                    ..Phase::default()
                },
                Phase {
                    name: "all".into(),
                    freeze: Vec::new(),
                    learning_rate: 1e-5,
                    ..Phase::default()
                },
            ],
            heads: BTreeMap::new(),
            batch_size: 32,
            grad_clip: Some(1.0),
            monitor: "loss".into(),
            schedule: Schedule::Constant,
            plateau_factor: 0.5,
            plateau_patience: 2,
            on_nan: OnNan::Stop,
        }
    }
}

/// The parameter-name prefix a `freeze` entry stands for, if it names a module.
fn module_prefix(entry: &str) -> Option<String> {
    let (group, member) = match entry.split_once('.') {
        Some((g, m)) if !m.is_empty() => (g, Some(m)),
        Some(_) => return None,
        None => (entry, None),
    };
    match (group, member) {
        ("adapters", None) => Some("adapter.".into()),
        ("adapter", Some(m)) => Some(format!("adapter.{m}.")),
        ("encoders", None) => Some("model.enc.".into()),
        ("encoder", Some(m)) => Some(format!("model.enc.{m}.")),
        ("fusion", None) => Some("model.fusion.".into()),
        ("users", None) => Some("model.users.".into()),
        ("heads", None) => Some("model.head.".into()),
        ("head", Some(h)) => Some(format!("model.head.{h}.")),
        _ => None,
    }
}

/// The `finetune` stage kind.
pub struct Finetune;

impl StageKind for Finetune {
    type Params = FinetuneParams;
    const KIND: &'static str = "finetune";
    const VERSION: u32 = 1;
    const ABOUT: &'static str = "continues a trained model and its adapters on new data, in phases";

    fn check(&self, p: &FinetuneParams) -> Vec<ParamProblem> {
        // Stage-wide settings once, then each phase's own.
        let mut problems: Vec<ParamProblem> =
            check_training(1, p.batch_size, 1.0, 0.0, p.grad_clip, &p.monitor);
        if p.phases.is_empty() {
            problems.push(ParamProblem::new("phases", "name at least one phase"));
        }
        let mut names = BTreeSet::new();
        for (i, phase) in p.phases.iter().enumerate() {
            let mut own = check_training(
                phase.epochs,
                1,
                phase.learning_rate,
                phase.weight_decay,
                None,
                "loss",
            );
            if !names.insert(phase.name.as_str()) {
                own.push(ParamProblem::new(
                    "name",
                    format!("phase name `{}` is used twice", phase.name),
                ));
            }
            for entry in &phase.freeze {
                if module_prefix(entry).is_none() {
                    own.push(ParamProblem::new(
                        "freeze",
                        format!("unknown module `{entry}`: use adapters, adapter.<modality>, encoders, encoder.<modality>, fusion, users, heads or head.<head>"),
                    ));
                }
            }
            for (head, w) in phase.heads.iter().flatten() {
                own.extend(w.check(&format!("heads.{head}")));
            }
            let at = KeyPath::keys(["phases"]).index(i);
            problems.extend(own.into_iter().map(|q| ParamProblem {
                path: at.join(&q.path),
                ..q
            }));
        }
        for (head, w) in &p.heads {
            problems.extend(w.check(&format!("heads.{head}")));
        }
        problems
    }

    fn inputs(&self, _: &FinetuneParams) -> Vec<InputSlot> {
        vec![
            InputSlot {
                name: "model",
                kind: MODEL,
                arity: Arity::One,
                about: "the trained model to continue",
            },
            InputSlot {
                name: "segments",
                kind: SEGMENTS,
                arity: Arity::One,
                about: "the new dataset's splits and labels",
            },
            InputSlot {
                name: "features",
                kind: FEATURES,
                arity: Arity::Many,
                about: "the model's modalities on the new dataset",
            },
            InputSlot {
                name: "adapters",
                kind: ADAPTERS,
                arity: Arity::Optional,
                about: "adapters in front of their modalities, fine-tuned too unless frozen",
            },
        ]
    }

    fn outputs(
        &self,
        _: &FinetuneParams,
        inputs: &BoundInputs,
    ) -> Result<Vec<OutputPort>, Vec<ParamProblem>> {
        let mut outputs = vec![
            OutputPort::new("model", MODEL),
            OutputPort::new("history", HISTORY),
        ];
        if inputs.get("adapters").is_some_and(|a| !a.is_empty()) {
            outputs.push(OutputPort::new("adapters", ADAPTERS));
        }
        Ok(outputs)
    }

    fn uses_device(&self, _: &FinetuneParams) -> bool {
        true
    }

    fn run(&self, p: &FinetuneParams, ctx: &mut RunContext<'_>) -> Result<(), StageError> {
        let device = resolve(ctx.device)?;
        let Restored {
            mut store,
            model,
            adapters,
            data,
            frames,
            ..
        } = Restored::load(ctx, &device)?;
        let segments = ctx.input("segments")?.reference.to_string();
        let heads: BTreeMap<String, LossWeights> = if p.heads.is_empty() {
            model
                .arch
                .heads
                .iter()
                .map(|h| (h.clone(), LossWeights::default()))
                .collect()
        } else {
            p.heads.clone()
        };
        for (i, phase) in p.phases.iter().enumerate() {
            for head in heads
                .keys()
                .chain(phase.heads.iter().flat_map(|h| h.keys()))
            {
                if !model.arch.heads.contains(head) {
                    return Err(StageError::config(format!(
                        "phases[{i}] ({}): `{head}` is not a head of the model ({})",
                        phase.name,
                        model.arch.heads.join(", ")
                    )));
                }
            }
        }
        let (train, valid) = (data.rows(Split::Train), data.rows(Split::Valid));
        check_data(&data, &train, &valid, heads.keys(), &segments)?;
        let adapter_metadata = adapters.as_ref().map(|a| a.metadata.clone());
        let adapter_mlps = match adapters {
            Some(loaded) => {
                store.absorb(loaded.store)?;
                Some(loaded.adapters)
            }
            None => None,
        };
        let monitor =
            Monitor::parse(&p.monitor).ok_or_else(|| StageError::config("invalid monitor"))?;
        let mut rows = Vec::new();
        let mut summary = Vec::new();
        let mut last = None;
        for (i, phase) in p.phases.iter().enumerate() {
            let prefixes: Vec<String> = phase
                .freeze
                .iter()
                .filter_map(|f| module_prefix(f))
                .collect();
            for (entry, prefix) in phase.freeze.iter().zip(&prefixes) {
                if store.vars_with_prefix(prefix).is_empty() {
                    return Err(StageError::config(format!(
                        "phases[{i}] ({}): freeze `{entry}` matches nothing in this model{}",
                        phase.name,
                        if prefix.starts_with("adapter") && adapter_mlps.is_none() {
                            " (the stage has no `adapters` input)"
                        } else {
                            ""
                        }
                    )));
                }
            }
            let vars: Vec<_> = store
                .named_vars()
                .into_iter()
                .filter(|(name, _)| !prefixes.iter().any(|p| name.starts_with(p.as_str())))
                .map(|(_, v)| v)
                .collect();
            if vars.is_empty() {
                return Err(StageError::config(format!(
                    "phases[{i}] ({}) freezes every parameter: nothing to train",
                    phase.name
                )));
            }
            let weights = phase.heads.clone().unwrap_or_else(|| heads.clone());
            let task = Task {
                model: &model,
                data: &data,
                frames: &frames,
                adapters: adapter_mlps.as_ref(),
                weights: &weights,
                device: &device,
            };
            let config = FitConfig {
                phase: phase.name.clone(),
                epochs: phase.epochs,
                batch_size: p.batch_size,
                lr: phase.learning_rate,
                weight_decay: phase.weight_decay,
                grad_clip: p.grad_clip,
                patience: phase.patience,
                schedule: p.schedule,
                plateau_factor: p.plateau_factor,
                plateau_patience: p.plateau_patience,
                on_nan: p.on_nan,
                seed: ctx.seed ^ (i as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15),
                start_from_current: true,
            };
            let fitted = fit(
                &task,
                &store,
                vars,
                &train,
                &valid,
                &config,
                &monitor,
                ctx.progress,
            )?;
            tracing::info!(
                "{}: phase `{}`: best epoch {} of {} ({}:{} = {:.4}){}",
                ctx.stage_id,
                phase.name,
                fitted.best_epoch,
                phase.epochs,
                monitor.subject,
                monitor.metric,
                fitted.best_value,
                if fitted.best_epoch == 0 {
                    "; no epoch beat the starting weights, kept them"
                } else {
                    ""
                }
            );
            summary.push(serde_json::json!({"phase": phase.name, "best_epoch": fitted.best_epoch, "best_value": fitted.best_value, "stopped": fitted.stopped}));
            rows.extend(fitted.history.iter().cloned());
            last = Some(fitted);
        }
        let fitted = last.expect("at least one phase (checked)");
        save_model(&store, &model.arch, &fitted, ctx.output("model")?)?;
        if let Some(metadata) = adapter_metadata {
            store.save_prefix(ctx.output("adapters")?, "adapter.", metadata)?;
        }
        history::write(&rows, ctx.output("history")?, ctx.table_meta())?;
        ctx.report("phases", summary);
        ctx.report("segments", [train.len(), valid.len()]);
        ctx.report("segments_without_every_modality", data.dropped);
        Ok(())
    }
}
