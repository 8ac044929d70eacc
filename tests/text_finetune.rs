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
