//! The training loop shared by adapters, models and fine-tuning: shuffled mini-batches,
//! AdamW, gradient clipping (by norm, or by value with gradients summed over batches), a learning-rate schedule, evaluation on train and validation
//! after every epoch, early stopping on a validation measure, and the best weights restored
//! at the end. Everything it did goes into history rows. What is best, when to stop and the
//! next learning rate are the [`Rules`]' to say.

use std::collections::BTreeMap;

use candle_core::backprop::GradStore;
use candle_core::Tensor;
use mmflow_pipeline::{Progress, StageError};
use mmflow_schemas::history::HistoryRow;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use super::data::shuffled;
use super::device::err;
use super::nn::Pass;
use super::optim::{scalar, AdamW, AdamWConfig, ParamGroup};
use super::rules::Rules;
use super::settings::{FitConfig, Monitor, TrainMeasures, TOTAL};
use super::weights::ParamStore;

/// A measurement after an epoch: `(subject, metric) → value`.
pub type Measures = BTreeMap<(String, String), f64>;

/// What a trainable thing provides to the loop.
pub trait Trainable {
    /// Forward pass and loss of a batch of rows (training mode when `pass.train`).
    fn loss(&self, rows: &[usize], pass: &mut Pass<'_>) -> Result<Tensor, StageError>;

    /// Loss and metrics of a whole split (evaluation mode): `("total", "loss")` must be present.
    fn measure(&self, rows: &[usize]) -> Result<Measures, StageError>;
}

/// The outcome of a phase.
pub struct PhaseResult {
    /// History rows of the phase.
    pub history: Vec<HistoryRow>,
    /// Epoch whose weights were kept (1-based; 0 if none completed).
    pub best_epoch: usize,
    /// Best value of the monitored measure.
    pub best_value: f64,
    /// Why training ended early, if it did ("early stopping", "NaN loss at …").
    pub stopped: Option<String>,
}

/// How an epoch's batches went.
enum Epoch {
    /// Every batch trained: their mean loss.
    Trained(f64),
    /// A batch's loss was not finite (which, where): its step was not taken.
    BadLoss(String),
}

/// Gradients summed over batches until the optimiser steps (PyTorch's `.grad` between two
/// `zero_grad`s), every value clipped after each batch when asked (`clip_grad_value_`). A sum
/// not yet stepped at an epoch's end carries into the next epoch, as in MMSA's MulT trainer.
pub(crate) struct Accumulator {
    /// Batches per step.
    every: usize,
    clip_value: Option<f64>,
    /// The sum so far, per parameter of the optimiser (in its order).
    sums: Vec<Option<Tensor>>,
    batches: usize,
}

impl Accumulator {
    /// Steps every `every` batches, values clipped to ± `clip_value`.
    pub(crate) fn new(every: usize, clip_value: Option<f64>) -> Accumulator {
        Accumulator {
            every: every.max(1),
            clip_value,
            sums: Vec::new(),
            batches: 0,
        }
    }

    /// Adds a batch's gradients: the gradients to step with when a step is due.
    pub(crate) fn add(
        &mut self,
        mut grads: GradStore,
        opt: &AdamW,
    ) -> Result<Option<GradStore>, StageError> {
        if self.every == 1 && self.clip_value.is_none() {
            return Ok(Some(grads));
        }
        let vars = opt.vars();
        self.sums.resize(vars.len(), None);
        for (sum, var) in self.sums.iter_mut().zip(&vars) {
            let Some(grad) = grads.remove(var) else {
                continue;
            };
            let total = match sum.take() {
                Some(before) => (before + grad).map_err(err("gradient sum"))?,
                None => grad,
            };
            *sum = Some(match self.clip_value {
                Some(c) => total.clamp(-c, c).map_err(err("gradient clip"))?,
                None => total,
            });
        }
        self.batches += 1;
        if self.batches < self.every {
            return Ok(None);
        }
        self.batches = 0;
        for (sum, var) in self.sums.iter_mut().zip(&vars) {
            if let Some(total) = sum.take() {
                grads.insert(var, total);
            }
        }
        Ok(Some(grads))
    }
}

/// One epoch over `train` in the epoch's seeded order, a step per batch (or per
/// `accumulate` batches).
fn train_epoch(
    model: &dyn Trainable,
    opt: &mut AdamW,
    pending: &mut Accumulator,
    rng: &mut ChaCha8Rng,
    train: &[usize],
    config: &FitConfig,
    epoch: usize,
) -> Result<Epoch, StageError> {
    let lr = opt.lr();
    let order = shuffled(train, config.seed, epoch);
    let mut losses = Vec::new();
    for (b, rows) in order.chunks(config.batch_size.max(1)).enumerate() {
        let mut pass = Pass { train: true, rng };
        let loss = model.loss(rows, &mut pass)?;
        let value = scalar(&loss)?;
        if !value.is_finite() {
            return Ok(Epoch::BadLoss(format!(
                "{} loss at epoch {epoch}, batch {} (lr {lr:.3e})",
                if value.is_nan() { "NaN" } else { "infinite" },
                b + 1
            )));
        }
        losses.push(value);
        let grads = loss.backward().map_err(err("backward"))?;
        if let Some(grads) = pending.add(grads, opt)? {
            opt.step(grads, config.grad_clip)
                .map_err(|e| e.during(format!("epoch {epoch}, batch {}", b + 1)))?;
        }
    }
    Ok(Epoch::Trained(
        losses.iter().sum::<f64>() / losses.len().max(1) as f64,
    ))
}

/// Trains `model`'s `vars` (a subset of `store`'s) on `train` rows, selecting on `valid`.
pub fn fit(
    model: &dyn Trainable,
    store: &ParamStore,
    groups: Vec<ParamGroup>,
    train: &[usize],
    valid: &[usize],
    config: &FitConfig,
    progress: &Progress,
) -> Result<PhaseResult, StageError> {
    let monitor = &config.monitor;
    let mut opt = AdamW::grouped(
        groups,
        AdamWConfig {
            optimizer: config.optimizer,
            ..AdamWConfig::new(config.lr, config.weight_decay)
        },
    )?;
    let mut rules = Rules::new(config);
    let mut pending = Accumulator::new(config.accumulate, config.clip_value);
    let mut rng = ChaCha8Rng::seed_from_u64(config.seed);
    let mut history = Vec::new();
    let mut best: Option<BTreeMap<String, Tensor>> = None;
    let mut stopped = None;
    if config.start_from_current {
        let (on_train, on_valid) = (measure_train(model, train, config)?, model.measure(valid)?);
        if rules.start(monitored(&on_valid, monitor)?) {
            best = Some(store.snapshot()?);
        }
        history.extend(rows(
            &config.phase,
            0,
            config.lr,
            None,
            &on_train,
            &on_valid,
        ));
    }
    let bar = progress.bar(&format!("{} epochs", config.phase), config.epochs as u64);
    'epochs: for epoch in 1..=config.epochs {
        let lr = opt.lr();
        let epoch_run = train_epoch(
            model,
            &mut opt,
            &mut pending,
            &mut rng,
            train,
            config,
            epoch,
        );
        let train_loss = match epoch_run? {
            Epoch::Trained(mean_loss) => mean_loss,
            Epoch::BadLoss(what) => {
                stopped = Some(rules.bad_loss(what)?);
                break 'epochs;
            }
        };
        let on_train = measure_train(model, train, config)?;
        let on_valid = model.measure(valid)?;
        let valid_loss = on_valid
            .get(&(TOTAL.into(), "loss".into()))
            .copied()
            .unwrap_or(f64::NAN);
        let said = rules.after_epoch(epoch, monitored(&on_valid, monitor)?, valid_loss, lr);
        if said.improved {
            best = Some(store.snapshot()?);
        }
        history.extend(rows(
            &config.phase,
            epoch,
            lr,
            Some(train_loss),
            &on_train,
            &on_valid,
        ));
        bar.inc(1);
        opt.set_lr(said.next_lr);
        if let Some(why) = said.stop {
            stopped = Some(why);
            break;
        }
    }
    let (best_epoch, best_value) = match (rules.best(), best) {
        (Some((epoch, value)), Some(snapshot)) => {
            store.restore(&snapshot)?;
            (epoch, value)
        }
        _ => (0, f64::NAN),
    };
    for row in &mut history {
        row.is_best = row.epoch as usize == best_epoch;
    }
    Ok(PhaseResult {
        history,
        best_epoch,
        best_value,
        stopped,
    })
}

/// The training split's measures in evaluation mode, or none when only the batch loss is
/// kept.
fn measure_train(
    model: &dyn Trainable,
    train: &[usize],
    config: &FitConfig,
) -> Result<Measures, StageError> {
    match config.train_measures {
        TrainMeasures::Eval => model.measure(train),
        TrainMeasures::BatchLoss => Ok(Measures::new()),
    }
}

/// The monitored validation value.
fn monitored(on_valid: &Measures, monitor: &Monitor) -> Result<f64, StageError> {
    on_valid
        .get(&(monitor.subject.clone(), monitor.measure.key().to_string()))
        .copied()
        .ok_or_else(|| {
            StageError::config(format!(
                "monitor `{monitor}` is not measured (measured: {})",
                describe(on_valid)
            ))
        })
}

/// History rows of one epoch: every measure on train and validation data; the total loss's
/// `train` is the mean training-mode batch loss (`train_loss`, absent at epoch 0), and
/// `loss_eval` adds the evaluation-mode training loss for an honest train–validation gap.
fn rows(
    phase: &str,
    epoch: usize,
    lr: f64,
    train_loss: Option<f64>,
    on_train: &Measures,
    on_valid: &Measures,
) -> Vec<HistoryRow> {
    let total = (TOTAL.to_string(), "loss".to_string());
    let mut keys: Vec<&(String, String)> = on_valid.keys().chain(on_train.keys()).collect();
    keys.sort();
    keys.dedup();
    let row = |subject: &str, metric: &str, train: Option<f64>, valid: Option<f64>| HistoryRow {
        phase: phase.to_string(),
        epoch: epoch as u32,
        lr,
        subject: subject.to_string(),
        metric: metric.to_string(),
        train,
        valid,
        is_best: false,
    };
    let mut out: Vec<HistoryRow> = keys
        .into_iter()
        .map(|k| {
            row(
                &k.0,
                &k.1,
                if *k == total {
                    train_loss
                } else {
                    on_train.get(k).copied()
                },
                on_valid.get(k).copied(),
            )
        })
        .collect();
    if on_train.contains_key(&total) {
        out.push(row(
            TOTAL,
            "loss_eval",
            on_train.get(&total).copied(),
            on_valid.get(&total).copied(),
        ));
    }
    out
}

fn describe(m: &Measures) -> String {
    m.keys()
        .map(|(s, k)| format!("{s}:{k}"))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;

    use candle_core::{Device, Var};

    use super::*;
    use crate::train::settings::{ModelDefaults, Optim};

    /// One weight pulled towards 1; records which rows it was measured on.
    struct Pull {
        w: Tensor,
        measured: RefCell<Vec<Vec<usize>>>,
    }

    impl Trainable for Pull {
        fn loss(&self, _: &[usize], _: &mut Pass<'_>) -> Result<Tensor, StageError> {
            (&self.w - 1.0)
                .and_then(|d| d.sqr())
                .and_then(|d| d.sum_all())
                .map_err(err("pull"))
        }

        fn measure(&self, rows: &[usize]) -> Result<Measures, StageError> {
            self.measured.borrow_mut().push(rows.to_vec());
            let loss = scalar(&self.loss(
                rows,
                &mut Pass {
                    train: false,
                    rng: &mut ChaCha8Rng::seed_from_u64(0),
                },
            )?)?;
            Ok(Measures::from([
                ((TOTAL.into(), "loss".into()), loss),
                (("sentiment".into(), "mae".into()), loss.sqrt()),
            ]))
        }
    }

    /// `eval` measures the training split again after every epoch; `batch_loss` measures
    /// only the validation split, and the history's train column holds the batch loss alone.
    #[test]
    fn batch_loss_skips_the_second_pass_over_the_training_split() {
        let (train, valid) = ([0, 1, 2, 3], [4, 5]);
        for measures in [TrainMeasures::Eval, TrainMeasures::BatchLoss] {
            let mut store = ParamStore::new(1, &Device::Cpu);
            let pull = Pull {
                w: store.constant("w", &[1], 0.0).unwrap(),
                measured: RefCell::new(Vec::new()),
            };
            let mut config = Optim::<ModelDefaults>::default().fit_config("train", 1, false);
            config.epochs = 3;
            config.batch_size = 2;
            config.train_measures = measures;
            let run = fit(
                &pull,
                &store,
                vec![store.vars().into()],
                &train,
                &valid,
                &config,
                &Progress::hidden(),
            )
            .unwrap();
            let on_train = pull
                .measured
                .borrow()
                .iter()
                .filter(|r| **r == train)
                .count();
            let on_valid = pull
                .measured
                .borrow()
                .iter()
                .filter(|r| **r == valid)
                .count();
            assert_eq!(on_valid, 3);
            let row = |metric: &str| run.history.iter().find(|r| r.metric == metric);
            assert!(row("loss").unwrap().train.is_some());
            assert!(row("mae").unwrap().valid.is_some());
            match measures {
                TrainMeasures::Eval => {
                    assert_eq!(on_train, 3);
                    assert!(row("mae").unwrap().train.is_some());
                    assert!(row("loss_eval").is_some());
                }
                TrainMeasures::BatchLoss => {
                    assert_eq!(on_train, 0);
                    assert_eq!(row("mae").unwrap().train, None);
                    assert!(row("loss_eval").is_none());
                }
            }
        }
    }

    /// Gradients are summed over `every` batches (nothing stepped before), each running sum is
    /// clipped after every batch, and the sum starts over after a step.
    #[test]
    fn gradients_are_summed_and_clipped_between_steps() {
        let w = Var::from_vec(vec![0f32; 3], 3, &Device::Cpu).unwrap();
        let opt = AdamW::new(vec![w.clone()], AdamWConfig::new(0.1, 0.0)).unwrap();
        let grads_of = |c: [f32; 3]| {
            let c = Tensor::new(&c, &Device::Cpu).unwrap();
            w.as_tensor()
                .mul(&c)
                .unwrap()
                .sum_all()
                .unwrap()
                .backward()
                .unwrap()
        };
        let mut pending = Accumulator::new(2, Some(1.0));
        let values = |g: &GradStore| -> Vec<f32> { g.get(&w).unwrap().to_vec1().unwrap() };
        assert!(pending
            .add(grads_of([0.5, -0.75, 2.0]), &opt)
            .unwrap()
            .is_none());
        // The first sum is clipped to [0.5, -0.75, 1.0] before the second batch is added.
        let summed = pending
            .add(grads_of([0.25, -0.5, -0.5]), &opt)
            .unwrap()
            .unwrap();
        assert_eq!(values(&summed), [0.75, -1.0, 0.5]);
        assert!(pending
            .add(grads_of([0.1, 0.1, 0.1]), &opt)
            .unwrap()
            .is_none());
        let next = pending
            .add(grads_of([0.1, 0.1, 0.1]), &opt)
            .unwrap()
            .unwrap();
        assert_eq!(values(&next), [0.2, 0.2, 0.2]);
        let mut every = Accumulator::new(1, None);
        let once = every
            .add(grads_of([3.0, 0.0, -3.0]), &opt)
            .unwrap()
            .unwrap();
        assert_eq!(values(&once), [3.0, 0.0, -3.0]);
    }
}
