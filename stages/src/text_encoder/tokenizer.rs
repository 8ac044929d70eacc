//! The tokenizer of a model folder: `tokenizer.json` (read with the tokenizers crate) and the
//! files transformers reads beside it, `tokenizer_config.json` and `special_tokens_map.json`.
//!
//! Everything a text can become is checked against the network when the folder is loaded:
//! every id the vocabulary and the added tokens hold is below `vocab_size`; the special tokens
//! the post-processor puts around a text are below `vocab_size`, their type ids and the text's
//! below `type_vocab_size`; a text cut to `max_length` stays within it once those are added.
//! The tokenizer's own padding is switched off (the encoder lays out a batch itself) and its
//! truncation replaced by `max_length`, keeping a text's first tokens, as sentence-transformers
//! does. Each text's tokens are checked again when it is tokenized, so nothing the checks
//! missed reaches the network.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::path::PathBuf;

use mmflow_pipeline::StageError;
use serde::{Deserialize, Deserializer};
use serde_json::Value;
use tokenizers::models::ModelWrapper;
use tokenizers::normalizers::{NormalizerWrapper, Precompiled};
use tokenizers::{
    Encoding, Model, PostProcessor, Token, Tokenizer, TruncationDirection, TruncationParams,
};

use super::folder::{File, Folder, TOKENIZER_FILE};
use crate::bert::Config;

/// transformers' tokenizer settings.
pub const TOKENIZER_CONFIG_FILE: &str = "tokenizer_config.json";
/// transformers' special tokens by role.
pub const SPECIAL_TOKENS_FILE: &str = "special_tokens_map.json";

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

/// Where the limit of tokens per text comes from: an error about it names that place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LimitFrom {
    /// The stage's `max_length`.
    Param,
    /// A key of a file of the folder.
    Key {
        /// The file.
        file: PathBuf,
        /// The key.
        key: &'static str,
    },
    /// The model's positions (`max_position_embeddings`).
    Positions,
}

/// Tokens per text at most, special tokens included, and where that number comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MaxLength {
    /// The number.
    pub tokens: usize,
    /// Where it comes from.
    pub from: LimitFrom,
}

/// The tokens per text: `requested` (the stage's `max_length`), else sentence-transformers'
/// `max_seq_length`, else the smaller of `model_max_length` (`tokenizer_config.json`) and the
/// model's `positions`, as sentence-transformers chooses. `requested` may not exceed the
/// positions; the files' values were checked when they were read.
pub fn max_length(
    requested: Option<usize>,
    sentence: Option<(usize, PathBuf)>,
    tokenizer: Option<(usize, PathBuf)>,
    positions: usize,
) -> Result<MaxLength, StageError> {
    let key = |(tokens, file): (usize, PathBuf), key| MaxLength {
        tokens,
        from: LimitFrom::Key { file, key },
    };
    match (requested, sentence, tokenizer) {
        (Some(n), _, _) if n > positions => Err(StageError::config(format!(
            "`max_length` = {n} but the model has {positions} positions (config.json's max_position_embeddings)"
        ))),
        (Some(n), _, _) => Ok(MaxLength {
            tokens: n,
            from: LimitFrom::Param,
        }),
        (None, Some(s), _) => Ok(key(s, "max_seq_length")),
        (None, None, Some(t)) if t.0 < positions => Ok(key(t, "model_max_length")),
        (None, None, _) => Ok(MaxLength {
            tokens: positions,
            from: LimitFrom::Positions,
        }),
    }
}

/// A text or role's token as transformers writes it: a string, or an `AddedToken` object.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum TokenText {
    Text(String),
    Added { content: String },
}

impl TokenText {
    fn content(&self) -> &str {
        match self {
            TokenText::Text(s) | TokenText::Added { content: s } => s,
        }
    }
}

/// The special tokens by role, in `tokenizer_config.json` and `special_tokens_map.json`.
#[derive(Debug, Default, Deserialize)]
struct SpecialTokens {
    #[serde(default)]
    bos_token: Option<TokenText>,
    #[serde(default)]
    eos_token: Option<TokenText>,
    #[serde(default)]
    unk_token: Option<TokenText>,
    #[serde(default)]
    sep_token: Option<TokenText>,
    #[serde(default)]
    pad_token: Option<TokenText>,
    #[serde(default)]
    cls_token: Option<TokenText>,
    #[serde(default)]
    mask_token: Option<TokenText>,
    #[serde(default)]
    additional_special_tokens: Vec<TokenText>,
}

impl SpecialTokens {
    /// Every token with its key.
    fn keyed(&self) -> Vec<(String, &str)> {
        let roles = [
            ("bos_token", &self.bos_token),
            ("eos_token", &self.eos_token),
            ("unk_token", &self.unk_token),
            ("sep_token", &self.sep_token),
            ("pad_token", &self.pad_token),
            ("cls_token", &self.cls_token),
            ("mask_token", &self.mask_token),
        ];
        let by_role = roles
            .into_iter()
            .filter_map(|(key, t)| t.as_ref().map(|t| (key.to_string(), t.content())));
        let additional = self
            .additional_special_tokens
            .iter()
            .enumerate()
            .map(|(i, t)| (format!("additional_special_tokens[{i}]"), t.content()));
        by_role.chain(additional).collect()
    }
}

/// The settings of `tokenizer_config.json` that change how a text is tokenized.
#[derive(Debug, Default, Deserialize)]
struct TokenizerSettings {
    #[serde(default)]
    do_lower_case: Option<bool>,
    /// Absent (`None`) is told from `null` (`Some(None)`).
    #[serde(default, deserialize_with = "present")]
    strip_accents: Option<Option<bool>>,
    #[serde(default)]
    tokenize_chinese_chars: Option<bool>,
    /// A number: transformers writes `1e30` for "no limit".
    #[serde(default)]
    model_max_length: Option<f64>,
    #[serde(default)]
    truncation_side: Option<String>,
    #[serde(default)]
    added_tokens_decoder: BTreeMap<String, TokenText>,
}

fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Option<bool>>, D::Error> {
    Option::<bool>::deserialize(d).map(Some)
}

/// The tokenizer files of a folder, parsed but not yet checked against the network.
pub struct TokenizerFiles {
    tokenizer_file: File,
    tokenizer: Tokenizer,
    /// `tokenizer_config.json`, its settings and its special tokens.
    settings: Option<(File, TokenizerSettings, SpecialTokens)>,
    /// `special_tokens_map.json` and its tokens.
    special: Option<(File, SpecialTokens)>,
    /// `tokenizer_config.json`'s `model_max_length`, with the file.
    model_max_length: Option<(usize, PathBuf)>,
}

/// Reads and parses the tokenizer files of `folder`.
pub fn read(folder: &Folder) -> Result<TokenizerFiles, StageError> {
    let tokenizer_file = folder.required(TOKENIZER_FILE)?;
    let doc: Value = serde_json::from_slice(&tokenizer_file.bytes)
        .map_err(|e| tokenizer_file.error(format!("not JSON: {e}")))?;
    check_structure(&tokenizer_file, &doc)?;
    let tokenizer =
        Tokenizer::from_bytes(&tokenizer_file.bytes).map_err(|e| tokenizer_file.error(e))?;
    let settings = match folder.optional(TOKENIZER_CONFIG_FILE)? {
        Some(file) => {
            let settings: TokenizerSettings = file.json()?;
            let tokens: SpecialTokens = file.json()?;
            Some((file, settings, tokens))
        }
        None => None,
    };
    let special = match folder.optional(SPECIAL_TOKENS_FILE)? {
        Some(file) => {
            let tokens: SpecialTokens = file.json()?;
            Some((file, tokens))
        }
        None => None,
    };
    let model_max_length = match &settings {
        Some((file, s, _)) => model_max_length(file, s)?,
        None => None,
    };
    Ok(TokenizerFiles {
        tokenizer_file,
        tokenizer,
        settings,
        special,
        model_max_length,
    })
}

/// `tokenizer_config.json`'s `model_max_length`: a whole number of at least 2 (`None` when
/// absent), with the file.
fn model_max_length(
    file: &File,
    settings: &TokenizerSettings,
) -> Result<Option<(usize, PathBuf)>, StageError> {
    let Some(n) = settings.model_max_length else {
        return Ok(None);
    };
    if !(n >= 2.0 && n.fract() == 0.0) {
        return Err(file.fault(
            "model_max_length",
            format!("{n} is not a whole number of at least 2 ([CLS] and [SEP])"),
        ));
    }
    // Saturates: transformers writes 1e30 for "no limit of its own".
    Ok(Some((n as usize, file.path.clone())))
}

/// Refuses what tokenizers would panic on rather than refuse: a template naming a special
/// token it does not define, a special token with another number of ids than of tokens, and a
/// `Precompiled` normalizer whose character map does not parse.
fn check_structure(file: &File, doc: &Value) -> Result<(), StageError> {
    if let Some(p) = doc.get("post_processor") {
        check_processor(file, "post_processor", p)?;
    }
    if let Some(n) = doc.get("normalizer") {
        check_normalizer(file, "normalizer", n)?;
    }
    Ok(())
}

/// The type of a tokenizers component (`{"type": …}`).
fn kind(v: &Value) -> Option<&str> {
    v.get("type").and_then(Value::as_str)
}

fn check_processor(file: &File, key: &str, p: &Value) -> Result<(), StageError> {
    match kind(p) {
        Some("TemplateProcessing") => {
            let defined = p.get("special_tokens").and_then(Value::as_object);
            for template in ["single", "pair"] {
                let pieces = p.get(template).and_then(Value::as_array);
                for (i, piece) in pieces.into_iter().flatten().enumerate() {
                    let Some(id) = piece.pointer("/SpecialToken/id").and_then(Value::as_str) else {
                        continue;
                    };
                    if !defined.is_some_and(|d| d.contains_key(id)) {
                        return Err(file.fault(
                            &format!("{key}.{template}[{i}]"),
                            format!("names the special token `{id}`, which `special_tokens` does not define"),
                        ));
                    }
                }
            }
            for (name, token) in defined.into_iter().flatten() {
                let count = |field: &str| token.get(field).and_then(Value::as_array).map(Vec::len);
                if count("ids") != count("tokens") {
                    return Err(file.fault(
                        &format!("{key}.special_tokens.{name}"),
                        "has another number of `ids` than of `tokens`",
                    ));
                }
            }
            Ok(())
        }
        Some("Sequence") => {
            let processors = p.get("processors").and_then(Value::as_array);
            for (i, inner) in processors.into_iter().flatten().enumerate() {
                check_processor(file, &format!("{key}.processors[{i}]"), inner)?;
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

fn check_normalizer(file: &File, key: &str, n: &Value) -> Result<(), StageError> {
    match kind(n) {
        Some("Precompiled") => serde_json::from_value::<Precompiled>(n.clone())
            .map(drop)
            .map_err(|e| file.fault(key, e)),
        Some("Sequence") => {
            let normalizers = n.get("normalizers").and_then(Value::as_array);
            for (i, inner) in normalizers.into_iter().flatten().enumerate() {
                check_normalizer(file, &format!("{key}.normalizers[{i}]"), inner)?;
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

impl TokenizerFiles {
    /// `tokenizer_config.json`'s `model_max_length`, with the file.
    pub fn model_max_length(&self) -> Option<(usize, PathBuf)> {
        self.model_max_length.clone()
    }

    /// The tokenizer for `config`'s network, cutting texts to `max_length`, once every file is
    /// checked against the network and the others.
    pub fn check(
        self,
        config: &Config,
        max_length: &MaxLength,
        lower_case: bool,
    ) -> Result<TextTokenizer, StageError> {
        let TokenizerFiles {
            tokenizer_file: file,
            mut tokenizer,
            settings,
            special,
            ..
        } = self;
        check_vocabulary(&file, &tokenizer, config.vocab_size)?;
        check_unknown_token(&file, &tokenizer)?;
        if tokenizer
            .get_truncation()
            .is_some_and(|t| t.direction == TruncationDirection::Left)
        {
            return Err(file.fault("truncation.direction", KEEPS_THE_FIRST_TOKENS));
        }
        if let Some((settings_file, settings, tokens)) = &settings {
            check_settings(settings_file, settings, &tokenizer)?;
            check_special_tokens(settings_file, tokens, &tokenizer)?;
        }
        if let Some((special_file, tokens)) = &special {
            check_special_tokens(special_file, tokens, &tokenizer)?;
        }
        let added = tokenizer
            .get_post_processor()
            .map_or(0, |p| p.added_tokens(false));
        if added > max_length.tokens {
            return Err(too_short(&file, max_length, added, config));
        }
        tokenizer.with_padding(None);
        tokenizer
            .with_truncation(Some(TruncationParams {
                max_length: max_length.tokens,
                ..TruncationParams::default()
            }))
            .map_err(|e| file.fault("truncation", e))?;
        let limits = Limits {
            max_length: max_length.tokens,
            vocab_size: config.vocab_size,
            type_vocab_size: config.type_vocab_size,
        };
        check_post_processor(&file, &tokenizer, &limits, added)?;
        Ok(TextTokenizer {
            tokenizer,
            path: file.path,
            limits,
            lower_case,
        })
    }
}

const KEEPS_THE_FIRST_TOKENS: &str =
    "`left` is not supported (embed_text keeps a text's first tokens, as sentence-transformers does by default)";

/// What a text's tokens must stay within.
#[derive(Debug, Clone, Copy)]
struct Limits {
    max_length: usize,
    vocab_size: usize,
    type_vocab_size: usize,
}

/// Every id of the vocabulary and of the added tokens must have a row of word embeddings.
fn check_vocabulary(
    file: &File,
    tokenizer: &Tokenizer,
    vocab_size: usize,
) -> Result<(), StageError> {
    let beyond = |id: u32| id as usize >= vocab_size;
    let largest = |ids: Vec<(u32, String)>| ids.into_iter().filter(|(id, _)| beyond(*id)).max();
    let vocab = tokenizer
        .get_model()
        .get_vocab()
        .into_iter()
        .map(|(token, id)| (id, token))
        .collect();
    if let Some((id, token)) = largest(vocab) {
        return Err(file.fault(
            "model.vocab",
            format!("`{token}` has id {id}, not below config.json's vocab_size ({vocab_size}): the tokenizer is not this model's"),
        ));
    }
    let added = tokenizer
        .get_added_tokens_decoder()
        .into_iter()
        .map(|(id, token)| (id, token.content))
        .collect();
    if let Some((id, token)) = largest(added) {
        return Err(file.fault(
            "added_tokens",
            format!("`{token}` has id {id}, not below config.json's vocab_size ({vocab_size})"),
        ));
    }
    Ok(())
}

/// The token an unknown word becomes must be in the vocabulary (else every such word fails).
fn check_unknown_token(file: &File, tokenizer: &Tokenizer) -> Result<(), StageError> {
    let unknown = match tokenizer.get_model() {
        ModelWrapper::WordPiece(m) => Some(&m.unk_token),
        ModelWrapper::WordLevel(m) => Some(&m.unk_token),
        ModelWrapper::BPE(m) => m.unk_token.as_ref(),
        // Unigram checks its unknown id when it is read.
        ModelWrapper::Unigram(_) => None,
    };
    match unknown {
        Some(token) if tokenizer.get_model().token_to_id(token).is_none() => Err(file.fault(
            "model.unk_token",
            format!("`{token}` is not in the vocabulary"),
        )),
        _ => Ok(()),
    }
}

/// `tokenizer_config.json`'s settings: transformers' BERT tokenizer would re-make
/// `tokenizer.json`'s normalizer from the ones it states, so they must agree with it (the
/// encoder reads `tokenizer.json`); only right truncation is followed.
fn check_settings(
    file: &File,
    settings: &TokenizerSettings,
    tokenizer: &Tokenizer,
) -> Result<(), StageError> {
    if let Some(side) = &settings.truncation_side {
        match side.as_str() {
            "right" => {}
            "left" => return Err(file.fault("truncation_side", KEEPS_THE_FIRST_TOKENS)),
            other => {
                return Err(file.fault(
                    "truncation_side",
                    format!("`{other}` is neither `right` nor `left`"),
                ))
            }
        }
    }
    if let Some(NormalizerWrapper::BertNormalizer(n)) = tokenizer.get_normalizer() {
        let disagree = |key: &str, here: String, there: String| {
            file.fault(
                key,
                format!("{here}, but tokenizer.json's normalizer has {there} (transformers would follow this file, embed_text follows tokenizer.json): make them agree"),
            )
        };
        if let Some(lower) = settings.do_lower_case.filter(|&l| l != n.lowercase) {
            return Err(disagree(
                "do_lower_case",
                lower.to_string(),
                format!("lowercase {}", n.lowercase),
            ));
        }
        if let Some(strip) = settings.strip_accents.filter(|&s| s != n.strip_accents) {
            return Err(disagree(
                "strip_accents",
                shown(strip),
                format!("strip_accents {}", shown(n.strip_accents)),
            ));
        }
        if let Some(chinese) = settings
            .tokenize_chinese_chars
            .filter(|&c| c != n.handle_chinese_chars)
        {
            return Err(disagree(
                "tokenize_chinese_chars",
                chinese.to_string(),
                format!("handle_chinese_chars {}", n.handle_chinese_chars),
            ));
        }
    }
    for (id, token) in &settings.added_tokens_decoder {
        let key = format!("added_tokens_decoder.{id}");
        let Ok(id) = id.parse::<u32>() else {
            return Err(file.fault(&key, "is not a token id"));
        };
        match tokenizer.token_to_id(token.content()) {
            Some(found) if found == id => {}
            Some(found) => {
                return Err(file.fault(
                    &key,
                    format!("`{}` has id {found} in tokenizer.json", token.content()),
                ))
            }
            None => {
                return Err(file.fault(
                    &key,
                    format!("`{}` is not a token of tokenizer.json", token.content()),
                ))
            }
        }
    }
    Ok(())
}

/// `null`, `true` or `false`.
fn shown(value: Option<bool>) -> String {
    value.map_or_else(|| "null".to_string(), |v| v.to_string())
}

/// transformers adds a special token the tokenizer lacks under a new id (beyond the model's
/// embeddings, or at least not the one the encoder would give it): each must be a token of
/// `tokenizer.json`.
fn check_special_tokens(
    file: &File,
    tokens: &SpecialTokens,
    tokenizer: &Tokenizer,
) -> Result<(), StageError> {
    for (key, token) in tokens.keyed() {
        if tokenizer.token_to_id(token).is_none() {
            return Err(file.fault(
                &key,
                format!("`{token}` is not a token of tokenizer.json (transformers would add it under a new id)"),
            ));
        }
    }
    Ok(())
}

/// The error for a limit of tokens per text below the special tokens the post-processor adds,
/// naming where the limit comes from.
fn too_short(file: &File, max_length: &MaxLength, added: usize, config: &Config) -> StageError {
    let n = max_length.tokens;
    let what = format!("tokenizer.json's post_processor adds {added} special tokens to every text");
    match &max_length.from {
        LimitFrom::Param => {
            StageError::config(format!("`max_length` = {n} is fewer tokens than {what}"))
        }
        LimitFrom::Key { file, key } => StageError::input(format!(
            "model folder: {}: key `{key}`: {n} is fewer tokens than {what}",
            file.display()
        )),
        LimitFrom::Positions => file.fault(
            "post_processor",
            format!(
                "adds {added} special tokens to every text, more than the model's {} positions",
                config.max_position_embeddings
            ),
        ),
    }
}

/// What the post-processor makes of a text: its special tokens' ids below `vocab_size`, every
/// type id below `type_vocab_size`, and a text cut to the tokens `max_length` leaves beside the
/// `added` special ones no longer than `max_length` once they are put around it. The output
/// grows by a fixed number of tokens per token of the text (one; more for a template that
/// repeats the text), so two small texts (of 0 and 1 token) tell the longest without building
/// it.
fn check_post_processor(
    file: &File,
    tokenizer: &Tokenizer,
    limits: &Limits,
    added: usize,
) -> Result<(), StageError> {
    let fault = |e: &dyn std::fmt::Display| file.fault("post_processor", e);
    let probe = |n: usize| {
        let text = vec![Token::new(0, String::new(), (0, 0)); n];
        tokenizer
            .post_process(Encoding::from_tokens(text, 0), None, true)
            .map_err(|e| fault(&e))
    };
    let (empty, one) = (probe(0)?, probe(1)?);
    for encoding in [&empty, &one] {
        check_encoding(encoding, limits).map_err(|e| fault(&e))?;
    }
    let per_token = one.len().saturating_sub(empty.len());
    let room = limits.max_length.saturating_sub(added);
    let longest = per_token.saturating_mul(room).saturating_add(empty.len());
    if longest > limits.max_length {
        return Err(fault(&format!(
            "makes a text of {longest} tokens, more than max_length ({})",
            limits.max_length
        )));
    }
    Ok(())
}

/// Why an encoding cannot go through the network, if it cannot.
fn check_encoding(encoding: &Encoding, limits: &Limits) -> Result<(), String> {
    let (ids, type_ids) = (encoding.get_ids(), encoding.get_type_ids());
    if ids.len() > limits.max_length {
        return Err(format!(
            "makes a text of {} tokens, more than max_length ({})",
            ids.len(),
            limits.max_length
        ));
    }
    if let Some(id) = ids.iter().find(|&&id| id as usize >= limits.vocab_size) {
        return Err(format!(
            "gives token id {id}, not below config.json's vocab_size ({})",
            limits.vocab_size
        ));
    }
    if let Some(t) = type_ids
        .iter()
        .find(|&&t| t as usize >= limits.type_vocab_size)
    {
        return Err(format!(
            "gives type id {t}, not below config.json's type_vocab_size ({})",
            limits.type_vocab_size
        ));
    }
    Ok(())
}

/// A checked tokenizer: texts in, [`Tokens`] out.
pub struct TextTokenizer {
    tokenizer: Tokenizer,
    path: PathBuf,
    limits: Limits,
    lower_case: bool,
}

impl TextTokenizer {
    /// A text's tokens (special tokens added), cut to `max_length`; lower-cased first when
    /// sentence-transformers' `do_lower_case` says so. An error names `tokenizer.json`.
    pub fn tokenize(&self, text: &str) -> Result<Tokens, StageError> {
        let text = if self.lower_case {
            Cow::Owned(text.to_lowercase())
        } else {
            Cow::Borrowed(text)
        };
        let fault = |e: &dyn std::fmt::Display| {
            StageError::input(format!("model folder: {}: {e}", self.path.display()))
        };
        let encoding = self
            .tokenizer
            .encode_fast(text.as_ref(), true)
            .map_err(|e| fault(&format!("could not tokenize the text: {e}")))?;
        check_encoding(&encoding, &self.limits).map_err(|e| fault(&e))?;
        Ok(Tokens {
            truncated: !encoding.get_overflowing().is_empty(),
            ids: encoding.get_ids().to_vec(),
            type_ids: encoding.get_type_ids().to_vec(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bert::Activation;
    use serde_json::{json, Value};

    const VOCAB: [&str; 8] = [
        "[PAD]", "[UNK]", "[CLS]", "[SEP]", "the", "movie", "good", "GOOD",
    ];

    fn config() -> Config {
        Config {
            vocab_size: VOCAB.len(),
            hidden_size: 4,
            num_hidden_layers: 1,
            num_attention_heads: 1,
            intermediate_size: 4,
            hidden_act: Activation::Gelu,
            max_position_embeddings: 8,
            type_vocab_size: 2,
            layer_norm_eps: 1e-12,
            hidden_dropout: 0.1,
            attention_dropout: 0.1,
        }
    }

    /// A WordPiece `tokenizer.json` over [`VOCAB`] that does not lower-case, `[CLS] … [SEP]`
    /// around a text.
    fn tokenizer_json() -> Value {
        let vocab: serde_json::Map<String, Value> = VOCAB
            .iter()
            .enumerate()
            .map(|(i, t)| (t.to_string(), json!(i)))
            .collect();
        let special = |t: &str| json!({"SpecialToken": {"id": t, "type_id": 0}});
        json!({
            "version": "1.0", "truncation": null, "padding": null,
            "added_tokens": [{"id": 2, "content": "[CLS]", "single_word": false, "lstrip": false,
                "rstrip": false, "normalized": false, "special": true}],
            "normalizer": {"type": "BertNormalizer", "clean_text": true,
                "handle_chinese_chars": true, "strip_accents": null, "lowercase": false},
            "pre_tokenizer": {"type": "BertPreTokenizer"},
            "post_processor": {"type": "TemplateProcessing",
                "single": [special("[CLS]"), {"Sequence": {"id": "A", "type_id": 0}}, special("[SEP]")],
                "pair": [special("[CLS]"), {"Sequence": {"id": "A", "type_id": 0}}, special("[SEP]")],
                "special_tokens": {
                    "[CLS]": {"id": "[CLS]", "ids": [2], "tokens": ["[CLS]"]},
                    "[SEP]": {"id": "[SEP]", "ids": [3], "tokens": ["[SEP]"]}}},
            "decoder": null,
            "model": {"type": "WordPiece", "unk_token": "[UNK]", "continuing_subword_prefix": "##",
                "max_input_chars_per_word": 100, "vocab": vocab}
        })
    }

    /// The tokenizer of a folder holding `files`, checked for [`config`] with `max_length`.
    fn open(
        files: &[(&str, String)],
        requested: Option<usize>,
        lower_case: bool,
    ) -> Result<TextTokenizer, String> {
        let dir = tempfile::tempdir().unwrap();
        for (name, text) in files {
            std::fs::write(dir.path().join(name), text).unwrap();
        }
        let folder = Folder::new(dir.path());
        let files = read(&folder).map_err(|e| e.to_string())?;
        let limit = max_length(
            requested,
            None,
            files.model_max_length(),
            config().max_position_embeddings,
        )
        .map_err(|e| e.to_string())?;
        files
            .check(&config(), &limit, lower_case)
            .map_err(|e| e.to_string())
    }

    fn with(edit: impl FnOnce(&mut Value)) -> Vec<(&'static str, String)> {
        let mut t = tokenizer_json();
        edit(&mut t);
        vec![(TOKENIZER_FILE, t.to_string())]
    }

    #[track_caller]
    fn says(result: Result<TextTokenizer, String>, what: &[&str]) {
        let e = result.err().expect("an error");
        for w in what {
            assert!(e.contains(w), "`{e}` does not say `{w}`");
        }
    }

    #[test]
    fn max_length_follows_sentence_transformers() {
        let at = |n: usize, f: &str| Some((n, PathBuf::from(f)));
        let tokens = |r: Result<MaxLength, StageError>| r.unwrap().tokens;
        assert_eq!(tokens(max_length(Some(4), at(6, "s"), at(5, "t"), 8)), 4);
        assert_eq!(tokens(max_length(None, at(6, "s"), at(5, "t"), 8)), 6);
        assert_eq!(tokens(max_length(None, None, at(5, "t"), 8)), 5);
        assert_eq!(tokens(max_length(None, None, at(usize::MAX, "t"), 8)), 8);
        let none = max_length(None, None, None, 8).unwrap();
        assert_eq!((none.tokens, none.from), (8, LimitFrom::Positions));
        let e = max_length(Some(9), None, None, 8).unwrap_err().to_string();
        assert!(
            e.contains("`max_length` = 9") && e.contains("8 positions"),
            "{e}"
        );
    }

    #[test]
    fn texts_are_cut_and_lower_cased_as_the_folder_says() {
        let t = open(&with(|_| {}), Some(4), false).unwrap();
        let tokens = t.tokenize("the movie GOOD").unwrap();
        assert_eq!((tokens.ids, tokens.truncated), (vec![2, 4, 5, 3], true));
        assert_eq!(t.tokenize("GOOD").unwrap().ids, vec![2, 7, 3]);
        let lower = open(&with(|_| {}), None, true).unwrap();
        assert_eq!(lower.tokenize("GOOD").unwrap().ids, vec![2, 6, 3]);
        assert_eq!(lower.tokenize("").unwrap().ids, vec![2, 3]);
    }

    #[test]
    fn ids_beyond_the_embeddings_are_refused_when_the_folder_is_read() {
        says(
            open(
                &with(|t| t["model"]["vocab"]["movie"] = json!(8)),
                None,
                false,
            ),
            &[
                "tokenizer.json",
                "key `model.vocab`",
                "`movie` has id 8",
                "vocab_size (8)",
            ],
        );
        says(
            open(
                &with(|t| {
                    // tokenizers gives a token the vocabulary lacks the next id (8 here),
                    // whatever the file says.
                    let mut extra = t["added_tokens"][0].clone();
                    extra["id"] = json!(3);
                    extra["content"] = json!("<x>");
                    t["added_tokens"].as_array_mut().unwrap().push(extra);
                }),
                None,
                false,
            ),
            &["tokenizer.json", "key `added_tokens`", "`<x>` has id 8"],
        );
        says(
            open(
                &with(|t| t["post_processor"]["special_tokens"]["[SEP]"]["ids"] = json!([9])),
                None,
                false,
            ),
            &["tokenizer.json", "key `post_processor`", "gives token id 9"],
        );
        says(
            open(
                &with(|t| t["post_processor"]["single"][1]["Sequence"]["type_id"] = json!(2)),
                None,
                false,
            ),
            &["key `post_processor`", "type id 2", "type_vocab_size (2)"],
        );
        says(
            open(
                &with(|t| t["model"]["unk_token"] = json!("<unk>")),
                None,
                false,
            ),
            &["key `model.unk_token`", "`<unk>` is not in the vocabulary"],
        );
    }

    #[test]
    fn what_tokenizers_would_panic_on_is_refused() {
        says(
            open(
                &with(|t| t["post_processor"]["single"][2]["SpecialToken"]["id"] = json!("[X]")),
                None,
                false,
            ),
            &["key `post_processor.single[2]`", "special token `[X]`"],
        );
        says(
            open(
                &with(|t| t["post_processor"]["special_tokens"]["[SEP]"]["tokens"] = json!([])),
                None,
                false,
            ),
            &[
                "key `post_processor.special_tokens.[SEP]`",
                "number of `ids`",
            ],
        );
        says(
            open(
                &with(|t| {
                    t["normalizer"] = json!({"type": "Sequence", "normalizers": [
                        {"type": "Precompiled", "precompiled_charsmap": "AAAA"}]})
                }),
                None,
                false,
            ),
            &["tokenizer.json", "key `normalizer.normalizers[0]`"],
        );
    }

    #[test]
    fn a_text_may_not_outgrow_max_length() {
        let twice = |t: &mut Value| {
            let a = t["post_processor"]["single"][1].clone();
            t["post_processor"]["single"]
                .as_array_mut()
                .unwrap()
                .push(a);
        };
        says(
            open(&with(twice), None, false),
            &[
                "key `post_processor`",
                "makes a text of 14 tokens, more than max_length (8)",
            ],
        );
        let many = |t: &mut Value| {
            let sep = t["post_processor"]["single"][2].clone();
            let single = t["post_processor"]["single"].as_array_mut().unwrap();
            single.extend(std::iter::repeat_n(sep, 8));
        };
        says(
            open(&with(many), None, false),
            &[
                "key `post_processor`",
                "adds 10 special tokens",
                "8 positions",
            ],
        );
        let e = open(&with(|_| {}), Some(1), false).err().unwrap();
        assert!(
            e.starts_with("config: `max_length` = 1 is fewer tokens than"),
            "{e}"
        );
        says(
            open(
                &with(|t| {
                    t["truncation"] = json!({"max_length": 4, "strategy": "LongestFirst",
                "stride": 0, "direction": "Left"})
                }),
                None,
                false,
            ),
            &["key `truncation.direction`", "`left` is not supported"],
        );
    }

    #[test]
    fn transformers_files_must_agree_with_the_tokenizer() {
        let plus = |name: &'static str, text: &str| {
            let mut files = with(|_| {});
            files.push((name, text.to_string()));
            files
        };
        let settings = |text: &str| open(&plus(TOKENIZER_CONFIG_FILE, text), None, false);
        assert!(settings(
            r#"{"do_lower_case": false, "cls_token": "[CLS]",
            "model_max_length": 1e30, "added_tokens_decoder": {"2": {"content": "[CLS]"}}}"#
        )
        .is_ok());
        says(
            settings(r#"{"do_lower_case": true}"#),
            &[
                "tokenizer_config.json",
                "key `do_lower_case`",
                "lowercase false",
            ],
        );
        says(
            settings(r#"{"strip_accents": true}"#),
            &["key `strip_accents`", "strip_accents null"],
        );
        says(
            settings(r#"{"tokenize_chinese_chars": false}"#),
            &["key `tokenize_chinese_chars`"],
        );
        says(
            settings(r#"{"truncation_side": "left"}"#),
            &["key `truncation_side`"],
        );
        says(
            settings(r#"{"cls_token": {"content": "<s>"}}"#),
            &["key `cls_token`", "`<s>` is not a token of tokenizer.json"],
        );
        says(
            settings(r#"{"added_tokens_decoder": {"3": {"content": "[CLS]"}}}"#),
            &["key `added_tokens_decoder.3`", "has id 2"],
        );
        for bad in ["1", "2.5", "-4", "\"x\""] {
            says(
                settings(&format!(r#"{{"model_max_length": {bad}}}"#)),
                &["tokenizer_config.json", "key `model_max_length`"],
            );
        }
        let e = settings(r#"{"model_max_length": 1}"#).err().unwrap();
        assert!(e.starts_with("input data: model folder:"), "{e}");
        says(
            open(
                &plus(
                    SPECIAL_TOKENS_FILE,
                    r#"{"additional_special_tokens": ["[SEP]", "<x>"]}"#,
                ),
                None,
                false,
            ),
            &[
                "special_tokens_map.json",
                "key `additional_special_tokens[1]`",
                "`<x>`",
            ],
        );
        // A limit of model_max_length below the special tokens names that key.
        let mut files = with(|t| {
            let sep = t["post_processor"]["single"][2].clone();
            t["post_processor"]["single"]
                .as_array_mut()
                .unwrap()
                .push(sep);
        });
        files.push((TOKENIZER_CONFIG_FILE, r#"{"model_max_length": 2}"#.into()));
        says(
            open(&files, None, false),
            &[
                "tokenizer_config.json",
                "key `model_max_length`",
                "2 is fewer tokens than",
                "adds 3 special tokens",
            ],
        );
    }
}
