//! The field's metrics, computed exactly as the tools report them.
//!
//! A sentiment head gets one of MMSA's two families of regression metrics
//! (`src/MMSA/utils/metricsTop.py`), chosen like MMSA chooses them, by dataset
//! ([`MetricFamily`]):
//!
//! - [`MetricFamily::Mosi`], for sentiment in [-3, 3] (MOSI, MOSEI; `__eval_mosi_regression`):
//!   `Has0_acc_2`/`Has0_F1_score` compare `>= 0`; `Non0_acc_2`/`Non0_F1_score` drop zero labels
//!   and compare `> 0`; F1 is scikit-learn's support-weighted F1; `Mult_acc_5`/`Mult_acc_7`
//!   clip to [-2, 2]/[-3, 3] and compare values rounded half to even (numpy's `round`); `MAE`;
//!   `Corr` is Pearson's r. Plus `MSE`, `RMSE` and `CCC` (Lin's concordance).
//! - [`MetricFamily::Sims`], for sentiment in [-1, 1] (CH-SIMS, CH-SIMS v2;
//!   `__eval_sims_regression`): predictions and labels clipped to [-1, 1], then binned by
//!   `lower < v <= upper` between the boundaries `[-1.01, 0, 1.01]` (`Mult_acc_2`: zero is
//!   negative), `[-1.01, -0.1, 0.1, 1.01]` (`Mult_acc_3`) and
//!   `[-1.01, -0.7, -0.1, 0.1, 0.7, 1.01]` (`Mult_acc_5`); `F1_score` is the weighted F1 of the
//!   two classes; `MAE` and `Corr` of the clipped values. MMSA gets float32 tensors, and numpy
//!   compares a float32 array with a Python float in float32, so the bins compare `v as f32`
//!   with the boundary as `f32` (a prediction of `0.1f32` is neutral, as in MMSA, although it
//!   is above 0.1 as a double); its `MAE` is numpy's float32 mean (pairwise float32 sum) and is
//!   reproduced as such. These six share MMSA's names with the MOSI family's `MAE`, `Corr` and
//!   `Mult_acc_5` in metrics tables but are distinct [`Metric`]s (`SimsMae`, …): which one a
//!   table holds is told by the family's other names (`Mult_acc_2`).
//!
//! MMSA rounds the MOSI family to 4 decimals; these are not rounded.
//!
//! Follows MMSA 2.2.1 (thuiar/MMSA, tag `v_2.2.1`, commit
//! `48bb237542812a36e624a960770a8927173d8c08`, the release on PyPI):
//! `src/MMSA/utils/metricsTop.py`, `MetricsTop.__eval_mosei_regression` (which
//! `__eval_mosi_regression` calls) and `MetricsTop.__eval_sims_regression`. Golden tests: the
//! functions run by numpy and scikit-learn (`tests/data/metrics/`, and the cases below).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::datasets::{KnownDataset, EMOTIONS, SENTIMENT, SIMS_MODALITY_SENTIMENTS};

/// Which way a metric improves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Larger is better (accuracies, F1, correlations).
    HigherIsBetter,
    /// Smaller is better (errors, losses).
    LowerIsBetter,
}

impl Direction {
    /// True if `a` is strictly better than `b` in this direction.
    pub fn better(self, a: f64, b: f64) -> bool {
        match self {
            Direction::HigherIsBetter => a > b,
            Direction::LowerIsBetter => a < b,
        }
    }
}

/// One of the field's metrics of predictions against labels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Metric {
    /// Binary accuracy, zero counted positive (`>= 0`).
    Has0Acc2,
    /// Support-weighted F1 of the same classes.
    Has0F1,
    /// Binary accuracy on non-zero labels (`> 0`).
    Non0Acc2,
    /// Support-weighted F1 of the same classes.
    Non0F1,
    /// 5-class accuracy: clipped to [-2, 2], rounded half to even.
    MultAcc5,
    /// 7-class accuracy: clipped to [-3, 3], rounded half to even.
    MultAcc7,
    /// Mean absolute error.
    Mae,
    /// Mean squared error.
    Mse,
    /// Root mean squared error.
    Rmse,
    /// Pearson's correlation.
    Corr,
    /// Lin's concordance correlation coefficient.
    Ccc,
    /// CH-SIMS 2-class accuracy (MMSA's `Mult_acc_2`): clipped to [-1, 1], negative
    /// `[-1, 0]` against positive `(0, 1]`.
    SimsAcc2,
    /// CH-SIMS 3-class accuracy (`Mult_acc_3`): `[-1, -0.1]`, `(-0.1, 0.1]`, `(0.1, 1]`.
    SimsAcc3,
    /// CH-SIMS 5-class accuracy (`Mult_acc_5`): `[-1, -0.7]`, `(-0.7, -0.1]`, `(-0.1, 0.1]`,
    /// `(0.1, 0.7]`, `(0.7, 1]`.
    SimsAcc5,
    /// Support-weighted F1 of the CH-SIMS 2 classes (`F1_score`).
    SimsF1,
    /// Mean absolute error after clipping to [-1, 1], in float32 as numpy computes it (`MAE`).
    SimsMae,
    /// Pearson's correlation after clipping to [-1, 1] (`Corr`).
    SimsCorr,
}

impl Metric {
    /// Every metric: the MOSI family's, then the SIMS family's.
    pub const ALL: [Metric; 17] = [
        Metric::Has0Acc2,
        Metric::Has0F1,
        Metric::Non0Acc2,
        Metric::Non0F1,
        Metric::MultAcc5,
        Metric::MultAcc7,
        Metric::Mae,
        Metric::Corr,
        Metric::Mse,
        Metric::Rmse,
        Metric::Ccc,
        Metric::SimsAcc2,
        Metric::SimsAcc3,
        Metric::SimsAcc5,
        Metric::SimsF1,
        Metric::SimsMae,
        Metric::SimsCorr,
    ];

    /// Its name in metrics tables (MMSA's spelling for MMSA's metrics: the SIMS family's `MAE`,
    /// `Corr` and `Mult_acc_5` are named like the MOSI family's).
    pub fn name(self) -> &'static str {
        match self {
            Metric::Has0Acc2 => "Has0_acc_2",
            Metric::Has0F1 => "Has0_F1_score",
            Metric::Non0Acc2 => "Non0_acc_2",
            Metric::Non0F1 => "Non0_F1_score",
            Metric::MultAcc5 => "Mult_acc_5",
            Metric::MultAcc7 => "Mult_acc_7",
            Metric::Mae => "MAE",
            Metric::Mse => "MSE",
            Metric::Rmse => "RMSE",
            Metric::Corr => "Corr",
            Metric::Ccc => "CCC",
            Metric::SimsAcc2 => "Mult_acc_2",
            Metric::SimsAcc3 => "Mult_acc_3",
            Metric::SimsAcc5 => "Mult_acc_5",
            Metric::SimsF1 => "F1_score",
            Metric::SimsMae => "MAE",
            Metric::SimsCorr => "Corr",
        }
    }

    /// A metric a metrics table names `name`: for a name both families use (`MAE`, `Corr`,
    /// `Mult_acc_5`), the MOSI family's, which improves the same way
    /// ([`MetricFamily::metric_named`] tells them apart).
    pub fn from_name(name: &str) -> Option<Metric> {
        Metric::ALL.into_iter().find(|m| m.name() == name)
    }

    /// Its name in training histories and `monitor` settings (lower case: `acc2`, `mae`, …).
    pub fn key(self) -> &'static str {
        match self {
            Metric::Has0Acc2 => "acc2",
            Metric::Has0F1 => "f1",
            Metric::Non0Acc2 => "non0_acc2",
            Metric::Non0F1 => "non0_f1",
            Metric::MultAcc5 => "acc5",
            Metric::MultAcc7 => "acc7",
            Metric::Mae => "mae",
            Metric::Mse => "mse",
            Metric::Rmse => "rmse",
            Metric::Corr => "corr",
            Metric::Ccc => "ccc",
            Metric::SimsAcc2 => "sims_acc2",
            Metric::SimsAcc3 => "sims_acc3",
            Metric::SimsAcc5 => "sims_acc5",
            Metric::SimsF1 => "sims_f1",
            Metric::SimsMae => "sims_mae",
            Metric::SimsCorr => "sims_corr",
        }
    }

    /// The metric whose [`Metric::key`] is `key`.
    pub fn from_key(key: &str) -> Option<Metric> {
        Metric::ALL.into_iter().find(|m| m.key() == key)
    }

    /// Which way it improves.
    pub fn direction(self) -> Direction {
        match self {
            Metric::Mae | Metric::Mse | Metric::Rmse | Metric::SimsMae => Direction::LowerIsBetter,
            _ => Direction::HigherIsBetter,
        }
    }

    /// The metric of predictions `p` against truths `y` (NaN when undefined, e.g. a
    /// correlation with constant predictions or an accuracy on no sample).
    pub fn compute(self, p: &[f64], y: &[f64]) -> f64 {
        match self {
            Metric::Has0Acc2 => accuracy(p.iter().map(|&v| v >= 0.0), y.iter().map(|&v| v >= 0.0)),
            Metric::Has0F1 => weighted_f1(
                &y.iter().map(|&v| v >= 0.0).collect::<Vec<_>>(),
                &p.iter().map(|&v| v >= 0.0).collect::<Vec<_>>(),
            ),
            Metric::Non0Acc2 | Metric::Non0F1 => {
                let keep: Vec<usize> = (0..y.len()).filter(|&i| y[i] != 0.0).collect();
                let truth: Vec<bool> = keep.iter().map(|&i| y[i] > 0.0).collect();
                let preds: Vec<bool> = keep.iter().map(|&i| p[i] > 0.0).collect();
                if self == Metric::Non0Acc2 {
                    accuracy(preds.iter().copied(), truth.iter().copied())
                } else {
                    weighted_f1(&truth, &preds)
                }
            }
            Metric::MultAcc5 => class_accuracy(p, y, 2.0),
            Metric::MultAcc7 => class_accuracy(p, y, 3.0),
            Metric::Mae => mean(p.iter().zip(y).map(|(a, b)| (a - b).abs())),
            Metric::Mse => mean(p.iter().zip(y).map(|(a, b)| (a - b) * (a - b))),
            Metric::Rmse => mean(p.iter().zip(y).map(|(a, b)| (a - b) * (a - b))).sqrt(),
            Metric::Corr => crate::stats::pearson(p, y).unwrap_or(f64::NAN),
            Metric::Ccc => ccc(p, y),
            Metric::SimsAcc2 => sims_class_accuracy(p, y, &SIMS_BOUNDS_2),
            Metric::SimsAcc3 => sims_class_accuracy(p, y, &SIMS_BOUNDS_3),
            Metric::SimsAcc5 => sims_class_accuracy(p, y, &SIMS_BOUNDS_5),
            Metric::SimsF1 => sims_f1(p, y),
            Metric::SimsMae => sims_mae(p, y),
            Metric::SimsCorr => {
                let (pc, yc): (Vec<f64>, Vec<f64>) = p
                    .iter()
                    .zip(y)
                    .map(|(&a, &b)| (f64::from(sims_clip(a)), f64::from(sims_clip(b))))
                    .unzip();
                crate::stats::pearson(&pc, &yc).unwrap_or(f64::NAN)
            }
        }
    }
}

/// Which of MMSA's families of regression metrics a sentiment head gets; MMSA picks it by
/// dataset (`MetricsTop.getMetics`).
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Default,
    Serialize,
    Deserialize,
    JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum MetricFamily {
    /// `__eval_mosi_regression` (MOSI, MOSEI: sentiment in [-3, 3]), plus MSE, RMSE and CCC.
    #[default]
    Mosi,
    /// `__eval_sims_regression` (CH-SIMS, CH-SIMS v2: sentiment in [-1, 1]).
    Sims,
}

impl MetricFamily {
    /// The family MMSA uses for a dataset named `name`: `sims` for CH-SIMS and CH-SIMS v2,
    /// `mosi` for any other.
    pub fn of_dataset(name: &str) -> MetricFamily {
        match KnownDataset::named(name) {
            Some(KnownDataset::Sims | KnownDataset::SimsV2) => MetricFamily::Sims,
            Some(KnownDataset::Mosi | KnownDataset::Mosei) | None => MetricFamily::Mosi,
        }
    }

    /// The family of a metrics table's sentiment head, told by the metrics it holds: only the
    /// SIMS family has `Mult_acc_2`.
    pub fn of_metrics<'a>(mut names: impl Iterator<Item = &'a str>) -> MetricFamily {
        if names.any(|n| n == Metric::SimsAcc2.name()) {
            MetricFamily::Sims
        } else {
            MetricFamily::Mosi
        }
    }

    /// The metrics evaluation computes for a sentiment head, in report order.
    pub fn sentiment_metrics(self) -> &'static [Metric] {
        match self {
            MetricFamily::Mosi => &[
                Metric::Has0Acc2,
                Metric::Has0F1,
                Metric::Non0Acc2,
                Metric::Non0F1,
                Metric::MultAcc5,
                Metric::MultAcc7,
                Metric::Mae,
                Metric::Corr,
                Metric::Mse,
                Metric::Rmse,
                Metric::Ccc,
            ],
            MetricFamily::Sims => &[
                Metric::SimsAcc2,
                Metric::SimsAcc3,
                Metric::SimsAcc5,
                Metric::SimsF1,
                Metric::SimsMae,
                Metric::SimsCorr,
            ],
        }
    }

    /// The family MMSA would use for rows of `datasets`: theirs when they agree, else (a mix,
    /// or none) the MOSI family; the flag says whether the datasets mixed both families.
    pub fn of_datasets<'a>(datasets: impl IntoIterator<Item = &'a String>) -> (MetricFamily, bool) {
        let families: std::collections::BTreeSet<MetricFamily> = datasets
            .into_iter()
            .map(|d| MetricFamily::of_dataset(d))
            .collect();
        match families.into_iter().collect::<Vec<_>>()[..] {
            [one] => (one, false),
            [] => (MetricFamily::default(), false),
            _ => (MetricFamily::Mosi, true),
        }
    }

    /// The metric of this family a metrics table names `name`.
    pub fn metric_named(self, name: &str) -> Option<Metric> {
        self.sentiment_metrics()
            .iter()
            .copied()
            .find(|m| m.name() == name)
    }
}

/// What a head predicts; it decides the head's metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Predicts {
    /// Sentiment polarity (MOSI and MOSEI in [-3, 3], CH-SIMS in [-1, 1]): MMSA's regression
    /// metrics of the dataset's [`MetricFamily`].
    Sentiment,
    /// An emotion's intensity in [0, 3] (MOSEI's six emotions).
    Emotion,
    /// A continuous affect dimension such as valence or arousal.
    Dimension,
}

impl Predicts {
    /// What a label column predicts when the config does not say: `sentiment` and CH-SIMS's
    /// per-modality `sentiment_T`/`sentiment_A`/`sentiment_V` are sentiment, MOSEI's six
    /// emotions are emotions, anything else (`valence`, `arousal`, …) a dimension.
    pub fn of_label(label: &str) -> Predicts {
        if label == SENTIMENT || SIMS_MODALITY_SENTIMENTS.contains(&label) {
            Predicts::Sentiment
        } else if EMOTIONS.contains(&label) {
            Predicts::Emotion
        } else {
            Predicts::Dimension
        }
    }

    /// The metrics evaluation computes, in report order (a sentiment head's are its family's).
    pub fn metrics(self, family: MetricFamily) -> &'static [Metric] {
        match self {
            Predicts::Sentiment => family.sentiment_metrics(),
            Predicts::Emotion | Predicts::Dimension => {
                &[Metric::Ccc, Metric::Corr, Metric::Rmse, Metric::Mae]
            }
        }
    }

    /// The metrics measured on train and validation data after every epoch (history rows,
    /// what `monitor` can pick): a sentiment head's MAE, correlation and 2-class accuracy are
    /// its family's (CH-SIMS's clipped ones on CH-SIMS data).
    pub fn training_metrics(self, family: MetricFamily) -> &'static [Metric] {
        match (self, family) {
            (Predicts::Sentiment, MetricFamily::Mosi) => &[
                Metric::Mae,
                Metric::Rmse,
                Metric::Corr,
                Metric::Ccc,
                Metric::Has0Acc2,
            ],
            (Predicts::Sentiment, MetricFamily::Sims) => &[
                Metric::SimsMae,
                Metric::Rmse,
                Metric::SimsCorr,
                Metric::Ccc,
                Metric::SimsAcc2,
            ],
            (Predicts::Emotion | Predicts::Dimension, _) => {
                &[Metric::Mae, Metric::Rmse, Metric::Corr, Metric::Ccc]
            }
        }
    }

    /// The metrics a comparison shows when none are asked for.
    pub fn headline_metrics(self, family: MetricFamily) -> &'static [Metric] {
        match (self, family) {
            (Predicts::Sentiment, MetricFamily::Sims) => family.sentiment_metrics(),
            (Predicts::Sentiment, MetricFamily::Mosi) => &[
                Metric::Has0Acc2,
                Metric::Non0Acc2,
                Metric::MultAcc7,
                Metric::Mae,
                Metric::Corr,
                Metric::Ccc,
            ],
            (Predicts::Emotion | Predicts::Dimension, _) => &[Metric::Ccc, Metric::Rmse],
        }
    }

    /// True for heads whose CCC joins the `mean` subject (the average over the continuous
    /// affect heads, e.g. valence and arousal).
    pub fn joins_mean(self) -> bool {
        self != Predicts::Sentiment
    }

    /// What a metrics table's head `label` predicts, read from the metrics it holds: only a
    /// sentiment head has MMSA's accuracies (`Has0_acc_2` or `Mult_acc_2`); without them, as
    /// its name says.
    pub fn of_metrics<'a>(label: &str, mut names: impl Iterator<Item = &'a str>) -> Predicts {
        if names.any(|n| n == Metric::Has0Acc2.name() || n == Metric::SimsAcc2.name()) {
            Predicts::Sentiment
        } else {
            match Predicts::of_label(label) {
                Predicts::Sentiment => Predicts::Dimension,
                other => other,
            }
        }
    }
}

/// What a calibrated metric's name adds to the metric's (`MAE_calibrated`).
pub const CALIBRATED_SUFFIX: &str = "_calibrated";

/// The subject of the average CCC over a model's continuous affect heads.
pub const MEAN_SUBJECT: &str = "mean";

fn mean(values: impl Iterator<Item = f64>) -> f64 {
    let (sum, n) = values.fold((0.0, 0usize), |(s, n), v| (s + v, n + 1));
    if n == 0 {
        f64::NAN
    } else {
        sum / n as f64
    }
}

fn accuracy(preds: impl Iterator<Item = bool>, truth: impl Iterator<Item = bool>) -> f64 {
    mean(preds.zip(truth).map(|(a, b)| f64::from(u8::from(a == b))))
}

/// `np.sum(np.round(clip(p)) == np.round(clip(y))) / len(y)`; numpy rounds half to even.
fn class_accuracy(p: &[f64], y: &[f64], bound: f64) -> f64 {
    mean(p.iter().zip(y).map(|(a, b)| {
        let ra = a.clamp(-bound, bound).round_ties_even();
        let rb = b.clamp(-bound, bound).round_ties_even();
        f64::from(u8::from(ra == rb))
    }))
}

/// MMSA's CH-SIMS class boundaries (`ms_2`, `ms_3`, `ms_5`): class `i` is
/// `bounds[i] < v <= bounds[i + 1]`, compared in float32.
const SIMS_BOUNDS_2: [f32; 3] = [-1.01, 0.0, 1.01];
const SIMS_BOUNDS_3: [f32; 4] = [-1.01, -0.1, 0.1, 1.01];
const SIMS_BOUNDS_5: [f32; 6] = [-1.01, -0.7, -0.1, 0.1, 0.7, 1.01];

/// `np.clip(v, -1., 1.)` of a float32 value (NaN stays NaN).
fn sims_clip(v: f64) -> f32 {
    (v as f32).clamp(-1.0, 1.0)
}

/// The class MMSA's loop assigns to a clipped value; None for NaN, which no bin holds (MMSA
/// leaves it NaN, equal to nothing).
fn sims_class(v: f32, bounds: &[f32]) -> Option<usize> {
    bounds.windows(2).position(|b| v > b[0] && v <= b[1])
}

/// `__multiclass_acc` of the binned clipped values: the share of equal classes.
fn sims_class_accuracy(p: &[f64], y: &[f64], bounds: &[f32]) -> f64 {
    mean(p.iter().zip(y).map(|(&a, &b)| {
        let (ca, cb) = (
            sims_class(sims_clip(a), bounds),
            sims_class(sims_clip(b), bounds),
        );
        f64::from(u8::from(ca.is_some() && ca == cb))
    }))
}

/// `f1_score(truth_a2, preds_a2, average="weighted")`; NaN where a value is NaN (scikit-learn
/// refuses NaN input).
fn sims_f1(p: &[f64], y: &[f64]) -> f64 {
    let positive = |v: f64| sims_class(sims_clip(v), &SIMS_BOUNDS_2).map(|c| c == 1);
    let preds: Option<Vec<bool>> = p.iter().map(|&v| positive(v)).collect();
    let truth: Option<Vec<bool>> = y.iter().map(|&v| positive(v)).collect();
    match (truth, preds) {
        (Some(truth), Some(preds)) => weighted_f1(&truth, &preds),
        _ => f64::NAN,
    }
}

/// `np.mean(np.absolute(p - y))` of the clipped float32 arrays: float32 differences, numpy's
/// pairwise float32 sum, then the sum divided by the count in float64 and rounded to float32.
fn sims_mae(p: &[f64], y: &[f64]) -> f64 {
    let diffs: Vec<f32> = p
        .iter()
        .zip(y)
        .map(|(&a, &b)| (sims_clip(a) - sims_clip(b)).abs())
        .collect();
    if diffs.is_empty() {
        return f64::NAN;
    }
    let sum = 0.0f32 + numpy_pairwise_sum(&diffs);
    f64::from((f64::from(sum) / diffs.len() as f64) as f32)
}

/// numpy's `pairwise_sum` of float32 values (`loops_utils.h`): below 8 values a plain loop;
/// up to 128, eight running sums combined as `((r0 + r1) + (r2 + r3)) + ((r4 + r5) + (r6 +
/// r7))` and the rest added in order; above, the two halves (the first a multiple of 8)
/// summed separately.
fn numpy_pairwise_sum(a: &[f32]) -> f32 {
    let n = a.len();
    if n < 8 {
        a.iter().fold(0.0f32, |s, &v| s + v)
    } else if n <= 128 {
        let mut r = [0.0f32; 8];
        r.copy_from_slice(&a[..8]);
        let whole = n - n % 8;
        for block in a[8..whole].chunks_exact(8) {
            for (acc, &v) in r.iter_mut().zip(block) {
                *acc += v;
            }
        }
        let head = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]));
        a[whole..].iter().fold(head, |s, &v| s + v)
    } else {
        let half = n / 2;
        let half = half - half % 8;
        numpy_pairwise_sum(&a[..half]) + numpy_pairwise_sum(&a[half..])
    }
}

/// scikit-learn's `f1_score(truth, preds, average="weighted")` for boolean labels.
pub fn weighted_f1(truth: &[bool], preds: &[bool]) -> f64 {
    if truth.is_empty() {
        return f64::NAN;
    }
    let mut total = 0.0;
    let mut support_sum = 0.0;
    for label in [false, true] {
        let present = truth.contains(&label) || preds.contains(&label);
        if !present {
            continue;
        }
        let (mut tp, mut fp, mut fn_) = (0.0, 0.0, 0.0);
        for (&t, &p) in truth.iter().zip(preds) {
            match (p == label, t == label) {
                (true, true) => tp += 1.0,
                (true, false) => fp += 1.0,
                (false, true) => fn_ += 1.0,
                _ => {}
            }
        }
        let precision = if tp + fp > 0.0 { tp / (tp + fp) } else { 0.0 };
        let recall = if tp + fn_ > 0.0 { tp / (tp + fn_) } else { 0.0 };
        let f1 = if precision + recall > 0.0 {
            2.0 * precision * recall / (precision + recall)
        } else {
            0.0
        };
        let support = tp + fn_;
        total += f1 * support;
        support_sum += support;
    }
    if support_sum > 0.0 {
        total / support_sum
    } else {
        0.0
    }
}

/// Lin's concordance correlation coefficient (population moments).
pub fn ccc(p: &[f64], y: &[f64]) -> f64 {
    let n = p.len().min(y.len());
    if n == 0 {
        return f64::NAN;
    }
    let mp = p.iter().sum::<f64>() / n as f64;
    let my = y.iter().sum::<f64>() / n as f64;
    let (mut vp, mut vy, mut cov) = (0.0, 0.0, 0.0);
    for i in 0..n {
        vp += (p[i] - mp) * (p[i] - mp);
        vy += (y[i] - my) * (y[i] - my);
        cov += (p[i] - mp) * (y[i] - my);
    }
    let (vp, vy, cov) = (vp / n as f64, vy / n as f64, cov / n as f64);
    let denominator = vp + vy + (mp - my) * (mp - my);
    if denominator > 0.0 {
        2.0 * cov / denominator
    } else {
        f64::NAN
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    /// Reference: MMSA's `__eval_mosi_regression` body, run with numpy 2.x and scikit-learn:
    /// ```python
    /// p = np.array([2.3, -0.4, 0.0, 1.5, -2.6, 0.49, -1.51, 2.5, 0.2, -0.2])
    /// y = np.array([2.0, -1.0, 0.0, 0.5, -3.0, 1.0, -1.5, 3.0, 0.0, 0.4])
    /// nz = np.array([i for i, e in enumerate(y) if e != 0])
    /// accuracy_score(p >= 0, y >= 0)                       # 0.9
    /// f1_score(y >= 0, p >= 0, average="weighted")         # 0.9032967032967033
    /// accuracy_score(p[nz] > 0, y[nz] > 0)                 # 0.875
    /// f1_score(y[nz] > 0, p[nz] > 0, average="weighted")   # 0.876984126984127
    /// mc(np.clip(p, -2, 2), np.clip(y, -2, 2))             # 0.7  (mc = np.round equality)
    /// mc(np.clip(p, -3, 3), np.clip(y, -3, 3))             # 0.6
    /// np.mean(np.abs(p - y)), np.mean((p - y) ** 2)        # 0.412, 0.25202
    /// np.corrcoef(p, y)[0][1]                              # 0.9530598036159572
    /// 2 * cov / (p.var() + y.var() + (p.mean() - y.mean()) ** 2)   # 0.9489132770342864
    /// ```
    #[test]
    fn mmsa_metrics_match_numpy_and_sklearn() {
        let p = [2.3, -0.4, 0.0, 1.5, -2.6, 0.49, -1.51, 2.5, 0.2, -0.2];
        let y = [2.0, -1.0, 0.0, 0.5, -3.0, 1.0, -1.5, 3.0, 0.0, 0.4];
        let want = [
            ("Has0_acc_2", 0.9),
            ("Has0_F1_score", 0.903_296_703_296_703_3),
            ("Non0_acc_2", 0.875),
            ("Non0_F1_score", 0.876_984_126_984_127),
            ("Mult_acc_5", 0.7),
            ("Mult_acc_7", 0.6),
            ("MAE", 0.412),
            ("MSE", 0.252_02),
            ("RMSE", 0.252_02f64.sqrt()),
            ("Corr", 0.953_059_803_615_957_2),
            ("CCC", 0.948_913_277_034_286_4),
        ];
        for (name, value) in want {
            let got = Metric::from_name(name).unwrap().compute(&p, &y);
            assert!((got - value).abs() < 1e-9, "{name}: {got} vs {value}");
        }
        assert_eq!(MetricFamily::Mosi.sentiment_metrics().len(), want.len());
    }

    /// One case of `tests/data/metrics/sims_golden.json`: MMSA's `__eval_sims_regression` run
    /// by `sims_golden.py` on float32 predictions and labels (NaN written as null).
    #[derive(Deserialize)]
    struct GoldenCase {
        name: String,
        pred: Vec<f64>,
        truth: Vec<f64>,
        metrics: BTreeMap<String, Option<f64>>,
    }

    #[derive(Deserialize)]
    struct Golden {
        cases: Vec<GoldenCase>,
    }

    /// Every SIMS metric equals MMSA's to 1e-9 (neither side rounded; `MAE` exactly),
    /// boundaries and ties included; NaN where MMSA's is NaN.
    #[test]
    fn sims_metrics_equal_mmsa_on_the_golden_cases() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../tests/data/metrics/sims_golden.json");
        let golden: Golden = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        assert!(golden.cases.len() >= 8, "{} cases", golden.cases.len());
        for case in &golden.cases {
            let family = MetricFamily::Sims;
            assert_eq!(case.metrics.len(), family.sentiment_metrics().len());
            for (name, want) in &case.metrics {
                let metric = family.metric_named(name).unwrap();
                let got = metric.compute(&case.pred, &case.truth);
                match want {
                    // numpy's float32 mean is reproduced, not approximated.
                    Some(want) if metric == Metric::SimsMae => {
                        assert_eq!(got, *want, "{}: {name}", case.name)
                    }
                    Some(want) => assert!(
                        (got - want).abs() < 1e-9,
                        "{}: {name}: mmflow {got} vs MMSA {want}",
                        case.name
                    ),
                    None => assert!(got.is_nan(), "{}: {name}: {got}, MMSA NaN", case.name),
                }
            }
        }
    }

    /// The float32 comparisons matter: `0.1f32` is above 0.1 as a double, but neutral for MMSA.
    #[test]
    fn sims_bins_compare_in_float32() {
        let tenth = f64::from(0.1f32);
        assert!(tenth > 0.1);
        assert_eq!(sims_class(sims_clip(tenth), &SIMS_BOUNDS_3), Some(1));
        assert_eq!(sims_class(sims_clip(0.0), &SIMS_BOUNDS_2), Some(0));
        assert_eq!(sims_class(sims_clip(f64::NAN), &SIMS_BOUNDS_5), None);
        assert_eq!(sims_class(sims_clip(-7.0), &SIMS_BOUNDS_5), Some(0));
        assert_eq!(
            Metric::SimsAcc3.compute(&[tenth, f64::NAN], &[0.0, f64::NAN]),
            0.5
        );
    }

    #[test]
    fn names_are_mmsas_and_keys_are_unique() {
        for family in [MetricFamily::Mosi, MetricFamily::Sims] {
            for &m in family.sentiment_metrics() {
                assert_eq!(family.metric_named(m.name()), Some(m));
            }
        }
        assert_eq!(Metric::from_name("MAE"), Some(Metric::Mae));
        assert_eq!(
            MetricFamily::Sims.metric_named("MAE"),
            Some(Metric::SimsMae)
        );
        let keys: std::collections::BTreeSet<&str> = Metric::ALL.iter().map(|m| m.key()).collect();
        assert_eq!(keys.len(), Metric::ALL.len());
        assert_eq!(MetricFamily::of_dataset("simsv2"), MetricFamily::Sims);
        assert_eq!(MetricFamily::of_dataset("mosei"), MetricFamily::Mosi);
        assert_eq!(MetricFamily::of_dataset("my_corpus"), MetricFamily::Mosi);
        assert_eq!(Predicts::of_label("sentiment_V"), Predicts::Sentiment);
    }
}
