//! Golden tests against MMSA's own modules (`tests/data/zoo/mmsa_zoo_golden.py` writes the
//! fixtures with MMSA 2.2.1 and PyTorch): the same weights give the same outputs, the same
//! gradients of the L1 loss and the same parameters after three of MMSA's optimiser steps.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;

use candle_core::{Device, Tensor};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use super::*;
use crate::train::loss::{head_loss, LossWeights};
use crate::train::optim::{AdamW, AdamWConfig, Optimizer};
use crate::train::weights::read_checkpoint;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!("../tests/data/zoo/{name}"))
}

/// The fixture's tensors by prefix (`model.`, `input.`, `output.`, `grad.`, `after.`).
fn golden(model: &str) -> HashMap<String, Tensor> {
    read_checkpoint(&fixture(&format!("{model}.safetensors")), &Device::Cpu)
        .unwrap()
        .0
}

/// The settings the fixtures were written with.
fn architecture(model: ZooModel) -> ZooArchitecture {
    ZooArchitecture {
        model,
        settings: Resolved {
            hidden_dims: [7, 3, 4],
            text_out: 5,
            post_fusion_dim: 6,
            dropouts: [0.0; 4],
        },
        defaults_from: "mosi".into(),
        roles: [0, 1, 2],
        lengths: [5, 1, 1],
    }
}

/// The largest difference relative to the reference's largest magnitude, or to `floor` where
/// that is smaller.
fn relative_to(got: &Tensor, want: &Tensor, floor: f32) -> f32 {
    let got: Vec<f32> = got.flatten_all().unwrap().to_vec1().unwrap();
    let want: Vec<f32> = want.flatten_all().unwrap().to_vec1().unwrap();
    assert_eq!(got.len(), want.len());
    let scale = want.iter().fold(floor, |m, x| m.max(x.abs()));
    got.iter()
        .zip(&want)
        .map(|(a, b)| (a - b).abs() / scale)
        .fold(0.0, f32::max)
}

/// Outputs and gradients: relative to the reference's largest magnitude.
fn relative(got: &Tensor, want: &Tensor) -> f32 {
    relative_to(got, want, 1e-12)
}

/// Weights after the steps: relative to their largest magnitude or 1, whichever is larger (a
/// bias that starts at 0 and took three steps of 0.01 is compared absolutely: Adam divides
/// each step by the gradient's own size, so f32 rounding of a gradient near 0 becomes a
/// visible fraction of so small a value).
fn stepped(got: &Tensor, want: &Tensor) -> f32 {
    relative_to(got, want, 1.0)
}

fn check(model: ZooModel, optimizer: AdamWConfig) {
    let tensors = golden(model.name());
    let weights: HashMap<String, Tensor> = tensors
        .iter()
        .filter(|(k, _)| k.starts_with("model."))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let names: Vec<String> = weights.keys().cloned().collect();
    let mut store = ParamStore::from_checkpoint(weights, "golden", &Device::Cpu);
    let net = ZooNet::build(&mut store, &architecture(model), [6, 5, 4], 1).unwrap();
    let input = |k: &str| tensors[&format!("input.{k}")].clone();
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let mut opt = AdamW::new(store.vars(), optimizer).unwrap();
    let vars: BTreeMap<String, candle_core::Var> = store.named_vars().into_iter().collect();
    let l1 = LossWeights {
        mse: 0.0,
        mae: 1.0,
        ..LossWeights::default()
    };
    for step in 0..3 {
        let mut pass = Pass {
            train: true,
            rng: &mut rng,
        };
        let out = net
            .forward(&input("text"), &input("audio"), &input("video"), &mut pass)
            .unwrap()
            .squeeze(1)
            .unwrap();
        let loss = head_loss(&out, &input("label"), &l1).unwrap();
        let grads = loss.backward().unwrap();
        if step == 0 {
            let worst = relative(&out, &tensors["output.train"]);
            assert!(worst <= 1e-5, "{}: output differs by {worst}", model.name());
            for (name, var) in &vars {
                let want = &tensors[&name.replacen("model.", "grad.", 1)];
                let got = grads
                    .get(var)
                    .unwrap_or_else(|| panic!("no gradient of {name}"));
                let worst = relative(got, want);
                assert!(
                    worst <= 1e-4,
                    "{}: d {name} differs by {worst}",
                    model.name()
                );
            }
        }
        opt.step(grads, None).unwrap();
    }
    let after = store.snapshot().unwrap();
    assert_eq!(
        after.len(),
        names.len(),
        "every weight and statistic is the model's"
    );
    for (name, value) in &after {
        let worst = stepped(value, &tensors[&name.replacen("model.", "after.", 1)]);
        assert!(
            worst <= 1e-5,
            "{}: {name} after 3 steps differs by {worst}",
            model.name()
        );
    }
    let mut pass = Pass {
        train: false,
        rng: &mut rng,
    };
    let eval = net
        .forward(&input("text"), &input("audio"), &input("video"), &mut pass)
        .unwrap()
        .squeeze(1)
        .unwrap();
    let worst = stepped(&eval, &tensors["output.eval_after"]);
    assert!(
        worst <= 1e-5,
        "{}: eval output differs by {worst}",
        model.name()
    );
}

/// LF-DNN with MMSA's trainer's Adam (weight decay added to the gradient).
#[test]
fn lf_dnn_equals_mmsa() {
    check(
        ZooModel::LfDnn,
        AdamWConfig {
            optimizer: Optimizer::Adam,
            ..AdamWConfig::new(0.01, 0.01)
        },
    );
}

/// TFN with MMSA's trainer's Adam (no weight decay; its two constants are not parameters).
#[test]
fn tfn_equals_mmsa() {
    check(
        ZooModel::Tfn,
        AdamWConfig {
            optimizer: Optimizer::Adam,
            ..AdamWConfig::new(0.01, 0.0)
        },
    );
}

/// mmflow's defaults and recipe are MMSA's `datasetParams` (`config_regression.json`, as the golden
/// script copied them).
#[test]
fn defaults_are_mmsas() {
    let text = std::fs::read_to_string(fixture("mmsa_defaults.json")).unwrap();
    let json: serde_json::Value = serde_json::from_str(&text).unwrap();
    for model in [ZooModel::LfDnn, ZooModel::Tfn] {
        for dataset in ["mosi", "mosei", "sims"] {
            let want = &json[model.name()][dataset];
            let got = MmsaSettings::default().resolve(model, dataset);
            let at = format!("{} {dataset}", model.name());
            assert_eq!(
                serde_json::json!(got.hidden_dims),
                want["hidden_dims"],
                "{at}"
            );
            assert_eq!(
                got.text_out,
                want["text_out"].as_u64().unwrap() as usize,
                "{at}"
            );
            assert_eq!(
                got.post_fusion_dim,
                want["post_fusion_dim"].as_u64().unwrap() as usize,
                "{at}"
            );
            let dropouts: Vec<f64> = got.dropouts.iter().map(|&d| d as f64).collect();
            let want_dropouts: Vec<f64> = want["dropouts"]
                .as_array()
                .unwrap()
                .iter()
                .map(|d| d.as_f64().unwrap())
                .collect();
            for (g, w) in dropouts.iter().zip(&want_dropouts) {
                assert!(
                    (g - w).abs() < 1e-6,
                    "{at}: dropouts {dropouts:?} vs {want_dropouts:?}"
                );
            }
        }
    }
}
