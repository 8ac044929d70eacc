//! Bad inputs: `embed_text`'s model folder, params and segments (through the CLI).

use serde_json::{json, Map, Value};

use super::{check, pipeline, Case};
use crate::embed_text::tiny_model;
use crate::util::Dir;

/// Synthetic segments (they carry no text) embedded with the model folder `model/`.
const EMBED: &str = r#"
[pipeline]
name = "e"

[stages.src]
kind = "synthetic"
params = { profile = "mosi", scale = 0.02 }

[stages.embed]
kind = "embed_text"
inputs = { segments = "src.segments" }
params = { model = "model" PARAMS }
"#;

fn embed_pipeline(d: &Dir, params: &str) {
    pipeline(d, &EMBED.replace("PARAMS", params));
}

/// The tiny model at `model/` with `edit` applied to its JSON file `name` (`{}` when the
/// folder lacks it), and the pipeline that embeds with it.
fn model_with(d: &Dir, name: &str, edit: impl FnOnce(&mut Value)) {
    tiny_model(&d.join("model"));
    let path = d.join("model").join(name);
    let mut doc: Value = std::fs::read(&path)
        .map(|b| serde_json::from_slice(&b).unwrap())
        .unwrap_or_else(|_| json!({}));
    edit(&mut doc);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, doc.to_string()).unwrap();
    embed_pipeline(d, "");
}

/// The tiny model at `model/` with `edit` applied to its weights' header (the JSON object of
/// tensors; `edit` may return another length to write before it), and the pipeline that
/// embeds with it.
fn weights_with(d: &Dir, edit: impl FnOnce(&mut Map<String, Value>) -> Option<u64>) {
    tiny_model(&d.join("model"));
    let path = d.join("model/model.safetensors");
    let bytes = std::fs::read(&path).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let mut header: Map<String, Value> = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    let length = edit(&mut header);
    let text = serde_json::to_vec(&header).unwrap();
    let mut out = length.unwrap_or(text.len() as u64).to_le_bytes().to_vec();
    out.extend(text);
    out.extend_from_slice(&bytes[8 + n..]);
    std::fs::write(&path, out).unwrap();
    embed_pipeline(d, "");
}

/// The tiny model's post-processor with one more `[SEP]` per text, `n` times.
fn more_specials(t: &mut Value, n: usize) {
    let sep = t["post_processor"]["single"][2].clone();
    let single = t["post_processor"]["single"].as_array_mut().unwrap();
    single.extend(std::iter::repeat_n(sep, n));
}

/// The synthetic source's outputs (and their run-cache entry), written before `embed` fails.
const SOURCE_OUTPUTS: &[&str] = &["data/runs/e/src", "data/runs/.mmflow-cache"];

#[test]
fn embed_text_bad_inputs() {
    check(&[
        Case {
            what: "a segments table without text",
            setup: |d| {
                tiny_model(&d.join("model"));
                embed_pipeline(d, "");
            },
            args: &["run", "p.toml"],
            code: 1,
            says: &["embed", "column `text`", "no raw text"],
            may_write: SOURCE_OUTPUTS,
        },
        Case {
            what: "a model folder without config.json",
            setup: |d| {
                tiny_model(&d.join("model"));
                std::fs::remove_file(d.join("model/config.json")).unwrap();
                embed_pipeline(d, "");
            },
            args: &["run", "p.toml"],
            code: 1,
            says: &["embed", "`config.json` is missing"],
            may_write: SOURCE_OUTPUTS,
        },
        Case {
            what: "a model folder whose config is not BERT's",
            setup: |d| {
                tiny_model(&d.join("model"));
                let path = d.join("model/config.json");
                let text = std::fs::read_to_string(&path).unwrap();
                std::fs::write(&path, text.replace("\"bert\"", "\"t5\"")).unwrap();
                embed_pipeline(d, "");
            },
            args: &["run", "p.toml"],
            code: 1,
            says: &[
                "embed",
                "config.json",
                "`model_type`: `t5` is not supported",
            ],
            may_write: SOURCE_OUTPUTS,
        },
        Case {
            what: "a model folder that does not exist",
            setup: |d| embed_pipeline(d, ""),
            args: &["run", "p.toml"],
            code: 1,
            says: &["embed", "model"],
            may_write: SOURCE_OUTPUTS,
        },
        Case {
            what: "a tokenizer word id beyond vocab_size",
            setup: |d| {
                model_with(d, "tokenizer.json", |t| {
                    t["model"]["vocab"]["good"] = json!(12)
                })
            },
            args: &["run", "p.toml"],
            code: 1,
            says: &[
                "embed",
                "model/tokenizer.json",
                "key `model.vocab`",
                "`good` has id 12",
                "vocab_size (12)",
            ],
            may_write: SOURCE_OUTPUTS,
        },
        Case {
            what: "an added token beyond vocab_size",
            setup: |d| {
                model_with(d, "tokenizer.json", |t| {
                    // Not in the vocabulary: tokenizers gives it the next id, 12.
                    let mut extra = t["added_tokens"][3].clone();
                    extra["content"] = json!("<extra>");
                    t["added_tokens"].as_array_mut().unwrap().push(extra);
                })
            },
            args: &["run", "p.toml"],
            code: 1,
            says: &[
                "embed",
                "model/tokenizer.json",
                "key `added_tokens`",
                "`<extra>` has id 12",
            ],
            may_write: SOURCE_OUTPUTS,
        },
        Case {
            what: "a special token the post-processor inserts beyond vocab_size",
            setup: |d| {
                model_with(d, "tokenizer.json", |t| {
                    t["post_processor"]["special_tokens"]["[CLS]"]["ids"] = json!([500])
                })
            },
            args: &["run", "p.toml"],
            code: 1,
            says: &[
                "embed",
                "model/tokenizer.json",
                "key `post_processor`",
                "gives token id 500",
            ],
            may_write: SOURCE_OUTPUTS,
        },
        Case {
            what: "a token type id beyond type_vocab_size",
            setup: |d| {
                model_with(d, "tokenizer.json", |t| {
                    t["post_processor"]["single"][1]["Sequence"]["type_id"] = json!(2)
                })
            },
            args: &["run", "p.toml"],
            code: 1,
            says: &[
                "embed",
                "model/tokenizer.json",
                "key `post_processor`",
                "type id 2",
                "type_vocab_size (2)",
            ],
            may_write: SOURCE_OUTPUTS,
        },
        Case {
            what: "a post-processor adding more special tokens than the model's positions",
            setup: |d| model_with(d, "tokenizer.json", |t| more_specials(t, 20)),
            args: &["run", "p.toml"],
            code: 1,
            says: &[
                "embed",
                "model/tokenizer.json",
                "key `post_processor`",
                "adds 22 special tokens",
                "16 positions",
            ],
            may_write: SOURCE_OUTPUTS,
        },
        Case {
            what: "max_seq_length 0 in sentence_bert_config.json",
            setup: |d| {
                model_with(d, "sentence_bert_config.json", |c| {
                    c["max_seq_length"] = json!(0)
                })
            },
            args: &["run", "p.toml"],
            code: 1,
            says: &[
                "embed",
                "model/sentence_bert_config.json",
                "key `max_seq_length`",
                "0 is fewer than 2",
            ],
            may_write: SOURCE_OUTPUTS,
        },
        Case {
            what: "max_seq_length beyond the model's positions",
            setup: |d| {
                model_with(d, "sentence_bert_config.json", |c| {
                    c["max_seq_length"] = json!(512)
                })
            },
            args: &["run", "p.toml"],
            code: 1,
            says: &[
                "embed",
                "model/sentence_bert_config.json",
                "key `max_seq_length`",
                "16 positions",
            ],
            may_write: SOURCE_OUTPUTS,
        },
        Case {
            what: "do_lower_case that is not a boolean",
            setup: |d| {
                model_with(d, "sentence_bert_config.json", |c| {
                    c["do_lower_case"] = json!("yes")
                })
            },
            args: &["run", "p.toml"],
            code: 1,
            says: &[
                "embed",
                "model/sentence_bert_config.json",
                "key `do_lower_case`",
            ],
            may_write: SOURCE_OUTPUTS,
        },
        Case {
            what: "hidden_size not a multiple of num_attention_heads",
            setup: |d| model_with(d, "config.json", |c| c["num_attention_heads"] = json!(3)),
            args: &["run", "p.toml"],
            code: 1,
            says: &[
                "embed",
                "model/config.json",
                "key `hidden_size`",
                "not a multiple of num_attention_heads (3)",
            ],
            may_write: SOURCE_OUTPUTS,
        },
        Case {
            what: "max_position_embeddings below 2",
            setup: |d| {
                model_with(d, "config.json", |c| {
                    c["max_position_embeddings"] = json!(1)
                })
            },
            args: &["run", "p.toml"],
            code: 1,
            says: &[
                "embed",
                "model/config.json",
                "key `max_position_embeddings`",
            ],
            may_write: SOURCE_OUTPUTS,
        },
        Case {
            what: "a layer_norm_eps that is 0 in float32",
            setup: |d| model_with(d, "config.json", |c| c["layer_norm_eps"] = json!(1e-50)),
            args: &["run", "p.toml"],
            code: 1,
            says: &[
                "embed",
                "model/config.json",
                "key `layer_norm_eps`",
                "float32",
            ],
            may_write: SOURCE_OUTPUTS,
        },
        Case {
            what: "an intermediate_size the weights do not have",
            setup: |d| model_with(d, "config.json", |c| c["intermediate_size"] = json!(20)),
            args: &["run", "p.toml"],
            code: 1,
            says: &[
                "embed",
                "model/model.safetensors",
                "tensor `encoder.layer.0.intermediate.dense.weight`",
                "shape [16, 8], but config.json describes [20, 8]",
            ],
            may_write: SOURCE_OUTPUTS,
        },
        Case {
            what: "a string where config.json has a size",
            setup: |d| model_with(d, "config.json", |c| c["vocab_size"] = json!("12")),
            args: &["run", "p.toml"],
            code: 1,
            says: &[
                "embed",
                "model/config.json",
                "key `vocab_size`",
                "invalid type",
            ],
            may_write: SOURCE_OUTPUTS,
        },
        Case {
            what: "a safetensors header length beyond the file",
            setup: |d| weights_with(d, |_| Some(1 << 40)),
            args: &["run", "p.toml"],
            code: 1,
            says: &[
                "embed",
                "model/model.safetensors",
                "header length 1099511627776 is beyond",
            ],
            may_write: SOURCE_OUTPUTS,
        },
        Case {
            what: "safetensors offsets outside the data",
            setup: |d| {
                weights_with(d, |h| {
                    h["embeddings.LayerNorm.bias"]["data_offsets"] = json!([0, 1u64 << 40]);
                    None
                })
            },
            args: &["run", "p.toml"],
            code: 1,
            says: &[
                "embed",
                "model/model.safetensors",
                "tensor `embeddings.LayerNorm.bias`",
                "outside the data",
            ],
            may_write: SOURCE_OUTPUTS,
        },
        Case {
            what: "safetensors offsets overlapping another tensor's",
            setup: |d| {
                weights_with(d, |h| {
                    let other = h["embeddings.LayerNorm.weight"]["data_offsets"].clone();
                    h["embeddings.LayerNorm.bias"]["data_offsets"] = other;
                    None
                })
            },
            args: &["run", "p.toml"],
            code: 1,
            says: &[
                "embed",
                "model/model.safetensors",
                "overlap",
                "embeddings.LayerNorm",
            ],
            may_write: SOURCE_OUTPUTS,
        },
        Case {
            what: "a weight stored as integers",
            setup: |d| {
                weights_with(d, |h| {
                    h["embeddings.LayerNorm.bias"]["dtype"] = json!("I32");
                    None
                })
            },
            args: &["run", "p.toml"],
            code: 1,
            says: &[
                "embed",
                "model/model.safetensors",
                "tensor `embeddings.LayerNorm.bias`",
                "dtype I32 is not a float dtype",
            ],
            may_write: SOURCE_OUTPUTS,
        },
        Case {
            what: "a module sentence-transformers runs that embed_text does not",
            setup: |d| {
                model_with(d, "modules.json", |m| {
                    *m = json!([
                        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
                        {"idx": 1, "name": "1", "path": "1_Dense", "type": "sentence_transformers.models.Dense"}
                    ])
                })
            },
            args: &["run", "p.toml"],
            code: 1,
            says: &[
                "embed",
                "model/modules.json",
                "key `[1].type`",
                "Dense` is not supported",
            ],
            may_write: SOURCE_OUTPUTS,
        },
        Case {
            what: "a pooling dimension other than hidden_size",
            setup: |d| {
                model_with(d, "modules.json", |m| {
                    *m = json!([{"idx": 1, "name": "1", "path": "1_Pooling",
                        "type": "sentence_transformers.models.Pooling"}])
                });
                let pooling = d.join("model/1_Pooling");
                std::fs::create_dir_all(&pooling).unwrap();
                std::fs::write(
                    pooling.join("config.json"),
                    r#"{"word_embedding_dimension": 384}"#,
                )
                .unwrap();
            },
            args: &["run", "p.toml"],
            code: 1,
            says: &[
                "embed",
                "model/1_Pooling/config.json",
                "key `word_embedding_dimension`",
                "384 but config.json's hidden_size is 8",
            ],
            may_write: SOURCE_OUTPUTS,
        },
        Case {
            what: "tokenizer_config.json disagreeing with tokenizer.json's normalizer",
            setup: |d| {
                model_with(d, "tokenizer_config.json", |c| {
                    c["do_lower_case"] = json!(false)
                })
            },
            args: &["run", "p.toml"],
            code: 1,
            says: &[
                "embed",
                "model/tokenizer_config.json",
                "key `do_lower_case`",
                "lowercase true",
            ],
            may_write: SOURCE_OUTPUTS,
        },
        Case {
            what: "a special token tokenizer.json does not have",
            setup: |d| {
                model_with(d, "special_tokens_map.json", |c| {
                    c["mask_token"] = json!("[MASK]")
                })
            },
            args: &["run", "p.toml"],
            code: 1,
            says: &[
                "embed",
                "model/special_tokens_map.json",
                "key `mask_token`",
                "`[MASK]` is not a token of tokenizer.json",
            ],
            may_write: SOURCE_OUTPUTS,
        },
        Case {
            what: "a max_length below the special tokens a text gets",
            setup: |d| {
                model_with(d, "tokenizer.json", |t| more_specials(t, 2));
                embed_pipeline(d, ", max_length = 3");
            },
            args: &["run", "p.toml"],
            code: 1,
            says: &["embed", "`max_length` = 3", "adds 4 special tokens"],
            may_write: SOURCE_OUTPUTS,
        },
        Case {
            what: "embed_text params out of range",
            setup: |d| embed_pipeline(d, ", batch_size = 0, max_length = 1, pooling = \"max\""),
            args: &["validate", "p.toml"],
            code: 2,
            says: &[
                "stages.embed.params.batch_size",
                "stages.embed.params.max_length",
                "max",
            ],
            may_write: &[],
        },
    ]);
}
