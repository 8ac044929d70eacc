//! The field's metrics, computed exactly as the tools report them.
//!
//! For sentiment in [-3, 3], MMSA's regression metrics (`utils/metricsTop.py`,
//! `__eval_mosi_regression`): `Has0_acc_2`/`Has0_F1_score` compare `>= 0`; `Non0_acc_2`/
//! `Non0_F1_score` drop zero labels and compare `> 0`; F1 is scikit-learn's support-weighted
//! F1; `Mult_acc_5`/`Mult_acc_7` clip to [-2, 2]/[-3, 3] and compare values rounded half to
//! even (numpy's `round`); `MAE`; `Corr` is Pearson's r. Plus `MSE`, `RMSE` and `CCC`
//! (Lin's concordance). MMSA rounds to 4 decimals; these are not rounded.

/// Metric names for a sentiment head, in report order.
pub const SENTIMENT: [&str; 11] = [
    "Has0_acc_2",
    "Has0_F1_score",
    "Non0_acc_2",
    "Non0_F1_score",
    "Mult_acc_5",
    "Mult_acc_7",
    "MAE",
    "Corr",
    "MSE",
    "RMSE",
    "CCC",
];

/// Metric names for other (continuous) heads.
pub const CONTINUOUS: [&str; 4] = ["CCC", "Corr", "RMSE", "MAE"];

/// Which metrics a head gets.
pub fn names_for(head: &str) -> &'static [&'static str] {
    if head == "sentiment" {
        &SENTIMENT
    } else {
        &CONTINUOUS
    }
}

/// One metric of predictions `p` against truths `y` (NaN when undefined, e.g. a correlation
/// with constant predictions or an accuracy on no sample).
pub fn metric(name: &str, p: &[f64], y: &[f64]) -> f64 {
    match name {
        "Has0_acc_2" => accuracy(p.iter().map(|&v| v >= 0.0), y.iter().map(|&v| v >= 0.0)),
        "Has0_F1_score" => weighted_f1(
            &y.iter().map(|&v| v >= 0.0).collect::<Vec<_>>(),
            &p.iter().map(|&v| v >= 0.0).collect::<Vec<_>>(),
        ),
        "Non0_acc_2" | "Non0_F1_score" => {
            let keep: Vec<usize> = (0..y.len()).filter(|&i| y[i] != 0.0).collect();
            let truth: Vec<bool> = keep.iter().map(|&i| y[i] > 0.0).collect();
            let preds: Vec<bool> = keep.iter().map(|&i| p[i] > 0.0).collect();
            if name == "Non0_acc_2" {
                accuracy(preds.iter().copied(), truth.iter().copied())
            } else {
                weighted_f1(&truth, &preds)
            }
        }
        "Mult_acc_5" => class_accuracy(p, y, 2.0),
        "Mult_acc_7" => class_accuracy(p, y, 3.0),
        "MAE" => mean(p.iter().zip(y).map(|(a, b)| (a - b).abs())),
        "MSE" => mean(p.iter().zip(y).map(|(a, b)| (a - b) * (a - b))),
        "RMSE" => mean(p.iter().zip(y).map(|(a, b)| (a - b) * (a - b))).sqrt(),
        "Corr" => crate::stats::pearson(p, y).unwrap_or(f64::NAN),
        "CCC" => ccc(p, y),
        _ => f64::NAN,
    }
}

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
            assert!(
                (metric(name, &p, &y) - value).abs() < 1e-9,
                "{name}: {} vs {value}",
                metric(name, &p, &y)
            );
        }
    }
}
