//! Layers, built on candle tensors with parameters from a [`ParamStore`]: linear layers,
//! MLPs (activation, dropout, layer norm, residual), an LSTM whose input projection is one
//! matrix product over all steps, embeddings and a cross-modal attention fusion.
//!
//! Dropout masks come from a seeded ChaCha stream (candle's CPU generator cannot be seeded),
//! so training is reproducible.

use candle_core::{Module, Tensor};
use mmflow_pipeline::values::Fraction;
use mmflow_pipeline::StageError;
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::device::err;
use super::fused_layer_norm;
use super::fused_linear;
use super::fused_lstm::FusedLstm;
use super::weights::ParamStore;

type Result<T> = std::result::Result<T, StageError>;

/// Everything a forward pass needs besides its input.
pub struct Pass<'a> {
    /// Training (dropout active) or evaluation.
    pub train: bool,
    /// Dropout randomness.
    pub rng: &'a mut ChaCha8Rng,
}

/// A fully connected layer, initialised as PyTorch's `nn.Linear` (uniform ±1/√fan_in).
#[derive(Clone)]
pub struct Linear(candle_nn::Linear);

impl Linear {
    /// `name.weight` `[out, in]` and `name.bias` `[out]`.
    pub fn new(store: &mut ParamStore, name: &str, input: usize, output: usize) -> Result<Linear> {
        let bound = 1.0 / (input.max(1) as f32).sqrt();
        let w = store.uniform(&format!("{name}.weight"), &[output, input], bound)?;
        let b = store.uniform(&format!("{name}.bias"), &[output], bound)?;
        Ok(Linear(candle_nn::Linear::new(w, Some(b))))
    }

    /// `name.weight` `[out, in]` Xavier-uniform (±√(6 / (in + out))) and `name.bias` `[out]`
    /// zero, as fairseq's `Linear` and `MultiheadAttention` initialise theirs.
    pub fn xavier(
        store: &mut ParamStore,
        name: &str,
        input: usize,
        output: usize,
    ) -> Result<Linear> {
        let w = store.uniform(
            &format!("{name}.weight"),
            &[output, input],
            xavier_bound(input, output),
        )?;
        let b = store.constant(&format!("{name}.bias"), &[output], 0.0)?;
        Ok(Linear(candle_nn::Linear::new(w, Some(b))))
    }

    /// A layer of the given weight (`[out, in]`) and bias (`[out]`), e.g. parts of others'.
    pub fn from_parts(weight: Tensor, bias: Tensor) -> Linear {
        Linear(candle_nn::Linear::new(weight, Some(bias)))
    }

    /// The weight, `[out, in]`.
    pub fn weight(&self) -> &Tensor {
        self.0.weight()
    }

    /// The bias, `[out]`.
    pub fn bias(&self) -> Option<&Tensor> {
        self.0.bias()
    }

    /// `x · Wᵀ + b` over the last dimension.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.apply(x, false).map_err(err("linear"))
    }

    /// `max(0, x · Wᵀ + b)`: on the CPU as one op (forward and backward).
    pub fn forward_relu(&self, x: &Tensor) -> Result<Tensor> {
        self.apply(x, true).map_err(err("linear"))
    }

    /// The fused op on the CPU, candle's ops elsewhere.
    fn apply(&self, x: &Tensor, relu: bool) -> candle_core::Result<Tensor> {
        match self.0.bias() {
            Some(b) if x.device().is_cpu() => fused_linear::linear(x, self.0.weight(), b, relu),
            _ => {
                let y = self.0.forward(x)?;
                if relu {
                    y.relu()
                } else {
                    Ok(y)
                }
            }
        }
    }
}

/// Xavier's (Glorot's) uniform bound for a `fan_out × fan_in` weight.
pub fn xavier_bound(fan_in: usize, fan_out: usize) -> f32 {
    (6.0 / (fan_in + fan_out).max(1) as f32).sqrt()
}

/// Softmax over the last dimension, built from differentiable ops (candle-nn's fused
/// `softmax_last_dim` has no backward: gradients would stop at it). The row maximum is
/// subtracted as a constant, which changes neither the result nor its gradient.
pub fn softmax_last_dim(x: &Tensor) -> candle_core::Result<Tensor> {
    let max = x.max_keepdim(candle_core::D::Minus1)?.detach();
    let e = x.broadcast_sub(&max)?.exp()?;
    e.broadcast_div(&e.sum_keepdim(candle_core::D::Minus1)?)
}

/// Non-linearities.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema, Default)]
#[serde(rename_all = "snake_case")]
pub enum Activation {
    /// max(0, x).
    #[default]
    Relu,
    /// GELU (erf).
    Gelu,
    /// tanh.
    Tanh,
    /// x · sigmoid(x).
    Silu,
}

impl Activation {
    /// Applies the function.
    pub fn apply(self, x: &Tensor) -> Result<Tensor> {
        match self {
            Activation::Relu => x.relu(),
            Activation::Gelu => x.gelu_erf(),
            Activation::Tanh => x.tanh(),
            Activation::Silu => x.silu(),
        }
        .map_err(err("activation"))
    }
}

/// Inverted dropout: a mask of [`dropout_factors`] seeded by one draw of the pass's generator.
pub fn dropout(x: &Tensor, p: f32, pass: &mut Pass<'_>) -> Result<Tensor> {
    if !pass.train || p <= 0.0 {
        return Ok(x.clone());
    }
    let stream = DropoutStream::new(p, pass.rng.random::<u64>(), 0);
    if x.device().is_cpu() {
        return x
            .contiguous()
            .and_then(|x| x.apply_op1(FusedDropout(stream)))
            .map_err(err("dropout"));
    }
    let mask = stream.factors(x.elem_count());
    let mask = Tensor::from_vec(mask, x.shape(), x.device()).map_err(err("dropout"))?;
    x.mul(&mask).map_err(err("dropout"))
}

/// Inverted-dropout factors (0 or 1/(1 − p)) of stream `stream` of `seed`, `len` of them, the
/// same every time (for fused ops, whose backward pass redraws its forward pass's mask): see
/// [`DropoutStream`].
pub fn dropout_factors(p: f32, seed: u64, stream: u64, len: usize) -> Vec<f32> {
    DropoutStream::new(p, seed, stream).factors(len)
}

/// A dropout mask as a stream: a SplitMix64 stream of the seed and the stream number, each
/// 64-bit draw four 16-bit lanes, a lane below ⌊(1 − p)·2¹⁶⌋ kept (the rate to within
/// 1/65,536; a cryptographic generator per value cost more than attention itself). Value
/// `i`'s factor is lane `i % 4` of draw `i / 4`, the mix of `start + (i / 4 + 1)·φ`: any
/// stretch of the mask can be made on its own, so none needs to be stored.
#[derive(Clone, Copy)]
struct DropoutStream {
    start: u64,
    threshold: u64,
    scale: f32,
}

const GOLDEN: u64 = 0x9E37_79B9_7F4A_7C15;

/// Values per piece of parallel work (a multiple of 4: stretches start at a draw).
const DROPOUT_STRETCH: usize = 1 << 14;

impl DropoutStream {
    fn new(p: f32, seed: u64, stream: u64) -> DropoutStream {
        DropoutStream {
            start: seed ^ (stream + 1).wrapping_mul(GOLDEN),
            threshold: ((1.0 - f64::from(p)) * 65_536.0) as u64,
            scale: 1.0 / (1.0 - p),
        }
    }

    /// The first `len` factors.
    fn factors(&self, len: usize) -> Vec<f32> {
        let mut mask = vec![0f32; len];
        self.fill(&mut mask, |_, factor| factor);
        mask
    }

    /// Each of `x` times its factor (the forward pass; the backward pass is the same on the
    /// gradient).
    fn scaled(&self, x: &[f32]) -> Vec<f32> {
        let mut out = vec![0f32; x.len()];
        self.fill(&mut out, |i, factor| x[i] * factor);
        out
    }

    /// `out[i] = value(i, factor of i)`, in parallel stretches when there are several.
    fn fill(&self, out: &mut [f32], value: impl Fn(usize, f32) -> f32 + Sync) {
        let scale = self.scale.to_bits();
        let threshold = self.threshold as u32;
        let stretch = |first: usize, out: &mut [f32]| {
            for (i, lanes) in out.chunks_mut(4).enumerate() {
                let draw = (first / 4 + i) as u64 + 1;
                let mut z = self.start.wrapping_add(draw.wrapping_mul(GOLDEN));
                z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
                z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
                z ^= z >> 31;
                let factors: [f32; 4] = std::array::from_fn(|lane| {
                    // Bits, not a branch: at p = 0.5 a branch is mispredicted every other
                    // value. The lane minus the threshold wraps (its top bit set) when kept.
                    let lane = ((z >> (16 * lane)) & 0xFFFF) as u32;
                    let kept = 0u32.wrapping_sub(lane.wrapping_sub(threshold) >> 31);
                    f32::from_bits(scale & kept)
                });
                for (lane, o) in lanes.iter_mut().enumerate() {
                    *o = value(first + 4 * i + lane, factors[lane]);
                }
            }
        };
        if out.len() > DROPOUT_STRETCH {
            out.par_chunks_mut(DROPOUT_STRETCH)
                .enumerate()
                .for_each(|(t, part)| stretch(t * DROPOUT_STRETCH, part));
        } else {
            stretch(0, out);
        }
    }
}

/// Dropout as one CPU op: the factors made as they are applied, forward and backward (no
/// mask kept, no second pass to multiply by it).
struct FusedDropout(DropoutStream);

impl candle_core::CustomOp1 for FusedDropout {
    fn name(&self) -> &'static str {
        "fused-dropout"
    }

    fn cpu_fwd(
        &self,
        storage: &candle_core::CpuStorage,
        layout: &candle_core::Layout,
    ) -> candle_core::Result<(candle_core::CpuStorage, candle_core::Shape)> {
        let x = fused_linear::slice_of(storage, layout, "dropout input")?;
        Ok((
            candle_core::CpuStorage::F32(self.0.scaled(x)),
            layout.shape().clone(),
        ))
    }

    fn bwd(
        &self,
        _arg: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<Option<Tensor>> {
        let grad = grad.contiguous()?;
        let dx = fused_linear::with_values(&grad, "dropout gradient", |g| self.0.scaled(g))?;
        Ok(Some(Tensor::from_vec(dx, grad.shape(), grad.device())?))
    }
}

/// Layer normalisation over the last dimension (weight 1, bias 0 initially), as PyTorch's
/// `nn.LayerNorm` (biased variance, ε = 1e-5), with a backward pass (candle-nn's fused
/// `layer_norm` has none, so nothing before it would learn).
#[derive(Clone)]
pub struct LayerNorm {
    weight: Tensor,
    bias: Tensor,
}

impl LayerNorm {
    /// `name.weight`, `name.bias` of width `dim`.
    pub fn new(store: &mut ParamStore, name: &str, dim: usize) -> Result<LayerNorm> {
        Ok(LayerNorm {
            weight: store.constant(&format!("{name}.weight"), &[dim], 1.0)?,
            bias: store.constant(&format!("{name}.bias"), &[dim], 0.0)?,
        })
    }

    /// Normalises: on the CPU as one op (forward and backward), elsewhere by candle's ops.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        if x.device().is_cpu() {
            fused_layer_norm::layer_norm(x, &self.weight, &self.bias, LAYER_NORM_EPS)
        } else {
            layer_norm_by_ops(x, &self.weight, &self.bias, LAYER_NORM_EPS)
        }
        .map_err(err("layer norm"))
    }
}

/// PyTorch's `nn.LayerNorm` default ε.
const LAYER_NORM_EPS: f32 = 1e-5;

/// Layer norm from candle's differentiable ops.
pub fn layer_norm_by_ops(
    x: &Tensor,
    weight: &Tensor,
    bias: &Tensor,
    eps: f32,
) -> candle_core::Result<Tensor> {
    let last = candle_core::D::Minus1;
    let centred = x.broadcast_sub(&x.mean_keepdim(last)?)?;
    let var = centred.sqr()?.mean_keepdim(last)?;
    centred
        .broadcast_div(&(var + f64::from(eps))?.sqrt()?)?
        .broadcast_mul(weight)?
        .broadcast_add(bias)
}

/// The shape of an MLP.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct MlpConfig {
    /// Hidden layer widths.
    pub hidden: Vec<usize>,
    /// Non-linearity after each hidden layer.
    pub activation: Activation,
    /// Dropout after each hidden layer.
    pub dropout: Fraction,
    /// Layer norm before each hidden activation.
    pub layer_norm: bool,
    /// Add each hidden layer's input to its output when the widths agree.
    pub residual: bool,
}

impl Default for MlpConfig {
    fn default() -> Self {
        MlpConfig {
            hidden: vec![128],
            activation: Activation::Relu,
            dropout: Fraction::ZERO,
            layer_norm: false,
            residual: false,
        }
    }
}

/// A multi-layer perceptron: hidden layers (linear → (norm) → activation → dropout
/// [+ residual]) and, when `output` is given, a final linear layer without activation.
#[derive(Clone)]
pub struct Mlp {
    layers: Vec<(Linear, Option<LayerNorm>)>,
    out: Option<Linear>,
    config: MlpConfig,
    /// Width of the result.
    pub output_dim: usize,
}

impl Mlp {
    /// Builds `name.0`, `name.1`, … (and `name.out`).
    pub fn new(
        store: &mut ParamStore,
        name: &str,
        input: usize,
        config: &MlpConfig,
        output: Option<usize>,
    ) -> Result<Mlp> {
        let mut layers = Vec::new();
        let mut width = input;
        for (i, &h) in config.hidden.iter().enumerate() {
            let linear = Linear::new(store, &format!("{name}.{i}"), width, h)?;
            let norm = if config.layer_norm {
                Some(LayerNorm::new(store, &format!("{name}.{i}.norm"), h)?)
            } else {
                None
            };
            layers.push((linear, norm));
            width = h;
        }
        let out = match output {
            Some(o) => {
                let l = Linear::new(store, &format!("{name}.out"), width, o)?;
                width = o;
                Some(l)
            }
            None => None,
        };
        Ok(Mlp {
            layers,
            out,
            config: config.clone(),
            output_dim: width,
        })
    }

    /// Applies the MLP over the last dimension.
    pub fn forward(&self, x: &Tensor, pass: &mut Pass<'_>) -> Result<Tensor> {
        let mut h = x.clone();
        for (linear, norm) in &self.layers {
            let mut y = match (norm, self.config.activation) {
                (None, Activation::Relu) => linear.forward_relu(&h)?,
                (None, activation) => activation.apply(&linear.forward(&h)?)?,
                (Some(n), activation) => activation.apply(&n.forward(&linear.forward(&h)?)?)?,
            };
            y = dropout(&y, self.config.dropout.get(), pass)?;
            if self.config.residual && y.dims() == h.dims() {
                y = (y + &h).map_err(err("residual"))?;
            }
            h = y;
        }
        match &self.out {
            Some(l) => l.forward(&h),
            None => Ok(h),
        }
    }
}

/// A single-layer (optionally bidirectional) LSTM over right-padded sequences; returns the
/// state after each sequence's last true step. The input projection of all steps is one
/// matrix product; each step then only multiplies the state by `W_hh`. Gate order i, f, g, o
/// (PyTorch's), one bias per direction, initialised uniformly ±1/√hidden.
#[derive(Clone)]
pub struct Lstm {
    forward_dir: LstmDirection,
    backward_dir: Option<LstmDirection>,
    /// Width of the result (hidden, or 2 × hidden when bidirectional).
    pub output_dim: usize,
}

#[derive(Clone)]
struct LstmDirection {
    w_ih: Tensor,
    w_hh: Tensor,
    bias: LstmBias,
    hidden: usize,
}

/// One bias per direction (mmflow's own), or PyTorch's pair `b_ih`, `b_hh` (trained apart,
/// summed at each use), as a model ported from PyTorch needs to take the same optimiser steps.
#[derive(Clone)]
enum LstmBias {
    One(Tensor),
    Pair(Tensor, Tensor),
}

impl LstmBias {
    fn value(&self) -> candle_core::Result<Tensor> {
        match self {
            LstmBias::One(b) => Ok(b.clone()),
            LstmBias::Pair(b_ih, b_hh) => b_ih.add(b_hh),
        }
    }
}

impl LstmDirection {
    fn new(store: &mut ParamStore, name: &str, input: usize, hidden: usize) -> Result<Self> {
        let bound = 1.0 / (hidden.max(1) as f32).sqrt();
        Ok(LstmDirection {
            w_ih: store.uniform(&format!("{name}.w_ih"), &[4 * hidden, input], bound)?,
            w_hh: store.uniform(&format!("{name}.w_hh"), &[4 * hidden, hidden], bound)?,
            bias: LstmBias::One(store.uniform(&format!("{name}.bias"), &[4 * hidden], bound)?),
            hidden,
        })
    }

    /// PyTorch's `nn.LSTM` layer `layer` under its own names (`name.weight_ih_l<layer>`,
    /// `name.weight_hh_l<layer>`, `name.bias_ih_l<layer>`, `name.bias_hh_l<layer>`), drawn in
    /// that order.
    fn pytorch(
        store: &mut ParamStore,
        name: &str,
        layer: usize,
        input: usize,
        hidden: usize,
    ) -> Result<Self> {
        Self::pytorch_suffixed(store, name, &format!("_l{layer}"), input, hidden)
    }

    /// PyTorch's names with `suffix` after each (`_l<layer>` for `nn.LSTM`, none for
    /// `nn.LSTMCell`), drawn in PyTorch's order.
    fn pytorch_suffixed(
        store: &mut ParamStore,
        name: &str,
        suffix: &str,
        input: usize,
        hidden: usize,
    ) -> Result<Self> {
        let bound = 1.0 / (hidden.max(1) as f32).sqrt();
        let mut draw = |what: &str, shape: &[usize]| {
            store.uniform(&format!("{name}.{what}{suffix}"), shape, bound)
        };
        Ok(LstmDirection {
            w_ih: draw("weight_ih", &[4 * hidden, input])?,
            w_hh: draw("weight_hh", &[4 * hidden, hidden])?,
            bias: LstmBias::Pair(
                draw("bias_ih", &[4 * hidden])?,
                draw("bias_hh", &[4 * hidden])?,
            ),
            hidden,
        })
    }

    /// The input projections of every step at once: `x · W_ihᵀ + b`, B × T × 4H (on the
    /// CPU one fused op, which skips the input's gradient when the input is data).
    fn project(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let (b, t, d) = x.dims3()?;
        let rows = x.reshape((b * t, d))?;
        let bias = self.bias.value()?;
        let projected = if x.device().is_cpu() {
            fused_linear::linear(&rows, &self.w_ih, &bias, false)?
        } else {
            rows.matmul(&self.w_ih.t()?)?.broadcast_add(&bias)?
        };
        projected.reshape((b, t, 4 * self.hidden))
    }

    /// Runs over `x` (B × T × D) in the given direction with true `lengths`: on the CPU as
    /// one fused op (which keeps its gate activations for the backward pass when `train`),
    /// elsewhere with candle's element-wise ops.
    fn run(
        &self,
        x: &Tensor,
        lengths: &[usize],
        reverse: bool,
        train: bool,
    ) -> candle_core::Result<Tensor> {
        if !x.device().is_cpu() {
            return self.run_unfused(x, &step_mask(lengths, x)?, reverse);
        }
        let op = FusedLstm::new(lengths.to_vec(), self.hidden, reverse, train);
        self.project(x)?
            .contiguous()?
            .apply_op2(&self.w_hh.contiguous()?, op)
    }

    /// The hidden state after every step of `x` (B × T × D, every step a true one), B × T × H:
    /// what a next layer reads. On the CPU one fused op (keeping its gate activations for the
    /// backward pass when `train`), elsewhere candle's element-wise ops.
    fn every_step(&self, x: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        if !x.device().is_cpu() {
            return self.every_step_unfused(x);
        }
        let (b, t, _) = x.dims3()?;
        let op = FusedLstm::new(vec![t; b], self.hidden, false, train).every_step();
        self.project(x)?
            .contiguous()?
            .apply_op2(&self.w_hh.contiguous()?, op)
    }

    /// The hidden and cell states after every step of `x` (B × T × D, every step a true
    /// one), each B × T × H. On the CPU one fused op, elsewhere candle's element-wise ops.
    fn states(&self, x: &Tensor, train: bool) -> candle_core::Result<(Tensor, Tensor)> {
        if !x.device().is_cpu() {
            return self.states_unfused(x);
        }
        let (b, t, _) = x.dims3()?;
        let h = self.hidden;
        let op = FusedLstm::new(vec![t; b], h, false, train).every_step_with_cells();
        let both = self
            .project(x)?
            .contiguous()?
            .apply_op2(&self.w_hh.contiguous()?, op)?;
        Ok((both.narrow(2, 0, h)?, both.narrow(2, h, h)?))
    }

    /// [`Self::every_step`] with candle's element-wise ops (any device).
    fn every_step_unfused(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        Ok(self.states_unfused(x)?.0)
    }

    /// [`Self::states`] with candle's element-wise ops (any device).
    fn states_unfused(&self, x: &Tensor) -> candle_core::Result<(Tensor, Tensor)> {
        let (b, t, _) = x.dims3()?;
        let projected = self.project(x)?;
        let w_hh_t = self.w_hh.t()?;
        let mut state_h = Tensor::zeros((b, self.hidden), x.dtype(), x.device())?;
        let mut state_c = state_h.clone();
        let (mut hs, mut cs) = (Vec::with_capacity(t), Vec::with_capacity(t));
        for step in 0..t {
            (state_h, state_c) = self.cell(&projected, &w_hh_t, step, &state_h, &state_c)?;
            hs.push(state_h.clone());
            cs.push(state_c.clone());
        }
        Ok((Tensor::stack(&hs, 1)?, Tensor::stack(&cs, 1)?))
    }

    /// One step of the recurrence with candle's ops: the new hidden and cell states (B × H)
    /// from the step's input projections, `W_hhᵀ` and the previous states.
    fn cell(
        &self,
        projected: &Tensor,
        w_hh_t: &Tensor,
        step: usize,
        state_h: &Tensor,
        state_c: &Tensor,
    ) -> candle_core::Result<(Tensor, Tensor)> {
        let h = self.hidden;
        let gates = projected
            .narrow(1, step, 1)?
            .squeeze(1)?
            .add(&state_h.matmul(w_hh_t)?)?;
        let i = candle_nn::ops::sigmoid(&gates.narrow(1, 0, h)?)?;
        let f = candle_nn::ops::sigmoid(&gates.narrow(1, h, h)?)?;
        let g = gates.narrow(1, 2 * h, h)?.tanh()?;
        let o = candle_nn::ops::sigmoid(&gates.narrow(1, 3 * h, h)?)?;
        let c = f.mul(state_c)?.add(&i.mul(&g)?)?;
        let new_h = o.mul(&c.tanh()?)?;
        Ok((new_h, c))
    }

    /// The same recurrence with candle's element-wise ops (any device); `mask` is B × T
    /// (1 = true step).
    fn run_unfused(&self, x: &Tensor, mask: &Tensor, reverse: bool) -> candle_core::Result<Tensor> {
        let (b, t, _) = x.dims3()?;
        let h = self.hidden;
        let projected = self.project(x)?;
        let w_hh_t = self.w_hh.t()?;
        let mut state_h = Tensor::zeros((b, h), x.dtype(), x.device())?;
        let mut state_c = state_h.clone();
        let steps: Vec<usize> = if reverse {
            (0..t).rev().collect()
        } else {
            (0..t).collect()
        };
        for step in steps {
            let (new_h, c) = self.cell(&projected, &w_hh_t, step, &state_h, &state_c)?;
            // Steps past a sequence's end leave its state unchanged.
            let m = mask.narrow(1, step, 1)?;
            state_c = m
                .broadcast_mul(&c)?
                .add(&m.affine(-1.0, 1.0)?.broadcast_mul(&state_c)?)?;
            state_h = m
                .broadcast_mul(&new_h)?
                .add(&m.affine(-1.0, 1.0)?.broadcast_mul(&state_h)?)?;
        }
        Ok(state_h)
    }
}

impl Lstm {
    /// `name.fw.*` (and `name.bw.*`).
    pub fn new(
        store: &mut ParamStore,
        name: &str,
        input: usize,
        hidden: usize,
        bidirectional: bool,
    ) -> Result<Lstm> {
        let forward_dir = LstmDirection::new(store, &format!("{name}.fw"), input, hidden)?;
        let backward_dir = if bidirectional {
            Some(LstmDirection::new(
                store,
                &format!("{name}.bw"),
                input,
                hidden,
            )?)
        } else {
            None
        };
        Ok(Lstm {
            forward_dir,
            backward_dir,
            output_dim: if bidirectional { 2 * hidden } else { hidden },
        })
    }

    /// A one-direction LSTM laid out as PyTorch's `nn.LSTM(input, hidden)`, under its
    /// parameter names, so a PyTorch model's weights load by name and train alike.
    pub fn pytorch(
        store: &mut ParamStore,
        name: &str,
        input: usize,
        hidden: usize,
    ) -> Result<Lstm> {
        Ok(Lstm {
            forward_dir: LstmDirection::pytorch(store, name, 0, input, hidden)?,
            backward_dir: None,
            output_dim: hidden,
        })
    }

    /// Encodes `x` (B × T × D) with true `lengths` into B × output_dim; `train`: a backward
    /// pass will follow (the CPU op then keeps what it needs for it instead of recomputing).
    pub fn forward(&self, x: &Tensor, lengths: &[usize], train: bool) -> Result<Tensor> {
        let fw = self
            .forward_dir
            .run(x, lengths, false, train)
            .map_err(err("lstm"))?;
        match &self.backward_dir {
            Some(bw) => {
                let bw = bw.run(x, lengths, true, train).map_err(err("lstm"))?;
                Tensor::cat(&[fw, bw], 1).map_err(err("lstm"))
            }
            None => Ok(fw),
        }
    }
}

/// PyTorch's `nn.LSTM(input, hidden, num_layers, batch_first=True)`, one direction, under its
/// parameter names (`name.weight_ih_l<k>`, …): each layer after the first reads the previous
/// one's outputs at every step.
pub struct StackedLstm {
    layers: Vec<LstmDirection>,
}

impl StackedLstm {
    /// `layers` layers of width `hidden` over `input`-wide steps.
    pub fn pytorch(
        store: &mut ParamStore,
        name: &str,
        input: usize,
        hidden: usize,
        layers: usize,
    ) -> Result<StackedLstm> {
        let layers = (0..layers)
            .map(|k| {
                let width = if k == 0 { input } else { hidden };
                LstmDirection::pytorch(store, name, k, width, hidden)
            })
            .collect::<Result<_>>()?;
        Ok(StackedLstm { layers })
    }

    /// The last layer's state after the last step of `x` (B × T × D, every step run, as
    /// `nn.LSTM` on a padded batch), B × hidden: PyTorch's `h_n[-1]`. `between` is applied to
    /// each layer's outputs before the next layer reads them (PyTorch's inter-layer dropout).
    pub fn forward(&self, x: &Tensor, pass: &mut Pass<'_>, between: f32) -> Result<Tensor> {
        let (b, t, _) = x.dims3().map_err(err("lstm"))?;
        let Some((last, below)) = self.layers.split_last() else {
            return Err(StageError::Internal("an LSTM without layers".into()));
        };
        let mut steps = x.clone();
        for layer in below {
            let outputs = layer.every_step(&steps, pass.train).map_err(err("lstm"))?;
            steps = dropout(&outputs, between, pass)?;
        }
        last.run(&steps, &vec![t; b], false, pass.train)
            .map_err(err("lstm"))
    }
}

/// PyTorch's `nn.LSTMCell(input, hidden)` under its parameter names (`name.weight_ih`,
/// `name.weight_hh`, `name.bias_ih`, `name.bias_hh`), run over every step of a sequence as a
/// loop over the cell does.
pub struct LstmCell(LstmDirection);

impl LstmCell {
    /// `name.*` over `input`-wide steps, `hidden` wide.
    pub fn pytorch(
        store: &mut ParamStore,
        name: &str,
        input: usize,
        hidden: usize,
    ) -> Result<LstmCell> {
        LstmDirection::pytorch_suffixed(store, name, "", input, hidden).map(LstmCell)
    }

    /// The hidden and cell states after every step of `x` (B × T × D; padded steps run as
    /// true ones, as a loop over a padded batch runs them), each B × T × hidden; `train`: a
    /// backward pass will follow.
    pub fn states(&self, x: &Tensor, train: bool) -> Result<(Tensor, Tensor)> {
        self.0.states(x, train).map_err(err("lstm cell"))
    }
}

/// A B × T mask of the steps within each sequence's length (1) and past it (0).
fn step_mask(lengths: &[usize], x: &Tensor) -> candle_core::Result<Tensor> {
    let (b, t, _) = x.dims3()?;
    let mask: Vec<f32> = (0..b)
        .flat_map(|i| (0..t).map(move |s| if s < lengths[i] { 1.0 } else { 0.0 }))
        .collect();
    Tensor::from_vec(mask, (b, t), x.device())
}

/// Self-attention over one token per modality (each projected to a common width), averaged:
/// lets each modality's representation weigh the others'.
#[derive(Clone)]
pub struct AttentionFusion {
    project: Vec<Linear>,
    q: Linear,
    k: Linear,
    v: Linear,
    dim: usize,
}

impl AttentionFusion {
    /// `name.proj.<i>`, `name.q`, `name.k`, `name.v`.
    pub fn new(
        store: &mut ParamStore,
        name: &str,
        inputs: &[usize],
        dim: usize,
    ) -> Result<AttentionFusion> {
        let project = inputs
            .iter()
            .enumerate()
            .map(|(i, &w)| Linear::new(store, &format!("{name}.proj.{i}"), w, dim))
            .collect::<Result<Vec<_>>>()?;
        Ok(AttentionFusion {
            project,
            q: Linear::new(store, &format!("{name}.q"), dim, dim)?,
            k: Linear::new(store, &format!("{name}.k"), dim, dim)?,
            v: Linear::new(store, &format!("{name}.v"), dim, dim)?,
            dim,
        })
    }

    /// Fuses B × w_i tokens into B × dim.
    pub fn forward(&self, tokens: &[Tensor]) -> Result<Tensor> {
        let projected = tokens
            .iter()
            .zip(&self.project)
            .map(|(t, p)| p.forward(t))
            .collect::<Result<Vec<_>>>()?;
        let x = Tensor::stack(&projected, 1).map_err(err("attention"))?; // B × M × dim
        let (q, k, v) = (
            self.q.forward(&x)?,
            self.k.forward(&x)?,
            self.v.forward(&x)?,
        );
        let scores = q
            .matmul(&k.transpose(1, 2).map_err(err("attention"))?)
            .and_then(|s| s.affine(1.0 / (self.dim as f64).sqrt(), 0.0))
            .map_err(err("attention"))?;
        let weights = softmax_last_dim(&scores).map_err(err("attention"))?;
        weights
            .matmul(&v)
            .and_then(|o| o.mean(1))
            .map_err(err("attention"))
    }
}

/// An embedding table (rows initialised N(0, 1) as PyTorch's `nn.Embedding`).
#[derive(Clone)]
pub struct Embedding {
    table: Tensor,
    /// Embedding width.
    pub dim: usize,
}

impl Embedding {
    /// `name.weight` `[rows, dim]`.
    pub fn new(store: &mut ParamStore, name: &str, rows: usize, dim: usize) -> Result<Embedding> {
        let table = store.normal(&format!("{name}.weight"), &[rows, dim])?;
        Ok(Embedding { table, dim })
    }

    /// The rows of `ids` (a u32 tensor of B indices) → B × dim.
    pub fn forward(&self, ids: &Tensor) -> Result<Tensor> {
        self.table.index_select(ids, 0).map_err(err("embedding"))
    }
}

/// Mean over the last-but-one dimension of valid steps only (B × T × D with lengths → B × D).
pub fn masked_mean(x: &Tensor, lengths: &[usize]) -> Result<Tensor> {
    let (b, t, _) = x.dims3().map_err(err("mean"))?;
    let weights: Vec<f32> = (0..b)
        .flat_map(|i| {
            (0..t).map(move |s| {
                if s < lengths[i] {
                    1.0 / lengths[i] as f32
                } else {
                    0.0
                }
            })
        })
        .collect();
    let w = Tensor::from_vec(weights, (b, t, 1), x.device()).map_err(err("mean"))?;
    x.broadcast_mul(&w)
        .and_then(|y| y.sum(1))
        .map_err(err("mean"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};
    use rand::SeedableRng;

    /// The mask filled in parallel stretches is the one stream drawn in order: draw `n` mixes
    /// `seed ^ (stream + 1)·φ` plus `(n + 1)·φ`, four 16-bit lanes each, kept at the rate.
    #[test]
    fn dropout_factors_are_one_stream_at_the_rate() {
        let (p, seed, stream, len) = (0.3f32, 42u64, 2u64, 100_003);
        let golden = 0x9E37_79B9_7F4A_7C15u64;
        let mut state = seed ^ (stream + 1).wrapping_mul(golden);
        let mut expected = Vec::new();
        while expected.len() < len {
            state = state.wrapping_add(golden);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^= z >> 31;
            for lane in 0..4 {
                let threshold = ((1.0 - f64::from(p)) * 65_536.0) as u64;
                let kept = (z >> (16 * lane)) & 0xFFFF < threshold;
                expected.push(if kept { 1.0 / (1.0 - p) } else { 0.0 });
            }
        }
        expected.truncate(len);
        let mask = dropout_factors(p, seed, stream, len);
        assert_eq!(mask, expected);
        let kept = mask.iter().filter(|&&f| f > 0.0).count() as f64 / len as f64;
        assert!((kept - 0.7).abs() < 0.01, "kept {kept}");
        assert_eq!(dropout_factors(p, seed, stream, 7), expected[..7]);
    }

    /// Dropout as one op equals the input times [`dropout_factors`]' mask, and so does its
    /// gradient (of a weighted sum: the weights times the mask).
    #[test]
    fn fused_dropout_is_the_mask_forward_and_backward() {
        let (p, len) = (0.5f32, 3 * (DROPOUT_STRETCH + 3));
        let values: Vec<f32> = (0..len).map(|i| (i % 13) as f32 - 6.0).collect();
        let x = Var::from_vec(values.clone(), (3, len / 3), &Device::Cpu).unwrap();
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        let seed = ChaCha8Rng::seed_from_u64(5).random::<u64>();
        let mut pass = Pass {
            train: true,
            rng: &mut rng,
        };
        let y = dropout(&x, p, &mut pass).unwrap();
        let mask = dropout_factors(p, seed, 0, len);
        let want: Vec<f32> = values.iter().zip(&mask).map(|(v, m)| v * m).collect();
        assert_eq!(y.flatten_all().unwrap().to_vec1::<f32>().unwrap(), want);
        let weights: Vec<f32> = (0..len).map(|i| 1.0 + (i % 5) as f32).collect();
        let w = Tensor::from_vec(weights.clone(), (3, len / 3), &Device::Cpu).unwrap();
        let grads = y.mul(&w).unwrap().sum_all().unwrap().backward().unwrap();
        let dx: Vec<f32> = grads
            .get(&x)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let want: Vec<f32> = weights.iter().zip(&mask).map(|(w, m)| w * m).collect();
        assert_eq!(dx, want);
    }

    /// Gradients flow through layer norm and softmax (candle-nn's fused forms stop them): each
    /// input's gradient of a weighted sum of the outputs equals its central difference.
    #[test]
    fn layer_norm_and_softmax_pass_gradients_back() {
        let mut store = ParamStore::new(2, &Device::Cpu);
        let norm = LayerNorm::new(&mut store, "n", 5).unwrap();
        let values: Vec<f32> = (0..15).map(|i| ((i * 7 % 11) as f32 - 5.0) / 3.0).collect();
        let weights = Tensor::from_vec(
            (0..15).map(|i| (i % 4) as f32 - 1.5).collect::<Vec<_>>(),
            (3, 5),
            &Device::Cpu,
        )
        .unwrap();
        type Function<'a> = Box<dyn Fn(&Tensor) -> Tensor + 'a>;
        let functions: [(&str, Function); 2] = [
            ("layer norm", Box::new(|x| norm.forward(x).unwrap())),
            ("softmax", Box::new(|x| softmax_last_dim(x).unwrap())),
        ];
        for (what, f) in functions {
            let objective = |v: &[f32]| -> f32 {
                let x = Tensor::from_vec(v.to_vec(), (3, 5), &Device::Cpu).unwrap();
                f(&x)
                    .mul(&weights)
                    .unwrap()
                    .sum_all()
                    .unwrap()
                    .to_scalar()
                    .unwrap()
            };
            let x = Var::from_vec(values.clone(), (3, 5), &Device::Cpu).unwrap();
            let grads = f(x.as_tensor())
                .mul(&weights)
                .unwrap()
                .sum_all()
                .unwrap()
                .backward()
                .unwrap();
            let got: Vec<f32> = grads
                .get(&x)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1()
                .unwrap();
            for i in 0..values.len() {
                let (mut up, mut down) = (values.clone(), values.clone());
                up[i] += 1e-2;
                down[i] -= 1e-2;
                let want = (objective(&up) - objective(&down)) / 2e-2;
                assert!(
                    (got[i] - want).abs() < 2e-3 * want.abs().max(1.0),
                    "{what}: d x[{i}] {} vs {want}",
                    got[i]
                );
            }
        }
    }

    /// The fused CPU recurrence gives the same states and gradients as the recurrence built
    /// from candle's element-wise ops, in both directions, with padded sequences, over more
    /// than one block of rows, with the forward trace kept or recomputed.
    #[test]
    fn fused_lstm_matches_the_elementwise_recurrence() {
        let (b, t, d, h) = (super::super::fused_lstm::BLOCK_ROWS + 4, 7, 5, 6);
        let mut store = ParamStore::new(3, &Device::Cpu);
        let dir = LstmDirection::new(&mut store, "l", d, h).unwrap();
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let x: Vec<f32> = (0..b * t * d)
            .map(|_| rng.random::<f32>() * 2.0 - 1.0)
            .collect();
        let x = Var::from_tensor(&Tensor::from_vec(x, (b, t, d), &Device::Cpu).unwrap()).unwrap();
        let lengths: Vec<usize> = (0..b).map(|r| [7, 3, 1, 5, 6][r % 5]).collect();
        let mask = step_mask(&lengths, x.as_tensor()).unwrap();
        let weights = Tensor::from_vec(
            (0..b * h).map(|i| (i % 5) as f32 - 2.0).collect::<Vec<_>>(),
            (b, h),
            &Device::Cpu,
        )
        .unwrap();
        for (reverse, train) in [(false, true), (true, true), (false, false), (true, false)] {
            let fused = dir.run(x.as_tensor(), &lengths, reverse, train).unwrap();
            let plain = dir.run_unfused(x.as_tensor(), &mask, reverse).unwrap();
            let (gf, gp) = [&fused, &plain]
                .map(|o| {
                    o.mul(&weights)
                        .unwrap()
                        .sum_all()
                        .unwrap()
                        .backward()
                        .unwrap()
                })
                .into();
            let close = |a: &Tensor, b: &Tensor, what: &str| {
                let (a, b) = (
                    a.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
                    b.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
                );
                let worst = a
                    .iter()
                    .zip(&b)
                    .map(|(x, y)| (x - y).abs())
                    .fold(0f32, f32::max);
                assert!(
                    worst < 1e-5,
                    "{what} (reverse {reverse}): differs by {worst}"
                );
            };
            close(&fused, &plain, "states");
            close(
                gf.get(x.as_tensor()).unwrap(),
                gp.get(x.as_tensor()).unwrap(),
                "d input",
            );
            let LstmBias::One(bias) = &dir.bias else {
                unreachable!("mmflow's LSTM has one bias")
            };
            for (name, p) in [
                ("d w_ih", &dir.w_ih),
                ("d w_hh", &dir.w_hh),
                ("d bias", bias),
            ] {
                close(gf.get(p).unwrap(), gp.get(p).unwrap(), name);
            }
        }
    }

    /// Every step's states from the fused op (what a stacked LSTM's next layer reads) equal
    /// those of candle's element-wise ops, and so do the gradients that flow back into every
    /// step, with and without the kept trace, over more than one block of rows.
    #[test]
    fn fused_every_step_states_match_the_elementwise_recurrence() {
        let (b, t, d, h) = (super::super::fused_lstm::BLOCK_ROWS + 3, 6, 4, 5);
        let mut store = ParamStore::new(4, &Device::Cpu);
        let dir = LstmDirection::pytorch(&mut store, "l", 1, d, h).unwrap();
        let mut rng = ChaCha8Rng::seed_from_u64(9);
        let x: Vec<f32> = (0..b * t * d)
            .map(|_| rng.random::<f32>() * 2.0 - 1.0)
            .collect();
        let x = Var::from_tensor(&Tensor::from_vec(x, (b, t, d), &Device::Cpu).unwrap()).unwrap();
        // A weight per output value: the gradient reaching each step differs.
        let weights = Tensor::from_vec(
            (0..b * t * h)
                .map(|i| ((i * 7) % 11) as f32 / 5.0 - 1.0)
                .collect::<Vec<_>>(),
            (b, t, h),
            &Device::Cpu,
        )
        .unwrap();
        for train in [true, false] {
            let fused = dir.every_step(x.as_tensor(), train).unwrap();
            let plain = dir.every_step_unfused(x.as_tensor()).unwrap();
            assert_eq!(fused.dims(), [b, t, h]);
            let grads = [&fused, &plain].map(|o| {
                o.mul(&weights)
                    .unwrap()
                    .sum_all()
                    .unwrap()
                    .backward()
                    .unwrap()
            });
            let worst = |a: &Tensor, b: &Tensor| {
                let (a, b) = (
                    a.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
                    b.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
                );
                a.iter()
                    .zip(&b)
                    .map(|(x, y)| (x - y).abs())
                    .fold(0f32, f32::max)
            };
            assert!(worst(&fused, &plain) < 1e-5, "states (train {train})");
            let LstmBias::Pair(b_ih, b_hh) = &dir.bias else {
                unreachable!("PyTorch's layout has two biases")
            };
            for (name, p) in [
                ("d input", x.as_tensor()),
                ("d w_ih", &dir.w_ih),
                ("d w_hh", &dir.w_hh),
                ("d b_ih", b_ih),
                ("d b_hh", b_hh),
            ] {
                let diff = worst(grads[0].get(p).unwrap(), grads[1].get(p).unwrap());
                assert!(diff < 1e-4, "{name} (train {train}): differs by {diff}");
            }
        }
    }

    /// The fused LSTM and linear layers give bit-identical results and gradients whatever the
    /// number of threads.
    #[test]
    fn fused_layers_do_not_depend_on_the_thread_count() {
        // Sizes that split the batch into three blocks and take the large products (the head
        // and the recurrent weights' gradient) to several threads.
        let (b, t, d, h) = (37, 9, 11, 64);
        let mut store = ParamStore::new(5, &Device::Cpu);
        let lstm = Lstm::new(&mut store, "l", d, h, true).unwrap();
        let head = Linear::new(&mut store, "head", 2 * h, 1024).unwrap();
        let mut rng = ChaCha8Rng::seed_from_u64(2);
        let x: Vec<f32> = (0..b * t * d)
            .map(|_| rng.random::<f32>() * 2.0 - 1.0)
            .collect();
        let x = Tensor::from_vec(x, (b, t, d), &Device::Cpu).unwrap();
        let lengths: Vec<usize> = (0..b).map(|r| 1 + r % t).collect();
        let run = |threads: usize| {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            pool.install(|| {
                let y = head
                    .forward_relu(&lstm.forward(&x, &lengths, true).unwrap())
                    .unwrap();
                let grads = y.sqr().unwrap().sum_all().unwrap().backward().unwrap();
                let mut out = vec![y.flatten_all().unwrap().to_vec1::<f32>().unwrap()];
                for var in store.vars() {
                    let g = grads.get(var.as_tensor()).unwrap();
                    out.push(g.flatten_all().unwrap().to_vec1::<f32>().unwrap());
                }
                out
            })
        };
        let one = run(1);
        assert_eq!(one.len(), 1 + 8);
        assert_eq!(one, run(3));
    }

    /// A linear layer (with and without its ReLU) as the fused CPU op gives candle's results
    /// and gradients, with and without all-zero input rows (padding, left out of its
    /// products), and no gradient for an input that is data.
    #[test]
    fn fused_linear_matches_candle() {
        for zero_rows in [false, true] {
            fused_linear_case(zero_rows);
        }
    }

    fn fused_linear_case(zero_rows: bool) {
        let mut store = ParamStore::new(9, &Device::Cpu);
        let layer = Linear::new(&mut store, "l", 7, 5).unwrap();
        let mut rng = ChaCha8Rng::seed_from_u64(4);
        let values: Vec<f32> = (0..2 * 3 * 7)
            .map(|i| {
                let value = rng.random::<f32>() * 2.0 - 1.0;
                // Rows 1, 2 and 4 of the six are padding.
                if zero_rows && [1, 2, 4].contains(&(i / 7)) {
                    0.0
                } else {
                    value
                }
            })
            .collect();
        let data = Tensor::from_vec(values, (2, 3, 7), &Device::Cpu).unwrap();
        let x = Var::from_tensor(&data).unwrap();
        let weights = Tensor::from_vec(
            (0..2 * 3 * 5)
                .map(|i| (i % 7) as f32 - 3.0)
                .collect::<Vec<_>>(),
            (2, 3, 5),
            &Device::Cpu,
        )
        .unwrap();
        let (w, b) = (layer.0.weight(), layer.0.bias().unwrap());
        for relu in [false, true] {
            let fused = layer.apply(x.as_tensor(), relu).unwrap();
            let mut plain = x.as_tensor().broadcast_matmul(&w.t().unwrap()).unwrap();
            plain = plain.broadcast_add(b).unwrap();
            if relu {
                plain = plain.relu().unwrap();
            }
            let gradients = |y: &Tensor| y.mul(&weights).unwrap().sum_all().unwrap().backward();
            let (gf, gp) = (gradients(&fused).unwrap(), gradients(&plain).unwrap());
            let close = |a: &Tensor, b: &Tensor| {
                let (a, b) = (
                    a.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
                    b.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
                );
                assert_eq!(a.len(), b.len());
                let worst = a
                    .iter()
                    .zip(&b)
                    .map(|(x, y)| (x - y).abs())
                    .fold(0f32, f32::max);
                assert!(
                    worst < 1e-5,
                    "relu {relu}, zero rows {zero_rows}: differs by {worst}"
                );
            };
            close(&fused, &plain);
            for t in [x.as_tensor(), w, b] {
                close(gf.get(t).unwrap(), gp.get(t).unwrap());
            }
            let on_data = layer.apply(&data, relu).unwrap();
            let grads = on_data.sum_all().unwrap().backward().unwrap();
            assert!(grads.get(&data).is_none());
            assert!(grads.get(w).is_some());
        }
    }
}
