//! MMSA's model zoo as `train_model` architectures: the same layers, shapes,
//! initialisations, dropouts and parameter names as MMSA's own modules, so a PyTorch
//! checkpoint of one loads by name and trains alike.
//!
//! Follows MMSA 2.2.1 (thuiar/MMSA, tag `v_2.2.1`, commit
//! `48bb2375d0ef7ec7a0b6ee2a9ca67fb80a31d2fe`): `MMSA/models/singleTask/LF_DNN.py` (`LF_DNN`),
//! `MMSA/models/singleTask/TFN.py` (`TFN`), `MMSA/models/subNets/FeatureNets.py` (`SubNet`,
//! `TextSubNet`) and the defaults of `MMSA/config/config_regression.json`. As MMSA's data
//! loader does for these models (`need_normalized`), audio and video arrive as the mean over
//! their padded length, text as the whole padded sequence (see [`ZooArchitecture::lengths`]).

mod subnets;

use candle_core::Tensor;
use mmflow_pipeline::{KeyPath, ParamProblem, StageError};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use self::subnets::{SubNet, TextSubNet};
use super::data::Feed;
use super::device::err;
use super::nn::{dropout, Linear, Pass};
use super::weights::ParamStore;

type Result<T> = std::result::Result<T, StageError>;

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
}

impl ZooModel {
    /// Its name in configs (MMSA's `model_name`).
    pub fn name(self) -> &'static str {
        match self {
            ZooModel::LfDnn => "lf_dnn",
            ZooModel::Tfn => "tfn",
        }
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
    /// Width of the text sub-network's output.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub text_out: Option<usize>,
    /// Width of the post-fusion layers.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub post_fusion_dim: Option<usize>,
    /// Dropout of the audio, video and text sub-networks and after fusion (MMSA's order; the
    /// text one is unused, as in MMSA, whose one-layer text LSTM drops nothing).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dropouts: Option<[f32; 4]>,
}

impl MmsaSettings {
    /// True when nothing is set (skipped in the canonical params).
    pub fn is_empty(&self) -> bool {
        *self == MmsaSettings::default()
    }

    /// Problems with the values set, under `key`.
    pub fn check(&self, key: &KeyPath) -> Vec<ParamProblem> {
        let mut problems = Vec::new();
        let mut at = |field: &str, message: &str| {
            problems.push(ParamProblem::at(key.key(field), message.to_string()))
        };
        if self.hidden_dims.is_some_and(|d| d.contains(&0)) {
            at("hidden_dims", "every width must be at least 1");
        }
        if self.text_out == Some(0) {
            at("text_out", "must be at least 1");
        }
        if self.post_fusion_dim == Some(0) {
            at("post_fusion_dim", "must be at least 1");
        }
        if self
            .dropouts
            .is_some_and(|d| d.iter().any(|p| !(0.0..1.0).contains(p)))
        {
            at("dropouts", "every dropout must be in [0, 1)");
        }
        problems
    }

    /// The settings of `model` on `dataset`: these over MMSA's defaults.
    pub fn resolve(&self, model: ZooModel, dataset: &str) -> Resolved {
        let d = mmsa_defaults(model, dataset);
        Resolved {
            hidden_dims: self.hidden_dims.unwrap_or(d.hidden_dims),
            text_out: self.text_out.unwrap_or(d.text_out),
            post_fusion_dim: self.post_fusion_dim.unwrap_or(d.post_fusion_dim),
            dropouts: self.dropouts.unwrap_or(d.dropouts),
        }
    }
}

/// A zoo model's settings with every value decided.
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
    let r = |hidden_dims, text_out, post_fusion_dim, dropouts| Resolved {
        hidden_dims,
        text_out,
        post_fusion_dim,
        dropouts,
    };
    match (model, defaults_dataset(dataset)) {
        (ZooModel::LfDnn, "mosei") => r([128, 32, 128], 128, 128, [0.2; 4]),
        (ZooModel::LfDnn, "sims") => r([128, 32, 128], 256, 32, [0.3, 0.3, 0.3, 0.5]),
        (ZooModel::LfDnn, _) => r([128, 16, 128], 256, 128, [0.2; 4]),
        (ZooModel::Tfn, "mosei") => r([128, 16, 128], 128, 16, [0.4; 4]),
        (ZooModel::Tfn, "sims") => r([128, 32, 128], 256, 32, [0.4; 4]),
        (ZooModel::Tfn, _) => r([128, 32, 128], 32, 64, [0.3, 0.3, 0.3, 0.5]),
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
    /// weight decay added to the gradient, MMSA's batch size, learning rate and weight decay,
    /// a constant rate, no clipping, and the best epoch by the validation loss with MMSA's
    /// `early_stop` (8) as the patience. `optim.epochs` still caps the epochs (MMSA has no
    /// cap); nothing else in `optim` or `heads` may be set.
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
}

/// MMSA's training settings of `model` on `dataset` (`config_regression.json` and the
/// trainers, MMSA 2.2.1: `TFN.py` builds Adam without weight decay).
pub fn mmsa_training(model: ZooModel, dataset: &str) -> MmsaTraining {
    let t = |batch_size, learning_rate, weight_decay| MmsaTraining {
        batch_size,
        learning_rate,
        weight_decay,
        early_stop: 8,
    };
    match (model, defaults_dataset(dataset)) {
        (ZooModel::LfDnn, "mosei") => t(64, 0.002, 0.001),
        (ZooModel::LfDnn, "sims") => t(128, 0.005, 0.005),
        (ZooModel::LfDnn, _) => t(128, 0.001, 0.01),
        (ZooModel::Tfn, "mosei") => t(128, 0.005, 0.0),
        (ZooModel::Tfn, "sims") => t(32, 0.0005, 0.0),
        (ZooModel::Tfn, _) => t(32, 0.001, 0.0),
    }
}

/// Which of the model's modalities plays which part.
pub const ROLES: [&str; 3] = ["text", "audio", "video"];

/// The role a features input named `name` plays (`text`; `audio`/`acoustic`;
/// `video`/`visual`/`vision`), as an index into [`ROLES`].
pub fn role_of(name: &str) -> Option<usize> {
    match name {
        "text" => Some(0),
        "audio" | "acoustic" => Some(1),
        "video" | "visual" | "vision" => Some(2),
        _ => None,
    }
}

/// A zoo model as a checkpoint records it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ZooArchitecture {
    /// Which model.
    pub model: ZooModel,
    /// Its settings.
    pub settings: Resolved,
    /// The dataset whose MMSA defaults filled in the settings not given.
    pub defaults_from: String,
    /// Index into the architecture's modalities of text, audio and video.
    pub roles: [usize; 3],
    /// The padded length of text, audio and video (the longest sequence of each in the
    /// training data, as MMSA's pickles pad to): text runs through the LSTM padded (or cut) to
    /// it, audio and video are averaged over it (their frames' sum ÷ this length), as MMSA's
    /// loader averages a padded array.
    pub lengths: [usize; 3],
}

/// A built zoo model.
pub struct ZooNet {
    /// What it was built from.
    pub arch: ZooArchitecture,
    audio: SubNet,
    video: SubNet,
    text: TextSubNet,
    post_fusion: [Linear; 3],
}

impl ZooNet {
    /// Builds the model over modalities of widths `[text, audio, video]` with `heads` outputs,
    /// parameters `model.<MMSA's name>`.
    pub fn build(
        store: &mut ParamStore,
        arch: &ZooArchitecture,
        widths: [usize; 3],
        heads: usize,
    ) -> Result<ZooNet> {
        let s = arch.settings;
        let [text_hidden, audio_hidden, video_hidden] = s.hidden_dims;
        let [audio_p, video_p, _, _] = s.dropouts;
        let audio = SubNet::new(
            store,
            "model.audio_subnet",
            widths[1],
            audio_hidden,
            audio_p,
        )?;
        let video = SubNet::new(
            store,
            "model.video_subnet",
            widths[2],
            video_hidden,
            video_p,
        )?;
        let text = TextSubNet::new(
            store,
            "model.text_subnet",
            widths[0],
            text_hidden,
            s.text_out,
        )?;
        let fused = match arch.model {
            ZooModel::LfDnn => s.text_out + video_hidden + audio_hidden,
            ZooModel::Tfn => (s.text_out + 1) * (video_hidden + 1) * (audio_hidden + 1),
        };
        let post = |store: &mut ParamStore, i: usize, input, output| {
            Linear::new(
                store,
                &format!("model.post_fusion_layer_{i}"),
                input,
                output,
            )
        };
        let post_fusion = [
            post(store, 1, fused, s.post_fusion_dim)?,
            post(store, 2, s.post_fusion_dim, s.post_fusion_dim)?,
            post(store, 3, s.post_fusion_dim, heads)?,
        ];
        Ok(ZooNet {
            arch: arch.clone(),
            audio,
            video,
            text,
            post_fusion,
        })
    }

    /// How each of `n` modalities reaches the model: text padded to its length, audio and
    /// video averaged over theirs.
    pub fn feeds(&self, n: usize) -> Vec<Feed> {
        let mut feeds = vec![Feed::Pooled; n];
        let [text, audio, video] = self.arch.roles;
        let [text_len, audio_len, video_len] = self.arch.lengths;
        feeds[text] = Feed::Padded(text_len);
        feeds[audio] = Feed::PaddedMean(audio_len);
        feeds[video] = Feed::PaddedMean(video_len);
        feeds
    }

    /// B × heads from text (B × T × D, padded), audio and video (B × D, averaged).
    pub fn forward(
        &self,
        text: &Tensor,
        audio: &Tensor,
        video: &Tensor,
        pass: &mut Pass<'_>,
    ) -> Result<Tensor> {
        let audio_h = self.audio.forward(audio, pass)?;
        let video_h = self.video.forward(video, pass)?;
        let text_h = self.text.forward(text, pass.train)?;
        let fusion = match self.arch.model {
            ZooModel::LfDnn => {
                Tensor::cat(&[audio_h, video_h, text_h], 1).map_err(err("late fusion"))?
            }
            ZooModel::Tfn => tensor_fusion(&audio_h, &video_h, &text_h)?,
        };
        let x = dropout(&fusion, self.arch.settings.dropouts[3], pass)?;
        let x = self.post_fusion[0].forward_relu(&x)?;
        let x = self.post_fusion[1].forward_relu(&x)?;
        let out = self.post_fusion[2].forward(&x)?;
        match self.arch.model {
            ZooModel::LfDnn => Ok(out),
            // TFN's regression range: sigmoid × 6 − 3.
            ZooModel::Tfn => candle_nn::ops::sigmoid(&out)
                .and_then(|s| s.affine(6.0, -3.0))
                .map_err(err("tfn output")),
        }
    }
}

/// TFN's fusion: 1 appended to each modality's vector, then the flattened outer product
/// audio ⊗ video ⊗ text (B × (a+1)(v+1)(t+1)), in TFN's element order.
fn tensor_fusion(audio: &Tensor, video: &Tensor, text: &Tensor) -> Result<Tensor> {
    let inner = || -> candle_core::Result<Tensor> {
        let b = audio.dim(0)?;
        let with_one = |x: &Tensor| -> candle_core::Result<Tensor> {
            let one = Tensor::ones((b, 1), x.dtype(), x.device())?;
            Tensor::cat(&[&one, x], 1)
        };
        let (a, v, t) = (with_one(audio)?, with_one(video)?, with_one(text)?);
        let av = a.unsqueeze(2)?.matmul(&v.unsqueeze(1)?)?;
        let (da, dv, dt) = (a.dim(1)?, v.dim(1)?, t.dim(1)?);
        av.reshape((b, da * dv, 1))?
            .matmul(&t.unsqueeze(1)?)?
            .reshape((b, da * dv * dt))
    };
    inner().map_err(err("tensor fusion"))
}

#[cfg(test)]
mod tests;
