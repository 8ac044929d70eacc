//! The rules a training phase follows between batches and between epochs, apart from any
//! model: which epoch's weights are the best so far, what a NaN or infinite batch loss does,
//! when patience runs out, and the learning rate of the next epoch (the [`Scheduler`]).
//! [`super::fit::fit`] asks them and does what they say; the table test below checks them
//! with no model at all.

use mmflow_pipeline::StageError;

use super::optim::Scheduler;
use super::settings::{FitConfig, Monitor, OnNan};

/// The state of the rules over one phase.
pub struct Rules {
    monitor: Monitor,
    patience: usize,
    on_nan: OnNan,
    scheduler: Scheduler,
    /// The best epoch so far and its monitored value.
    best: Option<(usize, f64)>,
    /// Epochs since the best one.
    since_best: usize,
}

/// What the rules say after an epoch.
#[derive(Debug, Clone, PartialEq)]
pub struct AfterEpoch {
    /// The epoch is the best so far: keep its weights.
    pub improved: bool,
    /// The learning rate of the next epoch.
    pub next_lr: f64,
    /// Training ends here, and why.
    pub stop: Option<String>,
}

impl Rules {
    /// The rules of a phase configured by `config`.
    pub fn new(config: &FitConfig) -> Rules {
        Rules {
            monitor: config.monitor.clone(),
            patience: config.patience,
            on_nan: config.on_nan,
            scheduler: Scheduler::new(
                config.schedule,
                config.lr,
                config.plateau_factor,
                config.plateau_patience,
                config.epochs,
            ),
            best: None,
            since_best: 0,
        }
    }

    /// The best epoch so far (0: the starting weights) and its monitored value.
    pub fn best(&self) -> Option<(usize, f64)> {
        self.best
    }

    /// The starting weights measured as epoch 0 (fine-tuning): kept as the best unless an
    /// epoch beats them, when their monitored value is finite.
    pub fn start(&mut self, value: f64) -> bool {
        let keep = value.is_finite();
        if keep {
            self.best = Some((0, value));
        }
        keep
    }

    /// A batch's loss that is NaN or infinite (`what` says which, where): training stops
    /// keeping the best epoch so far (`Ok`, the reason) when `on_nan` is `stop` and an epoch
    /// is worth keeping; otherwise the phase fails.
    pub fn bad_loss(&self, what: String) -> Result<String, StageError> {
        match (self.on_nan, self.best) {
            (OnNan::Stop, Some((epoch, _))) => {
                tracing::error!("{what}: training stopped, keeping the weights of epoch {epoch}");
                Ok(what)
            }
            _ => Err(StageError::input(format!(
                "{what}: no good epoch to keep; lower the learning rate or check the inputs for extreme values"
            ))),
        }
    }

    /// After `epoch` (1-based) trained at `lr`: whether it is the best so far by the monitored
    /// validation `value`, the next learning rate (the schedule reads the validation loss),
    /// and whether patience has run out.
    pub fn after_epoch(
        &mut self,
        epoch: usize,
        value: f64,
        valid_loss: f64,
        lr: f64,
    ) -> AfterEpoch {
        let improved = match self.best {
            None => value.is_finite(),
            Some((_, best)) => self.monitor.measure.direction().better(value, best),
        };
        if improved {
            self.best = Some((epoch, value));
            self.since_best = 0;
        } else {
            self.since_best += 1;
        }
        let next_lr = self.scheduler.next(epoch, valid_loss, lr);
        let stop = (self.patience > 0 && self.since_best >= self.patience).then(|| {
            format!(
                "early stopping after epoch {epoch}: no improvement of {} for {} epochs",
                self.monitor, self.patience
            )
        });
        AfterEpoch {
            improved,
            next_lr,
            stop,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train::optim::Schedule;
    use crate::train::settings::TrainMeasures;

    fn config(monitor: &str, patience: usize, schedule: Schedule, on_nan: OnNan) -> FitConfig {
        FitConfig {
            phase: "train".into(),
            epochs: 10,
            batch_size: 8,
            lr: 1.0,
            weight_decay: 0.0,
            optimizer: crate::train::optim::Optimizer::Adamw,
            grad_clip: None,
            clip_value: None,
            accumulate: 1,
            patience,
            schedule,
            plateau_factor: 0.5,
            plateau_patience: 1,
            on_nan,
            monitor: monitor.parse().unwrap(),
            train_measures: TrainMeasures::Eval,
            seed: 1,
            start_from_current: false,
        }
    }

    /// One epoch of a table: its monitored value and validation loss → improved, the best
    /// epoch after it, the next learning rate, whether training stops.
    type Row = (f64, f64, bool, Option<usize>, f64, bool);

    fn check(rules: &mut Rules, table: &[Row]) {
        let mut lr = 1.0;
        for (i, &(value, loss, improved, best, next_lr, stops)) in table.iter().enumerate() {
            let epoch = i + 1;
            let said = rules.after_epoch(epoch, value, loss, lr);
            assert_eq!(said.improved, improved, "epoch {epoch}: {said:?}");
            assert_eq!(rules.best().map(|b| b.0), best, "epoch {epoch}");
            assert_eq!(said.next_lr, next_lr, "epoch {epoch}: {said:?}");
            assert_eq!(said.stop.is_some(), stops, "epoch {epoch}: {said:?}");
            lr = said.next_lr;
        }
    }

    #[test]
    fn a_lower_loss_is_best_and_patience_stops_after_as_many_epochs_without_one() {
        let mut rules = Rules::new(&config("loss", 2, Schedule::Constant, OnNan::Stop));
        check(
            &mut rules,
            &[
                (1.0, 1.0, true, Some(1), 1.0, false),
                (0.8, 0.8, true, Some(2), 1.0, false),
                // Equal is not better.
                (0.8, 0.8, false, Some(2), 1.0, false),
                (0.9, 0.9, false, Some(2), 1.0, true),
            ],
        );
    }

    #[test]
    fn a_higher_correlation_is_best_and_nan_never_is() {
        let mut rules = Rules::new(&config(
            "sentiment:corr",
            0,
            Schedule::Constant,
            OnNan::Stop,
        ));
        check(
            &mut rules,
            &[
                // A first epoch measured NaN is not kept.
                (f64::NAN, 1.0, false, None, 1.0, false),
                (0.2, 1.0, true, Some(2), 1.0, false),
                (f64::NAN, 1.0, false, Some(2), 1.0, false),
                (0.1, 1.0, false, Some(2), 1.0, false),
                (0.3, 1.0, true, Some(5), 1.0, false),
            ],
        );
    }

    #[test]
    fn the_plateau_schedule_follows_the_validation_loss_not_the_monitor() {
        let mut rules = Rules::new(&config("sentiment:corr", 0, Schedule::Plateau, OnNan::Stop));
        check(
            &mut rules,
            &[
                (0.1, 1.0, true, Some(1), 1.0, false),
                (0.2, 1.0, true, Some(2), 1.0, false),
                // The loss has not improved for more than plateau_patience (1) epochs.
                (0.3, 1.0, true, Some(3), 0.5, false),
                (0.2, 0.5, false, Some(3), 0.5, false),
            ],
        );
    }

    #[test]
    fn the_starting_weights_are_kept_unless_an_epoch_beats_them() {
        let mut rules = Rules::new(&config("loss", 1, Schedule::Constant, OnNan::Stop));
        assert!(rules.start(0.5));
        check(&mut rules, &[(0.6, 0.6, false, Some(0), 1.0, true)]);
        let mut rules = Rules::new(&config("loss", 0, Schedule::Constant, OnNan::Stop));
        assert!(!rules.start(f64::NAN));
        assert_eq!(rules.best(), None);
    }

    #[test]
    fn a_bad_loss_stops_with_a_best_epoch_and_fails_without_one_or_when_asked() {
        let what = || "NaN loss at epoch 2, batch 1".to_string();
        let mut rules = Rules::new(&config("loss", 0, Schedule::Constant, OnNan::Stop));
        let error = rules.bad_loss(what()).unwrap_err().to_string();
        assert!(error.contains("no good epoch to keep"), "{error}");
        rules.after_epoch(1, 1.0, 1.0, 1.0);
        assert_eq!(rules.bad_loss(what()).unwrap(), what());
        let mut rules = Rules::new(&config("loss", 0, Schedule::Constant, OnNan::Fail));
        rules.after_epoch(1, 1.0, 1.0, 1.0);
        assert!(rules.bad_loss(what()).is_err());
    }
}
