//! Golden tests against MMSA's own modules (`tests/data/zoo/mmsa_zoo_golden.py` writes the
//! fixtures with MMSA 2.2.1 and PyTorch): the same weights give the same outputs, the same
//! gradients of the L1 loss and the same parameters after three of MMSA's optimiser steps.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;

use candle_core::{Device, Tensor};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use super::*;
use crate::train::fit::Accumulator;
use crate::train::golden::{relative, stepped};
use crate::train::loss::{head_loss, LossWeights};
use crate::train::optim::{AdamW, AdamWConfig, Optimizer};
use crate::train::weights::read_checkpoint;
use serde_json::json;

use crate::train::zoo::settings::mmsa_training as recipe_of;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!("../tests/data/zoo/{name}"))
}

/// The fixture's tensors by prefix (`model.`, `input.`, `output.`, `grad.`, `after.`).
fn golden(model: &str, device: &Device) -> HashMap<String, Tensor> {
    read_checkpoint(&fixture(&format!("{model}.safetensors")), device)
        .unwrap()
        .0
}

/// MulT's settings in the fixture: 6 channels (the text's width), 2 heads, 2 levels.
const MULT: MultSettings = MultSettings {
    dim: 6,
    heads: 2,
    levels: 2,
    kernels: [3, 2, 3],
    attn_dropouts: [0.0; 3],
    relu_dropout: 0.0,
    embed_dropout: 0.0,
    res_dropout: 0.0,
    output_dropout: 0.0,
    text_dropout: 0.0,
    attn_mask: true,
};

/// Adam's ε in MulT's fixture, as large as the learning rate. Adam divides each element's step
/// by that element's own gradient size, which turns an absolute gradient error δ into a step
/// error of up to lr·δ/ε: with PyTorch's 1e-8, the f32 rounding of a gradient that is nearly
/// 0 — attention's key bias (a constant added to every score of a query, which softmax
/// ignores), a sum of ± terms that cancels — moves a weight by up to the learning rate in a
/// direction the rounding picks, in PyTorch as here. With ε = lr the step error stays below
/// the gradients' own (≈ 1e-5), and every gradient that carries signal still takes Adam's
/// normalised step.
const MULT_EPS: f64 = 1e-2;

/// MulT's trainer clips gradient values; the fixture's bound, small enough to bite.
const MULT_CLIP_VALUE: f64 = 0.05;

/// MFN's settings in the fixture: a memory of 5, its networks' hidden layers 4 and 3 wide.
const MFN: MfnSettings = MfnSettings {
    memory: 5,
    attention: MfnLayer {
        drop: 0.0,
        shapes: 4,
    },
    proposal: MfnLayer {
        drop: 0.0,
        shapes: 3,
    },
    gates: [
        MfnLayer {
            drop: 0.0,
            shapes: 4,
        },
        MfnLayer {
            drop: 0.0,
            shapes: 3,
        },
    ],
    out: MfnLayer {
        drop: 0.0,
        shapes: 5,
    },
};

/// The settings the fixtures were written with.
fn architecture(model: ZooModel) -> ZooArchitecture {
    let early = model == ZooModel::EfLstm;
    ZooArchitecture {
        model,
        settings: Resolved {
            hidden_dims: if early { [7; 3] } else { [7, 3, 4] },
            // LMF's is half the text LSTM's width.
            text_out: if model == ZooModel::Lmf { 3 } else { 5 },
            post_fusion_dim: 6,
            dropouts: [0.0; 4],
            rank: 3,
            num_layers: 2,
            dropout: 0.0,
            mult: MULT,
            mfn: MFN,
        },
        defaults_from: "mosi".into(),
        roles: [0, 1, 2],
        // EF-LSTM's and MFN's three are aligned sequences of the text's length; MulT's are
        // not.
        lengths: match model {
            ZooModel::EfLstm | ZooModel::Mfn => [5; 3],
            ZooModel::Mult => [5, 7, 6],
            _ => [5, 1, 1],
        },
    }
}

/// MMSA's trainer's optimiser for the fixtures: Adam at 0.01 (LMF's factors at 0.02).
fn mmsa_training(weight_decay: f64) -> MmsaTraining {
    MmsaTraining {
        batch_size: 6,
        learning_rate: 0.01,
        weight_decay,
        early_stop: 8,
        factor_lr: Some(0.02),
        clip_value: None,
        accumulate: 1,
        plateau_patience: None,
    }
}

fn check(model: ZooModel, weight_decay: f64, device: &Device) {
    let training = mmsa_training(weight_decay);
    let optimizer = AdamWConfig {
        optimizer: Optimizer::Adam,
        eps: if model == ZooModel::Mult {
            MULT_EPS
        } else {
            1e-8
        },
        ..AdamWConfig::new(training.learning_rate, weight_decay)
    };
    let tensors = golden(model.name(), device);
    let weights: HashMap<String, Tensor> = tensors
        .iter()
        .filter(|(k, _)| k.starts_with("model."))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let names: Vec<String> = weights.keys().cloned().collect();
    let mut store = ParamStore::from_checkpoint(weights, "golden", device);
    let net = ZooNet::build(&mut store, &architecture(model), [6, 5, 4], 1).unwrap();
    let input = |k: &str| tensors[&format!("input.{k}")].clone();
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let mut opt = AdamW::grouped(net.mmsa_groups(&store, &training), optimizer).unwrap();
    let clip = (model == ZooModel::Mult).then_some(MULT_CLIP_VALUE);
    let mut pending = Accumulator::new(1, clip);
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
                let Some(want) = tensors.get(&name.replacen("model.", "grad.", 1)) else {
                    // MulT's unused `proj_l`: no gradient in either.
                    assert!(grads.get(var).is_none(), "{name} has a gradient");
                    continue;
                };
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
        let grads = pending.add(grads, &opt).unwrap().expect("a step per batch");
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
fn lf_dnn_equals_mmsa(device: &Device) {
    check(ZooModel::LfDnn, 0.01, device);
}
test_device!(
    lf_dnn_equals_mmsa,
    lf_dnn_equals_mmsa_cpu,
    lf_dnn_equals_mmsa_cuda
);

/// TFN with MMSA's trainer's Adam (no weight decay; its two constants are not parameters).
fn tfn_equals_mmsa(device: &Device) {
    check(ZooModel::Tfn, 0.0, device);
}
test_device!(tfn_equals_mmsa, tfn_equals_mmsa_cpu, tfn_equals_mmsa_cuda);

/// LMF with MMSA's trainer's two parameter groups (factors at `factor_lr`, the sub-networks
/// at `learning_rate`, the fusion weights and bias untrained), weight decay in the gradient.
fn lmf_equals_mmsa(device: &Device) {
    check(ZooModel::Lmf, 0.005, device);
}
test_device!(lmf_equals_mmsa, lmf_equals_mmsa_cpu, lmf_equals_mmsa_cuda);

/// EF-LSTM (two layers over the aligned, concatenated sequences; batch norm per step) with
/// MMSA's trainer's Adam (weight decay in the gradient).
fn ef_lstm_equals_mmsa(device: &Device) {
    check(ZooModel::EfLstm, 0.005, device);
}
test_device!(
    ef_lstm_equals_mmsa,
    ef_lstm_equals_mmsa_cpu,
    ef_lstm_equals_mmsa_cuda
);

/// MulT (unaligned text, audio and video; the text unconvolved, audio and video convolved;
/// cross-modal and self-attention transformers with the future masked) with MMSA's trainer's
/// Adam (no weight decay) and its gradient values clipped before each step.
fn mult_equals_mmsa(device: &Device) {
    check(ZooModel::Mult, 0.0, device);
}
test_device!(
    mult_equals_mmsa,
    mult_equals_mmsa_cpu,
    mult_equals_mmsa_cuda
);

/// MFN (an LSTM cell per modality over the aligned, padded sequences, attention over the
/// window of cell states, the gated memory) with MMSA's trainer's Adam (weight decay in the
/// gradient).
fn mfn_equals_mmsa(device: &Device) {
    check(ZooModel::Mfn, 0.005, device);
}
test_device!(mfn_equals_mmsa, mfn_equals_mmsa_cpu, mfn_equals_mmsa_cuda);

/// mmflow's defaults and recipe are MMSA's `datasetParams` and `early_stop`
/// (`config_regression.json`, as the golden script copied them).
#[test]
fn defaults_are_mmsas() {
    let text = std::fs::read_to_string(fixture("mmsa_defaults.json")).unwrap();
    let json: serde_json::Value = serde_json::from_str(&text).unwrap();
    for model in ZooModel::ALL {
        for dataset in ["mosi", "mosei", "sims"] {
            let want = &json[model.name()][dataset];
            let got = MmsaSettings::default().resolve(model, dataset);
            let at = format!("{} {dataset}", model.name());
            if model == ZooModel::Mult {
                check_mult(&got.mult, want, &at);
                check_recipe(model, dataset, want);
                continue;
            }
            if model == ZooModel::Mfn {
                assert_eq!(json!(got.hidden_dims), want["hidden_dims"], "{at}");
                check_mfn(&got.mfn, want, &at);
                check_recipe(model, dataset, want);
                continue;
            }
            if model == ZooModel::EfLstm {
                // One LSTM: one width, its layers and one dropout.
                assert_eq!(json!(got.hidden_dims[0]), want["hidden_dims"], "{at}");
                assert_eq!(json!(got.num_layers), want["num_layers"], "{at}");
                let dropout = want["dropout"].as_f64().unwrap();
                assert!((f64::from(got.dropout) - dropout).abs() < 1e-6, "{at}");
                check_recipe(model, dataset, want);
                continue;
            }
            assert_eq!(json!(got.hidden_dims), want["hidden_dims"], "{at}");
            assert_eq!(got.num_layers, 0, "{at}");
            // What a model does not have is null in MMSA's config (LMF's text output is half
            // its text LSTM's width).
            let or = |key: &str, absent: usize| want[key].as_u64().map_or(absent, |v| v as usize);
            assert_eq!(got.text_out, or("text_out", got.hidden_dims[0] / 2), "{at}");
            assert_eq!(got.post_fusion_dim, or("post_fusion_dim", 0), "{at}");
            assert_eq!(got.rank, or("rank", 0), "{at}");
            let dropouts: Vec<f64> = got.dropouts.iter().map(|&d| d as f64).collect();
            let want_dropouts: Vec<f64> = want["dropouts"]
                .as_array()
                .unwrap()
                .iter()
                .map(|d| d.as_f64().unwrap())
                .collect();
            assert_eq!(dropouts.len(), want_dropouts.len(), "{at}");
            for (g, w) in dropouts.iter().zip(&want_dropouts) {
                assert!(
                    (g - w).abs() < 1e-6,
                    "{at}: {dropouts:?} vs {want_dropouts:?}"
                );
            }
            check_recipe(model, dataset, want);
        }
    }
}

/// MulT's settings are its config's (`want`).
fn check_mult(got: &MultSettings, want: &serde_json::Value, at: &str) {
    assert_eq!(
        json!([got.dim, got.heads]),
        want["dst_feature_dim_nheads"],
        "{at}"
    );
    assert_eq!(json!(got.levels), want["nlevels"], "{at}");
    for (i, letter) in ["l", "a", "v"].iter().enumerate() {
        let key = format!("conv1d_kernel_size_{letter}");
        assert_eq!(json!(got.kernels[i]), want[&key], "{at} {key}");
    }
    let dropouts = [
        ("attn_dropout", got.attn_dropouts[0]),
        ("attn_dropout_a", got.attn_dropouts[1]),
        ("attn_dropout_v", got.attn_dropouts[2]),
        ("relu_dropout", got.relu_dropout),
        ("embed_dropout", got.embed_dropout),
        ("res_dropout", got.res_dropout),
        ("output_dropout", got.output_dropout),
        ("text_dropout", got.text_dropout),
    ];
    for (key, value) in dropouts {
        let want = want[key].as_f64().unwrap();
        assert!((f64::from(value) - want).abs() < 1e-6, "{at} {key}");
    }
    assert_eq!(json!(got.attn_mask), want["attn_mask"], "{at}");
}

/// MFN's settings are its config's (`want`), with `windowsize` the 2 its code takes.
fn check_mfn(got: &MfnSettings, want: &serde_json::Value, at: &str) {
    assert_eq!(json!(got.memory), want["memsize"], "{at}");
    assert_eq!(want["windowsize"], json!(2), "{at}");
    let layers = [
        ("NN1Config", got.attention),
        ("NN2Config", got.proposal),
        ("gamma1Config", got.gates[0]),
        ("gamma2Config", got.gates[1]),
        ("outConfig", got.out),
    ];
    for (key, layer) in layers {
        assert_eq!(json!(layer.shapes), want[key]["shapes"], "{at} {key}");
        let drop = want[key]["drop"].as_f64().unwrap();
        assert!((f64::from(layer.drop) - drop).abs() < 1e-6, "{at} {key}");
    }
}

/// MMSA's trainer's settings of `model` on `dataset` are those of its config (`want`).
fn check_recipe(model: ZooModel, dataset: &str, want: &serde_json::Value) {
    let at = format!("{} {dataset}", model.name());
    let recipe = recipe_of(model, dataset);
    assert_eq!(json!(recipe.batch_size), want["batch_size"], "{at}");
    assert_eq!(json!(recipe.learning_rate), want["learning_rate"], "{at}");
    // TFN's trainer passes no weight decay (and its config has none); MulT's passes none
    // though its config has one.
    let decay = match model {
        ZooModel::Mult => 0.0,
        _ => want["weight_decay"].as_f64().unwrap_or(0.0),
    };
    assert_eq!(recipe.weight_decay, decay, "{at}");
    assert_eq!(recipe.clip_value, want["grad_clip"].as_f64(), "{at}");
    let accumulate = want["update_epochs"].as_u64().map_or(1, |n| n as usize);
    assert_eq!(recipe.accumulate, accumulate, "{at}");
    let patience = want["patience"].as_u64().map(|n| n as usize);
    assert_eq!(recipe.plateau_patience, patience, "{at}");
    assert_eq!(json!(recipe.early_stop), want["early_stop"], "{at}");
    assert_eq!(recipe.factor_lr, want["factor_lr"].as_f64(), "{at}");
}

/// A checkpoint's description that cannot be built is refused before anything is allocated:
/// roles outside the modalities or repeated, a padded length of 0 or an implausible text
/// length, a width of 0.
#[test]
fn descriptions_that_cannot_be_built_are_refused() {
    let modalities = ["text", "audio", "visual"];
    assert_eq!(architecture(ZooModel::Tfn).check(&modalities), Ok(()));
    let bad = |change: fn(&mut ZooArchitecture)| {
        let mut arch = architecture(ZooModel::Tfn);
        change(&mut arch);
        arch.check(&modalities).unwrap_err()
    };
    assert!(bad(|a| a.roles = [0, 1, 3]).contains("do not name three"));
    assert!(bad(|a| a.roles = [0, 1, 1]).contains("do not name three"));
    assert!(bad(|a| a.lengths = [5, 0, 1]).contains("at least 1"));
    assert!(bad(|a| a.lengths = [MAX_PADDED_LENGTH + 1, 1, 1]).contains("at most"));
    assert!(bad(|a| a.settings.post_fusion_dim = 0).contains("width, rank or layer count of 0"));
    let mut lmf = architecture(ZooModel::Lmf);
    lmf.settings.rank = 0;
    assert!(lmf.check(&modalities).is_err());
    let mut ef = architecture(ZooModel::EfLstm);
    assert_eq!(ef.check(&modalities), Ok(()));
    ef.lengths = [5, 5, 4];
    assert!(ef.check(&modalities).unwrap_err().contains("one length"));
    ef.lengths = [5; 3];
    ef.settings.num_layers = 0;
    assert!(ef.check(&modalities).is_err());
    ef.settings.num_layers = 10_000;
    assert!(ef.check(&modalities).is_err());
    let mut mult = architecture(ZooModel::Mult);
    assert_eq!(mult.check(&modalities), Ok(()));
    mult.lengths = [5, 1, 6];
    let why = mult.check(&modalities).unwrap_err();
    assert!(why.contains("audio sequence with a kernel of 2"), "{why}");
    mult.lengths = [5, 7, MAX_PADDED_LENGTH + 1];
    assert!(mult.check(&modalities).unwrap_err().contains("at most"));
    mult.lengths = [5, 7, 6];
    mult.settings.mult.heads = 4;
    assert!(mult
        .check(&modalities)
        .unwrap_err()
        .contains("multiple of the heads"));
    mult.settings.mult.heads = 2;
    mult.settings.mult.levels = 0;
    assert!(mult.check(&modalities).is_err());
    let mut mfn = architecture(ZooModel::Mfn);
    assert_eq!(mfn.check(&modalities), Ok(()));
    mfn.lengths = [5, 5, 4];
    assert!(mfn.check(&modalities).unwrap_err().contains("one length"));
    mfn.lengths = [5; 3];
    mfn.settings.mfn.gates[1].shapes = 0;
    assert!(mfn.check(&modalities).unwrap_err().contains("width"));
}

/// `hidden_dims` is one width for EF-LSTM and three for the others; a key of another model
/// is refused, naming the keys the model takes.
#[test]
fn settings_of_another_model_are_refused() {
    let key = mmflow_pipeline::KeyPath::default().key("mmsa");
    let messages = |settings: MmsaSettings, model| -> Vec<String> {
        settings
            .check(model, &key)
            .into_iter()
            .map(|p| format!("{}: {}", p.path, p.message))
            .collect()
    };
    let one = MmsaSettings {
        hidden_dims: Some(HiddenDims::One(64)),
        num_layers: Some(2),
        dropout: Some(0.3),
        ..MmsaSettings::default()
    };
    assert!(messages(one.clone(), ZooModel::EfLstm).is_empty());
    let refused = messages(one, ZooModel::Tfn).join("\n");
    assert!(refused.contains("takes three widths"), "{refused}");
    assert!(refused.contains("`tfn` has no `num_layers`"), "{refused}");
    assert!(refused.contains("`tfn` has no `dropout`"), "{refused}");
    let three = MmsaSettings {
        hidden_dims: Some(HiddenDims::PerModality([8, 4, 4])),
        dropouts: Some([0.1; 4]),
        ..MmsaSettings::default()
    };
    let refused = messages(three, ZooModel::EfLstm).join("\n");
    assert!(refused.contains("is one width"), "{refused}");
    assert!(refused.contains("`ef_lstm` has no `dropouts`"), "{refused}");
    let bad = MmsaSettings {
        num_layers: Some(0),
        dropout: Some(1.0),
        ..MmsaSettings::default()
    };
    let refused = messages(bad, ZooModel::EfLstm).join("\n");
    assert!(
        refused.contains("num_layers") && refused.contains("at least 1"),
        "{refused}"
    );
    assert!(refused.contains("must be in [0, 1)"), "{refused}");
    let mult = MmsaSettings {
        dst_feature_dim_nheads: Some([50, 7]),
        nlevels: Some(0),
        conv1d_kernel_size_a: Some(0),
        attn_dropout_v: Some(1.5),
        hidden_dims: Some(HiddenDims::PerModality([8, 4, 4])),
        ..MmsaSettings::default()
    };
    let refused = messages(mult.clone(), ZooModel::Mult).join("\n");
    for want in [
        "dst_feature_dim_nheads: 50 channels and 7 heads",
        "nlevels: must be at least 1",
        "conv1d_kernel_size_a: must be at least 1",
        "attn_dropout_v: must be in [0, 1)",
        "`mult` has no `hidden_dims`",
    ] {
        assert!(refused.contains(want), "{want}: {refused}");
    }
    let refused = messages(mult, ZooModel::Tfn).join("\n");
    assert!(refused.contains("`tfn` has no `nlevels`"), "{refused}");
    let mfn = MmsaSettings {
        memsize: Some(0),
        windowsize: Some(3),
        gamma1_config: Some(MfnLayer {
            drop: 1.0,
            shapes: 0,
        }),
        rank: Some(4),
        ..MmsaSettings::default()
    };
    let refused = messages(mfn.clone(), ZooModel::Mfn).join("\n");
    for want in [
        "memsize: must be at least 1",
        "windowsize: 3: MMSA's MFN reads the cell states before and after each step",
        "gamma1Config: `shapes` must be at least 1",
        "gamma1Config: `drop` must be in [0, 1)",
        "`mfn` has no `rank`",
    ] {
        assert!(refused.contains(want), "{want}: {refused}");
    }
    let refused = messages(mfn, ZooModel::Lmf).join("\n");
    assert!(refused.contains("`lmf` has no `gamma1Config`"), "{refused}");
}
