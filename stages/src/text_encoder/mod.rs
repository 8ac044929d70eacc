//! A BERT-family text encoder read from a local model folder, the layout Hugging Face and
//! sentence-transformers save. Nothing is ever downloaded. The network is [`crate::bert`];
//! pooling follows sentence-transformers (the mean of a text's token vectors, or the `[CLS]`
//! token).
//!
//! Every file of the folder that transformers or sentence-transformers reads is checked key by
//! key when the folder is loaded, before any text is embedded, and each problem is an
//! input-data error naming the file and the key (or tensor): `config.json` ([`config`]), the
//! tokenizer files ([`tokenizer`]), `model.safetensors` ([`weights`]) and sentence-transformers'
//! files ([`sentence`]); reading them is [`folder`]'s.
//!
//! Pooling follows sentence-transformers 6.3.0: `sentence_transformers/models/Pooling.py`,
//! `Pooling.forward` (`pooling_mode_mean_tokens`: token vectors weighted by the attention mask,
//! summed, divided by the mask's sum; `pooling_mode_cls_token`: the first token's), then
//! `sentence_transformers/models/Normalize.py` where the folder lists it. Golden test:
//! `tests/data/embed/golden.py` (sentence-transformers 6.3.0 on torch 2.15.0).

mod config;
mod folder;
mod sentence;
mod tokenizer;
mod weights;

use std::path::Path;

use candle_core::Device;
use mmflow_pipeline::StageError;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::bert::{Bert, Config, Parameters, Text};
use crate::train::device;
use folder::{Folder, CONFIG_FILE, WEIGHTS_FILE};
use tokenizer::TextTokenizer;
use weights::{LoadError, Weights};

pub use tokenizer::Tokens;

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

/// A model folder read and checked: its network's shape, tokenizer and weights (not yet on a
/// device), for embedding ([`TextEncoder`]) or for training.
pub struct ModelFolder {
    /// The network's shape.
    pub config: Config,
    tokenizer: TextTokenizer,
    weights: Weights,
    /// Tokens per text at most, special tokens included.
    pub max_length: usize,
    /// Whether the folder's sentence-transformers pipeline L2-normalises sentence vectors.
    pub normalize: bool,
}

impl ModelFolder {
    /// Reads the model folder, with texts cut to `max_length` tokens (default:
    /// sentence-transformers' `max_seq_length`, else the smaller of `model_max_length` and the
    /// model's positions). Every file and key is checked first; the error names the one that
    /// does not fit.
    pub fn open(folder: &Path, max_length: Option<usize>) -> Result<ModelFolder, StageError> {
        let folder = Folder::new(folder);
        let config = config::read(&folder.required(CONFIG_FILE)?)?;
        let tokenizer_files = tokenizer::read(&folder)?;
        let positions = config.max_position_embeddings;
        let sentence = sentence::read(&folder, config.hidden_size, positions)?;
        let max_length = tokenizer::max_length(
            max_length,
            sentence
                .max_seq_length
                .map(|n| (n, folder.path(sentence::SENTENCE_CONFIG_FILE))),
            tokenizer_files.model_max_length(),
            positions,
        )?;
        let tokenizer = tokenizer_files.check(&config, &max_length, sentence.lower_case)?;
        let weights = weights::read(folder.required(WEIGHTS_FILE)?)?;
        Ok(ModelFolder {
            config,
            tokenizer,
            weights,
            max_length: max_length.tokens,
            normalize: sentence.normalize,
        })
    }

    /// A text's tokens (special tokens added), cut to `max_length`.
    pub fn tokenize(&self, text: &str) -> Result<Tokens, StageError> {
        self.tokenizer.tokenize(text)
    }

    /// The network's parameter `name` (Hugging Face's name, no prefix) of `shape` on `device`,
    /// checked (presence, shape, dtype, finite values); `step` names what loads it.
    pub fn parameter(
        &self,
        name: &str,
        shape: &[usize],
        device: &Device,
        step: &'static str,
    ) -> Result<candle_core::Tensor, StageError> {
        self.weights
            .get(name, shape, device)
            .map_err(|e| load_error(e, step))
    }
}

/// A loading error as the stage's: the file's own, or candle's named by `step`.
fn load_error(e: LoadError, step: &'static str) -> StageError {
    match e {
        LoadError::File(e) => e,
        LoadError::Candle(e) => device::err(step)(e),
    }
}

/// A model folder loaded onto a device, ready to embed texts.
pub struct TextEncoder {
    model: Bert,
    tokenizer: TextTokenizer,
    /// Width of the vectors (`hidden_size`).
    pub dim: usize,
    /// Tokens per text at most, special tokens included.
    pub max_length: usize,
    /// Whether the folder's sentence-transformers pipeline L2-normalises sentence vectors.
    pub normalize: bool,
}

impl TextEncoder {
    /// Loads the model folder onto `device` (see [`ModelFolder::open`]).
    pub fn open(
        folder: &Path,
        max_length: Option<usize>,
        device: &Device,
    ) -> Result<TextEncoder, StageError> {
        let folder = ModelFolder::open(folder, max_length)?;
        let dim = folder.config.hidden_size;
        let model = Bert::load(&folder.weights, folder.config, device)
            .map_err(|e| load_error(e, "embed_text: loading the weights"))?;
        Ok(TextEncoder {
            model,
            tokenizer: folder.tokenizer,
            dim,
            max_length: folder.max_length,
            normalize: folder.normalize,
        })
    }

    /// A text's tokens (special tokens added), cut to `max_length`.
    pub fn tokenize(&self, text: &str) -> Result<Tokens, StageError> {
        self.tokenizer.tokenize(text)
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
    fn mean_of_rows_is_per_column() {
        assert_eq!(mean_of_rows(&[1.0, 2.0, 3.0, 6.0], 2), vec![2.0, 4.0]);
    }
}
