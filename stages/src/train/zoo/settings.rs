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
}

impl ZooModel {
    /// Every zoo model.
    pub const ALL: [ZooModel; 3] = [ZooModel::LfDnn, ZooModel::Tfn, ZooModel::Lmf];

    /// Its name in configs (MMSA's `model_name`).
    pub fn name(self) -> &'static str {
        match self {
            ZooModel::LfDnn => "lf_dnn",
            ZooModel::Tfn => "tfn",
            ZooModel::Lmf => "lmf",
        }
    }

    /// The keys of `mmsa` it takes.
    pub fn settings(self) -> &'static [&'static str] {
        match self {
            ZooModel::LfDnn | ZooModel::Tfn => {
                &["hidden_dims", "text_out", "post_fusion_dim", "dropouts"]
            }
            ZooModel::Lmf => &["hidden_dims", "dropouts", "rank"],
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
    /// Hidden widths of the text LSTM, the audio and the video sub-network (MMSA's order).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hidden_dims: Option<[usize; 3]>,
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
}

impl MmsaSettings {
    /// True when nothing is set (skipped in the canonical params).
    pub fn is_empty(&self) -> bool {
        *self == MmsaSettings::default()
    }

    /// Problems with the values set for `model`, under `key`: a value out of range, or a key
    /// `model` does not have.
    pub fn check(&self, model: ZooModel, key: &KeyPath) -> Vec<ParamProblem> {
        let mut problems = Vec::new();
        let mut at =
            |field: &str, message: String| problems.push(ParamProblem::at(key.key(field), message));
        if self.hidden_dims.is_some_and(|d| d.contains(&0)) {
            at("hidden_dims", "every width must be at least 1".into());
        }
        for (field, value) in [
            ("text_out", self.text_out),
            ("post_fusion_dim", self.post_fusion_dim),
            ("rank", self.rank),
        ] {
            if value.is_none() {
                continue;
            }
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
            } else if value == Some(0) {
                at(field, "must be at least 1".into());
            }
        }
        if self
            .dropouts
            .is_some_and(|d| d.iter().any(|p| !(0.0..1.0).contains(p)))
        {
            at("dropouts", "every dropout must be in [0, 1)".into());
        }
        problems
    }

    /// The settings of `model` on `dataset`: these over MMSA's defaults.
    pub fn resolve(&self, model: ZooModel, dataset: &str) -> Resolved {
        let d = mmsa_defaults(model, dataset);
        let hidden_dims = self.hidden_dims.unwrap_or(d.hidden_dims);
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
        }
    }
}

/// A zoo model's settings with every value decided (those a model does not have are 0).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Resolved {
    /// Text LSTM, audio and video hidden widths.
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
    }
}
