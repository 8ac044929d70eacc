//! K-means: linfa-clustering's algorithm and configuration, with the assignment step as one
//! fused matrix-product search per iteration.
//!
//! linfa-clustering's `KMeans` is what the stage configures: its `KMeansParams`, checked by
//! linfa, hold k, the iteration limit, the tolerance and the initial centroids, and [`lloyd`]
//! runs linfa 0.8's iterations step for step: assign every point to its nearest centroid; the
//! new centroid is (the sum of its points + the old centroid) / (their count + 1) (linfa's
//! "m_k-means" update, which leaves an empty cluster where it was); stop once the centroids
//! moved (Frobenius norm) less than the tolerance, or after the iteration limit. A test checks
//! that it ends where linfa's own `fit` ends.
//!
//! What differs is how the assignment is computed. linfa measures every point against every
//! centroid through its generic distance trait, which has no batched form to plug a faster
//! kernel into; that made it 8–14× slower than scikit-learn on MOSEI-sized data. Here each
//! iteration is one [`crate::dot_search`] (largest `x·c − ‖c‖²/2` = nearest centroid, ties to
//! the lower index) over the points, packed once per fit. The initial centroids come from
//! scikit-learn's *greedy* k-means++ (2 + ln k candidates per step, keep the one that lowers the
//! potential most), the candidates' distances computed as one matrix product per step
//! (`‖x‖² − 2x·c + ‖c‖²`), and are given to linfa's configuration as `Precomputed`.
//!
//! The result is deterministic for a seed (every sum has a fixed order). Inertia is reported as
//! scikit-learn does (the *sum* of squared distances to the final centroids; linfa reports the
//! mean).

use linfa::ParamGuard;
use linfa_clustering::{KMeans, KMeansInit, KMeansValidParams};
use linfa_nn::distance::L2Dist;
use ndarray16::Array2;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_xoshiro::rand_core::SeedableRng as _;
use rand_xoshiro::Xoshiro256Plus;
use rayon::prelude::*;

use crate::dot_search::{self, Queries};
use crate::linalg::{matmul_nt, squared_distance};

/// linfa's K-means configuration, as [`fit`] builds and [`lloyd`] follows it.
pub type Params = KMeansValidParams<f32, Xoshiro256Plus, L2Dist>;

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

/// Nearest centroid (and squared distance) of each point (n × dim), ties to the lower index.
pub fn nearest(points: &[f32], centroids: &[f32], dim: usize) -> Vec<(usize, f32)> {
    let clusters = assign(&Queries::new(points, dim), centroids, dim);
    points
        .par_chunks(dim.max(1))
        .zip(clusters)
        .map(|(p, c)| (c, squared_distance(p, &centroids[c * dim..(c + 1) * dim])))
        .collect()
}

/// The nearest centroid of each point: the largest `x·c − ‖c‖²/2` (the smallest `‖x − c‖²`,
/// as `‖x‖²` is the same for every centroid), ties to the lower index.
fn assign(points: &Queries, centroids: &[f32], dim: usize) -> Vec<usize> {
    let half_norms: Vec<f32> = centroids
        .chunks(dim.max(1))
        .map(|c| (c.iter().map(|&v| v as f64 * v as f64).sum::<f64>() / 2.0) as f32)
        .collect();
    let top = dot_search::top_k(points, centroids, &half_norms, 1);
    (0..points.len())
        .map(|i| top.row(i).first().map_or(0, |&(c, _)| c))
        .collect()
}

/// linfa's centroid update: each centroid becomes the mean of its points *and itself* (an
/// empty cluster keeps its centroid). Sums in f64, each cluster's points in index order.
fn update_centroids(x: &[f32], dim: usize, centroids: &[f32], assignment: &[usize]) -> Vec<f32> {
    let k = centroids.len() / dim;
    let mut members: Vec<Vec<usize>> = vec![Vec::new(); k];
    for (i, &c) in assignment.iter().enumerate() {
        members[c].push(i);
    }
    let mut updated = vec![0f32; k * dim];
    updated
        .par_chunks_mut(dim)
        .zip(centroids.par_chunks(dim))
        .zip(&members)
        .for_each(|((new, old), points)| {
            let mut sum: Vec<f64> = old.iter().map(|&v| v as f64).collect();
            for &i in points {
                for (s, &v) in sum.iter_mut().zip(&x[i * dim..(i + 1) * dim]) {
                    *s += v as f64;
                }
            }
            let count = (points.len() + 1) as f64;
            for (n, s) in new.iter_mut().zip(sum) {
                *n = (s / count) as f32;
            }
        });
    updated
}

/// linfa-clustering 0.8's K-means iterations as `params` configures them (its initial
/// centroids must be `Precomputed`), the assignment through [`crate::dot_search`]: the final
/// centroids, `k × dim` row-major.
pub fn lloyd(x: &[f32], dim: usize, params: &Params) -> Result<Vec<f32>, String> {
    let KMeansInit::Precomputed(init) = params.init_method() else {
        return Err("the initial centroids are computed before the iterations".into());
    };
    if init.dim() != (params.n_clusters(), dim) {
        return Err(format!(
            "{} × {} initial centroids for {} clusters of width {dim}",
            init.nrows(),
            init.ncols(),
            params.n_clusters()
        ));
    }
    let mut centroids: Vec<f32> = init.iter().copied().collect();
    let points = Queries::new(x, dim);
    let tolerance = params.tolerance() as f64;
    for _ in 0..params.max_n_iterations() {
        let assignment = assign(&points, &centroids, dim);
        let updated = update_centroids(x, dim, &centroids, &assignment);
        let moved = centroids
            .iter()
            .zip(&updated)
            .map(|(&a, &b)| (a as f64 - b as f64).powi(2))
            .sum::<f64>()
            .sqrt();
        centroids = updated;
        if moved < tolerance {
            break;
        }
    }
    Ok(centroids)
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

/// Clusters `x` (n × dim) into `k` clusters: greedy k-means++, then linfa's iterations
/// ([`lloyd`]), at most `max_iterations`. `tolerance` means what scikit-learn's `tol` means: stop
/// when the summed squared movement of the centroids is at most `tolerance` × the mean
/// per-feature variance of `x` (given to linfa, which compares the Euclidean norm of the
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
    if let Some(i) = x.iter().position(|v| !v.is_finite()) {
        return Err(format!("point {} has a non-finite value", i / dim));
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let init = greedy_kmeans_plus_plus(x, n, dim, k, &mut rng);
    let init = Array2::from_shape_vec((k, dim), init).map_err(|e| e.to_string())?;
    let params = KMeans::params_with(k, Xoshiro256Plus::seed_from_u64(seed), L2Dist)
        .n_runs(1)
        .max_n_iterations(max_iterations)
        .tolerance((tolerance * mean_variance(x, dim)).sqrt() as f32)
        .init_method(KMeansInit::Precomputed(init))
        .check()
        .map_err(|e| e.to_string())?;
    let centroids = lloyd(x, dim, &params)?;
    let (assignment, distances): (Vec<usize>, Vec<f32>) =
        nearest(x, &centroids, dim).into_iter().unzip();
    let inertia = distances.iter().map(|&d| d as f64).sum::<f64>();
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
    use linfa::traits::{Fit, Predict};
    use linfa::DatasetBase;

    use super::*;

    #[test]
    fn nearest_equals_brute_force_with_ties_to_the_lower_index() {
        // Integer coordinates: every distance is exact, so ties are real ties. Centroid 5
        // repeats centroid 1 and centroid 13 repeats centroid 0.
        let dim = 7;
        let value = |i: usize| ((i * 7919 % 9) as f32) - 4.0;
        let points: Vec<f32> = (0..100 * dim).map(value).collect();
        let mut centroids: Vec<f32> = (0..13 * dim).map(|i| value(i * 3 + 1)).collect();
        centroids.copy_within(dim..2 * dim, 5 * dim);
        centroids.extend_from_within(..dim);
        let got = nearest(&points, &centroids, dim);
        for (i, p) in points.chunks(dim).enumerate() {
            let distances: Vec<f32> = centroids
                .chunks(dim)
                .map(|c| squared_distance(p, c))
                .collect();
            let best = distances.iter().copied().fold(f32::INFINITY, f32::min);
            let first = distances.iter().position(|&d| d == best).unwrap();
            assert_eq!(got[i], (first, best), "point {i}: {distances:?}");
        }
    }

    /// Five noisy blobs in 6 dimensions (a deterministic hash for the noise).
    fn blobs(n: usize) -> Vec<f32> {
        (0..n * 6)
            .map(|v| {
                let (i, j) = (v / 6, v % 6);
                let center = ((i % 5) * 3 + j) as f32 % 4.0 * 2.0;
                let noise = ((v as u64).wrapping_mul(2_654_435_761) % 1000) as f32 / 1000.0;
                center + 3.0 * (noise - 0.5)
            })
            .collect()
    }

    #[test]
    fn lloyd_ends_where_linfa_fit_ends() {
        let (n, dim, k) = (600, 6, 5);
        let x = blobs(n);
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let init = greedy_kmeans_plus_plus(&x, n, dim, k, &mut rng);
        let params = KMeans::params_with(k, Xoshiro256Plus::seed_from_u64(3), L2Dist)
            .max_n_iterations(50)
            .tolerance(1e-5)
            .init_method(KMeansInit::Precomputed(
                Array2::from_shape_vec((k, dim), init).unwrap(),
            ))
            .check()
            .unwrap();
        let ours = lloyd(&x, dim, &params).unwrap();
        let dataset = DatasetBase::from(Array2::from_shape_vec((n, dim), x.clone()).unwrap());
        let linfa = params.fit(&dataset).unwrap();
        let theirs: Vec<f32> = linfa.centroids().iter().copied().collect();
        for (a, b) in ours.iter().zip(&theirs) {
            assert!((a - b).abs() < 1e-4, "{ours:?}\nvs linfa\n{theirs:?}");
        }
        let assignment: Vec<usize> = nearest(&x, &ours, dim).into_iter().map(|t| t.0).collect();
        assert_eq!(assignment, linfa.predict(&dataset).to_vec());
        // Not just the initial centroids: the iterations moved them.
        assert!(ours
            .iter()
            .zip(params_init(&params))
            .any(|(a, b)| (a - b).abs() > 1e-3));
    }

    fn params_init(params: &Params) -> Vec<f32> {
        match params.init_method() {
            KMeansInit::Precomputed(c) => c.iter().copied().collect(),
            _ => unreachable!(),
        }
    }

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
