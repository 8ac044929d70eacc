//! sentence-transformers' files in a model folder, all optional: `sentence_bert_config.json`
//! (`max_seq_length`, `do_lower_case`), `modules.json` (the modules a text goes through), the
//! Pooling module's `config.json` and `config_sentence_transformers.json` (prompts). Each is
//! checked key by key; a module or setting the encoder does not follow is refused by name
//! rather than silently giving other vectors than sentence-transformers.

use std::collections::BTreeMap;

use mmflow_pipeline::StageError;
use serde::Deserialize;

use super::folder::{stays_inside, File, Folder};

/// sentence-transformers' settings of the Transformer module.
pub const SENTENCE_CONFIG_FILE: &str = "sentence_bert_config.json";
/// sentence-transformers' module list.
pub const MODULES_FILE: &str = "modules.json";
/// sentence-transformers' model settings (prompts, similarity).
pub const MODEL_SETTINGS_FILE: &str = "config_sentence_transformers.json";
/// The settings file inside a module's folder.
const MODULE_CONFIG_FILE: &str = "config.json";

/// What the sentence-transformers files of a folder say.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Sentence {
    /// `max_seq_length` (already checked to be 2 to the model's positions).
    pub max_seq_length: Option<usize>,
    /// `do_lower_case`: texts are lower-cased before they are tokenized.
    pub lower_case: bool,
    /// Whether the module list ends sentence vectors with a `Normalize` module.
    pub normalize: bool,
}

#[derive(Debug, Deserialize)]
struct SentenceConfig {
    #[serde(default)]
    max_seq_length: Option<usize>,
    #[serde(default)]
    do_lower_case: Option<bool>,
}

#[derive(Debug, Deserialize)]
struct Module {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    path: String,
}

/// The modules the encoder runs, by the last part of their Python class name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ModuleKind {
    Transformer,
    Pooling,
    Normalize,
}

impl ModuleKind {
    const ALL: [(&'static str, ModuleKind); 3] = [
        ("Transformer", ModuleKind::Transformer),
        ("Pooling", ModuleKind::Pooling),
        ("Normalize", ModuleKind::Normalize),
    ];

    fn of(class: &str) -> Option<ModuleKind> {
        let name = class.rsplit('.').next().unwrap_or(class);
        Self::ALL.iter().find(|(n, _)| *n == name).map(|&(_, k)| k)
    }
}

/// The keys of a Pooling module's `config.json` (the modes are checked as booleans; which one is
/// used is the stage's `pooling`).
#[derive(Debug, Deserialize)]
#[expect(dead_code, reason = "the modes are read to check their types")]
struct PoolingConfig {
    word_embedding_dimension: usize,
    #[serde(default)]
    pooling_mode_cls_token: Option<bool>,
    #[serde(default)]
    pooling_mode_mean_tokens: Option<bool>,
    #[serde(default)]
    pooling_mode_max_tokens: Option<bool>,
    #[serde(default)]
    pooling_mode_mean_sqrt_len_tokens: Option<bool>,
    #[serde(default)]
    pooling_mode_weightedmean_tokens: Option<bool>,
    #[serde(default)]
    pooling_mode_lasttoken: Option<bool>,
    #[serde(default)]
    include_prompt: Option<bool>,
}

#[derive(Debug, Deserialize)]
struct ModelSettings {
    #[serde(default)]
    prompts: BTreeMap<String, String>,
    #[serde(default)]
    default_prompt_name: Option<String>,
}

/// Reads the sentence-transformers files of `folder` for a network of `hidden` wide vectors and
/// `positions` positions.
pub fn read(folder: &Folder, hidden: usize, positions: usize) -> Result<Sentence, StageError> {
    let mut sentence = Sentence::default();
    if let Some(file) = folder.optional(SENTENCE_CONFIG_FILE)? {
        let c: SentenceConfig = file.json()?;
        if let Some(n) = c.max_seq_length {
            check_max_seq_length(&file, n, positions)?;
        }
        sentence.max_seq_length = c.max_seq_length;
        sentence.lower_case = c.do_lower_case.unwrap_or(false);
    }
    if let Some(file) = folder.optional(MODULES_FILE)? {
        sentence.normalize = read_modules(folder, &file, hidden)?;
    }
    if let Some(file) = folder.optional(MODEL_SETTINGS_FILE)? {
        check_prompts(&file)?;
    }
    Ok(sentence)
}

/// `max_seq_length` must leave room for `[CLS]` and `[SEP]` and fit the model's positions.
fn check_max_seq_length(file: &File, n: usize, positions: usize) -> Result<(), StageError> {
    if n < 2 {
        return Err(file.fault(
            "max_seq_length",
            format!("{n} is fewer than 2 ([CLS] and [SEP])"),
        ));
    }
    if n > positions {
        return Err(file.fault(
            "max_seq_length",
            format!("{n} is more than the model's {positions} positions (config.json's max_position_embeddings)"),
        ));
    }
    Ok(())
}

/// Checks the module list and each module's settings; whether it ends with `Normalize`.
fn read_modules(folder: &Folder, file: &File, hidden: usize) -> Result<bool, StageError> {
    let modules: Vec<Module> = file.json()?;
    let mut normalize = false;
    for (i, m) in modules.iter().enumerate() {
        let Some(kind) = ModuleKind::of(&m.kind) else {
            let known: Vec<&str> = ModuleKind::ALL.iter().map(|(n, _)| *n).collect();
            return Err(file.fault(
                &format!("[{i}].type"),
                format!(
                    "`{}` is not supported (embed_text runs the modules {})",
                    m.kind,
                    known.join(", ")
                ),
            ));
        };
        match kind {
            ModuleKind::Transformer if !m.path.is_empty() => {
                return Err(file.fault(
                    &format!("[{i}].path"),
                    format!(
                        "`{}`: embed_text reads the Transformer module from the folder itself (path \"\")",
                        m.path
                    ),
                ))
            }
            ModuleKind::Transformer => {}
            ModuleKind::Pooling => check_pooling(folder, file, i, &m.path, hidden)?,
            ModuleKind::Normalize => normalize = true,
        }
    }
    Ok(normalize)
}

/// The Pooling module's settings, in `<path>/config.json`.
fn check_pooling(
    folder: &Folder,
    modules: &File,
    i: usize,
    path: &str,
    hidden: usize,
) -> Result<(), StageError> {
    if path.is_empty() || !stays_inside(path) {
        return Err(modules.fault(
            &format!("[{i}].path"),
            format!("`{path}` is not a folder inside the model folder"),
        ));
    }
    let name = format!("{path}/{MODULE_CONFIG_FILE}");
    let Some(file) = folder.optional(&name)? else {
        return Err(modules.fault(
            &format!("[{i}].path"),
            format!("the Pooling module's `{name}` is missing"),
        ));
    };
    let pooling: PoolingConfig = file.json()?;
    if pooling.word_embedding_dimension != hidden {
        return Err(file.fault(
            "word_embedding_dimension",
            format!(
                "{} but config.json's hidden_size is {hidden}",
                pooling.word_embedding_dimension
            ),
        ));
    }
    Ok(())
}

/// A default prompt would be put before every text; the encoder embeds texts as they are.
fn check_prompts(file: &File) -> Result<(), StageError> {
    let settings: ModelSettings = file.json()?;
    match settings.default_prompt_name {
        None => Ok(()),
        Some(name) if !settings.prompts.contains_key(&name) => Err(file.fault(
            "default_prompt_name",
            format!("`{name}` is not one of `prompts`"),
        )),
        Some(name) => Err(file.fault(
            "default_prompt_name",
            format!("`{name}` is not supported (embed_text embeds each text as it is, without a prompt before it)"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A folder holding `files` (name, contents).
    fn folder(files: &[(&str, &str)]) -> (tempfile::TempDir, Folder) {
        let dir = tempfile::tempdir().unwrap();
        for (name, text) in files {
            let path = dir.path().join(name);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, text).unwrap();
        }
        let folder = Folder::new(dir.path());
        (dir, folder)
    }

    const MODULES: &str = r#"[
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
        {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"}]"#;
    const POOLING: &str = r#"{"word_embedding_dimension": 8, "pooling_mode_cls_token": false,
        "pooling_mode_mean_tokens": true, "pooling_mode_max_tokens": false,
        "pooling_mode_mean_sqrt_len_tokens": false}"#;

    #[test]
    fn a_sentence_transformers_folder_is_read() {
        let (_dir, f) = folder(&[
            (
                SENTENCE_CONFIG_FILE,
                r#"{"max_seq_length": 12, "do_lower_case": true}"#,
            ),
            (MODULES_FILE, MODULES),
            ("1_Pooling/config.json", POOLING),
            (
                MODEL_SETTINGS_FILE,
                r#"{"prompts": {}, "default_prompt_name": null}"#,
            ),
        ]);
        let s = read(&f, 8, 16).unwrap();
        assert_eq!(
            s,
            Sentence {
                max_seq_length: Some(12),
                lower_case: true,
                normalize: true
            }
        );
        let (_dir, f) = folder(&[]);
        assert_eq!(read(&f, 8, 16).unwrap(), Sentence::default());
    }

    #[test]
    fn bad_settings_name_the_file_and_the_key() {
        let fails = |files: &[(&str, &str)], file: &str, says: &[&str]| {
            let (_dir, f) = folder(files);
            let e = read(&f, 8, 16).unwrap_err().to_string();
            assert!(e.contains(file), "{e}");
            for s in says {
                assert!(e.contains(s), "`{e}` does not say `{s}`");
            }
        };
        for (n, what) in [
            ("0", "fewer than 2"),
            ("1", "fewer than 2"),
            ("17", "16 positions"),
        ] {
            fails(
                &[(
                    SENTENCE_CONFIG_FILE,
                    &format!(r#"{{"max_seq_length": {n}}}"#),
                )],
                SENTENCE_CONFIG_FILE,
                &["key `max_seq_length`", what],
            );
        }
        fails(
            &[(SENTENCE_CONFIG_FILE, r#"{"max_seq_length": -3}"#)],
            SENTENCE_CONFIG_FILE,
            &["key `max_seq_length`"],
        );
        fails(
            &[(SENTENCE_CONFIG_FILE, r#"{"do_lower_case": "yes"}"#)],
            SENTENCE_CONFIG_FILE,
            &["key `do_lower_case`"],
        );
        let dense = MODULES.replace("models.Normalize", "models.Dense");
        fails(
            &[(MODULES_FILE, &dense), ("1_Pooling/config.json", POOLING)],
            MODULES_FILE,
            &["key `[2].type`", "Dense` is not supported"],
        );
        fails(
            &[(
                MODULES_FILE,
                &MODULES.replace("\"path\": \"\"", "\"path\": \"0_BERT\""),
            )],
            MODULES_FILE,
            &["key `[0].path`", "0_BERT"],
        );
        fails(
            &[(MODULES_FILE, &MODULES.replace("1_Pooling", "../1_Pooling"))],
            MODULES_FILE,
            &["key `[1].path`", "not a folder inside"],
        );
        fails(
            &[(MODULES_FILE, MODULES)],
            MODULES_FILE,
            &["key `[1].path`", "1_Pooling/config.json` is missing"],
        );
        fails(
            &[(MODULES_FILE, r#"{"type": "x"}"#)],
            MODULES_FILE,
            &["invalid type"],
        );
        fails(
            &[
                (MODULES_FILE, MODULES),
                ("1_Pooling/config.json", &POOLING.replace(": 8", ": 9")),
            ],
            "1_Pooling/config.json",
            &[
                "key `word_embedding_dimension`",
                "9 but config.json's hidden_size is 8",
            ],
        );
        fails(
            &[
                (MODULES_FILE, MODULES),
                ("1_Pooling/config.json", &POOLING.replace("true", "1")),
            ],
            "1_Pooling/config.json",
            &["key `pooling_mode_mean_tokens`"],
        );
        fails(
            &[(
                MODEL_SETTINGS_FILE,
                r#"{"prompts": {"q": "query: "}, "default_prompt_name": "q"}"#,
            )],
            MODEL_SETTINGS_FILE,
            &["key `default_prompt_name`", "not supported"],
        );
        fails(
            &[(
                MODEL_SETTINGS_FILE,
                r#"{"prompts": {}, "default_prompt_name": "q"}"#,
            )],
            MODEL_SETTINGS_FILE,
            &["key `default_prompt_name`", "not one of `prompts`"],
        );
    }
}
