//! A BERT encoder (Hugging Face's `BertModel` without the pooler), inference only, on weights
//! by Hugging Face's names (`embeddings.word_embeddings.weight`,
//! `encoder.layer.N.attention.self.query.weight`, …) from a [`Parameters`] source.
//!
//! A batch's texts are packed one after another into one `tokens × hidden` matrix: everything
//! but attention works on rows, so no padded position is ever computed, and attention runs per
//! text on its own tokens (no mask needed). Query, key and value are one product with the
//! three weights stacked. On the CPU the network runs on plain slices: products through
//! [`crate::linalg::matmul`], bias with the activation, and residual with LayerNorm in one pass
//! each, GELU with a polynomial `erf` the compiler vectorises. On other devices it runs as
//! candle operations over the batch padded to its longest text, with the mask as an additive
//! bias.
//!
//! Follows Hugging Face transformers' `src/transformers/models/bert/modeling_bert.py`
//! (`BertEmbeddings`, `BertSelfAttention` in its eager form, `BertSelfOutput`,
//! `BertIntermediate`, `BertOutput`, `BertLayer`; `BertModel` without `BertPooler`), as candle's
//! `candle-transformers/src/models/bert.rs` ports it; checked against sentence-transformers
//! 6.3.0 on torch 2.15.0 (`tests/data/embed/golden.json`).

use candle_core::{Device, Tensor, D};

use crate::linalg::matmul;

/// The activation of the intermediate layer (`hidden_act`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Activation {
    /// GELU with the exact `erf` (`gelu`).
    Gelu,
    /// GELU's tanh approximation (`gelu_new`, `gelu_pytorch_tanh`).
    GeluTanh,
    /// max(0, x) (`relu`).
    Relu,
}

/// The shape of the network, from the model folder's `config.json`.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Config {
    /// Rows of the word embeddings.
    pub vocab_size: usize,
    /// Width of every token vector.
    pub hidden_size: usize,
    /// Transformer layers.
    pub num_hidden_layers: usize,
    /// Attention heads per layer (`hidden_size` is a multiple of it).
    pub num_attention_heads: usize,
    /// Width of the feed-forward layer.
    pub intermediate_size: usize,
    /// The feed-forward activation.
    pub hidden_act: Activation,
    /// Rows of the position embeddings: tokens per text at most.
    pub max_position_embeddings: usize,
    /// Rows of the token type embeddings.
    pub type_vocab_size: usize,
    /// LayerNorm's epsilon.
    pub layer_norm_eps: f64,
    /// Dropout on the embeddings and after each attention output and feed-forward layer, in
    /// training (`hidden_dropout_prob`).
    pub hidden_dropout: f32,
    /// Dropout on the attention weights, in training (`attention_probs_dropout_prob`).
    pub attention_dropout: f32,
}

/// A fully connected layer: `weight` is `out × in` (row-major), `bias` is `out`.
struct Dense<P> {
    weight: P,
    bias: P,
    out: usize,
}

/// LayerNorm's scale and shift.
struct Norm<P> {
    gamma: P,
    beta: P,
}

/// One transformer layer.
struct Layer<P> {
    /// Query, key and value stacked: `3·hidden × hidden`.
    qkv: Dense<P>,
    attention_out: Dense<P>,
    attention_norm: Norm<P>,
    intermediate: Dense<P>,
    output: Dense<P>,
    output_norm: Norm<P>,
}

/// Every parameter of the network.
struct Weights<P> {
    words: P,
    positions: P,
    token_types: P,
    embeddings_norm: Norm<P>,
    layers: Vec<Layer<P>>,
}

/// Where the weights live.
enum Params {
    /// Plain values (row-major), for the CPU path.
    Cpu(Weights<Vec<f32>>),
    /// Tensors on a device, for the candle path.
    Device(Weights<Tensor>),
}

/// A loaded BERT encoder.
pub struct Bert {
    config: Config,
    params: Params,
    device: Device,
}

/// One text of a batch: token ids and token type ids (the same length).
#[derive(Debug, Clone, Copy)]
pub struct Text<'a> {
    /// Token ids, special tokens included.
    pub ids: &'a [u32],
    /// Token type ids.
    pub type_ids: &'a [u32],
}

/// Where the network's parameters come from: each by its Hugging Face name (no prefix), as a
/// float32 tensor of the shape the config gives it, on the device. The source checks what it
/// gives (presence, shape, values) and says what is wrong in its own error.
pub trait Parameters {
    /// Why a parameter cannot be given (candle's errors on the way become one).
    type Error: From<candle_core::Error>;
    /// The parameter `name` of shape `shape` on `device`.
    fn get(&self, name: &str, shape: &[usize], device: &Device) -> Result<Tensor, Self::Error>;
}

/// A [`Parameters`] source with the device every parameter goes to.
struct Source<'a, P> {
    params: &'a P,
    device: &'a Device,
}

impl<P: Parameters> Source<'_, P> {
    fn get(&self, name: &str, shape: &[usize]) -> Result<Tensor, P::Error> {
        self.params.get(name, shape, self.device)
    }

    fn dense(&self, at: &str, input: usize, out: usize) -> Result<Dense<Tensor>, P::Error> {
        Ok(Dense {
            weight: self.get(&format!("{at}.weight"), &[out, input])?,
            bias: self.get(&format!("{at}.bias"), &[out])?,
            out,
        })
    }

    fn norm(&self, at: &str, size: usize) -> Result<Norm<Tensor>, P::Error> {
        Ok(Norm {
            gamma: self.get(&format!("{at}.weight"), &[size])?,
            beta: self.get(&format!("{at}.bias"), &[size])?,
        })
    }

    fn layer(&self, at: &str, c: &Config) -> Result<Layer<Tensor>, P::Error> {
        let h = c.hidden_size;
        let (q, k, v) = (
            self.dense(&format!("{at}.attention.self.query"), h, h)?,
            self.dense(&format!("{at}.attention.self.key"), h, h)?,
            self.dense(&format!("{at}.attention.self.value"), h, h)?,
        );
        Ok(Layer {
            qkv: Dense {
                weight: Tensor::cat(&[&q.weight, &k.weight, &v.weight], 0)?,
                bias: Tensor::cat(&[&q.bias, &k.bias, &v.bias], 0)?,
                out: 3 * h,
            },
            attention_out: self.dense(&format!("{at}.attention.output.dense"), h, h)?,
            attention_norm: self.norm(&format!("{at}.attention.output.LayerNorm"), h)?,
            intermediate: self.dense(
                &format!("{at}.intermediate.dense"),
                h,
                c.intermediate_size,
            )?,
            output: self.dense(&format!("{at}.output.dense"), c.intermediate_size, h)?,
            output_norm: self.norm(&format!("{at}.output.LayerNorm"), h)?,
        })
    }

    fn weights(&self, c: &Config) -> Result<Weights<Tensor>, P::Error> {
        let h = c.hidden_size;
        Ok(Weights {
            words: self.get("embeddings.word_embeddings.weight", &[c.vocab_size, h])?,
            positions: self.get(
                "embeddings.position_embeddings.weight",
                &[c.max_position_embeddings, h],
            )?,
            token_types: self.get(
                "embeddings.token_type_embeddings.weight",
                &[c.type_vocab_size, h],
            )?,
            embeddings_norm: self.norm("embeddings.LayerNorm", h)?,
            layers: (0..c.num_hidden_layers)
                .map(|i| self.layer(&format!("encoder.layer.{i}"), c))
                .collect::<Result<_, _>>()?,
        })
    }
}

fn values(t: Tensor) -> candle_core::Result<Vec<f32>> {
    t.flatten_all()?.to_vec1::<f32>()
}

impl<P> Dense<P> {
    fn map<Q>(self, f: &impl Fn(P) -> candle_core::Result<Q>) -> candle_core::Result<Dense<Q>> {
        Ok(Dense {
            weight: f(self.weight)?,
            bias: f(self.bias)?,
            out: self.out,
        })
    }
}

impl<P> Norm<P> {
    fn map<Q>(self, f: &impl Fn(P) -> candle_core::Result<Q>) -> candle_core::Result<Norm<Q>> {
        Ok(Norm {
            gamma: f(self.gamma)?,
            beta: f(self.beta)?,
        })
    }
}

impl<P> Weights<P> {
    /// The same weights with every parameter converted by `f`.
    fn map<Q>(self, f: &impl Fn(P) -> candle_core::Result<Q>) -> candle_core::Result<Weights<Q>> {
        Ok(Weights {
            words: f(self.words)?,
            positions: f(self.positions)?,
            token_types: f(self.token_types)?,
            embeddings_norm: self.embeddings_norm.map(f)?,
            layers: self
                .layers
                .into_iter()
                .map(|l| {
                    Ok(Layer {
                        qkv: l.qkv.map(f)?,
                        attention_out: l.attention_out.map(f)?,
                        attention_norm: l.attention_norm.map(f)?,
                        intermediate: l.intermediate.map(f)?,
                        output: l.output.map(f)?,
                        output_norm: l.output_norm.map(f)?,
                    })
                })
                .collect::<candle_core::Result<_>>()?,
        })
    }
}

impl Bert {
    /// Loads the network `config` describes from `params` onto `device` (float32). Errors are
    /// the source's: the first parameter it cannot give.
    pub fn load<P: Parameters>(
        params: &P,
        config: Config,
        device: &Device,
    ) -> Result<Bert, P::Error> {
        let loaded = Source { params, device }.weights(&config)?;
        let params = if device.is_cpu() {
            Params::Cpu(loaded.map(&values)?)
        } else {
            Params::Device(loaded)
        };
        Ok(Bert {
            config,
            params,
            device: device.clone(),
        })
    }

    /// The last hidden states of every text's tokens, the texts one after another
    /// (`Σ len × hidden`, row-major). Token ids must be below `vocab_size`, type ids below
    /// `type_vocab_size`, and no text may be longer than `max_position_embeddings`.
    pub fn forward(&self, texts: &[Text<'_>]) -> candle_core::Result<Vec<f32>> {
        self.check(texts)?;
        match &self.params {
            Params::Cpu(w) => Ok(self.forward_cpu(w, texts)),
            Params::Device(w) => self.forward_device(w, texts),
        }
    }

    /// Refuses ids the embeddings do not hold.
    fn check(&self, texts: &[Text<'_>]) -> candle_core::Result<()> {
        let c = &self.config;
        for t in texts {
            if t.ids.len() != t.type_ids.len() {
                candle_core::bail!(
                    "{} token ids but {} type ids",
                    t.ids.len(),
                    t.type_ids.len()
                );
            }
            if t.ids.len() > c.max_position_embeddings {
                candle_core::bail!(
                    "{} tokens, more than the {} positions",
                    t.ids.len(),
                    c.max_position_embeddings
                );
            }
            if let Some(id) = t.ids.iter().find(|&&i| i as usize >= c.vocab_size) {
                candle_core::bail!("token id {id} is not below vocab_size {}", c.vocab_size);
            }
            if let Some(id) = t
                .type_ids
                .iter()
                .find(|&&i| i as usize >= c.type_vocab_size)
            {
                candle_core::bail!(
                    "token type id {id} is not below type_vocab_size {}",
                    c.type_vocab_size
                );
            }
        }
        Ok(())
    }

    // ---- CPU: packed rows on slices ----

    fn forward_cpu(&self, w: &Weights<Vec<f32>>, texts: &[Text<'_>]) -> Vec<f32> {
        let c = &self.config;
        let (h, eps) = (c.hidden_size, c.layer_norm_eps as f32);
        let lengths: Vec<usize> = texts.iter().map(|t| t.ids.len()).collect();
        let rows: usize = lengths.iter().sum();
        let mut x = embed_cpu(w, texts, h);
        layer_norm_rows(&mut x, None, &w.embeddings_norm, eps);
        let mut qkv = vec![0f32; rows * 3 * h];
        let mut context = vec![0f32; rows * h];
        let mut inner = vec![0f32; rows * c.intermediate_size];
        let mut next = vec![0f32; rows * h];
        for l in &w.layers {
            dense_cpu(&x, &l.qkv, &mut qkv, None);
            attention_cpu(&qkv, &lengths, c.num_attention_heads, h, &mut context);
            residual_dense_cpu(&context, &l.attention_out, &x, &mut next);
            layer_norm_rows(
                &mut next,
                Some(&l.attention_out.bias),
                &l.attention_norm,
                eps,
            );
            std::mem::swap(&mut x, &mut next);
            dense_cpu(&x, &l.intermediate, &mut inner, Some(c.hidden_act));
            residual_dense_cpu(&inner, &l.output, &x, &mut next);
            layer_norm_rows(&mut next, Some(&l.output.bias), &l.output_norm, eps);
            std::mem::swap(&mut x, &mut next);
        }
        x
    }

    // ---- other devices: candle operations on the padded batch ----

    fn forward_device(
        &self,
        w: &Weights<Tensor>,
        texts: &[Text<'_>],
    ) -> candle_core::Result<Vec<f32>> {
        let c = &self.config;
        let (rows, width) = (
            texts.len(),
            texts.iter().map(|t| t.ids.len()).max().unwrap_or(0),
        );
        if rows == 0 || width == 0 {
            return Ok(Vec::new());
        }
        let mut ids = vec![0u32; rows * width];
        let mut type_ids = vec![0u32; rows * width];
        let mut bias = vec![f32::MIN; rows * width];
        for (r, t) in texts.iter().enumerate() {
            let at = r * width;
            ids[at..at + t.ids.len()].copy_from_slice(t.ids);
            type_ids[at..at + t.ids.len()].copy_from_slice(t.type_ids);
            bias[at..at + t.ids.len()].fill(0.0);
        }
        let dev = &self.device;
        let ids = Tensor::from_vec(ids, rows * width, dev)?;
        let type_ids = Tensor::from_vec(type_ids, rows * width, dev)?;
        // Added to every score of a padded key: (rows, 1, 1, width).
        let mask = Tensor::from_vec(bias, (rows, 1, 1, width), dev)?;
        let positions = Tensor::arange(0u32, width as u32, dev)?;
        let x = w
            .words
            .index_select(&ids, 0)?
            .add(&w.token_types.index_select(&type_ids, 0)?)?
            .reshape((rows, width, c.hidden_size))?
            .broadcast_add(&w.positions.index_select(&positions, 0)?)?;
        let eps = c.layer_norm_eps as f32;
        let mut x = norm_device(&x, &w.embeddings_norm, eps)?;
        for l in &w.layers {
            let context = self.attention_device(&linear_device(&x, &l.qkv)?, &mask)?;
            let a = linear_device(&context, &l.attention_out)?.add(&x)?;
            let a = norm_device(&a, &l.attention_norm, eps)?;
            let inner = linear_device(&a, &l.intermediate)?;
            let inner = match c.hidden_act {
                Activation::Gelu => inner.gelu_erf()?,
                Activation::GeluTanh => inner.gelu()?,
                Activation::Relu => inner.relu()?,
            };
            let out = linear_device(&inner, &l.output)?.add(&a)?;
            x = norm_device(&out, &l.output_norm, eps)?;
        }
        let all = x.to_device(&Device::Cpu)?.flatten_all()?.to_vec1::<f32>()?;
        let h = c.hidden_size;
        let mut packed = Vec::with_capacity(texts.iter().map(|t| t.ids.len()).sum::<usize>() * h);
        for (r, t) in texts.iter().enumerate() {
            packed.extend_from_slice(&all[r * width * h..(r * width + t.ids.len()) * h]);
        }
        Ok(packed)
    }

    /// Scaled dot-product attention of every head: `qkv` is (rows, width, 3·hidden), the
    /// result (rows, width, hidden).
    fn attention_device(&self, qkv: &Tensor, mask: &Tensor) -> candle_core::Result<Tensor> {
        let c = &self.config;
        let (rows, width, _) = qkv.dims3()?;
        let heads = c.num_attention_heads;
        let d = c.hidden_size / heads;
        let split = |i: usize| -> candle_core::Result<Tensor> {
            qkv.narrow(D::Minus1, i * c.hidden_size, c.hidden_size)?
                .reshape((rows, width, heads, d))?
                .transpose(1, 2)?
                .contiguous()
        };
        let (q, k, v) = (split(0)?, split(1)?, split(2)?);
        let scores = (q.matmul(&k.t()?)? / (d as f64).sqrt())?.broadcast_add(mask)?;
        let probs = candle_nn::ops::softmax_last_dim(&scores)?;
        probs
            .matmul(&v)?
            .transpose(1, 2)?
            .contiguous()?
            .reshape((rows, width, c.hidden_size))
    }
}

fn linear_device(x: &Tensor, d: &Dense<Tensor>) -> candle_core::Result<Tensor> {
    x.broadcast_matmul(&d.weight.t()?)?.broadcast_add(&d.bias)
}

fn norm_device(x: &Tensor, n: &Norm<Tensor>, eps: f32) -> candle_core::Result<Tensor> {
    candle_nn::ops::layer_norm(&x.contiguous()?, &n.gamma, &n.beta, eps)
}

/// Word + position + token type embeddings of every token, the texts one after another.
fn embed_cpu(w: &Weights<Vec<f32>>, texts: &[Text<'_>], h: usize) -> Vec<f32> {
    let rows: usize = texts.iter().map(|t| t.ids.len()).sum();
    let mut x = Vec::with_capacity(rows * h);
    for t in texts {
        for (p, (&id, &ty)) in t.ids.iter().zip(t.type_ids).enumerate() {
            let word = &w.words[id as usize * h..][..h];
            let position = &w.positions[p * h..][..h];
            let token_type = &w.token_types[ty as usize * h..][..h];
            x.extend(
                word.iter()
                    .zip(position)
                    .zip(token_type)
                    .map(|((a, b), c)| a + b + c),
            );
        }
    }
    x
}

/// `out = act(x · Wᵀ + b)` over rows of `x`.
fn dense_cpu(x: &[f32], d: &Dense<Vec<f32>>, out: &mut [f32], act: Option<Activation>) {
    let input = d.weight.len() / d.out;
    let rows = x.len() / input;
    matmul(
        out,
        (x, false),
        (&d.weight, true),
        (rows, d.out, input),
        false,
    );
    for row in out.chunks_exact_mut(d.out) {
        for (v, b) in row.iter_mut().zip(&d.bias) {
            *v += b;
        }
        match act {
            None => {}
            Some(Activation::Gelu) => row.iter_mut().for_each(|v| *v = gelu_erf(*v)),
            Some(Activation::GeluTanh) => row.iter_mut().for_each(|v| *v = gelu_tanh(*v)),
            Some(Activation::Relu) => row.iter_mut().for_each(|v| *v = v.max(0.0)),
        }
    }
}

/// `out = residual + x · Wᵀ` (the bias is added with the LayerNorm that follows).
fn residual_dense_cpu(x: &[f32], d: &Dense<Vec<f32>>, residual: &[f32], out: &mut [f32]) {
    let input = d.weight.len() / d.out;
    let rows = x.len() / input;
    out.copy_from_slice(residual);
    matmul(
        out,
        (x, false),
        (&d.weight, true),
        (rows, d.out, input),
        true,
    );
}

/// LayerNorm of every row of `x` in place, after adding `bias` to each row when given.
fn layer_norm_rows(x: &mut [f32], bias: Option<&[f32]>, n: &Norm<Vec<f32>>, eps: f32) {
    let h = n.gamma.len();
    for row in x.chunks_exact_mut(h) {
        if let Some(bias) = bias {
            row.iter_mut().zip(bias).for_each(|(v, b)| *v += b);
        }
        let mean = row.iter().sum::<f32>() / h as f32;
        let var = row.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / h as f32;
        let scale = 1.0 / (var + eps).sqrt();
        for ((v, g), b) in row.iter_mut().zip(&n.gamma).zip(&n.beta) {
            *v = (*v - mean) * scale * g + b;
        }
    }
}

/// Every text's self-attention on its own tokens: `qkv` holds, per token, its query, key and
/// value (`3·hidden`); `out` gets each token's context (`hidden`), heads side by side.
fn attention_cpu(qkv: &[f32], lengths: &[usize], heads: usize, h: usize, out: &mut [f32]) {
    let d = h / heads;
    let scale = 1.0 / (d as f32).sqrt();
    let longest = lengths.iter().copied().max().unwrap_or(0);
    let (mut q, mut k, mut v) = (
        vec![0f32; longest * d],
        vec![0f32; longest * d],
        vec![0f32; longest * d],
    );
    let mut scores = vec![0f32; longest * longest];
    let mut context = vec![0f32; longest * d];
    let mut start = 0;
    for &len in lengths.iter().filter(|&&len| len > 0) {
        let tokens = &qkv[start * 3 * h..(start + len) * 3 * h];
        for head in 0..heads {
            let (q, k, v) = (&mut q[..len * d], &mut k[..len * d], &mut v[..len * d]);
            for (t, token) in tokens.chunks_exact(3 * h).enumerate() {
                let at = head * d;
                q[t * d..][..d].copy_from_slice(&token[at..at + d]);
                k[t * d..][..d].copy_from_slice(&token[h + at..h + at + d]);
                v[t * d..][..d].copy_from_slice(&token[2 * h + at..2 * h + at + d]);
            }
            let scores = &mut scores[..len * len];
            matmul(scores, (q, false), (k, true), (len, len, d), false);
            for row in scores.chunks_exact_mut(len) {
                softmax_scaled(row, scale);
            }
            let context = &mut context[..len * d];
            matmul(context, (scores, false), (v, false), (len, d, len), false);
            for (t, c) in context.chunks_exact(d).enumerate() {
                out[(start + t) * h + head * d..][..d].copy_from_slice(c);
            }
        }
        start += len;
    }
}

/// softmax(scale · row) in place.
fn softmax_scaled(row: &mut [f32], scale: f32) {
    let max = row.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
    let mut sum = 0f32;
    for v in row.iter_mut() {
        *v = ((*v - max) * scale).exp();
        sum += *v;
    }
    let inv = 1.0 / sum;
    row.iter_mut().for_each(|v| *v *= inv);
}

/// GELU with `erf`: x · (1 + erf(x / √2)) / 2.
#[inline]
pub(crate) fn gelu_erf(x: f32) -> f32 {
    0.5 * x * (1.0 + erf(x * std::f32::consts::FRAC_1_SQRT_2))
}

/// GELU's tanh approximation.
#[inline]
fn gelu_tanh(x: f32) -> f32 {
    const SQRT_2_OVER_PI: f32 = 0.797_884_6;
    0.5 * x * (1.0 + (SQRT_2_OVER_PI * (x + 0.044_715 * x * x * x)).tanh())
}

/// `erf` in float32 as a rational function of x on [-4, 4] (beyond, ±1 to float32
/// precision), branch-free so that a loop over it vectorises: the approximation of Eigen and
/// XLA (odd numerator of degree 13, even denominator of degree 8), within a few 1e-7 of erf.
#[inline]
pub(crate) fn erf(x: f32) -> f32 {
    let x = x.clamp(-4.0, 4.0);
    let x2 = x * x;
    let mut p = x2.mul_add(-2.726_142_3e-10, 2.770_681_4e-8);
    p = x2.mul_add(p, -2.101_024e-6);
    p = x2.mul_add(p, -5.692_506_4e-5);
    p = x2.mul_add(p, -7.349_906_3e-4);
    p = x2.mul_add(p, -2.954_6e-3);
    p = x2.mul_add(p, -1.609_603_3e-2);
    let mut q = x2.mul_add(-1.456_607_2e-5, -2.133_740_6e-4);
    q = x2.mul_add(q, -1.682_827e-3);
    q = x2.mul_add(q, -7.373_329e-3);
    q = x2.mul_add(q, -1.426_474e-2);
    x * p / q
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn erf_is_within_a_few_ulp_of_libm() {
        let mut worst = 0f64;
        for i in -60_000..=60_000 {
            let x = i as f64 / 10_000.0;
            let want = libm_erf(x);
            let got = erf(x as f32) as f64;
            worst = worst.max((got - want).abs());
        }
        assert!(worst < 1e-6, "largest error {worst}");
        assert_eq!(erf(0.0), 0.0);
        assert_eq!(erf(10.0), erf(4.0));
        assert!((erf(10.0) - 1.0).abs() < 1e-6);
    }

    /// erf in f64 by its Taylor series (|x| ≤ 3) and asymptotic continued fraction beyond.
    fn libm_erf(x: f64) -> f64 {
        if x.abs() > 3.0 {
            // erfc(x) = exp(-x²)/(x√π) · 1/(1 + 1/(2x²)/(1 + 2/(2x²)/(1 + …)))
            let a = x.abs();
            let mut f = 0.0;
            for n in (1..60).rev() {
                f = (n as f64 / 2.0) / (a + f);
            }
            let erfc = (-a * a).exp() / std::f64::consts::PI.sqrt() / (a + f);
            return x.signum() * (1.0 - erfc);
        }
        let mut sum = 0.0;
        let mut term = x;
        for n in 0..200 {
            sum += term / (2 * n + 1) as f64;
            term *= -x * x / (n + 1) as f64;
        }
        2.0 / std::f64::consts::PI.sqrt() * sum
    }

    const CONFIG: Config = Config {
        vocab_size: 11,
        hidden_size: 8,
        num_hidden_layers: 2,
        num_attention_heads: 2,
        intermediate_size: 12,
        hidden_act: Activation::Gelu,
        max_position_embeddings: 9,
        type_vocab_size: 2,
        layer_norm_eps: 1e-12,
        hidden_dropout: 0.1,
        attention_dropout: 0.1,
    };

    /// Random weights under Hugging Face's names.
    fn random_weights(c: &Config) -> HashMap<String, Tensor> {
        let mut seed = 1u64;
        let mut tensors = HashMap::new();
        let mut add = |name: String, shape: &[usize]| {
            let n: usize = shape.iter().product();
            let values: Vec<f32> = (0..n)
                .map(|_| {
                    seed = seed
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    (seed >> 40) as f32 / (1u64 << 24) as f32 - 0.5
                })
                .collect();
            let t = Tensor::from_vec(values, shape, &Device::Cpu).unwrap();
            tensors.insert(name, t);
        };
        let (h, i) = (c.hidden_size, c.intermediate_size);
        add(
            "embeddings.word_embeddings.weight".into(),
            &[c.vocab_size, h],
        );
        add(
            "embeddings.position_embeddings.weight".into(),
            &[c.max_position_embeddings, h],
        );
        add(
            "embeddings.token_type_embeddings.weight".into(),
            &[c.type_vocab_size, h],
        );
        let mut dense = |at: String, out: usize, input: usize| {
            add(format!("{at}.weight"), &[out, input]);
            add(format!("{at}.bias"), &[out]);
        };
        for l in 0..c.num_hidden_layers {
            let at = format!("encoder.layer.{l}");
            for m in ["query", "key", "value"] {
                dense(format!("{at}.attention.self.{m}"), h, h);
            }
            dense(format!("{at}.attention.output.dense"), h, h);
            dense(format!("{at}.intermediate.dense"), i, h);
            dense(format!("{at}.output.dense"), h, i);
        }
        let mut norms = vec!["embeddings.LayerNorm".to_string()];
        for l in 0..c.num_hidden_layers {
            norms.push(format!("encoder.layer.{l}.attention.output.LayerNorm"));
            norms.push(format!("encoder.layer.{l}.output.LayerNorm"));
        }
        for n in norms {
            let ones = Tensor::from_vec(vec![1.1f32; h], h, &Device::Cpu).unwrap();
            let zeros = Tensor::from_vec(vec![0.1f32; h], h, &Device::Cpu).unwrap();
            tensors.insert(format!("{n}.weight"), ones);
            tensors.insert(format!("{n}.bias"), zeros);
        }
        tensors
    }

    fn texts() -> Vec<(Vec<u32>, Vec<u32>)> {
        vec![
            (vec![2, 5, 7, 3], vec![0, 0, 0, 0]),
            (vec![2, 3], vec![0, 0]),
            (vec![2, 9, 10, 4, 1, 6, 8, 3], vec![0, 0, 0, 0, 1, 1, 1, 1]),
        ]
    }

    fn run(bert: &Bert, texts: &[(Vec<u32>, Vec<u32>)]) -> Vec<f32> {
        let batch: Vec<Text> = texts
            .iter()
            .map(|(ids, type_ids)| Text { ids, type_ids })
            .collect();
        bert.forward(&batch).unwrap()
    }

    /// The candle path (used on GPUs, padded and masked) run on the CPU.
    fn on_device_path(bert: Bert) -> Bert {
        let Params::Cpu(w) = bert.params else {
            unreachable!()
        };
        let tensor = |v: Vec<f32>| {
            let n = v.len();
            Tensor::from_vec(v, n, &Device::Cpu)
        };
        let mut w = w.map(&tensor).unwrap();
        let c = &bert.config;
        let h = c.hidden_size;
        w.words = w.words.reshape((c.vocab_size, h)).unwrap();
        w.positions = w.positions.reshape((c.max_position_embeddings, h)).unwrap();
        w.token_types = w.token_types.reshape((c.type_vocab_size, h)).unwrap();
        for l in &mut w.layers {
            for d in [
                &mut l.qkv,
                &mut l.attention_out,
                &mut l.intermediate,
                &mut l.output,
            ] {
                let input = d.weight.elem_count() / d.out;
                d.weight = d.weight.reshape((d.out, input)).unwrap();
            }
        }
        Bert {
            params: Params::Device(w),
            ..bert
        }
    }

    /// Parameters by name, refused when missing or of another shape.
    impl Parameters for HashMap<String, Tensor> {
        type Error = candle_core::Error;

        fn get(&self, name: &str, shape: &[usize], _: &Device) -> candle_core::Result<Tensor> {
            match HashMap::get(self, name) {
                None => candle_core::bail!("{name} is missing"),
                Some(t) if t.dims() != shape => {
                    candle_core::bail!("{name} has shape {:?}", t.dims())
                }
                Some(t) => Ok(t.clone()),
            }
        }
    }

    fn load(c: &Config, tensors: HashMap<String, Tensor>) -> candle_core::Result<Bert> {
        Bert::load(&tensors, c.clone(), &Device::Cpu)
    }

    #[test]
    fn packed_rows_equal_the_padded_masked_network_and_each_text_alone() {
        for act in [Activation::Gelu, Activation::GeluTanh, Activation::Relu] {
            let c = Config {
                hidden_act: act,
                ..CONFIG
            };
            let fast = load(&c, random_weights(&c)).unwrap();
            let texts = texts();
            let packed = run(&fast, &texts);
            assert_eq!(packed.len(), 14 * c.hidden_size);
            let mut alone = Vec::new();
            for t in &texts {
                alone.extend(run(&fast, std::slice::from_ref(t)));
            }
            let reference = run(&on_device_path(fast), &texts);
            for (i, ((a, b), r)) in packed.iter().zip(&alone).zip(&reference).enumerate() {
                assert!((a - b).abs() < 1e-5, "{act:?} value {i}: {a} alone {b}");
                assert!((a - r).abs() < 1e-4, "{act:?} value {i}: {a} padded {r}");
            }
        }
    }

    #[test]
    fn a_text_of_no_tokens_takes_no_rows() {
        let bert = load(&CONFIG, random_weights(&CONFIG)).unwrap();
        let text = (vec![2, 9, 3], vec![0, 0, 0]);
        let with_empty = run(&bert, &[(vec![], vec![]), text.clone(), (vec![], vec![])]);
        assert_eq!(with_empty, run(&bert, &[text]));
    }

    #[test]
    fn bad_weights_and_ids_are_refused() {
        let mut missing = random_weights(&CONFIG);
        missing.remove("encoder.layer.1.output.dense.bias");
        let e = load(&CONFIG, missing).err().unwrap().to_string();
        assert!(e.contains("encoder.layer.1.output.dense.bias"), "{e}");
        let wider = Config {
            intermediate_size: 13,
            ..CONFIG
        };
        let e = load(&wider, random_weights(&CONFIG))
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("intermediate.dense.weight"), "{e}");

        let bert = load(&CONFIG, random_weights(&CONFIG)).unwrap();
        let e = |ids: &[u32], type_ids: &[u32]| {
            bert.forward(&[Text { ids, type_ids }])
                .unwrap_err()
                .to_string()
        };
        assert!(e(&[2, 11], &[0, 0]).contains("token id 11"));
        assert!(e(&[2, 3], &[0, 2]).contains("type id 2"));
        assert!(e(&[2, 3], &[0]).contains("1 type ids"));
        assert!(e(&[1; 10], &[0; 10]).contains("9 positions"));
    }
}
