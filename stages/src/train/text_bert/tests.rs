//! Golden test against transformers (`tests/data/text_finetune/bert_golden.py` writes the
//! fixture with transformers and PyTorch from the repository's tiny BERT): the same texts give
//! the same token ids, pooled vectors, gradients of an MSE loss and parameters after three
//! AdamW steps.

use std::path::PathBuf;

use candle_core::{Device, Tensor};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use super::*;
use crate::text_encoder::ModelFolder;
use crate::train::golden::{relative, stepped};
use crate::train::optim::{AdamW, AdamWConfig};
use crate::train::weights::read_checkpoint;
use mmflow_schemas::Split;

fn data(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/data")
        .join(path)
}

/// The fixture's texts (its metadata).
fn texts(fixture: &std::path::Path) -> Vec<String> {
    let bytes = std::fs::read(fixture).unwrap();
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    let texts = &meta.metadata().as_ref().unwrap()["texts"];
    serde_json::from_str(texts).unwrap()
}

fn matches_transformers(device: &Device) {
    let fixture = data("text_finetune/tiny_bert_golden.safetensors");
    let golden = read_checkpoint(&fixture, device).unwrap().0;
    let want = |name: &str| golden.get(name).unwrap_or_else(|| panic!("no `{name}`"));
    let folder = ModelFolder::open(&data("models/tiny-bert"), Some(12)).unwrap();

    // The same token ids as transformers' tokenizer, padding aside.
    let texts = texts(&fixture);
    let tokens: Vec<Tokens> = texts.iter().map(|t| folder.tokenize(t).unwrap()).collect();
    let ids: Vec<Vec<i64>> = want("input_ids").to_vec2().unwrap();
    let mask: Vec<Vec<i64>> = want("attention_mask").to_vec2().unwrap();
    for ((t, ids), mask) in tokens.iter().zip(&ids).zip(&mask) {
        let n = mask.iter().filter(|&&m| m == 1).count();
        let got: Vec<i64> = t.ids.iter().map(|&i| i64::from(i)).collect();
        assert_eq!(got, ids[..n], "token ids");
    }

    let mut config = folder.config.clone();
    config.hidden_dropout = 0.0;
    config.attention_dropout = 0.0;
    let mut store = ParamStore::new(0, device);
    let bert = TextBert::new(&mut store, &config, Freeze::default(), &|name, shape| {
        folder.parameter(name, shape, device, "test")
    })
    .unwrap();
    let batch = TokenBatch::new(&tokens.iter().collect::<Vec<_>>(), device).unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let mut pass = Pass {
        train: true,
        rng: &mut rng,
    };
    for (pooling, name) in [(Pooling::Mean, "pooled.mean"), (Pooling::Cls, "pooled.cls")] {
        let got = bert.pooled(&batch, pooling, &mut pass).unwrap();
        let worst = relative(&got, want(name));
        assert!(worst <= 1e-5, "{name}: differs by {worst:e} (relative)");
    }

    let projection = want("projection").unsqueeze(1).unwrap();
    let targets = want("targets");
    let loss = |pass: &mut Pass<'_>| {
        bert.pooled(&batch, Pooling::Mean, pass)
            .unwrap()
            .matmul(&projection)
            .unwrap()
            .squeeze(1)
            .unwrap()
            .sub(targets)
            .unwrap()
            .sqr()
            .unwrap()
            .mean_all()
            .unwrap()
    };
    let grads = loss(&mut pass).backward().unwrap();
    let named = store.named_vars();
    assert_eq!(named.len(), 37, "every parameter of the tiny BERT");
    let overall = named
        .iter()
        .map(|(_, v)| largest(grads.get(v).unwrap()))
        .fold(0f32, f32::max);
    for (name, var) in &named {
        let hf = name.strip_prefix(PREFIX).unwrap();
        let got = grads
            .get(var)
            .unwrap_or_else(|| panic!("no gradient for {name}"));
        let reference = want(&format!("grad.{hf}"));
        if is_key_bias(hf) {
            // Zero but for rounding, on both sides.
            for g in [got, reference] {
                assert!(
                    largest(g) <= 1e-6 * overall,
                    "{hf}: gradient {}",
                    largest(g)
                );
            }
            continue;
        }
        let worst = relative(got, reference);
        assert!(worst <= 1e-4, "gradient of {hf}: differs by {worst:e}");
    }

    let mut opt = AdamW::new(store.vars(), AdamWConfig::new(1e-3, 0.01)).unwrap();
    for _ in 0..3 {
        opt.step(loss(&mut pass).backward().unwrap(), None).unwrap();
    }
    for (name, var) in &named {
        let hf = name.strip_prefix(PREFIX).unwrap();
        if is_key_bias(hf) {
            continue;
        }
        let worst = stepped(var.as_tensor(), want(&format!("step3.{hf}")));
        assert!(
            worst <= 1e-5,
            "{hf} after 3 AdamW steps: differs by {worst:e}"
        );
    }
}

/// Attention's key bias adds one constant to every score of a query, which softmax ignores:
/// its gradient is zero but for rounding, on both sides, and Adam (which divides each step by
/// the gradient's own size) turns that rounding into steps of up to the learning rate in a
/// direction the rounding picks. Its gradient is checked to be zero; its value after the
/// steps is not compared.
fn is_key_bias(name: &str) -> bool {
    name.ends_with("attention.self.key.bias")
}

/// The largest magnitude of a tensor.
fn largest(t: &Tensor) -> f32 {
    let v: Vec<f32> = t.flatten_all().unwrap().to_vec1().unwrap();
    v.iter().fold(0f32, |m, x| m.max(x.abs()))
}

test_device!(
    matches_transformers,
    text_bert_matches_transformers_cpu,
    text_bert_matches_transformers_cuda
);

/// A text the folder's tokenizer turns into no token at all (an empty text, with a tokenizer
/// that adds no `[CLS]` or `[SEP]`) is refused, naming its segment; with the special tokens
/// the same text pools them.
#[test]
fn a_text_without_tokens_is_refused_by_segment() {
    use crate::train::data::Dataset;
    let dataset = || Dataset {
        ids: vec!["v1_0".into(), "v2_3".into()],
        splits: vec![Split::Train, Split::Train],
        users: vec![None, None],
        labels: Default::default(),
        modalities: Vec::new(),
        dropped: 0,
        datasets: Default::default(),
        texts: vec![Some("good film".into()), Some(String::new())],
        tokens: Vec::new(),
    };
    let with_special = ModelFolder::open(&data("models/tiny-bert"), None).unwrap();
    let mut data_ok = dataset();
    data_ok.tokenize(&with_special, "texts.segments").unwrap();
    assert_eq!(data_ok.tokens[1].ids.len(), 2, "[CLS] [SEP]");

    let dir = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(data("models/tiny-bert")).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, dir.path().join(path.file_name().unwrap())).unwrap();
    }
    let tokenizer = dir.path().join("tokenizer.json");
    let mut json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&tokenizer).unwrap()).unwrap();
    json["post_processor"] = serde_json::Value::Null;
    std::fs::write(&tokenizer, serde_json::to_vec(&json).unwrap()).unwrap();
    let without_special = ModelFolder::open(dir.path(), None).unwrap();
    let e = dataset()
        .tokenize(&without_special, "texts.segments")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("texts.segments") && e.contains("`v2_3`") && e.contains("no token"),
        "{e}"
    );
}
