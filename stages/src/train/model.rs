//! The sentiment model, built from its config: one encoder per modality (mean-pooled
//! features + MLP, or an LSTM over the sequence), an optional user/speaker embedding, fusion
//! (concatenation or cross-modal attention) + MLP, and one linear head per label. Frozen
//! feature adapters can sit in front of chosen modalities.

use std::collections::{BTreeMap, HashMap};

use candle_core::{Device, Tensor};
use mmflow_pipeline::StageError;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::data::{
    label_batch, padded_batch, padded_mean_batch, pooled_batch, sequence_batch, Dataset, Feed,
};
use super::device::err;
use super::nn::{
    dropout, masked_mean, AttentionFusion, Embedding, Linear, Lstm, Mlp, MlpConfig, Pass,
};
use super::optim::ParamGroup;
use super::text_bert::{TextArchitecture, TextBert, TokenBatch};
use super::weights::ParamStore;
use super::zoo::{MmsaTraining, ZooArchitecture, ZooNet};
use crate::metrics::Predicts;
use crate::text_encoder::{ModelFolder, Pooling, Tokens};

/// How one modality is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema, Default)]
#[serde(rename_all = "snake_case")]
pub enum EncoderKind {
    /// The mean of the sequence (the features table's pooled vector), then an MLP.
    #[default]
    Pool,
    /// An LSTM over the sequence (its last state), then an optional MLP.
    Lstm,
}

/// One modality's encoder.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct EncoderConfig {
    /// `pool` (default) or `lstm`.
    pub kind: EncoderKind,
    /// LSTM hidden size.
    pub hidden: usize,
    /// LSTM in both directions (output 2 × hidden).
    pub bidirectional: bool,
    /// MLP after pooling (or after the LSTM; empty `hidden` = none).
    pub mlp: MlpConfig,
}

impl Default for EncoderConfig {
    fn default() -> Self {
        EncoderConfig {
            kind: EncoderKind::Pool,
            hidden: 128,
            bidirectional: false,
            mlp: MlpConfig {
                hidden: vec![128],
                ..MlpConfig::default()
            },
        }
    }
}

/// How encoded modalities are combined.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema, Default)]
#[serde(rename_all = "snake_case")]
pub enum Fusion {
    /// Concatenate, then the fusion MLP.
    #[default]
    Concat,
    /// Self-attention across modality tokens (width `fusion_dim`), averaged, then the fusion MLP.
    Attention,
}

/// An output head: the label column it predicts and what that label is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Head {
    /// The label column.
    pub label: String,
    /// What it predicts (decides its metrics).
    pub predicts: Predicts,
}

/// A model's architecture: what is saved in its checkpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Architecture {
    /// Input modalities and their widths (after any adapter), in input order.
    pub modalities: Vec<(String, usize)>,
    /// Encoder per modality.
    pub encoders: BTreeMap<String, EncoderConfig>,
    /// Fusion kind.
    pub fusion: Fusion,
    /// Token width for attention fusion.
    pub fusion_dim: usize,
    /// The MLP after fusion.
    pub fusion_mlp: MlpConfig,
    /// User embedding width (0 = none).
    pub user_embedding: usize,
    /// Known users (training speakers); index 0 is "unknown".
    pub users: Vec<String>,
    /// Output heads.
    pub heads: Vec<Head>,
    /// Dropout on the fused representation.
    pub dropout: f32,
    /// A model of MMSA's zoo in place of the encoders and fusion (absent: mmflow's own).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zoo: Option<Box<ZooArchitecture>>,
    /// A fine-tuned text encoder over the segments' text, fused first (absent: none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<Box<TextArchitecture>>,
}

enum Encoder {
    Pool(Mlp),
    Lstm(Lstm, Mlp),
}

/// A built model.
pub struct Model {
    /// Its architecture.
    pub arch: Architecture,
    body: Body,
}

/// mmflow's own network, or a model of MMSA's zoo.
enum Body {
    Own(Box<OwnNet>),
    Zoo(Box<ZooNet>),
}

/// mmflow's encoders, fusion, user embedding and heads.
struct OwnNet {
    text: Option<(TextBert, Pooling)>,
    encoders: Vec<Encoder>,
    attention: Option<AttentionFusion>,
    users: Option<(Embedding, HashMap<String, u32>)>,
    fusion_mlp: Mlp,
    heads: Vec<Linear>,
}

/// A batch's inputs to the model: the tokenised texts (for a text encoder) and each
/// modality's features.
pub struct Inputs {
    /// The texts, where the model has a text encoder.
    pub text: Option<TokenBatch>,
    /// Each modality's input, in the model's order.
    pub modalities: Vec<Input>,
}

/// A modality's input to the model.
pub enum Input {
    /// B × D pooled vectors.
    Pooled(Tensor),
    /// B × T × D sequences with true lengths.
    Sequence(Tensor, Vec<usize>),
}

impl Model {
    /// Builds the model, drawing (or loading) parameters from `store` under `model.*` (a
    /// text encoder's under `bert.*`, from `pretrained` when the store loads no checkpoint).
    pub fn build(
        store: &mut ParamStore,
        arch: &Architecture,
        pretrained: Option<&ModelFolder>,
    ) -> Result<Model, StageError> {
        if let Some(zoo) = &arch.zoo {
            return Model::build_zoo(store, arch, zoo);
        }
        let mut encoders = Vec::new();
        let mut widths = Vec::new();
        let text = match &arch.text {
            Some(t) => {
                let device = store.device().clone();
                let bert = TextBert::new(
                    store,
                    &t.config,
                    t.freeze,
                    &|name, shape| match pretrained {
                        Some(folder) => {
                            folder.parameter(name, shape, &device, "loading the text encoder")
                        }
                        None => Err(StageError::Internal(format!(
                            "no pretrained weights for the text encoder's `{name}`"
                        ))),
                    },
                )?;
                widths.push(bert.dim());
                Some((bert, t.pooling))
            }
            None => None,
        };
        for (name, dim) in &arch.modalities {
            let config = arch.encoders.get(name).cloned().unwrap_or_default();
            let encoder = match config.kind {
                EncoderKind::Pool => Encoder::Pool(Mlp::new(
                    store,
                    &format!("model.enc.{name}.mlp"),
                    *dim,
                    &config.mlp,
                    None,
                )?),
                EncoderKind::Lstm => {
                    let lstm = Lstm::new(
                        store,
                        &format!("model.enc.{name}.lstm"),
                        *dim,
                        config.hidden,
                        config.bidirectional,
                    )?;
                    let mlp = Mlp::new(
                        store,
                        &format!("model.enc.{name}.mlp"),
                        lstm.output_dim,
                        &config.mlp,
                        None,
                    )?;
                    Encoder::Lstm(lstm, mlp)
                }
            };
            widths.push(match &encoder {
                Encoder::Pool(m) | Encoder::Lstm(_, m) => m.output_dim,
            });
            encoders.push(encoder);
        }
        let attention = match arch.fusion {
            Fusion::Attention => Some(AttentionFusion::new(
                store,
                "model.fusion.attention",
                &widths,
                arch.fusion_dim,
            )?),
            Fusion::Concat => None,
        };
        let mut fused = match arch.fusion {
            Fusion::Attention => arch.fusion_dim,
            Fusion::Concat => widths.iter().sum(),
        };
        let users = if arch.user_embedding > 0 {
            let table = Embedding::new(
                store,
                "model.users",
                arch.users.len() + 1,
                arch.user_embedding,
            )?;
            let index = arch
                .users
                .iter()
                .enumerate()
                .map(|(i, u)| (u.clone(), i as u32 + 1))
                .collect();
            fused += arch.user_embedding;
            Some((table, index))
        } else {
            None
        };
        let fusion_mlp = Mlp::new(store, "model.fusion.mlp", fused, &arch.fusion_mlp, None)?;
        let heads = arch
            .heads
            .iter()
            .map(|h| {
                Linear::new(
                    store,
                    &format!("model.head.{}", h.label),
                    fusion_mlp.output_dim,
                    1,
                )
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Model {
            arch: arch.clone(),
            body: Body::Own(Box::new(OwnNet {
                text,
                encoders,
                attention,
                users,
                fusion_mlp,
                heads,
            })),
        })
    }

    /// A model of MMSA's zoo, one output per head.
    fn build_zoo(
        store: &mut ParamStore,
        arch: &Architecture,
        zoo: &ZooArchitecture,
    ) -> Result<Model, StageError> {
        let modalities: Vec<&str> = arch.modalities.iter().map(|(m, _)| m.as_str()).collect();
        zoo.check(&modalities).map_err(|why| {
            StageError::input(format!(
                "{}: an MMSA architecture that cannot be built: {why}",
                store.source().unwrap_or("the model")
            ))
        })?;
        let widths = zoo.roles.map(|i| arch.modalities[i].1);
        let net = ZooNet::build(store, zoo, widths, arch.heads.len())?;
        Ok(Model {
            arch: arch.clone(),
            body: Body::Zoo(Box::new(net)),
        })
    }

    /// The parameter groups MMSA's trainer optimises, for a zoo model (all of `store`'s
    /// otherwise).
    pub fn mmsa_groups(&self, store: &ParamStore, training: &MmsaTraining) -> Vec<ParamGroup> {
        match &self.body {
            Body::Zoo(net) => net.mmsa_groups(store, training),
            Body::Own(_) => vec![store.vars().into()],
        }
    }

    /// How many segments one evaluation pass takes at most: 512, fewer for a model whose
    /// activations per segment are large (MulT's attention over long sequences).
    pub fn rows_per_pass(&self) -> usize {
        match &self.body {
            Body::Zoo(net) => net.rows_per_pass(),
            Body::Own(_) => 512,
        }
    }

    /// How each modality reaches the model.
    pub fn feeds(&self) -> Vec<Feed> {
        let own = match &self.body {
            Body::Own(own) => own,
            Body::Zoo(net) => return net.feeds(self.arch.modalities.len()),
        };
        own.encoders
            .iter()
            .map(|e| match e {
                Encoder::Lstm(..) => Feed::Sequence,
                Encoder::Pool(_) => Feed::Pooled,
            })
            .collect()
    }

    /// The user index tensor of `rows` (unknown users → 0), if the model embeds users.
    pub fn user_ids(
        &self,
        data: &Dataset,
        rows: &[usize],
        device: &Device,
    ) -> Result<Option<Tensor>, StageError> {
        let Body::Own(own) = &self.body else {
            return Ok(None);
        };
        let Some((_, index)) = &own.users else {
            return Ok(None);
        };
        let ids: Vec<u32> = rows
            .iter()
            .map(|&r| {
                data.users[r]
                    .as_ref()
                    .and_then(|u| index.get(u).copied())
                    .unwrap_or(0)
            })
            .collect();
        Tensor::from_vec(ids, rows.len(), device)
            .map(Some)
            .map_err(err("user ids"))
    }

    /// One output (B) per head.
    pub fn forward(
        &self,
        inputs: &Inputs,
        users: Option<&Tensor>,
        pass: &mut Pass<'_>,
    ) -> Result<Vec<Tensor>, StageError> {
        match &self.body {
            Body::Own(own) => own.forward(inputs, users, self.arch.dropout, pass),
            Body::Zoo(net) => {
                let tensor = |i: usize| match &inputs.modalities[net.arch.roles[i]] {
                    Input::Pooled(x) | Input::Sequence(x, _) => x,
                };
                let out = net.forward(tensor(0), tensor(1), tensor(2), pass)?;
                (0..self.arch.heads.len())
                    .map(|h| {
                        out.narrow(1, h, 1)
                            .and_then(|o| o.squeeze(1))
                            .map_err(err("head"))
                    })
                    .collect()
            }
        }
    }
}

impl OwnNet {
    fn forward(
        &self,
        inputs: &Inputs,
        users: Option<&Tensor>,
        dropout_p: f32,
        pass: &mut Pass<'_>,
    ) -> Result<Vec<Tensor>, StageError> {
        let mut encoded = Vec::with_capacity(inputs.modalities.len() + 1);
        if let Some((bert, pooling)) = &self.text {
            let batch = inputs.text.as_ref().ok_or_else(|| {
                StageError::Internal("a text encoder without the batch's texts".into())
            })?;
            encoded.push(bert.pooled(batch, *pooling, pass)?);
        }
        for (encoder, input) in self.encoders.iter().zip(&inputs.modalities) {
            let e = match (encoder, input) {
                (Encoder::Pool(mlp), Input::Pooled(x)) => mlp.forward(x, pass)?,
                (Encoder::Pool(mlp), Input::Sequence(x, lengths)) => {
                    mlp.forward(&masked_mean(x, lengths)?, pass)?
                }
                (Encoder::Lstm(lstm, mlp), Input::Sequence(x, lengths)) => {
                    mlp.forward(&lstm.forward(x, lengths, pass.train)?, pass)?
                }
                (Encoder::Lstm(..), Input::Pooled(_)) => {
                    return Err(StageError::Internal(
                        "an LSTM encoder needs sequences".into(),
                    ))
                }
            };
            encoded.push(e);
        }
        let mut fused = match &self.attention {
            Some(a) => a.forward(&encoded)?,
            None => Tensor::cat(&encoded, 1).map_err(err("fusion"))?,
        };
        if let (Some((table, _)), Some(ids)) = (&self.users, users) {
            fused = Tensor::cat(&[fused, table.forward(ids)?], 1).map_err(err("fusion"))?;
        }
        let fused = dropout(&fused, dropout_p, pass)?;
        let hidden = self.fusion_mlp.forward(&fused, pass)?;
        self.heads
            .iter()
            .map(|h| {
                h.forward(&hidden)
                    .and_then(|o| o.squeeze(1).map_err(err("head")))
            })
            .collect()
    }
}

/// Feature adapters: one MLP per adapted modality, applied to pooled vectors or to every
/// frame of a sequence.
pub struct Adapters {
    /// Modality → (input width, output width, MLP).
    pub mlps: BTreeMap<String, (usize, usize, Mlp)>,
}

impl Adapters {
    /// Applies the adapter of `modality` (if any) to its input.
    pub fn apply(
        &self,
        modality: &str,
        input: Input,
        pass: &mut Pass<'_>,
    ) -> Result<Input, StageError> {
        let Some((_, _, mlp)) = self.mlps.get(modality) else {
            return Ok(input);
        };
        Ok(match input {
            Input::Pooled(x) => Input::Pooled(mlp.forward(&x, pass)?),
            Input::Sequence(x, lengths) => Input::Sequence(mlp.forward(&x, pass)?, lengths),
        })
    }

    /// The width a modality has after its adapter.
    pub fn output_width(&self, modality: &str, input: usize) -> usize {
        self.mlps.get(modality).map(|m| m.1).unwrap_or(input)
    }
}

/// The model's inputs for `rows`: their texts where the data holds tokens, each modality fed
/// as `feeds` says, through the adapters.
pub fn inputs(
    data: &Dataset,
    rows: &[usize],
    feeds: &[Feed],
    adapters: Option<&Adapters>,
    device: &Device,
    pass: &mut Pass<'_>,
) -> Result<Inputs, StageError> {
    let text = match data.tokens.is_empty() {
        true => None,
        false => {
            let texts: Vec<&Tokens> = rows.iter().map(|&r| &data.tokens[r]).collect();
            Some(TokenBatch::new(&texts, device)?)
        }
    };
    let modalities = data
        .modalities
        .iter()
        .zip(feeds)
        .map(|(m, &feed)| {
            let raw = match feed {
                Feed::Pooled => Input::Pooled(pooled_batch(m, rows, device)?),
                Feed::Sequence => {
                    let (x, lengths) = sequence_batch(m, rows, device)?;
                    Input::Sequence(x, lengths)
                }
                Feed::Padded(length) => Input::Sequence(
                    padded_batch(m, rows, length, device)?,
                    vec![length; rows.len()],
                ),
                Feed::PaddedMean(length) => {
                    Input::Pooled(padded_mean_batch(m, rows, length, device)?)
                }
            };
            match adapters {
                // Frozen adapters never use dropout.
                Some(a) => a.apply(
                    &m.name,
                    raw,
                    &mut Pass {
                        train: false,
                        rng: pass.rng,
                    },
                ),
                None => Ok(raw),
            }
        })
        .collect::<Result<_, StageError>>()?;
    Ok(Inputs { text, modalities })
}

/// Label tensors (B) of `rows` for `head`, and the positions where the label is present.
pub fn labels(
    data: &Dataset,
    head: &str,
    rows: &[usize],
    device: &Device,
) -> Result<(Tensor, Vec<u32>), StageError> {
    let values = data
        .labels
        .get(head)
        .ok_or_else(|| StageError::Internal(format!("no label column `{head}`")))?;
    let (v, present) = label_batch(values, rows);
    let keep: Vec<u32> = present
        .iter()
        .enumerate()
        .filter(|(_, p)| **p)
        .map(|(i, _)| i as u32)
        .collect();
    Ok((
        Tensor::from_vec(v, rows.len(), device).map_err(err("labels"))?,
        keep,
    ))
}
