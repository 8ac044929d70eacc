//! MMSA's model zoo as `train_model` architectures: the same layers, shapes,
//! initialisations, dropouts and parameter names as MMSA's own modules, so a PyTorch
//! checkpoint of one loads by name and trains alike.
//!
//! Follows MMSA 2.2.1 (thuiar/MMSA, tag `v_2.2.1`, commit
//! `48bb2375d0ef7ec7a0b6ee2a9ca67fb80a31d2fe`): `MMSA/models/singleTask/LF_DNN.py` (`LF_DNN`),
//! `MMSA/models/singleTask/TFN.py` (`TFN`), `MMSA/models/singleTask/LMF.py` (`LMF`),
//! `MMSA/models/singleTask/EF_LSTM.py` (`EF_LSTM`), `MMSA/models/singleTask/MULT.py` (`MULT`,
//! with `MMSA/models/subNets/transformers_encoder/`), `MMSA/models/singleTask/MFN.py` (`MFN`),
//! `MMSA/models/subNets/FeatureNets.py` (`SubNet`, `TextSubNet`) and the defaults of
//! `MMSA/config/config_regression.json`. As MMSA's data
//! loader does for the sub-network models (`need_normalized`), audio and video arrive as the
//! mean over their padded length, text as the whole padded sequence (see
//! [`ZooArchitecture::lengths`]); EF-LSTM takes all three as padded sequences, and only
//! aligned ones (`need_data_aligned`: see [`check_aligned`]); MulT takes all three as padded
//! sequences, aligned or not. MFN needs aligned modalities too, and MMSA hands it the text as
//! the padded sequence and audio and video averaged (`need_normalized`), each mean then
//! repeated at every text step by `AlignSubNet`'s average pooling of one step to the text's
//! length (`need_model_aligned`, `MMSA/models/subNets/AlignNets.py`): so does mmflow.

mod early;
mod fusion;
mod mfn;
mod mult;
mod settings;
mod subnets;

use candle_core::Tensor;
use mmflow_pipeline::StageError;
use serde::{Deserialize, Serialize};

use self::early::EarlyFusionLstm;
use self::fusion::{tensor_fusion, LowRankFusion};
use self::mfn::Mfn;
use self::mult::Mult;
pub use self::settings::{
    defaults_dataset, mmsa_training, ArchitectureName, HiddenDims, MfnLayer, MfnSettings,
    MmsaSettings, MmsaTraining, MultSettings, Recipe, Resolved, ZooModel, ROLES,
};
use self::subnets::{SubNet, TextSubNet};
use super::data::{Dataset, Feed};
use super::device::err;
use super::nn::{dropout, Linear, Pass};
use super::optim::ParamGroup;
use super::weights::ParamStore;

type Result<T> = std::result::Result<T, StageError>;

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

/// Why feature adapters cannot sit in front of `model`.
pub fn adapters_refused(model: ZooModel) -> String {
    format!(
        "adapters in front of `{}`: MMSA's architectures take their features as MMSA's loader gives them; apply the adapters first (`apply_adapters`)",
        model.name()
    )
}

/// The most steps a sequence fed padded (see [`ZooModel::padded_roles`]) is padded to: MMSA's
/// files pad to 39–500; a longer padded length (a checkpoint's, or the longest sequence in the
/// training data) is refused rather than allocated for every batch.
pub const MAX_PADDED_LENGTH: usize = 10_000;

impl ZooArchitecture {
    /// Whether this description (as a checkpoint holds it) can be built over `modalities`:
    /// three distinct roles among them, padded lengths from 1 (those fed padded at most
    /// [`MAX_PADDED_LENGTH`]; EF-LSTM's and MFN's three equal; MulT's at least its kernels),
    /// widths, rank and layers from 1.
    pub fn check(&self, modalities: &[&str]) -> std::result::Result<(), String> {
        let [t, a, v] = self.roles;
        if [t, a, v].iter().any(|&i| i >= modalities.len()) || t == a || t == v || a == v {
            return Err(format!(
                "roles {:?} do not name three of its modalities {modalities:?}",
                self.roles
            ));
        }
        let padded = self.model.padded_roles();
        if self.lengths.contains(&0) || padded.iter().any(|&r| self.lengths[r] > MAX_PADDED_LENGTH)
        {
            return Err(format!(
                "padded lengths {:?} (text, audio, video): each must be at least 1, those of the sequences `{}` takes whole at most {MAX_PADDED_LENGTH}",
                self.lengths,
                self.model.name()
            ));
        }
        let s = &self.settings;
        if self.model.needs_aligned() && self.lengths.iter().any(|&l| l != self.lengths[0]) {
            return Err(format!(
                "`{}` with padded lengths {:?}: aligned modalities have one length",
                self.model.name(),
                self.lengths
            ));
        }
        let zero = match self.model {
            ZooModel::EfLstm => {
                s.hidden_dims[0] == 0 || s.num_layers == 0 || s.num_layers > settings::MAX_LAYERS
            }
            ZooModel::Mfn => s.hidden_dims.contains(&0) || s.mfn.has_zero_width(),
            ZooModel::Lmf => s.hidden_dims.contains(&0) || s.text_out == 0 || s.rank == 0,
            ZooModel::LfDnn | ZooModel::Tfn => {
                s.hidden_dims.contains(&0) || s.text_out == 0 || s.post_fusion_dim == 0
            }
            ZooModel::Mult => return s.mult.problem(self.lengths).map_or(Ok(()), Err),
        };
        if zero {
            return Err(format!(
                "`{}` with a width, rank or layer count of 0 (or over {} layers)",
                self.model.name(),
                settings::MAX_LAYERS
            ));
        }
        Ok(())
    }
}

/// A built zoo model.
pub struct ZooNet {
    /// What it was built from.
    pub arch: ZooArchitecture,
    body: ZooBody,
}

/// The layers of a zoo model.
enum ZooBody {
    /// LF-DNN, TFN, LMF: a sub-network per modality, then a fusion.
    SubNets(Box<SubNetworks>),
    /// EF-LSTM: the modalities fused first.
    Early(Box<EarlyFusionLstm>),
    /// MulT: cross-modal transformers.
    Mult(Box<Mult>),
    /// MFN: LSTM cells and a gated memory.
    Mfn(Box<Mfn>),
}

/// LF-DNN's, TFN's and LMF's layers.
struct SubNetworks {
    audio: SubNet,
    video: SubNet,
    text: TextSubNet,
    fusion: Fusion,
}

/// What follows the three sub-networks.
enum Fusion {
    /// LF-DNN: the three concatenated, then three layers.
    Late([Linear; 3]),
    /// TFN: their outer product, then three layers, then sigmoid × 6 − 3.
    Tensor([Linear; 3]),
    /// LMF: low-rank factors per modality.
    LowRank(LowRankFusion),
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
        let body = match arch.model {
            ZooModel::EfLstm => ZooBody::Early(Box::new(EarlyFusionLstm::new(
                store,
                &arch.settings,
                arch.lengths[0],
                widths.iter().sum(),
                heads,
            )?)),
            ZooModel::Mult => ZooBody::Mult(Box::new(Mult::new(
                store,
                &arch.settings.mult,
                widths,
                heads,
            )?)),
            ZooModel::Mfn => {
                ZooBody::Mfn(Box::new(Mfn::new(store, &arch.settings, widths, heads)?))
            }
            _ => sub_networks(store, arch, widths, heads)?,
        };
        Ok(ZooNet {
            arch: arch.clone(),
            body,
        })
    }

    /// How many segments one evaluation pass takes at most: 512, fewer for MulT, whose
    /// attention weights (heads × query steps × key steps per segment and transformer) would
    /// otherwise take gigabytes for MOSI's unaligned sequences.
    pub fn rows_per_pass(&self) -> usize {
        match &self.body {
            ZooBody::Mult(net) => net.rows_per_pass(self.arch.lengths),
            _ => 512,
        }
    }

    /// How each of `n` modalities reaches the model: text padded to its length, audio and
    /// video averaged over theirs (EF-LSTM, MulT: all three padded).
    pub fn feeds(&self, n: usize) -> Vec<Feed> {
        let mut feeds = vec![Feed::Pooled; n];
        let [text, audio, video] = self.arch.roles;
        let [text_len, audio_len, video_len] = self.arch.lengths;
        feeds[text] = Feed::Padded(text_len);
        if let ZooBody::Early(_) | ZooBody::Mult(_) = self.body {
            feeds[audio] = Feed::Padded(audio_len);
            feeds[video] = Feed::Padded(video_len);
        } else {
            feeds[audio] = Feed::PaddedMean(audio_len);
            feeds[video] = Feed::PaddedMean(video_len);
        }
        feeds
    }

    /// B × heads from text (B × T × D, padded), audio and video (B × D, averaged; MFN repeats
    /// them at every text step, and takes them as B × T × D too; EF-LSTM: B × T × D, padded as
    /// the text; MulT: B × T × D, each padded to its own length).
    pub fn forward(
        &self,
        text: &Tensor,
        audio: &Tensor,
        video: &Tensor,
        pass: &mut Pass<'_>,
    ) -> Result<Tensor> {
        let nets = match &self.body {
            ZooBody::Early(net) => return net.forward(text, audio, video, pass),
            ZooBody::Mult(net) => return net.forward(text, audio, video, pass),
            ZooBody::Mfn(net) => {
                let audio = repeat_over_steps(audio, text)?;
                let video = repeat_over_steps(video, text)?;
                return net.forward(text, &audio, &video, pass);
            }
            ZooBody::SubNets(nets) => nets,
        };
        let audio_h = nets.audio.forward(audio, pass)?;
        let video_h = nets.video.forward(video, pass)?;
        let text_h = nets.text.forward(text, pass.train)?;
        let post_dropout = self.arch.settings.dropouts[3];
        match &nets.fusion {
            Fusion::Late(layers) => {
                let fused =
                    Tensor::cat(&[audio_h, video_h, text_h], 1).map_err(err("late fusion"))?;
                post_fusion_forward(layers, &dropout(&fused, post_dropout, pass)?)
            }
            Fusion::Tensor(layers) => {
                let fused = tensor_fusion(&audio_h, &video_h, &text_h)?;
                let out = post_fusion_forward(layers, &dropout(&fused, post_dropout, pass)?)?;
                // TFN's regression range: sigmoid × 6 − 3.
                candle_nn::ops::sigmoid(&out)
                    .and_then(|s| s.affine(6.0, -3.0))
                    .map_err(err("tfn output"))
            }
            // MMSA's LMF defines a post-fusion dropout and never applies it.
            Fusion::LowRank(lmf) => lmf.forward(&audio_h, &video_h, &text_h),
        }
    }

    /// The parameters MMSA's trainer optimises, with their share of `training`'s learning
    /// rate: all of them at 1, but LMF's factors at `factor_lr` and its fusion weights and
    /// bias not at all (`[{params[:3], factor_lr}, {params[5:], learning_rate}]`).
    pub fn mmsa_groups(&self, store: &ParamStore, training: &MmsaTraining) -> Vec<ParamGroup> {
        let ZooBody::SubNets(nets) = &self.body else {
            return vec![store.vars().into()];
        };
        let Fusion::LowRank(lmf) = &nets.fusion else {
            return vec![store.vars().into()];
        };
        let factors = lmf.factor_names();
        let untrained = lmf.fusion_names();
        let (factor_vars, rest): (Vec<_>, Vec<_>) = store
            .named_vars()
            .into_iter()
            .filter(|(name, _)| !untrained.contains(name))
            .partition(|(name, _)| factors.contains(name));
        let scale = training
            .factor_lr
            .map_or(1.0, |f| f / training.learning_rate);
        vec![
            ParamGroup {
                lr_scale: scale,
                ..ParamGroup::from(factor_vars.into_iter().map(|(_, v)| v).collect::<Vec<_>>())
            },
            rest.into_iter().map(|(_, v)| v).collect::<Vec<_>>().into(),
        ]
    }
}

/// LF-DNN's, TFN's and LMF's layers: the three sub-networks and the fusion.
fn sub_networks(
    store: &mut ParamStore,
    arch: &ZooArchitecture,
    widths: [usize; 3],
    heads: usize,
) -> Result<ZooBody> {
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
    let widths = [s.text_out, audio_hidden, video_hidden];
    let fusion = match arch.model {
        ZooModel::Tfn => {
            let fused = widths.iter().map(|w| w + 1).product();
            Fusion::Tensor(post_fusion(store, fused, &s, heads)?)
        }
        ZooModel::Lmf => Fusion::LowRank(LowRankFusion::new(store, widths, s.rank, heads)?),
        ZooModel::LfDnn | ZooModel::EfLstm | ZooModel::Mult | ZooModel::Mfn => {
            Fusion::Late(post_fusion(store, widths.iter().sum(), &s, heads)?)
        }
    };
    Ok(ZooBody::SubNets(Box::new(SubNetworks {
        audio,
        video,
        text,
        fusion,
    })))
}

/// Refuses data a model that needs aligned modalities cannot take (MMSA's
/// `need_data_aligned`): a segment whose text, audio and video (`roles`) differ in steps,
/// named with the three counts.
pub fn check_aligned(model: ZooModel, data: &Dataset, roles: [usize; 3]) -> Result<()> {
    if !model.needs_aligned() {
        return Ok(());
    }
    let steps = |row: usize| roles.map(|m| data.modalities[m].frames_in(row));
    let Some(row) = (0..data.ids.len()).find(|&row| {
        let [t, a, v] = steps(row);
        t != a || t != v
    }) else {
        return Ok(());
    };
    let [t, a, v] = steps(row);
    let names = roles.map(|m| data.modalities[m].name.as_str());
    Err(StageError::input(format!(
        "`{}` needs aligned modalities (MMSA's need_data_aligned): segment `{}` has {t} steps of `{}`, {a} of `{}` and {v} of `{}`; align them first (an aligned MMSA pickle, or the `csd` stage's `align = \"words\"`)",
        model.name(),
        data.ids[row],
        names[0],
        names[1],
        names[2]
    )))
}

/// `x` (B × D, one vector per segment) at each of `text`'s steps (B × T × D), as MMSA's
/// `AlignSubNet` (`avg_pool`) stretches a one-step sequence to the text's length; `x` already
/// B × T × D as it is.
fn repeat_over_steps(x: &Tensor, text: &Tensor) -> Result<Tensor> {
    if x.rank() != 2 {
        return Ok(x.clone());
    }
    let repeat = || -> candle_core::Result<Tensor> {
        let (b, d) = x.dims2()?;
        x.unsqueeze(1)?.expand((b, text.dim(1)?, d))?.contiguous()
    };
    repeat().map_err(err("mfn inputs"))
}

/// LF-DNN's and TFN's three post-fusion layers (`post_fusion_layer_1` … `_3`).
fn post_fusion(
    store: &mut ParamStore,
    fused: usize,
    s: &Resolved,
    heads: usize,
) -> Result<[Linear; 3]> {
    let layer = |store: &mut ParamStore, i: usize, input, output| {
        Linear::new(
            store,
            &format!("model.post_fusion_layer_{i}"),
            input,
            output,
        )
    };
    Ok([
        layer(store, 1, fused, s.post_fusion_dim)?,
        layer(store, 2, s.post_fusion_dim, s.post_fusion_dim)?,
        layer(store, 3, s.post_fusion_dim, heads)?,
    ])
}

/// `layer_3(relu(layer_2(relu(layer_1(x)))))`.
fn post_fusion_forward(layers: &[Linear; 3], x: &Tensor) -> Result<Tensor> {
    let x = layers[0].forward_relu(x)?;
    let x = layers[1].forward_relu(&x)?;
    layers[2].forward(&x)
}

#[cfg(test)]
mod tests;
