//! The zoo's models by name, their settings under MMSA's names, MMSA's defaults for them per
//! dataset, and MMSA's training recipe (`MMSA/config/config_regression.json` and
//! `MMSA/trains/singleTask/<MODEL>.py`, MMSA 2.2.1).

use mmflow_pipeline::{KeyPath, ParamProblem};

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Which of the model's modalities plays which part.
pub const ROLES: [&str; 3] = ["text", "audio", "video"];

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
    /// MMSA's MulT (the Multimodal Transformer: cross-modal attention over the unaligned
    /// sequences), settings under `mmsa`.
    Mult,
    /// MMSA's MFN (the Memory Fusion Network: an LSTM cell per modality and a gated memory
    /// of their attended cell states; audio and video enter as their means, repeated at every
    /// text step, as MMSA feeds them), settings under `mmsa`; needs aligned modalities.
    Mfn,
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
            ArchitectureName::Mult => Some(ZooModel::Mult),
            ArchitectureName::Mfn => Some(ZooModel::Mfn),
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
    /// `MULT`.
    Mult,
    /// `MFN`.
    Mfn,
}

impl ZooModel {
    /// Every zoo model.
    pub const ALL: [ZooModel; 6] = [
        ZooModel::LfDnn,
        ZooModel::Tfn,
        ZooModel::Lmf,
        ZooModel::EfLstm,
        ZooModel::Mult,
        ZooModel::Mfn,
    ];

    /// Its name in configs (MMSA's `model_name`).
    pub fn name(self) -> &'static str {
        match self {
            ZooModel::LfDnn => "lf_dnn",
            ZooModel::Tfn => "tfn",
            ZooModel::Lmf => "lmf",
            ZooModel::EfLstm => "ef_lstm",
            ZooModel::Mult => "mult",
            ZooModel::Mfn => "mfn",
        }
    }

    /// Whether it needs the modalities aligned (MMSA's `need_data_aligned`): the same number
    /// of steps in text, audio and video of every segment.
    pub fn needs_aligned(self) -> bool {
        matches!(self, ZooModel::EfLstm | ZooModel::Mfn)
    }

    /// The roles (indices into text, audio, video) it takes as padded sequences, whose
    /// padded length is bounded: the text for the sub-network models and MFN, all three for
    /// EF-LSTM and MulT (the others average audio and video).
    pub fn padded_roles(self) -> &'static [usize] {
        match self {
            ZooModel::EfLstm | ZooModel::Mult => &[0, 1, 2],
            _ => &[0],
        }
    }

    /// The keys of `mmsa` it takes.
    pub fn settings(self) -> &'static [&'static str] {
        match self {
            ZooModel::LfDnn | ZooModel::Tfn => {
                &["hidden_dims", "text_out", "post_fusion_dim", "dropouts"]
            }
            ZooModel::Lmf => &["hidden_dims", "dropouts", "rank"],
            ZooModel::EfLstm => &["hidden_dims", "num_layers", "dropout"],
            ZooModel::Mult => &[
                "dst_feature_dim_nheads",
                "nlevels",
                "conv1d_kernel_size_l",
                "conv1d_kernel_size_a",
                "conv1d_kernel_size_v",
                "attn_dropout",
                "attn_dropout_a",
                "attn_dropout_v",
                "relu_dropout",
                "embed_dropout",
                "res_dropout",
                "output_dropout",
                "text_dropout",
                "attn_mask",
            ],
            ZooModel::Mfn => &[
                "hidden_dims",
                "memsize",
                "windowsize",
                "NN1Config",
                "NN2Config",
                "gamma1Config",
                "gamma2Config",
                "outConfig",
            ],
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
    /// Hidden widths of the text LSTM, the audio and the video sub-network (MMSA's order; MFN:
    /// its text, audio and video LSTM cells); for EF-LSTM one number, the width of its LSTM.
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
    /// MulT: the channels every modality is projected to and the attention heads (the
    /// channels a multiple of the heads).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dst_feature_dim_nheads: Option<[usize; 2]>,
    /// MulT: layers of its cross-modal transformers (its self-attention ones have at least 3).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nlevels: Option<usize>,
    /// MulT: the text's convolution width (no convolution where the text already has the
    /// projected width).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub conv1d_kernel_size_l: Option<usize>,
    /// MulT: the audio's convolution width.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub conv1d_kernel_size_a: Option<usize>,
    /// MulT: the video's convolution width.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub conv1d_kernel_size_v: Option<usize>,
    /// MulT: attention dropout of transformers attending to text, and of the self-attention
    /// ones.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attn_dropout: Option<f32>,
    /// MulT: attention dropout of transformers attending to audio.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attn_dropout_a: Option<f32>,
    /// MulT: attention dropout of transformers attending to video.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attn_dropout_v: Option<f32>,
    /// MulT: dropout after the feed-forward layers' ReLU.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub relu_dropout: Option<f32>,
    /// MulT: dropout of the transformers' scaled inputs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub embed_dropout: Option<f32>,
    /// MulT: dropout of attention's and the feed-forward's outputs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub res_dropout: Option<f32>,
    /// MulT: dropout in the output's residual block.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output_dropout: Option<f32>,
    /// MulT: dropout of the text input.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub text_dropout: Option<f32>,
    /// MulT: mask the future in attention (MMSA's `attn_mask`, on by default).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attn_mask: Option<bool>,
    /// MFN: the width of its memory.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memsize: Option<usize>,
    /// MFN: the steps of cell states its attention reads; MMSA's code takes 2 only (the
    /// states before and after each step).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub windowsize: Option<usize>,
    /// MFN: the attention over the cell states (its hidden layer and that layer's dropout).
    #[serde(rename = "NN1Config", skip_serializing_if = "Option::is_none")]
    pub nn1_config: Option<MfnLayer>,
    /// MFN: the memory's proposal from the attended states.
    #[serde(rename = "NN2Config", skip_serializing_if = "Option::is_none")]
    pub nn2_config: Option<MfnLayer>,
    /// MFN: the gate that keeps the memory.
    #[serde(rename = "gamma1Config", skip_serializing_if = "Option::is_none")]
    pub gamma1_config: Option<MfnLayer>,
    /// MFN: the gate that writes the proposal.
    #[serde(rename = "gamma2Config", skip_serializing_if = "Option::is_none")]
    pub gamma2_config: Option<MfnLayer>,
    /// MFN: the output layers.
    #[serde(rename = "outConfig", skip_serializing_if = "Option::is_none")]
    pub out_config: Option<MfnLayer>,
}

/// One of MFN's two-layer networks as MMSA's config writes it (`{ drop = 0.2, shapes = 32 }`).
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MfnLayer {
    /// Dropout on its hidden layer, in [0, 1).
    pub drop: f32,
    /// The width of its hidden layer.
    pub shapes: usize,
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
        for (field, p) in self.single_dropouts() {
            if p.is_some_and(|p| !(0.0..1.0).contains(&p)) {
                at(field, "must be in [0, 1)".into());
            }
        }
        for (field, value) in [
            ("nlevels", self.nlevels),
            ("conv1d_kernel_size_l", self.conv1d_kernel_size_l),
            ("conv1d_kernel_size_a", self.conv1d_kernel_size_a),
            ("conv1d_kernel_size_v", self.conv1d_kernel_size_v),
        ] {
            if value == Some(0) {
                at(field, "must be at least 1".into());
            }
        }
        if self.nlevels.is_some_and(|n| n > MAX_LEVELS) {
            at("nlevels", format!("at most {MAX_LEVELS}"));
        }
        self.check_mfn(&mut at);
        if let Some([dim, heads]) = self.dst_feature_dim_nheads {
            if dim == 0 || heads == 0 || !dim.is_multiple_of(heads) {
                at(
                    "dst_feature_dim_nheads",
                    format!("{dim} channels and {heads} heads: the channels must be a positive multiple of the heads (MMSA's `[50, 10]`)"),
                );
            }
        }
        problems
    }

    /// MFN's own keys: a memory of at least 1, a window of 2, hidden layers of at least 1
    /// and dropouts in [0, 1).
    fn check_mfn(&self, at: &mut impl FnMut(&str, String)) {
        if self.memsize == Some(0) {
            at("memsize", "must be at least 1".into());
        }
        if let Some(window) = self.windowsize.filter(|&w| w != 2) {
            at(
                "windowsize",
                format!("{window}: MMSA's MFN reads the cell states before and after each step, and its code takes `windowsize = 2` only"),
            );
        }
        for (field, layer) in self.mfn_layers() {
            let Some(layer) = layer else { continue };
            if layer.shapes == 0 {
                at(field, "`shapes` must be at least 1".into());
            }
            if !(0.0..1.0).contains(&layer.drop) {
                at(field, "`drop` must be in [0, 1)".into());
            }
        }
    }

    /// MFN's five networks, by key.
    fn mfn_layers(&self) -> [(&'static str, Option<MfnLayer>); 5] {
        [
            ("NN1Config", self.nn1_config),
            ("NN2Config", self.nn2_config),
            ("gamma1Config", self.gamma1_config),
            ("gamma2Config", self.gamma2_config),
            ("outConfig", self.out_config),
        ]
    }

    /// EF-LSTM's and MulT's single dropouts, by key.
    fn single_dropouts(&self) -> [(&'static str, Option<f32>); 9] {
        [
            ("dropout", self.dropout),
            ("attn_dropout", self.attn_dropout),
            ("attn_dropout_a", self.attn_dropout_a),
            ("attn_dropout_v", self.attn_dropout_v),
            ("relu_dropout", self.relu_dropout),
            ("embed_dropout", self.embed_dropout),
            ("res_dropout", self.res_dropout),
            ("output_dropout", self.output_dropout),
            ("text_dropout", self.text_dropout),
        ]
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
            ("nlevels", self.nlevels.is_some()),
            ("conv1d_kernel_size_l", self.conv1d_kernel_size_l.is_some()),
            ("conv1d_kernel_size_a", self.conv1d_kernel_size_a.is_some()),
            ("conv1d_kernel_size_v", self.conv1d_kernel_size_v.is_some()),
            (
                "dst_feature_dim_nheads",
                self.dst_feature_dim_nheads.is_some(),
            ),
            ("attn_mask", self.attn_mask.is_some()),
            ("memsize", self.memsize.is_some()),
            ("windowsize", self.windowsize.is_some()),
        ]
        .into_iter()
        .chain(
            self.single_dropouts()
                .map(|(field, p)| (field, p.is_some())),
        )
        .chain(
            self.mfn_layers()
                .map(|(field, layer)| (field, layer.is_some())),
        )
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
            mult: self.resolve_mult(&d.mult),
            mfn: MfnSettings {
                memory: self.memsize.unwrap_or(d.mfn.memory),
                attention: self.nn1_config.unwrap_or(d.mfn.attention),
                proposal: self.nn2_config.unwrap_or(d.mfn.proposal),
                gates: [
                    self.gamma1_config.unwrap_or(d.mfn.gates[0]),
                    self.gamma2_config.unwrap_or(d.mfn.gates[1]),
                ],
                out: self.out_config.unwrap_or(d.mfn.out),
            },
        }
    }

    /// MulT's settings: these over `d`.
    fn resolve_mult(&self, d: &MultSettings) -> MultSettings {
        let [dim, heads] = self.dst_feature_dim_nheads.unwrap_or([d.dim, d.heads]);
        let or = |value: Option<f32>, default: f32| value.unwrap_or(default);
        MultSettings {
            dim,
            heads,
            levels: self.nlevels.unwrap_or(d.levels),
            kernels: [
                self.conv1d_kernel_size_l.unwrap_or(d.kernels[0]),
                self.conv1d_kernel_size_a.unwrap_or(d.kernels[1]),
                self.conv1d_kernel_size_v.unwrap_or(d.kernels[2]),
            ],
            attn_dropouts: [
                or(self.attn_dropout, d.attn_dropouts[0]),
                or(self.attn_dropout_a, d.attn_dropouts[1]),
                or(self.attn_dropout_v, d.attn_dropouts[2]),
            ],
            relu_dropout: or(self.relu_dropout, d.relu_dropout),
            embed_dropout: or(self.embed_dropout, d.embed_dropout),
            res_dropout: or(self.res_dropout, d.res_dropout),
            output_dropout: or(self.output_dropout, d.output_dropout),
            text_dropout: or(self.text_dropout, d.text_dropout),
            attn_mask: self.attn_mask.unwrap_or(d.attn_mask),
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
    /// MulT's settings.
    #[serde(default)]
    pub mult: MultSettings,
    /// MFN's settings (its LSTM cells' widths are `hidden_dims`).
    #[serde(default)]
    pub mfn: MfnSettings,
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
        mult: MultSettings::default(),
        mfn: MfnSettings::default(),
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
        (ZooModel::Mult, dataset) => Resolved {
            mult: mult_defaults(dataset),
            ..r([0; 3], 0, 0, [0.0; 4], 0)
        },
        (ZooModel::Mfn, dataset) => mfn_defaults(dataset),
    }
}

/// MFN's `datasetParams` on `dataset` (MOSI, MOSEI or SIMS).
fn mfn_defaults(dataset: &str) -> Resolved {
    let layer = |drop, shapes| MfnLayer { drop, shapes };
    let (hidden_dims, mfn) = match dataset {
        "mosei" => (
            [128, 32, 128],
            MfnSettings {
                memory: 128,
                attention: layer(0.2, 128),
                proposal: layer(0.5, 128),
                gates: [layer(0.7, 256), layer(0.0, 256)],
                out: layer(0.5, 128),
            },
        ),
        "sims" => (
            [64, 16, 64],
            MfnSettings {
                memory: 64,
                attention: layer(0.2, 128),
                proposal: layer(0.0, 128),
                gates: [layer(0.2, 64), layer(0.7, 64)],
                out: layer(0.7, 64),
            },
        ),
        _ => (
            [256, 32, 256],
            MfnSettings {
                memory: 400,
                attention: layer(0.2, 32),
                proposal: layer(0.0, 64),
                gates: [layer(0.7, 256), layer(0.5, 32)],
                out: layer(0.0, 128),
            },
        ),
    };
    Resolved {
        hidden_dims,
        text_out: 0,
        post_fusion_dim: 0,
        dropouts: [0.0; 4],
        rank: 0,
        num_layers: 0,
        dropout: 0.0,
        mult: MultSettings::default(),
        mfn,
    }
}

/// MFN's settings, decided (MMSA's names in the comments).
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct MfnSettings {
    /// The memory's width (`memsize`).
    pub memory: usize,
    /// The attention over the cell states (`NN1Config`).
    pub attention: MfnLayer,
    /// The memory's proposal (`NN2Config`).
    pub proposal: MfnLayer,
    /// The gates that keep the memory and write the proposal (`gamma1Config`,
    /// `gamma2Config`).
    pub gates: [MfnLayer; 2],
    /// The output layers (`outConfig`).
    pub out: MfnLayer,
}

impl MfnSettings {
    /// Whether a width is 0 (which a checkpoint's description may claim).
    pub fn has_zero_width(&self) -> bool {
        self.memory == 0
            || [
                self.attention,
                self.proposal,
                self.gates[0],
                self.gates[1],
                self.out,
            ]
            .iter()
            .any(|l| l.shapes == 0)
    }
}

/// MulT's `datasetParams` on `dataset` (MOSI, MOSEI or SIMS), with `attn_mask` from its
/// `commonParams`.
fn mult_defaults(dataset: &str) -> MultSettings {
    let base = MultSettings {
        dim: 50,
        heads: 10,
        levels: 4,
        kernels: [5; 3],
        attn_dropouts: [0.3, 0.2, 0.0],
        relu_dropout: 0.0,
        embed_dropout: 0.2,
        res_dropout: 0.0,
        output_dropout: 0.5,
        text_dropout: 0.5,
        attn_mask: true,
    };
    match dataset {
        "mosei" => MultSettings {
            dim: 30,
            heads: 6,
            kernels: [5, 1, 3],
            attn_dropouts: [0.4, 0.0, 0.0],
            embed_dropout: 0.0,
            text_dropout: 0.3,
            ..base
        },
        "sims" => MultSettings {
            levels: 2,
            kernels: [5, 1, 1],
            attn_dropouts: [0.2, 0.1, 0.0],
            embed_dropout: 0.1,
            res_dropout: 0.2,
            output_dropout: 0.1,
            text_dropout: 0.3,
            ..base
        },
        _ => base,
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
    /// validation loss with MMSA's `early_stop` (8) as the patience. MulT's trainer differs:
    /// no weight decay, gradients summed over 8 batches per step (`update_epochs`; a sum left
    /// at an epoch's end carries into the next, as in MMSA) with every value clipped to ±0.6
    /// after each batch, and the rate ×0.1 after `patience` epochs without a better validation
    /// loss. `optim.epochs` still caps the epochs (MMSA has no cap); nothing else in `optim`
    /// or `heads` may be set.
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
    /// MulT's `grad_clip`: every gradient value clipped to ± this after each batch's
    /// backward pass (`clip_grad_value_`).
    pub clip_value: Option<f64>,
    /// MulT's `update_epochs`: gradients summed over this many batches per step (1: a step
    /// per batch).
    pub accumulate: usize,
    /// MulT's `patience`: the learning rate ×0.1 after this many epochs without a better
    /// validation loss (`ReduceLROnPlateau`); none: constant.
    pub plateau_patience: Option<usize>,
}

/// MMSA's training settings of `model` on `dataset` (`config_regression.json` and the
/// trainers, MMSA 2.2.1: `TFN.py` and `MULT.py` build Adam without weight decay).
pub fn mmsa_training(model: ZooModel, dataset: &str) -> MmsaTraining {
    let t = |batch_size, learning_rate, weight_decay, factor_lr| MmsaTraining {
        batch_size,
        learning_rate,
        weight_decay,
        early_stop: 8,
        factor_lr,
        clip_value: None,
        accumulate: 1,
        plateau_patience: None,
    };
    // MulT's trainer: Adam without weight decay, values clipped, 8 batches per step, and the
    // rate cut on a plateau of the validation loss.
    let mult = |batch_size, learning_rate, patience| MmsaTraining {
        clip_value: Some(0.6),
        accumulate: 8,
        plateau_patience: Some(patience),
        ..t(batch_size, learning_rate, 0.0, None)
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
        (ZooModel::Mult, "mosei") => mult(4, 0.0005, 20),
        (ZooModel::Mult, "sims") => mult(16, 0.002, 10),
        (ZooModel::Mult, _) => mult(16, 0.002, 5),
        (ZooModel::Mfn, "mosei") => t(64, 0.0005, 0.0001, None),
        (ZooModel::Mfn, "sims") => t(32, 0.001, 0.0, None),
        (ZooModel::Mfn, _) => t(128, 0.002, 0.0, None),
    }
}

/// MulT's settings, decided (MMSA's names in the comments).
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct MultSettings {
    /// Channels every modality is projected to (`dst_feature_dim_nheads[0]`).
    pub dim: usize,
    /// Attention heads (`dst_feature_dim_nheads[1]`); `dim` is a multiple of it.
    pub heads: usize,
    /// Layers of the cross-modal transformers (`nlevels`); the self-attention ones have at
    /// least 3.
    pub levels: usize,
    /// Convolution widths of text, audio, video (`conv1d_kernel_size_l`, `_a`, `_v`).
    pub kernels: [usize; 3],
    /// Attention dropout of the cross-modal transformers whose keys are text, audio, video
    /// (`attn_dropout`, `attn_dropout_a`, `attn_dropout_v`); the self-attention transformers
    /// all take the text's.
    pub attn_dropouts: [f32; 3],
    /// After `fc1`'s ReLU (`relu_dropout`).
    pub relu_dropout: f32,
    /// On the transformers' scaled inputs (`embed_dropout`).
    pub embed_dropout: f32,
    /// On the attention's and the feed-forward's output (`res_dropout`).
    pub res_dropout: f32,
    /// In the output's residual block (`output_dropout`).
    pub output_dropout: f32,
    /// On the text input (`text_dropout`).
    pub text_dropout: f32,
    /// Mask the future in attention (`attn_mask`).
    pub attn_mask: bool,
}

/// The most layers a MulT transformer may have (MMSA's configs use 2–4).
pub const MAX_LEVELS: usize = 16;

impl MultSettings {
    /// Why these settings cannot be built over padded `lengths` (text, audio, video), if
    /// they cannot.
    pub fn problem(&self, lengths: [usize; 3]) -> Option<String> {
        if self.dim == 0 || self.heads == 0 || !self.dim.is_multiple_of(self.heads) {
            return Some(format!(
                "`mult` with {} channels and {} heads: the channels must be a positive multiple of the heads",
                self.dim, self.heads
            ));
        }
        if self.levels == 0 || self.levels > MAX_LEVELS {
            return Some(format!(
                "`mult` with {} levels: from 1 to {MAX_LEVELS}",
                self.levels
            ));
        }
        let short = (0..3).find(|&m| self.kernels[m] == 0 || lengths[m] < self.kernels[m])?;
        Some(format!(
            "`mult` convolves the {} sequence with a kernel of {} steps (conv1d_kernel_size_{}): its padded length {} must be at least that, and the kernel at least 1",
            ROLES[short],
            self.kernels[short],
            ["l", "a", "v"][short],
            lengths[short]
        ))
    }
}
