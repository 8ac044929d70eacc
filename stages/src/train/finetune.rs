//! The `finetune` stage: continues a trained model (and the adapters in front of it) on
//! another dataset in phases — e.g. the transfer study's "adapters frozen, lr 1e-4" then
//! "everything unfrozen, lr 1e-5" — each phase early-stopped on validation data and never
//! allowed to end worse than it started.

use std::collections::{BTreeMap, BTreeSet};

use candle_core::Var;
use mmflow_pipeline::values::Positive;
use mmflow_pipeline::{
    Arity, BoundInputs, InputSlot, KeyPath, Moved, OutputPort, ParamProblem, RunContext,
    StageError, StageKind,
};
use mmflow_schemas::history;
use mmflow_schemas::Split;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::checkpoint::{ModelCheckpoint, ADAPTER_PREFIX};
use super::device::open;
use super::fit::{fit, PhaseResult};
use super::loss::LossWeights;
use super::model::Head;
use super::optim::ParamGroup;
use super::restore::Restored;
use super::settings::{FitConfig, Optim, PhaseDefaults, FINETUNE_MOVED_INTO_OPTIM};
use super::task::{check_data, check_monitor, training_family, Task};
use super::text_bert::{self, TextArchitecture, TextEncoderRates};
use super::weights::ParamStore;
use crate::metrics::{MetricFamily, Predicts};
use crate::slots;
use crate::tables::{ADAPTERS, FEATURES, HISTORY, MODEL, SEGMENTS};

/// One phase of fine-tuning.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct Phase {
    /// Name in the history table.
    pub name: String,
    /// Modules left untouched in this phase: `adapters` (all), `adapter.<modality>`,
    /// `encoders` (all), `encoder.<modality>`, `fusion`, `users`, `heads` (all), `head.<head>`,
    /// `text_encoder` (a fine-tuned text encoder; the layers its training froze stay frozen).
    pub freeze: Vec<String>,
    /// Loss weights per head for this phase (default: the stage's `heads`).
    pub heads: Option<BTreeMap<String, LossWeights>>,
    /// How this phase optimises.
    pub optim: Optim<PhaseDefaults>,
    /// A fine-tuned text encoder's own learning rate, weight decay and warm-up in this phase
    /// (default: `train_model`'s `text_encoder` defaults); only for a model with one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub text_encoder: Option<TextEncoderRates>,
}

impl Default for Phase {
    fn default() -> Self {
        Phase {
            name: "phase".into(),
            freeze: Vec::new(),
            heads: None,
            optim: Optim::default(),
            text_encoder: None,
        }
    }
}

/// Parameters of the `finetune` stage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct FinetuneParams {
    /// The phases, in order; each starts from the best weights of the one before.
    pub phases: Vec<Phase>,
    /// Loss weights per head (default: MSE for each of the model's heads).
    pub heads: BTreeMap<String, LossWeights>,
}

impl Default for FinetuneParams {
    fn default() -> Self {
        let mut slower = Optim::default();
        slower.learning_rate = Positive::new(1e-5);
        FinetuneParams {
            phases: vec![
                Phase {
                    name: "adapters_frozen".into(),
                    freeze: vec!["adapters".into()],
                    ..Phase::default()
                },
                Phase {
                    name: "all".into(),
                    freeze: Vec::new(),
                    optim: slower,
                    ..Phase::default()
                },
            ],
            heads: BTreeMap::new(),
        }
    }
}

fn labels(heads: &[Head]) -> String {
    heads
        .iter()
        .map(|h| h.label.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// The parameter-name prefix a `freeze` entry stands for, if it names a module.
fn module_prefix(entry: &str) -> Option<String> {
    let (group, member) = match entry.split_once('.') {
        Some((g, m)) if !m.is_empty() => (g, Some(m)),
        Some(_) => return None,
        None => (entry, None),
    };
    match (group, member) {
        ("adapters", None) => Some(ADAPTER_PREFIX.into()),
        ("adapter", Some(m)) => Some(format!("{ADAPTER_PREFIX}{m}.")),
        ("encoders", None) => Some("model.enc.".into()),
        ("encoder", Some(m)) => Some(format!("model.enc.{m}.")),
        ("fusion", None) => Some("model.fusion.".into()),
        ("users", None) => Some("model.users.".into()),
        ("heads", None) => Some("model.head.".into()),
        ("head", Some(h)) => Some(format!("model.head.{h}.")),
        ("text_encoder", None) => Some(text_bert::PREFIX.into()),
        _ => None,
    }
}

/// Heads as named in the params, typed by their names (the model's own types are checked
/// when it is loaded).
fn named_heads(weights: &BTreeMap<String, LossWeights>) -> Vec<Head> {
    weights
        .keys()
        .map(|label| Head {
            label: label.clone(),
            predicts: Predicts::of_label(label),
        })
        .collect()
}

/// The `finetune` stage kind.
pub struct Finetune;

impl StageKind for Finetune {
    type Params = FinetuneParams;
    const KIND: &'static str = "finetune";
    const VERSION: u32 = 7;
    const ABOUT: &'static str = "continues a trained model and its adapters on new data, in phases";
    const MOVED: &'static [Moved] = &FINETUNE_MOVED_INTO_OPTIM;

    fn check(&self, p: &FinetuneParams) -> Vec<ParamProblem> {
        let mut problems = Vec::new();
        if p.phases.is_empty() {
            problems.push(ParamProblem::new("phases", "name at least one phase"));
        }
        let mut names = BTreeSet::new();
        for (i, phase) in p.phases.iter().enumerate() {
            let optim = KeyPath::keys(["optim"]);
            let mut own = phase.optim.check(&optim);
            // The model's heads are known when it runs; the heads named here, now.
            let named = phase.heads.as_ref().unwrap_or(&p.heads);
            if !named.is_empty() {
                let heads = named_heads(named);
                own.extend(
                    phase
                        .optim
                        .check_monitor(&optim, |m| check_monitor(m, &heads, None)),
                );
            }
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
                name: slots::MODEL,
                kind: MODEL,
                arity: Arity::One,
                about: "the trained model to continue",
            },
            InputSlot {
                name: slots::SEGMENTS,
                kind: SEGMENTS,
                arity: Arity::One,
                about: "the new dataset's splits and labels",
            },
            InputSlot {
                name: slots::FEATURES,
                kind: FEATURES,
                arity: Arity::AnyNumber,
                about: "the model's modalities on the new dataset (none for a model on text alone)",
            },
            InputSlot {
                name: slots::ADAPTERS,
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
            OutputPort::new(slots::MODEL, MODEL),
            OutputPort::new(slots::HISTORY, HISTORY),
        ];
        if inputs
            .get(slots::ADAPTERS.name())
            .is_some_and(|a| !a.is_empty())
        {
            outputs.push(OutputPort::new(slots::ADAPTERS, ADAPTERS));
        }
        Ok(outputs)
    }

    fn uses_device(&self, _: &FinetuneParams) -> bool {
        true
    }

    fn run(&self, p: &FinetuneParams, ctx: &mut RunContext<'_>) -> Result<(), StageError> {
        let device = open(ctx.device)?;
        let Restored {
            mut store,
            model,
            adapters,
            data,
            feeds,
            ..
        } = Restored::load(ctx, &device)?;
        let segments = ctx.input(slots::SEGMENTS)?.reference.to_string();
        let family = training_family(ctx.stage_id, &data);
        let heads: BTreeMap<String, LossWeights> = if p.heads.is_empty() {
            model
                .arch
                .heads
                .iter()
                .map(|h| (h.label.clone(), LossWeights::default()))
                .collect()
        } else {
            p.heads.clone()
        };
        check_phases(p, &heads, &model.arch.heads, family)?;
        let (train, valid) = (data.rows(Split::Train), data.rows(Split::Valid));
        check_data(&data, &train, &valid, heads.keys(), &segments)?;
        let adapter_checkpoint = adapters.as_ref().map(|a| a.checkpoint.clone());
        let adapter_mlps = match adapters {
            Some(loaded) => {
                store.absorb(loaded.store)?;
                Some(loaded.adapters)
            }
            None => None,
        };
        let mut rows = Vec::new();
        let mut summary = Vec::new();
        let mut last = None;
        for (i, phase) in p.phases.iter().enumerate() {
            let vars = trainable(&store, i, phase, adapter_mlps.is_some())?;
            let weights = phase.heads.clone().unwrap_or_else(|| heads.clone());
            let task = Task {
                model: &model,
                data: &data,
                feeds: &feeds,
                adapters: adapter_mlps.as_ref(),
                weights: &weights,
                device: &device,
                family,
            };
            let config = phase.optim.fit_config(
                &phase.name,
                ctx.seed ^ (i as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15),
                true,
            );
            let groups = phase_groups(
                vars,
                model.arch.text.as_deref(),
                phase,
                i,
                &config,
                train.len(),
            )?;
            let fitted = fit(&task, &store, groups, &train, &valid, &config, ctx.progress)?;
            log_phase(ctx.stage_id, &config, &fitted);
            summary.push(serde_json::json!({"phase": phase.name, "best_epoch": fitted.best_epoch, "best_value": fitted.best_value, "stopped": fitted.stopped}));
            rows.extend(fitted.history.iter().cloned());
            last = Some(fitted);
        }
        let fitted = last.expect("at least one phase (checked)");
        ModelCheckpoint {
            architecture: model.arch.clone(),
            best_epoch: fitted.best_epoch,
            stopped: fitted.stopped.clone(),
        }
        .save(&store, ctx.output(slots::MODEL)?)?;
        if let Some(checkpoint) = adapter_checkpoint {
            checkpoint.save(&store, ctx.output(slots::ADAPTERS)?)?;
        }
        history::write(&rows, ctx.output(slots::HISTORY)?, ctx.table_meta())?;
        ctx.report("phases", summary);
        ctx.report("segments", [train.len(), valid.len()]);
        ctx.report("segments_without_every_modality", data.dropped);
        Ok(())
    }
}

/// Every head a phase weighs is the model's, and every phase's monitor is measured.
fn check_phases(
    p: &FinetuneParams,
    heads: &BTreeMap<String, LossWeights>,
    model_heads: &[Head],
    family: MetricFamily,
) -> Result<(), StageError> {
    for (i, phase) in p.phases.iter().enumerate() {
        for head in heads
            .keys()
            .chain(phase.heads.iter().flat_map(|h| h.keys()))
        {
            if !model_heads.iter().any(|h| h.label == *head) {
                return Err(StageError::config(format!(
                    "phases[{i}] ({}): `{head}` is not a head of the model ({})",
                    phase.name,
                    labels(model_heads)
                )));
            }
        }
        check_monitor(&phase.optim.monitor, model_heads, Some(family)).map_err(|e| {
            StageError::config(format!("phases[{i}] ({}): monitor: {e}", phase.name))
        })?;
    }
    Ok(())
}

/// The parameters phase `i` trains: all but those its `freeze` entries name (each must name
/// something, and something must be left).
fn trainable(
    store: &ParamStore,
    i: usize,
    phase: &Phase,
    has_adapters: bool,
) -> Result<Vec<(String, Var)>, StageError> {
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
                if prefix.starts_with("adapter") && !has_adapters {
                    " (the stage has no `adapters` input)"
                } else {
                    ""
                }
            )));
        }
    }
    let vars: Vec<(String, Var)> = store
        .named_vars()
        .into_iter()
        .filter(|(name, _)| !prefixes.iter().any(|p| name.starts_with(p.as_str())))
        .collect();
    if vars.is_empty() {
        return Err(StageError::config(format!(
            "phases[{i}] ({}) freezes every parameter: nothing to train",
            phase.name
        )));
    }
    Ok(vars)
}

/// A phase's parameter groups: the model's trainable `vars`, and a fine-tuned text encoder's
/// (those its training did not freeze) at the phase's `text_encoder` rates, warmed up over the
/// phase's steps.
fn phase_groups(
    vars: Vec<(String, Var)>,
    text: Option<&TextArchitecture>,
    phase: &Phase,
    i: usize,
    config: &FitConfig,
    train_rows: usize,
) -> Result<Vec<ParamGroup>, StageError> {
    let unnamed = |named: Vec<(String, Var)>| -> ParamGroup {
        named.into_iter().map(|(_, v)| v).collect::<Vec<_>>().into()
    };
    let Some(text) = text else {
        if phase.text_encoder.is_some() {
            return Err(StageError::config(format!(
                "phases[{i}] ({}): `text_encoder` is set, but the model has no text encoder",
                phase.name
            )));
        }
        return Ok(vec![unnamed(vars)]);
    };
    let (encoder, rest): (Vec<_>, Vec<_>) = vars
        .into_iter()
        .partition(|(name, _)| name.starts_with(text_bert::PREFIX));
    let rates = phase.text_encoder.unwrap_or_default();
    Ok(vec![
        unnamed(rest),
        rates.group(
            text_bert::trained(encoder, text.freeze),
            config.lr,
            config.steps(train_rows),
        ),
    ])
}

/// A phase's best epoch, in the log.
fn log_phase(stage: &str, config: &FitConfig, fitted: &PhaseResult) {
    tracing::info!(
        "{stage}: phase `{}`: best epoch {} of {} ({} = {:.4}){}",
        config.phase,
        fitted.best_epoch,
        config.epochs,
        config.monitor,
        fitted.best_value,
        if fitted.best_epoch == 0 {
            "; no epoch beat the starting weights, kept them"
        } else {
            ""
        }
    );
}
