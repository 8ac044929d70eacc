//! A BERT-family text encoder read from a local model folder, the layout Hugging Face and
//! sentence-transformers save: `config.json` (the architecture), `tokenizer.json` (read with
//! the tokenizers crate), `model.safetensors` (the weights), and optionally
//! `sentence_bert_config.json` (`max_seq_length`) and `modules.json` (whether the sentence
//! vectors are L2-normalised). Nothing is ever downloaded. The network is [`crate::bert`];
//! pooling follows sentence-transformers (the mean of a text's token vectors, or the `[CLS]`
//! token).

use std::path::{Path, PathBuf};

use candle_core::{DType, Device};
use candle_nn::VarBuilder;
use mmflow_pipeline::files::read_regular;
use mmflow_pipeline::StageError;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use tokenizers::{Tokenizer, TruncationParams};

use crate::bert::{Activation, Bert, Config, Text};
use crate::train::device;

/// The architecture, in the model folder.
pub const CONFIG_FILE: &str = "config.json";
/// The tokenizer, in the model folder.
pub const TOKENIZER_FILE: &str = "tokenizer.json";
/// The weights, in the model folder.
pub const WEIGHTS_FILE: &str = "model.safetensors";
/// sentence-transformers' settings (`max_seq_length`), optional.
pub const SENTENCE_CONFIG_FILE: &str = "sentence_bert_config.json";
/// sentence-transformers' module list (a `Normalize` module), optional.
pub const MODULES_FILE: &str = "modules.json";

/// The `model_type`s the encoder runs.
const SUPPORTED_MODEL_TYPES: [&str; 1] = ["bert"];

/// What one segment's text becomes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Pooling {
    /// One vector per segment: the mean of its token vectors weighted by the attention mask
    /// (sentence-transformers' mean pooling).
    #[default]
    Mean,
    /// One vector per segment: the `[CLS]` token's.
    Cls,
    /// The sequence of token vectors, `[CLS]` … `[SEP]` (as MMSA's BERT features).
    Tokens,
}

impl Pooling {
    /// The name used in configs.
    pub fn as_str(self) -> &'static str {
        match self {
            Pooling::Mean => "mean",
            Pooling::Cls => "cls",
            Pooling::Tokens => "tokens",
        }
    }
}

/// The keys of `config.json` the encoder reads; every other key is ignored.
#[derive(Debug, Deserialize)]
struct FolderConfig {
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
}

fn default_type_vocab_size() -> usize {
    2
}

fn default_layer_norm_eps() -> f64 {
    1e-12
}

#[derive(Debug, Deserialize)]
struct SentenceConfig {
    max_seq_length: Option<usize>,
}

#[derive(Debug, Deserialize)]
struct ModuleEntry {
    #[serde(rename = "type")]
    kind: String,
}

/// One segment's text as token ids, cut to the encoder's `max_length`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tokens {
    /// Token ids, special tokens included.
    pub ids: Vec<u32>,
    /// Token type ids (segment A: all 0 for a single text).
    pub type_ids: Vec<u32>,
    /// True when the text had more tokens than `max_length` and was cut.
    pub truncated: bool,
}

/// A model folder loaded onto a device, ready to embed texts.
pub struct TextEncoder {
    model: Bert,
    tokenizer: Tokenizer,
    /// Width of the vectors (`hidden_size`).
    pub dim: usize,
    /// Tokens per text at most, special tokens included.
    pub max_length: usize,
    /// Whether the folder's sentence-transformers pipeline L2-normalises sentence vectors.
    pub normalize: bool,
}

/// An input-data error about a file of the model folder.
fn bad_file(path: &Path, message: impl std::fmt::Display) -> StageError {
    StageError::input(format!("model folder: {}: {message}", path.display()))
}

/// Reads a required file of the folder, naming it when it is missing.
fn read_required(folder: &Path, name: &str) -> Result<(PathBuf, Vec<u8>), StageError> {
    let path = folder.join(name);
    match read_regular(&path) {
        Ok(bytes) => Ok((path, bytes)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(StageError::input(format!(
            "model folder {}: `{name}` is missing (a BERT model folder holds {CONFIG_FILE}, {TOKENIZER_FILE} and {WEIGHTS_FILE})",
            folder.display()
        ))),
        Err(source) => Err(StageError::Io { path, source }),
    }
}

/// Reads an optional file of the folder (`None` when absent).
fn read_optional(folder: &Path, name: &str) -> Result<Option<(PathBuf, Vec<u8>)>, StageError> {
    let path = folder.join(name);
    match read_regular(&path) {
        Ok(bytes) => Ok(Some((path, bytes))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(StageError::Io { path, source }),
    }
}

/// Parses JSON into `T`, naming the file and the key that does not fit.
fn parse_json<T: serde::de::DeserializeOwned>(path: &Path, bytes: &[u8]) -> Result<T, StageError> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let key = e.path().to_string();
        let at = if key == "." || key.is_empty() {
            String::new()
        } else {
            format!("key `{key}`: ")
        };
        bad_file(path, format!("{at}{}", e.inner()))
    })
}

/// The network config of a folder's `config.json`, or why the encoder cannot run it.
fn bert_config(path: &Path, c: FolderConfig) -> Result<Config, StageError> {
    let model_type = c.model_type.as_deref().unwrap_or("");
    if !SUPPORTED_MODEL_TYPES.contains(&model_type) {
        return Err(bad_file(
            path,
            format!(
                "key `model_type`: `{model_type}` is not supported (embed_text runs {})",
                SUPPORTED_MODEL_TYPES.join(", ")
            ),
        ));
    }
    let hidden_act = match c.hidden_act.as_str() {
        "gelu" => Activation::Gelu,
        "gelu_new" | "gelu_pytorch_tanh" => Activation::GeluTanh,
        "relu" => Activation::Relu,
        other => {
            return Err(bad_file(
                path,
                format!("key `hidden_act`: `{other}` is not supported (gelu, gelu_new, gelu_pytorch_tanh, relu)"),
            ))
        }
    };
    match c.position_embedding_type.as_deref() {
        None | Some("absolute") => {}
        Some(other) => {
            return Err(bad_file(
                path,
                format!("key `position_embedding_type`: `{other}` is not supported (absolute)"),
            ))
        }
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
            return Err(bad_file(path, format!("key `{key}`: must be at least 1")));
        }
    }
    if c.max_position_embeddings < 2 {
        return Err(bad_file(
            path,
            "key `max_position_embeddings`: must be at least 2 ([CLS] and [SEP])",
        ));
    }
    if !c.hidden_size.is_multiple_of(c.num_attention_heads) {
        return Err(bad_file(
            path,
            format!(
                "key `hidden_size`: {} is not a multiple of num_attention_heads ({})",
                c.hidden_size, c.num_attention_heads
            ),
        ));
    }
    if !(c.layer_norm_eps.is_finite() && c.layer_norm_eps > 0.0) {
        return Err(bad_file(
            path,
            "key `layer_norm_eps`: must be a positive number",
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
    })
}

/// The tokens per text: `requested`, else sentence-transformers' `max_seq_length`, else the
/// model's positions; never more than the positions.
fn resolve_max_length(
    requested: Option<usize>,
    sentence: Option<usize>,
    positions: usize,
) -> Result<usize, StageError> {
    match requested {
        Some(n) if n > positions => Err(StageError::config(format!(
            "`max_length` = {n} but the model has {positions} positions (config.json's max_position_embeddings)"
        ))),
        Some(n) => Ok(n),
        None => Ok(sentence.unwrap_or(positions).min(positions)),
    }
}

/// Whether `modules.json` lists sentence-transformers' `Normalize` module.
fn lists_normalize(modules: &[ModuleEntry]) -> bool {
    modules.iter().any(|m| m.kind.ends_with(".Normalize"))
}

impl TextEncoder {
    /// Loads the model folder onto `device`, with texts cut to `max_length` tokens (see
    /// [`resolve_max_length`] for the default). Every file and key is checked; the error names
    /// the one that does not fit.
    pub fn open(
        folder: &Path,
        max_length: Option<usize>,
        device: &Device,
    ) -> Result<TextEncoder, StageError> {
        let (config_path, config_bytes) = read_required(folder, CONFIG_FILE)?;
        let (tokenizer_path, tokenizer_bytes) = read_required(folder, TOKENIZER_FILE)?;
        let (weights_path, weights) = read_required(folder, WEIGHTS_FILE)?;
        let config = bert_config(&config_path, parse_json(&config_path, &config_bytes)?)?;

        let sentence_max = match read_optional(folder, SENTENCE_CONFIG_FILE)? {
            Some((path, bytes)) => parse_json::<SentenceConfig>(&path, &bytes)?.max_seq_length,
            None => None,
        };
        let normalize = match read_optional(folder, MODULES_FILE)? {
            Some((path, bytes)) => lists_normalize(&parse_json::<Vec<ModuleEntry>>(&path, &bytes)?),
            None => false,
        };
        let max_length =
            resolve_max_length(max_length, sentence_max, config.max_position_embeddings)?;

        let tokenizer = load_tokenizer(&tokenizer_path, &tokenizer_bytes, max_length, &config)?;
        let vb = VarBuilder::from_buffered_safetensors(weights, DType::F32, device)
            .map_err(|e| bad_file(&weights_path, e))?;
        let dim = config.hidden_size;
        let model = Bert::load(vb, config).map_err(|e| {
            bad_file(
                &weights_path,
                format!("does not hold the network config.json describes: {e}"),
            )
        })?;
        Ok(TextEncoder {
            model,
            tokenizer,
            dim,
            max_length,
            normalize,
        })
    }

    /// A text's tokens (special tokens added), cut to `max_length`.
    pub fn tokenize(&self, text: &str) -> Result<Tokens, StageError> {
        let encoding = self
            .tokenizer
            .encode_fast(text, true)
            .map_err(|e| StageError::input(format!("tokenizing failed: {e}")))?;
        Ok(Tokens {
            truncated: !encoding.get_overflowing().is_empty(),
            ids: encoding.get_ids().to_vec(),
            type_ids: encoding.get_type_ids().to_vec(),
        })
    }

    /// Runs the network over a batch of texts and returns, per text, its pooled vector
    /// (`dim` values) or, for [`Pooling::Tokens`], its token vectors (`len × dim`, row-major).
    pub fn embed(&self, batch: &[&Tokens], pooling: Pooling) -> Result<Vec<Vec<f32>>, StageError> {
        let texts: Vec<Text<'_>> = batch
            .iter()
            .map(|t| Text {
                ids: &t.ids,
                type_ids: &t.type_ids,
            })
            .collect();
        let hidden = self
            .model
            .forward(&texts)
            .map_err(device::err("embed_text: running the text encoder"))?;
        let dim = self.dim;
        let mut start = 0;
        let out = batch
            .iter()
            .map(|t| {
                let tokens = &hidden[start * dim..(start + t.ids.len()) * dim];
                start += t.ids.len();
                match pooling {
                    Pooling::Tokens => tokens.to_vec(),
                    // A text of no tokens (a tokenizer that adds no [CLS]) becomes zeros.
                    Pooling::Cls => self.finish_sentence(
                        tokens
                            .get(..dim)
                            .map_or_else(|| vec![0.0; dim], <[f32]>::to_vec),
                    ),
                    Pooling::Mean => self.finish_sentence(mean_of_rows(tokens, dim)),
                }
            })
            .collect();
        Ok(out)
    }

    /// A sentence vector as sentence-transformers returns it: L2-normalised when the folder's
    /// pipeline has a `Normalize` module (as `torch.nn.functional.normalize`, eps 1e-12).
    fn finish_sentence(&self, mut v: Vec<f32>) -> Vec<f32> {
        if self.normalize {
            let norm = v
                .iter()
                .map(|&x| (x as f64) * (x as f64))
                .sum::<f64>()
                .sqrt();
            let scale = 1.0 / norm.max(1e-12);
            v.iter_mut().for_each(|x| *x = (*x as f64 * scale) as f32);
        }
        v
    }
}

/// The tokenizer of `tokenizer.json` with its own padding switched off (the encoder lays
/// out a batch itself) and truncation to `max_length`; its vocabulary must fit the model's embeddings.
fn load_tokenizer(
    path: &Path,
    bytes: &[u8],
    max_length: usize,
    config: &Config,
) -> Result<Tokenizer, StageError> {
    let mut tokenizer = Tokenizer::from_bytes(bytes).map_err(|e| bad_file(path, e))?;
    tokenizer.with_padding(None);
    tokenizer
        .with_truncation(Some(TruncationParams {
            max_length,
            ..TruncationParams::default()
        }))
        .map_err(|e| StageError::config(format!("`max_length` = {max_length}: {e}")))?;
    let vocab = tokenizer.get_vocab_size(true);
    if vocab > config.vocab_size {
        return Err(bad_file(
            path,
            format!(
                "{vocab} tokens, but config.json's vocab_size is {}: the tokenizer is not this model's",
                config.vocab_size
            ),
        ));
    }
    Ok(tokenizer)
}

/// Column means of a row-major matrix, accumulated in f64.
fn mean_of_rows(rows: &[f32], dim: usize) -> Vec<f32> {
    let n = rows.len() / dim;
    let mut acc = vec![0f64; dim];
    for row in rows.chunks_exact(dim) {
        for (a, &x) in acc.iter_mut().zip(row) {
            *a += x as f64;
        }
    }
    acc.into_iter()
        .map(|a| (a / n.max(1) as f64) as f32)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_length_defaults_to_the_sentence_config_within_the_positions() {
        assert_eq!(resolve_max_length(None, Some(256), 512).unwrap(), 256);
        assert_eq!(resolve_max_length(None, None, 512).unwrap(), 512);
        assert_eq!(resolve_max_length(None, Some(1024), 512).unwrap(), 512);
        assert_eq!(resolve_max_length(Some(64), Some(256), 512).unwrap(), 64);
        let e = resolve_max_length(Some(600), None, 512)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("`max_length` = 600") && e.contains("512 positions"),
            "{e}"
        );
    }

    #[test]
    fn normalize_follows_the_module_list() {
        let modules: Vec<ModuleEntry> = serde_json::from_str(
            r#"[{"type": "sentence_transformers.models.Transformer"},
                {"type": "sentence_transformers.models.Pooling"},
                {"type": "sentence_transformers.models.Normalize"}]"#,
        )
        .unwrap();
        assert!(lists_normalize(&modules));
        assert!(!lists_normalize(&modules[..2]));
    }

    #[test]
    fn mean_of_rows_is_per_column() {
        assert_eq!(mean_of_rows(&[1.0, 2.0, 3.0, 6.0], 2), vec![2.0, 4.0]);
    }
}
