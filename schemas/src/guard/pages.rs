//! Page headers, checked as the parquet crate asks for them.
//!
//! The crate reads a column chunk page by page: a page header from where the last page ended
//! (`ChunkReader::get_read`), then the page's bytes (`get_bytes`). [`CheckedFile`] answers
//! the first with a [`PageHeaderRead`], which on the crate's first read reads the header
//! itself, checks it, and hands the crate exactly the header's bytes (the crate also asks for
//! a reader where it then reads nothing: past a header it had peeked at); the second only
//! inside the column chunk the bytes belong to. So no page can make
//! the crate reserve more than [`MAX_PAGE_BYTES`] for its values (or, for a dictionary, more
//! than its values can fill), or decode levels or dictionary indices it has no decoder for.

use std::fs::File;
use std::io::{Cursor, Read};
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use parquet::errors::ParquetError;
use parquet::file::reader::{ChunkReader, Length};

use super::shapes::{DATA_PAGE_HEADER, DATA_PAGE_HEADER_V2, DICTIONARY_PAGE_HEADER, PAGE_HEADER};
use super::thrift::Reader;
use super::{Fault, MAX_PAGE_BYTES};

/// The bytes read for a page header at first (as much as the crate's own buffered reader):
/// enough for any header without long statistics.
pub(super) const HEADER_WINDOW: u64 = 8 << 10;
/// The largest page header read (its statistics may hold long values).
const MAX_HEADER_BYTES: u64 = 1 << 20;

/// `PageType`s.
const DATA_PAGE: i32 = 0;
const DICTIONARY_PAGE: i32 = 2;
const DATA_PAGE_V2: i32 = 3;
/// `Encoding`s: dictionary indices, and the two level encodings the crate decodes.
const PLAIN_DICTIONARY: i32 = 2;
const RLE: i32 = 3;
const BIT_PACKED: i32 = 4;
const RLE_DICTIONARY: i32 = 8;

/// `Type`s (physical), for the size of a plain value.
const BOOLEAN: i32 = 0;
const INT32: i32 = 1;
const INT64: i32 = 2;
const INT96: i32 = 3;
const FLOAT: i32 = 4;
const DOUBLE: i32 = 5;
const BYTE_ARRAY: i32 = 6;
const FIXED_LEN_BYTE_ARRAY: i32 = 7;

/// The fewest bits one plain-encoded value of a column takes (a byte array: its 4-byte
/// length; a fixed-length one of length 0: a byte, so its count stays bounded too).
pub(super) fn plain_value_bits(physical: i32, type_length: Option<i32>) -> u64 {
    match physical {
        BOOLEAN => 1,
        INT32 | FLOAT | BYTE_ARRAY => 32,
        INT64 | DOUBLE => 64,
        INT96 => 96,
        FIXED_LEN_BYTE_ARRAY => 8 * type_length.map_or(1, |n| u64::try_from(n).unwrap_or(1).max(1)),
        _ => 8,
    }
}

/// One column chunk that holds bytes, as its pages are checked.
#[derive(Debug, Clone)]
pub(crate) struct Chunk {
    /// Its bytes in the file.
    pub(super) start: u64,
    pub(super) end: u64,
    /// What its pages add up to uncompressed: no page is larger.
    pub(super) total_uncompressed: u64,
    /// Whether its pages are compressed (their values are then `uncompressed_page_size`
    /// bytes, else the page's bytes).
    pub(super) compressed: bool,
    /// The fewest bits a plain value of its column takes.
    pub(super) value_bits: u64,
}

/// A Parquet file whose footer passed the checks, as the parquet crate reads it: every page
/// header it reads is checked first (see the module's documentation). Clones share the open
/// file (read at offsets, so readers of different row groups may run at once).
#[derive(Debug, Clone)]
pub struct CheckedFile(Arc<Pages>);

/// The file and what its footer says of its column chunks.
#[derive(Debug)]
struct Pages {
    file: File,
    size: u64,
    /// The column chunks holding bytes, by where they start (none overlap).
    chunks: Vec<Chunk>,
    /// Per chunk: whether its dictionary page has been handed out.
    dictionaries: Vec<AtomicBool>,
}

impl CheckedFile {
    pub(super) fn new(file: File, size: u64, chunks: Vec<Chunk>) -> Self {
        let dictionaries = chunks.iter().map(|_| AtomicBool::new(false)).collect();
        CheckedFile(Arc::new(Pages {
            file,
            size,
            chunks,
            dictionaries,
        }))
    }
}

impl Pages {
    /// The chunk holding byte `offset`, with its index.
    fn chunk_at(&self, offset: u64) -> Result<(usize, &Chunk), Fault> {
        let after = self.chunks.partition_point(|c| c.start <= offset);
        after
            .checked_sub(1)
            .map(|i| (i, &self.chunks[i]))
            .filter(|(_, c)| offset < c.end)
            .ok_or_else(|| Fault::new(format!("byte {offset} is in no column chunk")))
    }

    /// The bytes of the page header at `start`, checked.
    fn page_header(&self, start: u64) -> Result<Vec<u8>, Fault> {
        let (index, chunk) = self.chunk_at(start)?;
        let room = chunk.end - start;
        let mut window = room.min(HEADER_WINDOW);
        loop {
            let mut bytes = vec![0u8; window as usize];
            self.file
                .read_exact_at(&mut bytes, start)
                .map_err(|e| Fault::new(e.to_string()))?;
            match PageHeader::read(&bytes) {
                Ok((header, len)) => {
                    self.check(index, chunk, start, &header, len as u64)?;
                    bytes.truncate(len);
                    return Ok(bytes);
                }
                // A header longer than the window: read more, up to the largest allowed.
                Err(_) if window < room.min(MAX_HEADER_BYTES) => {
                    window = room.min(MAX_HEADER_BYTES);
                }
                Err(fault) => return Err(fault),
            }
        }
    }

    /// Checks a page header of `len` bytes at `start`, in chunk `index`.
    fn check(
        &self,
        index: usize,
        chunk: &Chunk,
        start: u64,
        header: &PageHeader,
        len: u64,
    ) -> Result<(), Fault> {
        let room = chunk.end - start - len;
        let compressed = size("compressed_page_size", header.compressed)?;
        if compressed > room {
            return Err(Fault::new(format!(
                "compressed_page_size is {compressed}, but its column chunk has {room} bytes left"
            )));
        }
        let uncompressed = size("uncompressed_page_size", header.uncompressed)?;
        let most = chunk.total_uncompressed.min(MAX_PAGE_BYTES);
        if uncompressed > most {
            return Err(Fault::new(format!(
                "uncompressed_page_size is {uncompressed}, more than {most} (its column chunk's total_uncompressed_size, at most {MAX_PAGE_BYTES})"
            )));
        }
        // The bytes its values are decoded from.
        let values = if chunk.compressed {
            uncompressed
        } else {
            compressed
        };
        match header.kind {
            DICTIONARY_PAGE => {
                if start != chunk.start {
                    return Err(Fault::new(
                        "a dictionary page that is not its column chunk's first".into(),
                    ));
                }
                let (num_values, _) = header
                    .dictionary
                    .ok_or_else(|| Fault::new("a dictionary page without its header".into()))?;
                let num_values = size("num_values", num_values)?;
                if num_values.saturating_mul(chunk.value_bits) > values.saturating_mul(8) {
                    return Err(Fault::new(format!(
                        "a dictionary of {num_values} values in {values} bytes"
                    )));
                }
                self.dictionaries[index].store(true, Ordering::Relaxed);
            }
            DATA_PAGE | DATA_PAGE_V2 => {
                let (encoding, levels) = header
                    .data
                    .ok_or_else(|| Fault::new("a data page without its data page header".into()))?;
                if let Some(level) = levels
                    .into_iter()
                    .flatten()
                    .find(|l| ![RLE, BIT_PACKED].contains(l))
                {
                    return Err(Fault::new(format!("levels in encoding {level}")));
                }
                let indices = [PLAIN_DICTIONARY, RLE_DICTIONARY].contains(&encoding);
                if indices && !self.dictionaries[index].load(Ordering::Relaxed) {
                    return Err(Fault::new(
                        "dictionary indices, but its column chunk has no dictionary page before"
                            .into(),
                    ));
                }
            }
            _ => {}
        }
        Ok(())
    }
}

/// A non-negative size or count of a page header, or a fault naming it.
fn size(what: &str, value: i32) -> Result<u64, Fault> {
    u64::try_from(value).map_err(|_| Fault::new(format!("{what} is negative ({value})")))
}

/// What the checks need of a page header.
#[derive(Debug, Default)]
struct PageHeader {
    kind: i32,
    uncompressed: i32,
    compressed: i32,
    /// A dictionary page's value count and encoding.
    dictionary: Option<(i32, i32)>,
    /// A data page's value encoding, and its level encodings (v1 only).
    data: Option<(i32, [Option<i32>; 2])>,
}

impl PageHeader {
    /// Decodes a page header from the start of `bytes`; with its length.
    fn read(bytes: &[u8]) -> Result<(PageHeader, usize), Fault> {
        let mut r = Reader::new(bytes, "the page header");
        let mut header = PageHeader::default();
        let (mut kind, mut uncompressed, mut compressed) = (None, None, None);
        r.read_struct(&PAGE_HEADER, |r, id| {
            match id {
                1 => kind = Some(r.i32()?),
                2 => uncompressed = Some(r.i32()?),
                3 => compressed = Some(r.i32()?),
                5 => header.data = Some(read_data_page_header(r)?),
                7 => header.dictionary = Some(read_dictionary_page_header(r)?),
                8 => header.data = Some(read_data_page_header_v2(r)?),
                _ => return Ok(false),
            }
            Ok(true)
        })?;
        let missing = |field: &str| Fault::new(format!("a page header without {field}"));
        header.kind = kind.ok_or_else(|| missing("its type"))?;
        header.uncompressed = uncompressed.ok_or_else(|| missing("uncompressed_page_size"))?;
        header.compressed = compressed.ok_or_else(|| missing("compressed_page_size"))?;
        Ok((header, r.read_so_far()))
    }
}

fn read_data_page_header(r: &mut Reader) -> Result<(i32, [Option<i32>; 2]), Fault> {
    let (mut encoding, mut levels) = (None, [None, None]);
    r.read_struct(&DATA_PAGE_HEADER, |r, id| {
        match id {
            2 => encoding = Some(r.i32()?),
            3 => levels[0] = Some(r.i32()?),
            4 => levels[1] = Some(r.i32()?),
            _ => return Ok(false),
        }
        Ok(true)
    })?;
    let encoding = encoding.ok_or_else(|| Fault::new("a data page without its encoding".into()))?;
    Ok((encoding, levels))
}

fn read_data_page_header_v2(r: &mut Reader) -> Result<(i32, [Option<i32>; 2]), Fault> {
    let mut encoding = None;
    r.read_struct(&DATA_PAGE_HEADER_V2, |r, id| {
        match id {
            4 => encoding = Some(r.i32()?),
            _ => return Ok(false),
        }
        Ok(true)
    })?;
    // Version 2 pages' levels are always RLE.
    let encoding = encoding.ok_or_else(|| Fault::new("a data page without its encoding".into()))?;
    Ok((encoding, [None, None]))
}

fn read_dictionary_page_header(r: &mut Reader) -> Result<(i32, i32), Fault> {
    let (mut num_values, mut encoding) = (None, None);
    r.read_struct(&DICTIONARY_PAGE_HEADER, |r, id| {
        match id {
            1 => num_values = Some(r.i32()?),
            2 => encoding = Some(r.i32()?),
            _ => return Ok(false),
        }
        Ok(true)
    })?;
    let missing = |field: &str| Fault::new(format!("a dictionary page without {field}"));
    Ok((
        num_values.ok_or_else(|| missing("num_values"))?,
        encoding.ok_or_else(|| missing("its encoding"))?,
    ))
}

/// What the crate reads a page header from: the header at `start`, read and checked when
/// the crate first reads.
#[derive(Debug)]
pub struct PageHeaderRead {
    pages: Arc<Pages>,
    start: u64,
    header: Option<Cursor<Vec<u8>>>,
}

impl Read for PageHeaderRead {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let header = match &mut self.header {
            Some(header) => header,
            None => {
                let bytes = self.pages.page_header(self.start).map_err(|fault| {
                    std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        format!("the page header at byte {}: {fault}", self.start),
                    )
                })?;
                self.header.insert(Cursor::new(bytes))
            }
        };
        header.read(buf)
    }
}

impl Length for CheckedFile {
    fn len(&self) -> u64 {
        self.0.size
    }
}

impl ChunkReader for CheckedFile {
    type T = PageHeaderRead;

    /// The crate asks for a reader where a page header starts: it gets that header's bytes,
    /// checked, and nothing more.
    fn get_read(&self, start: u64) -> parquet::errors::Result<Self::T> {
        Ok(PageHeaderRead {
            pages: Arc::clone(&self.0),
            start,
            header: None,
        })
    }

    /// A page's bytes, which must lie in the column chunk they belong to.
    fn get_bytes(&self, start: u64, length: usize) -> parquet::errors::Result<Bytes> {
        if length == 0 {
            return Ok(Bytes::new());
        }
        let refuse =
            |fault: Fault| ParquetError::General(format!("the page at byte {start}: {fault}"));
        let (_, chunk) = self.0.chunk_at(start).map_err(refuse)?;
        if length as u64 > chunk.end - start {
            return Err(refuse(Fault::new(format!(
                "{length} bytes, but its column chunk has {} left",
                chunk.end - start
            ))));
        }
        let mut bytes = vec![0u8; length];
        self.0.file.read_exact_at(&mut bytes, start)?;
        Ok(bytes.into())
    }
}
