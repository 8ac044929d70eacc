//! Arrow schemas and typed Parquet readers/writers for every table mmflow writes.
//!
//! One module per table. Each module owns its Arrow schema, a typed in-memory form, a writer
//! and a reader. Every file carries key/value metadata (see [`TableMeta`]): the mmflow
//! version, the table's name and schema version, the stage that wrote it and that stage's
//! fingerprint, so any file can be traced back to the run that produced it.
//!
//! This crate depends on nothing else of mmflow's.

pub mod comparison;
pub mod diagnostics;
mod error;
pub mod evaluation;
pub mod features;
pub mod files;
#[cfg(test)]
mod golden_tests;
mod guard;
pub mod history;
pub mod norm_stats;
mod parquet_io;
pub mod segments;
pub mod targets;

pub use error::SchemaError;
pub use guard::CheckedFile;
pub use parquet_io::{
    open_parquet, read_file_meta, row_count, FileMeta, StageFingerprint, TableMeta,
};

/// The version of the mmflow tool, recorded in every file it writes.
pub const MMFLOW_VERSION: &str = env!("CARGO_PKG_VERSION");

/// Result type of this crate.
pub type Result<T, E = SchemaError> = std::result::Result<T, E>;

/// The standard partition a segment belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Split {
    /// Training data: the only split statistics and models are fitted on.
    Train,
    /// Validation data: model selection and early stopping.
    Valid,
    /// Held-out test data.
    Test,
}

impl Split {
    /// All splits in their canonical order.
    pub const ALL: [Split; 3] = [Split::Train, Split::Valid, Split::Test];

    /// The name stored in tables (`train`, `valid`, `test`, as the CMU SDK folds name them).
    pub fn as_str(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Valid => "valid",
            Split::Test => "test",
        }
    }

    /// Parses a split name; `val`/`validation`/`dev` are accepted as `valid`.
    pub fn parse(name: &str) -> Option<Split> {
        match name {
            "train" => Some(Split::Train),
            "valid" | "val" | "validation" | "dev" => Some(Split::Valid),
            "test" => Some(Split::Test),
            _ => None,
        }
    }
}

impl std::fmt::Display for Split {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Builds a segment id following the CMU SDK convention `<video>[<i>]`.
pub fn segment_id(video: &str, index: usize) -> String {
    format!("{video}[{index}]")
}
