//! Dense f32 kernels the stages share: matrix products through the `gemm` crate (the kernels
//! candle itself uses), row normalisation and squared distances. The fused "similarity + top-k"
//! search is [`crate::dot_search`].

use rayon::prelude::*;

/// `C (n × m) = A (n × d) · B (m × d)ᵀ`, all row-major, on every core.
pub fn matmul_nt(a: &[f32], b: &[f32], n: usize, m: usize, d: usize, c: &mut [f32]) {
    matmul(c, (a, false), (b, true), (n, m, d), false);
}

/// `C (n × m) (+)= op(A) · op(B)`, all row-major, where `op(A)` is n × k and `op(B)` is
/// k × m; a `true` flag means that operand is stored transposed (A as k × n, B as m × k).
/// With `accumulate` the product is added to C, else C is overwritten. Large products use
/// every core.
pub fn matmul(
    c: &mut [f32],
    a: (&[f32], bool),
    b: (&[f32], bool),
    (n, m, k): (usize, usize, usize),
    accumulate: bool,
) {
    let ((a, a_t), (b, b_t)) = (a, b);
    assert_eq!(a.len(), n * k, "A holds n × k values");
    assert_eq!(b.len(), k * m, "B holds k × m values");
    assert_eq!(c.len(), n * m, "C is n × m");
    if n == 0 || m == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            c.fill(0.0);
        }
        return;
    }
    // Below a few million multiply-adds (an LSTM step's product, say) waking other threads
    // costs more than it saves.
    let threads = rayon::current_num_threads();
    let parallelism = if threads > 1 && n * m * k > 1 << 22 {
        gemm::Parallelism::Rayon(threads)
    } else {
        gemm::Parallelism::None
    };
    // (column stride, row stride) of op(A) and op(B) in their buffers.
    let (a_cs, a_rs) = if a_t {
        (n as isize, 1)
    } else {
        (1, k as isize)
    };
    let (b_cs, b_rs) = if b_t {
        (k as isize, 1)
    } else {
        (1, m as isize)
    };
    // SAFETY: the asserts above guarantee every buffer covers the extent gemm reads or
    // writes with these strides: C is n × m with row stride m; op(A) is n × k read from A
    // (n × k, or k × n when transposed); op(B) is k × m read from B (k × m, or m × k when
    // transposed). C is a distinct &mut, so the buffers do not overlap.
    unsafe {
        gemm::gemm(
            n,
            m,
            k,
            c.as_mut_ptr(),
            1,
            m as isize,
            accumulate,
            a.as_ptr(),
            a_cs,
            a_rs,
            b.as_ptr(),
            b_cs,
            b_rs,
            if accumulate { 1.0 } else { 0.0 },
            1.0,
            false,
            false,
            false,
            parallelism,
        );
    }
}

/// Scales every row to unit L2 norm (rows of norm 0 stay 0).
pub fn normalize_rows(x: &mut [f32], d: usize) {
    if d == 0 {
        return;
    }
    x.par_chunks_mut(d).for_each(|row| {
        let norm = row
            .iter()
            .map(|v| (*v as f64) * (*v as f64))
            .sum::<f64>()
            .sqrt();
        if norm > 0.0 {
            let inv = (1.0 / norm) as f32;
            row.iter_mut().for_each(|v| *v *= inv);
        }
    });
}

/// Squared Euclidean distance, written so the compiler vectorises it (8 independent lanes).
#[inline]
pub fn squared_distance(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for l in 0..8 {
            let t = x[l] - y[l];
            acc[l] += t * t;
        }
    }
    let mut tail = 0f32;
    for (x, y) in ra.iter().zip(rb) {
        let t = x - y;
        tail += t * t;
    }
    acc.iter().sum::<f32>() + tail
}

/// `e^x` to within a few ulp for |x| ≤ 87, written without calls or branches so that loops
/// over it vectorise (libm's `expf`/`tanhf` took a fifth of LSTM training time, and a third of MulT's in its
/// attention's softmax): Cephes'
/// reduction `x = n·ln 2 + r` (ln 2 split in two so `n·ln2_hi` is exact, |r| ≤ ½ ln 2), `e^r`
/// by its Taylor series to degree 7, and `2^n` put into the exponent bits.
#[inline(always)]
pub fn fast_exp(x: f32) -> f32 {
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    let x = x.clamp(-87.0, 87.0);
    let n = (x * std::f32::consts::LOG2_E).round_ties_even();
    let r = (x - n * LN2_HI) - n * LN2_LO;
    // Horner with fused multiply-adds (one instruction each on x86-64-v3).
    let p = [
        1.0 / 720.0,
        1.0 / 120.0,
        1.0 / 24.0,
        1.0 / 6.0,
        0.5,
        1.0,
        1.0,
    ]
    .iter()
    .fold(1.0 / 5040.0, |acc: f32, &c| acc.mul_add(r, c));
    p * f32::from_bits(((n as i32 + 127) as u32) << 23)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matmul_agrees_with_brute_force() {
        let (n, m, d) = (7, 5000, 13);
        let a: Vec<f32> = (0..n * d)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) / 50.0)
            .collect();
        let b: Vec<f32> = (0..m * d)
            .map(|i| ((i * 53 % 97) as f32 - 48.0) / 48.0)
            .collect();
        let mut c = vec![0f32; n * m];
        matmul_nt(&a, &b, n, m, d, &mut c);
        for i in 0..n {
            for j in [0, 1, 2047, 2048, 4999] {
                let want: f32 = (0..d).map(|t| a[i * d + t] * b[j * d + t]).sum();
                assert!((c[i * m + j] - want).abs() < 1e-4);
            }
        }
    }

    #[test]
    fn matmul_handles_transposed_operands_and_accumulates() {
        let (n, m, k) = (3, 4, 5);
        let a: Vec<f32> = (0..n * k).map(|i| i as f32 * 0.5 - 3.0).collect(); // n × k
        let b: Vec<f32> = (0..k * m).map(|i| 2.0 - i as f32 * 0.25).collect(); // k × m
        let want: Vec<f32> = (0..n * m)
            .map(|ij| (0..k).map(|t| a[ij / m * k + t] * b[t * m + ij % m]).sum())
            .collect();
        let transpose = |x: &[f32], rows: usize, cols: usize| -> Vec<f32> {
            (0..rows * cols)
                .map(|i| x[i % rows * cols + i / rows])
                .collect()
        };
        let (a_t, b_t) = (transpose(&a, n, k), transpose(&b, k, m));
        for (a_op, b_op) in [
            ((&a[..], false), (&b[..], false)),
            ((&a_t[..], true), (&b[..], false)),
            ((&a[..], false), (&b_t[..], true)),
            ((&a_t[..], true), (&b_t[..], true)),
        ] {
            let mut c = vec![1.0f32; n * m];
            matmul(&mut c, a_op, b_op, (n, m, k), false);
            assert!(
                c.iter().zip(&want).all(|(x, y)| (x - y).abs() < 1e-4),
                "{c:?} vs {want:?}"
            );
            matmul(&mut c, a_op, b_op, (n, m, k), true);
            assert!(c.iter().zip(&want).all(|(x, y)| (x - 2.0 * y).abs() < 1e-3));
        }
    }

    #[test]
    fn squared_distance_matches_the_definition() {
        let a: Vec<f32> = (0..301).map(|i| i as f32 * 0.01).collect();
        let b: Vec<f32> = (0..301).map(|i| (300 - i) as f32 * 0.02).collect();
        let want: f32 = a.iter().zip(&b).map(|(x, y)| (x - y) * (x - y)).sum();
        assert!((squared_distance(&a, &b) - want).abs() / want < 1e-5);
    }
}
