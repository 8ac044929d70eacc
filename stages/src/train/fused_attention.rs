//! Scaled dot-product attention as one candle op with its own backward pass (CPU).
//!
//! Built from candle's ops, attention keeps every step's result for the backward pass: the
//! scores, the masked scores, the shifted scores, their exponentials and the weights (and a
//! dropout mask and the dropped weights), each heads × query steps × key steps per segment.
//! For MulT over MOSI's unaligned sequences (heads 10, 375 × 500 steps) that is gigabytes per
//! batch. This op keeps nothing of that size: the backward pass recomputes the weights from the
//! queries and keys it has anyway (one more product), and the dropout mask from its seed. The
//! products go through [`crate::linalg::matmul`]; the (batch × head) slices run in parallel.
//!
//! Follows fairseq's `MultiheadAttention.forward` as MMSA 2.2.1 has it
//! (`MMSA/models/subNets/transformers_encoder/multihead_attention.py`): weights =
//! softmax(q·kᵀ · scale + mask), dropout on the weights, output = weights · v.

use std::sync::Arc;

use candle_core::{CpuStorage, CustomOp3, Layout, Shape, Tensor};
use rayon::prelude::*;

use super::fused_linear::{gradient_for, slice_of};
use super::nn::dropout_factors;
use crate::linalg::{fast_exp, matmul};

/// Attention of queries `N × Tq × d` over keys and values `N × Tk × d` (N = batch × heads).
#[derive(Debug, Clone)]
pub struct FusedAttention {
    /// Multiplies the scores (1/√d, or 1 where the queries are scaled already).
    pub scale: f32,
    /// fairseq's `buffered_future_mask`: key `j` is hidden from query `i` when
    /// `j ≥ i + offset`.
    pub future_offset: Option<usize>,
    /// Inverted dropout on the weights: the rate, and the seed its masks come from.
    pub dropout: Option<(f32, u64)>,
    /// The keys each slice sees (its first ones; the rest are padding), one count per slice:
    /// a padded key gets no weight, as under an additive mask of −∞ (BERT's attention mask).
    pub key_lengths: Option<Arc<[usize]>>,
}

/// Shapes of one call.
#[derive(Clone, Copy)]
struct Dims {
    n: usize,
    tq: usize,
    tk: usize,
    d: usize,
}

impl FusedAttention {
    fn dims(&self, q: &Shape, k: &Shape, v: &Shape) -> candle_core::Result<Dims> {
        let (n, tq, d) = q.dims3()?;
        let (kn, tk, kd) = k.dims3()?;
        if (kn, kd) != (n, d) || v.dims() != k.dims() {
            candle_core::bail!("attention: queries {q:?}, keys {k:?} and values {v:?} do not fit");
        }
        if let Some(lengths) = &self.key_lengths {
            if lengths.len() != n {
                candle_core::bail!("attention: {} key lengths for {n} slices", lengths.len());
            }
        }
        Ok(Dims { n, tq, tk, d })
    }

    /// How many keys slice `slice` sees (of `tk`).
    fn keys_of(&self, slice: usize, tk: usize) -> usize {
        self.key_lengths
            .as_ref()
            .map_or(tk, |lengths| lengths[slice].min(tk))
    }

    /// One slice's weights (`tq × tk`, overwritten): softmax of the scaled, masked scores.
    fn weights(&self, slice: usize, q: &[f32], k: &[f32], dims: Dims, p: &mut [f32]) {
        let Dims { tq, tk, d, .. } = dims;
        let keys = self.keys_of(slice, tk);
        matmul(p, (q, false), (k, true), (tq, tk, d), false);
        for (i, row) in p.chunks_exact_mut(tk.max(1)).enumerate() {
            let visible = match self.future_offset {
                Some(offset) => (i + offset).min(keys),
                None => keys,
            };
            let (shown, hidden) = row.split_at_mut(visible);
            hidden.fill(0.0);
            let max = shown.iter().fold(f32::NEG_INFINITY, |m, &s| m.max(s)) * self.scale;
            // Loops without branches or calls, so that they vectorise.
            for s in shown.iter_mut() {
                *s = fast_exp(*s * self.scale - max);
            }
            let sum: f32 = shown.iter().sum();
            let inverse = if sum > 0.0 { 1.0 / sum } else { 0.0 };
            shown.iter_mut().for_each(|s| *s *= inverse);
        }
    }

    /// One slice's dropout factors (`tq × tk`, see [`dropout_factors`]), the same in both
    /// passes.
    fn dropout_mask(&self, slice: usize, len: usize) -> Option<Vec<f32>> {
        let (p, seed) = self.dropout.filter(|(p, _)| *p > 0.0)?;
        Some(dropout_factors(p, seed, slice as u64, len))
    }

    /// One slice's forward: weights (dropped) · values into `out`.
    fn forward_slice(
        &self,
        slice: usize,
        (q, k, v): (&[f32], &[f32], &[f32]),
        dims: Dims,
        out: &mut [f32],
    ) {
        let Dims { tq, tk, d, .. } = dims;
        let mut p = vec![0f32; tq * tk];
        self.weights(slice, q, k, dims, &mut p);
        if let Some(mask) = self.dropout_mask(slice, tq * tk) {
            p.iter_mut().zip(&mask).for_each(|(w, m)| *w *= m);
        }
        matmul(out, (&p, false), (v, false), (tq, d, tk), false);
    }

    /// One slice's gradients of queries, keys and values from the output's `dout`.
    fn backward_slice(
        &self,
        slice: usize,
        (q, k, v): (&[f32], &[f32], &[f32]),
        dout: &[f32],
        dims: Dims,
        (dq, dk, dv): (&mut [f32], &mut [f32], &mut [f32]),
    ) {
        let Dims { tq, tk, d, .. } = dims;
        let mut p = vec![0f32; tq * tk];
        self.weights(slice, q, k, dims, &mut p);
        let mask = self.dropout_mask(slice, tq * tk);
        // dV = (P ⊙ M)ᵀ · dO
        let dropped: Vec<f32> = match &mask {
            Some(m) => p.iter().zip(m).map(|(w, m)| w * m).collect(),
            None => p.clone(),
        };
        matmul(dv, (&dropped, true), (dout, false), (tk, d, tq), false);
        // dP = (dO · Vᵀ) ⊙ M
        let mut ds = vec![0f32; tq * tk];
        matmul(&mut ds, (dout, false), (v, true), (tq, tk, d), false);
        if let Some(m) = &mask {
            ds.iter_mut().zip(m).for_each(|(g, m)| *g *= m);
        }
        // dS = P ⊙ (dP − Σ_j P·dP) · scale
        for (g, w) in ds
            .chunks_exact_mut(tk.max(1))
            .zip(p.chunks_exact(tk.max(1)))
        {
            let dot: f32 = g.iter().zip(w).map(|(g, w)| g * w).sum();
            g.iter_mut()
                .zip(w)
                .for_each(|(g, &w)| *g = w * (*g - dot) * self.scale);
        }
        matmul(dq, (&ds, false), (k, false), (tq, d, tk), false);
        matmul(dk, (&ds, true), (q, false), (tk, d, tq), false);
    }
}

impl CustomOp3 for FusedAttention {
    fn name(&self) -> &'static str {
        "fused-attention"
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
        let Dims { n, tq, tk, d } = dims;
        let q = slice_of(s1, l1, "attention queries")?;
        let k = slice_of(s2, l2, "attention keys")?;
        let v = slice_of(s3, l3, "attention values")?;
        let mut out = vec![0f32; n * tq * d];
        if tq * d > 0 {
            out.par_chunks_mut(tq * d).enumerate().for_each(|(s, out)| {
                let keys = s * tk * d..(s + 1) * tk * d;
                let inputs = (&q[s * tq * d..(s + 1) * tq * d], &k[keys.clone()], &v[keys]);
                self.forward_slice(s, inputs, dims, out);
            });
        }
        Ok((CpuStorage::F32(out), Shape::from((n, tq, d))))
    }

    fn bwd(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let dims = self.dims(q.shape(), k.shape(), v.shape())?;
        if grad.dims() != res.dims() {
            candle_core::bail!(
                "attention: gradient {:?} for output {:?}",
                grad.shape(),
                res.shape()
            );
        }
        let Dims { n, tq, tk, d } = dims;
        let (mut dq, mut dk, mut dv) = (
            vec![0f32; n * tq * d],
            vec![0f32; n * tk * d],
            vec![0f32; n * tk * d],
        );
        // The inputs are T × d per slice, small beside the weights: copied out once.
        let values = |t: &Tensor| t.flatten_all()?.to_vec1::<f32>();
        let (q_v, k_v, v_v, dout) = (values(q)?, values(k)?, values(v)?, values(grad)?);
        if tq * d > 0 && tk * d > 0 {
            dq.par_chunks_mut(tq * d)
                .zip(dk.par_chunks_mut(tk * d))
                .zip(dv.par_chunks_mut(tk * d))
                .enumerate()
                .for_each(|(s, ((dq, dk), dv))| {
                    let queries = s * tq * d..(s + 1) * tq * d;
                    let keys = s * tk * d..(s + 1) * tk * d;
                    self.backward_slice(
                        s,
                        (&q_v[queries.clone()], &k_v[keys.clone()], &v_v[keys]),
                        &dout[queries],
                        dims,
                        (dq, dk, dv),
                    );
                });
        }
        Ok((
            gradient_for(dq, q)?,
            gradient_for(dk, k)?,
            gradient_for(dv, v)?,
        ))
    }
}

/// fairseq's `buffered_future_mask` as an additive Tq × Tk mask: −∞ where key `j` ≥ query
/// `i` + `offset`, 0 elsewhere (for candle's ops; [`FusedAttention`] masks in place).
pub fn future_mask(
    tq: usize,
    tk: usize,
    offset: usize,
    device: &candle_core::Device,
) -> candle_core::Result<Tensor> {
    let mask: Vec<f32> = (0..tq)
        .flat_map(|i| {
            (0..tk).map(move |j| {
                if j >= i + offset {
                    f32::NEG_INFINITY
                } else {
                    0.0
                }
            })
        })
        .collect();
    Tensor::from_vec(mask, (tq, tk), device)
}

/// Attention of `q` (N × Tq × d) over `k` and `v` (N × Tk × d) through [`FusedAttention`]
/// (CPU tensors).
pub fn attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    op: FusedAttention,
) -> candle_core::Result<Tensor> {
    q.contiguous()?
        .apply_op3(&k.contiguous()?, &v.contiguous()?, op)
}

#[cfg(test)]
mod tests {
    use candle_core::{Device, Var};
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    use super::*;
    use crate::train::nn::softmax_last_dim;

    /// The attention from candle's ops: the scores scaled and masked, softmax, the dropout
    /// factors the op draws, the weighted values.
    fn by_ops(q: &Tensor, k: &Tensor, v: &Tensor, op: &FusedAttention) -> Tensor {
        let (n, tq, _) = q.dims3().unwrap();
        let tk = k.dim(1).unwrap();
        let mut scores = q
            .matmul(&k.t().unwrap())
            .unwrap()
            .affine(f64::from(op.scale), 0.0)
            .unwrap();
        if let Some(offset) = op.future_offset {
            let mask = future_mask(tq, tk, offset, &Device::Cpu).unwrap();
            scores = scores.broadcast_add(&mask).unwrap();
        }
        if let Some(lengths) = &op.key_lengths {
            let mask: Vec<f32> = (0..n)
                .flat_map(|s| {
                    (0..tq * tk).map(move |i| {
                        if i % tk < lengths[s] {
                            0.0
                        } else {
                            f32::NEG_INFINITY
                        }
                    })
                })
                .collect();
            let mask = Tensor::from_vec(mask, (n, tq, tk), &Device::Cpu).unwrap();
            scores = scores.broadcast_add(&mask).unwrap();
        }
        let mut weights = softmax_last_dim(&scores).unwrap();
        if op.dropout.is_some() {
            let factors: Vec<f32> = (0..n)
                .flat_map(|s| op.dropout_mask(s, tq * tk).unwrap())
                .collect();
            let factors = Tensor::from_vec(factors, (n, tq, tk), &Device::Cpu).unwrap();
            weights = weights.mul(&factors).unwrap();
        }
        weights.matmul(v).unwrap()
    }

    fn random(shape: (usize, usize, usize), seed: u64) -> Var {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let n = shape.0 * shape.1 * shape.2;
        let values: Vec<f32> = (0..n).map(|_| rng.random::<f32>() * 2.0 - 1.0).collect();
        Var::from_vec(values, shape, &Device::Cpu).unwrap()
    }

    fn close(a: &Tensor, b: &Tensor, what: &str) {
        let (a, b): (Vec<f32>, Vec<f32>) = (
            a.flatten_all().unwrap().to_vec1().unwrap(),
            b.flatten_all().unwrap().to_vec1().unwrap(),
        );
        let worst = a
            .iter()
            .zip(&b)
            .map(|(x, y)| (x - y).abs())
            .fold(0f32, f32::max);
        assert!(worst < 1e-5, "{what}: differs by {worst}");
    }

    /// The dropout keeps a share 1 − p of the weights, scaled by 1/(1 − p), a different mask
    /// per slice and seed, the same for the same ones.
    #[test]
    fn dropout_keeps_its_share() {
        let op = |seed| FusedAttention {
            scale: 1.0,
            future_offset: None,
            dropout: Some((0.3, seed)),
            key_lengths: None,
        };
        let mask = op(5).dropout_mask(0, 100_003).unwrap();
        let kept = mask.iter().filter(|&&m| m > 0.0).count() as f64 / mask.len() as f64;
        assert!((kept - 0.7).abs() < 0.005, "kept {kept}");
        assert!(mask
            .iter()
            .all(|&m| m == 0.0 || (m - 1.0 / 0.7).abs() < 1e-6));
        assert_eq!(op(5).dropout_mask(0, 64), op(5).dropout_mask(0, 64));
        assert_ne!(op(5).dropout_mask(0, 64), op(5).dropout_mask(1, 64));
        assert_ne!(op(5).dropout_mask(0, 64), op(6).dropout_mask(0, 64));
    }

    /// Output and the gradients of queries, keys and values equal those of candle's ops: with
    /// and without the future mask (more keys than queries, and fewer), with dropout, with
    /// padded keys (alone, and with the future mask and dropout).
    #[test]
    fn fused_attention_equals_candles_ops() {
        let padded = |l: [usize; 4]| Some(Arc::from(l.as_slice()));
        let cases = [
            (3, 5, None, None, None),
            (4, 7, Some(1 + 3), None, None),
            (6, 2, Some(1 + 4), Some((0.3, 9)), None),
            (5, 5, None, Some((0.5, 2)), None),
            (5, 5, None, None, padded([5, 3, 1, 4])),
            (4, 6, Some(1 + 2), Some((0.2, 4)), padded([6, 2, 5, 1])),
        ];
        for (i, (tq, tk, future_offset, dropout, key_lengths)) in cases.into_iter().enumerate() {
            let (q, k, v) = (
                random((4, tq, 3), 1),
                random((4, tk, 3), 2),
                random((4, tk, 3), 3),
            );
            let op = FusedAttention {
                scale: 0.7,
                future_offset,
                dropout,
                key_lengths,
            };
            let weights = random((4, tq, 3), 4);
            let fused = attention(&q, &k, &v, op.clone()).unwrap();
            let plain = by_ops(&q, &k, &v, &op);
            close(&fused, &plain, &format!("case {i}: output"));
            let [gf, gp] = [&fused, &plain].map(|o| {
                o.mul(weights.as_tensor())
                    .unwrap()
                    .sum_all()
                    .unwrap()
                    .backward()
                    .unwrap()
            });
            for (name, x) in [("q", &q), ("k", &k), ("v", &v)] {
                close(
                    gf.get(x).unwrap(),
                    gp.get(x).unwrap(),
                    &format!("case {i}: d {name}"),
                );
            }
        }
    }
}
