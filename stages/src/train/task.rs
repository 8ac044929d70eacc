//! The sentiment model as the training loop sees it: batches through the model, the weighted
//! loss of every head, and the per-epoch measures of each head (its typed training metrics,
//! and the mean CCC of the continuous affect heads). Shared by `train_model`, `finetune` and
//! `evaluate`.

use std::collections::BTreeMap;

use candle_core::{Device, Tensor};
use mmflow_pipeline::StageError;
use rand::SeedableRng;

use super::data::Dataset;
use super::data::Feed;
use super::device::err;
use super::fit::{Measures, Trainable};
use super::loss::{head_loss, LossWeights};
use super::model::{inputs, labels, Adapters, Head, Model};
use super::nn::Pass;
use super::optim::scalar;
use super::settings::{Measure, Monitor, TOTAL};
use crate::metrics::{Metric, MetricFamily, MEAN_SUBJECT};

/// Checks the data can train the heads: train rows, a validation split, labels present.
pub fn check_data<'a>(
    data: &Dataset,
    train: &[usize],
    valid: &[usize],
    heads: impl Iterator<Item = &'a String>,
    table: &str,
) -> Result<(), StageError> {
    if train.is_empty() {
        return Err(StageError::input(format!(
            "{table}: no train segment has every modality"
        )));
    }
    if valid.is_empty() {
        return Err(StageError::input(format!(
            "{table}: the validation split is empty (or lacks a modality): early stopping and model selection need validation data"
        )));
    }
    for head in heads {
        let Some(values) = data.labels.get(head) else {
            return Err(StageError::config(format!(
                "head `{head}` is not a label column of {table} ({})",
                data.labels.keys().cloned().collect::<Vec<_>>().join(", ")
            )));
        };
        for (split, rows) in [("train", train), ("valid", valid)] {
            if rows.iter().all(|&r| values[r].is_none()) {
                return Err(StageError::input(format!(
                    "{table}: no {split} segment has a `{head}` label"
                )));
            }
        }
    }
    Ok(())
}

/// The metric family of the rows a model trains on (MMSA's for their datasets; a mix of
/// both families is measured as MOSI, with a warning).
pub fn training_family(stage: &str, data: &Dataset) -> MetricFamily {
    let (family, mixed) = MetricFamily::of_datasets(&data.datasets);
    if mixed {
        tracing::warn!(
            "{stage}: the segments mix datasets of both metric families ({}): sentiment heads \
             are measured with MMSA's MOSI metrics after every epoch",
            data.datasets.iter().cloned().collect::<Vec<_>>().join(", ")
        );
    }
    family
}

/// Whether a model with `heads` measures `monitor` after every epoch on data of `family`
/// (the message says why not, and what is measured); with no family (the data not yet
/// read), what either family measures.
pub fn check_monitor(
    monitor: &Monitor,
    heads: &[Head],
    family: Option<MetricFamily>,
) -> Result<(), String> {
    if monitor.is_total_loss() {
        return Ok(());
    }
    let labels: Vec<&str> = heads.iter().map(|h| h.label.as_str()).collect();
    let measured: Vec<Measure> = if monitor.subject == MEAN_SUBJECT {
        let continuous = heads.iter().filter(|h| h.predicts.joins_mean()).count();
        if continuous < 2 {
            return Err(format!(
                "`{MEAN_SUBJECT}` averages two or more continuous heads; this model has {continuous}"
            ));
        }
        vec![Measure::Metric(Metric::Ccc)]
    } else if let Some(head) = heads.iter().find(|h| h.label == monitor.subject) {
        let families = match family {
            Some(family) => vec![family],
            None => vec![MetricFamily::Mosi, MetricFamily::Sims],
        };
        let mut measured = vec![Measure::Loss];
        for family in families {
            for &m in head.predicts.training_metrics(family) {
                if !measured.contains(&Measure::Metric(m)) {
                    measured.push(Measure::Metric(m));
                }
            }
        }
        measured
    } else {
        return Err(format!(
            "`{}` is not a head of the model (heads: {}), `{MEAN_SUBJECT}` or `loss`",
            monitor.subject,
            labels.join(", ")
        ));
    };
    if measured.contains(&monitor.measure) {
        Ok(())
    } else {
        let on = match family {
            Some(MetricFamily::Sims) => " on CH-SIMS data",
            Some(MetricFamily::Mosi) => " on MOSI-family data",
            None => "",
        };
        Err(format!(
            "`{}` is not measured for `{}`{on} (measured: {})",
            monitor.measure.key(),
            monitor.subject,
            measured
                .iter()
                .map(|m| m.key())
                .collect::<Vec<_>>()
                .join(", ")
        ))
    }
}

/// The sentiment model as the training loop sees it.
pub struct Task<'a> {
    /// The model.
    pub model: &'a Model,
    /// The data.
    pub data: &'a Dataset,
    /// How each modality is fed.
    pub feeds: &'a [Feed],
    /// Adapters in front of modalities.
    pub adapters: Option<&'a Adapters>,
    /// Loss weights per head.
    pub weights: &'a BTreeMap<String, LossWeights>,
    /// Device.
    pub device: &'a Device,
    /// Whose metrics a sentiment head is measured with after every epoch.
    pub family: MetricFamily,
}

impl Task<'_> {
    /// Predictions (one vector per head, in head order) for `rows`, evaluation mode (no
    /// graph kept for backward: each intermediate is freed once used).
    pub fn predict(&self, rows: &[usize]) -> Result<Vec<Vec<f32>>, StageError> {
        candle_core::backprop::no_grad(|| self.predict_in_passes(rows))
    }

    fn predict_in_passes(&self, rows: &[usize]) -> Result<Vec<Vec<f32>>, StageError> {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
        let mut out = vec![Vec::with_capacity(rows.len()); self.model.arch.heads.len()];
        for chunk in rows.chunks(self.model.rows_per_pass()) {
            let mut pass = Pass {
                train: false,
                rng: &mut rng,
            };
            let x = inputs(
                self.data,
                chunk,
                self.feeds,
                self.adapters,
                self.device,
                &mut pass,
            )?;
            let users = self.model.user_ids(self.data, chunk, self.device)?;
            let outputs = self.model.forward(&x, users.as_ref(), &mut pass)?;
            for (o, t) in out.iter_mut().zip(outputs) {
                o.extend(t.to_vec1::<f32>().map_err(err("predictions"))?);
            }
        }
        Ok(out)
    }
}

impl Trainable for Task<'_> {
    fn loss(&self, rows: &[usize], pass: &mut Pass<'_>) -> Result<Tensor, StageError> {
        let x = inputs(
            self.data,
            rows,
            self.feeds,
            self.adapters,
            self.device,
            pass,
        )?;
        let users = self.model.user_ids(self.data, rows, self.device)?;
        let outputs = self.model.forward(&x, users.as_ref(), pass)?;
        let mut total: Option<Tensor> = None;
        for (head, p) in self.model.arch.heads.iter().zip(outputs) {
            let (y, keep) = labels(self.data, &head.label, rows, self.device)?;
            if keep.is_empty() {
                continue;
            }
            let (p, y) = if keep.len() == rows.len() {
                (p, y)
            } else {
                let idx = Tensor::from_vec(keep.clone(), keep.len(), self.device)
                    .map_err(err("label mask"))?;
                (
                    p.index_select(&idx, 0).map_err(err("label mask"))?,
                    y.index_select(&idx, 0).map_err(err("label mask"))?,
                )
            };
            let l = head_loss(&p, &y, &self.weights[&head.label])?;
            total = Some(match total {
                Some(t) => (t + l).map_err(err("loss"))?,
                None => l,
            });
        }
        total.ok_or_else(|| StageError::input("a batch without any label"))
    }

    fn measure(&self, rows: &[usize]) -> Result<Measures, StageError> {
        let predictions = self.predict(rows)?;
        let mut out = Measures::new();
        let mut total = 0.0;
        for (head, pred) in self.model.arch.heads.iter().zip(&predictions) {
            let values = &self.data.labels[&head.label];
            let (p, y): (Vec<f64>, Vec<f64>) = rows
                .iter()
                .zip(pred)
                .filter_map(|(&r, &v)| values[r].map(|l| (v as f64, l as f64)))
                .unzip();
            if p.is_empty() {
                continue;
            }
            let as_tensor = |v: &[f64]| {
                Tensor::from_vec(
                    v.iter().map(|&x| x as f32).collect::<Vec<_>>(),
                    v.len(),
                    self.device,
                )
                .map_err(err("measure"))
            };
            let loss = scalar(&head_loss(
                &as_tensor(&p)?,
                &as_tensor(&y)?,
                &self.weights[&head.label],
            )?)?;
            total += loss;
            out.insert((head.label.clone(), Measure::Loss.key().into()), loss);
            for metric in head.predicts.training_metrics(self.family) {
                out.insert(
                    (head.label.clone(), metric.key().into()),
                    metric.compute(&p, &y),
                );
            }
        }
        // Two or more continuous heads (valence and arousal): their mean CCC, to monitor.
        let ccc = Metric::Ccc.key();
        let cccs: Vec<f64> = self
            .model
            .arch
            .heads
            .iter()
            .filter(|h| h.predicts.joins_mean())
            .filter_map(|h| out.get(&(h.label.clone(), ccc.to_string())).copied())
            .collect();
        if cccs.len() >= 2 {
            out.insert(
                (MEAN_SUBJECT.into(), ccc.into()),
                cccs.iter().sum::<f64>() / cccs.len() as f64,
            );
        }
        out.insert((TOTAL.into(), Measure::Loss.key().into()), total);
        Ok(out)
    }
}
