//! MMSA's MulT, the Multimodal Transformer (`MMSA/models/singleTask/MULT.py` with
//! `MMSA/models/subNets/transformers_encoder/transformer.py` and `multihead_attention.py`,
//! MMSA 2.2.1, from fairseq by way of yaohungt/Multimodal-Transformer).
//!
//! Each modality's sequence (B × T × D, padded) is projected to `d` channels by a 1-D
//! convolution without padding or bias (none where its width already is `d`). Each modality
//! then attends to each of the other two through a cross-modal transformer (`trans_l_with_a`,
//! …: queries from the one, keys and values from the other), the two results are concatenated
//! (2·d) and run through a self-attention transformer (`trans_l_mem`, …, at least 3 layers),
//! whose last step (the last padded step, as MMSA takes it) is the modality's summary. The
//! three summaries (6·d) go through a residual block (`proj1`, ReLU, dropout, `proj2`, plus
//! its input) and `out_layer`.
//!
//! A transformer (`TransformerEncoder`) scales its inputs by √d, applies embedding dropout
//! (to the keys' and the values' copies apart), runs pre-norm layers and a final layer norm;
//! it has no position embeddings (MulT builds it without). A layer normalises the queries,
//! keys and values with its first layer norm, attends (queries scaled by 1/√head width, the
//! future masked as `buffered_future_mask` does when `attn_mask`, attention dropout), adds
//! the residual, then normalises with its second and adds `fc2(dropout(relu(fc1(x))))`. The
//! keys and values every layer reads are the transformer's scaled inputs, not the previous
//! layer's output. Lengths are not used: MMSA's MulT attends over the padding too.

use candle_core::Tensor;
use mmflow_pipeline::StageError;
use rand::Rng;

use super::super::device::err;
use super::super::fused_attention::{attention, future_mask, FusedAttention};
use super::super::nn::{dropout, softmax_last_dim, xavier_bound, LayerNorm, Linear, Pass};
use super::super::weights::ParamStore;
use super::settings::MultSettings;

type Result<T> = std::result::Result<T, StageError>;

/// One pre-norm transformer layer (`TransformerEncoderLayer`).
struct EncoderLayer {
    /// Query, key and value weights stacked (`self_attn.in_proj_weight`, 3·d × d).
    in_proj_weight: Tensor,
    /// Their biases (`self_attn.in_proj_bias`, 3·d).
    in_proj_bias: Tensor,
    out_proj: Linear,
    fc1: Linear,
    fc2: Linear,
    norms: [LayerNorm; 2],
}

/// What a transformer's layers share.
#[derive(Clone, Copy)]
struct Attending {
    dim: usize,
    heads: usize,
    attn_dropout: f32,
    relu_dropout: f32,
    res_dropout: f32,
    attn_mask: bool,
}

/// A `TransformerEncoder` without position embeddings.
struct Transformer {
    layers: Vec<EncoderLayer>,
    norm: LayerNorm,
    embed_dropout: f32,
    attending: Attending,
}

/// The keys' and values' inputs of a cross-modal layer (both from the other modality).
struct Source<'a> {
    keys: &'a Tensor,
    values: &'a Tensor,
}

impl EncoderLayer {
    fn new(store: &mut ParamStore, name: &str, dim: usize) -> Result<EncoderLayer> {
        let attn = format!("{name}.self_attn");
        Ok(EncoderLayer {
            in_proj_weight: store.uniform(
                &format!("{attn}.in_proj_weight"),
                &[3 * dim, dim],
                xavier_bound(dim, 3 * dim),
            )?,
            in_proj_bias: store.constant(&format!("{attn}.in_proj_bias"), &[3 * dim], 0.0)?,
            out_proj: Linear::xavier(store, &format!("{attn}.out_proj"), dim, dim)?,
            fc1: Linear::xavier(store, &format!("{name}.fc1"), dim, 4 * dim)?,
            fc2: Linear::xavier(store, &format!("{name}.fc2"), 4 * dim, dim)?,
            norms: [
                LayerNorm::new(store, &format!("{name}.layer_norms.0"), dim)?,
                LayerNorm::new(store, &format!("{name}.layer_norms.1"), dim)?,
            ],
        })
    }

    /// Rows `part·d .. (part+1)·d` of the stacked projection applied to `x` (B × T × d).
    fn project(&self, x: &Tensor, part: usize, dim: usize) -> candle_core::Result<Tensor> {
        let w = self.in_proj_weight.narrow(0, part * dim, dim)?;
        let b = self.in_proj_bias.narrow(0, part * dim, dim)?;
        x.broadcast_matmul(&w.t()?)?.broadcast_add(&b)
    }

    /// B × Tq × d from queries `x` and, for a cross-modal layer, the other modality's keys and
    /// values (else `x` itself).
    fn forward(
        &self,
        x: &Tensor,
        source: Option<&Source<'_>>,
        a: Attending,
        pass: &mut Pass<'_>,
    ) -> Result<Tensor> {
        let normed = self.norms[0].forward(x)?;
        let (keys, values) = match source {
            Some(s) => (
                self.norms[0].forward(s.keys)?,
                self.norms[0].forward(s.values)?,
            ),
            None => (normed.clone(), normed.clone()),
        };
        let attended = self.attend(&normed, &keys, &values, a, pass)?;
        let attended = self.out_proj.forward(&attended)?;
        let x = (x + dropout(&attended, a.res_dropout, pass)?).map_err(err("mult residual"))?;
        let inner = self.fc1.forward_relu(&self.norms[1].forward(&x)?)?;
        let inner = self.fc2.forward(&dropout(&inner, a.relu_dropout, pass)?)?;
        (x + dropout(&inner, a.res_dropout, pass)?).map_err(err("mult residual"))
    }

    /// Multi-head attention of queries `q_in` over `k_in`/`v_in` (each B × T × d, already
    /// normalised): B × Tq × d before the output projection.
    fn attend(
        &self,
        q_in: &Tensor,
        k_in: &Tensor,
        v_in: &Tensor,
        a: Attending,
        pass: &mut Pass<'_>,
    ) -> Result<Tensor> {
        let (b, tq, dim) = q_in.dims3().map_err(err("mult attention"))?;
        let tk = k_in.dim(1).map_err(err("mult attention"))?;
        let head = dim / a.heads;
        let heads = |x: Tensor, t: usize| -> candle_core::Result<Tensor> {
            x.reshape((b, t, a.heads, head))?
                .transpose(1, 2)?
                .contiguous()
        };
        let project = |x: &Tensor, part: usize, t: usize| -> candle_core::Result<Tensor> {
            heads(self.project(x, part, dim)?, t)
        };
        let q = project(q_in, 0, tq).map_err(err("mult attention queries"))?;
        let k = project(k_in, 1, tk).map_err(err("mult attention keys"))?;
        let v = project(v_in, 2, tk).map_err(err("mult attention values"))?;
        let scale = (head as f32).powf(-0.5);
        let attended = if q.device().is_cpu() {
            let dropout = (pass.train && a.attn_dropout > 0.0)
                .then(|| (a.attn_dropout, pass.rng.random::<u64>()));
            let op = FusedAttention {
                scale,
                future_offset: a.attn_mask.then_some(future_offset(tq, tk)),
                dropout,
                key_lengths: None,
            };
            let slices = |x: Tensor, t: usize| x.reshape((b * a.heads, t, head));
            (|| {
                attention(&slices(q, tq)?, &slices(k, tk)?, &slices(v, tk)?, op)?
                    .reshape((b, a.heads, tq, head))
            })()
            .map_err(err("mult attention"))?
        } else {
            self.attend_by_ops(&q, &k, &v, scale, a, pass)?
        };
        attended
            .transpose(1, 2)
            .and_then(|x| x.contiguous())
            .and_then(|x| x.reshape((b, tq, dim)))
            .map_err(err("mult attention heads"))
    }

    /// The same attention from candle's ops (other devices): B × H × Tq × head.
    fn attend_by_ops(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        scale: f32,
        a: Attending,
        pass: &mut Pass<'_>,
    ) -> Result<Tensor> {
        let (tq, tk) = (
            q.dim(2).map_err(err("mult attention"))?,
            k.dim(2).map_err(err("mult attention"))?,
        );
        let scores = (|| -> candle_core::Result<Tensor> {
            let scores = (q * f64::from(scale))?.matmul(&k.t()?.contiguous()?)?;
            if a.attn_mask {
                scores.broadcast_add(&future_mask(tq, tk, future_offset(tq, tk), q.device())?)
            } else {
                Ok(scores)
            }
        })()
        .map_err(err("mult attention scores"))?;
        let weights = softmax_last_dim(&scores).map_err(err("mult attention softmax"))?;
        let weights = dropout(&weights, a.attn_dropout, pass)?;
        weights.matmul(v).map_err(err("mult attention values"))
    }
}

/// fairseq's `buffered_future_mask(x, x_k)` hides key `j` from query `i` when
/// `j ≥ i + 1 + |Tk − Tq|`: this offset.
fn future_offset(tq: usize, tk: usize) -> usize {
    1 + tq.abs_diff(tk)
}

impl Transformer {
    fn new(
        store: &mut ParamStore,
        name: &str,
        layers: usize,
        embed_dropout: f32,
        attending: Attending,
    ) -> Result<Transformer> {
        Ok(Transformer {
            layers: (0..layers)
                .map(|i| EncoderLayer::new(store, &format!("{name}.layers.{i}"), attending.dim))
                .collect::<Result<_>>()?,
            norm: LayerNorm::new(store, &format!("{name}.layer_norm"), attending.dim)?,
            embed_dropout,
            attending,
        })
    }

    /// B × Tq × d from `x` (B × Tq × d) attending to itself, or to `other` (B × Tk × d).
    fn forward(&self, x: &Tensor, other: Option<&Tensor>, pass: &mut Pass<'_>) -> Result<Tensor> {
        let scale = (self.attending.dim as f64).sqrt();
        let embed = |t: &Tensor, pass: &mut Pass<'_>| -> Result<Tensor> {
            let scaled = t.affine(scale, 0.0).map_err(err("mult embedding"))?;
            dropout(&scaled, self.embed_dropout, pass)
        };
        let mut x = embed(x, pass)?;
        let source = match other {
            Some(o) => Some((embed(o, pass)?, embed(o, pass)?)),
            None => None,
        };
        for layer in &self.layers {
            let source = source
                .as_ref()
                .map(|(keys, values)| Source { keys, values });
            x = layer.forward(&x, source.as_ref(), self.attending, pass)?;
        }
        self.norm.forward(&x)
    }
}

/// MulT.
pub struct Mult {
    settings: MultSettings,
    /// The convolutions of text, audio, video (`proj_l`, … : d × D × kernel), none used where
    /// D = d.
    projections: [Option<Tensor>; 3],
    /// `trans_l_with_a`, `trans_l_with_v`, `trans_a_with_l`, `trans_a_with_v`,
    /// `trans_v_with_l`, `trans_v_with_a`.
    cross: [[Transformer; 2]; 3],
    /// `trans_l_mem`, `trans_a_mem`, `trans_v_mem`.
    memory: [Transformer; 3],
    proj1: Linear,
    proj2: Linear,
    out_layer: Linear,
}

/// Letters of text, audio, video in MMSA's names.
const LETTERS: [&str; 3] = ["l", "a", "v"];

/// The two modalities other than `m`, in order.
fn others(m: usize) -> [usize; 2] {
    match m {
        0 => [1, 2],
        1 => [0, 2],
        _ => [0, 1],
    }
}

impl Mult {
    /// `model.proj_l` …, `model.trans_l_with_a` …, `model.trans_l_mem` …, `model.proj1`,
    /// `model.proj2`, `model.out_layer`, over modalities of `widths` (text, audio, video).
    pub fn new(
        store: &mut ParamStore,
        s: &MultSettings,
        widths: [usize; 3],
        heads: usize,
    ) -> Result<Mult> {
        let d = s.dim;
        // MMSA builds all three convolutions and skips those of modalities already `d` wide
        // (so its state dict, and mmflow's, hold an untrained `proj_l` then).
        let projections = [0, 1, 2].map(|m| {
            let (width, kernel) = (widths[m], s.kernels[m]);
            // PyTorch's `nn.Conv1d` default: uniform ±1/√(in · kernel).
            let bound = 1.0 / ((width * kernel).max(1) as f32).sqrt();
            let name = format!("model.proj_{}.weight", LETTERS[m]);
            let weight = store.uniform(&name, &[d, width, kernel], bound);
            weight.map(|w| (width != d).then_some(w))
        });
        let [l, a, v] = projections;
        let projections = [l?, a?, v?];
        let attending = |query: usize, dim| Attending {
            dim,
            heads: s.heads,
            attn_dropout: s.attn_dropouts[query],
            relu_dropout: s.relu_dropout,
            res_dropout: s.res_dropout,
            attn_mask: s.attn_mask,
        };
        let mut transformer = |name: String, layers, a| {
            Transformer::new(store, &format!("model.{name}"), layers, s.embed_dropout, a)
        };
        // `trans_l_with_a` is MMSA's type `la`: the keys' modality (audio) gives its
        // attention dropout.
        let cross = [0, 1, 2].map(|m| -> Result<[Transformer; 2]> {
            let [first, second] = others(m).map(|o| {
                let name = format!("trans_{}_with_{}", LETTERS[m], LETTERS[o]);
                transformer(name, s.levels, attending(o, d))
            });
            Ok([first?, second?])
        });
        let memory = [0, 1, 2].map(|m| {
            let name = format!("trans_{}_mem", LETTERS[m]);
            transformer(name, s.levels.max(3), attending(0, 2 * d))
        });
        let [cl, ca, cv] = cross;
        let [ml, ma, mv] = memory;
        let combined = 6 * d;
        Ok(Mult {
            settings: *s,
            projections,
            cross: [cl?, ca?, cv?],
            memory: [ml?, ma?, mv?],
            proj1: Linear::new(store, "model.proj1", combined, combined)?,
            proj2: Linear::new(store, "model.proj2", combined, combined)?,
            out_layer: Linear::new(store, "model.out_layer", combined, heads)?,
        })
    }

    /// Segments per evaluation pass over sequences padded to `lengths`: those whose largest
    /// attention (scores and weights, a few copies live at once) fits in about 256 MiB.
    pub fn rows_per_pass(&self, lengths: [usize; 3]) -> usize {
        let longest = lengths.into_iter().max().unwrap_or(1);
        // f32 scores, four copies live at once, per head, over the longest query and key.
        let per_row = 4 * 4 * self.settings.heads * longest * longest;
        ((256 << 20) / per_row.max(1)).clamp(1, 512)
    }

    /// B × heads from text, audio and video (each B × T × D, padded).
    pub fn forward(
        &self,
        text: &Tensor,
        audio: &Tensor,
        video: &Tensor,
        pass: &mut Pass<'_>,
    ) -> Result<Tensor> {
        let text = dropout(text, self.settings.text_dropout, pass)?;
        let inputs = [&text, audio, video];
        let mut projected = Vec::with_capacity(3);
        for (m, x) in inputs.into_iter().enumerate() {
            projected.push(self.project(m, x)?);
        }
        let mut last = Vec::with_capacity(3);
        for m in 0..3 {
            let with = |i: usize, pass: &mut Pass<'_>| {
                self.cross[m][i].forward(&projected[m], Some(&projected[others(m)[i]]), pass)
            };
            let (first, second) = (with(0, pass)?, with(1, pass)?);
            let both = Tensor::cat(&[first, second], 2).map_err(err("mult concatenation"))?;
            let h = self.memory[m].forward(&both, None, pass)?;
            let t = h.dim(1).map_err(err("mult last step"))?;
            last.push(
                h.narrow(1, t - 1, 1)
                    .and_then(|x| x.squeeze(1))
                    .map_err(err("mult last step"))?,
            );
        }
        let last = Tensor::cat(&last, 1).map_err(err("mult summaries"))?;
        let hidden = self.proj1.forward_relu(&last)?;
        let hidden = self
            .proj2
            .forward(&dropout(&hidden, self.settings.output_dropout, pass)?)?;
        let hidden = (hidden + &last).map_err(err("mult residual block"))?;
        self.out_layer.forward(&hidden)
    }

    /// Modality `m`'s B × T × D sequence as B × (T − kernel + 1) × d: each output step the
    /// kernel's window of input steps (one matrix product over the windows side by side).
    fn project(&self, m: usize, x: &Tensor) -> Result<Tensor> {
        let Some(weight) = &self.projections[m] else {
            return Ok(x.clone());
        };
        let kernel = self.settings.kernels[m];
        (|| -> candle_core::Result<Tensor> {
            let (_, t, width) = x.dims3()?;
            let out = t + 1 - kernel;
            let windows: Vec<Tensor> = (0..kernel)
                .map(|j| x.narrow(1, j, out))
                .collect::<candle_core::Result<_>>()?;
            // Window (step j, channel c) at column j·D + c; PyTorch's weight is d × D × kernel.
            let columns = weight
                .permute((0, 2, 1))?
                .reshape((self.settings.dim, kernel * width))?;
            Tensor::cat(&windows, 2)?.broadcast_matmul(&columns.t()?)
        })()
        .map_err(err("mult convolution"))
    }
}
