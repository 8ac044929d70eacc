//! K-means with linfa-clustering, made fast where linfa is slow.
//!
//! Measured before this module existed, linfa-clustering used plainly was 8–14× slower than
//! scikit-learn on MOSEI-sized data: its k-means++ recomputes every distance to every chosen
//! centroid at each step (O(n·k²·d)), and its default L2 distance goes through generic ndarray
//! code for each point/centroid pair. Here linfa still runs Lloyd's iterations, but
//!
//! - the initial centroids come from scikit-learn's *greedy* k-means++ (2 + ln k candidates per
//!   step, keep the one that lowers the potential most), with the candidates' distances computed
//!   as one matrix product per step (`‖x‖² − 2x·c + ‖c‖²`), passed in as `Precomputed`;
//! - linfa's distance function is [`FastL2`], a vectorised squared-distance kernel.
//!
//! The result is deterministic for a seed. Inertia is reported as scikit-learn does (the
//! *sum* of squared distances to the final centroids; linfa reports the mean).

use linfa::traits::{Fit, Predict};
use linfa::DatasetBase;
use linfa_clustering::{KMeans, KMeansInit};
use linfa_nn::distance::Distance;
use ndarray16::{Array2, ArrayView, Dimension};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

use crate::linalg::{matmul_nt, squared_distance};

/// Euclidean distance for linfa, through a vectorised kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FastL2;

fn pair<D: Dimension>(a: &ArrayView<f32, D>, b: &ArrayView<f32, D>) -> f32 {
    match (a.as_slice(), b.as_slice()) {
        (Some(x), Some(y)) => squared_distance(x, y),
        _ => a.iter().zip(b.iter()).map(|(x, y)| (x - y) * (x - y)).sum(),
    }
}

impl Distance<f32> for FastL2 {
    fn distance<D: Dimension>(&self, a: ArrayView<f32, D>, b: ArrayView<f32, D>) -> f32 {
        pair(&a, &b).sqrt()
    }

    fn rdistance<D: Dimension>(&self, a: ArrayView<f32, D>, b: ArrayView<f32, D>) -> f32 {
        pair(&a, &b)
    }

    fn rdist_to_dist(&self, rdist: f32) -> f32 {
        rdist.sqrt()
    }

    fn dist_to_rdist(&self, dist: f32) -> f32 {
        dist * dist
    }
}

/// A fitted clustering.
#[derive(Debug, Clone)]
pub struct Clustering {
    /// Number of clusters.
    pub k: usize,
    /// Width of the points.
    pub dim: usize,
    /// `k × dim` centroids, row-major.
    pub centroids: Vec<f32>,
    /// Cluster of each fitted point.
    pub assignment: Vec<usize>,
    /// Sum of squared distances of the points to their centroids (scikit-learn's `inertia_`).
    pub inertia: f64,
}

impl Clustering {
    /// Points per cluster.
    pub fn sizes(&self) -> Vec<usize> {
        let mut sizes = vec![0; self.k];
        for &c in &self.assignment {
            sizes[c] += 1;
        }
        sizes
    }

    /// The nearest centroid of each of `points` (n × dim) and the squared distance to it.
    pub fn assign(&self, points: &[f32]) -> Vec<(usize, f32)> {
        nearest(points, &self.centroids, self.dim)
    }
}

/// Nearest centroid (and squared distance) of each point, via one matrix product.
pub fn nearest(points: &[f32], centroids: &[f32], dim: usize) -> Vec<(usize, f32)> {
    let (n, k) = (points.len() / dim.max(1), centroids.len() / dim.max(1));
    let mut dots = vec![0f32; n * k];
    matmul_nt(points, centroids, n, k, dim, &mut dots);
    let c_norms: Vec<f32> = centroids
        .chunks(dim.max(1))
        .map(|c| c.iter().map(|v| v * v).sum())
        .collect();
    points
        .par_chunks(dim.max(1))
        .zip(dots.par_chunks(k.max(1)))
        .map(|(p, row)| {
            let p_norm: f32 = p.iter().map(|v| v * v).sum();
            let mut best = (0, f32::INFINITY);
            for (c, (&dot, &cn)) in row.iter().zip(&c_norms).enumerate() {
                let d = (p_norm - 2.0 * dot + cn).max(0.0);
                if d < best.1 {
                    best = (c, d);
                }
            }
            // Recompute the winner exactly (the expansion loses precision near 0).
            (
                best.0,
                squared_distance(p, &centroids[best.0 * dim..(best.0 + 1) * dim]),
            )
        })
        .collect()
}

/// Mean over features of the per-feature variance (scikit-learn scales `tol` by it).
fn mean_variance(x: &[f32], dim: usize) -> f64 {
    let m = crate::moments::Moments::of_rows(x, dim);
    (0..dim).map(|j| m.std(j).powi(2)).sum::<f64>() / dim.max(1) as f64
}

/// scikit-learn's greedy k-means++ (`_kmeans_plusplus` with `n_local_trials = 2 + ln k`).
pub fn greedy_kmeans_plus_plus(
    x: &[f32],
    n: usize,
    dim: usize,
    k: usize,
    rng: &mut ChaCha8Rng,
) -> Vec<f32> {
    let trials = 2 + (k as f64).ln() as usize;
    let norms: Vec<f32> = x
        .par_chunks(dim)
        .map(|r| r.iter().map(|v| v * v).sum())
        .collect();
    let row = |i: usize| &x[i * dim..(i + 1) * dim];
    let mut centers = Vec::with_capacity(k * dim);
    let first = rng.random_range(0..n);
    centers.extend_from_slice(row(first));
    let mut closest: Vec<f32> = x
        .par_chunks(dim)
        .map(|p| squared_distance(p, row(first)))
        .collect();
    let mut dots = vec![0f32; n * trials];
    for _ in 1..k {
        // Sample candidates with probability ∝ current squared distance.
        let mut cumulative = Vec::with_capacity(n);
        let mut acc = 0f64;
        for &c in &closest {
            acc += c as f64;
            cumulative.push(acc);
        }
        let candidates: Vec<usize> = (0..trials)
            .map(|_| {
                let r = rng.random::<f64>() * acc;
                cumulative.partition_point(|&c| c <= r).min(n - 1)
            })
            .collect();
        let cand: Vec<f32> = candidates
            .iter()
            .flat_map(|&c| row(c).iter().copied())
            .collect();
        matmul_nt(x, &cand, n, trials, dim, &mut dots);
        // Potential if each candidate were added.
        let pots: Vec<f64> = (0..trials)
            .into_par_iter()
            .map(|t| {
                let cn = norms[candidates[t]];
                (0..n)
                    .map(|i| {
                        let d = (norms[i] - 2.0 * dots[i * trials + t] + cn).max(0.0);
                        d.min(closest[i]) as f64
                    })
                    .sum()
            })
            .collect();
        let best = (0..trials)
            .min_by(|&a, &b| pots[a].total_cmp(&pots[b]))
            .unwrap_or(0);
        let chosen = candidates[best];
        let cn = norms[chosen];
        closest.par_iter_mut().enumerate().for_each(|(i, c)| {
            let d = (norms[i] - 2.0 * dots[i * trials + best] + cn).max(0.0);
            if d < *c {
                *c = d;
            }
        });
        centers.extend_from_slice(row(chosen));
    }
    centers
}

/// Clusters `x` (n × dim) into `k` clusters: greedy k-means++, then linfa's Lloyd iterations
/// with [`FastL2`], at most `max_iterations`. `tolerance` means what scikit-learn's `tol` means:
/// stop when the summed squared movement of the centroids is at most `tolerance` × the mean
/// per-feature variance of `x` (passed to linfa, which compares the Euclidean norm of the
/// movement, as its square root).
pub fn fit(
    x: &[f32],
    dim: usize,
    k: usize,
    max_iterations: u64,
    tolerance: f64,
    seed: u64,
) -> Result<Clustering, String> {
    let n = x.len() / dim.max(1);
    if k == 0 || k > n {
        return Err(format!("k = {k} clusters for {n} points"));
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let init = greedy_kmeans_plus_plus(x, n, dim, k, &mut rng);
    let records = Array2::from_shape_vec((n, dim), x.to_vec()).map_err(|e| e.to_string())?;
    let dataset = DatasetBase::from(records);
    let init = Array2::from_shape_vec((k, dim), init).map_err(|e| e.to_string())?;
    let model = KMeans::params_with(
        k,
        <rand_xoshiro::Xoshiro256Plus as rand_xoshiro::rand_core::SeedableRng>::seed_from_u64(seed),
        FastL2,
    )
    .n_runs(1)
    .max_n_iterations(max_iterations)
    .tolerance((tolerance * mean_variance(x, dim)).sqrt() as f32)
    .init_method(KMeansInit::Precomputed(init))
    .fit(&dataset)
    .map_err(|e| e.to_string())?;
    let assignment: Vec<usize> = model.predict(&dataset).to_vec();
    let centroids: Vec<f32> = model.centroids().iter().copied().collect();
    let inertia = x
        .par_chunks(dim)
        .zip(assignment.par_iter())
        .map(|(p, &c)| squared_distance(p, &centroids[c * dim..(c + 1) * dim]) as f64)
        .sum::<f64>();
    Ok(Clustering {
        k,
        dim,
        centroids,
        assignment,
        inertia,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Three well-separated blobs: k-means finds them, whatever the seed.
    #[test]
    fn finds_separated_clusters_deterministically() {
        let centers = [[0.0f32, 0.0], [10.0, 0.0], [0.0, 10.0]];
        let mut x = Vec::new();
        for i in 0..300 {
            let c = centers[i % 3];
            x.push(c[0] + ((i * 7919 % 100) as f32 / 100.0 - 0.5));
            x.push(c[1] + ((i * 104_729 % 100) as f32 / 100.0 - 0.5));
        }
        let a = fit(&x, 2, 3, 100, 1e-4, 7).unwrap();
        let b = fit(&x, 2, 3, 100, 1e-4, 7).unwrap();
        assert_eq!(a.centroids, b.centroids);
        assert_eq!(
            a.sizes()
                .iter()
                .copied()
                .collect::<std::collections::BTreeSet<_>>()
                .into_iter()
                .collect::<Vec<_>>(),
            vec![100]
        );
        for i in 0..300 {
            assert_eq!(
                a.assignment[i],
                a.assignment[i % 3],
                "points of one blob share a cluster"
            );
        }
        assert!(a.inertia < 300.0 * 0.2);
        assert!(fit(&x, 2, 301, 100, 1e-4, 7).is_err());
    }
}
