//! The footer: read from the end of the file, its length checked, its `FileMetaData`
//! decoded and checked field by field before the parquet crate sees it.

use std::fs::File;
use std::os::unix::fs::FileExt;

use super::pages::{plain_value_bits, Chunk};
use super::shapes::{
    Kind, COLUMN_CHUNK, COLUMN_META_DATA, FILE_META_DATA, ROW_GROUP, SCHEMA_ELEMENT,
};
use super::thrift::Reader;
use super::{Fault, MAX_FOOTER_BYTES, MAX_PATH_BYTES, MAX_SCHEMA_DEPTH, MAX_SCHEMA_ELEMENTS};

/// What ends every Parquet file (and starts it).
pub(super) const MAGIC: &[u8; 4] = b"PAR1";
/// What ends a Parquet file whose footer is encrypted.
const ENCRYPTED_MAGIC: &[u8; 4] = b"PARE";
/// The last bytes of a file: the metadata's length (u32, little-endian), then [`MAGIC`].
pub(super) const TAIL_BYTES: u64 = 8;
/// Where column data may start: after the leading magic.
pub(super) const DATA_START: u64 = MAGIC.len() as u64;
/// The smallest Parquet file: both magics and a metadata length.
const SMALLEST_FILE: u64 = DATA_START + TAIL_BYTES;
/// What one `String` of a column path costs besides its bytes.
const STRING_BYTES: u64 = std::mem::size_of::<String>() as u64;
/// `CompressionCodec::UNCOMPRESSED`.
const UNCOMPRESSED: i32 = 0;

/// A footer that passed every check.
#[derive(Debug)]
pub(super) struct Footer {
    /// The Thrift-encoded `FileMetaData`.
    pub(super) metadata: Vec<u8>,
    /// The file's row count (the sum of its row groups').
    pub(super) rows: u64,
    /// Its column chunks that hold bytes, by where they start.
    pub(super) chunks: Vec<Chunk>,
}

/// Why a footer could not be read.
#[derive(Debug)]
pub(super) enum Error {
    Io(std::io::Error),
    Refused(Fault),
}

impl From<Fault> for Error {
    fn from(fault: Fault) -> Self {
        Error::Refused(fault)
    }
}

/// Reads and checks the footer of `file` (of `size` bytes).
pub(super) fn read(file: &File, size: u64) -> Result<Footer, Error> {
    if size < SMALLEST_FILE {
        return Err(Fault::new(format!(
            "it is {size} bytes long, shorter than the {SMALLEST_FILE} bytes of the smallest Parquet file"
        ))
        .into());
    }
    let mut tail = [0u8; TAIL_BYTES as usize];
    file.read_exact_at(&mut tail, size - TAIL_BYTES)
        .map_err(Error::Io)?;
    let len = metadata_length(&tail, size)?;
    let data_end = size - TAIL_BYTES - len;
    let mut metadata = vec![0u8; len as usize];
    file.read_exact_at(&mut metadata, data_end)
        .map_err(Error::Io)?;
    let (rows, chunks) = check(&metadata, data_end)?;
    Ok(Footer {
        metadata,
        rows,
        chunks,
    })
}

/// The length of the footer's metadata, from the file's last 8 bytes (`tail`), checked
/// against the file's size and [`MAX_FOOTER_BYTES`].
fn metadata_length(tail: &[u8; TAIL_BYTES as usize], size: u64) -> Result<u64, Fault> {
    let (len, magic) = tail.split_at(4);
    if magic == ENCRYPTED_MAGIC {
        return Err(Fault::new(
            "its footer is encrypted (mmflow reads plaintext Parquet only)".into(),
        ));
    }
    if magic != MAGIC {
        return Err(Fault::new("it does not end with `PAR1`".into()));
    }
    let len = u64::from(u32::from_le_bytes(len.try_into().expect("4 bytes")));
    let room = size - TAIL_BYTES - DATA_START;
    if len > room {
        return Err(Fault::new(format!(
            "its footer claims {len} bytes, but the file holds only {room} bytes before its last 8"
        )));
    }
    if len > MAX_FOOTER_BYTES {
        return Err(Fault::new(format!(
            "its footer is {len} bytes, more than the {MAX_FOOTER_BYTES} bytes mmflow reads"
        )));
    }
    Ok(len)
}

/// Checks the Thrift-encoded `FileMetaData` of a file whose column data must end at
/// `data_end` (where the footer starts); returns its row count and column chunks.
fn check(metadata: &[u8], data_end: u64) -> Result<(u64, Vec<Chunk>), Fault> {
    let mut r = Reader::new(metadata, "the footer");
    let mut file = FileCheck {
        data_end,
        columns: None,
        num_rows: None,
        rows_in_groups: 0,
        row_groups: None,
        chunks: Vec::new(),
    };
    r.read_struct(&FILE_META_DATA, |r, id| file.field(r, id))?;
    let rows = file.rows()?;
    Ok((rows, disjoint(file.chunks)?))
}

/// What is known of a file while its `FileMetaData` is read.
struct FileCheck {
    data_end: u64,
    /// Each leaf column's fewest bits per plain value, once the schema is read.
    columns: Option<Vec<u64>>,
    num_rows: Option<i64>,
    rows_in_groups: u64,
    row_groups: Option<usize>,
    chunks: Vec<Chunk>,
}

impl FileCheck {
    /// Reads the fields the checks need; the others are read by their kind.
    fn field(&mut self, r: &mut Reader, id: i16) -> Result<bool, Fault> {
        match id {
            2 => self.columns = Some(read_schema(r)?),
            3 => self.num_rows = Some(r.i64()?),
            4 => self.read_row_groups(r)?,
            _ => return Ok(false),
        }
        Ok(true)
    }

    fn read_row_groups(&mut self, r: &mut Reader) -> Result<(), Fault> {
        let Some(columns) = &self.columns else {
            return Err(Fault::new("its row groups come before its schema".into()));
        };
        let len = r.list_of(&Kind::Struct(&ROW_GROUP))?;
        for i in 0..len {
            let rows = read_row_group(r, columns, self.data_end, &mut self.chunks)
                .map_err(|f| f.within(format_args!("row group {i}")))?;
            self.rows_in_groups = self.rows_in_groups.checked_add(rows).ok_or_else(|| {
                Fault::new(format!("row group {i}: the row groups' rows overflow"))
            })?;
        }
        r.end_list();
        self.row_groups = Some(len);
        Ok(())
    }

    /// The file's rows, once everything is read: `num_rows`, and the row groups' sum.
    fn rows(&self) -> Result<u64, Fault> {
        if self.columns.is_none() {
            return Err(Fault::new("its footer holds no schema".into()));
        }
        let Some(num_rows) = self.num_rows else {
            return Err(Fault::new("its footer holds no num_rows".into()));
        };
        if self.row_groups.is_none() {
            return Err(Fault::new("its footer holds no row groups".into()));
        }
        let rows = u64::try_from(num_rows)
            .map_err(|_| Fault::new(format!("num_rows is negative ({num_rows})")))?;
        if rows != self.rows_in_groups {
            return Err(Fault::new(format!(
                "num_rows is {rows}, but its row groups hold {} rows",
                self.rows_in_groups
            )));
        }
        Ok(rows)
    }
}

/// The column chunks that hold bytes, sorted by where they start; refused if two share bytes.
fn disjoint(mut chunks: Vec<Chunk>) -> Result<Vec<Chunk>, Fault> {
    chunks.retain(|c| c.end > c.start);
    chunks.sort_by_key(|c| c.start);
    for pair in chunks.windows(2) {
        if pair[1].start < pair[0].end {
            return Err(Fault::new(format!(
                "two column chunks share bytes ({}..{} and {}..{})",
                pair[0].start, pair[0].end, pair[1].start, pair[1].end
            )));
        }
    }
    Ok(chunks)
}

// ---------------------------------------------------------------- the schema

/// What the tree needs of one schema element.
struct Element<'a> {
    name: &'a [u8],
    num_children: Option<i32>,
    /// Its physical type (a leaf with one is a column).
    physical: Option<i32>,
    type_length: Option<i32>,
}

/// Reads the schema list and checks its tree; returns, per leaf column, the fewest bits a
/// plain value of it takes.
fn read_schema(r: &mut Reader) -> Result<Vec<u64>, Fault> {
    let len = r.list_of(&Kind::Struct(&SCHEMA_ELEMENT))?;
    if len > MAX_SCHEMA_ELEMENTS {
        return Err(Fault::new(format!(
            "its schema has {len} elements, more than the {MAX_SCHEMA_ELEMENTS} mmflow reads"
        )));
    }
    let mut tree = Tree::new(len);
    for i in 0..len {
        let element = read_element(r).map_err(|f| f.within(format_args!("schema element {i}")))?;
        tree.add(i, &element).map_err(|f| {
            f.within(format_args!(
                "schema element {i} (`{}`)",
                String::from_utf8_lossy(element.name)
            ))
        })?;
    }
    r.end_list();
    tree.columns()
}

fn read_element<'a>(r: &mut Reader<'a>) -> Result<Element<'a>, Fault> {
    let mut element = Element {
        name: &[],
        num_children: None,
        physical: None,
        type_length: None,
    };
    r.read_struct(&SCHEMA_ELEMENT, |r, id| {
        match id {
            1 => element.physical = Some(r.i32()?),
            2 => element.type_length = Some(r.i32()?),
            4 => element.name = r.binary()?,
            5 => element.num_children = Some(r.i32()?),
            _ => return Ok(false),
        }
        Ok(true)
    })?;
    Ok(element)
}

/// The schema tree, checked as its elements arrive (depth first, as the footer lists them):
/// only the groups still open are kept, so its memory is bounded by the depth.
struct Tree {
    len: usize,
    /// Open groups, root first: children still expected, and the path bytes down to it.
    open: Vec<(usize, u64)>,
    closed: bool,
    /// Per leaf column: the fewest bits a plain value takes.
    columns: Vec<u64>,
    path_bytes: u64,
}

impl Tree {
    fn new(len: usize) -> Self {
        Tree {
            len,
            open: Vec::new(),
            closed: false,
            columns: Vec::new(),
            path_bytes: 0,
        }
    }

    /// Element `i`, the next in depth-first order.
    fn add(&mut self, i: usize, element: &Element) -> Result<(), Fault> {
        if self.closed {
            return Err(Fault::new(format!(
                "it follows the end of the schema tree (its root's children end at element {})",
                i - 1
            )));
        }
        let children = element.num_children.unwrap_or(0);
        let children = usize::try_from(children)
            .map_err(|_| Fault::new(format!("it declares {children} children")))?;
        let after = self.len - i - 1;
        if children > after {
            return Err(Fault::new(format!(
                "it declares {children} children, but only {after} schema elements follow"
            )));
        }
        let depth = self.open.len();
        if depth > MAX_SCHEMA_DEPTH {
            return Err(Fault::new(format!(
                "the schema nests deeper than {MAX_SCHEMA_DEPTH} levels"
            )));
        }
        // The root's name is in no column's path.
        let path = match self.open.last_mut() {
            Some((left, above)) => {
                *left -= 1;
                *above + STRING_BYTES + element.name.len() as u64
            }
            None => 0,
        };
        if children > 0 {
            self.open.push((children, path));
        } else if let (Some(physical), true) = (element.physical, depth > 0) {
            self.add_column(physical, element.type_length, path)?;
        }
        while self.open.last().is_some_and(|&(left, _)| left == 0) {
            self.open.pop();
        }
        self.closed = self.open.is_empty();
        Ok(())
    }

    fn add_column(
        &mut self,
        physical: i32,
        type_length: Option<i32>,
        path: u64,
    ) -> Result<(), Fault> {
        self.path_bytes += path;
        if self.path_bytes > MAX_PATH_BYTES {
            return Err(Fault::new(format!(
                "its columns' paths take more than the {MAX_PATH_BYTES} bytes mmflow allows"
            )));
        }
        self.columns.push(plain_value_bits(physical, type_length));
        Ok(())
    }

    /// Per leaf column, the fewest bits of a plain value, if the tree closed.
    fn columns(self) -> Result<Vec<u64>, Fault> {
        if self.len == 0 {
            return Err(Fault::new("its schema has no root".into()));
        }
        if let Some(&(left, _)) = self.open.last() {
            return Err(Fault::new(format!(
                "its schema tree does not close: a group still expects {left} more children after the last element"
            )));
        }
        Ok(self.columns)
    }
}

// ---------------------------------------------------------------- row groups

/// Reads one row group of a file whose leaf columns are `columns` (their plain value bits),
/// adding its column chunks to `chunks`; returns its rows.
fn read_row_group(
    r: &mut Reader,
    columns: &[u64],
    data_end: u64,
    chunks: &mut Vec<Chunk>,
) -> Result<u64, Fault> {
    let mut num_rows = None;
    let mut saw_columns = false;
    r.read_struct(&ROW_GROUP, |r, id| {
        match id {
            1 => {
                read_column_chunks(r, columns, data_end, chunks)?;
                saw_columns = true;
            }
            2 => {
                non_negative("total_byte_size", r.i64()?)?;
            }
            3 => num_rows = Some(r.i64()?),
            5 => {
                let offset = non_negative("file_offset", r.i64()?)?;
                inside("file_offset", offset, 0, data_end)?;
            }
            _ => return Ok(false),
        }
        Ok(true)
    })?;
    if !saw_columns {
        return Err(Fault::new("it has no column chunks".into()));
    }
    let rows = num_rows.ok_or_else(|| Fault::new("it has no num_rows".into()))?;
    non_negative("num_rows", rows)
}

fn read_column_chunks(
    r: &mut Reader,
    columns: &[u64],
    data_end: u64,
    chunks: &mut Vec<Chunk>,
) -> Result<(), Fault> {
    let len = r.list_of(&Kind::Struct(&COLUMN_CHUNK))?;
    if len != columns.len() {
        return Err(Fault::new(format!(
            "it has {len} column chunks, but the schema has {} columns",
            columns.len()
        )));
    }
    for (i, &value_bits) in columns.iter().enumerate() {
        let chunk = read_column_chunk(r, data_end, value_bits)
            .map_err(|f| f.within(format_args!("column {i}")))?;
        chunks.push(chunk);
    }
    r.end_list();
    Ok(())
}

/// Where a column chunk's index structures lie, if it has them.
#[derive(Default)]
struct Indexes {
    offset_index: (Option<i64>, Option<i32>),
    column_index: (Option<i64>, Option<i32>),
}

fn read_column_chunk(r: &mut Reader, data_end: u64, value_bits: u64) -> Result<Chunk, Fault> {
    let mut chunk = None;
    let mut indexes = Indexes::default();
    r.read_struct(&COLUMN_CHUNK, |r, id| {
        match id {
            1 => {
                let file = String::from_utf8_lossy(r.binary()?).into_owned();
                return Err(Fault::new(format!(
                    "its data is in another file (`{file}`), which mmflow does not read"
                )));
            }
            3 => chunk = Some(read_column_meta_data(r, data_end, value_bits)?),
            4 => indexes.offset_index.0 = Some(r.i64()?),
            5 => indexes.offset_index.1 = Some(r.i32()?),
            6 => indexes.column_index.0 = Some(r.i64()?),
            7 => indexes.column_index.1 = Some(r.i32()?),
            _ => return Ok(false),
        }
        Ok(true)
    })?;
    let chunk = chunk.ok_or_else(|| Fault::new("it has no metadata".into()))?;
    for (what, (offset, len)) in [
        ("its offset index", indexes.offset_index),
        ("its column index", indexes.column_index),
    ] {
        if let Some(offset) = offset {
            span(what, offset, len.map_or(0, i64::from), data_end)?;
        }
    }
    Ok(chunk)
}

/// What the checks need of a `ColumnMetaData`.
#[derive(Default)]
struct ChunkMeta {
    codec: Option<i32>,
    total_uncompressed_size: Option<u64>,
    total_compressed_size: Option<i64>,
    data_page_offset: Option<i64>,
    dictionary_page_offset: Option<i64>,
    bloom_filter: (Option<i64>, Option<i32>),
}

fn read_column_meta_data(r: &mut Reader, data_end: u64, value_bits: u64) -> Result<Chunk, Fault> {
    let mut meta = ChunkMeta::default();
    r.read_struct(&COLUMN_META_DATA, |r, id| {
        match id {
            4 => meta.codec = Some(r.i32()?),
            5 => {
                non_negative("num_values", r.i64()?)?;
            }
            6 => {
                let size = non_negative("total_uncompressed_size", r.i64()?)?;
                meta.total_uncompressed_size = Some(size);
            }
            7 => meta.total_compressed_size = Some(r.i64()?),
            9 => meta.data_page_offset = Some(r.i64()?),
            11 => meta.dictionary_page_offset = Some(r.i64()?),
            14 => meta.bloom_filter.0 = Some(r.i64()?),
            15 => meta.bloom_filter.1 = Some(r.i32()?),
            _ => return Ok(false),
        }
        Ok(true)
    })?;
    let missing = |field: &str| Fault::new(format!("it has no {field}"));
    let data = meta
        .data_page_offset
        .ok_or_else(|| missing("data_page_offset"))?;
    let size = meta
        .total_compressed_size
        .ok_or_else(|| missing("total_compressed_size"))?;
    // Where the crate starts reading the chunk: its dictionary page, if it has one (a chunk
    // holding only a dictionary may then say 0 for its data pages, which the crate ignores).
    let start = meta.dictionary_page_offset.unwrap_or(data);
    let (start, end) = span("its pages", start, size, data_end)?;
    if let (Some(offset), len) = meta.bloom_filter {
        span(
            "its bloom filter",
            offset,
            len.map_or(0, i64::from),
            data_end,
        )?;
    }
    Ok(Chunk {
        start,
        end,
        total_uncompressed: meta
            .total_uncompressed_size
            .ok_or_else(|| missing("total_uncompressed_size"))?,
        compressed: meta.codec.ok_or_else(|| missing("codec"))? != UNCOMPRESSED,
        value_bits,
    })
}

/// `value` as a `u64`, or a fault naming `what` if it is negative.
fn non_negative(what: &str, value: i64) -> Result<u64, Fault> {
    u64::try_from(value).map_err(|_| Fault::new(format!("{what} is negative ({value})")))
}

/// Checks that `offset` lies in `[low, high]`.
fn inside(what: &str, offset: u64, low: u64, high: u64) -> Result<(), Fault> {
    if offset < low || offset > high {
        return Err(Fault::new(format!(
            "{what} {offset} is outside the file's data (bytes {low}..{high})"
        )));
    }
    Ok(())
}

/// Checks that the `len` bytes at `offset` lie in the file's data, `[DATA_START, data_end)`;
/// returns where they start and end.
fn span(what: &str, offset: i64, len: i64, data_end: u64) -> Result<(u64, u64), Fault> {
    let start = non_negative(&format!("the offset of {what}"), offset)?;
    // Both below 2^63: their sum fits.
    let end = start + non_negative(&format!("the size of {what}"), len)?;
    if start < DATA_START || end > data_end {
        return Err(Fault::new(format!(
            "{what}: bytes {start}..{end} are outside the file's data (bytes {DATA_START}..{data_end})"
        )));
    }
    Ok((start, end))
}
