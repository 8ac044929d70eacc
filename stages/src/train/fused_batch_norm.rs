//! Batch normalisation over channels (`nn.BatchNorm1d` on B × C or B × C × L) as one candle
//! op with its own backward pass (CPU), given the statistics it normalises with.
//!
//! Built from candle's ops, every broadcast of a per-channel value over B × C × L has a
//! backward pass that sums over the batch and the positions, which candle does index by
//! index: EF-LSTM normalises its whole input sequence (B × steps × 793) so, and those sums
//! were a tenth of its epoch. Here the forward pass is one loop over the values, the backward
//! pass two (the per-channel sums, then the input's gradient).
//!
//! With batch statistics (training), `x̂ = (x − μ) / σ`, `y = γ·x̂ + β`, and per channel over its
//! n = B·L values: `dβ = Σ dy`, `dγ = Σ dy·x̂`, `dx = γ/σ · (dy − dβ/n − x̂·dγ/n)` (μ and σ
//! depend on x). With running statistics (evaluation) `dx = γ/σ · dy`.

use candle_core::{CpuStorage, CustomOp3, Layout, Shape, Tensor};
use rayon::prelude::*;

use super::fused_linear::{gradient_for, slice_of};

/// `(x − mean) · inv_std · weight + bias` per channel (dimension 1) of B × C (× L).
pub struct FusedBatchNorm {
    /// Per channel.
    pub mean: Vec<f32>,
    /// Per channel: 1 / √(var + ε).
    pub inv_std: Vec<f32>,
    /// Whether `mean` and `inv_std` are the batch's own (their gradients then flow to x).
    pub batch_stats: bool,
}

/// Per channel of `x` (B × C × L, row-major, `channels` = C, `positions` = L): the mean and
/// the biased variance over its B·L values, accumulated in f64.
pub fn channel_moments(x: &[f32], channels: usize, positions: usize) -> (Vec<f64>, Vec<f64>) {
    let mut sum = vec![0f64; channels];
    let mut squares = vec![0f64; channels];
    let row = (channels * positions).max(1);
    for sample in x.chunks_exact(row) {
        for (c, run) in sample.chunks_exact(positions.max(1)).enumerate() {
            for &v in run {
                sum[c] += f64::from(v);
                squares[c] += f64::from(v) * f64::from(v);
            }
        }
    }
    let n = (x.len() / channels.max(1)).max(1) as f64;
    let mean: Vec<f64> = sum.iter().map(|s| s / n).collect();
    let var = squares
        .iter()
        .zip(&mean)
        .map(|(q, m)| (q / n - m * m).max(0.0))
        .collect();
    (mean, var)
}

impl FusedBatchNorm {
    /// (C, L) of `x` against per-channel `weight` and `bias`.
    fn dims(&self, x: &Shape, w: &Shape, b: &Shape) -> candle_core::Result<(usize, usize)> {
        let dims = x.dims();
        let (channels, positions) = match dims {
            [_, c] => (*c, 1),
            [_, c, l] => (*c, *l),
            _ => candle_core::bail!("batch norm: input {x:?} is not B × C or B × C × L"),
        };
        if w.dims() != [channels]
            || b.dims() != [channels]
            || self.mean.len() != channels
            || self.inv_std.len() != channels
        {
            candle_core::bail!("batch norm: input {x:?}, weight {w:?} and bias {b:?} do not fit");
        }
        Ok((channels, positions))
    }

    /// `f(channel, run)` over each sample's run of L values per channel, samples in parallel.
    fn per_run(
        out: &mut [f32],
        (channels, positions): (usize, usize),
        f: impl Fn(usize, usize, &mut [f32]) + Sync,
    ) {
        let row = channels * positions;
        if row == 0 {
            return;
        }
        out.par_chunks_mut(row).enumerate().for_each(|(s, sample)| {
            for (c, run) in sample.chunks_exact_mut(positions).enumerate() {
                f(s * row + c * positions, c, run);
            }
        });
    }
}

impl CustomOp3 for FusedBatchNorm {
    fn name(&self) -> &'static str {
        "fused-batch-norm"
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
        let x = slice_of(s1, l1, "batch norm input")?;
        let w = slice_of(s2, l2, "batch norm weight")?;
        let b = slice_of(s3, l3, "batch norm bias")?;
        let mut y = vec![0f32; x.len()];
        Self::per_run(&mut y, dims, |at, c, run| {
            let (mean, scale) = (self.mean[c], self.inv_std[c] * w[c]);
            let len = run.len();
            for (y, &x) in run.iter_mut().zip(&x[at..at + len]) {
                *y = (x - mean) * scale + b[c];
            }
        });
        Ok((CpuStorage::F32(y), l1.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        b: &Tensor,
        res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (channels, positions) = self.dims(x.shape(), w.shape(), b.shape())?;
        if grad.dims() != res.dims() {
            candle_core::bail!(
                "batch norm: gradient {:?} for output {:?}",
                grad.shape(),
                res.shape()
            );
        }
        let values = |t: &Tensor| t.flatten_all()?.to_vec1::<f32>();
        let (xs, ws, dy) = (values(x)?, values(w)?, values(grad)?);
        let xhat = |at: usize, c: usize| (xs[at] - self.mean[c]) * self.inv_std[c];
        // dβ and dγ per channel: each run of L values in f32, the runs summed in f64.
        let (mut dbias, mut dweight) = (vec![0f64; channels], vec![0f64; channels]);
        let row = (channels * positions).max(1);
        for (dy, x) in dy.chunks_exact(row).zip(xs.chunks_exact(row)) {
            let runs = dy
                .chunks_exact(positions.max(1))
                .zip(x.chunks_exact(positions.max(1)));
            for (c, (dy, x)) in runs.enumerate() {
                let (mut sum, mut product) = (0f32, 0f32);
                for (&g, &x) in dy.iter().zip(x) {
                    sum += g;
                    product += g * (x - self.mean[c]) * self.inv_std[c];
                }
                dbias[c] += f64::from(sum);
                dweight[c] += f64::from(product);
            }
        }
        let n = (xs.len() / channels.max(1)).max(1) as f64;
        let dx = if x.track_op() {
            let mut dx = vec![0f32; xs.len()];
            Self::per_run(&mut dx, (channels, positions), |at, c, run| {
                let scale = ws[c] * self.inv_std[c];
                let (mean_g, mean_gx) = if self.batch_stats {
                    ((dbias[c] / n) as f32, (dweight[c] / n) as f32)
                } else {
                    (0.0, 0.0)
                };
                for (i, d) in run.iter_mut().enumerate() {
                    *d = scale * (dy[at + i] - mean_g - xhat(at + i, c) * mean_gx);
                }
            });
            gradient_for(dx, x)?
        } else {
            None
        };
        let per_channel = |v: Vec<f64>, like: &Tensor| {
            gradient_for(v.into_iter().map(|v| v as f32).collect(), like)
        };
        Ok((dx, per_channel(dweight, w)?, per_channel(dbias, b)?))
    }
}
