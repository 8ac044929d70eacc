//! The files of a model folder: read through `mmflow_schemas::files` (regular files only; the
//! JSON files at most [`MAX_JSON_BYTES`]), parsed into the types that describe them, and every
//! problem an input-data error naming the file and the key.

use std::fmt::Display;
use std::path::{Component, Path, PathBuf};

use mmflow_pipeline::StageError;
use mmflow_schemas::files::{read_regular, read_regular_at_most};

/// The architecture, in the model folder.
pub const CONFIG_FILE: &str = "config.json";
/// The tokenizer, in the model folder.
pub const TOKENIZER_FILE: &str = "tokenizer.json";
/// The weights, in the model folder.
pub const WEIGHTS_FILE: &str = "model.safetensors";

/// The largest JSON file of a model folder read (a large multilingual `tokenizer.json` is
/// 20 MB; parsed, a JSON file takes several times its size).
pub const MAX_JSON_BYTES: u64 = 256 << 20;

/// A model folder on disk.
pub struct Folder {
    root: PathBuf,
}

/// One file of the folder, read.
pub struct File {
    /// Where it is.
    pub path: PathBuf,
    /// Its contents.
    pub bytes: Vec<u8>,
}

impl Folder {
    /// The folder at `root` (nothing is read yet).
    pub fn new(root: &Path) -> Folder {
        Folder {
            root: root.to_path_buf(),
        }
    }

    /// Where the file `name` of the folder is.
    pub fn path(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }

    /// A file the folder must hold, by its name within the folder: the weights are read whole,
    /// a JSON file up to [`MAX_JSON_BYTES`].
    pub fn required(&self, name: &str) -> Result<File, StageError> {
        self.optional(name)?.ok_or_else(|| {
            StageError::input(format!(
                "model folder {}: `{name}` is missing (a BERT model folder holds {CONFIG_FILE}, {TOKENIZER_FILE} and {WEIGHTS_FILE})",
                self.root.display()
            ))
        })
    }

    /// A file the folder may hold (`None` when absent).
    pub fn optional(&self, name: &str) -> Result<Option<File>, StageError> {
        let path = self.path(name);
        let read = if name == WEIGHTS_FILE {
            read_regular(&path)
        } else {
            read_regular_at_most(&path, MAX_JSON_BYTES)
        };
        match read {
            Ok(bytes) => Ok(Some(File { path, bytes })),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) if e.kind() == std::io::ErrorKind::InvalidData => Err(StageError::input(
                format!("model folder: {}: {e}", path.display()),
            )),
            Err(source) => Err(StageError::Io { path, source }),
        }
    }
}

impl File {
    /// An input-data error about the whole file.
    pub fn error(&self, message: impl Display) -> StageError {
        StageError::input(format!("model folder: {}: {message}", self.path.display()))
    }

    /// An input-data error about one key of the file (a JSON path such as `model.vocab`).
    pub fn fault(&self, key: &str, message: impl Display) -> StageError {
        self.error(format!("key `{key}`: {message}"))
    }

    /// The file parsed as JSON into `T`; an error names the key that does not fit.
    pub fn json<T: serde::de::DeserializeOwned>(&self) -> Result<T, StageError> {
        let mut de = serde_json::Deserializer::from_slice(&self.bytes);
        serde_path_to_error::deserialize(&mut de).map_err(|e| {
            let key = e.path().to_string();
            if key == "." || key.is_empty() {
                self.error(e.inner())
            } else {
                self.fault(&key, e.inner())
            }
        })
    }
}

/// Whether `path` (from a file of the folder) names something inside the folder that the
/// fingerprint sees: relative, every component a plain name that does not start with a dot
/// (hidden files are not hashed).
pub fn stays_inside(path: &str) -> bool {
    Path::new(path).components().all(|c| match c {
        Component::Normal(name) => !name.to_string_lossy().starts_with('.'),
        _ => false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_errors_name_the_file_and_the_key() {
        #[derive(Debug, serde::Deserialize)]
        #[expect(dead_code, reason = "only the error is looked at")]
        struct T {
            a: Vec<u32>,
        }
        let file = File {
            path: PathBuf::from("m/x.json"),
            bytes: br#"{"a": [1, -2]}"#.to_vec(),
        };
        let e = file.json::<T>().unwrap_err().to_string();
        assert!(e.contains("m/x.json") && e.contains("key `a[1]`"), "{e}");
        let file = File {
            path: PathBuf::from("m/x.json"),
            bytes: b"[".to_vec(),
        };
        let e = file.json::<T>().unwrap_err().to_string();
        assert!(e.contains("m/x.json") && !e.contains("key"), "{e}");
    }

    #[test]
    fn paths_must_stay_inside_the_folder() {
        assert!(stays_inside("1_Pooling"));
        assert!(stays_inside("a/b"));
        for outside in ["../x", "/etc", "a/../../b", ".hidden", "a/.b", "./a"] {
            assert!(!stays_inside(outside), "{outside}");
        }
    }
}
