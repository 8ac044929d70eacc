//! The `model` target: model folders for `embed_text` — the tiny BERT of `tests/data/models`,
//! as it is and with the files sentence-transformers and transformers save beside it —
//! mutated file by file and key by key (`config.json`'s values and their types; `tokenizer.json`'s
//! vocabulary ids, added tokens, normalizer, pre-tokenizer, post-processor, truncation and
//! padding; sentence-transformers' and transformers' settings; the safetensors header's
//! lengths, offsets, shapes and dtypes), then loaded with `TextEncoder::open` and used on a few
//! texts in-process, as the stage does.
//!
//! A folder travels as one input file (`.model`): the line `mmflow-model-folder`, then per file
//! a line `<length> <name>` and its bytes. It is unpacked beside the input (`<input>.folder/`)
//! before it runs, where a reproducer can be read file by file.
//!
//! Beyond "no panic": a text the tokenizer accepted never fails in the network (every problem
//! of the folder is found when it is loaded or when a text is tokenized), and every output has
//! the width and length its text says.

use std::collections::BTreeMap;
use std::path::{Component, Path};

use candle_core::Device;
use mmflow_stages::text_encoder::{Pooling, TextEncoder, Tokens};
use rand::seq::IndexedRandom;
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use serde_json::{json, Value};

use super::mutate::{self, rounds, MAX_INPUT};
use super::targets::{Seed, Target};

pub const MODEL: Target = Target {
    name: "model",
    ext: "model",
    in_directory: false,
    max_seed: 1 << 20,
    seeds: model_seeds,
    numbers: no_numbers,
    mutate: mutate_model,
    run: run_model,
};

fn no_numbers(_: &[u8]) -> Vec<(usize, usize)> {
    Vec::new()
}

/// A folder's files by their path within it.
pub type Files = BTreeMap<String, Vec<u8>>;

const MAGIC: &[u8] = b"mmflow-model-folder\n";

/// One input file holding every file of a folder.
pub fn pack(files: &Files) -> Vec<u8> {
    let mut out = MAGIC.to_vec();
    for (name, bytes) in files {
        out.extend_from_slice(format!("{} {name}\n", bytes.len()).as_bytes());
        out.extend_from_slice(bytes);
    }
    out
}

/// The files of a packed folder; `None` if it is not one (or names a path outside it).
pub fn unpack(data: &[u8]) -> Option<Files> {
    let mut rest = data.strip_prefix(MAGIC)?;
    let mut files = Files::new();
    while !rest.is_empty() {
        let line_end = rest.iter().position(|&b| b == b'\n')?;
        let line = std::str::from_utf8(&rest[..line_end]).ok()?;
        let (length, name) = line.split_once(' ')?;
        let length: usize = length.parse().ok()?;
        let inside = !name.is_empty()
            && Path::new(name)
                .components()
                .all(|c| matches!(c, Component::Normal(_)));
        if !inside {
            return None;
        }
        let body = rest.get(line_end + 1..line_end + 1 + length)?;
        files.insert(name.to_string(), body.to_vec());
        rest = &rest[line_end + 1 + length..];
    }
    Some(files)
}

/// Every file below `folder`, by relative path.
fn read_folder(folder: &Path) -> Files {
    let mut files = Files::new();
    let mut stack = vec![folder.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else {
                let name = path
                    .strip_prefix(folder)
                    .unwrap()
                    .to_string_lossy()
                    .into_owned();
                files.insert(name, std::fs::read(&path).unwrap());
            }
        }
    }
    files
}

/// What sentence-transformers and transformers save beside the tiny BERT (hidden size 32, 64
/// positions).
const SENTENCE_FILES: [(&str, &str); 6] = [
    (
        "sentence_bert_config.json",
        r#"{"max_seq_length": 48, "do_lower_case": false}"#,
    ),
    (
        "modules.json",
        r#"[{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
 {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
 {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"}]"#,
    ),
    (
        "1_Pooling/config.json",
        r#"{"word_embedding_dimension": 32, "pooling_mode_cls_token": false,
 "pooling_mode_mean_tokens": true, "pooling_mode_max_tokens": false,
 "pooling_mode_mean_sqrt_len_tokens": false, "pooling_mode_weightedmean_tokens": false,
 "pooling_mode_lasttoken": false, "include_prompt": true}"#,
    ),
    (
        "tokenizer_config.json",
        r#"{"do_lower_case": true, "unk_token": "[UNK]", "sep_token": "[SEP]", "pad_token": "[PAD]",
 "cls_token": "[CLS]", "mask_token": "[MASK]", "tokenize_chinese_chars": true,
 "strip_accents": null, "model_max_length": 64, "tokenizer_class": "BertTokenizer",
 "added_tokens_decoder": {"0": {"content": "[PAD]", "special": true},
  "2": {"content": "[CLS]", "special": true}}}"#,
    ),
    (
        "special_tokens_map.json",
        r#"{"unk_token": "[UNK]", "sep_token": "[SEP]", "pad_token": "[PAD]", "cls_token": "[CLS]",
 "mask_token": {"content": "[MASK]", "lstrip": false, "normalized": false, "rstrip": false,
 "single_word": false}}"#,
    ),
    (
        "config_sentence_transformers.json",
        r#"{"prompts": {}, "default_prompt_name": null, "similarity_fn_name": "cosine"}"#,
    ),
];

/// The tiny BERT as it is and as sentence-transformers saves it, and every folder holding a
/// `config.json` named in `MMFLOW_FUZZ_CORPUS`.
fn model_seeds(target: &Target, root: &Path) -> Vec<Vec<u8>> {
    let plain = read_folder(&root.join("tests/data/models/tiny-bert"));
    let mut sentence = plain.clone();
    for (name, text) in SENTENCE_FILES {
        sentence.insert(name.to_string(), text.as_bytes().to_vec());
    }
    let mut seeds = vec![pack(&plain), pack(&sentence)];
    let extra = std::env::var("MMFLOW_FUZZ_CORPUS").unwrap_or_default();
    for folder in extra.split(':').filter(|s| !s.is_empty()).map(Path::new) {
        if folder.join("config.json").is_file() {
            let packed = pack(&read_folder(folder));
            if packed.len() <= target.max_seed {
                seeds.push(packed);
            }
        }
    }
    seeds
}

// ---------------------------------------------------------------- values

/// Numbers around the tiny model's sizes and the edges of the integer types.
const NUMBERS: &[i128] = &[
    0,
    1,
    2,
    3,
    4,
    5,
    8,
    28,
    29,
    30,
    31,
    32,
    33,
    63,
    64,
    65,
    128,
    512,
    65_535,
    65_536,
    2_147_483_647,
    2_147_483_648,
    4_294_967_295,
    4_294_967_296,
    1 << 40,
    1 << 53,
    9_223_372_036_854_775_807,
    18_446_744_073_709_551_615,
    -1,
    -2,
    -9_223_372_036_854_775_808,
];

/// Values of other types than a key's usual one.
fn odd_value(rng: &mut ChaCha8Rng) -> Value {
    match rng.random_range(0..16) {
        0 => Value::Null,
        1 => json!(true),
        2 => json!(false),
        3 => json!(""),
        4 => json!("x"),
        5 => json!([]),
        6 => json!({}),
        7 => json!(0.5),
        8 => json!(1e-50),
        9 => json!(1e300),
        10 => json!(-0.0),
        11 => json!(1e30),
        12 => json!([1, "a"]),
        13 => json!("\u{e9}\u{1F600}\u{0}"),
        14 => json!({"a": 1}),
        _ => json!(64.0),
    }
}

/// A number near `near` (when it is one) or from [`NUMBERS`].
fn number(rng: &mut ChaCha8Rng, near: Option<&Value>) -> Value {
    if let Some(n) = near
        .and_then(Value::as_i64)
        .filter(|_| rng.random_bool(0.4))
    {
        let n = n as i128;
        let v = match rng.random_range(0..5) {
            0 => n + 1,
            1 => n - 1,
            2 => n * 2,
            3 => n / 2,
            _ => n + rng.random_range(2..70),
        };
        return int(v);
    }
    int(*NUMBERS.choose(rng).unwrap())
}

fn int(v: i128) -> Value {
    if let Ok(u) = u64::try_from(v) {
        json!(u)
    } else if let Ok(i) = i64::try_from(v) {
        json!(i)
    } else {
        json!(v as f64)
    }
}

/// A value for a key now holding `current`: mostly one of its own type.
fn value_like(rng: &mut ChaCha8Rng, current: Option<&Value>, words: &[&str]) -> Value {
    if rng.random_bool(0.25) {
        return odd_value(rng);
    }
    match current {
        Some(Value::Number(_)) | None if rng.random_bool(0.7) => number(rng, current),
        Some(Value::Bool(b)) => json!(!b),
        Some(Value::String(_)) | None if !words.is_empty() => json!(words.choose(rng).unwrap()),
        _ => odd_value(rng),
    }
}

// ---------------------------------------------------------------- JSON edits

/// JSON pointers of every node of `v` (at most `limit`).
fn pointers(v: &Value, at: String, out: &mut Vec<String>, limit: usize) {
    if out.len() >= limit {
        return;
    }
    out.push(at.clone());
    match v {
        Value::Object(m) => {
            for (k, child) in m {
                let k = k.replace('~', "~0").replace('/', "~1");
                pointers(child, format!("{at}/{k}"), out, limit);
            }
        }
        Value::Array(a) => {
            for (i, child) in a.iter().enumerate() {
                pointers(child, format!("{at}/{i}"), out, limit);
            }
        }
        _ => {}
    }
}

/// One structure-blind edit of a JSON document: a node replaced by a value of its type or
/// another, removed, duplicated, or swapped with another node.
fn edit_json(rng: &mut ChaCha8Rng, doc: &mut Value, words: &[&str]) {
    let mut all = Vec::new();
    pointers(doc, String::new(), &mut all, 4096);
    let Some(at) = all.choose(rng).cloned() else {
        return;
    };
    match rng.random_range(0..8) {
        0..=3 => {
            let current = doc.pointer(&at).cloned();
            if let Some(node) = doc.pointer_mut(&at) {
                *node = value_like(rng, current.as_ref(), words);
            }
        }
        4 | 5 => {
            // Remove the node from its parent, or duplicate it in an array.
            let Some((parent, key)) = at.rsplit_once('/') else {
                return;
            };
            let key = key.replace("~1", "/").replace("~0", "~");
            let duplicate = rng.random_bool(0.3);
            match doc.pointer_mut(parent) {
                Some(Value::Object(m)) => {
                    m.shift_remove(&key);
                }
                Some(Value::Array(a)) => {
                    if let Ok(i) = key.parse::<usize>() {
                        if duplicate && a.len() < 10_000 {
                            let copy = a[i].clone();
                            a.insert(i, copy);
                        } else {
                            a.remove(i);
                        }
                    }
                }
                _ => {}
            }
        }
        _ => {
            // Put a copy of another node here.
            let other = all.choose(rng).and_then(|p| doc.pointer(p)).cloned();
            if let (Some(other), Some(node)) = (other, doc.pointer_mut(&at)) {
                *node = other;
            }
        }
    }
}

/// Applies `edit` to the JSON file `name` (starting from `{}` when it is absent or not JSON,
/// so that edits can create it).
fn with_json(files: &mut Files, name: &str, edit: impl FnOnce(&mut Value)) {
    let mut doc = files
        .get(name)
        .and_then(|b| serde_json::from_slice(b).ok())
        .unwrap_or_else(|| json!({}));
    edit(&mut doc);
    files.insert(name.to_string(), serde_json::to_vec(&doc).unwrap());
}

/// Sets `key` of the object `doc` (if it is one) with `value`.
fn set(doc: &mut Value, key: &str, value: Value) {
    if let Some(m) = doc.as_object_mut() {
        m.insert(key.to_string(), value);
    }
}

// ---------------------------------------------------------------- config.json

const CONFIG_KEYS: &[&str] = &[
    "model_type",
    "vocab_size",
    "hidden_size",
    "num_hidden_layers",
    "num_attention_heads",
    "intermediate_size",
    "hidden_act",
    "max_position_embeddings",
    "type_vocab_size",
    "layer_norm_eps",
    "position_embedding_type",
    "pad_token_id",
    "is_decoder",
];

const CONFIG_WORDS: &[&str] = &[
    "bert",
    "roberta",
    "gelu",
    "gelu_new",
    "gelu_pytorch_tanh",
    "relu",
    "swish",
    "absolute",
    "relative_key",
];

fn mutate_config(rng: &mut ChaCha8Rng, files: &mut Files) {
    with_json(files, "config.json", |c| {
        let key = *CONFIG_KEYS.choose(rng).unwrap();
        match rng.random_range(0..6) {
            0 => {
                if let Some(m) = c.as_object_mut() {
                    m.shift_remove(key);
                }
            }
            1 => {
                // Another key's value (a size of the right type, in the wrong place).
                let other = c.get(*CONFIG_KEYS.choose(rng).unwrap()).cloned();
                set(c, key, other.unwrap_or(Value::Null));
            }
            2 => edit_json(rng, c, CONFIG_WORDS),
            _ => {
                let current = c.get(key).cloned();
                let value = value_like(rng, current.as_ref(), CONFIG_WORDS);
                set(c, key, value);
            }
        }
    });
}

// ---------------------------------------------------------------- tokenizer.json

fn normalizer(rng: &mut ChaCha8Rng) -> Value {
    let mut bert = || {
        json!({"type": "BertNormalizer", "clean_text": rng.random::<bool>(),
            "handle_chinese_chars": rng.random::<bool>(),
            "strip_accents": ([Value::Null, json!(true), json!(false)][rng.random_range(0..3)]),
            "lowercase": rng.random::<bool>()})
    };
    let choices = [
        bert(),
        Value::Null,
        json!({"type": "Lowercase"}),
        json!({"type": "NFC"}),
        json!({"type": "NFKD"}),
        json!({"type": "StripAccents"}),
        json!({"type": "Strip", "strip_left": true, "strip_right": false}),
        json!({"type": "Replace", "pattern": {"Regex": "(a+)+$"}, "content": ""}),
        json!({"type": "Replace", "pattern": {"String": "o"}, "content": "oooooooo"}),
        json!({"type": "Replace", "pattern": {"Regex": "("}, "content": "x"}),
        json!({"type": "Prepend", "prepend": "\u{2581}"}),
        json!({"type": "Precompiled", "precompiled_charsmap": "AAAA"}),
        json!({"type": "Nmt"}),
        json!({"type": "ByteLevel"}),
        json!({"type": "Sequence", "normalizers": [{"type": "NFD"}, {"type": "Lowercase"},
            {"type": "StripAccents"}]}),
        json!({"type": "Unknown"}),
    ];
    choices.choose(rng).unwrap().clone()
}

fn pre_tokenizer(rng: &mut ChaCha8Rng) -> Value {
    let choices = [
        json!({"type": "BertPreTokenizer"}),
        Value::Null,
        json!({"type": "Whitespace"}),
        json!({"type": "WhitespaceSplit"}),
        json!({"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true,
            "use_regex": true}),
        json!({"type": "Metaspace", "replacement": "\u{2581}", "prepend_scheme": "always",
            "split": true}),
        json!({"type": "Split", "pattern": {"Regex": "(\\w+\\s?)*$"}, "behavior": "Isolated",
            "invert": false}),
        json!({"type": "Split", "pattern": {"String": ""}, "behavior": "Removed",
            "invert": true}),
        json!({"type": "Punctuation", "behavior": "Isolated"}),
        json!({"type": "Digits", "individual_digits": true}),
        json!({"type": "CharDelimiterSplit", "delimiter": " "}),
        json!({"type": "UnicodeScripts"}),
        json!({"type": "Sequence", "pretokenizers": [{"type": "WhitespaceSplit"},
            {"type": "Punctuation", "behavior": "Contiguous"}]}),
    ];
    choices.choose(rng).unwrap().clone()
}

fn post_processor(rng: &mut ChaCha8Rng) -> Value {
    let id = |rng: &mut ChaCha8Rng| number(rng, None);
    let special =
        |id: &str, type_id: Value| json!({"SpecialToken": {"id": id, "type_id": type_id}});
    let sequence = |type_id: Value| json!({"Sequence": {"id": "A", "type_id": type_id}});
    let template = |single: Vec<Value>, rng: &mut ChaCha8Rng| {
        json!({"type": "TemplateProcessing", "single": single, "pair": [],
            "special_tokens": {
                "[CLS]": {"id": "[CLS]", "ids": [2], "tokens": ["[CLS]"]},
                "[SEP]": {"id": "[SEP]", "ids": [if rng.random_bool(0.5) { json!(3) } else { id(rng) }],
                    "tokens": ["[SEP]"]}}})
    };
    match rng.random_range(0..9) {
        0 => Value::Null,
        1 => json!({"type": "BertProcessing", "sep": ["[SEP]", id(rng)], "cls": ["[CLS]", 2]}),
        2 => json!({"type": "RobertaProcessing", "sep": ["[SEP]", 3], "cls": ["[CLS]", id(rng)],
            "trim_offsets": true, "add_prefix_space": rng.random::<bool>()}),
        3 => json!({"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true,
            "use_regex": true}),
        4 => json!({"type": "Sequence", "processors": [
            {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
            {"type": "BertProcessing", "sep": ["[SEP]", 3], "cls": ["[CLS]", 2]}]}),
        5 => {
            let type_id = number(rng, None);
            template(
                vec![
                    special("[CLS]", json!(0)),
                    sequence(type_id),
                    special("[SEP]", json!(0)),
                ],
                rng,
            )
        }
        6 => template(
            vec![
                special("[CLS]", json!(0)),
                sequence(json!(0)),
                sequence(json!(0)),
            ],
            rng,
        ),
        7 => {
            let n = [1, 8, 63, 64, 65, 300][rng.random_range(0..6)];
            let mut single = vec![special("[CLS]", json!(0)), sequence(json!(0))];
            single.extend(std::iter::repeat_n(special("[SEP]", json!(0)), n));
            template(single, rng)
        }
        _ => template(
            vec![
                special("[CLS]", json!(0)),
                sequence(json!(0)),
                special("[MISSING]", json!(0)),
            ],
            rng,
        ),
    }
}

fn truncation(rng: &mut ChaCha8Rng) -> Value {
    if rng.random_bool(0.2) {
        return Value::Null;
    }
    let strategy = ["LongestFirst", "OnlyFirst", "OnlySecond", "x"][rng.random_range(0..4)];
    let direction = ["Right", "Left", "Up"][rng.random_range(0..3)];
    json!({"max_length": number(rng, None), "strategy": strategy, "stride": number(rng, None),
        "direction": direction})
}

fn padding(rng: &mut ChaCha8Rng) -> Value {
    if rng.random_bool(0.2) {
        return Value::Null;
    }
    let strategy = if rng.random() {
        json!("BatchLongest")
    } else {
        json!({"Fixed": number(rng, None)})
    };
    json!({"strategy": strategy, "direction": (["Right", "Left"][rng.random_range(0..2)]),
        "pad_to_multiple_of": ([Value::Null, number(rng, None)][rng.random_range(0..2)]),
        "pad_id": number(rng, None), "pad_type_id": number(rng, None), "pad_token": "[PAD]"})
}

/// Another tokenizer model over the same vocabulary.
fn model(rng: &mut ChaCha8Rng, vocab: &Value) -> Value {
    let words: Vec<(String, u64)> = vocab
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), v.as_u64().unwrap_or(0)))
                .collect()
        })
        .unwrap_or_default();
    match rng.random_range(0..4) {
        0 => json!({"type": "WordLevel", "vocab": vocab, "unk_token": "[UNK]"}),
        1 => {
            json!({"type": "BPE", "dropout": null, "unk_token": (["[UNK]", "<unk>"][rng.random_range(0..2)]),
            "continuing_subword_prefix": null, "end_of_word_suffix": null, "fuse_unk": false,
            "byte_fallback": rng.random::<bool>(), "vocab": vocab, "merges": []})
        }
        2 => {
            let pieces: Vec<Value> = words.iter().map(|(w, _)| json!([w, -1.5])).collect();
            json!({"type": "Unigram", "unk_id": number(rng, None), "vocab": pieces,
                "byte_fallback": rng.random::<bool>()})
        }
        _ => {
            json!({"type": "WordPiece", "unk_token": (["[UNK]", "<unk>", ""][rng.random_range(0..3)]),
            "continuing_subword_prefix": (["##", "", "\u{e9}"][rng.random_range(0..3)]),
            "max_input_chars_per_word": number(rng, None), "vocab": vocab})
        }
    }
}

const TOKEN_WORDS: &[&str] = &[
    "[UNK]", "[CLS]", "[SEP]", "[PAD]", "[MASK]", "good", "##s", "", " ", "\u{e9}", "<s>",
];

fn mutate_tokenizer(rng: &mut ChaCha8Rng, files: &mut Files) {
    with_json(files, "tokenizer.json", |t| match rng.random_range(0..11) {
        0 => set(t, "normalizer", normalizer(rng)),
        1 => set(t, "pre_tokenizer", pre_tokenizer(rng)),
        2 | 3 => set(t, "post_processor", post_processor(rng)),
        4 => set(t, "truncation", truncation(rng)),
        5 => set(t, "padding", padding(rng)),
        6 => {
            // One vocabulary id.
            if let Some(vocab) = t.pointer_mut("/model/vocab").and_then(Value::as_object_mut) {
                let keys: Vec<String> = vocab.keys().cloned().collect();
                if let Some(k) = keys.choose(rng) {
                    let current = vocab.get(k).cloned();
                    vocab.insert(k.clone(), number(rng, current.as_ref()));
                }
            }
        }
        7 => {
            // One added token more.
            let token = json!({"id": number(rng, None), "content": *TOKEN_WORDS.choose(rng).unwrap(),
                "single_word": rng.random::<bool>(), "lstrip": rng.random::<bool>(),
                "rstrip": rng.random::<bool>(), "normalized": rng.random::<bool>(),
                "special": rng.random::<bool>()});
            if let Some(added) = t.get_mut("added_tokens").and_then(Value::as_array_mut) {
                added.push(token);
            }
        }
        8 => {
            let vocab = t.pointer("/model/vocab").cloned().unwrap_or(Value::Null);
            set(t, "model", model(rng, &vocab));
        }
        _ => edit_json(rng, t, TOKEN_WORDS),
    });
}

// ---------------------------------------------------------------- model.safetensors

const DTYPE_NAMES: &[&str] = &[
    "F32", "F16", "BF16", "F64", "I64", "I32", "U8", "BOOL", "F8_E4M3", "F4", "C64", "f32", "",
];

/// The header (as JSON) and the data of a safetensors file.
fn split_safetensors(bytes: &[u8]) -> Option<(serde_json::Map<String, Value>, Vec<u8>)> {
    let n = u64::from_le_bytes(*bytes.first_chunk::<8>()?);
    let end = 8usize.checked_add(usize::try_from(n).ok()?)?;
    let header = serde_json::from_slice(bytes.get(8..end)?).ok()?;
    Some((header, bytes[end..].to_vec()))
}

fn join_safetensors(header: &serde_json::Map<String, Value>, data: &[u8]) -> Vec<u8> {
    let text = serde_json::to_vec(header).unwrap();
    let mut out = (text.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(&text);
    out.extend_from_slice(data);
    out
}

fn mutate_weights(rng: &mut ChaCha8Rng, files: &mut Files) {
    let Some(bytes) = files.get_mut("model.safetensors") else {
        return;
    };
    let Some((mut header, mut data)) = split_safetensors(bytes) else {
        mutate::havoc(rng, bytes, &[], &[]);
        return;
    };
    let names: Vec<String> = header.keys().cloned().collect();
    let Some(name) = names.choose(rng).cloned() else {
        return;
    };
    let field = |header: &mut serde_json::Map<String, Value>, key: &str| {
        header
            .get_mut(&name)
            .and_then(Value::as_object_mut)
            .and_then(|entry| entry.get_mut(key))
            .map(std::mem::take)
    };
    match rng.random_range(0..9) {
        0 => {
            if let Some(entry) = header.get_mut(&name).and_then(Value::as_object_mut) {
                entry.insert("dtype".into(), json!(DTYPE_NAMES.choose(rng).unwrap()));
            }
        }
        1 => {
            // One dimension of the shape changed, or one added or taken away.
            if let Some(Value::Array(mut shape)) = field(&mut header, "shape") {
                match rng.random_range(0..3) {
                    0 => shape.push(json!(1)),
                    1 => {
                        shape.pop();
                    }
                    _ => {
                        if !shape.is_empty() {
                            let i = rng.random_range(0..shape.len());
                            let current = shape[i].clone();
                            shape[i] = number(rng, Some(&current));
                        }
                    }
                }
                header[&name]["shape"] = Value::Array(shape);
            }
        }
        2 | 3 => {
            if let Some(Value::Array(mut offsets)) = field(&mut header, "data_offsets") {
                if !offsets.is_empty() {
                    let i = rng.random_range(0..offsets.len());
                    let current = offsets[i].clone();
                    offsets[i] = if rng.random_bool(0.2) {
                        json!(data.len())
                    } else {
                        number(rng, Some(&current))
                    };
                }
                header[&name]["data_offsets"] = Value::Array(offsets);
            }
        }
        4 => {
            header.shift_remove(&name);
        }
        5 => {
            // Renamed: with the `bert.` prefix, a letter less, or swapped with another.
            let entry = header.shift_remove(&name).unwrap();
            let new = match rng.random_range(0..3) {
                0 => format!("bert.{name}"),
                1 => name[..name.len().saturating_sub(1)].to_string(),
                _ => names.choose(rng).unwrap().clone(),
            };
            if let Some(displaced) = header.insert(new, entry) {
                header.insert(name, displaced);
            }
        }
        6 => set_value(&mut header, "__metadata__", odd_value(rng)),
        7 => {
            // A value that is not finite, or the data cut or grown.
            match rng.random_range(0..3) {
                0 if data.len() >= 4 => {
                    let at = rng.random_range(0..data.len() / 4) * 4;
                    let bits = [0x7fc0_0000u32, 0x7f80_0000, 0xff80_0000][rng.random_range(0..3)];
                    data[at..at + 4].copy_from_slice(&bits.to_le_bytes());
                }
                1 => data.truncate(rng.random_range(0..=data.len())),
                _ => data.extend(std::iter::repeat_n(0u8, rng.random_range(1..64))),
            }
        }
        _ => {
            // The header length itself.
            *bytes = join_safetensors(&header, &data);
            let at = 0;
            mutate::put_interesting(rng, bytes, at, 8);
            return;
        }
    }
    *bytes = join_safetensors(&header, &data);
}

fn set_value(m: &mut serde_json::Map<String, Value>, key: &str, value: Value) {
    m.insert(key.to_string(), value);
}

// ---------------------------------------------------------------- sentence-transformers, transformers

/// The files beside the model and the keys and values worth setting in each.
const SIDE_FILES: &[(&str, &[&str], &[&str])] = &[
    (
        "sentence_bert_config.json",
        &["max_seq_length", "do_lower_case"],
        &[],
    ),
    (
        "modules.json",
        &[],
        &[
            "sentence_transformers.models.Transformer",
            "sentence_transformers.models.Pooling",
            "sentence_transformers.models.Normalize",
            "sentence_transformers.models.Dense",
            "",
            "1_Pooling",
            "../1_Pooling",
            "/",
            ".hidden",
            "2_Normalize/x",
        ],
    ),
    (
        "1_Pooling/config.json",
        &[
            "word_embedding_dimension",
            "pooling_mode_cls_token",
            "pooling_mode_mean_tokens",
            "pooling_mode_max_tokens",
            "include_prompt",
        ],
        &[],
    ),
    (
        "tokenizer_config.json",
        &[
            "do_lower_case",
            "strip_accents",
            "tokenize_chinese_chars",
            "model_max_length",
            "truncation_side",
            "cls_token",
            "sep_token",
            "unk_token",
            "additional_special_tokens",
            "added_tokens_decoder",
        ],
        &["right", "left", "[CLS]", "<s>", "[MASK]", ""],
    ),
    (
        "special_tokens_map.json",
        &[
            "cls_token",
            "mask_token",
            "bos_token",
            "additional_special_tokens",
        ],
        &["[CLS]", "[SEP]", "<s>", "", "[UNK]"],
    ),
    (
        "config_sentence_transformers.json",
        &["prompts", "default_prompt_name"],
        &["query", ""],
    ),
];

fn mutate_side_file(rng: &mut ChaCha8Rng, files: &mut Files) {
    let &(name, keys, words) = SIDE_FILES.choose(rng).unwrap();
    if !files.contains_key(name) {
        if let Some((_, text)) = SENTENCE_FILES.iter().find(|(n, _)| *n == name) {
            files.insert(name.to_string(), text.as_bytes().to_vec());
        }
    }
    with_json(files, name, |doc| match keys.choose(rng) {
        Some(key) if rng.random_bool(0.6) => {
            let current = doc.get(*key).cloned();
            let value = value_like(rng, current.as_ref(), words);
            set(doc, key, value);
        }
        _ => edit_json(rng, doc, words),
    });
}

// ---------------------------------------------------------------- the mutator and the run

fn mutate_model(rng: &mut ChaCha8Rng, seeds: &[Seed]) -> Vec<u8> {
    let seed = seeds.choose(rng).unwrap();
    let other = seeds.choose(rng).unwrap();
    let mut files = unpack(&seed.bytes).expect("seeds are packed folders");
    for _ in 0..rounds(rng) {
        match rng.random_range(0..20) {
            0..=5 => mutate_tokenizer(rng, &mut files),
            6..=8 => mutate_config(rng, &mut files),
            9..=11 => mutate_weights(rng, &mut files),
            12..=15 => mutate_side_file(rng, &mut files),
            16 => {
                // A file taken away, or taken from the other seed.
                let names: Vec<String> = files.keys().cloned().collect();
                let Some(name) = names.choose(rng).cloned() else {
                    continue;
                };
                match unpack(&other.bytes).and_then(|o| o.get(&name).cloned()) {
                    Some(theirs) if rng.random() => {
                        files.insert(name, theirs);
                    }
                    _ => {
                        files.remove(&name);
                    }
                }
            }
            _ => {
                // Bytes of one file.
                let names: Vec<String> = files.keys().cloned().collect();
                if let Some(name) = names.choose(rng) {
                    let bytes = files.get_mut(name).unwrap();
                    let numbers = mutate::number_positions(&bytes[..bytes.len().min(1 << 16)]);
                    mutate::havoc(rng, bytes, &other.bytes, &numbers);
                }
            }
        }
        if files.values().map(Vec::len).sum::<usize>() > MAX_INPUT {
            break;
        }
    }
    pack(&files)
}

/// Texts the folder is used on: empty, blank, ordinary, longer than the model's positions,
/// odd characters, the special tokens themselves.
const TEXTS: [&str; 7] = [
    "",
    " \t ",
    "It was really good, not bad at all!",
    "the movie was so boring and the movie was so bad i hated this movie and it was not fine \
     it was not great it was not good it was very very bad and so boring the movie is bad , \
     it was really not good and it was really not fine ! i hated this and i hated the movie . \
     so , was it good ? it was not ! it was bad , very bad , really very bad and so boring .",
    "\u{c9}t\u{e9} \u{65e5}\u{672c}\u{8a9e} \u{1F600}\u{0}\u{7f}\u{200b}",
    "[CLS] [SEP] [MASK] [PAD] [UNK] <s>",
    "##s ## . , ! ?",
];

fn run_model(path: &Path) {
    let bytes = std::fs::read(path).expect("the input was just written");
    let Some(files) = unpack(&bytes) else {
        return;
    };
    let folder = path.with_extension("folder");
    let _ = std::fs::remove_dir_all(&folder);
    for (name, body) in &files {
        let file = folder.join(name);
        let written = std::fs::create_dir_all(file.parent().unwrap())
            .and_then(|()| std::fs::write(&file, body));
        if written.is_err() {
            // A name that is also a folder (`a` and `a/b`): the folder cannot be laid out.
            return;
        }
    }
    if let Ok(encoder) = TextEncoder::open(&folder, None, &Device::Cpu) {
        use_encoder(&encoder);
    }
}

/// Tokenizes [`TEXTS`] and runs the accepted ones through the network, with each pooling.
fn use_encoder(encoder: &TextEncoder) {
    let tokens: Vec<Tokens> = TEXTS
        .iter()
        .filter_map(|t| encoder.tokenize(t).ok())
        .collect();
    for t in &tokens {
        assert_eq!(t.ids.len(), t.type_ids.len(), "ids and type ids");
        assert!(
            t.ids.len() <= encoder.max_length,
            "{} tokens, max_length {}",
            t.ids.len(),
            encoder.max_length
        );
    }
    let batch: Vec<&Tokens> = tokens.iter().collect();
    for pooling in [Pooling::Tokens, Pooling::Mean, Pooling::Cls] {
        let out = encoder
            .embed(&batch, pooling)
            .unwrap_or_else(|e| panic!("texts the tokenizer accepted failed in the network: {e}"));
        assert_eq!(out.len(), batch.len());
        for (v, t) in out.iter().zip(&batch) {
            let expected = match pooling {
                Pooling::Tokens => t.ids.len() * encoder.dim,
                Pooling::Mean | Pooling::Cls => encoder.dim,
            };
            assert_eq!(v.len(), expected, "{pooling:?}");
        }
    }
}

#[test]
fn packed_folders_unpack_and_the_seeds_load() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let seeds = model_seeds(&MODEL, root);
    assert_eq!(seeds.len(), 2);
    let dir = tempfile::tempdir().unwrap();
    for (i, seed) in seeds.iter().enumerate() {
        let files = unpack(seed).unwrap();
        assert_eq!(pack(&files), *seed);
        let input = dir.path().join(format!("seed{i}.model"));
        std::fs::write(&input, seed).unwrap();
        run_model(&input);
        let encoder =
            TextEncoder::open(&input.with_extension("folder"), None, &Device::Cpu).unwrap();
        assert_eq!(encoder.max_length, if i == 0 { 64 } else { 48 });
        assert_eq!(encoder.normalize, i == 1);
    }
    assert_eq!(unpack(b"mmflow-model-folder\n3 ../x\nabc"), None);
    assert_eq!(unpack(b"mmflow-model-folder\n9 x\nabc"), None);
    assert_eq!(unpack(b"not a folder"), None);
}
