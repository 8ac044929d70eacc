//! The LSTM recurrence as one candle op with its own backward pass (CPU).
//!
//! Built from candle's element-wise ops, every time step costs a dozen small tensors forward
//! and as many again in autograd; at the batch sizes these models train with that overhead,
//! not arithmetic, dominates. This op takes the input projections of all steps
//! (`B × T × 4H`, computed beforehand as one matrix product) and the recurrent weights
//! (`4H × H`), runs the recurrence in plain loops with one small matrix product per step, and
//! returns the state after each sequence's last true step (`B × H`), the state after every
//! step (`B × T × H`, zero past a sequence's end: what a next layer reads), or the hidden and
//! cell states after every step (`B × T × 2H`: what MFN's memory reads). Its backward runs
//! back-propagation through time from the gate activations the forward pass kept (a training
//! pass keeps them; otherwise the backward recomputes them): gradients for the projections
//! (from which candle's autograd reaches the input weights, bias and inputs) and for the
//! recurrent weights (one matrix product over all steps).
//!
//! Sequences never interact, so the batch is cut into blocks of [`BLOCK_ROWS`] rows that run
//! the whole recurrence on their own, in parallel, forward and backward. The block size is
//! fixed, so results do not depend on the number of threads.
//!
//! Gate order i, f, g, o (PyTorch's). Steps at or past a sequence's length leave its state
//! unchanged, so padding never leaks into the result; in reverse, a sequence starts at its
//! last true step.

use std::sync::Mutex;

use candle_core::{CpuStorage, CustomOp2, Layout, Shape, Tensor};
use rayon::prelude::*;

use super::fused_linear::{slice_of, with_values};
use crate::linalg::{fast_exp, matmul};

/// Rows of the batch per independently computed block.
pub const BLOCK_ROWS: usize = 16;

/// What the op returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Returns {
    /// The state after each sequence's last true step, `B × H`.
    Final,
    /// The state after every step, `B × T × H` (zero past a sequence's end).
    EveryStep,
    /// The hidden state and then the cell state after every step, `B × T × 2H` (zero past a
    /// sequence's end).
    EveryStepWithCells,
}

impl Returns {
    /// Whether every step's states are returned.
    fn every_step(self) -> bool {
        self != Returns::Final
    }

    /// Values returned per step of a sequence (every step's states): H or 2H.
    fn per_step(self, hidden: usize) -> usize {
        match self {
            Returns::EveryStepWithCells => 2 * hidden,
            _ => hidden,
        }
    }
}

/// The recurrence over right-padded sequences with true `lengths`.
pub struct FusedLstm {
    /// True length of each sequence.
    lengths: Vec<usize>,
    /// Hidden size H.
    hidden: usize,
    /// Run from the last step to the first.
    reverse: bool,
    /// The final states, or every step's.
    returns: Returns,
    /// Keep the forward pass's trace for the backward pass.
    keep: bool,
    /// The forward pass's traces, one per block, until the backward pass takes them.
    kept: Mutex<Option<Vec<Trace>>>,
}

/// Gate activations and states of one block kept by a forward pass for the backward pass, in
/// processing order (index k = k-th step processed), for the block's `b` rows.
struct Trace {
    /// i, f, g, o after their non-linearities, `T × b × 4H`.
    gates: Vec<f32>,
    /// Cell state before and after each step, `T × b × H`.
    c_prev: Vec<f32>,
    c_new: Vec<f32>,
    /// Hidden state before each step, `T × b × H`.
    h_prev: Vec<f32>,
}

/// One block's share of the inputs: its rows of the projections (`b × T × 4H`) and lengths.
struct Block<'a> {
    projected: &'a [f32],
    lengths: &'a [usize],
}

/// The four gate blocks (i, f, g, o) of one row of `4H` values.
fn quarters(row: &mut [f32]) -> (&mut [f32], &mut [f32], &mut [f32], &mut [f32]) {
    let h = row.len() / 4;
    let (i, rest) = row.split_at_mut(h);
    let (f, rest) = rest.split_at_mut(h);
    let (g, o) = rest.split_at_mut(h);
    (i, f, g, o)
}

#[inline(always)]
fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + fast_exp(-x))
}

#[inline(always)]
fn tanh(x: f32) -> f32 {
    2.0 * sigmoid(2.0 * x) - 1.0
}

impl FusedLstm {
    /// The op for sequences of true `lengths`, hidden size `hidden`; `keep`: a backward pass
    /// will follow, so the forward pass keeps its gate activations.
    pub fn new(lengths: Vec<usize>, hidden: usize, reverse: bool, keep: bool) -> FusedLstm {
        FusedLstm {
            lengths,
            hidden,
            reverse,
            returns: Returns::Final,
            keep,
            kept: Mutex::new(None),
        }
    }

    /// The same op returning the state after every step (`B × T × H`).
    pub fn every_step(self) -> FusedLstm {
        FusedLstm {
            returns: Returns::EveryStep,
            ..self
        }
    }

    /// The same op returning the hidden and cell states after every step (`B × T × 2H`).
    pub fn every_step_with_cells(self) -> FusedLstm {
        FusedLstm {
            returns: Returns::EveryStepWithCells,
            ..self
        }
    }

    /// Values the op returns per sequence: H, T × H or T × 2H.
    fn returned_per_row(&self, t: usize) -> usize {
        match self.returns {
            Returns::Final => self.hidden,
            every => t * every.per_step(self.hidden),
        }
    }

    /// The shape of what the op returns for `b` sequences of `t` steps.
    fn returned_shape(&self, b: usize, t: usize) -> Vec<usize> {
        match self.returns {
            Returns::Final => vec![b, self.hidden],
            every => vec![b, t, every.per_step(self.hidden)],
        }
    }

    fn time_of(&self, k: usize, t: usize) -> usize {
        if self.reverse {
            t - 1 - k
        } else {
            k
        }
    }

    /// The batch's blocks of [`BLOCK_ROWS`] rows.
    fn blocks<'a>(&'a self, projected: &'a [f32], t: usize) -> Vec<Block<'a>> {
        projected
            .chunks(BLOCK_ROWS * t * 4 * self.hidden)
            .zip(self.lengths.chunks(BLOCK_ROWS))
            .map(|(projected, lengths)| Block { projected, lengths })
            .collect()
    }

    /// Runs the recurrence of every block (in parallel); returns the final hidden states
    /// (`B × H`) or every step's (`B × T × H`) and, if asked, each block's trace.
    fn run(
        &self,
        projected: &[f32],
        w_hh: &[f32],
        t: usize,
        keep: bool,
    ) -> (Vec<f32>, Option<Vec<Trace>>) {
        if t == 0 || self.hidden == 0 {
            return (
                vec![0.0; self.lengths.len() * self.returned_per_row(t)],
                keep.then(Vec::new),
            );
        }
        let runs: Vec<(Vec<f32>, Option<Trace>)> = self
            .blocks(projected, t)
            .par_iter()
            .map(|block| self.run_block(block, w_hh, t, keep))
            .collect();
        let mut h = Vec::with_capacity(self.lengths.len() * self.returned_per_row(t));
        let mut traces = Vec::with_capacity(runs.len());
        for (block_h, trace) in runs {
            h.extend_from_slice(&block_h);
            traces.extend(trace);
        }
        (h, keep.then_some(traces))
    }

    /// The recurrence of one block: its final hidden states (`b × H`) or every step's
    /// (`b × T × H`) and, if asked, its trace.
    fn run_block(
        &self,
        block: &Block<'_>,
        w_hh: &[f32],
        t: usize,
        keep: bool,
    ) -> (Vec<f32>, Option<Trace>) {
        let h4 = 4 * self.hidden;
        let hid = self.hidden;
        let b = block.lengths.len();
        let projected = block.projected;
        let mut h = vec![0f32; b * hid];
        let mut c = vec![0f32; b * hid];
        let mut gates = vec![0f32; b * h4];
        let per_step = self.returns.per_step(hid);
        let mut steps = match self.returns {
            Returns::Final => Vec::new(),
            _ => vec![0f32; b * t * per_step],
        };
        let mut trace = keep.then(|| Trace {
            gates: vec![0.0; t * b * h4],
            c_prev: vec![0.0; t * b * hid],
            c_new: vec![0.0; t * b * hid],
            h_prev: vec![0.0; t * b * hid],
        });
        for k in 0..t {
            let s = self.time_of(k, t);
            for r in 0..b {
                gates[r * h4..(r + 1) * h4]
                    .copy_from_slice(&projected[(r * t + s) * h4..(r * t + s + 1) * h4]);
            }
            // gates += h · W_hhᵀ
            matmul(&mut gates, (&h, false), (w_hh, true), (b, h4, hid), true);
            if let Some(tr) = trace.as_mut() {
                tr.h_prev[k * b * hid..(k + 1) * b * hid].copy_from_slice(&h);
                tr.c_prev[k * b * hid..(k + 1) * b * hid].copy_from_slice(&c);
            }
            for r in 0..b {
                if s >= block.lengths[r] {
                    continue;
                }
                let (i, f, g, o) = quarters(&mut gates[r * h4..(r + 1) * h4]);
                for part in [&mut *i, &mut *f, &mut *o] {
                    part.iter_mut().for_each(|v| *v = sigmoid(*v));
                }
                g.iter_mut().for_each(|v| *v = tanh(*v));
                let (hr, cr) = (
                    &mut h[r * hid..(r + 1) * hid],
                    &mut c[r * hid..(r + 1) * hid],
                );
                for (((cj, &fj), &ij), &gj) in cr.iter_mut().zip(&*f).zip(&*i).zip(&*g) {
                    *cj = fj.mul_add(*cj, ij * gj);
                }
                for ((hj, &oj), &cj) in hr.iter_mut().zip(&*o).zip(&*cr) {
                    *hj = oj * tanh(cj);
                }
                if self.returns.every_step() {
                    let out = &mut steps[(r * t + s) * per_step..(r * t + s + 1) * per_step];
                    out[..hid].copy_from_slice(hr);
                    if self.returns == Returns::EveryStepWithCells {
                        out[hid..].copy_from_slice(cr);
                    }
                }
            }
            if let Some(tr) = trace.as_mut() {
                tr.gates[k * b * h4..(k + 1) * b * h4].copy_from_slice(&gates);
                tr.c_new[k * b * hid..(k + 1) * b * hid].copy_from_slice(&c);
            }
        }
        match self.returns {
            Returns::Final => (h, trace),
            _ => (steps, trace),
        }
    }

    /// Back-propagation through time: gradients of the projections (`B × T × 4H`) and of the
    /// recurrent weights (`4H × H`) given the gradient of what the op returned (the final
    /// states, or every step's), from the traces the forward pass kept (or recomputed).
    fn backward(
        &self,
        projected: &[f32],
        w_hh: &[f32],
        t: usize,
        grad_h: &[f32],
    ) -> (Vec<f32>, Vec<f32>) {
        let h4 = 4 * self.hidden;
        let hid = self.hidden;
        let b = self.lengths.len();
        if t == 0 || hid == 0 {
            return (vec![0.0; b * t * h4], vec![0.0; h4 * hid]);
        }
        let kept = self.kept.lock().ok().and_then(|mut k| k.take());
        let traces = match kept {
            Some(traces) => traces,
            None => self.run(projected, w_hh, t, true).1.unwrap_or_default(),
        };
        let per_row = self.returned_per_row(t);
        // Pre-activation gate gradients of every step, block by block in processing order
        // (blocks × T × b × 4H), and the projections' gradients (B × T × 4H).
        let mut dgates = vec![0f32; t * b * h4];
        let mut dprojected = vec![0f32; b * t * h4];
        dgates
            .par_chunks_mut(t * BLOCK_ROWS * h4)
            .zip(dprojected.par_chunks_mut(BLOCK_ROWS * t * h4))
            .zip(grad_h.par_chunks(BLOCK_ROWS * per_row))
            .zip(self.lengths.par_chunks(BLOCK_ROWS))
            .zip(&traces)
            .for_each(|((((dgates, dprojected), grad_h), lengths), trace)| {
                self.backward_block(trace, lengths, w_hh, t, grad_h, dgates);
                // Back to the projections' layout.
                let b = lengths.len();
                for k in 0..t {
                    let s = self.time_of(k, t);
                    for r in 0..b {
                        dprojected[(r * t + s) * h4..(r * t + s + 1) * h4]
                            .copy_from_slice(&dgates[(k * b + r) * h4..(k * b + r + 1) * h4]);
                    }
                }
            });
        // dW_hh = Σ dgatesᵀ · h_prev over every step of every block, one product.
        let h_prev: Vec<f32> = traces
            .iter()
            .flat_map(|tr| tr.h_prev.iter().copied())
            .collect();
        let mut dw = vec![0f32; h4 * hid];
        matmul(
            &mut dw,
            (&dgates, true),
            (&h_prev, false),
            (h4, hid, t * b),
            false,
        );
        (dprojected, dw)
    }

    /// One block's BPTT: its pre-activation gate gradients (`T × b × 4H`, processing order)
    /// from `grad` (of the final states, `b × H`, or of every step's, `b × T × H` or, with the
    /// cell states, `b × T × 2H`).
    fn backward_block(
        &self,
        tr: &Trace,
        lengths: &[usize],
        w_hh: &[f32],
        t: usize,
        grad: &[f32],
        dgates: &mut [f32],
    ) {
        let h4 = 4 * self.hidden;
        let hid = self.hidden;
        let b = lengths.len();
        let mut dh = match self.returns {
            Returns::Final => grad.to_vec(),
            _ => vec![0f32; b * hid],
        };
        let mut dc = vec![0f32; b * hid];
        let mut dh_prev = vec![0f32; b * hid];
        let per_step = self.returns.per_step(hid);
        for k in (0..t).rev() {
            let s = self.time_of(k, t);
            if self.returns.every_step() {
                // The step's own outputs add their gradients to what flows back from later
                // steps.
                for r in (0..b).filter(|&r| s < lengths[r]) {
                    let out = &grad[(r * t + s) * per_step..(r * t + s + 1) * per_step];
                    let (out_h, out_c) = out.split_at(hid);
                    for (d, &g) in dh[r * hid..(r + 1) * hid].iter_mut().zip(out_h) {
                        *d += g;
                    }
                    for (d, &g) in dc[r * hid..(r + 1) * hid].iter_mut().zip(out_c) {
                        *d += g;
                    }
                }
            }
            let step = &mut dgates[k * b * h4..(k + 1) * b * h4];
            for r in 0..b {
                if s >= lengths[r] {
                    continue; // state passed through unchanged: dh, dc flow on as they are
                }
                let at = k * b * hid + r * hid;
                let gates = &tr.gates[k * b * h4 + r * h4..k * b * h4 + (r + 1) * h4];
                let (gi, gf, gg, go) = (
                    &gates[..hid],
                    &gates[hid..2 * hid],
                    &gates[2 * hid..3 * hid],
                    &gates[3 * hid..],
                );
                let (c_new, c_prev) = (&tr.c_new[at..at + hid], &tr.c_prev[at..at + hid]);
                let (dh_r, dc_r) = (&dh[r * hid..(r + 1) * hid], &mut dc[r * hid..(r + 1) * hid]);
                let (di, df, dg, d_o) = quarters(&mut step[r * h4..(r + 1) * h4]);
                for j in 0..hid {
                    let (i_gate, f_gate, g_gate, o_gate) = (gi[j], gf[j], gg[j], go[j]);
                    let tanh_c = tanh(c_new[j]);
                    let dh_j = dh_r[j];
                    let dc_total = dc_r[j] + dh_j * o_gate * (1.0 - tanh_c * tanh_c);
                    di[j] = dc_total * g_gate * i_gate * (1.0 - i_gate);
                    df[j] = dc_total * c_prev[j] * f_gate * (1.0 - f_gate);
                    dg[j] = dc_total * i_gate * (1.0 - g_gate * g_gate);
                    d_o[j] = dh_j * tanh_c * o_gate * (1.0 - o_gate);
                    dc_r[j] = dc_total * f_gate;
                }
            }
            // dh_prev = dgates · W_hh (rows past their length have zero gate gradients).
            matmul(
                &mut dh_prev,
                (step, false),
                (w_hh, false),
                (b, hid, h4),
                false,
            );
            for r in 0..b {
                if s < lengths[r] {
                    dh[r * hid..(r + 1) * hid].copy_from_slice(&dh_prev[r * hid..(r + 1) * hid]);
                }
            }
        }
    }

    fn dims(&self, projected: &Layout, w_hh: &Layout) -> candle_core::Result<(usize, usize)> {
        let (b, t, g) = projected.shape().dims3()?;
        let (rows, cols) = w_hh.shape().dims2()?;
        if g != 4 * self.hidden
            || rows != 4 * self.hidden
            || cols != self.hidden
            || b != self.lengths.len()
        {
            candle_core::bail!(
                "fused lstm: projections {:?}, recurrent weights {:?}, {} lengths for hidden size {}",
                projected.shape(),
                w_hh.shape(),
                self.lengths.len(),
                self.hidden
            );
        }
        Ok((b, t))
    }
}

impl CustomOp2 for FusedLstm {
    fn name(&self) -> &'static str {
        "fused-lstm"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (b, t) = self.dims(l1, l2)?;
        let projected = slice_of(s1, l1, "fused lstm: projections")?;
        let w_hh = slice_of(s2, l2, "fused lstm: recurrent weights")?;
        let (h, traces) = self.run(projected, w_hh, t, self.keep);
        if let Ok(mut kept) = self.kept.lock() {
            *kept = traces;
        }
        Ok((CpuStorage::F32(h), Shape::from(self.returned_shape(b, t))))
    }

    fn bwd(
        &self,
        projected: &Tensor,
        w_hh: &Tensor,
        _: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let (b, t) = self.dims(projected.layout(), w_hh.layout())?;
        let expected = self.returned_shape(b, t);
        if grad.dims() != expected.as_slice() {
            candle_core::bail!(
                "fused lstm: gradient {:?} for states {expected:?}",
                grad.shape()
            );
        }
        let grad = grad.contiguous()?;
        let (dp, dw) = with_values(projected, "fused lstm: projections", |p| {
            with_values(w_hh, "fused lstm: recurrent weights", |w| {
                with_values(&grad, "fused lstm: gradient", |g| self.backward(p, w, t, g))
            })
        })???;
        Ok((
            Some(Tensor::from_vec(dp, projected.shape(), projected.device())?),
            Some(Tensor::from_vec(dw, w_hh.shape(), w_hh.device())?),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fast_exp_sigmoid_and_tanh_match_libm() {
        for i in -4000..=4000 {
            let x = i as f32 * 0.01;
            assert!((fast_exp(x) - x.exp()).abs() <= 4e-7 * x.exp(), "exp({x})");
            assert!(
                (sigmoid(x) - 1.0 / (1.0 + (-x).exp())).abs() < 2e-7,
                "sigmoid({x})"
            );
            assert!((tanh(x) - x.tanh()).abs() < 4e-7, "tanh({x})");
        }
        assert!(fast_exp(-200.0) >= 0.0 && fast_exp(-200.0) < 1e-37 && fast_exp(200.0).is_finite());
    }
}
