//! Training throughput (samples/s) of the two architectures the transfer and valence/arousal
//! studies train, against PyTorch on the same shapes and thread count:
//!
//! - the visual adapter MLP 65 → 256 → 512 → 1024 → 713, batch 64, AdamW, MSE;
//! - the LSTM fusion model: three LSTMs (300-, 74- and 713-d inputs, 50 steps, hidden 128),
//!   concatenation, a linear head, batch 32, AdamW, MSE.
//!
//! ```sh
//! cargo bench --bench train
//! python benches/train_torch.py        # PyTorch, and the ratios
//! ```
//!
//! Each measurement is 20 optimiser steps on random data; results go to
//! `<target dir>/bench-train.json` for the comparison script. On a GPU (a build with
//! `--features cuda`): `MMFLOW_BENCH_DEVICE=cuda cargo bench --features cuda --bench train`,
//! then `python benches/train_torch.py --device cuda`.

use std::time::Instant;

use candle_core::{Device, Tensor};
use criterion::{criterion_group, criterion_main, Criterion};
use mmflow_stages::train::nn::{Linear, Lstm, Mlp, MlpConfig, Pass};
use mmflow_stages::train::optim::{AdamW, AdamWConfig};
use mmflow_stages::train::weights::ParamStore;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

const STEPS: usize = 20;

// The allocator the `mmflow` binary uses.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `MMFLOW_BENCH_DEVICE`: `cpu` (default) or `cuda`.
fn device_name() -> String {
    std::env::var("MMFLOW_BENCH_DEVICE").unwrap_or_else(|_| "cpu".into())
}

/// One device for the whole bench (every tensor must be on the same one).
fn device() -> Device {
    static DEVICE: std::sync::OnceLock<Device> = std::sync::OnceLock::new();
    DEVICE
        .get_or_init(|| match device_name().as_str() {
            "cpu" => Device::Cpu,
            "cuda" => Device::new_cuda(0).expect("MMFLOW_BENCH_DEVICE=cuda: a CUDA device"),
            other => panic!("MMFLOW_BENCH_DEVICE={other}: expected cpu or cuda"),
        })
        .clone()
}

fn random(shape: &[usize], rng: &mut ChaCha8Rng) -> Tensor {
    let n: usize = shape.iter().product();
    let v: Vec<f32> = (0..n).map(|_| rng.random::<f32>() - 0.5).collect();
    Tensor::from_vec(v, shape, &device()).unwrap()
}

/// Samples/s of `steps` steps of `batch` rows started at `start`, once the device is done.
fn throughput(steps: usize, batch: usize, start: Instant) -> f64 {
    device().synchronize().unwrap();
    (steps * batch) as f64 / start.elapsed().as_secs_f64()
}

fn adapter_steps() -> f64 {
    let mut store = ParamStore::new(0, &device());
    let config = MlpConfig {
        hidden: vec![256, 512, 1024],
        dropout: 0.0,
        ..MlpConfig::default()
    };
    let mlp = Mlp::new(&mut store, "a", 65, &config, Some(713)).unwrap();
    let mut opt = AdamW::new(store.vars(), AdamWConfig::new(1e-3, 1e-4)).unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let (x, y) = (random(&[64, 65], &mut rng), random(&[64, 713], &mut rng));
    let start = Instant::now();
    for _ in 0..STEPS {
        let p = mlp
            .forward(
                &x,
                &mut Pass {
                    train: true,
                    rng: &mut rng,
                },
            )
            .unwrap();
        let loss = (p - &y).unwrap().sqr().unwrap().mean_all().unwrap();
        let grads = loss.backward().unwrap();
        opt.step(grads, None).unwrap();
    }
    throughput(STEPS, 64, start)
}

fn lstm_steps() -> f64 {
    let mut store = ParamStore::new(0, &device());
    let dims = [300, 74, 713];
    let lstms: Vec<Lstm> = dims
        .iter()
        .enumerate()
        .map(|(i, &d)| Lstm::new(&mut store, &format!("l{i}"), d, 128, false).unwrap())
        .collect();
    let head = Linear::new(&mut store, "head", 3 * 128, 1).unwrap();
    let mut opt = AdamW::new(store.vars(), AdamWConfig::new(1e-3, 1e-4)).unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let xs: Vec<Tensor> = dims
        .iter()
        .map(|&d| random(&[32, 50, d], &mut rng))
        .collect();
    let y = random(&[32, 1], &mut rng);
    let lengths = vec![50; 32];
    let start = Instant::now();
    for _ in 0..STEPS {
        let encoded: Vec<Tensor> = lstms
            .iter()
            .zip(&xs)
            .map(|(l, x)| l.forward(x, &lengths).unwrap())
            .collect();
        let p = head.forward(&Tensor::cat(&encoded, 1).unwrap()).unwrap();
        let loss = (p - &y).unwrap().sqr().unwrap().mean_all().unwrap();
        let grads = loss.backward().unwrap();
        opt.step(grads, None).unwrap();
    }
    throughput(STEPS, 32, start)
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("train");
    group.sample_size(10);
    group.bench_function("adapter_mlp_20_steps", |b| b.iter(adapter_steps));
    group.bench_function("lstm_fusion_20_steps", |b| b.iter(lstm_steps));
    group.finish();
    // Samples/s, best of three, for the comparison script.
    let best = |f: fn() -> f64| (0..3).map(|_| f()).fold(0.0, f64::max);
    let json = serde_json::json!({
        "device": device_name(),
        "adapter_mlp": best(adapter_steps),
        "lstm_fusion": best(lstm_steps)
    });
    let dir = std::env::var("CARGO_TARGET_DIR").unwrap_or_else(|_| "target".into());
    let _ = std::fs::write(format!("{dir}/bench-train.json"), json.to_string());
    println!("samples/s: {json}");
}

criterion_group!(benches, bench);
criterion_main!(benches);
