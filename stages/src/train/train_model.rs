//! The `train_model` stage: the sentiment model trained with candle (CPU by default, CUDA
//! when built with it), early stopping on a validation measure, best weights saved.

use std::collections::{BTreeMap, HashMap};

use candle_core::{Device, Tensor};
use mmflow_pipeline::{
    Arity, BoundInputs, InputSlot, OutputPort, ParamProblem, RunContext, StageError, StageKind,
};
use mmflow_schemas::history;
use mmflow_schemas::Split;
use rand::SeedableRng;
use serde::{Deserialize, Serialize};

use super::adapters::load_adapters;
use super::data::Dataset;
use super::device::{err, resolve};
use super::fit::{fit, FitConfig, Measures, Monitor, OnNan, Trainable};
use super::loss::{head_loss, LossWeights};
use super::model::{inputs, labels, Adapters, Architecture, EncoderConfig, Fusion, Model};
use super::nn::{MlpConfig, Pass};
use super::optim::Schedule;
use super::params::ParamStore;
use crate::evaluate::metrics::metric;
use crate::kinds::{ADAPTERS, FEATURES, HISTORY, MODEL, SEGMENTS};

/// Parameters of the `train_model` stage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainModelParams {
    /// Encoder per modality (input output name); modalities not listed are mean-pooled + MLP.
    pub encoders: BTreeMap<String, EncoderConfig>,
    /// `concat` (default) or `attention` across modalities.
    pub fusion: Fusion,
    /// Token width of attention fusion.
    pub fusion_dim: usize,
    /// The MLP after fusion.
    pub fusion_mlp: MlpConfig,
    /// Width of a learned embedding of the speaker/user id (0 = none).
    pub user_embedding: usize,
    /// Heads: label column → loss weights (`mse`, `mae`, `pearson`, `ccc`).
    pub heads: BTreeMap<String, LossWeights>,
    /// Dropout on the fused representation.
    pub dropout: f32,
    /// Most epochs.
    pub epochs: usize,
    /// Segments per batch.
    pub batch_size: usize,
    /// AdamW learning rate.
    pub learning_rate: f64,
    /// AdamW decoupled weight decay.
    pub weight_decay: f64,
    /// Clip the global gradient norm (none to disable).
    pub grad_clip: Option<f64>,
    /// Stop after this many epochs without improving `monitor` (0 = train all epochs).
    pub patience: usize,
    /// Validation measure that picks the best epoch: `loss`, or `<head>:<metric>` with metric
    /// `mae`, `rmse`, `corr`, `ccc` (e.g. `sentiment:mae`); with several continuous heads
    /// also `mean:ccc` (their average CCC).
    pub monitor: String,
    /// Learning-rate schedule: `constant`, `plateau` (default) or `cosine`.
    pub schedule: Schedule,
    /// Plateau schedule: multiply the rate by this.
    pub plateau_factor: f64,
    /// Plateau schedule: epochs without improvement before reducing.
    pub plateau_patience: usize,
    /// A NaN loss: `stop` (keep the best weights so far, flag it) or `fail`.
    pub on_nan: OnNan,
}

impl Default for TrainModelParams {
    fn default() -> Self {
        TrainModelParams {
            encoders: BTreeMap::new(),
            fusion: Fusion::Concat,
            fusion_dim: 64,
            fusion_mlp: MlpConfig {
                hidden: vec![64],
                ..MlpConfig::default()
            },
            user_embedding: 0,
            heads: [("sentiment".to_string(), LossWeights::default())].into(),
            dropout: 0.2,
            epochs: 30,
            batch_size: 64,
            learning_rate: 1e-3,
            weight_decay: 1e-4,
            grad_clip: Some(1.0),
            patience: 8,
            monitor: "loss".into(),
            schedule: Schedule::Plateau,
            plateau_factor: 0.5,
            plateau_patience: 3,
            on_nan: OnNan::Stop,
        }
    }
}

/// Problems common to every training params block.
pub fn check_training(
    epochs: usize,
    batch_size: usize,
    lr: f64,
    wd: f64,
    clip: Option<f64>,
    monitor: &str,
) -> Vec<ParamProblem> {
    let mut problems = Vec::new();
    if epochs == 0 {
        problems.push(ParamProblem::new("epochs", "must be at least 1"));
    }
    if batch_size == 0 {
        problems.push(ParamProblem::new("batch_size", "must be at least 1"));
    }
    if !(lr.is_finite() && lr > 0.0) {
        problems.push(ParamProblem::new(
            "learning_rate",
            "must be a positive number",
        ));
    }
    if !(wd.is_finite() && wd >= 0.0) {
        problems.push(ParamProblem::new(
            "weight_decay",
            "must be a finite number ≥ 0",
        ));
    }
    if clip.is_some_and(|c| !(c.is_finite() && c > 0.0)) {
        problems.push(ParamProblem::new("grad_clip", "must be a positive number"));
    }
    if Monitor::parse(monitor).is_none() {
        problems.push(ParamProblem::new(
            "monitor",
            format!("`{monitor}` is not `loss` or `<subject>:<metric>`"),
        ));
    }
    problems
}

/// The `train_model` stage kind.
pub struct TrainModel;

impl StageKind for TrainModel {
    type Params = TrainModelParams;
    const KIND: &'static str = "train_model";
    const VERSION: u32 = 1;
    const ABOUT: &'static str =
        "the sentiment model (encoders, fusion, user embedding, heads) trained with candle";

    fn check(&self, p: &TrainModelParams) -> Vec<ParamProblem> {
        let mut problems = check_training(
            p.epochs,
            p.batch_size,
            p.learning_rate,
            p.weight_decay,
            p.grad_clip,
            &p.monitor,
        );
        if p.heads.is_empty() {
            problems.push(ParamProblem::new(
                "heads",
                "name at least one head (a label column)",
            ));
        }
        for (name, w) in &p.heads {
            problems.extend(w.check(&format!("heads.{name}")));
        }
        if !(0.0..1.0).contains(&p.dropout) {
            problems.push(ParamProblem::new("dropout", "must be in [0, 1)"));
        }
        if p.fusion == Fusion::Attention && p.fusion_dim == 0 {
            problems.push(ParamProblem::new("fusion_dim", "must be at least 1"));
        }
        problems
    }

    fn inputs(&self, _: &TrainModelParams) -> Vec<InputSlot> {
        vec![
            InputSlot {
                name: "segments",
                kind: SEGMENTS,
                arity: Arity::One,
                about: "splits, labels, speakers",
            },
            InputSlot {
                name: "features",
                kind: FEATURES,
                arity: Arity::Many,
                about: "one features table per modality",
            },
            InputSlot {
                name: "adapters",
                kind: ADAPTERS,
                arity: Arity::Optional,
                about: "frozen feature adapters in front of their modalities",
            },
        ]
    }

    fn outputs(
        &self,
        p: &TrainModelParams,
        inputs: &BoundInputs,
    ) -> Result<Vec<OutputPort>, Vec<ParamProblem>> {
        let names: Vec<&str> = inputs
            .get("features")
            .into_iter()
            .flatten()
            .map(|r| r.output.as_str())
            .collect();
        let problems: Vec<ParamProblem> = p
            .encoders
            .keys()
            .filter(|m| !names.contains(&m.as_str()))
            .map(|m| {
                ParamProblem::new(
                    &format!("encoders.{m}"),
                    format!(
                        "`{m}` is not one of the `features` inputs ({})",
                        names.join(", ")
                    ),
                )
            })
            .collect();
        if !problems.is_empty() {
            return Err(problems);
        }
        Ok(vec![
            OutputPort::new("model", MODEL),
            OutputPort::new("history", HISTORY),
        ])
    }

    fn uses_device(&self, _: &TrainModelParams) -> bool {
        true
    }

    fn run(&self, p: &TrainModelParams, ctx: &mut RunContext<'_>) -> Result<(), StageError> {
        let device = resolve(ctx.device)?;
        let adapters = match ctx.optional_input("adapters") {
            Some(input) => Some(load_adapters(&input.path, &device)?.adapters),
            None => None,
        };
        let features = ctx.inputs("features").to_vec();
        let frames: Vec<bool> = features
            .iter()
            .map(|f| {
                p.encoders
                    .get(&f.reference.output)
                    .is_some_and(|e| e.kind == super::model::EncoderKind::Lstm)
            })
            .collect();
        let segments = ctx.input("segments")?.clone();
        let data = Dataset::load(&segments, &features, &frames)?;
        let (train, valid) = (data.rows(Split::Train), data.rows(Split::Valid));
        check_data(
            &data,
            &train,
            &valid,
            p.heads.keys(),
            &segments.reference.to_string(),
        )?;
        let mut users: Vec<String> = train
            .iter()
            .filter_map(|&r| data.users[r].clone())
            .collect();
        users.sort();
        users.dedup();
        let arch = Architecture {
            modalities: data
                .modalities
                .iter()
                .map(|m| {
                    (
                        m.name.clone(),
                        adapters
                            .as_ref()
                            .map(|a| a.output_width(&m.name, m.dim))
                            .unwrap_or(m.dim),
                    )
                })
                .collect(),
            encoders: p.encoders.clone(),
            fusion: p.fusion,
            fusion_dim: p.fusion_dim,
            fusion_mlp: p.fusion_mlp.clone(),
            user_embedding: p.user_embedding,
            users: if p.user_embedding > 0 {
                users
            } else {
                Vec::new()
            },
            heads: p.heads.keys().cloned().collect(),
            dropout: p.dropout,
        };
        let mut store = ParamStore::new(ctx.seed, &device);
        let model = Model::build(&mut store, &arch)?;
        let task = Task {
            model: &model,
            data: &data,
            frames: &frames,
            adapters: adapters.as_ref(),
            weights: &p.heads,
            device: &device,
        };
        let config = FitConfig {
            phase: "train".into(),
            epochs: p.epochs,
            batch_size: p.batch_size,
            lr: p.learning_rate,
            weight_decay: p.weight_decay,
            grad_clip: p.grad_clip,
            patience: p.patience,
            schedule: p.schedule,
            plateau_factor: p.plateau_factor,
            plateau_patience: p.plateau_patience,
            on_nan: p.on_nan,
            seed: ctx.seed,
            start_from_current: false,
        };
        let monitor =
            Monitor::parse(&p.monitor).ok_or_else(|| StageError::config("invalid monitor"))?;
        let fitted = fit(
            &task,
            &store,
            store.vars(),
            &train,
            &valid,
            &config,
            &monitor,
            ctx.progress,
        )?;
        save_model(&store, &arch, &fitted, ctx.output("model")?)?;
        history::write(&fitted.history, ctx.output("history")?, ctx.table_meta())?;
        tracing::info!(
            "{}: best epoch {} ({}:{} = {:.4}){}",
            ctx.stage_id,
            fitted.best_epoch,
            monitor.subject,
            monitor.metric,
            fitted.best_value,
            fitted
                .stopped
                .as_ref()
                .map(|s| format!("; {s}"))
                .unwrap_or_default()
        );
        ctx.report("parameters", store.count());
        ctx.report("segments", [train.len(), valid.len()]);
        ctx.report("segments_without_every_modality", data.dropped);
        ctx.report("best_epoch", fitted.best_epoch);
        ctx.report("best_value", fitted.best_value);
        ctx.report("stopped", fitted.stopped);
        Ok(())
    }
}

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

/// Writes the model's parameters with its architecture in the metadata.
pub fn save_model(
    store: &ParamStore,
    arch: &Architecture,
    fitted: &super::fit::Fitted,
    path: &std::path::Path,
) -> Result<(), StageError> {
    let mut meta = HashMap::new();
    meta.insert("mmflow.kind".to_string(), "model".to_string());
    meta.insert(
        "mmflow.architecture".to_string(),
        serde_json::to_string(arch).map_err(|e| StageError::Internal(e.to_string()))?,
    );
    meta.insert(
        "mmflow.best_epoch".to_string(),
        fitted.best_epoch.to_string(),
    );
    if let Some(s) = &fitted.stopped {
        meta.insert("mmflow.stopped".to_string(), s.clone());
    }
    store.save_prefix(path, "model.", meta)
}

/// The sentiment model as the training loop sees it.
pub struct Task<'a> {
    /// The model.
    pub model: &'a Model,
    /// The data.
    pub data: &'a Dataset,
    /// Which modalities are fed as sequences.
    pub frames: &'a [bool],
    /// Adapters in front of modalities.
    pub adapters: Option<&'a Adapters>,
    /// Loss weights per head.
    pub weights: &'a BTreeMap<String, LossWeights>,
    /// Device.
    pub device: &'a Device,
}

impl Task<'_> {
    /// Predictions (one vector per head, in head order) for `rows`, evaluation mode.
    pub fn predict(&self, rows: &[usize]) -> Result<Vec<Vec<f32>>, StageError> {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
        let mut out = vec![Vec::with_capacity(rows.len()); self.model.arch.heads.len()];
        for chunk in rows.chunks(512) {
            let mut pass = Pass {
                train: false,
                rng: &mut rng,
            };
            let x = inputs(
                self.data,
                chunk,
                self.frames,
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
            self.frames,
            self.adapters,
            self.device,
            pass,
        )?;
        let users = self.model.user_ids(self.data, rows, self.device)?;
        let outputs = self.model.forward(&x, users.as_ref(), pass)?;
        let mut total: Option<Tensor> = None;
        for (head, p) in self.model.arch.heads.iter().zip(outputs) {
            let (y, keep) = labels(self.data, head, rows, self.device)?;
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
            let l = head_loss(&p, &y, &self.weights[head])?;
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
            let values = &self.data.labels[head];
            let (p, y): (Vec<f64>, Vec<f64>) = rows
                .iter()
                .zip(pred)
                .filter_map(|(&r, &v)| values[r].map(|l| (v as f64, l as f64)))
                .unzip();
            if p.is_empty() {
                continue;
            }
            let pt = Tensor::from_vec(
                p.iter().map(|&v| v as f32).collect::<Vec<_>>(),
                p.len(),
                self.device,
            )
            .map_err(err("measure"))?;
            let yt = Tensor::from_vec(
                y.iter().map(|&v| v as f32).collect::<Vec<_>>(),
                y.len(),
                self.device,
            )
            .map_err(err("measure"))?;
            let loss = super::optim::scalar(&head_loss(&pt, &yt, &self.weights[head])?)?;
            total += loss;
            out.insert((head.clone(), "loss".into()), loss);
            for (key, name) in [
                ("mae", "MAE"),
                ("rmse", "RMSE"),
                ("corr", "Corr"),
                ("ccc", "CCC"),
            ] {
                out.insert((head.clone(), key.into()), metric(name, &p, &y));
            }
            if head == "sentiment" {
                out.insert((head.clone(), "acc2".into()), metric("Has0_acc_2", &p, &y));
            }
        }
        // Two or more continuous heads (valence and arousal): their mean CCC, to monitor.
        let cccs: Vec<f64> = out
            .iter()
            .filter(|((h, m), _)| h != "sentiment" && m == "ccc")
            .map(|(_, v)| *v)
            .collect();
        if cccs.len() >= 2 {
            out.insert(
                ("mean".into(), "ccc".into()),
                cccs.iter().sum::<f64>() / cccs.len() as f64,
            );
        }
        out.insert(("total".into(), "loss".into()), total);
        Ok(out)
    }
}
