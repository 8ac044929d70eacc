//! Helpers: a temporary working directory and a way to run `mmflow` in it.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// A temporary directory to run `mmflow` in; removed when dropped.
pub struct Dir {
    dir: tempfile::TempDir,
}

/// What one `mmflow` invocation did.
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    /// Panics with both streams unless the exit code is `code`.
    #[track_caller]
    pub fn expect(self, code: i32) -> Self {
        assert_eq!(
            self.code, code,
            "exit code {} (expected {code})\n--- stdout\n{}\n--- stderr\n{}",
            self.code, self.stdout, self.stderr
        );
        self
    }

    /// Panics unless the command succeeded.
    #[track_caller]
    pub fn ok(self) -> Self {
        self.expect(0)
    }

    /// Lines of stdout mentioning `stage` and `what`.
    pub fn says(&self, stage: &str, what: &str) -> bool {
        self.stdout
            .lines()
            .any(|l| l.trim_start().starts_with(&format!("{stage} ")) && l.contains(what))
    }
}

impl Dir {
    pub fn new() -> Self {
        Dir {
            dir: tempfile::tempdir().expect("temp dir"),
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn join(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// Writes a file (creating parent directories).
    pub fn write(&self, rel: &str, text: &str) -> PathBuf {
        let path = self.join(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).unwrap();
        }
        std::fs::write(&path, text).unwrap();
        path
    }

    /// A `mmflow` command running in this directory.
    pub fn command(&self, args: &[&str]) -> Command {
        // `MMFLOW_BIN`: the binary, where the tests run on a machine other than the one that
        // built them (scripts/gpu-check.sh).
        let bin =
            std::env::var_os("MMFLOW_BIN").unwrap_or_else(|| env!("CARGO_BIN_EXE_mmflow").into());
        let mut cmd = Command::new(bin);
        cmd.args(args)
            .current_dir(self.path())
            .env("RUST_LOG", "info");
        cmd
    }

    /// Runs `mmflow` with `args` and waits for it.
    pub fn mmflow(&self, args: &[&str]) -> Run {
        let Output {
            status,
            stdout,
            stderr,
        } = self.command(args).output().expect("mmflow runs");
        Run {
            code: status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&stdout).into_owned(),
            stderr: String::from_utf8_lossy(&stderr).into_owned(),
        }
    }
}

/// Every `.parquet` file below `dir`, relative to it, sorted.
pub fn parquet_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap().flatten() {
            let p = entry.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|e| e == "parquet") {
                out.push(p.strip_prefix(dir).unwrap().to_path_buf());
            }
        }
    }
    out.sort();
    out
}

/// A small two-dataset pipeline: tiny MOSEI and MOSI, each normalised.
pub const SMALL: &str = r#"
[pipeline]
name = "small"
seed = 42

[stages.mosei]
kind = "synthetic"
seed = 1
params = { profile = "mosei", scale = 0.01, chunk_videos = 8 }

[stages.mosi]
kind = "synthetic"
seed = 2
params = { profile = "mosi", scale = 0.1 }

[stages.mosei_norm]
kind = "normalize"
inputs = { segments = "mosei.segments", features = ["mosei.text", "mosei.audio", "mosei.visual"] }

[stages.mosi_norm]
kind = "normalize"
inputs = { segments = "mosi.segments", features = ["mosi.text", "mosi.audio", "mosi.visual"] }
"#;
