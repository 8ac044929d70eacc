//! The zoo's models by name, their settings under MMSA's names, MMSA's defaults for them per
//! dataset, and MMSA's training recipe (`MMSA/config/config_regression.json` and
//! `MMSA/trains/singleTask/<MODEL>.py`, MMSA 2.2.1).

use mmflow_pipeline::{KeyPath, ParamProblem};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The model `train_model` trains.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema, Default)]
#[serde(rename_all = "snake_case")]
pub enum ArchitectureName {
    /// mmflow's own: `encoders`, `fusion`, `fusion_mlp`, `user_embedding`, `dropout`.
    #[default]
    Mmflow,
    /// MMSA's LF-DNN (late fusion of three sub-networks), settings under `mmsa`.
    LfDnn,
    /// MMSA's TFN (tensor fusion), settings under `mmsa`.
    Tfn,
    /// MMSA's LMF (low-rank multimodal fusion), settings under `mmsa`.
    Lmf,
    /// MMSA's EF-LSTM (early fusion: the aligned modalities' frames concatenated, one LSTM),
    /// settings under `mmsa`; needs aligned modalities.
    EfLstm,
}

impl ArchitectureName {
    /// True for mmflow's own (skipped in the canonical params, so fingerprints of configs
    /// written before the zoo stay as they were).
    pub fn is_mmflow(&self) -> bool {
        *self == ArchitectureName::Mmflow
    }

    /// The zoo model, if it is one.
    pub fn zoo(self) -> Option<ZooModel> {
        match self {
            ArchitectureName::Mmflow => None,
            ArchitectureName::LfDnn => Some(ZooModel::LfDnn),
            ArchitectureName::Tfn => Some(ZooModel::Tfn),
            ArchitectureName::Lmf => Some(ZooModel::Lmf),
            ArchitectureName::EfLstm => Some(ZooModel::EfLstm),
        }
    }
}

/// A model of MMSA's zoo.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ZooModel {
    /// `LF_DNN`.
    LfDnn,
    /// `TFN`.
    Tfn,
    /// `LMF`.
    Lmf,
    /// `EF_LSTM`.
    EfLstm,
}

impl ZooModel {
    /// Every zoo model.
    pub const ALL: [ZooModel; 4] = [
        ZooModel::LfDnn,
        ZooModel::Tfn,
        ZooModel::Lmf,
        ZooModel::EfLstm,
    ];

    /// Its name in configs (MMSA's `model_name`).
    pub fn name(self) -> &'static str {
        match self {
            ZooModel::LfDnn => "lf_dnn",
            ZooModel::Tfn => "tfn",
            ZooModel::Lmf => "lmf",
            ZooModel::EfLstm => "ef_lstm",
        }
    }

    /// Whether it needs the modalities aligned (MMSA's `need_data_aligned`): the same number
    /// of steps in text, audio and video of every segment.
    pub fn needs_aligned(self) -> bool {
        self == ZooModel::EfLstm
    }

    /// The keys of `mmsa` it takes.
    pub fn settings(self) -> &'static [&'static str] {
        match self {
            ZooModel::LfDnn | ZooModel::Tfn => {
                &["hidden_dims", "text_out", "post_fusion_dim", "dropouts"]
            }
            ZooModel::Lmf => &["hidden_dims", "dropouts", "rank"],
            ZooModel::EfLstm => &["hidden_dims", "num_layers", "dropout"],
        }
    }

    /// Whether it takes the `mmsa` key `key`.
    pub fn has_setting(self, key: &str) -> bool {
        self.settings().contains(&key)
    }
}

/// A zoo model's settings, under MMSA's parameter names; each left out takes MMSA's default
/// for the dataset of the segments (`config_regression.json`: MOSI, MOSEI or SIMS; MOSI's
/// for any other dataset).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MmsaSettings {
    /// Hidden widths of the text LSTM, the audio and the video sub-network (MMSA's order); for
    /// EF-LSTM one number, the width of its LSTM.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hidden_dims: Option<HiddenDims>,
    /// Width of the text sub-network's output (LF-DNN, TFN; LMF's is half the text LSTM's
    /// width, as in MMSA).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub text_out: Option<usize>,
    /// Width of the post-fusion layers (LF-DNN, TFN).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub post_fusion_dim: Option<usize>,
    /// Dropout of the audio, video and text sub-networks and after fusion (MMSA's order; the
    /// text one is unused, as in MMSA, whose one-layer text LSTM drops nothing, and so is the
    /// post-fusion one of LMF, which MMSA's `forward` never applies).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dropouts: Option<[f32; 4]>,
    /// The rank of LMF's modality factors (LMF only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rank: Option<usize>,
    /// The layers of EF-LSTM's LSTM (EF-LSTM only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub num_layers: Option<usize>,
    /// EF-LSTM's dropout: between its LSTM's layers, after the LSTM and after its ReLU layer
    /// (EF-LSTM only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dropout: Option<f32>,
}

/// MMSA's `hidden_dims`: three widths (text, audio, video) for the sub-network models, one for
/// EF-LSTM.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum HiddenDims {
    /// EF-LSTM's LSTM width.
    One(usize),
    /// Text, audio, video.
    PerModality([usize; 3]),
}

impl MmsaSettings {
    /// True when nothing is set (skipped in the canonical params).
    pub fn is_empty(&self) -> bool {
        *self == MmsaSettings::default()
    }

    /// Problems with the values set for `model`, under `key`: a key `model` does not have,
    /// or a value out of range.
    pub fn check(&self, model: ZooModel, key: &KeyPath) -> Vec<ParamProblem> {
        let mut problems = Vec::new();
        let mut at =
            |field: &str, message: String| problems.push(ParamProblem::at(key.key(field), message));
        for field in self.fields_set() {
            if !model.has_setting(field) {
                at(
                    field,
                    format!(
                        "`{}` has no `{field}` (MMSA's {} takes {})",
                        model.name(),
                        model.name(),
                        model.settings().join(", ")
                    ),
                );
            }
        }
        match (self.hidden_dims, model) {
            (Some(HiddenDims::PerModality(_)), ZooModel::EfLstm) => at(
                "hidden_dims",
                "`ef_lstm` has one LSTM: its `hidden_dims` is one width (MMSA's `hidden_dims = 128`)".into(),
            ),
            (Some(HiddenDims::One(_)), _) if model != ZooModel::EfLstm => at(
                "hidden_dims",
                format!(
                    "`{}` takes three widths: text, audio, video (MMSA's `hidden_dims = [128, 16, 128]`)",
                    model.name()
                ),
            ),
            (Some(HiddenDims::One(0)), _) => at("hidden_dims", "must be at least 1".into()),
            (Some(HiddenDims::PerModality(d)), _) if d.contains(&0) => {
                at("hidden_dims", "every width must be at least 1".into())
            }
            _ => {}
        }
        for (field, value) in [
            ("text_out", self.text_out),
            ("post_fusion_dim", self.post_fusion_dim),
            ("rank", self.rank),
            ("num_layers", self.num_layers),
        ] {
            if value == Some(0) && model.has_setting(field) {
                at(field, "must be at least 1".into());
            }
        }
        if self.num_layers.is_some_and(|n| n > MAX_LAYERS) {
            at("num_layers", format!("at most {MAX_LAYERS}"));
        }
        if self
            .dropouts
            .is_some_and(|d| d.iter().any(|p| !(0.0..1.0).contains(p)))
        {
            at("dropouts", "every dropout must be in [0, 1)".into());
        }
        if self.dropout.is_some_and(|p| !(0.0..1.0).contains(&p)) {
            at("dropout", "must be in [0, 1)".into());
        }
        problems
    }

    /// The keys set.
    fn fields_set(&self) -> Vec<&'static str> {
        [
            ("hidden_dims", self.hidden_dims.is_some()),
            ("text_out", self.text_out.is_some()),
            ("post_fusion_dim", self.post_fusion_dim.is_some()),
            ("dropouts", self.dropouts.is_some()),
            ("rank", self.rank.is_some()),
            ("num_layers", self.num_layers.is_some()),
            ("dropout", self.dropout.is_some()),
        ]
        .into_iter()
        .filter_map(|(field, set)| set.then_some(field))
        .collect()
    }

    /// The settings of `model` on `dataset`: these over MMSA's defaults.
    pub fn resolve(&self, model: ZooModel, dataset: &str) -> Resolved {
        let d = mmsa_defaults(model, dataset);
        let hidden_dims = match self.hidden_dims {
            Some(HiddenDims::PerModality(dims)) => dims,
            Some(HiddenDims::One(width)) => [width; 3],
            None => d.hidden_dims,
        };
        Resolved {
            hidden_dims,
            text_out: match model {
                // LMF: `self.text_out = self.text_hidden // 2`.
                ZooModel::Lmf => (hidden_dims[0] / 2).max(1),
                _ => self.text_out.unwrap_or(d.text_out),
            },
            post_fusion_dim: self.post_fusion_dim.unwrap_or(d.post_fusion_dim),
            dropouts: self.dropouts.unwrap_or(d.dropouts),
            rank: self.rank.unwrap_or(d.rank),
            num_layers: self.num_layers.unwrap_or(d.num_layers),
            dropout: self.dropout.unwrap_or(d.dropout),
        }
    }
}

/// The most layers EF-LSTM's LSTM may have (MMSA's configs use 2–4).
pub const MAX_LAYERS: usize = 16;

/// A zoo model's settings with every value decided (those a model does not have are 0).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Resolved {
    /// Text LSTM, audio and video hidden widths (EF-LSTM: its LSTM's width, three times).
    pub hidden_dims: [usize; 3],
    /// Text sub-network output width.
    pub text_out: usize,
    /// Post-fusion width.
    pub post_fusion_dim: usize,
    /// Audio, video, text, post-fusion dropout.
    pub dropouts: [f32; 4],
    /// LMF's rank.
    #[serde(default)]
    pub rank: usize,
    /// EF-LSTM's LSTM layers.
    #[serde(default)]
    pub num_layers: usize,
    /// EF-LSTM's dropout.
    #[serde(default)]
    pub dropout: f32,
}

/// The dataset whose MMSA defaults apply to segments of `dataset`.
pub fn defaults_dataset(dataset: &str) -> &'static str {
    match dataset {
        "mosei" => "mosei",
        "sims" | "simsv2" => "sims",
        _ => "mosi",
    }
}

/// MMSA's `datasetParams` of `model` (`config_regression.json`, MMSA 2.2.1).
fn mmsa_defaults(model: ZooModel, dataset: &str) -> Resolved {
    let r = |hidden_dims, text_out, post_fusion_dim, dropouts, rank| Resolved {
        hidden_dims,
        text_out,
        post_fusion_dim,
        dropouts,
        rank,
        num_layers: 0,
        dropout: 0.0,
    };
    // EF-LSTM: one width, layers and one dropout, nothing else.
    let ef = |hidden: usize, num_layers, dropout| Resolved {
        num_layers,
        dropout,
        ..r([hidden; 3], 0, 0, [0.0; 4], 0)
    };
    match (model, defaults_dataset(dataset)) {
        (ZooModel::LfDnn, "mosei") => r([128, 32, 128], 128, 128, [0.2; 4], 0),
        (ZooModel::LfDnn, "sims") => r([128, 32, 128], 256, 32, [0.3, 0.3, 0.3, 0.5], 0),
        (ZooModel::LfDnn, _) => r([128, 16, 128], 256, 128, [0.2; 4], 0),
        (ZooModel::Tfn, "mosei") => r([128, 16, 128], 128, 16, [0.4; 4], 0),
        (ZooModel::Tfn, "sims") => r([128, 32, 128], 256, 32, [0.4; 4], 0),
        (ZooModel::Tfn, _) => r([128, 32, 128], 32, 64, [0.3, 0.3, 0.3, 0.5], 0),
        // LMF has no `text_out` of its own (see `resolve`) and no post-fusion layers.
        (ZooModel::Lmf, "mosei") => r([128, 16, 128], 0, 0, [0.2; 4], 4),
        (ZooModel::Lmf, "sims") => r([64, 16, 64], 0, 0, [0.2; 4], 4),
        (ZooModel::Lmf, _) => r([128, 16, 128], 0, 0, [0.3; 4], 3),
        (ZooModel::EfLstm, "mosei") => ef(256, 2, 0.4),
        (ZooModel::EfLstm, "sims") => ef(32, 3, 0.5),
        (ZooModel::EfLstm, _) => ef(128, 4, 0.5),
    }
}

/// How a model is trained.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema, Default)]
#[serde(rename_all = "snake_case")]
pub enum Recipe {
    /// As `heads` and `optim` say.
    #[default]
    Own,
    /// MMSA's trainer for the architecture (`MMSA/trains/singleTask/<MODEL>.py`) with its
    /// settings for the segments' dataset (`config_regression.json`): L1 loss, Adam with
    /// weight decay added to the gradient, MMSA's batch size, learning rate (LMF: its factors
    /// at `factor_lr`, its fusion weights and bias left untrained, as MMSA's trainer leaves
    /// them) and weight decay, a constant rate, no clipping, and the best epoch by the
    /// validation loss with MMSA's `early_stop` (8) as the patience. `optim.epochs` still caps
    /// the epochs (MMSA has no cap); nothing else in `optim` or `heads` may be set.
    Mmsa,
}

impl Recipe {
    /// True for `own` (skipped in the canonical params).
    pub fn is_own(&self) -> bool {
        *self == Recipe::Own
    }
}

/// The training settings of MMSA's recipe for a model on a dataset.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MmsaTraining {
    /// `batch_size`.
    pub batch_size: usize,
    /// `learning_rate`.
    pub learning_rate: f64,
    /// `weight_decay` (0 where the trainer passes none: TFN's).
    pub weight_decay: f64,
    /// `early_stop`: epochs without a better validation loss before stopping.
    pub early_stop: usize,
    /// LMF's `factor_lr`: the learning rate of its modality factors.
    pub factor_lr: Option<f64>,
}

/// MMSA's training settings of `model` on `dataset` (`config_regression.json` and the
/// trainers, MMSA 2.2.1: `TFN.py` builds Adam without weight decay).
pub fn mmsa_training(model: ZooModel, dataset: &str) -> MmsaTraining {
    let t = |batch_size, learning_rate, weight_decay, factor_lr| MmsaTraining {
        batch_size,
        learning_rate,
        weight_decay,
        early_stop: 8,
        factor_lr,
    };
    match (model, defaults_dataset(dataset)) {
        (ZooModel::LfDnn, "mosei") => t(64, 0.002, 0.001, None),
        (ZooModel::LfDnn, "sims") => t(128, 0.005, 0.005, None),
        (ZooModel::LfDnn, _) => t(128, 0.001, 0.01, None),
        (ZooModel::Tfn, "mosei") => t(128, 0.005, 0.0, None),
        (ZooModel::Tfn, "sims") => t(32, 0.0005, 0.0, None),
        (ZooModel::Tfn, _) => t(32, 0.001, 0.0, None),
        (ZooModel::Lmf, "mosei") => t(32, 0.001, 0.001, Some(0.001)),
        (ZooModel::Lmf, "sims") => t(64, 0.002, 0.005, Some(0.0005)),
        (ZooModel::Lmf, _) => t(64, 0.001, 0.005, Some(0.001)),
        (ZooModel::EfLstm, "mosei") => t(128, 0.005, 0.0001, None),
        (ZooModel::EfLstm, "sims") => t(128, 0.0005, 0.001, None),
        (ZooModel::EfLstm, _) => t(32, 0.001, 0.005, None),
    }
}
