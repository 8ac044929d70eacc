//! A fully connected layer, optionally followed by ReLU, as one candle op with its own
//! backward pass (CPU).
//!
//! Built from candle's ops, a linear layer with ReLU is a matrix product, a broadcast bias
//! add and the activation forward, and in autograd a product per operand (the input's
//! gradient even when the input is data that needs none), a sum over rows for the bias, and
//! four passes (compare, convert, multiply, add) for the activation's gradient. This op does
//! the forward in one product and one pass (bias and activation together), and the backward
//! in one masking pass, one product for the weights, a column sum for the bias, and a product
//! for the input only when something upstream needs it. The products go through
//! [`crate::linalg::matmul`] (the `gemm` kernels candle uses).
//!
//! Rows of the input that are all zero — the padding of a sequence, which MMSA's models run
//! their LSTMs over, and which mmflow's own batches pad with — are left out of the products:
//! their output is the bias (through the activation) and they add nothing to the weights'
//! gradient. (With a non-finite weight such a row would give NaN in PyTorch and the bias
//! here; the other rows' NaN stops the training all the same.)

use candle_core::{CpuStorage, CustomOp3, Layout, Shape, Storage, Tensor};

use crate::linalg::matmul;

/// `y = act(x · Wᵀ + b)` over the last dimension of `x`; `W` is `out × in`, `b` is `out`.
#[derive(Debug, Clone, Copy)]
pub struct FusedLinear {
    /// Apply max(0, ·) to the result.
    pub relu: bool,
}

/// The f32 values of a contiguous CPU tensor, borrowed in place.
pub(crate) fn with_values<R>(
    t: &Tensor,
    what: &str,
    f: impl FnOnce(&[f32]) -> R,
) -> candle_core::Result<R> {
    let (storage, layout) = t.storage_and_layout();
    let Storage::Cpu(CpuStorage::F32(values)) = &*storage else {
        candle_core::bail!("{what} must be a float32 CPU tensor")
    };
    let Some((start, end)) = layout.contiguous_offsets() else {
        candle_core::bail!("{what} must be contiguous")
    };
    Ok(f(&values[start..end]))
}

/// `values` as the gradient of `like` (its shape and device), or none where nothing upstream
/// of `like` is tracked (data needs no gradient).
pub(crate) fn gradient_for(values: Vec<f32>, like: &Tensor) -> candle_core::Result<Option<Tensor>> {
    like.track_op()
        .then(|| Tensor::from_vec(values, like.shape(), like.device()))
        .transpose()
}

/// The f32 values of a contiguous CPU storage.
pub(crate) fn slice_of<'a>(
    storage: &'a CpuStorage,
    layout: &Layout,
    what: &str,
) -> candle_core::Result<&'a [f32]> {
    let CpuStorage::F32(values) = storage else {
        candle_core::bail!("{what} must be float32")
    };
    let Some((start, end)) = layout.contiguous_offsets() else {
        candle_core::bail!("{what} must be contiguous")
    };
    Ok(&values[start..end])
}

impl FusedLinear {
    /// (rows, inputs, outputs) of `x` against `W` and `b`, checked.
    fn dims(x: &Shape, w: &Shape, b: &Shape) -> candle_core::Result<(usize, usize, usize)> {
        let (out, input) = w.dims2()?;
        let x_in = x.dims().last().copied().unwrap_or(0);
        if x.rank() < 1 || x_in != input || b.dims() != [out] {
            candle_core::bail!(
                "linear: input {x:?}, weight {w:?} and bias {b:?} do not fit together"
            );
        }
        Ok((x.elem_count() / input.max(1), input, out))
    }

    /// The output gradient with ReLU's derivative applied (`res` is the output).
    fn relu_masked(res: &Tensor, grad: &Tensor) -> candle_core::Result<Vec<f32>> {
        let mut dz = with_values(grad, "linear gradient", <[f32]>::to_vec)?;
        with_values(res, "linear output", |y| {
            for (d, &y) in dz.iter_mut().zip(y) {
                if y <= 0.0 {
                    *d = 0.0;
                }
            }
        })?;
        Ok(dz)
    }

    /// Gradients of the input (only if it is tracked), weight and bias from the gradient of
    /// the pre-activation `dz` (`n × out`).
    fn gradients(
        x: &Tensor,
        w: &Tensor,
        b: &Tensor,
        dz: &[f32],
        (n, input, out): (usize, usize, usize),
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let mut dw = vec![0f32; out * input];
        with_values(x, "linear input", |x| match nonzero_rows(x, input) {
            // dW = dZᵀ · X: an all-zero row of X adds nothing.
            Some(keep) => matmul(
                &mut dw,
                (&gather_rows(dz, out, &keep), true),
                (&gather_rows(x, input, &keep), false),
                (out, input, keep.len()),
                false,
            ),
            None => matmul(&mut dw, (dz, true), (x, false), (out, input, n), false),
        })?;
        let db = column_sums(dz, out);
        // Data (no variable upstream) needs no gradient.
        let dx = if x.track_op() {
            let mut dx = vec![0f32; n * input];
            with_values(w, "linear weight", |w| {
                matmul(&mut dx, (dz, false), (w, false), (n, input, out), false)
            })?;
            Some(Tensor::from_vec(dx, x.shape(), x.device())?)
        } else {
            None
        };
        Ok((
            dx,
            Some(Tensor::from_vec(dw, w.shape(), w.device())?),
            Some(Tensor::from_vec(db, b.shape(), b.device())?),
        ))
    }
}

/// The rows of a row-major `rows × cols` matrix that are not all zero, if any row is.
fn nonzero_rows(m: &[f32], cols: usize) -> Option<Vec<usize>> {
    if cols == 0 {
        return None;
    }
    let keep: Vec<usize> = m
        .chunks_exact(cols)
        .enumerate()
        .filter(|(_, row)| row.iter().any(|&v| v != 0.0))
        .map(|(i, _)| i)
        .collect();
    (keep.len() < m.len() / cols).then_some(keep)
}

/// `rows` of a row-major matrix of `cols` columns, one after another.
fn gather_rows(m: &[f32], cols: usize, rows: &[usize]) -> Vec<f32> {
    let mut out = Vec::with_capacity(rows.len() * cols);
    for &r in rows {
        out.extend_from_slice(&m[r * cols..(r + 1) * cols]);
    }
    out
}

/// `C (rows × m) = X · op(B)` where the all-zero rows of `X` (`rows × k`) give zero rows of
/// `C` without being multiplied.
fn matmul_skipping_zero_rows(
    c: &mut [f32],
    x: &[f32],
    b: (&[f32], bool),
    (rows, m, k): (usize, usize, usize),
) {
    match nonzero_rows(x, k) {
        Some(keep) => {
            let mut packed = vec![0f32; keep.len() * m];
            matmul(
                &mut packed,
                (&gather_rows(x, k, &keep), false),
                b,
                (keep.len(), m, k),
                false,
            );
            c.fill(0.0);
            for (j, &i) in keep.iter().enumerate() {
                c[i * m..(i + 1) * m].copy_from_slice(&packed[j * m..(j + 1) * m]);
            }
        }
        None => matmul(c, (x, false), b, (rows, m, k), false),
    }
}

/// Column sums of a row-major `rows × cols` matrix.
fn column_sums(m: &[f32], cols: usize) -> Vec<f32> {
    let mut sums = vec![0f32; cols];
    for row in m.chunks_exact(cols.max(1)) {
        for (s, &v) in sums.iter_mut().zip(row) {
            *s += v;
        }
    }
    sums
}

impl CustomOp3 for FusedLinear {
    fn name(&self) -> &'static str {
        "fused-linear"
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
        let (n, input, out) = Self::dims(l1.shape(), l2.shape(), l3.shape())?;
        let x = slice_of(s1, l1, "linear input")?;
        let w = slice_of(s2, l2, "linear weight")?;
        let b = slice_of(s3, l3, "linear bias")?;
        let mut y = vec![0f32; n * out];
        matmul_skipping_zero_rows(&mut y, x, (w, true), (n, out, input));
        for row in y.chunks_exact_mut(out.max(1)) {
            for (v, &bias) in row.iter_mut().zip(b) {
                let z = *v + bias;
                *v = if self.relu { z.max(0.0) } else { z };
            }
        }
        let mut dims = l1.shape().dims().to_vec();
        if let Some(last) = dims.last_mut() {
            *last = out;
        }
        Ok((CpuStorage::F32(y), Shape::from(dims)))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        b: &Tensor,
        res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let dims = Self::dims(x.shape(), w.shape(), b.shape())?;
        if grad.dims() != res.dims() {
            candle_core::bail!(
                "linear: gradient {:?} for output {:?}",
                grad.shape(),
                res.shape()
            );
        }
        let grad = grad.contiguous()?;
        if self.relu {
            let dz = Self::relu_masked(res, &grad)?;
            Self::gradients(x, w, b, &dz, dims)
        } else {
            with_values(&grad, "linear gradient", |dz| {
                Self::gradients(x, w, b, dz, dims)
            })?
        }
    }
}

/// `act(x · Wᵀ + b)` through [`FusedLinear`] (CPU tensors).
pub fn linear(x: &Tensor, w: &Tensor, b: &Tensor, relu: bool) -> candle_core::Result<Tensor> {
    x.contiguous()?
        .apply_op3(&w.contiguous()?, &b.contiguous()?, FusedLinear { relu })
}
