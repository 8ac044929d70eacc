//! MFN's gated memory (MMSA 2.2.1, `MMSA/models/singleTask/MFN.py`, the loop of `forward`)
//! as one candle op with its own backward pass (CPU).
//!
//! At each step MFN updates a memory `u` from the attended cell states `a_t` and its proposal
//! `ĉ_t`: `γ₁ = σ(W₁₂·drop(relu(W₁₁·[a_t, u] + b₁₁)) + b₁₂)`, `γ₂` alike with its own layers,
//! `u ← γ₁ ⊙ u + γ₂ ⊙ ĉ_t`. Everything that does not depend on `u` is computed for all steps
//! at once before the op: the part of the two first layers that reads `a_t`, with their
//! biases (`pre`, `B × T × (h₁ + h₂)`), and `ĉ` (`B × T × M`). The op runs the recurrence with
//! a few small products per step and returns the final memory (`B × M`); built from candle's
//! ops, every step would cost a dozen tensors and, in the backward pass, a zero-padded copy
//! of `pre` and `ĉ` per step (the gradient of taking one step out of them).
//!
//! The weights arrive packed in one vector (see [`FusedMemory::packed`]): the memory's columns
//! of the two first layers (`h₁ + h₂` × M), then each gate's second layer and bias (`M × hᵢ`,
//! `M`). Rows of the batch never interact: blocks of [`BLOCK_ROWS`] run in parallel, and the
//! dropout masks of the gates' hidden layers are drawn per row and step from a seed
//! ([`dropout_factors`]), so the results do not depend on the number of threads and the
//! backward pass redraws the forward pass's masks.

use std::sync::Mutex;

use candle_core::{CpuStorage, CustomOp3, Layout, Shape, Tensor};
use rayon::prelude::*;

use super::fused_linear::{gradient_for, slice_of, with_values};
use super::fused_lstm::BLOCK_ROWS;
use super::nn::dropout_factors;
use crate::linalg::{fast_exp, matmul};

/// MFN's memory recurrence over `pre` (`B × T × (h₁ + h₂)`), `ĉ` (`B × T × M`) and the packed
/// weights; returns the memory after the last step, `B × M`.
pub struct FusedMemory {
    /// The two gates' hidden widths, h₁ and h₂.
    hidden: [usize; 2],
    /// The memory's width M.
    memory: usize,
    /// Dropout rates of the two gates' hidden layers, and the seed of their masks.
    dropout: ([f32; 2], u64),
    /// Keep the forward pass's trace for the backward pass.
    keep: bool,
    /// The forward pass's traces, one per block, until the backward pass takes them.
    kept: Mutex<Option<Vec<Trace>>>,
}

/// What one block's forward pass leaves for its backward pass, step-major (`T × b × …`).
struct Trace {
    /// The memory before each step.
    memory: Vec<f32>,
    /// Each gate's hidden layer after ReLU and dropout.
    hidden: [Vec<f32>; 2],
    /// Each gate's value.
    gates: [Vec<f32>; 2],
}

/// The packed weights, taken apart.
struct Weights<'a> {
    /// The first layers' memory columns, `(h₁ + h₂) × M`.
    memory: &'a [f32],
    /// Each gate's second layer (`M × hᵢ`) and bias (`M`).
    second: [(&'a [f32], &'a [f32]); 2],
}

/// Shapes of one call.
#[derive(Clone, Copy)]
struct Dims {
    b: usize,
    t: usize,
}

#[inline(always)]
fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + fast_exp(-x))
}

impl FusedMemory {
    /// The op for gates of hidden widths `hidden` over a memory of width `memory`, their
    /// hidden layers dropped at `dropout`'s rates with masks from its seed; `keep`: a
    /// backward pass will follow.
    pub fn new(
        hidden: [usize; 2],
        memory: usize,
        dropout: ([f32; 2], u64),
        keep: bool,
    ) -> FusedMemory {
        FusedMemory {
            hidden,
            memory,
            dropout,
            keep,
            kept: Mutex::new(None),
        }
    }

    /// The weights as the op takes them, one vector: `memory` (`(h₁ + h₂) × M`), then each
    /// gate's second layer (`M × hᵢ`) and bias (`M`).
    pub fn packed(memory: &Tensor, second: [(&Tensor, &Tensor); 2]) -> candle_core::Result<Tensor> {
        let [(w1, b1), (w2, b2)] = second;
        Tensor::cat(
            &[
                memory.flatten_all()?,
                w1.flatten_all()?,
                b1.flatten_all()?,
                w2.flatten_all()?,
                b2.flatten_all()?,
            ],
            0,
        )
    }

    /// Width of the two hidden layers together.
    fn both(&self) -> usize {
        self.hidden[0] + self.hidden[1]
    }

    fn unpack<'a>(&self, packed: &'a [f32]) -> Weights<'a> {
        let m = self.memory;
        let (memory, rest) = packed.split_at(self.both() * m);
        let (w1, rest) = rest.split_at(m * self.hidden[0]);
        let (b1, rest) = rest.split_at(m);
        let (w2, b2) = rest.split_at(m * self.hidden[1]);
        Weights {
            memory,
            second: [(w1, b1), (w2, b2)],
        }
    }

    fn dims(&self, pre: &Shape, c_hat: &Shape, packed: &Shape) -> candle_core::Result<Dims> {
        let (b, t, g) = pre.dims3()?;
        let m = self.memory;
        let expected = self.both() * m + m * self.both() + 2 * m;
        if g != self.both() || c_hat.dims() != [b, t, m] || packed.dims() != [expected] {
            candle_core::bail!(
                "fused memory: pre {pre:?}, proposals {c_hat:?} and weights {packed:?} do not fit gates of {:?} over a memory of {m}",
                self.hidden
            );
        }
        Ok(Dims { b, t })
    }

    /// Whether there is nothing to run: no rows, steps, memory or hidden units.
    fn is_empty(&self, dims: Dims) -> bool {
        dims.b == 0 || dims.t == 0 || self.memory == 0 || self.hidden.contains(&0)
    }

    /// The dropout factors of gate `gate`'s hidden layer at row `row` (of the batch) and step
    /// `step` of `t`, if it drops anything.
    fn factors(&self, gate: usize, row: usize, step: usize, t: usize) -> Option<Vec<f32>> {
        let (rates, seed) = self.dropout;
        let p = rates[gate];
        (p > 0.0).then(|| {
            let stream = ((row * t + step) * 2 + gate) as u64;
            dropout_factors(p, seed, stream, self.hidden[gate])
        })
    }

    /// The recurrence of every block (in parallel): the final memory (`B × M`) and, if
    /// asked, each block's trace.
    fn run(
        &self,
        (pre, c_hat, packed): (&[f32], &[f32], &[f32]),
        dims: Dims,
        keep: bool,
    ) -> (Vec<f32>, Vec<Trace>) {
        let (g, m, t) = (self.both(), self.memory, dims.t);
        let weights = self.unpack(packed);
        let runs: Vec<(Vec<f32>, Option<Trace>)> = pre
            .par_chunks(BLOCK_ROWS * t * g)
            .zip(c_hat.par_chunks(BLOCK_ROWS * t * m))
            .enumerate()
            .map(|(block, (pre, c_hat))| {
                self.run_block(block * BLOCK_ROWS, (pre, c_hat), &weights, t, keep)
            })
            .collect();
        let mut memory = Vec::with_capacity(dims.b * m);
        let mut traces = Vec::with_capacity(runs.len());
        for (block_memory, trace) in runs {
            memory.extend_from_slice(&block_memory);
            traces.extend(trace);
        }
        (memory, traces)
    }

    /// One block's recurrence (its rows from `first`): its final memory (`b × M`) and, if
    /// asked, its trace.
    fn run_block(
        &self,
        first: usize,
        (pre, c_hat): (&[f32], &[f32]),
        weights: &Weights<'_>,
        t: usize,
        keep: bool,
    ) -> (Vec<f32>, Option<Trace>) {
        let (g, m, [h1, h2]) = (self.both(), self.memory, self.hidden);
        let b = c_hat.len() / (t * m).max(1);
        let mut memory = vec![0f32; b * m];
        let mut z = vec![0f32; b * g];
        let mut hidden = [vec![0f32; b * h1], vec![0f32; b * h2]];
        let mut gates = [vec![0f32; b * m], vec![0f32; b * m]];
        let mut trace = keep.then(|| Trace {
            memory: vec![0.0; t * b * m],
            hidden: [vec![0.0; t * b * h1], vec![0.0; t * b * h2]],
            gates: [vec![0.0; t * b * m], vec![0.0; t * b * m]],
        });
        for s in 0..t {
            // z = pre_s + u · W_uᵀ, then each gate's hidden layer: relu, dropout.
            for r in 0..b {
                z[r * g..(r + 1) * g].copy_from_slice(&pre[(r * t + s) * g..(r * t + s + 1) * g]);
            }
            matmul(
                &mut z,
                (&memory, false),
                (weights.memory, true),
                (b, g, m),
                true,
            );
            for r in 0..b {
                let (z1, z2) = z[r * g..(r + 1) * g].split_at(h1);
                for (gate, part) in [z1, z2].into_iter().enumerate() {
                    let width = self.hidden[gate];
                    let out = &mut hidden[gate][r * width..(r + 1) * width];
                    for (o, &v) in out.iter_mut().zip(part) {
                        *o = v.max(0.0);
                    }
                    if let Some(factors) = self.factors(gate, first + r, s, t) {
                        out.iter_mut().zip(&factors).for_each(|(o, f)| *o *= f);
                    }
                }
            }
            // γᵢ = σ(hiddenᵢ · W_iᵀ + b_i).
            for gate in 0..2 {
                let (w, bias) = weights.second[gate];
                let out = &mut gates[gate];
                for row in out.chunks_exact_mut(m.max(1)) {
                    row.copy_from_slice(bias);
                }
                let width = self.hidden[gate];
                matmul(out, (&hidden[gate], false), (w, true), (b, m, width), true);
                out.iter_mut().for_each(|v| *v = sigmoid(*v));
            }
            if let Some(tr) = trace.as_mut() {
                tr.memory[s * b * m..(s + 1) * b * m].copy_from_slice(&memory);
                for gate in 0..2 {
                    let width = self.hidden[gate];
                    tr.hidden[gate][s * b * width..(s + 1) * b * width]
                        .copy_from_slice(&hidden[gate]);
                    tr.gates[gate][s * b * m..(s + 1) * b * m].copy_from_slice(&gates[gate]);
                }
            }
            // u = γ₁ ⊙ u + γ₂ ⊙ ĉ_s.
            for r in 0..b {
                let proposal = &c_hat[(r * t + s) * m..(r * t + s + 1) * m];
                let row = r * m..(r + 1) * m;
                for (((u, &g1), &g2), &c) in memory[row.clone()]
                    .iter_mut()
                    .zip(&gates[0][row.clone()])
                    .zip(&gates[1][row])
                    .zip(proposal)
                {
                    *u = g1.mul_add(*u, g2 * c);
                }
            }
        }
        (memory, trace)
    }

    /// Gradients of `pre`, `ĉ` and the packed weights from the final memory's `grad`.
    fn backward(
        &self,
        inputs: (&[f32], &[f32], &[f32]),
        dims: Dims,
        grad: &[f32],
    ) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
        let (_, c_hat, packed) = inputs;
        let (g, m, Dims { b, t }) = (self.both(), self.memory, dims);
        let kept = self.kept.lock().ok().and_then(|mut k| k.take());
        let traces = match kept {
            Some(traces) => traces,
            None => self.run(inputs, dims, true).1,
        };
        let weights = self.unpack(packed);
        let mut d_pre = vec![0f32; b * t * g];
        let mut d_c_hat = vec![0f32; b * t * m];
        // Step-major per block, for the weights' gradients: the first layers' and each
        // second layer's pre-activation gradients.
        let mut dz = vec![0f32; t * b * g];
        let mut ds = [vec![0f32; t * b * m], vec![0f32; t * b * m]];
        let [ds1, ds2] = &mut ds;
        d_pre
            .par_chunks_mut(BLOCK_ROWS * t * g)
            .zip(d_c_hat.par_chunks_mut(BLOCK_ROWS * t * m))
            .zip(c_hat.par_chunks(BLOCK_ROWS * t * m))
            .zip(grad.par_chunks(BLOCK_ROWS * m))
            .zip(dz.par_chunks_mut(t * BLOCK_ROWS * g))
            .zip(ds1.par_chunks_mut(t * BLOCK_ROWS * m))
            .zip(ds2.par_chunks_mut(t * BLOCK_ROWS * m))
            .zip(&traces)
            .for_each(
                |(((((((d_pre, d_c_hat), c_hat), grad), dz), ds1), ds2), trace)| {
                    let block = BlockGrads {
                        dz,
                        ds: [ds1, ds2],
                        d_c_hat,
                    };
                    self.backward_block(trace, &weights, (c_hat, grad, t), block);
                    // Back to the batch-major layout of `pre`.
                    let rows = grad.len() / m.max(1);
                    for s in 0..t {
                        for r in 0..rows {
                            d_pre[(r * t + s) * g..(r * t + s + 1) * g]
                                .copy_from_slice(&dz[(s * rows + r) * g..(s * rows + r + 1) * g]);
                        }
                    }
                },
            );
        let d_packed = self.weight_gradients(&traces, &dz, &ds, b * t);
        (d_pre, d_c_hat, d_packed)
    }

    /// The packed weights' gradients, one product over every step of every row (`n` of
    /// them): the memory columns' `Σ dzᵀ · u`, each second layer's `Σ dsᵀ · hidden` and its
    /// bias's `Σ ds`.
    fn weight_gradients(
        &self,
        traces: &[Trace],
        dz: &[f32],
        ds: &[Vec<f32>; 2],
        n: usize,
    ) -> Vec<f32> {
        let (g, m) = (self.both(), self.memory);
        let gather = |part: &dyn Fn(&Trace) -> &[f32]| -> Vec<f32> {
            traces
                .iter()
                .flat_map(|tr| part(tr).iter().copied())
                .collect()
        };
        let mut d_memory = vec![0f32; g * m];
        let memory = gather(&|tr| &tr.memory);
        matmul(
            &mut d_memory,
            (dz, true),
            (&memory, false),
            (g, m, n),
            false,
        );
        let mut packed = d_memory;
        for (gate, ds) in ds.iter().enumerate() {
            let width = self.hidden[gate];
            let hidden = gather(&|tr| &tr.hidden[gate]);
            let mut dw = vec![0f32; m * width];
            matmul(&mut dw, (ds, true), (&hidden, false), (m, width, n), false);
            let mut db = vec![0f32; m];
            for row in ds.chunks_exact(m.max(1)) {
                db.iter_mut().zip(row).for_each(|(d, &v)| *d += v);
            }
            packed.extend(dw);
            packed.extend(db);
        }
        packed
    }

    /// One block's backward pass through time, from the gradient of its final memory.
    fn backward_block(
        &self,
        tr: &Trace,
        weights: &Weights<'_>,
        (c_hat, grad, t): (&[f32], &[f32], usize),
        out: BlockGrads<'_>,
    ) {
        let (g, m, [h1, h2]) = (self.both(), self.memory, self.hidden);
        let b = grad.len() / m.max(1);
        let BlockGrads {
            dz,
            ds: [ds1, ds2],
            d_c_hat,
        } = out;
        let mut du = grad.to_vec();
        let mut dh = [vec![0f32; b * h1], vec![0f32; b * h2]];
        let (rates, _) = self.dropout;
        let scale = rates.map(|p| 1.0 / (1.0 - p));
        for s in (0..t).rev() {
            let at = s * b * m..(s + 1) * b * m;
            let (u, g1, g2) = (
                &tr.memory[at.clone()],
                &tr.gates[0][at.clone()],
                &tr.gates[1][at.clone()],
            );
            let (ds1, ds2) = (&mut ds1[at.clone()], &mut ds2[at]);
            // Through u' = γ₁ ⊙ u + γ₂ ⊙ ĉ and the two sigmoids.
            for r in 0..b {
                let proposal = &c_hat[(r * t + s) * m..(r * t + s + 1) * m];
                let d_proposal = &mut d_c_hat[(r * t + s) * m..(r * t + s + 1) * m];
                for j in 0..m {
                    let k = r * m + j;
                    let d = du[k];
                    ds1[k] = d * u[k] * g1[k] * (1.0 - g1[k]);
                    ds2[k] = d * proposal[j] * g2[k] * (1.0 - g2[k]);
                    d_proposal[j] = d * g2[k];
                    du[k] = d * g1[k];
                }
            }
            // Into each hidden layer, back through dropout and ReLU (a value kept and
            // positive passes its gradient, scaled as the dropout scaled it).
            let step_dz = &mut dz[s * b * g..(s + 1) * b * g];
            for (gate, d_second) in [&*ds1, &*ds2].into_iter().enumerate() {
                let width = self.hidden[gate];
                let (w, _) = weights.second[gate];
                matmul(
                    &mut dh[gate],
                    (d_second, false),
                    (w, false),
                    (b, width, m),
                    false,
                );
                let kept = &tr.hidden[gate][s * b * width..(s + 1) * b * width];
                let factor = if rates[gate] > 0.0 { scale[gate] } else { 1.0 };
                for r in 0..b {
                    let offset = if gate == 0 { 0 } else { h1 };
                    let row = &mut step_dz[r * g + offset..r * g + offset + width];
                    for ((d, &grad_h), &value) in row
                        .iter_mut()
                        .zip(&dh[gate][r * width..(r + 1) * width])
                        .zip(&kept[r * width..(r + 1) * width])
                    {
                        *d = if value > 0.0 { grad_h * factor } else { 0.0 };
                    }
                }
            }
            // And into the memory before the step through the first layers.
            matmul(
                &mut du,
                (step_dz, false),
                (weights.memory, false),
                (b, m, g),
                true,
            );
        }
    }
}

/// Where one block's backward pass writes: the first layers' pre-activation gradients
/// (`T × b × (h₁ + h₂)`), each second layer's (`T × b × M`), and `ĉ`'s (`b × T × M`).
struct BlockGrads<'a> {
    dz: &'a mut [f32],
    ds: [&'a mut [f32]; 2],
    d_c_hat: &'a mut [f32],
}

impl CustomOp3 for FusedMemory {
    fn name(&self) -> &'static str {
        "fused-memory"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let dims = self.dims(l1.shape(), l2.shape(), l3.shape())?;
        let inputs = (
            slice_of(s1, l1, "memory: pre")?,
            slice_of(s2, l2, "memory: proposals")?,
            slice_of(s3, l3, "memory: weights")?,
        );
        let (memory, traces) = if self.is_empty(dims) {
            (vec![0.0; dims.b * self.memory], Vec::new())
        } else {
            self.run(inputs, dims, self.keep)
        };
        if let Ok(mut kept) = self.kept.lock() {
            *kept = self.keep.then_some(traces);
        }
        Ok((CpuStorage::F32(memory), Shape::from((dims.b, self.memory))))
    }

    fn bwd(
        &self,
        pre: &Tensor,
        c_hat: &Tensor,
        packed: &Tensor,
        _: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let dims = self.dims(pre.shape(), c_hat.shape(), packed.shape())?;
        if grad.dims() != [dims.b, self.memory] {
            candle_core::bail!("fused memory: gradient {:?}", grad.shape());
        }
        if self.is_empty(dims) {
            return Ok((None, None, None));
        }
        let grad = grad.contiguous()?;
        let (d_pre, d_c_hat, d_packed) = with_values(pre, "memory: pre", |p| {
            with_values(c_hat, "memory: proposals", |c| {
                with_values(packed, "memory: weights", |w| {
                    with_values(&grad, "memory: gradient", |g| {
                        self.backward((p, c, w), dims, g)
                    })
                })
            })
        })????;
        Ok((
            gradient_for(d_pre, pre)?,
            gradient_for(d_c_hat, c_hat)?,
            gradient_for(d_packed, packed)?,
        ))
    }
}
