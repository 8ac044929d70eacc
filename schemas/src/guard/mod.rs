//! Parquet from outside, checked before the parquet crate reads it.
//!
//! The crate trusts what a file says: a schema element declaring 2^31 − 1 children made it
//! reserve 16 GiB, a schema nested two thousand levels deep overflows the stack while it
//! builds readers, a dictionary page claiming 2^31 values makes it reserve 8 GiB, a data page
//! whose dictionary never came makes it panic. So every table is opened here:
//!
//! - [`footer`]: the last 8 bytes (metadata length, `PAR1`), the length checked against the
//!   file and [`MAX_FOOTER_BYTES`], then the Thrift `FileMetaData` decoded over that bounded
//!   buffer: a schema tree that closes, at most [`MAX_SCHEMA_DEPTH`] deep; row groups whose
//!   rows add up and whose column chunks lie inside the file, one per column. Only those
//!   checked bytes are handed to the crate, so it decodes exactly what was checked.
//! - [`pages`]: the file the crate then reads is a [`CheckedFile`], which decodes and checks
//!   each page header the crate asks for (its sizes against its column chunk and
//!   [`MAX_PAGE_BYTES`], its value count against the bytes that hold the values, its
//!   encodings) and hands the crate those bytes and no others.
//!
//! Both decode the Thrift compact protocol with a reader of our own ([`thrift`]) that reads
//! every field as the crate reads it ([`shapes`]) and refuses what the crate would misread.

mod footer;
mod pages;
mod shapes;
mod thrift;

#[cfg(test)]
mod tests;

use std::path::Path;

pub use pages::CheckedFile;

use crate::SchemaError;

/// The largest footer read: three orders of magnitude above what mmflow writes for its
/// largest tables, and a bound on what the crate builds from one (its metadata takes about
/// 20 times the footer's bytes at worst).
pub(crate) const MAX_FOOTER_BYTES: u64 = 16 << 20;
/// The deepest schema tree read (pyarrow's limit): an element below this many groups is
/// refused.
pub(crate) const MAX_SCHEMA_DEPTH: usize = 100;
/// The most schema elements (Arrow C++'s limit on a Thrift list).
pub(crate) const MAX_SCHEMA_ELEMENTS: usize = 1_000_000;
/// The most bytes the crate may spend on column paths: each leaf holds the names of all its
/// ancestors, so a long name above many leaves multiplies (counted as its `String`s take).
pub(crate) const MAX_PATH_BYTES: u64 = 256 << 20;
/// The largest page read, uncompressed: writers cut pages at 1 MiB by default.
pub(crate) const MAX_PAGE_BYTES: u64 = 64 << 20;

/// Why a file is refused, in words (with where in it, outermost first).
#[derive(Debug)]
pub(crate) struct Fault(String);

impl Fault {
    fn new(message: String) -> Self {
        Fault(message)
    }

    /// The fault, said to be inside `place` (`row group 3`, `schema element 7`).
    fn within(self, place: impl std::fmt::Display) -> Self {
        Fault(format!("{place}: {}", self.0))
    }
}

impl std::fmt::Display for Fault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// A Parquet file whose footer passed every check.
#[derive(Debug)]
pub(crate) struct Opened {
    /// The Thrift-encoded `FileMetaData`, for the crate to decode.
    pub(crate) metadata: Vec<u8>,
    /// The file's row count (the sum of its row groups').
    pub(crate) rows: u64,
    /// The file, for the crate to read pages from.
    pub(crate) file: CheckedFile,
}

/// Opens the Parquet file at `path` (a regular file only, see
/// [`crate::files::open_regular`]) and reads and checks its footer.
pub(crate) fn open(path: &Path) -> crate::Result<Opened> {
    let io = |source| SchemaError::Io {
        path: path.to_path_buf(),
        source,
    };
    let (file, size) = crate::files::open_regular(path).map_err(io)?;
    let footer = footer::read(&file, size).map_err(|e| match e {
        footer::Error::Io(source) => io(source),
        footer::Error::Refused(fault) => SchemaError::Format {
            path: path.to_path_buf(),
            message: format!("not a readable Parquet file: {fault}"),
        },
    })?;
    Ok(Opened {
        metadata: footer.metadata,
        rows: footer.rows,
        file: CheckedFile::new(file, size, footer.chunks),
    })
}
