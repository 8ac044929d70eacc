//! Layer normalisation over the last dimension as one candle op with its own backward pass
//! (CPU), as PyTorch's `nn.LayerNorm` computes it (biased variance, ε inside the root).
//!
//! Built from candle's ops it is nine operations forward (mean, centre, square, mean, add,
//! root, divide, scale, shift), each a pass over the tensor and a new buffer kept for the
//! backward pass, and about twice as many backward. MulT normalises its queries, keys and
//! values in every layer of its fifteen transformers, so there that is most of the work.
//! This op makes one pass forward and two backward (the normalised rows are recomputed from
//! the input rather than kept); rows run in parallel when there are many.

use candle_core::{CpuStorage, CustomOp3, Layout, Shape, Tensor};
use rayon::prelude::*;

use super::fused_linear::{gradient_for, slice_of};

/// `(x − mean) / √(var + eps) · weight + bias` over the last dimension.
#[derive(Debug, Clone, Copy)]
pub struct FusedLayerNorm {
    /// Added to the variance.
    pub eps: f32,
}

/// Rows per parallel task.
const ROWS: usize = 64;

/// A row's mean and 1/√(var + eps).
fn moments(row: &[f32], eps: f32) -> (f32, f32) {
    let n = row.len().max(1) as f32;
    let mean = row.iter().sum::<f32>() / n;
    let var = row.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / n;
    (mean, 1.0 / (var + eps).sqrt())
}

impl FusedLayerNorm {
    fn width(x: &Shape, w: &Shape, b: &Shape) -> candle_core::Result<usize> {
        let width = x.dims().last().copied().unwrap_or(0);
        if w.dims() != [width] || b.dims() != [width] {
            candle_core::bail!("layer norm: input {x:?}, weight {w:?} and bias {b:?} do not fit");
        }
        Ok(width)
    }
}

impl CustomOp3 for FusedLayerNorm {
    fn name(&self) -> &'static str {
        "fused-layer-norm"
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
        let width = Self::width(l1.shape(), l2.shape(), l3.shape())?;
        let x = slice_of(s1, l1, "layer norm input")?;
        let w = slice_of(s2, l2, "layer norm weight")?;
        let b = slice_of(s3, l3, "layer norm bias")?;
        let mut y = vec![0f32; x.len()];
        if width > 0 {
            y.par_chunks_mut(width * ROWS)
                .zip(x.par_chunks(width * ROWS))
                .for_each(|(y, x)| {
                    for (y, x) in y.chunks_exact_mut(width).zip(x.chunks_exact(width)) {
                        let (mean, inv) = moments(x, self.eps);
                        for (((y, &x), &w), &b) in y.iter_mut().zip(x).zip(w).zip(b) {
                            *y = (x - mean) * inv * w + b;
                        }
                    }
                });
        }
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
        let width = Self::width(x.shape(), w.shape(), b.shape())?;
        if grad.dims() != res.dims() || width == 0 {
            candle_core::bail!(
                "layer norm: gradient {:?} for output {:?}",
                grad.shape(),
                res.shape()
            );
        }
        let values = |t: &Tensor| t.flatten_all()?.to_vec1::<f32>();
        let (xs, ws, dy) = (values(x)?, values(w)?, values(grad)?);
        let mut dx = vec![0f32; xs.len()];
        // Per block of rows: dx, and the block's sums for dweight and dbias.
        let sums: Vec<(Vec<f32>, Vec<f32>)> = dx
            .par_chunks_mut(width * ROWS)
            .zip(xs.par_chunks(width * ROWS))
            .zip(dy.par_chunks(width * ROWS))
            .map(|((dx, x), dy)| {
                let (mut dw, mut db) = (vec![0f32; width], vec![0f32; width]);
                for ((dx, x), dy) in dx
                    .chunks_exact_mut(width)
                    .zip(x.chunks_exact(width))
                    .zip(dy.chunks_exact(width))
                {
                    let (mean, inv) = moments(x, self.eps);
                    let (mut sum_g, mut sum_gx) = (0f32, 0f32);
                    for j in 0..width {
                        let xhat = (x[j] - mean) * inv;
                        let g = dy[j] * ws[j];
                        sum_g += g;
                        sum_gx += g * xhat;
                        dw[j] += dy[j] * xhat;
                        db[j] += dy[j];
                    }
                    let n = width as f32;
                    for j in 0..width {
                        let xhat = (x[j] - mean) * inv;
                        dx[j] = inv * (dy[j] * ws[j] - sum_g / n - xhat * sum_gx / n);
                    }
                }
                (dw, db)
            })
            .collect();
        let (mut dw, mut db) = (vec![0f32; width], vec![0f32; width]);
        for (w_part, b_part) in &sums {
            dw.iter_mut().zip(w_part).for_each(|(s, v)| *s += v);
            db.iter_mut().zip(b_part).for_each(|(s, v)| *s += v);
        }
        Ok((
            gradient_for(dx, x)?,
            gradient_for(dw, w)?,
            gradient_for(db, b)?,
        ))
    }
}

/// Layer norm of `x` through [`FusedLayerNorm`] (CPU tensors).
pub fn layer_norm(x: &Tensor, w: &Tensor, b: &Tensor, eps: f32) -> candle_core::Result<Tensor> {
    x.contiguous()?
        .apply_op3(&w.contiguous()?, &b.contiguous()?, FusedLayerNorm { eps })
}

#[cfg(test)]
mod tests {
    use candle_core::{Device, Var};
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    use super::*;
    use crate::train::nn::layer_norm_by_ops;

    fn random(shape: &[usize], seed: u64, scale: f32) -> Var {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let n = shape.iter().product();
        let values: Vec<f32> = (0..n)
            .map(|_| (rng.random::<f32>() * 2.0 - 1.0) * scale)
            .collect();
        Var::from_vec(values, shape, &Device::Cpu).unwrap()
    }

    /// Output and the gradients of input, weight and bias equal those of candle's ops, over
    /// more rows than one parallel block, with an offset mean.
    #[test]
    fn fused_layer_norm_equals_candles_ops() {
        let x = random(&[3, ROWS + 5, 7], 1, 3.0);
        let x = Var::from_tensor(&(x.as_tensor() + 2.0).unwrap()).unwrap();
        let (w, b) = (random(&[7], 2, 1.0), random(&[7], 3, 1.0));
        let weights = random(&[3, ROWS + 5, 7], 4, 1.0);
        let fused = layer_norm(&x, &w, &b, 1e-5).unwrap();
        let plain = layer_norm_by_ops(&x, &w, &b, 1e-5).unwrap();
        let close = |a: &Tensor, b: &Tensor, what: &str| {
            let (a, b): (Vec<f32>, Vec<f32>) = (
                a.flatten_all().unwrap().to_vec1().unwrap(),
                b.flatten_all().unwrap().to_vec1().unwrap(),
            );
            let worst = a
                .iter()
                .zip(&b)
                .map(|(x, y)| (x - y).abs())
                .fold(0f32, f32::max);
            assert!(worst < 2e-5, "{what}: differs by {worst}");
        };
        close(&fused, &plain, "output");
        let [gf, gp] = [&fused, &plain].map(|o| {
            o.mul(weights.as_tensor())
                .unwrap()
                .sum_all()
                .unwrap()
                .backward()
                .unwrap()
        });
        for (name, v) in [("x", &x), ("weight", &w), ("bias", &b)] {
            close(gf.get(v).unwrap(), gp.get(v).unwrap(), &format!("d {name}"));
        }
    }
}
