//! MMSA's architectures (`architecture = "lf_dnn"`, `"tfn"`, `"lmf"`, `"ef_lstm"`, `"mult"`,
//! `"mfn"`) through the binary: they train,
//! evaluate with the field's metrics, reproduce byte for byte, read MMSA pickles, and misuse
//! is refused at `validate`. Their equality with MMSA's modules is tested in
//! `stages/src/train/zoo/tests.rs`.

use mmflow_schemas::evaluation::{read_metrics, read_predictions};
use mmflow_schemas::history;
use mmflow_schemas::Split;

use crate::util::Dir;

const ZOO: &str = r#"
[stages.mosei]
kind = "synthetic"
seed = 1
params = { profile = "mosei", scale = 0.04 }

[stages.norm]
kind = "normalize"
inputs = { segments = "mosei.segments", features = ["mosei.text", "mosei.audio", "mosei.visual"] }
params = { nonfinite = "zero" }

[stages.model]
kind = "train_model"
inputs = { segments = "mosei.segments", features = ["norm.text", "norm.audio", "norm.visual"] }
[stages.model.params]
architecture = "ARCH"
mmsa = { hidden_dims = [16, 8, 8], text_out = 8, post_fusion_dim = 16 }
heads = { sentiment = { mse = 0.0, mae = 1.0 } }
optim = { optimizer = "adam", epochs = 6, batch_size = 32, learning_rate = 0.003, weight_decay = 0.001 }

[stages.eval]
kind = "evaluate"
inputs = { model = "model.model", segments = "mosei.segments", features = ["norm.text", "norm.audio", "norm.visual"] }
params = { bootstrap = 100 }
"#;

#[test]
fn mmsa_architectures_learn_evaluate_and_reproduce() {
    for arch in ["lf_dnn", "tfn", "lmf", "ef_lstm", "mult", "mfn"] {
        let dir = Dir::new();
        let config = ZOO.replace("ARCH", arch);
        let config = match arch {
            "lmf" => config.replace("text_out = 8, post_fusion_dim = 16", "rank = 4"),
            // The synthetic modalities are word-aligned: EF-LSTM takes them.
            "ef_lstm" => config.replace(
                "hidden_dims = [16, 8, 8], text_out = 8, post_fusion_dim = 16",
                "hidden_dims = 16, num_layers = 2, dropout = 0.1",
            ),
            // Small, and with the dropouts MMSA's MOSI settings give it.
            "mult" => config.replace(
                "hidden_dims = [16, 8, 8], text_out = 8, post_fusion_dim = 16",
                "dst_feature_dim_nheads = [8, 2], nlevels = 1, conv1d_kernel_size_l = 3, conv1d_kernel_size_a = 1, conv1d_kernel_size_v = 1",
            ),
            // Aligned as EF-LSTM; small, with MMSA's MOSI dropouts, and a larger step (its
            // cells cross the padded steps slowly at 0.003).
            "mfn" => config
                .replace(
                    "text_out = 8, post_fusion_dim = 16",
                    "memsize = 16, NN1Config = { drop = 0.2, shapes = 8 }, gamma1Config = { drop = 0.7, shapes = 16 }, gamma2Config = { drop = 0.5, shapes = 8 }, outConfig = { drop = 0.0, shapes = 16 }",
                )
                .replace("learning_rate = 0.003", "learning_rate = 0.01"),
            _ => config,
        };
        dir.write("p.toml", &config);
        dir.mmflow(&["run", "p.toml"]).ok();
        let run = dir.join("data/runs/p");
        let hist = history::read(&run.join("model/history.parquet")).unwrap();
        let valid_loss = |best: bool| {
            hist.iter()
                .find(|r| {
                    r.subject == "total"
                        && r.metric == "loss"
                        && (if best { r.is_best } else { r.epoch == 1 })
                })
                .and_then(|r| r.valid)
                .unwrap()
        };
        assert!(
            valid_loss(true) < valid_loss(false),
            "{arch}: the validation loss falls"
        );
        let metrics = read_metrics(&run.join("eval/metrics.parquet")).unwrap();
        let corr = metrics
            .iter()
            .find(|m| m.split == Split::Test && m.head == "sentiment" && m.metric == "Corr")
            .unwrap();
        assert!(
            corr.ci_low.unwrap() > 0.1,
            "{arch}: test correlation above chance: {corr:?}"
        );
        let predictions = read_predictions(&run.join("eval/predictions.parquet")).unwrap();
        assert!(predictions.iter().all(|p| p.prediction.is_finite()));
        if arch == "tfn" {
            assert!(
                predictions.iter().all(|p| p.prediction.abs() < 3.0),
                "TFN's outputs lie in (-3, 3)"
            );
        }
        dir.mmflow(&["run", "p.toml", "--out", "again"]).ok();
        for table in ["model/model.safetensors", "eval/predictions.parquet"] {
            let a = std::fs::read(run.join(table)).unwrap();
            let b = std::fs::read(dir.join(&format!("again/{table}"))).unwrap();
            assert!(a == b, "{arch}: {table} differs between identical runs");
        }
    }
}

/// A pipeline reading the MMSA pickle `pickle` (its lengths used or not), training `model`
/// (the `train_model` params, inline) and evaluating it.
fn pickle_pipeline(pickle: &std::path::Path, use_lengths: bool, model: &str) -> String {
    format!(
        r#"
[stages.mosi]
kind = "mmsa_pickle"
[stages.mosi.params]
path = "{}"
dataset = "mosi"
modalities = {{ text = "text", audio = "audio", visual = "vision" }}
labels = {{ sentiment = "regression_labels" }}
nonfinite = {{ audio = "zero" }}
use_lengths = {use_lengths}

[stages.model]
kind = "train_model"
inputs = {{ segments = "mosi.segments", features = ["mosi.text", "mosi.audio", "mosi.visual"] }}
params = {model}

[stages.eval]
kind = "evaluate"
inputs = {{ model = "model.model", segments = "mosi.segments", features = ["mosi.text", "mosi.audio", "mosi.visual"] }}
"#,
        pickle.display()
    )
}

#[test]
fn mmsa_architectures_train_on_mmsa_pickles_aligned_and_unaligned() {
    let dir = Dir::new();
    let data = crate::sources::fixtures();
    for (pickle, use_lengths) in [
        (data.join("sdk_basic/mmsa_mosi_aligned_50.pkl"), false),
        (data.join("../mmsa/mmsa_unaligned.pkl"), true),
    ] {
        dir.write(
            "p.toml",
            &pickle_pipeline(
                &pickle,
                use_lengths,
                r#"{ architecture = "tfn", recipe = "mmsa", optim = { epochs = 2 } }"#,
            ),
        );
        let out = format!("run_{use_lengths}");
        dir.mmflow(&["run", "p.toml", "--out", &out]).ok();
        let predictions =
            read_predictions(&dir.join(&format!("{out}/eval/predictions.parquet"))).unwrap();
        assert!(!predictions.is_empty());
        assert!(predictions.iter().all(|p| p.prediction.is_finite()));
    }
}

/// MulT, the model made for unaligned sequences, trains with MMSA's recipe (its gradient
/// sums over 8 batches, values clipped, the plateau schedule) and evaluates on the unaligned
/// MMSA pickle, byte for byte the same when run again; a kernel longer than the data's
/// sequences is refused before anything trains, naming the modality.
#[test]
fn mult_trains_on_an_unaligned_pickle_with_mmsas_recipe() {
    let dir = Dir::new();
    let pickle = crate::sources::fixtures().join("../mmsa/mmsa_unaligned.pkl");
    let model = r#"{ architecture = "mult", recipe = "mmsa", mmsa = { dst_feature_dim_nheads = [8, 2], nlevels = 1 }, optim = { epochs = 3 } }"#;
    dir.write("p.toml", &pickle_pipeline(&pickle, true, model));
    dir.mmflow(&["run", "p.toml"]).ok();
    dir.mmflow(&["run", "p.toml", "--out", "again"]).ok();
    let run = dir.join("data/runs/p");
    let predictions = read_predictions(&run.join("eval/predictions.parquet")).unwrap();
    assert!(!predictions.is_empty());
    assert!(predictions.iter().all(|p| p.prediction.is_finite()));
    for table in ["model/model.safetensors", "eval/predictions.parquet"] {
        let a = std::fs::read(run.join(table)).unwrap();
        let b = std::fs::read(dir.join(&format!("again/{table}"))).unwrap();
        assert!(a == b, "mult: {table} differs between identical runs");
    }
    let long = model.replace("nlevels = 1", "nlevels = 1, conv1d_kernel_size_v = 100000");
    dir.write("long.toml", &pickle_pipeline(&pickle, true, &long));
    let err = dir.mmflow(&["run", "long.toml"]).expect(1).stderr;
    assert!(
        err.contains("`mult` convolves the video sequence with a kernel of 100000 steps"),
        "{err}"
    );
    assert!(!dir.join("data/runs/long/model/model.safetensors").exists());
}

/// EF-LSTM trains and evaluates on an aligned MMSA pickle, byte for byte the same when run
/// again, and refuses the unaligned one (MMSA's `need_data_aligned`), naming a segment and its
/// modalities' steps, before it trains anything.
#[test]
fn ef_lstm_needs_aligned_modalities() {
    let dir = Dir::new();
    let data = crate::sources::fixtures();
    let config = |pickle: &std::path::Path, use_lengths: bool| {
        pickle_pipeline(
            pickle,
            use_lengths,
            r#"{ architecture = "ef_lstm", mmsa = { hidden_dims = 16, num_layers = 2, dropout = 0.2 }, recipe = "mmsa", optim = { epochs = 3 } }"#,
        )
    };
    dir.write(
        "aligned.toml",
        &config(&data.join("sdk_basic/mmsa_mosi_aligned_50.pkl"), false),
    );
    for out in ["a", "b"] {
        dir.mmflow(&["run", "aligned.toml", "--out", out]).ok();
    }
    let predictions = read_predictions(&dir.join("a/eval/predictions.parquet")).unwrap();
    assert!(!predictions.is_empty());
    assert!(predictions.iter().all(|p| p.prediction.is_finite()));
    for table in ["model/model.safetensors", "eval/predictions.parquet"] {
        let a = std::fs::read(dir.join(&format!("a/{table}"))).unwrap();
        let b = std::fs::read(dir.join(&format!("b/{table}"))).unwrap();
        assert!(a == b, "{table} differs between identical runs");
    }
    let lock = std::fs::read_to_string(dir.join("a/mmflow.lock")).unwrap();
    assert!(
        lock.contains("\"padded_lengths\": [\n          50,\n          50,\n          50"),
        "{lock}"
    );

    dir.write(
        "unaligned.toml",
        &config(&data.join("../mmsa/mmsa_unaligned.pkl"), true),
    );
    let run = dir
        .mmflow(&["run", "unaligned.toml", "--out", "u"])
        .expect(1);
    assert!(
        run.stderr
            .contains("`ef_lstm` needs aligned modalities (MMSA's need_data_aligned): segment `")
            && run.stderr.contains("steps of `text`"),
        "{}",
        run.stderr
    );
    assert!(
        !dir.join("u/model/model.safetensors").exists(),
        "no model of a refused training"
    );
    // MFN needs them aligned too.
    let mfn = pickle_pipeline(
        &data.join("../mmsa/mmsa_unaligned.pkl"),
        true,
        r#"{ architecture = "mfn", recipe = "mmsa", optim = { epochs = 1 } }"#,
    );
    dir.write("mfn.toml", &mfn);
    let run = dir.mmflow(&["run", "mfn.toml", "--out", "m"]).expect(1);
    assert!(
        run.stderr
            .contains("`mfn` needs aligned modalities (MMSA's need_data_aligned)"),
        "{}",
        run.stderr
    );
    assert!(!dir.join("m/model/model.safetensors").exists());
}

#[test]
fn mmsa_architectures_refuse_misuse_at_validate() {
    let dir = Dir::new();
    let cases = [
        (
            ZOO.replace("architecture = \"ARCH\"", "architecture = \"tfn\"\nfusion = \"attention\""),
            "`fusion` belongs to architecture `mmflow`; `tfn` takes its settings under `mmsa`",
        ),
        (
            ZOO.replace("architecture = \"ARCH\"", "architecture = \"mmflow\""),
            "settings of an MMSA architecture, but `architecture` is `mmflow`",
        ),
        (
            ZOO.replace("ARCH", "lf_dnn")
                .replace("post_fusion_dim = 16", "post_fusion_dim = 16, dropouts = [0.2, 0.2, 0.2, 1.5]"),
            "every dropout must be in [0, 1)",
        ),
        (
            ZOO.replace("ARCH", "lf_dnn").replace("text_out = 8", "rank = 4"),
            "`lf_dnn` has no `rank` (MMSA's lf_dnn takes hidden_dims, text_out, post_fusion_dim, dropouts)",
        ),
        (
            ZOO.replace("ARCH", "lmf"),
            "`lmf` has no `text_out` (MMSA's lmf takes hidden_dims, dropouts, rank)",
        ),
        (
            ZOO.replace("ARCH", "lmf").replace("text_out = 8", "depth = 4"),
            "unknown key `depth`, expected one of `hidden_dims`",
        ),
        (
            ZOO.replace("ARCH", "tfn").replace(
                "features = [\"norm.text\", \"norm.audio\", \"norm.visual\"] }\n[stages.model.params]",
                "features = [\"norm.text\", \"norm.audio\"] }\n[stages.model.params]",
            ),
            "`tfn` needs text, audio and video features inputs",
        ),
        (
            ZOO.replace("ARCH", "tfn")
                .replace("optim = { optimizer", "recipe = \"mmsa\"\noptim = { optimizer"),
            "recipe `mmsa` sets this as MMSA trains `tfn`: remove it, or the recipe",
        ),
        (
            ZOO.replace("ARCH", "mmflow")
                .replace("mmsa = { hidden_dims = [16, 8, 8], text_out = 8, post_fusion_dim = 16 }", "recipe = \"mmsa\""),
            "recipe `mmsa` trains an MMSA architecture",
        ),
        (
            ZOO.replace("ARCH", "mfn")
                .replace("text_out = 8, post_fusion_dim = 16", "windowsize = 3"),
            "its code takes `windowsize = 2` only",
        ),
    ];
    for (config, expected) in cases {
        dir.write("p.toml", &config);
        let run = dir.mmflow(&["validate", "p.toml"]).expect(2);
        assert!(
            run.stderr.contains(expected) && run.stderr.contains("p.toml:"),
            "missing `{expected}` (with its place in p.toml):\n{}",
            run.stderr
        );
    }
}
