//! `config.json`: the network's shape, checked key by key against what transformers' BERT
//! builds from it and what the encoder runs.

use mmflow_pipeline::StageError;
use serde::Deserialize;

use super::folder::File;
use crate::bert::{Activation, Config};

/// The `model_type`s the encoder runs.
const SUPPORTED_MODEL_TYPES: [&str; 1] = ["bert"];

/// The keys of `config.json` that change what the network computes (dropout only in training);
/// every other key (initialisation, `architectures`, …) is ignored.
#[derive(Debug, Deserialize)]
struct ConfigFile {
    model_type: Option<String>,
    vocab_size: usize,
    hidden_size: usize,
    num_hidden_layers: usize,
    num_attention_heads: usize,
    intermediate_size: usize,
    hidden_act: String,
    max_position_embeddings: usize,
    #[serde(default = "default_type_vocab_size")]
    type_vocab_size: usize,
    #[serde(default = "default_layer_norm_eps")]
    layer_norm_eps: f64,
    #[serde(default)]
    position_embedding_type: Option<String>,
    #[serde(default)]
    pad_token_id: Option<usize>,
    #[serde(default)]
    is_decoder: bool,
    #[serde(default = "default_dropout")]
    hidden_dropout_prob: f64,
    #[serde(default = "default_dropout")]
    attention_probs_dropout_prob: f64,
}

/// transformers' `BertConfig` default for both dropout rates.
fn default_dropout() -> f64 {
    0.1
}

fn default_type_vocab_size() -> usize {
    2
}

fn default_layer_norm_eps() -> f64 {
    1e-12
}

/// The network `config.json` describes, or the key that does not describe one the encoder runs.
pub fn read(file: &File) -> Result<Config, StageError> {
    let c: ConfigFile = file.json()?;
    let model_type = c.model_type.as_deref().unwrap_or("");
    if !SUPPORTED_MODEL_TYPES.contains(&model_type) {
        return Err(file.fault(
            "model_type",
            format!(
                "`{model_type}` is not supported (embed_text runs {})",
                SUPPORTED_MODEL_TYPES.join(", ")
            ),
        ));
    }
    let hidden_act = activation(file, &c.hidden_act)?;
    match c.position_embedding_type.as_deref() {
        None | Some("absolute") => {}
        Some(other) => {
            return Err(file.fault(
                "position_embedding_type",
                format!("`{other}` is not supported (absolute)"),
            ))
        }
    }
    if c.is_decoder {
        return Err(file.fault(
            "is_decoder",
            "true is not supported (embed_text runs BERT as an encoder, every token seeing every other)",
        ));
    }
    for (key, value) in [
        ("vocab_size", c.vocab_size),
        ("hidden_size", c.hidden_size),
        ("num_hidden_layers", c.num_hidden_layers),
        ("num_attention_heads", c.num_attention_heads),
        ("intermediate_size", c.intermediate_size),
        ("type_vocab_size", c.type_vocab_size),
    ] {
        if value == 0 {
            return Err(file.fault(key, "must be at least 1"));
        }
    }
    if c.max_position_embeddings < 2 {
        return Err(file.fault(
            "max_position_embeddings",
            format!(
                "{} is fewer than 2 ([CLS] and [SEP])",
                c.max_position_embeddings
            ),
        ));
    }
    if !c.hidden_size.is_multiple_of(c.num_attention_heads) {
        return Err(file.fault(
            "hidden_size",
            format!(
                "{} is not a multiple of num_attention_heads ({})",
                c.hidden_size, c.num_attention_heads
            ),
        ));
    }
    // LayerNorm runs in float32: an epsilon that is 0 or infinite there divides by zero or
    // flattens every vector.
    let eps32 = c.layer_norm_eps as f32;
    if !(eps32.is_finite() && eps32 > 0.0) {
        return Err(file.fault(
            "layer_norm_eps",
            format!("{} is not a positive number in float32", c.layer_norm_eps),
        ));
    }
    for (key, rate) in [
        ("hidden_dropout_prob", c.hidden_dropout_prob),
        (
            "attention_probs_dropout_prob",
            c.attention_probs_dropout_prob,
        ),
    ] {
        if !(0.0..1.0).contains(&rate) {
            return Err(file.fault(key, format!("{rate} is not a rate in [0, 1)")));
        }
    }
    if let Some(pad) = c.pad_token_id.filter(|&p| p >= c.vocab_size) {
        return Err(file.fault(
            "pad_token_id",
            format!("{pad} is not below vocab_size ({})", c.vocab_size),
        ));
    }
    Ok(Config {
        vocab_size: c.vocab_size,
        hidden_size: c.hidden_size,
        num_hidden_layers: c.num_hidden_layers,
        num_attention_heads: c.num_attention_heads,
        intermediate_size: c.intermediate_size,
        hidden_act,
        max_position_embeddings: c.max_position_embeddings,
        type_vocab_size: c.type_vocab_size,
        layer_norm_eps: c.layer_norm_eps,
        hidden_dropout: c.hidden_dropout_prob as f32,
        attention_dropout: c.attention_probs_dropout_prob as f32,
    })
}

/// The activation `hidden_act` names.
fn activation(file: &File, name: &str) -> Result<Activation, StageError> {
    match name {
        "gelu" => Ok(Activation::Gelu),
        "gelu_new" | "gelu_pytorch_tanh" => Ok(Activation::GeluTanh),
        "relu" => Ok(Activation::Relu),
        other => Err(file.fault(
            "hidden_act",
            format!("`{other}` is not supported (gelu, gelu_new, gelu_pytorch_tanh, relu)"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn config(edit: impl FnOnce(&mut serde_json::Value)) -> Result<Config, String> {
        let mut c = serde_json::json!({
            "model_type": "bert", "vocab_size": 10, "hidden_size": 8, "num_hidden_layers": 1,
            "num_attention_heads": 2, "intermediate_size": 16, "hidden_act": "gelu",
            "max_position_embeddings": 16, "type_vocab_size": 2, "layer_norm_eps": 1e-12,
            "pad_token_id": 0
        });
        edit(&mut c);
        let file = File {
            path: PathBuf::from("m/config.json"),
            bytes: c.to_string().into_bytes(),
        };
        read(&file).map_err(|e| e.to_string())
    }

    #[test]
    fn a_bert_config_is_read() {
        let c = config(|_| {}).unwrap();
        assert_eq!(
            (c.vocab_size, c.hidden_size, c.max_position_embeddings),
            (10, 8, 16)
        );
        assert_eq!(c.hidden_act, Activation::Gelu);
        let c = config(|c| {
            let c = c.as_object_mut().unwrap();
            c.remove("type_vocab_size");
            c.remove("layer_norm_eps");
            c.insert("pad_token_id".into(), serde_json::Value::Null);
        })
        .unwrap();
        assert_eq!((c.type_vocab_size, c.layer_norm_eps), (2, 1e-12));
    }

    #[test]
    fn every_bad_key_is_named() {
        let says = |edit: fn(&mut serde_json::Value), key: &str, what: &str| {
            let e = config(edit).unwrap_err();
            assert!(
                e.contains("m/config.json")
                    && e.contains(&format!("key `{key}`"))
                    && e.contains(what),
                "{key}: {e}"
            );
        };
        says(
            |c| c["model_type"] = "t5".into(),
            "model_type",
            "`t5` is not supported",
        );
        says(
            |c| c["hidden_act"] = "swish".into(),
            "hidden_act",
            "`swish`",
        );
        says(|c| c["hidden_act"] = 1.into(), "hidden_act", "invalid type");
        says(
            |c| c["vocab_size"] = (-1).into(),
            "vocab_size",
            "invalid value",
        );
        says(|c| c["vocab_size"] = 0.into(), "vocab_size", "at least 1");
        says(
            |c| c["hidden_size"] = 8.5.into(),
            "hidden_size",
            "invalid type",
        );
        says(
            |c| c["num_attention_heads"] = 3.into(),
            "hidden_size",
            "not a multiple",
        );
        says(
            |c| c["intermediate_size"] = 0.into(),
            "intermediate_size",
            "at least 1",
        );
        says(
            |c| c["max_position_embeddings"] = 1.into(),
            "max_position_embeddings",
            "fewer than 2",
        );
        says(
            |c| c["layer_norm_eps"] = 0.into(),
            "layer_norm_eps",
            "positive",
        );
        says(
            |c| c["layer_norm_eps"] = 1e-50.into(),
            "layer_norm_eps",
            "float32",
        );
        says(
            |c| c["layer_norm_eps"] = 1e300.into(),
            "layer_norm_eps",
            "float32",
        );
        says(
            |c| c["pad_token_id"] = 10.into(),
            "pad_token_id",
            "not below vocab_size (10)",
        );
        says(|c| c["is_decoder"] = true.into(), "is_decoder", "encoder");
        says(
            |c| c["position_embedding_type"] = "relative_key".into(),
            "position_embedding_type",
            "relative_key",
        );
        let e = config(|c| {
            c.as_object_mut().unwrap().remove("hidden_size");
        })
        .unwrap_err();
        assert!(
            e.contains("m/config.json") && e.contains("hidden_size"),
            "{e}"
        );
    }
}
