//! The mmflow engine: pipeline config, DAG, fingerprints, cache, lock file and executor.
//!
//! It knows nothing about sentiment analysis: stage kinds come from outside through a
//! [`Registry`] of [`StageKind`]s, and tables are opaque [`TableKind`]s to it.
//!
//! - [`config`]: the TOML file, `--set` overrides, validation that collects every problem.
//! - [`template`]: `[templates.<name>]`, stages written once and expanded once per item.
//! - [`plan`]: fingerprints and the decision to run or skip each stage (and why).
//! - [`executor`]: runs stages in topological order, independent ones concurrently, writing
//!   outputs to temporary paths, renaming them into place and recording the lock entry last.
//! - [`manifest`]: the lock file.
//! - [`run_cache`]: outputs kept by fingerprint for every run directory sharing the cache.
//! - [`files`]: opening user-named files (regular files only).
//! - [`record`]: a run directory read back as a record of results (settings + lock entries of
//!   the last run that completed), refused while its last run is unfinished.

pub mod collect;
pub mod config;
pub mod docs;
pub mod executor;
mod graph;
pub mod manifest;
mod names;
mod nesting;
pub mod plan;
pub mod problem;
pub mod progress;
pub mod record;
pub mod run_cache;
mod runlock;
pub mod stage;
pub mod sweep;
pub mod template;
pub mod values;

use std::path::{Path, PathBuf};

pub use config::{load, Pipeline, PlannedStage};
pub use executor::{run, RunOptions, RunSummary, StageOutcome};
pub use problem::{KeyPath, ParamProblem, Problem, Problems};
pub use progress::Progress;
pub use stage::{
    Arity, BoundInputs, Cause, DeviceChoice, DeviceResolver, InputRef, InputSlot, Moved,
    OutputPort, Registry, ResolvedDevice, ResolvedInput, RunContext, Slot, StageError, StageKind,
    TableKind,
};

/// What can go wrong in the engine itself (as opposed to inside a stage).
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// A file of the run directory could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// What happened.
        source: std::io::Error,
    },
    /// The lock file cannot be parsed.
    #[error("{}: the lock file is corrupt ({message}); delete it to re-run every stage", path.display())]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// The parser's message.
        message: String,
    },
    /// The lock file was written by a newer mmflow.
    #[error("{}: the lock file was written by a newer mmflow (lock format {format}; this mmflow reads up to {}); use that version, or choose another run directory", path.display(), crate::manifest::LOCK_FORMAT)]
    NewerLock {
        /// The file.
        path: PathBuf,
        /// The format it records.
        format: u32,
    },
    /// The lock file records an output outside its stage's directory.
    #[error("{}: stage `{stage}`: output `{output}` is recorded at `{}`, outside the stage's directory `{stage}/` in the run directory; the lock file was edited — delete it to re-run every stage", path.display(), recorded.display())]
    UnsafeLock {
        /// The lock file.
        path: PathBuf,
        /// The stage whose entry is at fault.
        stage: String,
        /// Its output.
        output: String,
        /// The path recorded for it.
        recorded: PathBuf,
    },
    /// The run directory (or a folder above it) is a file.
    #[error("{}: cannot be the run directory: {} is not a directory; choose another --out (or `pipeline.run_dir`)", dir.display(), blocker.display())]
    NotADirectory {
        /// The run directory asked for.
        dir: PathBuf,
        /// The path that exists but is not a directory.
        blocker: PathBuf,
    },
    /// Another run holds the run directory.
    #[error("{}: another `mmflow run` is using this run directory{}; wait for it to finish (or pass --wait), or choose another --out", dir.display(), holder.as_ref().map(|h| format!(" (pid {h})")).unwrap_or_default())]
    Busy {
        /// The run directory.
        dir: PathBuf,
        /// The pid written by the holder, when readable.
        holder: Option<String>,
    },
    /// A command-line request names something the pipeline does not have.
    #[error("{0}")]
    Usage(String),
}

impl EngineError {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> Self {
        EngineError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

#[cfg(test)]
mod tests;
