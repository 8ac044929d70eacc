//! A BERT encoder that trains with the model: Hugging Face's `BertModel` without the pooler,
//! its parameters in the [`ParamStore`] under `bert.` + Hugging Face's names (the names
//! transformers gives the encoder inside its task models, e.g. `bert.embeddings.
//! word_embeddings.weight`), so a checkpoint holds the fine-tuned encoder as transformers names
//! it.
//!
//! The batch is padded to its longest text. On the CPU every layer runs through the fused ops
//! with their own backward ([`Linear`]'s product, layer norm, and attention with each text's
//! padded keys hidden: [`FusedAttention::key_lengths`]); elsewhere candle's ops with the mask
//! as an additive bias. A padded position is computed but never reaches a text's tokens: no
//! key of it is seen, and pooling leaves it out, so outputs and gradients are those of the
//! unpadded texts.
//!
//! Follows transformers 5.25.0's `src/transformers/models/bert/modeling_bert.py`
//! (`BertEmbeddings`, `BertSelfAttention` in its eager form, `BertSelfOutput`,
//! `BertIntermediate`, `BertOutput`, `BertLayer`), dropout where it puts it; pooling as
//! sentence-transformers' `Pooling` (mean over the attention mask, or `[CLS]`). Golden test:
//! `tests/data/text_finetune/bert_golden.py` (outputs, gradients, three AdamW steps).

use std::path::PathBuf;
use std::sync::Arc;

use candle_core::{Device, Tensor, Var};
use mmflow_pipeline::values::{Fraction, NonNegative, Positive};
use mmflow_pipeline::{KeyPath, ParamProblem, StageError};
use rand::Rng;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::device::err;
use super::fused_attention::{attention, FusedAttention};
use super::fused_gelu;
use super::fused_layer_norm;
use super::nn::{dropout, layer_norm_by_ops, masked_mean, softmax_last_dim, Linear, Pass};
use super::optim::{LinearWarmup, ParamGroup};
use super::weights::ParamStore;
use crate::bert::{Activation, Config};
use crate::text_encoder::{Pooling, Tokens};

type Result<T> = std::result::Result<T, StageError>;

/// The prefix of the encoder's parameters in the store (and the checkpoint).
pub const PREFIX: &str = "bert.";

/// Which of the encoder's parameters stay as loaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum Freeze {
    /// `none` (every parameter trains), `embeddings` (the embeddings stay) or `all` (the
    /// encoder stays as loaded: frozen vectors, a baseline).
    Named(FreezePart),
    /// The embeddings and the lowest N layers stay.
    Layers(usize),
}

/// A named part of the encoder to freeze.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum FreezePart {
    /// Nothing: every parameter trains.
    None,
    /// The embeddings (words, positions, token types and their layer norm).
    Embeddings,
    /// Every parameter of the encoder.
    All,
}

impl Default for Freeze {
    fn default() -> Self {
        Freeze::Named(FreezePart::None)
    }
}

impl Freeze {
    /// How many of the network's stages (the embeddings, then each layer) stay as loaded, of
    /// a network of `layers` layers.
    fn stages(self, layers: usize) -> usize {
        match self {
            Freeze::Named(FreezePart::None) => 0,
            Freeze::Named(FreezePart::Embeddings) => 1,
            Freeze::Layers(n) => 1 + n.min(layers),
            Freeze::Named(FreezePart::All) => 1 + layers,
        }
    }

    /// Whether the parameter `name` (Hugging Face's, no prefix) stays as loaded.
    pub fn holds(self, name: &str) -> bool {
        let layers = match self {
            Freeze::Named(FreezePart::None) => return false,
            Freeze::Named(FreezePart::All) => return true,
            Freeze::Named(FreezePart::Embeddings) => 0,
            Freeze::Layers(n) => n,
        };
        name.starts_with("embeddings.")
            || name
                .strip_prefix("encoder.layer.")
                .and_then(|rest| rest.split('.').next())
                .and_then(|i| i.parse::<usize>().ok())
                .is_some_and(|i| i < layers)
    }
}

/// A BERT-family text encoder fine-tuned with the model, fed the segments' `text`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TextEncoderSettings {
    /// The model folder (as `embed_text`'s `model`: `config.json`, `tokenizer.json`, `model.safetensors`, and the optional tokenizer and sentence-transformers files, all checked); its files' contents are part of the fingerprint.
    pub model: PathBuf,
    /// One vector per text: `mean` (its tokens' mean, as sentence-transformers) or `cls` (the `[CLS]` token's).
    #[serde(default)]
    pub pooling: Pooling,
    /// Tokens per text at most, `[CLS]` and `[SEP]` included (default: as `embed_text` chooses from the folder).
    #[serde(default)]
    pub max_length: Option<usize>,
    /// What stays as loaded: `none`, `embeddings`, a number N (the embeddings and the lowest N layers), or `all` (frozen vectors, the baseline fine-tuning is compared with).
    #[serde(default)]
    pub freeze: Freeze,
    /// The encoder's learning rate (MMSA's `learning_rate_bert`); it follows `optim.schedule` in proportion to `optim.learning_rate`.
    #[serde(default = "default_learning_rate")]
    pub learning_rate: Positive,
    /// The encoder's weight decay (MMSA's `weight_decay_bert`), as `optim.optimizer` applies it.
    #[serde(default = "default_weight_decay")]
    pub weight_decay: NonNegative,
    /// The share of the training steps over which the encoder's learning rate rises linearly from 0; it then falls linearly to 0 at the last step (transformers' `get_linear_schedule_with_warmup`).
    #[serde(default = "default_warmup")]
    pub warmup: Fraction,
}

fn default_learning_rate() -> Positive {
    Positive::new(3e-5)
}

fn default_weight_decay() -> NonNegative {
    NonNegative::new(0.01)
}

fn default_warmup() -> Fraction {
    Fraction::new(0.1)
}

impl TextEncoderSettings {
    /// What is wrong with the settings, under `at`.
    pub fn check(&self, at: &KeyPath) -> Vec<ParamProblem> {
        let mut problems = Vec::new();
        if self.model.as_os_str().is_empty() {
            problems.push(ParamProblem::at(
                at.key("model"),
                "is required (the model folder)",
            ));
        }
        if self.pooling == Pooling::Tokens {
            problems.push(ParamProblem::at(
                at.key("pooling"),
                "a fine-tuned encoder gives one vector per text: `mean` or `cls`",
            ));
        }
        if self.max_length.is_some_and(|n| n < 2) {
            problems.push(ParamProblem::at(
                at.key("max_length"),
                "must be at least 2 ([CLS] and [SEP])",
            ));
        }
        problems
    }

    /// The encoder's own learning rate, weight decay and warm-up.
    pub fn rates(&self) -> TextEncoderRates {
        TextEncoderRates {
            learning_rate: self.learning_rate,
            weight_decay: self.weight_decay,
            warmup: self.warmup,
        }
    }

    /// The encoder's parameter group: its parameters that train (of `store`), at its rate
    /// relative to `model_lr`, its weight decay, warmed up over `steps` training steps.
    pub fn group(&self, store: &ParamStore, model_lr: f64, steps: usize) -> ParamGroup {
        self.rates()
            .group(trained(store.named_vars(), self.freeze), model_lr, steps)
    }
}

/// A fine-tuned encoder's optimiser settings in a `finetune` phase (the defaults are
/// `train_model`'s `text_encoder`'s).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TextEncoderRates {
    /// The encoder's learning rate; it follows the phase's schedule in proportion to the phase's `learning_rate`.
    #[serde(default = "default_learning_rate")]
    pub learning_rate: Positive,
    /// The encoder's weight decay, as the phase's `optimizer` applies it.
    #[serde(default = "default_weight_decay")]
    pub weight_decay: NonNegative,
    /// The share of the phase's steps over which the encoder's learning rate rises linearly from 0; it then falls linearly to 0 at the phase's last step.
    #[serde(default = "default_warmup")]
    pub warmup: Fraction,
}

impl Default for TextEncoderRates {
    fn default() -> Self {
        TextEncoderRates {
            learning_rate: default_learning_rate(),
            weight_decay: default_weight_decay(),
            warmup: default_warmup(),
        }
    }
}

impl TextEncoderRates {
    /// A group of the encoder's `vars` at these rates, warmed up over `steps` steps.
    pub fn group(&self, vars: Vec<Var>, model_lr: f64, steps: usize) -> ParamGroup {
        ParamGroup {
            lr_scale: self.learning_rate.get() / model_lr,
            weight_decay: Some(self.weight_decay.get()),
            warmup: Some(LinearWarmup {
                warmup: (self.warmup.get() as f64 * steps as f64).ceil() as usize,
                total: steps,
            }),
            ..ParamGroup::from(vars)
        }
    }
}

/// The encoder's parameters among `named` (by their store names) that `freeze` leaves to
/// train.
pub fn trained(named: Vec<(String, Var)>, freeze: Freeze) -> Vec<Var> {
    named
        .into_iter()
        .filter_map(|(name, var)| {
            let hf = name.strip_prefix(PREFIX)?;
            (!freeze.holds(hf)).then_some(var)
        })
        .collect()
}

/// A fine-tuned text encoder as its checkpoint records it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TextArchitecture {
    /// The model folder it was loaded from (its tokenizer is read from there again).
    pub model: PathBuf,
    /// Tokens per text at most.
    pub max_length: usize,
    /// How a text becomes one vector.
    pub pooling: Pooling,
    /// The network's shape.
    pub config: Config,
    /// What stays as loaded in training.
    #[serde(default)]
    pub freeze: Freeze,
}

/// LayerNorm's scale and shift.
struct Norm {
    weight: Tensor,
    bias: Tensor,
}

impl Norm {
    fn forward(&self, x: &Tensor, eps: f32) -> Result<Tensor> {
        if x.device().is_cpu() {
            fused_layer_norm::layer_norm(x, &self.weight, &self.bias, eps)
        } else {
            layer_norm_by_ops(x, &self.weight, &self.bias, eps)
        }
        .map_err(err("text encoder: layer norm"))
    }
}

/// One transformer layer.
struct Layer {
    query: Linear,
    key: Linear,
    value: Linear,
    attention_out: Linear,
    attention_norm: Norm,
    intermediate: Linear,
    output: Linear,
    output_norm: Norm,
}

/// A batch of tokenised texts padded to the longest: ids and type ids `B × T`, and each text's
/// length.
pub struct TokenBatch {
    ids: Tensor,
    type_ids: Tensor,
    lengths: Vec<usize>,
    width: usize,
}

impl TokenBatch {
    /// The texts padded with id 0 (never seen: padded keys are hidden).
    pub fn new(texts: &[&Tokens], device: &Device) -> Result<TokenBatch> {
        let rows = texts.len();
        let width = texts.iter().map(|t| t.ids.len()).max().unwrap_or(0).max(1);
        let mut ids = vec![0u32; rows * width];
        let mut type_ids = vec![0u32; rows * width];
        for (r, t) in texts.iter().enumerate() {
            ids[r * width..r * width + t.ids.len()].copy_from_slice(&t.ids);
            type_ids[r * width..r * width + t.ids.len()].copy_from_slice(&t.type_ids);
        }
        let tensor =
            |v: Vec<u32>| Tensor::from_vec(v, (rows, width), device).map_err(err("token ids"));
        Ok(TokenBatch {
            ids: tensor(ids)?,
            type_ids: tensor(type_ids)?,
            lengths: texts.iter().map(|t| t.ids.len()).collect(),
            width,
        })
    }
}

/// A trainable BERT encoder.
pub struct TextBert {
    config: Config,
    words: Tensor,
    positions: Tensor,
    token_types: Tensor,
    embeddings_norm: Norm,
    layers: Vec<Layer>,
    /// Stages (the embeddings, then each layer) whose output is detached: nothing below it
    /// takes a gradient, nor keeps a graph for one.
    frozen: usize,
}

impl TextBert {
    /// The encoder `config` describes, its parameters `bert.<name>` claimed from `store`'s
    /// checkpoint when it loads one, else taken from `pretrained(name, shape)` (Hugging Face's
    /// name, no prefix).
    pub fn new(
        store: &mut ParamStore,
        config: &Config,
        freeze: Freeze,
        pretrained: &dyn Fn(&str, &[usize]) -> Result<Tensor>,
    ) -> Result<TextBert> {
        let mut get = |name: &str, shape: &[usize]| {
            store.pretrained(&format!("{PREFIX}{name}"), shape, || {
                pretrained(name, shape)
            })
        };
        let h = config.hidden_size;
        let mut layers = Vec::with_capacity(config.num_hidden_layers);
        let words = get("embeddings.word_embeddings.weight", &[config.vocab_size, h])?;
        let positions = get(
            "embeddings.position_embeddings.weight",
            &[config.max_position_embeddings, h],
        )?;
        let token_types = get(
            "embeddings.token_type_embeddings.weight",
            &[config.type_vocab_size, h],
        )?;
        let embeddings_norm = norm(&mut get, "embeddings.LayerNorm", h)?;
        for i in 0..config.num_hidden_layers {
            let at = format!("encoder.layer.{i}");
            let inner = config.intermediate_size;
            layers.push(Layer {
                query: linear(&mut get, &format!("{at}.attention.self.query"), h, h)?,
                key: linear(&mut get, &format!("{at}.attention.self.key"), h, h)?,
                value: linear(&mut get, &format!("{at}.attention.self.value"), h, h)?,
                attention_out: linear(&mut get, &format!("{at}.attention.output.dense"), h, h)?,
                attention_norm: norm(&mut get, &format!("{at}.attention.output.LayerNorm"), h)?,
                intermediate: linear(&mut get, &format!("{at}.intermediate.dense"), h, inner)?,
                output: linear(&mut get, &format!("{at}.output.dense"), inner, h)?,
                output_norm: norm(&mut get, &format!("{at}.output.LayerNorm"), h)?,
            });
        }
        Ok(TextBert {
            config: config.clone(),
            words,
            positions,
            token_types,
            embeddings_norm,
            layers,
            frozen: freeze.stages(config.num_hidden_layers),
        })
    }

    /// Width of the token vectors.
    pub fn dim(&self) -> usize {
        self.config.hidden_size
    }

    /// The last hidden states, `B × T × hidden` (padded positions hold values no text sees).
    pub fn hidden(&self, batch: &TokenBatch, pass: &mut Pass<'_>) -> Result<Tensor> {
        let c = &self.config;
        let eps = c.layer_norm_eps as f32;
        let mut x = self.embed(batch)?;
        x = self.embeddings_norm.forward(&x, eps)?;
        x = dropout(&x, c.hidden_dropout, pass)?;
        for (i, l) in self.layers.iter().enumerate() {
            if self.frozen > i {
                x = x.detach();
            }
            let context = self.attention(l, &x, batch, pass)?;
            let a = dropout(&l.attention_out.forward(&context)?, c.hidden_dropout, pass)?;
            let a = l.attention_norm.forward(&add(&a, &x)?, eps)?;
            let inner = activate(&l.intermediate.forward(&a)?, c.hidden_act)?;
            let out = dropout(&l.output.forward(&inner)?, c.hidden_dropout, pass)?;
            x = l.output_norm.forward(&add(&out, &a)?, eps)?;
        }
        if self.frozen > self.layers.len() {
            x = x.detach();
        }
        Ok(x)
    }

    /// One vector per text (`B × hidden`): the mean of its tokens' last hidden states, or its
    /// first (`[CLS]`) token's.
    pub fn pooled(
        &self,
        batch: &TokenBatch,
        pooling: Pooling,
        pass: &mut Pass<'_>,
    ) -> Result<Tensor> {
        let hidden = self.hidden(batch, pass)?;
        match pooling {
            Pooling::Cls => hidden
                .narrow(1, 0, 1)
                .and_then(|x| x.squeeze(1))
                .map_err(err("text encoder: [CLS] pooling")),
            Pooling::Mean => masked_mean(&hidden, &batch.lengths),
            Pooling::Tokens => Err(StageError::Internal(
                "a trained text encoder pools to one vector per text".into(),
            )),
        }
    }

    /// Word + position + token type embeddings, `B × T × hidden`.
    fn embed(&self, batch: &TokenBatch) -> Result<Tensor> {
        let (rows, width, h) = (batch.lengths.len(), batch.width, self.config.hidden_size);
        if width > self.config.max_position_embeddings {
            return Err(StageError::Internal(format!(
                "{width} tokens, more than the {} positions",
                self.config.max_position_embeddings
            )));
        }
        (|| {
            let positions = Tensor::arange(0u32, width as u32, self.words.device())?;
            self.words
                .index_select(&batch.ids.flatten_all()?, 0)?
                .add(
                    &self
                        .token_types
                        .index_select(&batch.type_ids.flatten_all()?, 0)?,
                )?
                .reshape((rows, width, h))?
                .broadcast_add(&self.positions.index_select(&positions, 0)?)
        })()
        .map_err(err("text encoder: embeddings"))
    }

    /// Self-attention of every head, `B × T × hidden`, each text seeing only its own tokens.
    fn attention(
        &self,
        l: &Layer,
        x: &Tensor,
        batch: &TokenBatch,
        pass: &mut Pass<'_>,
    ) -> Result<Tensor> {
        let c = &self.config;
        let (b, t, h) = x.dims3().map_err(err("text encoder: attention"))?;
        let heads = c.num_attention_heads;
        let d = h / heads;
        // Query, key and value as one product (their weights stacked), then each head's slice
        // of each: 3 × B × heads × T × d, copied once.
        let qkv = stacked([&l.query, &l.key, &l.value])
            .map_err(err("text encoder: attention"))?
            .forward(x)?;
        let (q, k, v) = (|| {
            let qkv = qkv
                .reshape((b, t, 3, heads, d))?
                .permute((2, 0, 3, 1, 4))?
                .contiguous()?;
            Ok::<_, candle_core::Error>((qkv.get(0)?, qkv.get(1)?, qkv.get(2)?))
        })()
        .map_err(err("text encoder: attention heads"))?;
        let scale = 1.0 / (d as f32).sqrt();
        let rate = c.attention_dropout;
        let context = if x.device().is_cpu() {
            let op = FusedAttention {
                scale,
                future_offset: None,
                dropout: (pass.train && rate > 0.0).then(|| (rate, pass.rng.random::<u64>())),
                key_lengths: Some(Arc::from(
                    batch
                        .lengths
                        .iter()
                        .flat_map(|&n| std::iter::repeat_n(n, heads))
                        .collect::<Vec<_>>(),
                )),
            };
            let slices = |y: &Tensor| y.reshape((b * heads, t, d));
            (|| attention(&slices(&q)?, &slices(&k)?, &slices(&v)?, op)?.reshape((b, heads, t, d)))(
            )
            .map_err(err("text encoder: attention"))?
        } else {
            self.attention_by_ops(&q, &k, &v, scale, batch, pass)?
        };
        context
            .transpose(1, 2)
            .and_then(|y| y.reshape((b, t, h)))
            .map_err(err("text encoder: attention"))
    }

    /// Attention from candle's ops (other devices): the padded keys masked by an additive
    /// bias of `f32::MIN`, dropout on the weights from the pass's generator.
    fn attention_by_ops(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        scale: f32,
        batch: &TokenBatch,
        pass: &mut Pass<'_>,
    ) -> Result<Tensor> {
        let (rows, width) = (batch.lengths.len(), batch.width);
        let bias: Vec<f32> = batch
            .lengths
            .iter()
            .flat_map(|&n| (0..width).map(move |j| if j < n { 0.0 } else { f32::MIN }))
            .collect();
        let weights = (|| {
            let mask = Tensor::from_vec(bias, (rows, 1, 1, width), q.device())?;
            let scores = q
                .matmul(&k.t()?)?
                .affine(f64::from(scale), 0.0)?
                .broadcast_add(&mask)?;
            softmax_last_dim(&scores)
        })()
        .map_err(err("text encoder: attention"))?;
        let weights = dropout(&weights, self.config.attention_dropout, pass)?;
        weights.matmul(v).map_err(err("text encoder: attention"))
    }
}

/// One layer of the layers' weights and biases stacked (outputs one after another).
fn stacked(layers: [&Linear; 3]) -> candle_core::Result<Linear> {
    let biases = layers
        .iter()
        .map(|l| {
            l.bias()
                .ok_or_else(|| candle_core::Error::Msg("a layer without bias".into()))
        })
        .collect::<candle_core::Result<Vec<_>>>()?;
    Ok(Linear::from_parts(
        Tensor::cat(&layers.map(Linear::weight), 0)?,
        Tensor::cat(&biases, 0)?,
    ))
}

/// A layer `name` of `input → out` from `get`.
fn linear(
    get: &mut impl FnMut(&str, &[usize]) -> Result<Tensor>,
    name: &str,
    input: usize,
    out: usize,
) -> Result<Linear> {
    Ok(Linear::from_parts(
        get(&format!("{name}.weight"), &[out, input])?,
        get(&format!("{name}.bias"), &[out])?,
    ))
}

/// A layer norm `name` of width `size` from `get`.
fn norm(
    get: &mut impl FnMut(&str, &[usize]) -> Result<Tensor>,
    name: &str,
    size: usize,
) -> Result<Norm> {
    Ok(Norm {
        weight: get(&format!("{name}.weight"), &[size])?,
        bias: get(&format!("{name}.bias"), &[size])?,
    })
}

fn add(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    a.add(b).map_err(err("text encoder: residual"))
}

/// The feed-forward activation.
fn activate(x: &Tensor, act: Activation) -> Result<Tensor> {
    match act {
        Activation::Gelu if x.device().is_cpu() => fused_gelu::gelu(x),
        Activation::Gelu => x.gelu_erf(),
        Activation::GeluTanh => x.gelu(),
        Activation::Relu => x.relu(),
    }
    .map_err(err("text encoder: activation"))
}

#[cfg(test)]
mod tests;
