//! Target selection on MOSEI-sized data: k-means (linfa, sped up) at k = 16 and 64 on a
//! 22856 × 300 matching space, and cosine top-1 of 2199 sources against it.
//!
//!     cargo bench --bench targets
//!     python benches/targets_sklearn.py     # scikit-learn and numpy on the same data, ratios
//!
//! Both sides generate the same values (`value` below: 40 latent clusters plus uniform noise
//! from an integer hash), so they cluster and search the same points. Inertias are written to
//! `<target dir>/bench-targets.json` for the comparison script.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use mmflow_stages::dot_search::{top_k, Queries};
use mmflow_stages::linalg::normalize_rows;
use mmflow_stages::targets::kmeans;

const DIM: usize = 300;

fn hash01(v: u64) -> f64 {
    (v.wrapping_mul(2654435761) % (1 << 32)) as f64 / (1u64 << 32) as f64
}

/// Row `i`, feature `j` of the point set (`salt` separates the sources from the targets).
fn value(i: u64, j: u64, salt: u64) -> f32 {
    let cluster = (i * 7 + salt) % 40;
    let center = (hash01(cluster * 1_000_003 + j) - 0.5) * 4.0;
    let noise = hash01(salt * 10_000_000_000 + i * DIM as u64 + j + 7) - 0.5;
    (center + 2.0 * noise) as f32
}

fn points(n: usize, salt: u64) -> Vec<f32> {
    (0..n as u64)
        .flat_map(|i| (0..DIM as u64).map(move |j| value(i, j, salt)))
        .collect()
}

fn bench(c: &mut Criterion) {
    let targets = points(22856, 0);
    let sources = points(2199, 1);
    let mut inertias = serde_json::Map::new();
    let mut group = c.benchmark_group("targets");
    group.sample_size(10);
    for k in [16usize, 64] {
        // k-means++ is random: the mean inertia over five seeds (the script does the same).
        let inertia = (0..5)
            .map(|s| {
                kmeans::fit(&targets, DIM, k, 100, 1e-4, s)
                    .expect("k-means fits")
                    .inertia
            })
            .sum::<f64>()
            / 5.0;
        inertias.insert(format!("kmeans_k{k}"), inertia.into());
        group.bench_with_input(BenchmarkId::new("kmeans", k), &k, |b, &k| {
            b.iter(|| kmeans::fit(&targets, DIM, k, 100, 1e-4, 0))
        });
    }
    group.bench_function("cosine_top1", |b| {
        b.iter(|| {
            let (mut q, mut t) = (sources.clone(), targets.clone());
            normalize_rows(&mut q, DIM);
            normalize_rows(&mut t, DIM);
            top_k(&Queries::new(&q, DIM), &t, &[], 1)
        })
    });
    group.finish();
    let dir = std::env::var("CARGO_TARGET_DIR").unwrap_or_else(|_| "target".into());
    let _ = std::fs::write(
        format!("{dir}/bench-targets.json"),
        serde_json::Value::Object(inertias).to_string(),
    );
}

criterion_group!(benches, bench);
criterion_main!(benches);
