//! Training and evaluation with candle: the loss falls, metrics rise above chance with CIs,
//! runs are reproducible, adapters and LSTM/attention/user-embedding models train, and bad
//! input is refused.

use std::collections::BTreeSet;

use mmflow_schemas::evaluation::{read_metrics, read_predictions};
use mmflow_schemas::history;
use mmflow_schemas::Split;

use crate::sources::{fixtures, videos_in_fold};
use crate::util::Dir;

const MOSEI: &str = r#"
[stages.mosei]
kind = "synthetic"
seed = 1
params = { profile = "mosei", scale = 0.04 }

[stages.mosei_norm]
kind = "normalize"
inputs = { segments = "mosei.segments", features = ["mosei.text", "mosei.audio", "mosei.visual"] }

[stages.model]
kind = "train_model"
inputs = { segments = "mosei.segments", features = ["mosei_norm.text", "mosei_norm.audio", "mosei_norm.visual"] }
params = { optim = { epochs = 8, batch_size = 32, learning_rate = 0.002, patience = 4 } }

[stages.eval]
kind = "evaluate"
inputs = { model = "model.model", segments = "mosei.segments", features = ["mosei_norm.text", "mosei_norm.audio", "mosei_norm.visual"] }
params = { bootstrap = 200 }
"#;

fn metric(
    rows: &[mmflow_schemas::evaluation::MetricRow],
    split: Split,
    head: &str,
    name: &str,
) -> (f64, f64, f64, u64) {
    let m = rows
        .iter()
        .find(|m| m.split == split && m.head == head && m.metric == name)
        .unwrap_or_else(|| panic!("no {split} {head} {name}"));
    (
        m.value,
        m.ci_low.unwrap_or(f64::NAN),
        m.ci_high.unwrap_or(f64::NAN),
        m.n,
    )
}

#[test]
fn the_sentiment_model_learns_and_is_evaluated_with_mmsa_metrics_and_cis() {
    let dir = Dir::new();
    dir.write("p.toml", MOSEI);
    dir.mmflow(&["run", "p.toml"]).ok();
    let run = dir.join("data/runs/p");
    let hist = history::read(&run.join("model/history.parquet")).unwrap();
    let loss = |epoch: u32| {
        hist.iter()
            .find(|r| r.epoch == epoch && r.subject == "total" && r.metric == "loss")
            .unwrap()
            .clone()
    };
    let first = loss(1);
    let best = hist
        .iter()
        .find(|r| r.is_best && r.subject == "total" && r.metric == "loss")
        .unwrap();
    assert!(
        best.valid.unwrap() < first.valid.unwrap(),
        "validation loss falls: {first:?} → {best:?}"
    );
    assert!(hist.iter().any(|r| r.subject == "sentiment"
        && r.metric == "ccc"
        && r.train.is_some()
        && r.valid.is_some()));

    let metrics = read_metrics(&run.join("eval/metrics.parquet")).unwrap();
    for name in [
        "Has0_acc_2",
        "Has0_F1_score",
        "Non0_acc_2",
        "Non0_F1_score",
        "Mult_acc_5",
        "Mult_acc_7",
        "MAE",
        "Corr",
        "MSE",
        "RMSE",
        "CCC",
    ] {
        let (v, lo, hi, n) = metric(&metrics, Split::Test, "sentiment", name);
        assert!(
            n > 50 && lo <= v && v <= hi,
            "{name}: {v} not in [{lo}, {hi}] (n = {n})"
        );
    }
    let (corr, lo, _, _) = metric(&metrics, Split::Test, "sentiment", "Corr");
    assert!(
        lo > 0.2,
        "test correlation well above chance: {corr} (CI low {lo})"
    );
    let (acc, _, _, _) = metric(&metrics, Split::Test, "sentiment", "Has0_acc_2");
    assert!(acc > 0.6, "binary accuracy above chance: {acc}");
    let predictions = read_predictions(&run.join("eval/predictions.parquet")).unwrap();
    let segments =
        mmflow_schemas::segments::SegmentTable::read(&run.join("mosei/segments.parquet")).unwrap();
    assert_eq!(predictions.len(), segments.rows.len());
    assert!(predictions
        .iter()
        .all(|p| p.head == "sentiment" && p.label.is_some() && p.prediction.is_finite()));

    // Same config and seed: identical history, predictions and metrics.
    dir.mmflow(&["run", "p.toml", "--out", "again"]).ok();
    for table in [
        "model/history.parquet",
        "model/model.safetensors",
        "eval/predictions.parquet",
        "eval/metrics.parquet",
    ] {
        let a = std::fs::read(run.join(table)).unwrap();
        let b = std::fs::read(dir.join(&format!("again/{table}"))).unwrap();
        assert!(a == b, "{table} differs between identical runs");
    }
}

const VALENCE_AROUSAL: &str = r#"
[stages.va]
kind = "synthetic"
seed = 3
params = { profile = "valence_arousal", scale = 0.3 }

[stages.model]
kind = "train_model"
inputs = { segments = "va.segments", features = ["va.text"] }
[stages.model.params]
optim = { epochs = 6, batch_size = 32, learning_rate = 0.003, monitor = "arousal:ccc" }
user_embedding = 8
fusion = "attention"
fusion_dim = 32
encoders = { text = { kind = "lstm", hidden = 32, bidirectional = true, mlp = { hidden = [] } } }
heads = { valence = { mse = 1.0 }, arousal = { mse = 0.3, ccc = 0.7 } }

[stages.eval]
kind = "evaluate"
inputs = { model = "model.model", segments = "va.segments", features = ["va.text"] }
params = { bootstrap = 100, calibrate = true }
"#;

#[test]
fn lstm_attention_and_user_embeddings_train_on_valence_arousal() {
    let dir = Dir::new();
    dir.write("p.toml", VALENCE_AROUSAL);
    dir.mmflow(&["run", "p.toml"]).ok();
    let metrics = read_metrics(&dir.join("data/runs/p/eval/metrics.parquet")).unwrap();
    for head in ["valence", "arousal"] {
        for name in ["CCC", "Corr", "RMSE", "MAE", "CCC_calibrated"] {
            metric(&metrics, Split::Valid, head, name);
        }
        assert!(
            metrics.iter().all(|m| !m.metric.starts_with("Has0")),
            "MMSA's sentiment metrics are for sentiment only"
        );
    }
    let (ccc, _, _, _) = metric(&metrics, Split::Test, "valence", "CCC");
    assert!(ccc > 0.2, "valence CCC above chance: {ccc}");
    let (mean, lo, hi, _) = metric(&metrics, Split::Test, "mean", "CCC");
    let (arousal, _, _, _) = metric(&metrics, Split::Test, "arousal", "CCC");
    assert!(
        (mean - (ccc + arousal) / 2.0).abs() < 1e-9 && lo <= mean && mean <= hi,
        "{mean} [{lo}, {hi}]"
    );
    let diagnostics =
        mmflow_schemas::diagnostics::read(&dir.join("data/runs/p/eval/diagnostics.parquet"))
            .unwrap();
    let best = diagnostics
        .iter()
        .find(|d| d.metric == "best_epoch")
        .expect("best epoch reported");
    assert!(best.value >= 1.0 && best.value <= 6.0);
    assert!(diagnostics
        .iter()
        .any(|d| d.metric == "CCC_gap" && d.subject == "arousal"));
    let predictions = read_predictions(&dir.join("data/runs/p/eval/predictions.parquet")).unwrap();
    assert!(predictions.iter().all(|p| p.calibrated.is_some()));
}

/// `configs/transfer.toml` at a reduced scale: `--set` overrides for every variant.
fn reduced_transfer() -> Vec<String> {
    let mut sets = vec![
        "stages.mosei.params.scale=0.04".to_string(),
        "stages.mosi.params.scale=0.5".to_string(),
        "stages.mosei_model.params.optim.epochs=8".to_string(),
        "stages.mosei_model.params.optim.batch_size=32".to_string(),
        "stages.mosei_eval.params.bootstrap=100".to_string(),
    ];
    // Once for every method: the template's stages.
    let stage = "templates.per_method.stages";
    sets.push(format!("{stage}.adapters.params.optim.epochs=6"));
    sets.push(format!("{stage}.adapters.params.mlp.hidden=[64, 128]"));
    sets.push(format!(
        "{stage}.finetune.params.phases=[{{ name = \"adapters_frozen\", freeze = [\"adapters\"], optim = {{ epochs = 5, learning_rate = 1e-3 }} }}, {{ name = \"all\", optim = {{ epochs = 4, learning_rate = 1e-4 }} }}]"
    ));
    for eval in ["zero_shot", "zero_shot_renorm", "finetuned"] {
        sets.push(format!("{stage}.{eval}.params.bootstrap=200"));
    }
    sets.into_iter()
        .flat_map(|s| ["--set".to_string(), s])
        .collect()
}

#[test]
fn the_transfer_study_fine_tunes_past_zero_shot_with_separated_cis() {
    let dir = Dir::new();
    let config = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/configs/transfer.toml"
    ))
    .unwrap();
    dir.write("transfer.toml", &config);
    let sets = reduced_transfer();
    let args = |extra: &[&str]| -> Vec<String> {
        ["run", "transfer.toml"]
            .iter()
            .map(|s| s.to_string())
            .chain(sets.iter().cloned())
            .chain(extra.iter().map(|s| s.to_string()))
            .collect()
    };
    let run_args = args(&[]);
    dir.mmflow(&run_args.iter().map(String::as_str).collect::<Vec<_>>())
        .ok();
    let run = dir.join("data/runs/transfer");
    for m in ["random", "kmeans", "cosine"] {
        let hist = history::read(&run.join(format!("adapters@{m}/history.parquet"))).unwrap();
        let losses: Vec<f64> = hist
            .iter()
            .filter(|r| r.subject == "visual" && r.metric == "loss")
            .map(|r| r.valid.unwrap())
            .collect();
        assert!(
            losses.len() >= 2 && losses.iter().cloned().fold(f64::INFINITY, f64::min) < losses[0],
            "{m}: adapter validation loss falls: {losses:?}"
        );
        let zero = read_metrics(&run.join(format!("zero_shot@{m}/metrics.parquet"))).unwrap();
        let tuned = read_metrics(&run.join(format!("finetuned@{m}/metrics.parquet"))).unwrap();
        let (z, _, z_high, n) = metric(&zero, Split::Test, "sentiment", "CCC");
        let (t, t_low, _, _) = metric(&tuned, Split::Test, "sentiment", "CCC");
        assert!(n > 100);
        assert!(
            t_low > z_high,
            "{m}: fine-tuned CCC {t} (CI low {t_low}) must beat zero-shot {z} (CI high {z_high})"
        );
        let renorm =
            read_metrics(&run.join(format!("zero_shot_renorm@{m}/metrics.parquet"))).unwrap();
        let (_, _, _, n) = metric(&renorm, Split::Test, "sentiment", "CCC");
        assert!(
            n > 100,
            "{m}: zero-shot on the renormalised adapted features is evaluated"
        );
        // Phases in the history, each starting from the weights the previous one kept.
        let ft = history::read(&run.join(format!("finetune@{m}/history.parquet"))).unwrap();
        for phase in ["adapters_frozen", "all"] {
            assert!(
                ft.iter().any(|r| r.phase == phase && r.epoch == 0),
                "{m}: {phase} measures its starting point"
            );
            assert_eq!(
                ft.iter()
                    .filter(|r| r.phase == phase
                        && r.is_best
                        && r.subject == "total"
                        && r.metric == "loss")
                    .count(),
                1
            );
        }
    }
    // Without the adapters the MOSEI model cannot read MOSI's 65-d visual features (one
    // instance of the template changed).
    let bare = args(&[
        "--set",
        "stages.zero_shot@cosine.inputs={ model = \"mosei_model.model\", segments = \"mosi.segments\", features = [\"mosi_norm.text\", \"mosi_norm.audio\", \"mosi_norm.visual\"] }",
    ]);
    let failed = dir
        .mmflow(&bare.iter().map(String::as_str).collect::<Vec<_>>())
        .expect(1);
    assert!(
        failed.stderr.contains(
            "modality `visual` is 65 wide but mosei_model.model was trained on 713-wide features"
        ),
        "{}",
        failed.stderr
    );
    // A phase freezing a module that does not exist.
    let bad = args(&[
        "--set",
        "stages.finetune@cosine.params.phases=[{ freeze = [\"adapter\", \"encoder.video\"] }]",
    ]);
    let failed = dir.mmflow(&bad.iter().map(String::as_str).collect::<Vec<_>>());
    assert_ne!(failed.code, 0);
    assert!(
        failed.stderr.contains("unknown module `adapter`"),
        "{}",
        failed.stderr
    );
    let bad = args(&[
        "--set",
        "stages.finetune@cosine.params.phases=[{ freeze = [\"encoder.video\"] }]",
    ]);
    let failed = dir
        .mmflow(&bad.iter().map(String::as_str).collect::<Vec<_>>())
        .expect(1);
    assert!(
        failed
            .stderr
            .contains("freeze `encoder.video` matches nothing in this model"),
        "{}",
        failed.stderr
    );
}

#[test]
fn bad_training_setups_are_refused_clearly() {
    let dir = Dir::new();
    // Invalid params: all-zero loss weights, unknown encoder modality, bad monitor.
    let bad = MOSEI.replace(
        "params = { optim = { epochs = 8, batch_size = 32, learning_rate = 0.002, patience = 4 } }",
        "params = { heads = { sentiment = { mse = 0.0 } }, encoders = { video = { kind = \"lstm\" } }, optim = { monitor = \"ccc\" } }",
    );
    dir.write("p.toml", &bad);
    let run = dir.mmflow(&["validate", "p.toml"]).expect(2);
    for expected in [
        "every loss weight is 0",
        "`video` is not one of the `features` inputs",
        "`ccc` is not `loss` or `<head>:<measure>`",
    ] {
        assert!(
            run.stderr.contains(expected),
            "missing `{expected}`:\n{}",
            run.stderr
        );
    }
    // Values out of their range: each refused at its key with its type's message, the
    // values around it still checked (an encoder's MLP dropout included).
    let bad = MOSEI.replace(
        "params = { optim = { epochs = 8, batch_size = 32, learning_rate = 0.002, patience = 4 } }",
        "params = { dropout = 1.0, encoders = { text = { mlp = { dropout = 1.5 } } }, optim = { epochs = 0, learning_rate = 0.0, weight_decay = -0.1, grad_clip = nan } }",
    )
    .replace("bootstrap = 200", "bootstrap = 200, max_gap = -1")
    .replace("scale = 0.04", "scale = 0.04, noise = inf, max_length = 0");
    dir.write("p.toml", &bad);
    let run = dir.mmflow(&["validate", "p.toml"]).expect(2);
    for (key, says) in [
        ("stages.model.params.dropout", "must be in [0, 1)"),
        (
            "stages.model.params.encoders.text.mlp.dropout",
            "must be in [0, 1)",
        ),
        ("stages.model.params.optim.epochs", "must be at least 1"),
        (
            "stages.model.params.optim.learning_rate",
            "must be a positive number",
        ),
        (
            "stages.model.params.optim.weight_decay",
            "must be a finite number ≥ 0",
        ),
        (
            "stages.model.params.optim.grad_clip",
            "must be a positive number",
        ),
        ("stages.eval.params.max_gap", "must be a finite number ≥ 0"),
        ("stages.mosei.params.noise", "must be a finite number ≥ 0"),
        ("stages.mosei.params.max_length", "must be at least 1"),
    ] {
        assert!(
            run.stderr
                .lines()
                .any(|l| l.contains(key) && l.contains(says)),
            "missing `{key}`: {says}:\n{}",
            run.stderr
        );
    }
    // A head that is not a label, and a diverging learning rate.
    dir.write(
        "p.toml",
        &MOSEI.replace(
            "patience = 4 } }",
            "patience = 4 }, heads = { valence = {} } }",
        ),
    );
    let run = dir.mmflow(&["run", "p.toml"]).expect(1);
    assert!(
        run.stderr
            .contains("head `valence` is not a label column of mosei.segments"),
        "{}",
        run.stderr
    );
    dir.write(
        "p.toml",
        &MOSEI.replace(
            "learning_rate = 0.002",
            "learning_rate = 1e30, grad_clip = 1e30, on_nan = \"fail\"",
        ),
    );
    let run = dir.mmflow(&["run", "p.toml"]).expect(1);
    assert!(
        run.stderr.contains("loss at epoch") && run.stderr.contains("batch"),
        "{}",
        run.stderr
    );
    assert!(!dir.join("data/runs/p/model/model.safetensors").exists());
}

#[test]
fn an_empty_validation_split_is_an_error() {
    let folder = fixtures().join("sdk_basic/mosi");
    let dir = Dir::new();
    let folds = serde_json::json!({
        "train": videos_in_fold("sdk_basic", "mosi", "train"),
        "valid": [],
        "test": videos_in_fold("sdk_basic", "mosi", "test"),
    });
    dir.write("folds.json", &folds.to_string());
    dir.write(
        "p.toml",
        &format!(
            "[stages.sdk]\nkind = \"csd\"\n[stages.sdk.params]\nfolds = \"folds.json\"\nreference = \"text\"\nlabels = {{ path = {:?} }}\nmodalities = {{ text = {{ path = {:?} }} }}\n\n[stages.model]\nkind = \"train_model\"\ninputs = {{ segments = \"sdk.segments\", features = [\"sdk.text\"] }}\nparams = {{ optim = {{ epochs = 2 }} }}\n",
            folder.join("CMU_MOSI_Opinion_Labels.csd"),
            folder.join("CMU_MOSI_TimestampedWordVectors.csd"),
        ),
    );
    let run = dir.mmflow(&["run", "p.toml"]).expect(1);
    assert!(
        run.stderr
            .contains("sdk.segments: the validation split is empty"),
        "{}",
        run.stderr
    );
}

/// The SIMS-like test's heads: CH-SIMS's overall and per-modality sentiment.
const SIMS_HEADS: [&str; 4] = ["sentiment", "sentiment_T", "sentiment_A", "sentiment_V"];

/// A small CH-SIMS-like dataset as CSV files: per segment a latent sentiment per modality,
/// features carrying it (4 frames per second, 4 columns per modality) and labels on CH-SIMS's
/// grid of fifths in [-1, 1] (`sentiment_T/A/V` from each modality's latent, `sentiment`
/// from their mean); 40 videos of 6 one-second segments, folds 28/6/6 videos.
fn write_sims_like(dir: &Dir) {
    use rand::{Rng, SeedableRng};
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
    let mut normal = move || (0..4).map(|_| rng.random::<f64>()).sum::<f64>() - 2.0;
    let to_grid = |v: f64| ((v.tanh() * 5.0).round() / 5.0).clamp(-1.0, 1.0);
    let mut labels =
        String::from("video,timestamp,sentiment,sentiment_T,sentiment_A,sentiment_V\n");
    let mut features: Vec<String> = (0..3)
        .map(|_| "video,timestamp,f0,f1,f2,f3\n".into())
        .collect();
    let videos: Vec<String> = (0..40).map(|v| format!("clip{v:02}")).collect();
    for video in &videos {
        for segment in 0..6 {
            let latent: Vec<f64> = (0..3).map(|_| 1.2 * normal()).collect();
            let per_modality: Vec<f64> = latent.iter().map(|&z| to_grid(z)).collect();
            let overall = to_grid(latent.iter().sum::<f64>() / 3.0);
            labels.push_str(&format!(
                "{video},{segment},{overall},{},{},{}\n",
                per_modality[0], per_modality[1], per_modality[2]
            ));
            for (m, table) in features.iter_mut().enumerate() {
                for frame in 0..4 {
                    let t = segment as f64 + frame as f64 / 4.0;
                    let cells: Vec<String> = (0..4)
                        .map(|c| {
                            let weight = [1.0, -0.5, 0.8, 0.0][c];
                            format!("{:.5}", weight * latent[m] + 0.3 * normal())
                        })
                        .collect();
                    table.push_str(&format!("{video},{t},{}\n", cells.join(",")));
                }
            }
        }
    }
    dir.write("sims/labels.csv", &labels);
    for (name, table) in ["text", "audio", "visual"].iter().zip(&features) {
        dir.write(&format!("sims/{name}.csv"), table);
    }
    let folds = serde_json::json!({
        "train": videos[..28],
        "valid": videos[28..34],
        "test": videos[34..],
    });
    dir.write("sims/folds.json", &folds.to_string());
}

const SIMS_LIKE: &str = r#"
[stages.sims]
kind = "csv"
[stages.sims.params]
dataset = "sims"
folds = "sims/folds.json"
align = "none"
reference = "text"
labels = { path = "sims/labels.csv", fps = 1.0, csv = { video_column = "video" } }
label_columns = ["sentiment", "sentiment_T", "sentiment_A", "sentiment_V"]
[stages.sims.params.modalities]
text = { path = "sims/text.csv", fps = 4.0, csv = { video_column = "video" } }
audio = { path = "sims/audio.csv", fps = 4.0, csv = { video_column = "video" } }
visual = { path = "sims/visual.csv", fps = 4.0, csv = { video_column = "video" } }

[stages.model]
kind = "train_model"
inputs = { segments = "sims.segments", features = ["sims.text", "sims.audio", "sims.visual"] }
[stages.model.params]
heads = { sentiment = {}, sentiment_T = {}, sentiment_A = {}, sentiment_V = {} }
optim = { epochs = 12, batch_size = 16, learning_rate = 0.005 }

[stages.eval]
kind = "evaluate"
inputs = { model = "model.model", segments = "sims.segments", features = ["sims.text", "sims.audio", "sims.visual"] }
params = { bootstrap = 50 }

[stages.eval_mosi]
kind = "evaluate"
inputs = { model = "model.model", segments = "sims.segments", features = ["sims.text", "sims.audio", "sims.visual"] }
params = { bootstrap = 0, metrics = "mosi" }
"#;

/// A CH-SIMS-like dataset (`dataset = "sims"`, labels in [-1, 1]) trains a model with one
/// head per CH-SIMS label; evaluation gives every head MMSA's SIMS metrics (values checked
/// against the predictions), and `metrics = "mosi"` forces the MOSI family instead.
#[test]
fn a_sims_dataset_gets_mmsas_sims_metrics_for_every_sentiment_head() {
    let dir = Dir::new();
    write_sims_like(&dir);
    dir.write("p.toml", SIMS_LIKE);
    dir.mmflow(&["run", "p.toml"]).ok();
    let run = dir.join("data/runs/p");
    let metrics = read_metrics(&run.join("eval/metrics.parquet")).unwrap();
    let predictions = read_predictions(&run.join("eval/predictions.parquet")).unwrap();
    let sims_names = [
        "Mult_acc_2",
        "Mult_acc_3",
        "Mult_acc_5",
        "F1_score",
        "MAE",
        "Corr",
    ];
    for head in SIMS_HEADS {
        for split in Split::ALL {
            let names: Vec<&str> = metrics
                .iter()
                .filter(|m| m.split == split && m.head == head)
                .map(|m| m.metric.as_str())
                .collect();
            assert_eq!(names, sims_names, "{split} {head}");
            // Mult_acc_2 and MAE recomputed from the predictions: clipped to [-1, 1] in
            // float32, positive above 0.
            let rows: Vec<(f32, f32)> = predictions
                .iter()
                .filter(|p| p.split == split && p.head == head)
                .map(|p| {
                    (
                        p.prediction.clamp(-1.0, 1.0),
                        p.label.unwrap().clamp(-1.0, 1.0),
                    )
                })
                .collect();
            let n = rows.len() as f64;
            let agree = rows
                .iter()
                .filter(|(p, y)| (*p > 0.0) == (*y > 0.0))
                .count();
            let (acc2, _, _, count) = metric(&metrics, split, head, "Mult_acc_2");
            assert_eq!(count, rows.len() as u64);
            assert!(
                (acc2 - agree as f64 / n).abs() < 1e-12,
                "{split} {head}: {acc2}"
            );
            let mae = rows
                .iter()
                .map(|(p, y)| f64::from((p - y).abs()))
                .sum::<f64>()
                / n;
            let (got, _, _, _) = metric(&metrics, split, head, "MAE");
            assert!(
                (got - mae).abs() < 1e-6,
                "{split} {head}: MAE {got} vs {mae}"
            );
        }
        let (corr, _, _, _) = metric(&metrics, Split::Train, head, "Corr");
        assert!(corr > 0.5, "{head} learns: train Corr {corr}");
        let (acc, lo, hi, _) = metric(&metrics, Split::Valid, head, "Mult_acc_2");
        assert!(lo <= acc && acc <= hi, "{head}: {acc} in [{lo}, {hi}]");
    }
    let forced = read_metrics(&run.join("eval_mosi/metrics.parquet")).unwrap();
    for head in SIMS_HEADS {
        metric(&forced, Split::Test, head, "Has0_acc_2");
        metric(&forced, Split::Test, head, "CCC");
        assert!(!forced.iter().any(|m| m.metric == "Mult_acc_2"));
    }
}

/// On CH-SIMS data a sentiment head is measured after every epoch with CH-SIMS's clipped
/// MAE, correlation and 2-class accuracy (`sims_mae`, `sims_corr`, `sims_acc2`, in place of
/// the MOSI family's), `monitor` can pick them, and on MOSI-family data the same monitor is
/// refused before training.
#[test]
fn sims_histories_measure_sims_metrics_and_monitor_them() {
    let dir = Dir::new();
    write_sims_like(&dir);
    let config = SIMS_LIKE.replace(
        "optim = { epochs = 12, batch_size = 16, learning_rate = 0.005 }",
        "optim = { epochs = 4, batch_size = 16, learning_rate = 0.005, monitor = \"sentiment:sims_acc2\" }",
    );
    dir.write("p.toml", &config);
    dir.mmflow(&["run", "p.toml"]).ok();
    let hist = history::read(&dir.join("data/runs/p/model/history.parquet")).unwrap();
    let measured: BTreeSet<&str> = hist
        .iter()
        .filter(|r| r.subject == "sentiment_T")
        .map(|r| r.metric.as_str())
        .collect();
    assert_eq!(
        measured,
        BTreeSet::from(["loss", "sims_mae", "rmse", "sims_corr", "ccc", "sims_acc2"])
    );
    for r in hist.iter().filter(|r| r.metric == "sims_acc2") {
        let v = r.valid.unwrap();
        assert!((0.0..=1.0).contains(&v), "{r:?}");
    }
    // One best epoch, picked by the monitored measure.
    let best: Vec<_> = hist
        .iter()
        .filter(|r| r.is_best && r.subject == "sentiment" && r.metric == "sims_acc2")
        .collect();
    assert_eq!(best.len(), 1);
    let top = hist
        .iter()
        .filter(|r| r.subject == "sentiment" && r.metric == "sims_acc2")
        .map(|r| r.valid.unwrap())
        .fold(f64::MIN, f64::max);
    assert_eq!(best[0].valid.unwrap(), top);

    // The same monitor on data of the MOSI family: refused, naming the measure and why.
    let mosi = config.replace("dataset = \"sims\"", "dataset = \"mosi_like\"");
    dir.write("q.toml", &mosi);
    let run = dir.mmflow(&["run", "q.toml"]).expect(1);
    assert!(
        run.stderr.contains(
            "optim.monitor: `sims_acc2` is not measured for `sentiment` on MOSI-family data"
        ),
        "{}",
        run.stderr
    );
    assert!(!dir.join("data/runs/q/model/history.parquet").exists());
}

/// The same pipeline trained and evaluated on the CPU (`cpu/`) and on the GPU (`gpu/`) from
/// the same seed. The lock records the resolved device of every stage that uses one.
fn on_cpu_and_gpu(
    dir: &Dir,
    config: &str,
    sets: &[String],
) -> (std::path::PathBuf, std::path::PathBuf) {
    dir.write("p.toml", config);
    for (device, out) in [("cpu", "cpu"), ("cuda", "gpu")] {
        let mut args: Vec<String> = ["run", "p.toml", "--out", out, "--set"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        args.push(format!("pipeline.device=\"{device}\""));
        args.extend(sets.iter().cloned());
        dir.mmflow(&args.iter().map(String::as_str).collect::<Vec<_>>())
            .ok();
    }
    let lock = std::fs::read_to_string(dir.join("gpu/mmflow.lock")).unwrap();
    assert!(lock.contains("cuda:0"), "the GPU run records its device");
    (dir.join("cpu"), dir.join("gpu"))
}

/// Every history, prediction and metrics table of the CPU run against the GPU run's.
/// Tolerances (the two differ only by floating-point summation order, which compounds over
/// epochs): first-epoch losses within 1e-3 relative; every history value within 5e-2
/// relative (or 1e-3 absolute); predictions within 5e-2 on average and 0.3 at worst;
/// metrics within 0.05 (CIs aside).
fn assert_close_runs(cpu: &std::path::Path, gpu: &std::path::Path) {
    let tables = crate::util::parquet_files(cpu);
    let close = |a: f64, b: f64, rel: f64| {
        (a - b).abs() <= rel * a.abs().max(b.abs()) || (a - b).abs() <= 1e-3
    };
    let mut compared = 0;
    for table in &tables {
        let name = table.to_string_lossy();
        if name.ends_with("history.parquet") {
            let (a, b) = (
                history::read(&cpu.join(table)).unwrap(),
                history::read(&gpu.join(table)).unwrap(),
            );
            assert_eq!(a.len(), b.len(), "{name}: epochs (early stopping differs)");
            for (x, y) in a.iter().zip(&b) {
                assert_eq!(
                    (&x.phase, x.epoch, &x.subject, &x.metric),
                    (&y.phase, y.epoch, &y.subject, &y.metric)
                );
                for (u, v) in [(x.train, y.train), (x.valid, y.valid)] {
                    let (Some(u), Some(v)) = (u, v) else { continue };
                    let rel = if x.epoch <= 1 && x.metric == "loss" {
                        1e-3
                    } else {
                        5e-2
                    };
                    assert!(
                        close(u, v, rel),
                        "{name}: {} epoch {} {} {}: CPU {u} vs GPU {v}",
                        x.phase,
                        x.epoch,
                        x.subject,
                        x.metric
                    );
                }
            }
            compared += 1;
        } else if name.ends_with("predictions.parquet") {
            let (a, b) = (
                read_predictions(&cpu.join(table)).unwrap(),
                read_predictions(&gpu.join(table)).unwrap(),
            );
            assert_eq!(a.len(), b.len(), "{name}");
            let diffs: Vec<f64> = a
                .iter()
                .zip(&b)
                .map(|(x, y)| {
                    assert_eq!((&x.segment_id, &x.head), (&y.segment_id, &y.head));
                    (x.prediction as f64 - y.prediction as f64).abs()
                })
                .collect();
            let mean = diffs.iter().sum::<f64>() / diffs.len().max(1) as f64;
            let worst = diffs.iter().cloned().fold(0.0, f64::max);
            assert!(
                mean < 5e-2 && worst < 0.3,
                "{name}: predictions differ by {mean} on average, {worst} at worst"
            );
            compared += 1;
        } else if name.ends_with("metrics.parquet") {
            let (a, b) = (
                read_metrics(&cpu.join(table)).unwrap(),
                read_metrics(&gpu.join(table)).unwrap(),
            );
            assert_eq!(a.len(), b.len(), "{name}");
            for (x, y) in a.iter().zip(&b) {
                assert!(
                    (x.value - y.value).abs() < 0.05 || close(x.value, y.value, 5e-2),
                    "{name}: {} {} {}: CPU {} vs GPU {}",
                    x.split,
                    x.head,
                    x.metric,
                    x.value,
                    y.value
                );
            }
            compared += 1;
        }
    }
    assert!(compared >= 3, "tables compared: {tables:?}");
}

/// `train_model` (MLP encoders) and `evaluate` on the GPU match the CPU.
#[test]
#[ignore = "needs a CUDA GPU and a build with --features cuda"]
fn gpu_the_sentiment_model_trains_as_on_the_cpu() {
    let dir = Dir::new();
    let (cpu, gpu) = on_cpu_and_gpu(&dir, MOSEI, &[]);
    assert_close_runs(&cpu, &gpu);
}

/// LSTM encoders (the element-wise recurrence on the GPU against the fused CPU op),
/// attention fusion and user embeddings on the GPU match the CPU.
#[test]
#[ignore = "needs a CUDA GPU and a build with --features cuda"]
fn gpu_lstm_attention_and_embeddings_train_as_on_the_cpu() {
    let dir = Dir::new();
    let (cpu, gpu) = on_cpu_and_gpu(&dir, VALENCE_AROUSAL, &[]);
    assert_close_runs(&cpu, &gpu);
}

/// `train_adapters`, `apply_adapters`, `finetune` and `evaluate` of the transfer study on the
/// GPU match the CPU.
#[test]
#[ignore = "needs a CUDA GPU and a build with --features cuda"]
fn gpu_the_transfer_study_trains_as_on_the_cpu() {
    let dir = Dir::new();
    let sets = reduced_transfer();
    let (cpu, gpu) = on_cpu_and_gpu(&dir, include_str!("../configs/transfer.toml"), &sets);
    assert_close_runs(&cpu, &gpu);
}
