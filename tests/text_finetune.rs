//! Text encoders fine-tuned with the model (`train_model`'s `text_encoder`) through the binary:
//! a model on text alone trains from an MMSA pickle's raw text, learns, reproduces byte for
//! byte, and its checkpoint holds the encoder by Hugging Face's names (read back by
//! `embed_text`); frozen, the encoder stays as loaded; with audio and vision it trains and
//! evaluates; misuse is refused at `validate`. Its equality with transformers is tested in
//! `stages/src/train/text_bert/tests.rs`.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{Device, Tensor};
use mmflow_schemas::evaluation::read_metrics;
use mmflow_schemas::history;
use mmflow_schemas::Split;
use mmflow_stages::text_encoder::{ModelFolder, Pooling, Tokens};
use mmflow_stages::train::nn::Pass;
use mmflow_stages::train::optim::{AdamW, AdamWConfig};
use mmflow_stages::train::text_bert::{Freeze, TextBert, TokenBatch};
use mmflow_stages::train::weights::ParamStore;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::sources::data;
use crate::util::Dir;

/// A model on the reviews' text alone (no features input), and its evaluation.
fn text_only(freeze: &str, epochs: usize) -> String {
    let pickle = data().join("text_finetune/rated_texts.pkl");
    let model = data().join("models/tiny-bert");
    format!(
        r#"
[stages.reviews]
kind = "mmsa_pickle"
params = {{ path = {pickle:?}, modalities = {{}} }}

[stages.model]
kind = "train_model"
inputs = {{ segments = "reviews.segments" }}
[stages.model.params]
text_encoder = {{ model = {model:?}, max_length = 32, freeze = "{freeze}", learning_rate = 3e-3 }}
fusion_mlp = {{ hidden = [32] }}
heads = {{ sentiment = {{ mse = 1.0 }} }}
optim = {{ epochs = {epochs}, batch_size = 8, learning_rate = 0.003, patience = 10 }}

[stages.eval]
kind = "evaluate"
inputs = {{ model = "model.model", segments = "reviews.segments" }}
params = {{ bootstrap = 100 }}
"#
    )
}

fn tensors(path: &Path) -> HashMap<String, Tensor> {
    candle_core::safetensors::load(path, &Device::Cpu).unwrap()
}

fn same(a: &Tensor, b: &Tensor) -> bool {
    let (a, b): (Vec<f32>, Vec<f32>) = (
        a.flatten_all().unwrap().to_vec1().unwrap(),
        b.flatten_all().unwrap().to_vec1().unwrap(),
    );
    a == b
}

#[test]
fn a_fine_tuned_text_encoder_learns_reproduces_and_loads_back() {
    let runs: Vec<Dir> = (0..2)
        .map(|_| {
            let dir = Dir::new();
            dir.write("p.toml", &text_only("none", 25));
            dir.mmflow(&["run", "p.toml"]).ok();
            dir
        })
        .collect();
    let run = runs[0].join("data/runs/p");
    let hist = history::read(&run.join("model/history.parquet")).unwrap();
    let valid_loss = |epoch: u32| {
        hist.iter()
            .find(|r| r.subject == "total" && r.metric == "loss" && r.epoch == epoch)
            .and_then(|r| r.valid)
            .unwrap()
    };
    let best = hist.iter().find(|r| r.is_best).unwrap().epoch;
    assert!(
        valid_loss(best) < 0.9 * valid_loss(1),
        "validation loss {} at epoch 1, {} at the best",
        valid_loss(1),
        valid_loss(best)
    );
    let metrics = read_metrics(&run.join("eval/metrics.parquet")).unwrap();
    let corr = metrics
        .iter()
        .find(|m| m.split == Split::Test && m.metric == "Corr")
        .unwrap()
        .value;
    assert!(corr > 0.3, "test Corr {corr}");
    for file in ["model/model.safetensors", "eval/predictions.parquet"] {
        let [a, b] = [0, 1].map(|i| std::fs::read(runs[i].join("data/runs/p").join(file)).unwrap());
        assert!(a == b, "{file} differs between identical runs");
    }

    // The encoder is in the checkpoint by Hugging Face's names, trained.
    let saved = tensors(&run.join("model/model.safetensors"));
    let loaded = tensors(&data().join("models/tiny-bert/model.safetensors"));
    assert_eq!(
        saved.keys().filter(|k| k.starts_with("bert.")).count(),
        loaded.len()
    );
    for (name, before) in &loaded {
        let after = &saved[&format!("bert.{name}")];
        assert!(!same(before, after), "{name} did not train");
    }

    // Beside the tiny model's config and tokenizer, the checkpoint is a model folder
    // `embed_text` reads (its `bert.` names; the head's tensors are not the encoder's).
    let dir = &runs[0];
    let folder = dir.join("fine-tuned");
    std::fs::create_dir_all(&folder).unwrap();
    for file in ["config.json", "tokenizer.json"] {
        std::fs::copy(
            data().join("models/tiny-bert").join(file),
            folder.join(file),
        )
        .unwrap();
    }
    std::fs::copy(
        run.join("model/model.safetensors"),
        folder.join("model.safetensors"),
    )
    .unwrap();
    dir.write(
        "embed.toml",
        &format!(
            "[stages.reviews]\nkind = \"mmsa_pickle\"\nparams = {{ path = {:?}, modalities = {{}} }}\n\
             [stages.emb]\nkind = \"embed_text\"\ninputs = {{ segments = \"reviews.segments\" }}\nparams = {{ model = \"fine-tuned\" }}\n",
            data().join("text_finetune/rated_texts.pkl")
        ),
    );
    dir.mmflow(&["run", "embed.toml"]).ok();
}

#[test]
fn a_frozen_text_encoder_stays_as_loaded() {
    let dir = Dir::new();
    dir.write("p.toml", &text_only("all", 3));
    dir.mmflow(&["run", "p.toml"]).ok();
    let saved = tensors(&dir.join("data/runs/p/model/model.safetensors"));
    for (name, before) in tensors(&data().join("models/tiny-bert/model.safetensors")) {
        assert!(
            same(&before, &saved[&format!("bert.{name}")]),
            "{name} moved"
        );
    }
}

#[test]
fn a_text_encoder_trains_with_audio_and_vision() {
    let dir = Dir::new();
    let config = text_only("embeddings", 3)
        .replace("modalities = {}", "modalities = { audio = \"audio\", visual = \"vision\" }")
        .replace(
            "inputs = { segments = \"reviews.segments\" }\n[stages.model.params]",
            "inputs = { segments = \"reviews.segments\", features = [\"reviews.audio\", \"reviews.visual\"] }\n[stages.model.params]\nencoders = { audio = { kind = \"lstm\", hidden = 8 } }",
        )
        .replace(
            "inputs = { model = \"model.model\", segments = \"reviews.segments\" }",
            "inputs = { model = \"model.model\", segments = \"reviews.segments\", features = [\"reviews.audio\", \"reviews.visual\"] }",
        );
    dir.write("p.toml", &config);
    dir.mmflow(&["run", "p.toml"]).ok();
    let saved = tensors(&dir.join("data/runs/p/model/model.safetensors"));
    assert!(
        saved.keys().any(|k| k.starts_with("model.enc.audio.lstm.")),
        "{:?}",
        saved.keys()
    );
    let loaded = tensors(&data().join("models/tiny-bert/model.safetensors"));
    let name = "embeddings.word_embeddings.weight";
    assert!(
        same(&loaded[name], &saved[&format!("bert.{name}")]),
        "frozen embeddings moved"
    );
    let name = "encoder.layer.0.output.dense.weight";
    assert!(
        !same(&loaded[name], &saved[&format!("bert.{name}")]),
        "a layer did not train"
    );
    // Evaluating without the features the model was trained with names what is missing.
    let without = config.replace(
        "inputs = { model = \"model.model\", segments = \"reviews.segments\", features = [\"reviews.audio\", \"reviews.visual\"] }",
        "inputs = { model = \"model.model\", segments = \"reviews.segments\" }",
    );
    dir.write("p.toml", &without);
    let run = dir.mmflow(&["run", "p.toml"]).expect(1);
    assert!(run.says("eval", "needs modality `audio`"), "{}", run.stderr);
}

/// `finetune` continues a model with a fine-tuned text encoder: a phase that freezes
/// `text_encoder` leaves it as trained; otherwise the encoder learns at the phase's
/// `text_encoder` rate (next to nothing here: it stays within rounding) while the rest of the
/// model learns at the phase's own, and at the default rate it moves.
#[test]
fn finetune_gives_the_text_encoder_its_own_rate() {
    let dir = Dir::new();
    let tune = |stage: &str, phase: &str| {
        format!(
            "\n[stages.{stage}]\nkind = \"finetune\"\ninputs = {{ model = \"model.model\", segments = \"reviews.segments\" }}\n\
             [[stages.{stage}.params.phases]]\nname = \"{stage}\"\noptim = {{ epochs = 2, learning_rate = 0.003, patience = 5 }}\n{phase}\n"
        )
    };
    let config = text_only("none", 1)
        + &tune("frozen", "freeze = [\"text_encoder\"]")
        + &tune(
            "slow",
            "text_encoder = { learning_rate = 1e-12, warmup = 0.0 }",
        )
        + &tune("default", "");
    dir.write("p.toml", &config);
    dir.mmflow(&["run", "p.toml"]).ok();
    let trained = tensors(&dir.join("data/runs/p/model/model.safetensors"));
    let tuned = |stage: &str| tensors(&dir.join(&format!("data/runs/p/{stage}/model.safetensors")));
    let (frozen, slow, default) = (tuned("frozen"), tuned("slow"), tuned("default"));
    let encoder = |name: &String| name.starts_with("bert.");
    for (name, before) in trained.iter().filter(|(n, _)| encoder(n)) {
        assert!(same(before, &frozen[name]), "frozen: {name} moved");
        let moved = (before - &slow[name])
            .unwrap()
            .abs()
            .unwrap()
            .flatten_all()
            .unwrap()
            .max(0)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!(moved < 1e-9, "slow: {name} moved by {moved}");
    }
    let moved_in = |after: &HashMap<String, Tensor>, which: &dyn Fn(&String) -> bool| {
        trained
            .iter()
            .filter(|(n, _)| which(n))
            .any(|(n, before)| !same(before, &after[n]))
    };
    assert!(
        moved_in(&slow, &|n| !encoder(n)),
        "slow: the rest of the model did not learn"
    );
    assert!(
        moved_in(&frozen, &|n| !encoder(n)),
        "frozen: the rest of the model did not learn"
    );
    assert!(
        moved_in(&default, &encoder),
        "default: the encoder did not learn"
    );
}

#[test]
fn text_encoder_misuse_is_refused_at_validate() {
    for (edit, key, says) in [
        (
            "pooling = \"tokens\", ",
            "text_encoder.pooling",
            "one vector per text",
        ),
        ("max_length = 1, ", "text_encoder.max_length", "at least 2"),
        (
            "architecture = \"tfn\"\n",
            "text_encoder",
            "belongs to architecture `mmflow`",
        ),
    ] {
        let dir = Dir::new();
        let config = if key == "text_encoder" {
            text_only("none", 2).replace("text_encoder = {", &format!("{edit}text_encoder = {{"))
        } else {
            text_only("none", 2)
                .replace(", max_length = 32", "")
                .replace("text_encoder = {", &format!("text_encoder = {{ {edit}"))
                .replace("{ pooling", "{pooling")
        };
        dir.write("p.toml", &config);
        let run = dir.mmflow(&["validate", "p.toml"]).expect(2);
        assert!(
            run.stderr.contains(key) && run.stderr.contains(says),
            "{key}: {}",
            run.stderr
        );
    }
}

/// all-MiniLM-L6-v2 (as `embed_text`'s golden test finds it) trains as transformers trains it:
/// the same token ids, pooled vectors, gradients and parameters after three AdamW steps
/// (slices of each, Adam's ε 1e-2: `tests/data/text_finetune/bert_golden.py --slices --eps
/// 1e-2`, which says why). The tiny model's full comparison is
/// `stages/src/train/text_bert/tests.rs`.
#[test]
fn minilm_fine_tunes_as_transformers_does() {
    let Some(folder) = crate::embed_text::minilm_folder() else {
        return;
    };
    let device = Device::Cpu;
    let fixture = data().join("text_finetune/minilm_golden.safetensors");
    let golden = tensors(&fixture);
    // The texts are in the file's metadata: the JSON header after its 8-byte length.
    let bytes = std::fs::read(&fixture).unwrap();
    let length = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + length]).unwrap();
    let meta = &header["__metadata__"];
    let texts: Vec<String> = serde_json::from_str(meta["texts"].as_str().unwrap()).unwrap();
    let eps: f64 = meta["eps"].as_str().unwrap().parse().unwrap();
    let want = |name: &str| golden.get(name).unwrap_or_else(|| panic!("no `{name}`"));
    let model = ModelFolder::open(&folder, Some(12)).unwrap();
    let tokens: Vec<Tokens> = texts.iter().map(|t| model.tokenize(t).unwrap()).collect();
    let ids: Vec<Vec<i64>> = want("input_ids").to_vec2().unwrap();
    let mut used: Vec<u32> = Vec::new();
    for (t, ids) in tokens.iter().zip(&ids) {
        let got: Vec<i64> = t.ids.iter().map(|&i| i64::from(i)).collect();
        assert_eq!(got, ids[..got.len()], "token ids");
        assert!(ids[got.len()..].iter().all(|&i| i == 0), "padding");
        used.extend(&t.ids);
    }
    used.sort_unstable();
    used.dedup();

    let mut config = model.config.clone();
    config.hidden_dropout = 0.0;
    config.attention_dropout = 0.0;
    let mut store = ParamStore::new(0, &device);
    let bert = TextBert::new(&mut store, &config, Freeze::default(), &|name, shape| {
        model.parameter(name, shape, &device, "test")
    })
    .unwrap();
    let batch = TokenBatch::new(&tokens.iter().collect::<Vec<_>>(), &device).unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let mut pass = Pass {
        train: true,
        rng: &mut rng,
    };
    for (pooling, name) in [(Pooling::Mean, "pooled.mean"), (Pooling::Cls, "pooled.cls")] {
        let got = bert.pooled(&batch, pooling, &mut pass).unwrap();
        assert!(relative(&got, want(name)) <= 1e-5, "{name}");
    }
    // The slice the fixture keeps of a parameter (or its gradient) `name`.
    let slice = |name: &str, t: &Tensor| -> Tensor {
        if t.rank() == 1 {
            return t.clone();
        }
        let rows: Vec<u32> = if name == "embeddings.word_embeddings.weight" {
            used.clone()
        } else {
            vec![0, t.dim(0).unwrap() as u32 - 1]
        };
        t.index_select(&Tensor::new(rows.as_slice(), &device).unwrap(), 0)
            .unwrap()
    };
    let projection = want("projection").unsqueeze(1).unwrap();
    let loss = |pass: &mut Pass<'_>| {
        bert.pooled(&batch, Pooling::Mean, pass)
            .unwrap()
            .matmul(&projection)
            .unwrap()
            .squeeze(1)
            .unwrap()
            .sub(want("targets"))
            .unwrap()
            .sqr()
            .unwrap()
            .mean_all()
            .unwrap()
    };
    let grads = loss(&mut pass).backward().unwrap();
    let named = store.named_vars();
    assert_eq!(named.len(), 101, "every parameter of all-MiniLM-L6-v2");
    for (name, var) in &named {
        let hf = name.strip_prefix("bert.").unwrap();
        let grad = grads.get(var).unwrap();
        if hf.ends_with("attention.self.key.bias") {
            // Zero but for rounding (softmax ignores it); see the tiny model's test.
            continue;
        }
        let worst = relative(&slice(hf, grad), want(&format!("grad.{hf}")));
        assert!(worst <= 1e-4, "gradient of {hf}: differs by {worst:e}");
        let norm = grad
            .sqr()
            .unwrap()
            .sum_all()
            .unwrap()
            .sqrt()
            .unwrap()
            .reshape(1)
            .unwrap();
        let worst = relative(&norm, want(&format!("norm.{hf}")));
        assert!(worst <= 1e-4, "gradient norm of {hf}: differs by {worst:e}");
    }
    let config = AdamWConfig {
        eps,
        ..AdamWConfig::new(1e-3, 0.01)
    };
    let mut opt = AdamW::new(store.vars(), config).unwrap();
    for _ in 0..3 {
        opt.step(loss(&mut pass).backward().unwrap(), None).unwrap();
    }
    for (name, var) in &named {
        let hf = name.strip_prefix("bert.").unwrap();
        if hf.ends_with("attention.self.key.bias") {
            continue;
        }
        let got = slice(hf, var.as_tensor());
        let worst = relative_to(&got, want(&format!("step3.{hf}")), 1.0);
        assert!(
            worst <= 1e-5,
            "{hf} after 3 AdamW steps: differs by {worst:e}"
        );
    }
}

/// The largest difference relative to the reference's largest magnitude (at least `floor`).
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

fn relative(got: &Tensor, want: &Tensor) -> f32 {
    relative_to(got, want, 1e-12)
}
