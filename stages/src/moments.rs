//! Per-feature moments of a row-major f32 matrix: count, mean, M2 (sum of squared
//! deviations), min, max and non-finite count, accumulated in f64.
//!
//! Rows are cut into fixed-size chunks; each chunk is summarised with two passes (mean, then
//! squared deviations from it: stable even when |mean| ≫ std), chunks are summarised in
//! parallel with rayon and merged *in order* with Chan et al.'s pairwise formula. The result
//! depends only on the data, never on thread timing, so it is bit-for-bit reproducible.

use mmflow_schemas::norm_stats::FeatureStats;
use rayon::prelude::*;

/// Rows per chunk: small enough that a chunk stays in L2 for its second pass.
const CHUNK_ROWS: usize = 256;

/// Running moments of each feature.
#[derive(Debug, Clone, PartialEq)]
pub struct Moments {
    /// Finite values per feature.
    pub count: Vec<u64>,
    /// Mean of the finite values.
    pub mean: Vec<f64>,
    /// Sum of squared deviations from the mean.
    pub m2: Vec<f64>,
    /// Smallest finite value (+inf while none).
    pub min: Vec<f64>,
    /// Largest finite value (-inf while none).
    pub max: Vec<f64>,
    /// NaN and ±inf values per feature.
    pub nonfinite: Vec<u64>,
}

impl Moments {
    /// Moments of nothing.
    pub fn new(dim: usize) -> Self {
        Moments {
            count: vec![0; dim],
            mean: vec![0.0; dim],
            m2: vec![0.0; dim],
            min: vec![f64::INFINITY; dim],
            max: vec![f64::NEG_INFINITY; dim],
            nonfinite: vec![0; dim],
        }
    }

    /// Feature width.
    pub fn dim(&self) -> usize {
        self.count.len()
    }

    /// Moments of the rows of `data` (row-major, `dim` wide), computed in parallel.
    pub fn of_rows(data: &[f32], dim: usize) -> Self {
        let mut total = Moments::new(dim);
        total.add_rows(data);
        total
    }

    /// Adds the rows of `data` (row-major, `self.dim()` wide).
    pub fn add_rows(&mut self, data: &[f32]) {
        let dim = self.dim();
        if dim == 0 || data.is_empty() {
            return;
        }
        let parts: Vec<Moments> = data
            .par_chunks(CHUNK_ROWS * dim)
            .map(|chunk| Moments::of_chunk(chunk, dim))
            .collect();
        for part in &parts {
            self.merge(part);
        }
    }

    /// Two-pass moments of one chunk, written branch-free so the loops vectorise.
    fn of_chunk(chunk: &[f32], dim: usize) -> Self {
        let mut m = Moments::new(dim);
        let mut sum = vec![0f64; dim];
        let mut count = vec![0u32; dim];
        let mut lo = vec![f32::INFINITY; dim];
        let mut hi = vec![f32::NEG_INFINITY; dim];
        for row in chunk.chunks_exact(dim) {
            for j in 0..dim {
                let x = row[j];
                let finite = x.is_finite();
                sum[j] += if finite { x as f64 } else { 0.0 };
                count[j] += finite as u32;
                let low = if finite { x } else { f32::INFINITY };
                let high = if finite { x } else { f32::NEG_INFINITY };
                lo[j] = if low < lo[j] { low } else { lo[j] };
                hi[j] = if high > hi[j] { high } else { hi[j] };
            }
        }
        let rows = (chunk.len() / dim) as u64;
        for j in 0..dim {
            m.count[j] = count[j] as u64;
            m.nonfinite[j] = rows - m.count[j];
            m.min[j] = lo[j] as f64;
            m.max[j] = hi[j] as f64;
            if count[j] > 0 {
                m.mean[j] = sum[j] / count[j] as f64;
            }
        }
        let mean = &m.mean;
        let m2 = &mut m.m2;
        for row in chunk.chunks_exact(dim) {
            for j in 0..dim {
                let x = row[j];
                let d = if x.is_finite() {
                    x as f64 - mean[j]
                } else {
                    0.0
                };
                m2[j] += d * d;
            }
        }
        m
    }

    /// Merges `other` into `self` (Chan, Golub & LeVeque's pairwise update).
    pub fn merge(&mut self, other: &Moments) {
        for j in 0..self.dim() {
            let (na, nb) = (self.count[j], other.count[j]);
            if nb > 0 {
                if na == 0 {
                    self.mean[j] = other.mean[j];
                    self.m2[j] = other.m2[j];
                } else {
                    let n = (na + nb) as f64;
                    let delta = other.mean[j] - self.mean[j];
                    self.mean[j] += delta * nb as f64 / n;
                    self.m2[j] += other.m2[j] + delta * delta * (na as f64) * (nb as f64) / n;
                }
                self.count[j] = na + nb;
                self.min[j] = self.min[j].min(other.min[j]);
                self.max[j] = self.max[j].max(other.max[j]);
            }
            self.nonfinite[j] += other.nonfinite[j];
        }
    }

    /// Population standard deviation (ddof = 0) of feature `j`; 0 when fewer than one value.
    pub fn std(&self, j: usize) -> f64 {
        if self.count[j] == 0 {
            0.0
        } else {
            (self.m2[j] / self.count[j] as f64).sqrt()
        }
    }

    /// The statistics table rows.
    pub fn to_stats(&self) -> Vec<FeatureStats> {
        (0..self.dim())
            .map(|j| {
                let seen = self.count[j] > 0;
                FeatureStats {
                    count: self.count[j],
                    mean: if seen { self.mean[j] } else { f64::NAN },
                    std: if seen { self.std(j) } else { f64::NAN },
                    min: if seen { self.min[j] } else { f64::NAN },
                    max: if seen { self.max[j] } else { f64::NAN },
                    nonfinite: self.nonfinite[j],
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reference: numpy on the same data.
    /// ```python
    /// x = np.array([[1, 100], [2, 100], [3, 100], [4, np.inf]], dtype=np.float32)
    /// ```
    /// column 0: mean 2.5, std (ddof 0) 1.118033988749895; column 1 (finite only): mean 100, std 0.
    #[test]
    fn small_matrix_matches_numpy() {
        let x = [1.0, 100.0, 2.0, 100.0, 3.0, 100.0, 4.0, f32::INFINITY];
        let m = Moments::of_rows(&x, 2);
        assert_eq!(m.count, vec![4, 3]);
        assert_eq!(m.nonfinite, vec![0, 1]);
        assert!((m.mean[0] - 2.5).abs() < 1e-12);
        assert!((m.std(0) - 1.118033988749895).abs() < 1e-12);
        assert_eq!(m.std(1), 0.0);
        assert_eq!((m.min[0], m.max[0]), (1.0, 4.0));
    }

    #[test]
    fn chunked_merge_equals_one_pass_and_is_stable_far_from_zero() {
        // Values 1e6 + small noise: a naive sum of squares loses every digit of the variance.
        let dim = 3;
        let rows = 10_000;
        let data: Vec<f32> = (0..rows * dim)
            .map(|i| 1.0e6 + ((i * 7919 % 1000) as f32) / 100.0)
            .collect();
        let m = Moments::of_rows(&data, dim);
        for j in 0..dim {
            let col: Vec<f64> = data
                .iter()
                .skip(j)
                .step_by(dim)
                .map(|&x| x as f64)
                .collect();
            let mean = col.iter().sum::<f64>() / col.len() as f64;
            let var = col.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / col.len() as f64;
            assert!((m.mean[j] - mean).abs() < 1e-6, "mean {j}");
            assert!((m.std(j) - var.sqrt()).abs() < 1e-9, "std {j}");
        }
        // Merging in pieces gives the same answer as all at once.
        let mut pieces = Moments::new(dim);
        pieces.add_rows(&data[..3000 * dim]);
        pieces.add_rows(&data[3000 * dim..]);
        for j in 0..dim {
            assert!((pieces.std(j) - m.std(j)).abs() < 1e-9);
        }
    }
}
