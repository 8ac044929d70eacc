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

use std::sync::Arc;

use candle_core::{Device, Tensor};
use mmflow_pipeline::StageError;
use rand::Rng;

use super::device::err;
use super::fused_attention::{attention, FusedAttention};
use super::fused_layer_norm;
use super::nn::{dropout, layer_norm_by_ops, masked_mean, softmax_last_dim, Linear, Pass};
use super::weights::ParamStore;
use crate::bert::{Activation, Config};
use crate::text_encoder::{Pooling, Tokens};

type Result<T> = std::result::Result<T, StageError>;

/// The prefix of the encoder's parameters in the store (and the checkpoint).
pub const PREFIX: &str = "bert.";

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
}

impl TextBert {
    /// The encoder `config` describes, its parameters `bert.<name>` claimed from `store`'s
    /// checkpoint when it loads one, else taken from `pretrained(name, shape)` (Hugging Face's
    /// name, no prefix).
    pub fn new(
        store: &mut ParamStore,
        config: &Config,
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
        for l in &self.layers {
            let context = self.attention(l, &x, batch, pass)?;
            let a = dropout(&l.attention_out.forward(&context)?, c.hidden_dropout, pass)?;
            let a = l.attention_norm.forward(&add(&a, &x)?, eps)?;
            let inner = activate(&l.intermediate.forward(&a)?, c.hidden_act)?;
            let out = dropout(&l.output.forward(&inner)?, c.hidden_dropout, pass)?;
            x = l.output_norm.forward(&add(&out, &a)?, eps)?;
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
                .add(&self.token_types.index_select(&batch.type_ids.flatten_all()?, 0)?)?
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
        let split = |y: Tensor| -> candle_core::Result<Tensor> {
            y.reshape((b, t, heads, d))?.transpose(1, 2)?.contiguous()
        };
        let (q, k, v) = (
            split(l.query.forward(x)?),
            split(l.key.forward(x)?),
            split(l.value.forward(x)?),
        );
        let (q, k, v) = (|| Ok::<_, candle_core::Error>((q?, k?, v?)))()
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
            (|| attention(&slices(&q)?, &slices(&k)?, &slices(&v)?, op)?.reshape((b, heads, t, d)))()
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
        weights
            .matmul(v)
            .map_err(err("text encoder: attention"))
    }
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
        Activation::Gelu => x.gelu_erf(),
        Activation::GeluTanh => x.gelu(),
        Activation::Relu => x.relu(),
    }
    .map_err(err("text encoder: activation"))
}

#[cfg(test)]
mod tests;
