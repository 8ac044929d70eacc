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
    /// The Parquet layer failed (corrupt file, encoding error).
    #[error("{}: {context}{source}", path.display())]
    Parquet {
        /// The file at fault.
        path: PathBuf,
        /// What mmflow was doing, when it says more than the error (or empty).
        context: &'static str,
        /// The Parquet layer's error.
        #[source]
        source: parquet::errors::ParquetError,
    },
    /// The Arrow layer failed (a batch or column of the wrong shape or type).
    #[error("{}: {source}", path.display())]
    Arrow {
        /// The file at fault.
        path: PathBuf,
        /// The Arrow layer's error.
        #[source]
        source: arrow_schema::ArrowError,
    },
    /// The file's format is not what mmflow reads (a footer refused by the guard, metadata
    /// that does not parse).
    #[error("{}: {message}", path.display())]
    Format {
        /// The file at fault.
        path: PathBuf,
        /// What is wrong.
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
    pub(crate) fn format(path: &std::path::Path, message: impl Into<String>) -> Self {
        SchemaError::Format {
            path: path.to_path_buf(),
            message: message.into(),
        }
    }

    pub(crate) fn parquet(path: &std::path::Path, source: parquet::errors::ParquetError) -> Self {
        SchemaError::Parquet {
            path: path.to_path_buf(),
            context: "",
            source,
        }
    }

    pub(crate) fn arrow(path: &std::path::Path, source: arrow_schema::ArrowError) -> Self {
        SchemaError::Arrow {
            path: path.to_path_buf(),
            source,
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
