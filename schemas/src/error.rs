use std::path::PathBuf;

/// Everything that can go wrong reading or writing a table. Every variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum SchemaError {
    /// The file could not be opened, created or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file at fault.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The Parquet or Arrow layer failed (corrupt file, encoding error).
    #[error("{}: {message}", path.display())]
    Format {
        /// The file at fault.
        path: PathBuf,
        /// What the Parquet/Arrow layer said.
        message: String,
    },
    /// The file is a readable Parquet file but not the table that was expected.
    #[error("{}: expected a `{expected}` table, found {found}", path.display())]
    WrongTable {
        /// The file at fault.
        path: PathBuf,
        /// The table name the reader wanted.
        expected: String,
        /// What the file's metadata says it is.
        found: String,
    },
    /// A column is missing or has the wrong type or shape.
    #[error("{}: column `{column}`: {problem}", path.display())]
    Column {
        /// The file at fault.
        path: PathBuf,
        /// The column at fault.
        column: String,
        /// What is wrong with it.
        problem: String,
    },
    /// Data handed to a writer is inconsistent (a programming error upstream of the writer).
    #[error("{}: {message}", path.display())]
    Invalid {
        /// The file being written.
        path: PathBuf,
        /// What is inconsistent.
        message: String,
    },
}

impl SchemaError {
    pub(crate) fn format(path: &std::path::Path, e: impl std::fmt::Display) -> Self {
        SchemaError::Format {
            path: path.to_path_buf(),
            message: e.to_string(),
        }
    }

    pub(crate) fn column(path: &std::path::Path, column: &str, problem: impl Into<String>) -> Self {
        SchemaError::Column {
            path: path.to_path_buf(),
            column: column.to_string(),
            problem: problem.into(),
        }
    }
}
