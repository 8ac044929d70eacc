//! The `optim` settings table every training stage shares (`train_model`, `train_adapters`,
//! and each phase of `finetune`): epochs, batches, AdamW, clipping, the learning-rate
//! schedule, early stopping and what a NaN loss does. One type, one doc per field; each stage
//! kind has its own defaults ([`OptimDefaults`]).

use std::fmt;
use std::marker::PhantomData;

use mmflow_pipeline::values::{AtLeastOne, NonNegative, Positive};
use mmflow_pipeline::{KeyPath, Moved, ParamProblem};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::optim::{Optimizer, Schedule};
use crate::metrics::{Direction, Metric};

/// What to do when the loss becomes NaN or infinite.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema, Default)]
#[serde(rename_all = "snake_case")]
pub enum OnNan {
    /// Stop training, keep the best weights so far, and flag it (log, report, history).
    #[default]
    Stop,
    /// Fail the stage.
    Fail,
}

/// What the history's `train` column holds after each epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema, Default)]
#[serde(rename_all = "snake_case")]
pub enum TrainMeasures {
    /// Every measure taken again on the training split in evaluation mode (an honest
    /// train–validation gap, at the cost of a second forward pass over the training data).
    #[default]
    Eval,
    /// Only the mean training-mode batch loss: no second pass (what MMSA's recipe uses; its
    /// trainers measure the training split from the training batches' own outputs).
    BatchLoss,
}

/// A measure taken on a split after every epoch (a history row's `metric`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Measure {
    /// The training loss (of a head, a modality's adapter, or `total`).
    Loss,
    /// Mean cosine similarity of an adapter's outputs to its targets.
    Cosine,
    /// One of the field's metrics of a head.
    Metric(Metric),
}

impl Measure {
    /// Its name in histories and `monitor`.
    pub fn key(self) -> &'static str {
        match self {
            Measure::Loss => "loss",
            Measure::Cosine => "cosine",
            Measure::Metric(m) => m.key(),
        }
    }

    /// The measure named `key`.
    pub fn from_key(key: &str) -> Option<Measure> {
        match key {
            "loss" => Some(Measure::Loss),
            "cosine" => Some(Measure::Cosine),
            _ => Metric::from_key(key).map(Measure::Metric),
        }
    }

    /// Which way it improves.
    pub fn direction(self) -> Direction {
        match self {
            Measure::Loss => Direction::LowerIsBetter,
            Measure::Cosine => Direction::HigherIsBetter,
            Measure::Metric(m) => m.direction(),
        }
    }
}

/// The subject of the total loss (every head's, weighted).
pub const TOTAL: &str = "total";

/// Which validation measure picks the best epoch: `loss` (the total validation loss) or
/// `<subject>:<measure>`, e.g. `sentiment:mae`, `valence:ccc`, `mean:ccc`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Monitor {
    /// `total`, a head, `mean` (over the continuous affect heads) or an adapted modality.
    pub subject: String,
    /// What is measured.
    pub measure: Measure,
}

impl Monitor {
    /// The total validation loss.
    pub fn loss() -> Monitor {
        Monitor {
            subject: TOTAL.into(),
            measure: Measure::Loss,
        }
    }

    /// True for the total validation loss.
    pub fn is_total_loss(&self) -> bool {
        self.subject == TOTAL && self.measure == Measure::Loss
    }
}

impl fmt::Display for Monitor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_total_loss() {
            f.write_str("loss")
        } else {
            write!(f, "{}:{}", self.subject, self.measure.key())
        }
    }
}

impl std::str::FromStr for Monitor {
    type Err = String;

    fn from_str(text: &str) -> Result<Monitor, String> {
        if text == "loss" {
            return Ok(Monitor::loss());
        }
        let Some((subject, key)) = text.split_once(':').filter(|(s, _)| !s.is_empty()) else {
            return Err(format!(
                "`{text}` is not `loss` or `<head>:<measure>` (e.g. `sentiment:mae`, `mean:ccc`)"
            ));
        };
        let measure = Measure::from_key(key).ok_or_else(|| {
            let known: Vec<&str> = [Measure::Loss, Measure::Cosine]
                .into_iter()
                .map(Measure::key)
                .chain(Metric::ALL.iter().map(|m| m.key()))
                .collect();
            format!(
                "unknown measure `{key}` in `{text}`: one of {}",
                known.join(", ")
            )
        })?;
        Ok(Monitor {
            subject: subject.to_string(),
            measure,
        })
    }
}

impl Serialize for Monitor {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl JsonSchema for Monitor {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Monitor".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({ "type": "string" })
    }
}

impl<'de> Deserialize<'de> for Monitor {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Monitor, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// The defaults of a stage kind's `optim` table (the settings every stage shares default to
/// the same values).
pub trait OptimDefaults {
    /// Default `epochs`.
    fn epochs() -> AtLeastOne;
    /// Default `batch_size`.
    fn batch_size() -> AtLeastOne {
        AtLeastOne::new(64)
    }
    /// Default `learning_rate`.
    fn learning_rate() -> Positive {
        Positive::new(1e-3)
    }
    /// Default `weight_decay`.
    fn weight_decay() -> NonNegative {
        NonNegative::new(1e-4)
    }
    /// Default `grad_clip`.
    fn grad_clip() -> Option<Positive> {
        Some(Positive::new(1.0))
    }
    /// Default `patience`.
    fn patience() -> usize;
    /// Default `monitor`.
    fn monitor() -> Monitor {
        Monitor::loss()
    }
    /// Default `schedule`.
    fn schedule() -> Schedule {
        Schedule::Plateau
    }
    /// Default `plateau_factor`.
    fn plateau_factor() -> f64 {
        0.5
    }
    /// Default `plateau_patience`.
    fn plateau_patience() -> usize;
    /// Default `on_nan`.
    fn on_nan() -> OnNan {
        OnNan::Stop
    }
}

/// `train_model`'s defaults.
#[derive(Debug, Clone, PartialEq, JsonSchema)]
pub struct ModelDefaults;
impl OptimDefaults for ModelDefaults {
    fn epochs() -> AtLeastOne {
        AtLeastOne::new(30)
    }
    fn patience() -> usize {
        8
    }
    fn plateau_patience() -> usize {
        3
    }
}

/// `train_adapters`' defaults.
#[derive(Debug, Clone, PartialEq, JsonSchema)]
pub struct AdapterDefaults;
impl OptimDefaults for AdapterDefaults {
    fn epochs() -> AtLeastOne {
        AtLeastOne::new(50)
    }
    fn patience() -> usize {
        10
    }
    fn plateau_patience() -> usize {
        5
    }
}

/// A `finetune` phase's defaults: small, constant rates and quick stopping.
#[derive(Debug, Clone, PartialEq, JsonSchema)]
pub struct PhaseDefaults;
impl OptimDefaults for PhaseDefaults {
    fn epochs() -> AtLeastOne {
        AtLeastOne::new(10)
    }
    fn batch_size() -> AtLeastOne {
        AtLeastOne::new(32)
    }
    fn learning_rate() -> Positive {
        Positive::new(1e-4)
    }
    fn patience() -> usize {
        3
    }
    fn schedule() -> Schedule {
        Schedule::Constant
    }
    fn plateau_patience() -> usize {
        2
    }
}

/// How a training phase optimises: the `optim` table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, bound = "")]
pub struct Optim<D: OptimDefaults + JsonSchema> {
    /// Most epochs.
    #[serde(default = "D::epochs")]
    pub epochs: AtLeastOne,
    /// Segments per batch.
    #[serde(default = "D::batch_size")]
    pub batch_size: AtLeastOne,
    /// `adamw` (the default) or `adam` (weight decay as an L2 term in the gradient, as MMSA's
    /// trainers use it).
    #[serde(default, skip_serializing_if = "Optimizer::is_adamw")]
    pub optimizer: Optimizer,
    /// The initial learning rate.
    #[serde(default = "D::learning_rate")]
    pub learning_rate: Positive,
    /// Weight decay: decoupled (AdamW) or added to the gradient (Adam).
    #[serde(default = "D::weight_decay")]
    pub weight_decay: NonNegative,
    /// Clip the global gradient norm to this.
    #[serde(default = "D::grad_clip")]
    pub grad_clip: Option<Positive>,
    /// Clip every gradient value to ± this after each batch (PyTorch's `clip_grad_value_`;
    /// with `accumulate`, the running sum is clipped).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clip_value: Option<Positive>,
    /// Batches whose gradients are summed (not averaged, as PyTorch's `.grad` sums them
    /// between `zero_grad`s) per optimiser step; a sum left at an epoch's end carries into
    /// the next epoch.
    #[serde(
        default = "AtLeastOne::one",
        skip_serializing_if = "AtLeastOne::is_one"
    )]
    pub accumulate: AtLeastOne,
    /// Stop after this many epochs without improving `monitor` (0 = train every epoch).
    #[serde(default = "D::patience")]
    pub patience: usize,
    /// The validation measure that picks the best epoch: `loss` (the total validation loss)
    /// or `<subject>:<measure>` — a head and `mae`, `rmse`, `corr`, `ccc` (and `acc2` for a
    /// sentiment head; on CH-SIMS data a sentiment head's are `sims_mae`, `rmse`,
    /// `sims_corr`, `ccc`, `sims_acc2`), `mean:ccc` (the average CCC of two or more continuous
    /// heads, e.g. valence and arousal), or `<modality>:cosine` for an adapter.
    #[serde(default = "D::monitor")]
    pub monitor: Monitor,
    /// Learning-rate schedule: `constant`, `plateau` (PyTorch's ReduceLROnPlateau on the
    /// validation loss) or `cosine` (decay to 0 over the epochs).
    #[serde(default = "D::schedule")]
    pub schedule: Schedule,
    /// Plateau schedule: multiply the rate by this.
    #[serde(default = "D::plateau_factor")]
    pub plateau_factor: f64,
    /// Plateau schedule: epochs without improvement before reducing.
    #[serde(default = "D::plateau_patience")]
    pub plateau_patience: usize,
    /// A NaN or infinite loss: `stop` (keep the best weights so far, flag it) or `fail`.
    #[serde(default = "D::on_nan")]
    pub on_nan: OnNan,
    /// The history's training measures: `eval` (every measure again on the training split
    /// in evaluation mode) or `batch_loss` (only the mean training-mode batch loss, no second
    /// pass). Unset: `eval`, or `batch_loss` under MMSA's recipe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub train_measures: Option<TrainMeasures>,
    #[serde(skip)]
    defaults: PhantomData<D>,
}

impl<D: OptimDefaults + JsonSchema> Default for Optim<D> {
    fn default() -> Self {
        Optim {
            epochs: D::epochs(),
            batch_size: D::batch_size(),
            optimizer: Optimizer::Adamw,
            learning_rate: D::learning_rate(),
            weight_decay: D::weight_decay(),
            grad_clip: D::grad_clip(),
            clip_value: None,
            accumulate: AtLeastOne::one(),
            patience: D::patience(),
            monitor: D::monitor(),
            schedule: D::schedule(),
            plateau_factor: D::plateau_factor(),
            plateau_patience: D::plateau_patience(),
            on_nan: D::on_nan(),
            train_measures: None,
            defaults: PhantomData,
        }
    }
}

/// [`Moved`] entries for keys that now live in an `optim` table: `moved!(at, now_prefix;
/// keys…; …)`.
macro_rules! moved {
    ($($at:literal, $now:literal; $($key:literal),+);+) => {
        [$($(Moved { at: $at, key: $key, now: concat!($now, $key) }),+),+]
    };
}

/// `train_model`'s and `train_adapters`' settings that moved into `optim`.
pub const MOVED_INTO_OPTIM: [Moved; 11] = moved!("", "optim.";
    "epochs", "batch_size", "learning_rate", "weight_decay", "grad_clip", "patience",
    "monitor", "schedule", "plateau_factor", "plateau_patience", "on_nan");

/// `finetune`'s settings that moved into each phase's `optim` table: a phase's own, and the
/// stage-wide ones.
pub const FINETUNE_MOVED_INTO_OPTIM: [Moved; 11] = moved!(
    "phases.*", "optim."; "epochs", "learning_rate", "weight_decay", "patience";
    "", "phases[…].optim."; "batch_size", "grad_clip", "monitor", "schedule", "plateau_factor",
    "plateau_patience", "on_nan");

impl<D: OptimDefaults + JsonSchema> Optim<D> {
    /// Range problems, at `at` (the table's path below `params`).
    pub fn check(&self, at: &KeyPath) -> Vec<ParamProblem> {
        let mut problems = Vec::new();
        let mut problem = |key: &str, message: &str| {
            problems.push(ParamProblem::at(at.key(key), message.to_string()))
        };
        if !(self.plateau_factor.is_finite()
            && self.plateau_factor > 0.0
            && self.plateau_factor < 1.0)
        {
            problem("plateau_factor", "must be in (0, 1)");
        }
        problems
    }

    /// A problem at `at.monitor` unless `measured(monitor)` says the stage measures it.
    pub fn check_monitor(
        &self,
        at: &KeyPath,
        measured: impl FnOnce(&Monitor) -> Result<(), String>,
    ) -> Option<ParamProblem> {
        measured(&self.monitor)
            .err()
            .map(|message| ParamProblem::at(at.key("monitor"), message))
    }

    /// The training loop's settings for phase `phase`.
    pub fn fit_config(&self, phase: &str, seed: u64, start_from_current: bool) -> FitConfig {
        FitConfig {
            phase: phase.to_string(),
            epochs: self.epochs.get(),
            batch_size: self.batch_size.get(),
            lr: self.learning_rate.get(),
            weight_decay: self.weight_decay.get(),
            optimizer: self.optimizer,
            grad_clip: self.grad_clip.map(Positive::get),
            clip_value: self.clip_value.map(Positive::get),
            accumulate: self.accumulate.get(),
            patience: self.patience,
            schedule: self.schedule,
            plateau_factor: self.plateau_factor,
            plateau_patience: self.plateau_patience,
            on_nan: self.on_nan,
            monitor: self.monitor.clone(),
            train_measures: self.train_measures.unwrap_or_default(),
            seed,
            start_from_current,
        }
    }
}

/// One training phase's settings, as the loop uses them.
#[derive(Debug, Clone, PartialEq)]
pub struct FitConfig {
    /// Phase name written to the history.
    pub phase: String,
    /// Most epochs.
    pub epochs: usize,
    /// Segments per batch.
    pub batch_size: usize,
    /// Initial learning rate.
    pub lr: f64,
    /// Weight decay.
    pub weight_decay: f64,
    /// AdamW or Adam.
    pub optimizer: Optimizer,
    /// Clip the global gradient norm to this.
    pub grad_clip: Option<f64>,
    /// Clip every gradient value (of the running sum) to ± this after each batch.
    pub clip_value: Option<f64>,
    /// Batches whose gradients are summed per step.
    pub accumulate: usize,
    /// Stop after this many epochs without improvement of `monitor` (0 = never stop early).
    pub patience: usize,
    /// Learning-rate schedule.
    pub schedule: Schedule,
    /// Plateau schedule: factor.
    pub plateau_factor: f64,
    /// Plateau schedule: epochs without improvement before reducing.
    pub plateau_patience: usize,
    /// What a NaN loss does.
    pub on_nan: OnNan,
    /// The validation measure that picks the best epoch.
    pub monitor: Monitor,
    /// What the history's `train` column holds.
    pub train_measures: TrainMeasures,
    /// Seed of the shuffling and dropout.
    pub seed: u64,
    /// Measure the starting weights as epoch 0 and keep them unless an epoch beats them
    /// (fine-tuning: a phase must not make the model worse on validation data).
    pub start_from_current: bool,
}

impl FitConfig {
    /// Optimiser steps over all epochs on `rows` training rows (a step per `accumulate`
    /// batches).
    pub fn steps(&self, rows: usize) -> usize {
        let batches = rows.div_ceil(self.batch_size.max(1));
        self.epochs * batches / self.accumulate.max(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn monitors_parse_typed_and_print_back() {
        for text in [
            "loss",
            "sentiment:mae",
            "mean:ccc",
            "visual:cosine",
            "sentiment:acc2",
        ] {
            let m: Monitor = text.parse().unwrap();
            assert_eq!(m.to_string(), text);
        }
        assert_eq!(
            "valence:ccc"
                .parse::<Monitor>()
                .unwrap()
                .measure
                .direction(),
            Direction::HigherIsBetter
        );
        assert!("sentiment:macc"
            .parse::<Monitor>()
            .unwrap_err()
            .contains("unknown measure"));
        assert!(":mae".parse::<Monitor>().is_err());
        assert!("mae".parse::<Monitor>().is_err());
    }

    #[test]
    fn a_partial_table_keeps_the_stage_kinds_defaults() {
        let phase: Optim<PhaseDefaults> = toml::from_str("learning_rate = 0.01").unwrap();
        assert_eq!(phase.batch_size.get(), 32);
        assert_eq!(phase.schedule, Schedule::Constant);
        assert_eq!(phase.learning_rate.get(), 0.01);
        let model: Optim<ModelDefaults> = toml::from_str("epochs = 3").unwrap();
        assert_eq!(
            (model.epochs.get(), model.patience, model.batch_size.get()),
            (3, 8, 64)
        );
        assert!(toml::from_str::<Optim<ModelDefaults>>("lr = 1").is_err());
    }
}
