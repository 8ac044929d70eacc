//! `normalize` fit: per-feature moments of MOSEI-sized matrices.
//!
//!     cargo bench --bench normalize
//!     python benches/normalize_numpy.py      # numpy on the same data, and the ratio
//!
//! Both sides generate the same values with the same integer hash (see `value`), including
//! a -inf every 997 values, so they do the same work.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use mmflow_stages::moments::Moments;

/// The i-th value: a multiplicative hash mapped to [-5, 5), -inf every 997th.
fn value(i: u64) -> f32 {
    if i.is_multiple_of(997) {
        return f32::NEG_INFINITY;
    }
    let h = i.wrapping_mul(2654435761) % (1 << 32);
    (h as f64 / (1u64 << 32) as f64 * 10.0 - 5.0) as f32
}

fn matrix(rows: usize, cols: usize) -> Vec<f32> {
    (0..(rows * cols) as u64).map(value).collect()
}

fn fit(c: &mut Criterion) {
    let mut group = c.benchmark_group("normalize_fit");
    group.sample_size(10);
    for (rows, cols) in [(22856usize, 713usize), (1_600_000, 74)] {
        let data = matrix(rows, cols);
        group.bench_with_input(
            BenchmarkId::from_parameter(format!("{rows}x{cols}")),
            &data,
            |b, data| b.iter(|| Moments::of_rows(data, cols)),
        );
    }
    group.finish();
}

criterion_group!(benches, fit);
criterion_main!(benches);
