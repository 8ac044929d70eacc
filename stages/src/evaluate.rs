//! The `evaluate` stage: predictions of a trained model on every split, the field's metrics
//! with n and percentile-bootstrap 95% confidence intervals, and flags for what looks wrong:
//! collapsed predictions, a sign inversion, a split too small to conclude anything, a large
//! train–validation gap. Optionally a linear calibration fitted on the validation split only.

use std::collections::{BTreeMap, BTreeSet};

use mmflow_pipeline::values::NonNegative;
use mmflow_pipeline::{
    Arity, BoundInputs, InputSlot, OutputPort, ParamProblem, RunContext, StageError, StageKind,
};
use mmflow_schemas::diagnostics::{self, Diagnostic};
use mmflow_schemas::evaluation::{self, MetricRow, Prediction};
use mmflow_schemas::Split;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::metrics::{self, Metric, MetricFamily, CALIBRATED_SUFFIX, MEAN_SUBJECT};
use crate::slots;
use crate::stats::{pearson, quantile, std};
use crate::tables::{ADAPTERS, DIAGNOSTICS, FEATURES, METRICS, MODEL, PREDICTIONS, SEGMENTS};
use crate::train::data::Dataset;
use crate::train::device::open;
use crate::train::model::Head;
use crate::train::restore::Restored;
use crate::train::task::Task;

/// This kind's own inputs and outputs.
mod slot {
    use mmflow_pipeline::Slot;

    /// `predictions`.
    pub const PREDICTIONS: Slot = Slot::new("predictions");
    /// `metrics`.
    pub const METRICS: Slot = Slot::new("metrics");
}

/// Parameters of the `evaluate` stage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct EvaluateParams {
    /// Bootstrap resamples per metric (0 = no confidence intervals).
    pub bootstrap: usize,
    /// Fit `label ≈ a · prediction + b` on the validation split and report calibrated metrics too.
    pub calibrate: bool,
    /// Flag predictions whose standard deviation is below this fraction of the labels'.
    pub collapse_ratio: NonNegative,
    /// Flag splits with fewer segments than this (the 93-video MOSI test set, say).
    pub min_samples: usize,
    /// Flag a train − validation difference of Corr/CCC above this.
    pub max_gap: NonNegative,
    /// MMSA's metrics of sentiment heads: `mosi` (`Has0_acc_2`, …, `Mult_acc_7`, `MAE`, `Corr`,
    /// plus MSE, RMSE, CCC) or `sims` (`Mult_acc_2`, `Mult_acc_3`, `Mult_acc_5`, `F1_score`,
    /// `MAE`, `Corr` after clipping to [-1, 1]). By default the segments' dataset decides:
    /// `sims` and `simsv2` get `sims`, any other `mosi`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metrics: Option<MetricFamily>,
}

impl Default for EvaluateParams {
    fn default() -> Self {
        EvaluateParams {
            bootstrap: 1000,
            calibrate: false,
            collapse_ratio: NonNegative::new(0.1),
            min_samples: 100,
            max_gap: NonNegative::new(0.1),
            metrics: None,
        }
    }
}

/// The `evaluate` stage kind.
pub struct Evaluate;

impl StageKind for Evaluate {
    type Params = EvaluateParams;
    const KIND: &'static str = "evaluate";
    const VERSION: u32 = 3;
    const ABOUT: &'static str =
        "predictions and metrics (MMSA's, CCC, …) with bootstrap CIs and flags";

    fn inputs(&self, _: &EvaluateParams) -> Vec<InputSlot> {
        vec![
            InputSlot {
                name: slots::MODEL,
                kind: MODEL,
                arity: Arity::One,
                about: "a trained model",
            },
            InputSlot {
                name: slots::SEGMENTS,
                kind: SEGMENTS,
                arity: Arity::One,
                about: "splits and labels",
            },
            InputSlot {
                name: slots::FEATURES,
                kind: FEATURES,
                arity: Arity::AnyNumber,
                about: "the model's modalities (none for a model on text alone)",
            },
            InputSlot {
                name: slots::ADAPTERS,
                kind: ADAPTERS,
                arity: Arity::Optional,
                about: "feature adapters in front of their modalities",
            },
        ]
    }

    fn outputs(
        &self,
        _: &EvaluateParams,
        _: &BoundInputs,
    ) -> Result<Vec<OutputPort>, Vec<ParamProblem>> {
        Ok(vec![
            OutputPort::new(slot::PREDICTIONS, PREDICTIONS),
            OutputPort::new(slot::METRICS, METRICS),
            OutputPort::new(slots::DIAGNOSTICS, DIAGNOSTICS),
        ])
    }

    fn uses_device(&self, _: &EvaluateParams) -> bool {
        true
    }

    fn run(&self, p: &EvaluateParams, ctx: &mut RunContext<'_>) -> Result<(), StageError> {
        let device = open(ctx.device)?;
        let Restored {
            model,
            adapters,
            data,
            feeds,
            best_epoch: restored_best_epoch,
            ..
        } = Restored::load(ctx, &device)?;
        let family = p
            .metrics
            .unwrap_or_else(|| family_of_datasets(ctx.stage_id, &data.datasets));
        let model_ref = ctx.input(slots::MODEL)?.reference.to_string();
        let segments = ctx.input(slots::SEGMENTS)?.clone();
        let arch = &model.arch;
        for head in &arch.heads {
            if !data.labels.contains_key(&head.label) {
                tracing::warn!(
                    "{}: {} has no `{}` labels: predictions only",
                    ctx.stage_id,
                    segments.reference,
                    head.label
                );
            }
        }
        let weights = arch
            .heads
            .iter()
            .map(|h| (h.label.clone(), Default::default()))
            .collect();
        let task = Task {
            model: &model,
            data: &data,
            feeds: &feeds,
            adapters: adapters.as_ref().map(|a| &a.adapters),
            weights: &weights,
            device: &device,
            family,
        };
        let all: Vec<usize> = (0..data.len()).collect();
        let predictions = task.predict(&all)?;
        let scoring = Scoring {
            p,
            data: &data,
            family,
            seed: ctx.seed,
        };
        let mut rows = Vec::new();
        let mut metric_rows = Vec::new();
        let mut flags = Vec::new();
        for (h, head) in arch.heads.iter().enumerate() {
            let labels = data.labels.get(&head.label);
            let calibration = if p.calibrate {
                labels.and_then(|l| fit_calibration(&predictions[h], l, &data.rows(Split::Valid)))
            } else {
                None
            };
            rows.extend(scoring.prediction_rows(head, labels, &predictions[h], calibration));
            let Some(labels) = labels else { continue };
            let (summary, head_rows) =
                scoring.head_metrics(head, labels, &predictions[h], calibration, &mut flags);
            metric_rows.extend(head_rows);
            gap_flags(p, &head.label, &summary, &mut flags, &mut metric_rows);
        }
        metric_rows.extend(mean_ccc(p, &arch.heads, &predictions, &data, ctx.seed));
        flags.push(Diagnostic::new(
            "model",
            &model_ref,
            "best_epoch",
            restored_best_epoch as f64,
        ));
        log_results(ctx.stage_id, &flags, &metric_rows);
        evaluation::write_predictions(&rows, ctx.output(slot::PREDICTIONS)?, ctx.table_meta())?;
        evaluation::write_metrics(&metric_rows, ctx.output(slot::METRICS)?, ctx.table_meta())?;
        diagnostics::write(&flags, ctx.output(slots::DIAGNOSTICS)?, ctx.table_meta())?;
        ctx.report(
            "flags",
            flags
                .iter()
                .filter(|f| f.note.as_deref().is_some_and(|n| n.starts_with("FLAG")))
                .count(),
        );
        ctx.report("segments_without_every_modality", data.dropped);
        Ok(())
    }
}

/// What scoring a head's predictions takes besides the head.
struct Scoring<'a> {
    p: &'a EvaluateParams,
    data: &'a Dataset,
    family: MetricFamily,
    seed: u64,
}

/// A head's metrics on each split (uncalibrated), as `gap_flags` compares them.
type Summary = BTreeMap<Split, BTreeMap<Metric, f64>>;

impl Scoring<'_> {
    /// A head's prediction rows, one per segment, calibrated where a calibration was fitted.
    fn prediction_rows(
        &self,
        head: &Head,
        labels: Option<&Vec<Option<f32>>>,
        predictions: &[f32],
        calibration: Option<(f64, f64)>,
    ) -> Vec<Prediction> {
        predictions
            .iter()
            .enumerate()
            .map(|(r, &pred)| Prediction {
                segment_id: self.data.ids[r].clone(),
                split: self.data.splits[r],
                head: head.label.clone(),
                label: labels.and_then(|l| l[r]),
                prediction: pred,
                calibrated: calibration.map(|(a, b)| (a * pred as f64 + b) as f32),
            })
            .collect()
    }

    /// A head's metrics on every split with labelled segments, each with its bootstrap CI and
    /// flags (calibrated metrics too where a calibration was fitted): the summary, the rows.
    fn head_metrics(
        &self,
        head: &Head,
        labels: &[Option<f32>],
        predictions: &[f32],
        calibration: Option<(f64, f64)>,
        flags: &mut Vec<Diagnostic>,
    ) -> (Summary, Vec<MetricRow>) {
        let mut summary = Summary::new();
        let mut metric_rows = Vec::new();
        for split in Split::ALL {
            let rows_of: Vec<usize> = self
                .data
                .rows(split)
                .into_iter()
                .filter(|&r| labels[r].is_some())
                .collect();
            if rows_of.is_empty() {
                continue;
            }
            let y: Vec<f64> = rows_of
                .iter()
                .map(|&r| labels[r].unwrap_or(0.0) as f64)
                .collect();
            let pred: Vec<f64> = rows_of.iter().map(|&r| predictions[r] as f64).collect();
            let measured = head.predicts.metrics(self.family);
            let notes = split_flags(self.p, split, head, measured, &pred, &y, flags);
            for (suffix, values) in std::iter::once(("", pred.clone())).chain(
                calibration
                    .map(|(a, b)| (CALIBRATED_SUFFIX, pred.iter().map(|v| a * v + b).collect())),
            ) {
                let cis = bootstrap(
                    &values,
                    &y,
                    measured,
                    self.p.bootstrap,
                    self.seed ^ hash(&format!("{split}/{}{suffix}", head.label)),
                );
                for (&metric, ci) in measured.iter().zip(cis) {
                    let value = metric.compute(&values, &y);
                    if suffix.is_empty() {
                        summary.entry(split).or_default().insert(metric, value);
                    }
                    metric_rows.push(MetricRow {
                        split,
                        head: head.label.clone(),
                        metric: format!("{}{suffix}", metric.name()),
                        value,
                        ci_low: ci.map(|c| c.0),
                        ci_high: ci.map(|c| c.1),
                        n: y.len() as u64,
                        seed: self.seed,
                        note: notes.get(&metric).cloned(),
                    });
                }
            }
        }
        (summary, metric_rows)
    }
}

/// Logs the flags raised, and the test correlations and CCCs with their CIs and n.
fn log_results(stage: &str, flags: &[Diagnostic], metric_rows: &[MetricRow]) {
    for f in flags
        .iter()
        .filter(|f| f.note.as_deref().is_some_and(|n| n.starts_with("FLAG")))
    {
        tracing::warn!(
            "{stage}: {} {}: {}",
            f.method,
            f.subject,
            f.note.as_deref().unwrap_or_default()
        );
    }
    for m in metric_rows.iter().filter(|m| {
        m.split == Split::Test
            && [Metric::Corr, Metric::Ccc]
                .iter()
                .any(|k| m.metric == k.name())
    }) {
        tracing::info!(
            "{stage}: test {} {} = {:.3} (95% CI {:.3}…{:.3}, n = {})",
            m.head,
            m.metric,
            m.value,
            m.ci_low.unwrap_or(f64::NAN),
            m.ci_high.unwrap_or(f64::NAN),
            m.n
        );
    }
}

/// The metric family MMSA would use for the segments' datasets: theirs when they agree, else
/// (a mix) the MOSI family, with a warning.
fn family_of_datasets(stage: &str, datasets: &BTreeSet<String>) -> MetricFamily {
    match MetricFamily::of_datasets(datasets) {
        (family, false) => family,
        (_, true) => {
            tracing::warn!(
                "{stage}: the segments mix datasets of both metric families ({}): MMSA's MOSI \
                 metrics; set `metrics` to choose",
                datasets.iter().cloned().collect::<Vec<_>>().join(", ")
            );
            MetricFamily::Mosi
        }
    }
}

fn hash(text: &str) -> u64 {
    let h = blake3::hash(text.as_bytes());
    u64::from_le_bytes(h.as_bytes()[..8].try_into().expect("8 bytes"))
}

/// Percentile-bootstrap 95% intervals of each metric (None where undefined).
fn bootstrap(
    p: &[f64],
    y: &[f64],
    measured: &[Metric],
    resamples: usize,
    seed: u64,
) -> Vec<Option<(f64, f64)>> {
    bootstrap_with(y.len(), measured.len(), resamples, seed, |idx| {
        let (ps, ys): (Vec<f64>, Vec<f64>) = idx.iter().map(|&i| (p[i], y[i])).unzip();
        measured.iter().map(|m| m.compute(&ps, &ys)).collect()
    })
}

/// Percentile-bootstrap 95% intervals of `k` statistics of `n` rows: `stats` maps resampled
/// row indices to the statistics (None where undefined in most resamples).
fn bootstrap_with(
    n: usize,
    k: usize,
    resamples: usize,
    seed: u64,
    stats: impl Fn(&[usize]) -> Vec<f64> + Sync,
) -> Vec<Option<(f64, f64)>> {
    if resamples == 0 || n < 2 {
        return vec![None; k];
    }
    // Each resample has its own stream: the result does not depend on thread scheduling.
    let draws: Vec<Vec<f64>> = (0..resamples)
        .into_par_iter()
        .map(|b| {
            let mut rng = ChaCha8Rng::seed_from_u64(seed.wrapping_add(b as u64));
            let idx: Vec<usize> = (0..n).map(|_| rng.random_range(0..n)).collect();
            stats(&idx)
        })
        .collect();
    (0..k)
        .map(|j| {
            let values: Vec<f64> = draws
                .iter()
                .map(|d| d[j])
                .filter(|v| v.is_finite())
                .collect();
            if values.len() < resamples / 2 {
                return None;
            }
            Some((quantile(&values, 0.025)?, quantile(&values, 0.975)?))
        })
        .collect()
}

/// With two or more continuous heads (valence and arousal, say): the mean CCC over heads per
/// split, on the segments that have every label, with a joint bootstrap CI (head `mean`).
fn mean_ccc(
    p: &EvaluateParams,
    heads: &[Head],
    predictions: &[Vec<f32>],
    data: &crate::train::data::Dataset,
    seed: u64,
) -> Vec<MetricRow> {
    let continuous: Vec<(usize, &Vec<Option<f32>>)> = heads
        .iter()
        .enumerate()
        .filter(|(_, h)| h.predicts.joins_mean())
        .filter_map(|(i, h)| data.labels.get(&h.label).map(|l| (i, l)))
        .collect();
    if continuous.len() < 2 {
        return Vec::new();
    }
    let mut out = Vec::new();
    for split in Split::ALL {
        let rows: Vec<usize> = data
            .rows(split)
            .into_iter()
            .filter(|&r| continuous.iter().all(|(_, l)| l[r].is_some()))
            .collect();
        if rows.is_empty() {
            continue;
        }
        let columns: Vec<(Vec<f64>, Vec<f64>)> = continuous
            .iter()
            .map(|(h, l)| {
                rows.iter()
                    .map(|&r| (predictions[*h][r] as f64, l[r].unwrap_or(0.0) as f64))
                    .unzip()
            })
            .collect();
        let mean_over = |idx: &[usize]| -> f64 {
            columns
                .iter()
                .map(|(pc, yc)| {
                    let (ps, ys): (Vec<f64>, Vec<f64>) =
                        idx.iter().map(|&i| (pc[i], yc[i])).unzip();
                    metrics::ccc(&ps, &ys)
                })
                .sum::<f64>()
                / columns.len() as f64
        };
        let all: Vec<usize> = (0..rows.len()).collect();
        let ci = bootstrap_with(
            rows.len(),
            1,
            p.bootstrap,
            seed ^ hash(&format!("{split}/mean")),
            |idx| vec![mean_over(idx)],
        )[0];
        out.push(MetricRow {
            split,
            head: MEAN_SUBJECT.into(),
            metric: Metric::Ccc.name().into(),
            value: mean_over(&all),
            ci_low: ci.map(|c| c.0),
            ci_high: ci.map(|c| c.1),
            n: rows.len() as u64,
            seed,
            note: None,
        });
    }
    out
}

/// Least squares `label ≈ a · prediction + b` on the validation rows.
fn fit_calibration(pred: &[f32], labels: &[Option<f32>], valid: &[usize]) -> Option<(f64, f64)> {
    let pairs: Vec<(f64, f64)> = valid
        .iter()
        .filter_map(|&r| labels[r].map(|l| (pred[r] as f64, l as f64)))
        .collect();
    if pairs.len() < 3 {
        return None;
    }
    let n = pairs.len() as f64;
    let (mx, my) = (
        pairs.iter().map(|p| p.0).sum::<f64>() / n,
        pairs.iter().map(|p| p.1).sum::<f64>() / n,
    );
    let sxx: f64 = pairs.iter().map(|p| (p.0 - mx) * (p.0 - mx)).sum();
    let sxy: f64 = pairs.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
    if sxx <= 0.0 {
        return None;
    }
    let a = sxy / sxx;
    Some((a, my - a * mx))
}

/// Checks one split of one head; returns notes to attach to metrics.
fn split_flags(
    p: &EvaluateParams,
    split: Split,
    head: &Head,
    measured: &[Metric],
    pred: &[f64],
    y: &[f64],
    flags: &mut Vec<Diagnostic>,
) -> BTreeMap<Metric, String> {
    let mut notes = BTreeMap::new();
    let subject = head.label.clone();
    let method = split.as_str();
    let corr = measured
        .iter()
        .copied()
        .find(|m| matches!(m, Metric::Corr | Metric::SimsCorr))
        .unwrap_or(Metric::Corr);
    let ratio = std(pred) / std(y).max(f64::MIN_POSITIVE);
    let collapsed = ratio < p.collapse_ratio.get();
    let mut d = Diagnostic::new(method, &subject, "prediction_std_ratio", ratio).with_n(y.len());
    if collapsed {
        let note = format!(
            "FLAG collapsed predictions: their std is {ratio:.3} of the labels' (< {})",
            p.collapse_ratio
        );
        notes.insert(corr, note.clone());
        d = d.with_note(note);
    }
    flags.push(d);
    if let Some(r) = pearson(pred, y) {
        let mut d = Diagnostic::new(method, &subject, "sign", r.signum()).with_n(y.len());
        if r < 0.0 {
            let note = format!(
                "FLAG sign inversion: negated predictions correlate better (r = {r:.3} → {:.3})",
                -r
            );
            notes.entry(corr).or_insert_with(|| note.clone());
            d = d.with_note(note);
        }
        flags.push(d);
    }
    let mut d = Diagnostic::new(method, &subject, "n", y.len() as f64).with_n(y.len());
    if y.len() < p.min_samples {
        let note = format!(
            "FLAG small split: n = {} < {}: differences within the CIs are noise",
            y.len(),
            p.min_samples
        );
        for &metric in measured {
            notes.entry(metric).or_insert_with(|| note.clone());
        }
        d = d.with_note(note);
    }
    flags.push(d);
    notes
}

/// Train − validation gaps of Corr (either family's) and CCC.
fn gap_flags(
    p: &EvaluateParams,
    head: &str,
    summary: &BTreeMap<Split, BTreeMap<Metric, f64>>,
    flags: &mut Vec<Diagnostic>,
    metric_rows: &mut [MetricRow],
) {
    let (Some(train), Some(valid)) = (summary.get(&Split::Train), summary.get(&Split::Valid))
    else {
        return;
    };
    for metric in [Metric::Corr, Metric::SimsCorr, Metric::Ccc] {
        let name = metric.name();
        let (Some(t), Some(v)) = (train.get(&metric), valid.get(&metric)) else {
            continue;
        };
        let gap = t - v;
        let mut d = Diagnostic::new("train-valid", head, &format!("{name}_gap"), gap);
        if gap > p.max_gap.get() {
            let note = format!(
                "FLAG train–validation gap of {name}: {t:.3} vs {v:.3} (> {}): overfitting",
                p.max_gap
            );
            if let Some(row) = metric_rows
                .iter_mut()
                .find(|m| m.split == Split::Valid && m.head == head && m.metric == name)
            {
                row.note.get_or_insert(note.clone());
            }
            d = d.with_note(note);
        }
        flags.push(d);
    }
}
