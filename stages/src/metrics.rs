//! The field's metrics, computed exactly as the tools report them.
//!
//! For sentiment in [-3, 3], MMSA's regression metrics (`utils/metricsTop.py`,
//! `__eval_mosi_regression`): `Has0_acc_2`/`Has0_F1_score` compare `>= 0`; `Non0_acc_2`/
//! `Non0_F1_score` drop zero labels and compare `> 0`; F1 is scikit-learn's support-weighted
//! F1; `Mult_acc_5`/`Mult_acc_7` clip to [-2, 2]/[-3, 3] and compare values rounded half to
//! even (numpy's `round`); `MAE`; `Corr` is Pearson's r. Plus `MSE`, `RMSE` and `CCC`
//! (Lin's concordance). MMSA rounds to 4 decimals; these are not rounded.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::datasets::EMOTIONS;

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
}

impl Metric {
    /// Every metric, in report order.
    pub const ALL: [Metric; 11] = [
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
    ];

    /// Its name in metrics tables (MMSA's spelling for MMSA's metrics).
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
        }
    }

    /// The metric a metrics table names `name`.
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
        }
    }

    /// The metric whose [`Metric::key`] is `key`.
    pub fn from_key(key: &str) -> Option<Metric> {
        Metric::ALL.into_iter().find(|m| m.key() == key)
    }

    /// Which way it improves.
    pub fn direction(self) -> Direction {
        match self {
            Metric::Mae | Metric::Mse | Metric::Rmse => Direction::LowerIsBetter,
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
        }
    }
}

/// What a head predicts; it decides the head's metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Predicts {
    /// Sentiment polarity in [-3, 3] (MOSI, MOSEI): MMSA's regression metrics.
    Sentiment,
    /// An emotion's intensity in [0, 3] (MOSEI's six emotions).
    Emotion,
    /// A continuous affect dimension such as valence or arousal.
    Dimension,
}

impl Predicts {
    /// What a label column predicts when the config does not say: `sentiment` is sentiment,
    /// MOSEI's six emotions are emotions, anything else (`valence`, `arousal`, …) a dimension.
    pub fn of_label(label: &str) -> Predicts {
        if label == "sentiment" {
            Predicts::Sentiment
        } else if EMOTIONS.contains(&label) {
            Predicts::Emotion
        } else {
            Predicts::Dimension
        }
    }

    /// The metrics evaluation computes, in report order.
    pub fn metrics(self) -> &'static [Metric] {
        match self {
            Predicts::Sentiment => &Metric::ALL,
            Predicts::Emotion | Predicts::Dimension => {
                &[Metric::Ccc, Metric::Corr, Metric::Rmse, Metric::Mae]
            }
        }
    }

    /// The metrics measured on train and validation data after every epoch (history rows,
    /// what `monitor` can pick).
    pub fn training_metrics(self) -> &'static [Metric] {
        match self {
            Predicts::Sentiment => &[
                Metric::Mae,
                Metric::Rmse,
                Metric::Corr,
                Metric::Ccc,
                Metric::Has0Acc2,
            ],
            Predicts::Emotion | Predicts::Dimension => {
                &[Metric::Mae, Metric::Rmse, Metric::Corr, Metric::Ccc]
            }
        }
    }

    /// The metrics a comparison shows when none are asked for.
    pub fn headline_metrics(self) -> &'static [Metric] {
        match self {
            Predicts::Sentiment => &[
                Metric::Has0Acc2,
                Metric::Non0Acc2,
                Metric::MultAcc7,
                Metric::Mae,
                Metric::Corr,
                Metric::Ccc,
            ],
            Predicts::Emotion | Predicts::Dimension => &[Metric::Ccc, Metric::Rmse],
        }
    }

    /// True for heads whose CCC joins the `mean` subject (the average over the continuous
    /// affect heads, e.g. valence and arousal).
    pub fn joins_mean(self) -> bool {
        self != Predicts::Sentiment
    }

    /// What a metrics table's head `label` predicts, read from the metrics it holds: only a
    /// sentiment head has MMSA's accuracies; without them, as its name says.
    pub fn of_metrics<'a>(label: &str, mut names: impl Iterator<Item = &'a str>) -> Predicts {
        if names.any(|n| n == Metric::Has0Acc2.name()) {
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
        assert_eq!(Metric::ALL.len(), want.len());
    }
}
