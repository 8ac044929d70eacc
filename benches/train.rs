//! Training throughput (samples/s) of the architectures the transfer and valence/arousal
//! studies train, against PyTorch on the same shapes and thread count:
//!
//! - the visual adapter MLP 65 → 256 → 512 → 1024 → 713, batch 64, AdamW, MSE;
//! - the LSTM fusion model: three LSTMs (300-, 74- and 713-d inputs, 50 steps, hidden 128),
//!   concatenation, a linear head, batch 32, AdamW, MSE;
//! - the valence/arousal model as `configs/valence_arousal.toml` trains it: an LSTM (hidden
//!   192) over 300-d word vectors of sequences padded to 50 words (true lengths as the
//!   synthetic `valence_arousal` profile draws them: median 40), a 32-d embedding of 137
//!   users, dropout 0.3, a 64-unit ReLU layer, valence and arousal heads with their CCC/MSE
//!   loss mixes, batch 32, AdamW, gradient norm clipped to 1.
//!
//! ```sh
//! RAYON_NUM_THREADS=2 cargo bench --bench train
//! python benches/train_torch.py --threads 2    # PyTorch, and the ratios
//! ```
//!
//! Both sides use the same number of threads: candle and mmflow's kernels run on rayon's pool
//! (`RAYON_NUM_THREADS`, default: every core), PyTorch on `torch.set_num_threads`.
//!
//! Each measurement is 20 optimiser steps on random data; results go to
//! `<target dir>/bench-train.json` for the comparison script. On a GPU (a build with
//! `--features cuda`): `MMFLOW_BENCH_DEVICE=cuda cargo bench --features cuda --bench train`,
//! then `python benches/train_torch.py --device cuda`.

use std::time::Instant;

use candle_core::{Device, Tensor};
use criterion::{criterion_group, criterion_main, Criterion};
use mmflow_pipeline::DeviceChoice;
use mmflow_stages::metrics::Predicts;
use mmflow_stages::train::device::{open as open_device, resolve as resolve_device};
use mmflow_stages::train::loss::{head_loss, LossWeights};
use mmflow_stages::train::model::{
    Architecture, EncoderConfig, EncoderKind, Fusion, Head, Input, Inputs, Model,
};
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
            // Through mmflow's resolver, which finds and loads the CUDA libraries first.
            "cuda" => resolve_device(DeviceChoice::Cuda)
                .and_then(|gpu| open_device(gpu).map_err(|e| e.to_string()))
                .unwrap_or_else(|why| panic!("MMFLOW_BENCH_DEVICE=cuda: {why}")),
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
            .map(|(l, x)| l.forward(x, &lengths, true).unwrap())
            .collect();
        let p = head.forward(&Tensor::cat(&encoded, 1).unwrap()).unwrap();
        let loss = (p - &y).unwrap().sqr().unwrap().mean_all().unwrap();
        let grads = loss.backward().unwrap();
        opt.step(grads, None).unwrap();
    }
    throughput(STEPS, 32, start)
}

/// True lengths of the 32 texts of a batch, drawn once (numpy, seed 0) from the synthetic
/// `valence_arousal` profile's distribution: log-normal around 40 words, spread 0.4, at most
/// 50. The same list is in `train_torch.py`.
const VA_LENGTHS: [usize; 32] = [
    42, 38, 50, 42, 32, 46, 50, 50, 30, 24, 31, 41, 16, 37, 24, 30, 32, 35, 47, 50, 38, 50, 31, 46,
    50, 42, 30, 28, 33, 44, 27, 37,
];

fn valence_arousal_steps() -> f64 {
    let mut store = ParamStore::new(0, &device());
    let dimension = |label: &str| Head {
        label: label.into(),
        predicts: Predicts::Dimension,
    };
    let arch = Architecture {
        modalities: vec![("text".into(), 300)],
        encoders: [(
            "text".to_string(),
            EncoderConfig {
                kind: EncoderKind::Lstm,
                hidden: 192,
                bidirectional: false,
                mlp: MlpConfig {
                    hidden: vec![],
                    ..MlpConfig::default()
                },
            },
        )]
        .into(),
        fusion: Fusion::Concat,
        fusion_dim: 0,
        fusion_mlp: MlpConfig {
            hidden: vec![64],
            ..MlpConfig::default()
        },
        user_embedding: 32,
        users: (0..137).map(|u| format!("user{u}")).collect(),
        heads: vec![dimension("valence"), dimension("arousal")],
        dropout: 0.3,
        zoo: None,
        text: None,
    };
    let model = Model::build(&mut store, &arch, None).unwrap();
    let weights = [(0.5, 0.5), (0.75, 0.25)].map(|(ccc, mse)| LossWeights {
        ccc,
        mse,
        ..LossWeights::default()
    });
    let mut opt = AdamW::new(store.vars(), AdamWConfig::new(1e-3, 1e-4)).unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let batch = VA_LENGTHS.len();
    let mut x = random(&[batch, 50, 300], &mut rng);
    // Padding is zeros, as in a real batch.
    let mask: Vec<f32> = VA_LENGTHS
        .iter()
        .flat_map(|&l| (0..50).map(move |s| if s < l { 1.0 } else { 0.0 }))
        .collect();
    x = x
        .broadcast_mul(&Tensor::from_vec(mask, (batch, 50, 1), &device()).unwrap())
        .unwrap();
    let users: Vec<u32> = (0..batch as u32).map(|i| (i * 7) % 138).collect();
    let users = Tensor::from_vec(users, batch, &device()).unwrap();
    let labels = [random(&[batch], &mut rng), random(&[batch], &mut rng)];
    let start = Instant::now();
    for _ in 0..STEPS {
        let inputs = Inputs {
            text: None,
            modalities: vec![Input::Sequence(x.clone(), VA_LENGTHS.to_vec())],
        };
        let mut pass = Pass {
            train: true,
            rng: &mut rng,
        };
        let outputs = model.forward(&inputs, Some(&users), &mut pass).unwrap();
        let mut loss = head_loss(&outputs[0], &labels[0], &weights[0]).unwrap();
        loss = (loss + head_loss(&outputs[1], &labels[1], &weights[1]).unwrap()).unwrap();
        let grads = loss.backward().unwrap();
        opt.step(grads, Some(1.0)).unwrap();
    }
    throughput(STEPS, batch, start)
}

fn bench(c: &mut Criterion) {
    // As the `mmflow` binary runs them.
    mmflow_stages::run_elementwise_ops_inline();
    let mut group = c.benchmark_group("train");
    group.sample_size(10);
    group.bench_function("adapter_mlp_20_steps", |b| b.iter(adapter_steps));
    group.bench_function("lstm_fusion_20_steps", |b| b.iter(lstm_steps));
    group.bench_function("valence_arousal_20_steps", |b| {
        b.iter(valence_arousal_steps)
    });
    group.finish();
    // Samples/s, best of three, for the comparison script.
    let best = |f: fn() -> f64| (0..3).map(|_| f()).fold(0.0, f64::max);
    let json = serde_json::json!({
        "device": device_name(),
        "threads": candle_core::utils::get_num_threads(),
        "adapter_mlp": best(adapter_steps),
        "lstm_fusion": best(lstm_steps),
        "valence_arousal": best(valence_arousal_steps)
    });
    let dir = std::env::var("CARGO_TARGET_DIR").unwrap_or_else(|_| "target".into());
    let _ = std::fs::write(format!("{dir}/bench-train.json"), json.to_string());
    println!("samples/s: {json}");
}

criterion_group!(benches, bench);
criterion_main!(benches);
