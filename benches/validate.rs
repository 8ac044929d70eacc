//! Loading and validating pipeline files of hostile shapes at the size cap (a file of at most
//! 1 MiB, templates of at most 10,000 stages): rings and chains of template instances, a
//! problem in every entry, matrices and labels too large to build, deep nesting (the shapes:
//! `tests/hostile/shapes.rs`, where a test checks what each is told). The goal: every one
//! within a second.
//!
//! ```sh
//! cargo bench --bench validate
//! ```

#[path = "../tests/hostile/shapes.rs"]
mod shapes;

use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};

fn load(c: &mut Criterion) {
    let registry = mmflow_stages::registry();
    let dir = tempfile::tempdir().expect("a temporary folder");
    let mut group = c.benchmark_group("validate");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    for (i, (name, text)) in shapes::all().into_iter().enumerate() {
        let path = dir.path().join(format!("shape{i}.toml"));
        std::fs::write(&path, text).expect("the shape is written");
        group.bench_with_input(BenchmarkId::from_parameter(name), &path, |b, path| {
            b.iter(|| mmflow_pipeline::load(path, &[], &registry))
        });
    }
    group.finish();
}

criterion_group!(benches, load);
criterion_main!(benches);
