//! GELU (with `erf`) as one candle op with its own backward pass (CPU).
//!
//! Candle's `gelu_erf` calls libm's scalar `erf` per value, and its backward builds the
//! derivative from five element-wise ops, each a pass over the tensor (a BERT layer's
//! feed-forward activations are batch × tokens × 4·hidden). Here each pass is one loop over
//! the values with the branch-free `erf` of [`crate::bert`] (within a few 1e-7 of libm's),
//! which the compiler vectorises, in parallel over fixed stretches.
//!
//! GELU(x) = x · Φ(x) = x · (1 + erf(x / √2)) / 2; GELU'(x) = Φ(x) + x · φ(x), φ(x) =
//! exp(−x² / 2) / √(2π), as PyTorch's `gelu_backward` (approximate = 'none').

use candle_core::{CpuStorage, CustomOp1, Layout, Shape, Tensor};
use rayon::prelude::*;

use super::fused_linear::{slice_of, with_values};
use crate::bert::{erf, gelu_erf};
use crate::linalg::fast_exp;

/// Values per piece of parallel work.
const STRETCH: usize = 1 << 14;

/// 1 / √(2π).
const INV_SQRT_2PI: f32 = 0.398_942_3;

struct FusedGelu;

impl CustomOp1 for FusedGelu {
    fn name(&self) -> &'static str {
        "fused-gelu"
    }

    fn cpu_fwd(
        &self,
        storage: &CpuStorage,
        layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let x = slice_of(storage, layout, "gelu input")?;
        let mut out = vec![0f32; x.len()];
        out.par_chunks_mut(STRETCH)
            .zip(x.par_chunks(STRETCH))
            .for_each(|(o, x)| o.iter_mut().zip(x).for_each(|(o, &x)| *o = gelu_erf(x)));
        Ok((CpuStorage::F32(out), layout.shape().clone()))
    }

    fn bwd(
        &self,
        arg: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<Option<Tensor>> {
        let arg = arg.contiguous()?;
        let grad = grad.contiguous()?;
        let dx = with_values(&arg, "gelu input", |x| {
            with_values(&grad, "gelu gradient", |g| {
                let mut dx = vec![0f32; x.len()];
                dx.par_chunks_mut(STRETCH)
                    .zip(x.par_chunks(STRETCH).zip(g.par_chunks(STRETCH)))
                    .for_each(|(d, (x, g))| {
                        for ((d, &x), &g) in d.iter_mut().zip(x).zip(g) {
                            let cdf = 0.5 * (1.0 + erf(x * std::f32::consts::FRAC_1_SQRT_2));
                            let pdf = INV_SQRT_2PI * fast_exp(-0.5 * x * x);
                            *d = g * (cdf + x * pdf);
                        }
                    });
                dx
            })
        })??;
        Ok(Some(Tensor::from_vec(dx, arg.shape(), arg.device())?))
    }
}

/// GELU (`erf`) of a CPU tensor as one op, forward and backward.
pub fn gelu(x: &Tensor) -> candle_core::Result<Tensor> {
    x.contiguous()?.apply_op1(FusedGelu)
}

#[cfg(test)]
mod tests {
    use candle_core::{Device, Var};

    use super::*;

    /// Values and gradients equal candle's `gelu_erf` (libm's erf) over [-6, 6].
    #[test]
    fn fused_gelu_equals_candles() {
        let values: Vec<f32> = (0..40_001)
            .map(|i| -6.0 + 12.0 * i as f32 / 40_000.0)
            .collect();
        let x = Var::from_vec(values.clone(), values.len(), &Device::Cpu).unwrap();
        let weights: Vec<f32> = (0..values.len())
            .map(|i| 1.0 + (i % 7) as f32 / 7.0)
            .collect();
        let w = Tensor::from_vec(weights, values.len(), &Device::Cpu).unwrap();
        let [fused, plain] = [gelu(&x).unwrap(), x.gelu_erf().unwrap()];
        let grads =
            [&fused, &plain].map(|y| y.mul(&w).unwrap().sum_all().unwrap().backward().unwrap());
        let worst = |a: &Tensor, b: &Tensor| {
            let (a, b): (Vec<f32>, Vec<f32>) = (a.to_vec1().unwrap(), b.to_vec1().unwrap());
            a.iter()
                .zip(&b)
                .map(|(a, b)| (a - b).abs())
                .fold(0f32, f32::max)
        };
        assert!(
            worst(&fused, &plain) < 1e-6,
            "values: {}",
            worst(&fused, &plain)
        );
        let (gf, gp) = (grads[0].get(&x).unwrap(), grads[1].get(&x).unwrap());
        assert!(worst(gf, gp) < 1e-5, "gradients: {}", worst(gf, gp));
    }
}
