//! A pickle reader that understands data and nothing else.
//!
//! Python's `pickle.load` runs whatever callables a file names; this reader never runs or
//! emulates code. It implements the opcodes of protocols 2–5 that plain data uses (dicts,
//! lists, tuples, strings, bytes, numbers) and recognises exactly these globals, which is
//! how numpy stores arrays:
//!
//! | global | meaning here |
//! |---|---|
//! | `numpy.core.multiarray._reconstruct`, `numpy._core.multiarray._reconstruct` | an empty array, filled by BUILD with `(version, shape, dtype, is_fortran, data)` |
//! | `numpy.ndarray` | only as `_reconstruct`'s argument |
//! | `numpy.dtype` | a dtype (`"f4"`, `"U20"`, `"O8"`, …), endianness set by BUILD |
//! | `numpy.core.numeric._frombuffer`, `numpy._core.numeric._frombuffer` | protocol 5 arrays: `(buffer, dtype, shape, order)` |
//! | `numpy.core.multiarray.scalar`, `numpy._core.multiarray.scalar` | a numpy scalar `(dtype, bytes)` |
//! | `_codecs.encode` | protocol 2's bytes: `(str, "latin1")` |
//! | `__builtin__.bytes`, `builtins.bytes` | protocol 2's empty bytes: `()` only |
//! | `collections.OrderedDict` | a dict |
//!
//! Any other global (e.g. a `__reduce__` payload naming `os.system`), and any opcode that
//! builds arbitrary objects (NEWOBJ, INST, OBJ, persistent ids, extensions, out-of-band
//! buffers) is refused with an error naming it and its byte offset.
//!
//! Sizes come from the file, so every one is checked before anything is allocated: lengths
//! of strings, bytes and frames against the bytes left in the file, array shapes with
//! checked arithmetic against the bytes that hold them. Memo references share: an array
//! referenced from several keys is one [`Arc`], as in Python. Lists, dicts and strings
//! become owned values, so what they may expand to is bounded by a `Budget` proportional
//! to the file's size: a small file that references one container over and over (a "memo
//! bomb") is refused instead of exhausting memory, and cyclic data is refused. What a value
//! would expand to is measured on the object graph (each container once) before anything is
//! built, so refusing a bomb takes time in proportion to the file, not to the expansion.
//!
//! The file is read through a [`Source`]: bytes in memory, or a [`FileSource`] read with
//! positioned reads through a small window, never the whole file at once. Byte strings of
//! [`STORED_FROM`] bytes or more (a numpy array's payload) are not copied while parsing: the
//! reader notes where they lie and skips them. A numeric array whose payload lies in the file
//! stays there as [`ArrayData::Stored`] (dtype, byte offset, layout), its size checked
//! against its shape like any other; its rows are decoded later, a bounded run at a time,
//! with [`NdArray::read_rows_f32`] (float arrays, C or Fortran order) or all at once with
//! [`NdArray::load`] (small arrays: labels, lengths). So parsing takes memory for the
//! file's structure (dicts, ids, strings) only, and one pass over the arrays' bytes writes
//! them out. String arrays (`U`, `S`) and 8-byte unsigned arrays, whose decoding can fail, are
//! decoded while parsing, as are the arrays of protocol 2, whose bytes are latin-1 text.
#![warn(clippy::cast_possible_truncation, clippy::arithmetic_side_effects)]

use std::collections::HashMap;
use std::fs::File;
use std::ops::Range;
use std::rc::Rc;
use std::sync::Arc;

/// A value read from a pickle.
#[derive(Debug, Clone, PartialEq)]
pub enum PyValue {
    /// `None`.
    None,
    /// A bool.
    Bool(bool),
    /// An int (at most 64 bits).
    Int(i64),
    /// A float.
    Float(f64),
    /// A str.
    Str(String),
    /// bytes or bytearray.
    Bytes(Vec<u8>),
    /// A list (or set).
    List(Vec<PyValue>),
    /// A tuple.
    Tuple(Vec<PyValue>),
    /// A dict, in insertion order.
    Dict(Vec<(PyValue, PyValue)>),
    /// A numpy array, shared between every place the file references it from.
    Array(Arc<NdArray>),
}

/// A numpy array in C order.
#[derive(Debug, Clone, PartialEq)]
pub struct NdArray {
    /// Shape.
    pub shape: Vec<usize>,
    /// Elements in C (row-major) order.
    pub data: ArrayData,
}

/// The elements of an array, by kind.
#[derive(Debug, Clone, PartialEq)]
pub enum ArrayData {
    /// float16/float32.
    F32(Vec<f32>),
    /// float64.
    F64(Vec<f64>),
    /// Any integer type, widened.
    I64(Vec<i64>),
    /// bool.
    Bool(Vec<bool>),
    /// Unicode (`U`) strings, each as numpy reads an item: trailing NULs (the padding of a
    /// fixed-width item) stripped, inner NULs kept.
    Str(Vec<String>),
    /// Byte (`S`) strings, each as numpy reads an item: trailing NULs stripped, inner ones kept.
    Bytes(Vec<Vec<u8>>),
    /// Object arrays: Python values.
    Object(Vec<PyValue>),
    /// Numbers still in the file the array was read from (see [`NdArray::read_rows_f32`] and
    /// [`NdArray::load`]).
    Stored(StoredArray),
}

/// Where a numeric array's elements lie in its file: their dtype, first byte and layout.
/// The byte count (elements × item size) was checked against the file when it was read.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredArray {
    dtype: Dtype,
    offset: usize,
    fortran: bool,
}

impl StoredArray {
    /// The name of the element type it decodes to, for messages.
    pub fn kind(&self) -> &'static str {
        match self.dtype.kind {
            'f' if self.dtype.size == 8 => "float64",
            'f' => "float32",
            'b' => "bool",
            _ => "int",
        }
    }

    /// True when its elements decode to floats.
    fn is_float(&self) -> bool {
        self.dtype.kind == 'f'
    }
}

impl NdArray {
    /// Number of elements.
    pub fn len(&self) -> usize {
        product(&self.shape)
    }

    /// True if the array holds no element.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The name of the element type, for messages.
    pub fn kind(&self) -> &'static str {
        self.data.kind()
    }

    /// Elements per row: the product of the shape after the first axis (1 for a vector).
    pub fn row_len(&self) -> usize {
        product(self.shape.get(1..).unwrap_or_default())
    }

    /// The array with its elements in memory: a [`ArrayData::Stored`] array is read from
    /// `source` (the one it was read from) and decoded whole; any other is cloned. Meant for
    /// small arrays (labels, lengths): the caller checks the element count first.
    pub fn load<S: Source + ?Sized>(&self, source: &S) -> Result<NdArray, PickleError> {
        let ArrayData::Stored(stored) = &self.data else {
            return Ok(self.clone());
        };
        let n = self.len();
        let len = n.saturating_mul(stored.dtype.size);
        let bytes = read_extent(source, stored.offset, len)?;
        let data = decode(&stored.dtype, &bytes, n).map_err(|message| PickleError {
            offset: stored.offset,
            message,
        })?;
        let data = if stored.fortran {
            reorder_fortran(data, &self.shape)
        } else {
            data
        };
        Ok(NdArray {
            shape: self.shape.clone(),
            data,
        })
    }

    /// Appends rows `rows` (along the first axis) of a float array to `out` as f32, in C
    /// order, [`NdArray::row_len`] values a row; a [`ArrayData::Stored`] array is read from
    /// `source` (the one it was read from) in bounded runs, whatever its layout. Rows past
    /// the first axis, and arrays that do not hold floats, are errors.
    pub fn read_rows_f32<S: Source + ?Sized>(
        &self,
        source: &S,
        rows: Range<usize>,
        out: &mut Vec<f32>,
    ) -> Result<(), PickleError> {
        let count = self.shape.first().copied().unwrap_or(1);
        let width = self.row_len();
        let range = if rows.start <= rows.end && rows.end <= count {
            rows.start.saturating_mul(width)..rows.end.saturating_mul(width)
        } else {
            return Err(PickleError {
                offset: 0,
                message: format!(
                    "rows {rows:?} of an array of shape {:?}: out of range",
                    self.shape
                ),
            });
        };
        match &self.data {
            ArrayData::F32(v) => out.extend_from_slice(&v[range]),
            ArrayData::F64(v) => out.extend(v[range].iter().map(|&x| narrow(x))),
            ArrayData::Stored(stored) if stored.is_float() => {
                stored.read_rows(source, &self.shape, rows, out)?
            }
            other => {
                return Err(PickleError {
                    offset: 0,
                    message: format!("a {} array, expected floats", other.kind()),
                })
            }
        }
        Ok(())
    }
}

impl ArrayData {
    /// The name of the element type, for messages.
    pub fn kind(&self) -> &'static str {
        match self {
            ArrayData::F32(_) => "float32",
            ArrayData::F64(_) => "float64",
            ArrayData::I64(_) => "int",
            ArrayData::Bool(_) => "bool",
            ArrayData::Str(_) => "str",
            ArrayData::Bytes(_) => "bytes",
            ArrayData::Object(_) => "object",
            ArrayData::Stored(stored) => stored.kind(),
        }
    }

    /// True for floats (in memory or in the file).
    pub fn is_float(&self) -> bool {
        match self {
            ArrayData::F32(_) | ArrayData::F64(_) => true,
            ArrayData::Stored(stored) => stored.is_float(),
            _ => false,
        }
    }

    /// True for floats and ints (in memory or in the file), not bools.
    pub fn is_number(&self) -> bool {
        match self {
            ArrayData::F32(_) | ArrayData::F64(_) | ArrayData::I64(_) => true,
            ArrayData::Stored(stored) => stored.dtype.kind != 'b',
            _ => false,
        }
    }
}

impl PyValue {
    /// A short description of the value's type, for messages.
    pub fn type_name(&self) -> String {
        match self {
            PyValue::None => "None".into(),
            PyValue::Bool(_) => "bool".into(),
            PyValue::Int(_) => "int".into(),
            PyValue::Float(_) => "float".into(),
            PyValue::Str(_) => "str".into(),
            PyValue::Bytes(_) => "bytes".into(),
            PyValue::List(_) => "list".into(),
            PyValue::Tuple(_) => "tuple".into(),
            PyValue::Dict(_) => "dict".into(),
            PyValue::Array(a) => format!("{} array of shape {:?}", a.kind(), a.shape),
        }
    }

    /// The value of `key` in a dict with string keys.
    pub fn get(&self, key: &str) -> Option<&PyValue> {
        match self {
            PyValue::Dict(items) => items
                .iter()
                .find(|(k, _)| matches!(k, PyValue::Str(s) if s == key))
                .map(|(_, v)| v),
            _ => None,
        }
    }
}

/// Why a pickle was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("byte {offset}: {message}")]
pub struct PickleError {
    /// Byte offset of the opcode at fault.
    pub offset: usize,
    /// What is wrong.
    pub message: String,
}

/// Where a pickle's bytes are read from: memory, or a file read with positioned reads.
pub trait Source {
    /// The number of bytes.
    fn size(&self) -> usize;
    /// Fills `buf` with the bytes from `offset` on; an error when they are not all there
    /// (a file cut short since it was opened).
    fn read_at(&self, offset: usize, buf: &mut [u8]) -> std::io::Result<()>;
}

impl Source for [u8] {
    fn size(&self) -> usize {
        self.len()
    }

    fn read_at(&self, offset: usize, buf: &mut [u8]) -> std::io::Result<()> {
        let bytes = offset
            .checked_add(buf.len())
            .and_then(|end| self.get(offset..end))
            .ok_or(std::io::ErrorKind::UnexpectedEof)?;
        buf.copy_from_slice(bytes);
        Ok(())
    }
}

/// An open pickle file, read with positioned reads (`pread`): nothing of it is held in memory
/// but what a read asks for.
#[derive(Debug)]
pub struct FileSource {
    file: File,
    size: usize,
}

impl FileSource {
    /// The file, `size` bytes long (its size when opened).
    pub fn new(file: File, size: u64) -> std::io::Result<Self> {
        let size = usize::try_from(size).map_err(|_| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "is larger than this machine can address",
            )
        })?;
        Ok(FileSource { file, size })
    }
}

impl Source for FileSource {
    fn size(&self) -> usize {
        self.size
    }

    fn read_at(&self, offset: usize, buf: &mut [u8]) -> std::io::Result<()> {
        use std::os::unix::fs::FileExt;
        let offset = u64::try_from(offset).map_err(|_| std::io::ErrorKind::UnexpectedEof)?;
        self.file.read_exact_at(buf, offset)
    }
}

/// Byte strings this long or longer are noted where they lie in the source, not copied,
/// while parsing (see the module docs).
pub const STORED_FROM: usize = 256;

/// Reads a pickle (protocols 2–5) holding only data and numpy arrays from memory, with
/// every array decoded ([`read_from`] then [`NdArray::load`] for each stored array; an
/// array referenced from several places stays one [`Arc`]).
pub fn read(bytes: &[u8]) -> Result<PyValue, PickleError> {
    let value = read_from(bytes)?;
    let mut loaded = HashMap::new();
    load_all(value, bytes, &mut loaded)
}

/// Reads a pickle (protocols 2–5) holding only data and numpy arrays from `source`, leaving
/// the numbers of large numeric arrays in it ([`ArrayData::Stored`]): the result takes
/// memory for the file's structure, not for its arrays.
pub fn read_from<S: Source + ?Sized>(source: &S) -> Result<PyValue, PickleError> {
    let mut vm = Vm::new(source);
    let top = vm.run()?;
    vm.finish(top)
}

/// `value` with every stored array loaded; `loaded` maps the arrays seen so far to their
/// loaded form, so a shared array stays shared.
fn load_all(
    value: PyValue,
    bytes: &[u8],
    loaded: &mut HashMap<*const NdArray, Arc<NdArray>>,
) -> Result<PyValue, PickleError> {
    let all = |items: Vec<PyValue>, loaded: &mut HashMap<_, _>| {
        items
            .into_iter()
            .map(|v| load_all(v, bytes, loaded))
            .collect::<Result<Vec<_>, _>>()
    };
    Ok(match value {
        PyValue::List(items) => PyValue::List(all(items, loaded)?),
        PyValue::Tuple(items) => PyValue::Tuple(all(items, loaded)?),
        PyValue::Dict(pairs) => PyValue::Dict(
            pairs
                .into_iter()
                .map(|(k, v)| Ok((load_all(k, bytes, loaded)?, load_all(v, bytes, loaded)?)))
                .collect::<Result<Vec<_>, PickleError>>()?,
        ),
        PyValue::Array(array) => {
            let key = Arc::as_ptr(&array);
            if let Some(done) = loaded.get(&key) {
                return Ok(PyValue::Array(Arc::clone(done)));
            }
            let done = match &array.data {
                ArrayData::Stored(_) => Arc::new(array.load(bytes)?),
                ArrayData::Object(items) => Arc::new(NdArray {
                    shape: array.shape.clone(),
                    data: ArrayData::Object(all(items.clone(), loaded)?),
                }),
                _ => Arc::clone(&array),
            };
            loaded.insert(key, Arc::clone(&done));
            PyValue::Array(done)
        }
        other => other,
    })
}

/// Reads `len` bytes at `offset` of `source` into a new buffer (`len` lies within the source:
/// it was checked against its size).
fn read_extent<S: Source + ?Sized>(
    source: &S,
    offset: usize,
    len: usize,
) -> Result<Vec<u8>, PickleError> {
    let fail = |e: std::io::Error| PickleError {
        offset,
        message: format!("reading {len} bytes: {e} (was the file changed while it was read?)"),
    };
    let mut bytes = Vec::new();
    bytes
        .try_reserve_exact(len)
        .map_err(|e| fail(std::io::Error::other(e)))?;
    bytes.resize(len, 0);
    source.read_at(offset, &mut bytes).map_err(fail)?;
    Ok(bytes)
}

/// The most bytes [`StoredArray::read_rows`] reads at once.
const RUN_BYTES: usize = 1 << 20;

impl StoredArray {
    /// Appends rows `rows` of an array of `shape` to `out`, as f32 in C order, reading at
    /// most [`RUN_BYTES`] at a time. In Fortran order each element of a row lies in its own
    /// column, so the rows are read column by column: one run of `rows` per element of a row.
    fn read_rows<S: Source + ?Sized>(
        &self,
        source: &S,
        shape: &[usize],
        rows: Range<usize>,
        out: &mut Vec<f32>,
    ) -> Result<(), PickleError> {
        let size = self.dtype.size;
        let count = shape.first().copied().unwrap_or(1);
        let trailing = shape.get(1..).unwrap_or_default();
        let width = product(trailing);
        // Every offset below lies within the array, whose byte count fits in the file.
        let mut buf = Vec::new();
        if !self.fortran || width <= 1 || count <= 1 {
            let at = self
                .offset
                .saturating_add(rows.start.saturating_mul(width).saturating_mul(size));
            return self.read_run(source, at, rows.len().saturating_mul(width), &mut buf, out);
        }
        // Element (i, j), j the C-order index within a row, lies at i + count × f(j), f(j)
        // the Fortran-order index of j over the row's axes.
        let start = out.len();
        let n = rows.len();
        out.resize(start.saturating_add(n.saturating_mul(width)), 0.0);
        let mut column = Vec::new();
        for (j, f) in FortranIndices::new(trailing).enumerate() {
            let at = self.offset.saturating_add(
                f.saturating_mul(count)
                    .saturating_add(rows.start)
                    .saturating_mul(size),
            );
            column.clear();
            self.read_run(source, at, n, &mut buf, &mut column)?;
            for (i, &x) in column.iter().enumerate() {
                out[start
                    .saturating_add(i.saturating_mul(width))
                    .saturating_add(j)] = x;
            }
        }
        Ok(())
    }

    /// Appends the `n` elements from byte `at` on to `out` as f32, reading them through
    /// `buf` at most [`RUN_BYTES`] at a time.
    fn read_run<S: Source + ?Sized>(
        &self,
        source: &S,
        mut at: usize,
        mut n: usize,
        buf: &mut Vec<u8>,
        out: &mut Vec<f32>,
    ) -> Result<(), PickleError> {
        let size = self.dtype.size.max(1);
        let per_run = RUN_BYTES.checked_div(size).unwrap_or(RUN_BYTES).max(1);
        while n > 0 {
            let take = n.min(per_run);
            let bytes = take.saturating_mul(size);
            buf.resize(bytes, 0);
            source.read_at(at, buf).map_err(|e| PickleError {
                offset: at,
                message: format!(
                    "reading {bytes} bytes of an array: {e} (was the file changed while it was read?)"
                ),
            })?;
            decode_f32(&self.dtype, buf, out);
            at = at.saturating_add(bytes);
            n = n.saturating_sub(take);
        }
        Ok(())
    }
}

/// The Fortran-order flat index of each element of `shape`, taken in C order.
struct FortranIndices {
    shape: Vec<usize>,
    /// Fortran strides of the axes.
    strides: Vec<usize>,
    /// The next element's index, `None` once past the last.
    index: Option<Vec<usize>>,
}

impl FortranIndices {
    fn new(shape: &[usize]) -> Self {
        let mut strides = Vec::with_capacity(shape.len());
        let mut stride = 1usize;
        for &extent in shape {
            strides.push(stride);
            stride = stride.saturating_mul(extent);
        }
        let empty = shape.contains(&0);
        FortranIndices {
            shape: shape.to_vec(),
            strides,
            index: (!empty).then(|| vec![0; shape.len()]),
        }
    }
}

impl Iterator for FortranIndices {
    type Item = usize;

    fn next(&mut self) -> Option<usize> {
        let index = self.index.as_mut()?;
        let flat = index
            .iter()
            .zip(&self.strides)
            .fold(0usize, |acc, (&i, &s)| {
                acc.saturating_add(i.saturating_mul(s))
            });
        // Advance in C order: the last axis fastest.
        let mut done = true;
        for (i, &extent) in index.iter_mut().zip(&self.shape).rev() {
            *i = i.saturating_add(1);
            if *i < extent {
                done = false;
                break;
            }
            *i = 0;
        }
        if done {
            self.index = None;
        }
        Some(flat)
    }
}

/// Decodes float elements (`f2`, `f4`, `f8`, either byte order) to f32, appended to `out`.
fn decode_f32(dtype: &Dtype, bytes: &[u8], out: &mut Vec<f32>) {
    match (dtype.size, dtype.little_endian) {
        (4, true) => out.extend(
            bytes
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])),
        ),
        (4, false) => out.extend(
            bytes
                .chunks_exact(4)
                .map(|c| f32::from_be_bytes([c[0], c[1], c[2], c[3]])),
        ),
        (8, le) => out.extend(bytes.chunks_exact(8).map(|c| {
            let b = [c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]];
            narrow(if le {
                f64::from_le_bytes(b)
            } else {
                f64::from_be_bytes(b)
            })
        })),
        (_, le) => out.extend(bytes.chunks_exact(2).map(|c| {
            half_to_f32(if le {
                u16::from_le_bytes([c[0], c[1]])
            } else {
                u16::from_be_bytes([c[0], c[1]])
            })
        })),
    }
}

/// f64 → f32, rounding to nearest (what numpy's `astype(float32)` does).
#[expect(
    clippy::cast_possible_truncation,
    reason = "narrowing a float is the point: values round to the nearest f32"
)]
fn narrow(x: f64) -> f32 {
    x as f32
}

/// What the values read from a file may add up to, in proportion to the file's size.
///
/// Without shared references nothing can exceed it: every value, string byte and array
/// byte comes from bytes of the file, once. Only a file whose memo references expand one
/// object many times (or decode the same bytes into many arrays) runs out.
#[derive(Debug, Clone, PartialEq)]
struct Budget {
    /// Values (list items, dict entries, scalars) the result may hold.
    values: usize,
    /// Bytes of strings and bytes objects the result may hold.
    text_bytes: usize,
    /// Bytes of the file that may be decoded into arrays.
    array_bytes: usize,
}

impl Budget {
    /// Values beyond one per byte of the file (shared small strings, dict keys).
    const SPARE_VALUES: usize = 1 << 18;
    /// Text bytes beyond twice the file's size.
    const SPARE_TEXT: usize = 64 << 20;
    /// Array bytes beyond the file's size (none are needed: each array's bytes are in it).
    const SPARE_ARRAY: usize = 1 << 20;

    fn for_file(len: usize) -> Budget {
        Budget {
            values: len.saturating_add(Self::SPARE_VALUES),
            text_bytes: len.saturating_mul(2).saturating_add(Self::SPARE_TEXT),
            array_bytes: len.saturating_add(Self::SPARE_ARRAY),
        }
    }
}

/// The most dimensions an array may declare (numpy's own limit is 64).
const MAX_NDIM: usize = 64;
/// The longest argument tuple an allowed global or BUILD takes (a dtype's state has 8).
const MAX_ARGS: usize = 16;
/// How deeply containers may nest (a bound on recursion).
const MAX_DEPTH: usize = 64;

#[derive(Debug, Clone, PartialEq)]
enum Global {
    Reconstruct,
    NdarrayType,
    Dtype,
    FromBuffer,
    Scalar,
    CodecsEncode,
    /// `bytes()`: how protocol 2 writes an empty bytes object (an empty array's data).
    EmptyBytes,
    OrderedDict,
}

fn allowed_global(module: &str, name: &str) -> Option<Global> {
    Some(match (module, name) {
        ("numpy.core.multiarray" | "numpy._core.multiarray", "_reconstruct") => Global::Reconstruct,
        ("numpy", "ndarray") => Global::NdarrayType,
        ("numpy", "dtype") => Global::Dtype,
        ("numpy.core.numeric" | "numpy._core.numeric", "_frombuffer") => Global::FromBuffer,
        ("numpy.core.multiarray" | "numpy._core.multiarray", "scalar") => Global::Scalar,
        ("_codecs", "encode") => Global::CodecsEncode,
        ("__builtin__" | "builtins", "bytes") => Global::EmptyBytes,
        ("collections", "OrderedDict") => Global::OrderedDict,
        _ => return None,
    })
}

#[derive(Debug, Clone, PartialEq)]
struct Dtype {
    kind: char,
    size: usize,
    little_endian: bool,
}

impl Dtype {
    /// True for the numeric dtypes whose every bit pattern decodes (floats, ints but 8-byte
    /// unsigned ones, bools): their arrays may stay in the file, as [`ArrayData::Stored`].
    fn can_stay_stored(&self) -> bool {
        matches!(
            (self.kind, self.size),
            ('f', 2 | 4 | 8) | ('i', 1 | 2 | 4 | 8) | ('u', 1 | 2 | 4) | ('b', 1)
        )
    }

    /// The largest element a dtype may declare (numpy's strings go far lower in practice).
    const MAX_ITEM_SIZE: usize = 1 << 24;

    /// Parses a numpy type string (`"<f4"`, `"U20"`, `"b1"`); `None` for anything else,
    /// including non-ASCII text and sizes past [`Dtype::MAX_ITEM_SIZE`].
    fn parse(descr: &str) -> Option<Dtype> {
        if !descr.is_ascii() {
            return None;
        }
        let (endian, rest) = match descr.as_bytes().first()? {
            c @ (b'<' | b'>' | b'|' | b'=') => (Some(*c), descr.get(1..)?),
            _ => (None, descr),
        };
        let kind = char::from(*rest.as_bytes().first()?);
        let digits = rest.get(1..)?;
        let count: usize = if digits.is_empty() {
            0
        } else {
            digits.parse().ok()?
        };
        let size = match kind {
            'U' => count.checked_mul(4)?,
            'b' | 'B' if count == 0 => 1,
            '?' => 1,
            _ => count,
        };
        if size > Self::MAX_ITEM_SIZE {
            return None;
        }
        Some(Dtype {
            kind: if kind == '?' { 'b' } else { kind },
            size,
            little_endian: endian != Some(b'>'),
        })
    }
}

/// A value on the VM's stack: scalars inline, everything mutable or large in the arena.
/// Strings are shared: a memo reference to a string does not copy it.
#[derive(Debug, Clone, PartialEq)]
enum Val {
    None,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(Rc<str>),
    Ref(usize),
}

/// A bytes object: copied into memory, or (from [`STORED_FROM`] bytes on) where it lies in
/// the source.
#[derive(Debug)]
enum Bytes {
    Held(Vec<u8>),
    InSource { offset: usize, len: usize },
}

impl Bytes {
    fn len(&self) -> usize {
        match self {
            Bytes::Held(b) => b.len(),
            Bytes::InSource { len, .. } => *len,
        }
    }
}

#[derive(Debug)]
enum Obj {
    Bytes(Bytes),
    List(Vec<Val>),
    Tuple(Vec<Val>),
    Dict(Vec<(Val, Val)>),
    Global(Global),
    Dtype(Dtype),
    /// An array awaiting BUILD (from `_reconstruct`), or complete.
    Array(Option<NdArray>),
}

/// How many bytes of the source the parser reads at once (opcodes and small arguments).
const WINDOW: usize = 1 << 16;
/// The longest text argument (a GLOBAL's module or name) the parser takes.
const MAX_LINE: usize = 4096;

struct Vm<'s, S: Source + ?Sized> {
    source: &'s S,
    /// The source's size.
    size: usize,
    /// The bytes of the source from `window_start` on, read ahead of `pos`.
    window: Vec<u8>,
    window_start: usize,
    pos: usize,
    op_start: usize,
    stack: Vec<Val>,
    marks: Vec<usize>,
    memo: HashMap<usize, Val>,
    arena: Vec<Obj>,
    /// Arrays already moved into the result, by arena index: later references share them.
    converted: HashMap<usize, Arc<NdArray>>,
    /// What the result may still take.
    left: Budget,
}

impl<'s, S: Source + ?Sized> Vm<'s, S> {
    fn new(source: &'s S) -> Self {
        let size = source.size();
        Vm {
            source,
            size,
            window: Vec::new(),
            window_start: 0,
            pos: 0,
            op_start: 0,
            stack: Vec::new(),
            marks: Vec::new(),
            memo: HashMap::new(),
            arena: Vec::new(),
            converted: HashMap::new(),
            left: Budget::for_file(size),
        }
    }

    /// Bytes of the file after the current position.
    fn remaining(&self) -> usize {
        self.size.saturating_sub(self.pos)
    }

    fn error<T>(&self, message: impl Into<String>) -> Result<T, PickleError> {
        Err(PickleError {
            offset: self.op_start,
            message: message.into(),
        })
    }

    fn truncated<T>(&self) -> Result<T, PickleError> {
        self.error("the file ends in the middle of an opcode (truncated pickle)")
    }

    /// The next `n` bytes (at most [`WINDOW`], all within the file) from the window, read
    /// from the source first when the window does not hold them.
    fn peek(&mut self, n: usize) -> Result<&[u8], PickleError> {
        let offset = self.pos.saturating_sub(self.window_start);
        let held = self.pos >= self.window_start && offset.saturating_add(n) <= self.window.len();
        if !held {
            let len = WINDOW.min(self.remaining());
            self.window.resize(len, 0);
            if let Err(e) = self.source.read_at(self.pos, &mut self.window) {
                self.window.clear();
                return self.error(format!("reading the file: {e}"));
            }
            self.window_start = self.pos;
        }
        let offset = self.pos.saturating_sub(self.window_start);
        match self.window.get(offset..offset.saturating_add(n)) {
            Some(b) => Ok(b),
            None => self.truncated(),
        }
    }

    /// The next `n` bytes, copied.
    fn take(&mut self, n: usize) -> Result<Vec<u8>, PickleError> {
        if n > self.remaining() {
            return self.truncated();
        }
        let bytes = if n <= WINDOW {
            self.peek(n)?.to_vec()
        } else {
            read_extent(self.source, self.pos, n).map_err(|e| PickleError {
                offset: self.op_start,
                ..e
            })?
        };
        self.pos = self.pos.saturating_add(n);
        Ok(bytes)
    }

    /// Steps over the next `n` bytes (within the file), returning where they start.
    fn skip(&mut self, n: usize) -> Result<usize, PickleError> {
        let at = self.pos;
        match self.pos.checked_add(n) {
            Some(end) if end <= self.size => {
                self.pos = end;
                Ok(at)
            }
            _ => self.truncated(),
        }
    }

    /// A bytes object of the next `n` bytes: copied when short, else noted where it lies.
    fn bytes(&mut self, n: usize) -> Result<Bytes, PickleError> {
        if n < STORED_FROM {
            return Ok(Bytes::Held(self.take(n)?));
        }
        let offset = self.skip(n)?;
        Ok(Bytes::InSource { offset, len: n })
    }

    fn u8(&mut self) -> Result<u8, PickleError> {
        let [b] = self.array::<1>()?;
        Ok(b)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], PickleError> {
        if N > self.remaining() {
            return self.truncated();
        }
        let mut out = [0u8; N];
        out.copy_from_slice(self.peek(N)?);
        self.pos = self.pos.saturating_add(N);
        Ok(out)
    }

    /// A little-endian unsigned int of `N` (at most 8) bytes.
    fn le_uint<const N: usize>(&mut self) -> Result<u64, PickleError> {
        let b = self.array::<N>()?;
        let mut wide = [0u8; 8];
        wide[..N].copy_from_slice(&b);
        Ok(u64::from_le_bytes(wide))
    }

    /// A length of `N` bytes, which must fit in what is left of the file.
    fn length<const N: usize>(&mut self) -> Result<usize, PickleError> {
        let len = self.le_uint::<N>()?;
        match usize::try_from(len) {
            Ok(n) if n <= self.remaining() => Ok(n),
            _ => self.error(format!(
                "a length of {len} bytes runs past the end of the file ({} bytes left): truncated pickle (or a corrupt length)",
                self.remaining()
            )),
        }
    }

    /// A memo index of `N` bytes.
    fn memo_index<const N: usize>(&mut self) -> Result<usize, PickleError> {
        let n = self.le_uint::<N>()?;
        match usize::try_from(n) {
            Ok(n) => Ok(n),
            Err(_) => self.error(format!("memo index {n} is out of range")),
        }
    }

    /// A text argument ended by a newline (at most [`MAX_LINE`] bytes).
    fn line(&mut self) -> Result<String, PickleError> {
        let ahead = MAX_LINE.saturating_add(1).min(self.remaining());
        let rest = self.peek(ahead)?;
        let Some(n) = rest.iter().position(|&b| b == b'\n') else {
            if ahead < MAX_LINE.saturating_add(1) {
                return self.error("unterminated text argument");
            }
            return self.error(format!("a text argument longer than {MAX_LINE} bytes"));
        };
        let text = match std::str::from_utf8(&rest[..n]) {
            Ok(s) => s.to_string(),
            Err(_) => return self.error("text argument is not UTF-8"),
        };
        self.pos = self.pos.saturating_add(n).saturating_add(1);
        Ok(text)
    }

    fn utf8(&self, b: Vec<u8>) -> Result<String, PickleError> {
        match String::from_utf8(b) {
            Ok(s) => Ok(s),
            Err(_) => self.error("string is not valid UTF-8"),
        }
    }

    fn alloc(&mut self, obj: Obj) -> Val {
        let index = self.arena.len();
        self.arena.push(obj);
        Val::Ref(index)
    }

    fn pop(&mut self) -> Result<Val, PickleError> {
        match self.stack.pop() {
            Some(v) if self.marks.last().is_none_or(|&m| self.stack.len() >= m) => Ok(v),
            _ => self.error("stack underflow"),
        }
    }

    fn top_mut(&mut self) -> Result<&mut Val, PickleError> {
        match self.stack.last_mut() {
            Some(v) => Ok(v),
            None => Err(PickleError {
                offset: self.op_start,
                message: "stack underflow".into(),
            }),
        }
    }

    fn pop_mark(&mut self) -> Result<Vec<Val>, PickleError> {
        let Some(mark) = self.marks.pop() else {
            return self.error("no MARK on the stack");
        };
        if mark > self.stack.len() {
            return self.error("corrupt MARK");
        }
        Ok(self.stack.split_off(mark))
    }

    fn obj_mut(&mut self, v: &Val) -> Result<&mut Obj, PickleError> {
        match v {
            Val::Ref(i) if *i < self.arena.len() => Ok(&mut self.arena[*i]),
            _ => self.error("expected a container on the stack"),
        }
    }

    fn run(&mut self) -> Result<Val, PickleError> {
        loop {
            self.op_start = self.pos;
            let op = self.u8()?;
            match op {
                0x80 => {
                    let proto = self.u8()?;
                    if !(2..=5).contains(&proto) {
                        return self.error(format!("pickle protocol {proto} is not supported (2–5 are)"));
                    }
                }
                0x95 => {
                    // FRAME: the length of the next frame, which must be in the file.
                    self.length::<8>()?;
                }
                b'.' => return self.pop(),
                b'(' => self.marks.push(self.stack.len()),
                b'0' => {
                    self.pop()?;
                }
                b'1' => {
                    self.pop_mark()?;
                }
                b'2' => {
                    let v = self.top_mut()?.clone();
                    self.stack.push(v);
                }
                b'N' => self.stack.push(Val::None),
                0x88 => self.stack.push(Val::Bool(true)),
                0x89 => self.stack.push(Val::Bool(false)),
                b'J' => {
                    let v = i32::from_le_bytes(self.array::<4>()?);
                    self.stack.push(Val::Int(i64::from(v)));
                }
                b'K' => {
                    let v = self.u8()?;
                    self.stack.push(Val::Int(i64::from(v)));
                }
                b'M' => {
                    let v = u16::from_le_bytes(self.array::<2>()?);
                    self.stack.push(Val::Int(i64::from(v)));
                }
                0x8a | 0x8b => {
                    let n = if op == 0x8a { usize::from(self.u8()?) } else { self.length::<4>()? };
                    if n > 8 {
                        return self.error("integer wider than 64 bits");
                    }
                    let v = signed_le(&self.take(n)?);
                    self.stack.push(Val::Int(v));
                }
                b'G' => {
                    let v = f64::from_be_bytes(self.array::<8>()?);
                    self.stack.push(Val::Float(v));
                }
                b'X' | 0x8c | 0x8d => {
                    let n = match op {
                        b'X' => self.length::<4>()?,
                        0x8c => self.length::<1>()?,
                        _ => self.length::<8>()?,
                    };
                    let b = self.take(n)?;
                    let s = self.utf8(b)?;
                    self.stack.push(Val::Str(s.into()));
                }
                b'T' | b'U' => {
                    // Python 2 str: latin-1 text.
                    let n = if op == b'T' { self.length::<4>()? } else { self.length::<1>()? };
                    let b = self.take(n)?;
                    let text: String = b.iter().map(|&c| char::from(c)).collect();
                    self.stack.push(Val::Str(text.into()));
                }
                b'B' | b'C' | 0x8e | 0x96 => {
                    let n = match op {
                        b'B' => self.length::<4>()?,
                        b'C' => self.length::<1>()?,
                        _ => self.length::<8>()?,
                    };
                    let b = self.bytes(n)?;
                    let v = self.alloc(Obj::Bytes(b));
                    self.stack.push(v);
                }
                b'}' => {
                    let v = self.alloc(Obj::Dict(Vec::new()));
                    self.stack.push(v);
                }
                b']' | 0x8f => {
                    let v = self.alloc(Obj::List(Vec::new()));
                    self.stack.push(v);
                }
                b')' => {
                    let v = self.alloc(Obj::Tuple(Vec::new()));
                    self.stack.push(v);
                }
                0x85..=0x87 => {
                    let n = usize::from(op.saturating_sub(0x84));
                    let floor = self.marks.last().copied().unwrap_or(0);
                    let Some(start) = self.stack.len().checked_sub(n).filter(|&s| s >= floor) else {
                        return self.error("stack underflow");
                    };
                    let items = self.stack.split_off(start);
                    let v = self.alloc(Obj::Tuple(items));
                    self.stack.push(v);
                }
                b't' | 0x91 => {
                    let items = self.pop_mark()?;
                    let v = self.alloc(if op == b't' { Obj::Tuple(items) } else { Obj::List(items) });
                    self.stack.push(v);
                }
                b'l' => {
                    let items = self.pop_mark()?;
                    let v = self.alloc(Obj::List(items));
                    self.stack.push(v);
                }
                b'd' => {
                    let items = self.pop_mark()?;
                    let pairs = self.pairs(items)?;
                    let v = self.alloc(Obj::Dict(pairs));
                    self.stack.push(v);
                }
                b'a' => {
                    let item = self.pop()?;
                    let list = self.top_mut()?.clone();
                    match self.obj_mut(&list)? {
                        Obj::List(l) => l.push(item),
                        _ => return self.error("APPEND to something that is not a list"),
                    }
                }
                b'e' | 0x90 => {
                    let items = self.pop_mark()?;
                    let list = self.top_mut()?.clone();
                    match self.obj_mut(&list)? {
                        Obj::List(l) => l.extend(items),
                        _ => return self.error("APPENDS to something that is not a list"),
                    }
                }
                b's' => {
                    let value = self.pop()?;
                    let key = self.pop()?;
                    let dict = self.top_mut()?.clone();
                    match self.obj_mut(&dict)? {
                        Obj::Dict(d) => d.push((key, value)),
                        _ => return self.error("SETITEM on something that is not a dict"),
                    }
                }
                b'u' => {
                    let items = self.pop_mark()?;
                    let pairs = self.pairs(items)?;
                    let dict = self.top_mut()?.clone();
                    match self.obj_mut(&dict)? {
                        Obj::Dict(d) => d.extend(pairs),
                        _ => return self.error("SETITEMS on something that is not a dict"),
                    }
                }
                0x94 => {
                    let v = self.top_mut()?.clone();
                    let n = self.memo.len();
                    self.memo.insert(n, v);
                }
                b'q' | b'r' => {
                    let n = if op == b'q' { self.memo_index::<1>()? } else { self.memo_index::<4>()? };
                    let v = self.top_mut()?.clone();
                    self.memo.insert(n, v);
                }
                b'h' | b'j' => {
                    let n = if op == b'h' { self.memo_index::<1>()? } else { self.memo_index::<4>()? };
                    match self.memo.get(&n) {
                        Some(v) => self.stack.push(v.clone()),
                        None => return self.error(format!("memo entry {n} was never stored")),
                    }
                }
                b'c' => {
                    let module = self.line()?;
                    let name = self.line()?;
                    self.push_global(&module, &name)?;
                }
                0x93 => {
                    let name = self.pop()?;
                    let module = self.pop()?;
                    match (module, name) {
                        (Val::Str(m), Val::Str(n)) => self.push_global(&m, &n)?,
                        _ => return self.error("STACK_GLOBAL needs two strings"),
                    }
                }
                b'R' => {
                    let args = self.pop()?;
                    let callable = self.pop()?;
                    let v = self.reduce(callable, args)?;
                    self.stack.push(v);
                }
                b'b' => {
                    let state = self.pop()?;
                    let target = self.top_mut()?.clone();
                    self.build(target, state)?;
                }
                0x81 | 0x92 | b'i' | b'o' => {
                    return self.error("refusing to build an arbitrary object (NEWOBJ/INST/OBJ): this pickle holds more than data")
                }
                b'P' | b'Q' => return self.error("refusing a persistent id: this pickle refers to objects outside the file"),
                0x82..=0x84 => return self.error("refusing an extension-registry reference"),
                0x97 | 0x98 => return self.error("out-of-band buffers are not stored in the file"),
                b'I' | b'L' | b'S' | b'V' | b'F' | b'g' | b'p' => {
                    return self.error("protocol-0 text opcodes are not supported; re-save the file with protocol 2 or newer")
                }
                other => return self.error(format!("unknown opcode 0x{other:02x}")),
            }
        }
    }

    fn pairs(&self, items: Vec<Val>) -> Result<Vec<(Val, Val)>, PickleError> {
        if !items.len().is_multiple_of(2) {
            return self.error("odd number of items for a dict");
        }
        let mut it = items.into_iter();
        let mut out = Vec::new();
        while let (Some(k), Some(v)) = (it.next(), it.next()) {
            out.push((k, v));
        }
        Ok(out)
    }

    fn push_global(&mut self, module: &str, name: &str) -> Result<(), PickleError> {
        match allowed_global(module, name) {
            Some(g) => {
                let v = self.alloc(Obj::Global(g));
                self.stack.push(v);
                Ok(())
            }
            None => self.error(format!(
                "refusing global `{module}.{name}`: mmflow reads only data (dicts, lists, strings, numbers) and numpy arrays from pickles, and never runs code from them"
            )),
        }
    }

    fn global_of(&self, v: &Val) -> Option<Global> {
        match v {
            Val::Ref(i) => match self.arena.get(*i) {
                Some(Obj::Global(g)) => Some(g.clone()),
                _ => None,
            },
            _ => None,
        }
    }

    /// The items of a tuple of arguments (at most `max` of them: argument tuples are short,
    /// and copying a long one for every call would let a small file take quadratic time).
    fn tuple_items(&self, v: &Val, max: usize) -> Result<Vec<Val>, PickleError> {
        match v {
            Val::Ref(i) => match self.arena.get(*i) {
                Some(Obj::Tuple(items)) if items.len() <= max => Ok(items.clone()),
                Some(Obj::Tuple(items)) => self.error(format!(
                    "a tuple of {} arguments where at most {max} are expected",
                    items.len()
                )),
                _ => self.error("expected a tuple of arguments"),
            },
            _ => self.error("expected a tuple of arguments"),
        }
    }

    fn bytes_of(&self, v: &Val) -> Result<&Bytes, PickleError> {
        match v {
            Val::Ref(i) => match self.arena.get(*i) {
                Some(Obj::Bytes(b)) => Ok(b),
                _ => self.error("expected bytes"),
            },
            _ => self.error("expected bytes"),
        }
    }

    /// The bytes of a bytes object, read from the source when they lie there.
    fn held_bytes(&self, v: &Val) -> Result<Vec<u8>, PickleError> {
        match self.bytes_of(v)? {
            Bytes::Held(b) => Ok(b.clone()),
            &Bytes::InSource { offset, len } => self.read_source(offset, len),
        }
    }

    /// `len` bytes of the source from `offset` (a bytes object's, so within the file).
    fn read_source(&self, offset: usize, len: usize) -> Result<Vec<u8>, PickleError> {
        read_extent(self.source, offset, len).map_err(|e| PickleError {
            offset: self.op_start,
            ..e
        })
    }

    /// The array of `shape` and `dtype` whose elements are the bytes object `data`, once its
    /// byte count matches. Numbers in the source stay there ([`ArrayData::Stored`]); bytes in
    /// memory, and strings, are decoded.
    fn array_of(
        &self,
        dtype: &Dtype,
        shape: Vec<usize>,
        data: &Val,
        fortran: bool,
    ) -> Result<NdArray, PickleError> {
        match self.bytes_of(data)? {
            Bytes::Held(bytes) => self.decode_array(dtype, shape, bytes, fortran),
            &Bytes::InSource { offset, len } => {
                self.check_byte_count(dtype, &shape, len)?;
                if dtype.can_stay_stored() {
                    let fortran = fortran && shape.len() > 1;
                    let stored = StoredArray {
                        dtype: dtype.clone(),
                        offset,
                        fortran,
                    };
                    return Ok(NdArray {
                        shape,
                        data: ArrayData::Stored(stored),
                    });
                }
                let bytes = self.read_source(offset, len)?;
                self.decode_array(dtype, shape, &bytes, fortran)
            }
        }
    }

    fn dtype_of(&self, v: &Val) -> Result<Dtype, PickleError> {
        match v {
            Val::Ref(i) => match self.arena.get(*i) {
                Some(Obj::Dtype(d)) => Ok(d.clone()),
                _ => self.error("expected a numpy dtype"),
            },
            _ => self.error("expected a numpy dtype"),
        }
    }

    fn shape_of(&self, v: &Val) -> Result<Vec<usize>, PickleError> {
        let mut shape = Vec::new();
        for item in self.tuple_items(v, MAX_NDIM)? {
            match item {
                Val::Int(n) => match usize::try_from(n) {
                    Ok(n) => shape.push(n),
                    Err(_) => {
                        return self.error(format!(
                            "array shape holds {n}: dimensions cannot be negative"
                        ))
                    }
                },
                other => return self.error(format!("array shape holds {other:?}, expected ints")),
            }
        }
        Ok(shape)
    }

    fn reduce(&mut self, callable: Val, args: Val) -> Result<Val, PickleError> {
        let Some(global) = self.global_of(&callable) else {
            return self.error("REDUCE on something that is not an allowed global");
        };
        let args = self.tuple_items(&args, MAX_ARGS)?;
        match global {
            Global::Reconstruct => {
                if args.first().and_then(|a| self.global_of(a)) != Some(Global::NdarrayType) {
                    return self.error("_reconstruct is only allowed for numpy.ndarray");
                }
                Ok(self.alloc(Obj::Array(None)))
            }
            Global::Dtype => match args.first() {
                Some(Val::Str(descr)) => match Dtype::parse(descr) {
                    Some(d) => Ok(self.alloc(Obj::Dtype(d))),
                    None => self.error(format!("unsupported numpy dtype {descr:?}")),
                },
                _ => self.error("numpy.dtype needs a type string"),
            },
            Global::FromBuffer => {
                let [buffer, dtype, shape, ..] = args.as_slice() else {
                    return self.error("_frombuffer needs (buffer, dtype, shape, order)");
                };
                let fortran = matches!(args.get(3), Some(Val::Str(o)) if &**o == "F");
                let dtype = self.dtype_of(dtype)?;
                let shape = self.shape_of(shape)?;
                let len = self.bytes_of(buffer)?.len();
                self.charge_array(len)?;
                let array = self.array_of(&dtype, shape, buffer, fortran)?;
                Ok(self.alloc(Obj::Array(Some(array))))
            }
            Global::Scalar => {
                let [dtype, data] = args.as_slice() else {
                    return self.error("scalar needs (dtype, bytes)");
                };
                let dtype = self.dtype_of(dtype)?;
                let len = self.bytes_of(data)?.len();
                self.charge_array(len)?;
                let bytes = self.held_bytes(data)?;
                let array = self.decode_array(&dtype, vec![1], &bytes, false)?;
                if let ArrayData::Bytes(items) = array.data {
                    return match items.into_iter().next() {
                        Some(b) => Ok(self.alloc(Obj::Bytes(Bytes::Held(b)))),
                        None => self.error("unsupported numpy scalar"),
                    };
                }
                let scalar = match array.data {
                    ArrayData::F32(v) => v.first().map(|&x| Val::Float(f64::from(x))),
                    ArrayData::F64(v) => v.first().map(|&x| Val::Float(x)),
                    ArrayData::I64(v) => v.first().map(|&x| Val::Int(x)),
                    ArrayData::Bool(v) => v.first().map(|&x| Val::Bool(x)),
                    ArrayData::Str(v) => v.into_iter().next().map(|x| Val::Str(x.into())),
                    ArrayData::Bytes(_) | ArrayData::Object(_) | ArrayData::Stored(_) => None,
                };
                match scalar {
                    Some(v) => Ok(v),
                    None => self.error("unsupported numpy scalar"),
                }
            }
            Global::CodecsEncode => match args.as_slice() {
                [Val::Str(s), Val::Str(enc)] if &**enc == "latin1" || &**enc == "latin-1" => {
                    self.charge_text(s.len())?;
                    let mut bytes = Vec::with_capacity(s.len());
                    for c in s.chars() {
                        match u8::try_from(u32::from(c)) {
                            Ok(b) => bytes.push(b),
                            Err(_) => {
                                return self.error("_codecs.encode: character outside latin-1")
                            }
                        }
                    }
                    Ok(self.alloc(Obj::Bytes(Bytes::Held(bytes))))
                }
                _ => self.error("_codecs.encode is only allowed as (str, \"latin1\")"),
            },
            Global::EmptyBytes if args.is_empty() => {
                Ok(self.alloc(Obj::Bytes(Bytes::Held(Vec::new()))))
            }
            Global::EmptyBytes => self.error("bytes is only allowed as bytes() (empty)"),
            Global::OrderedDict => Ok(self.alloc(Obj::Dict(Vec::new()))),
            Global::NdarrayType => self.error("numpy.ndarray cannot be called directly"),
        }
    }

    fn build(&mut self, target: Val, state: Val) -> Result<(), PickleError> {
        let Val::Ref(index) = target else {
            return self.error("BUILD on a plain value");
        };
        match self.arena.get(index) {
            Some(Obj::Array(None)) => {
                let items = self.tuple_items(&state, MAX_ARGS)?;
                let [_version, shape, dtype, fortran, data] = items.as_slice() else {
                    return self
                        .error("array state must be (version, shape, dtype, is_fortran, data)");
                };
                let shape = self.shape_of(shape)?;
                let dtype = self.dtype_of(dtype)?;
                let fortran = matches!(fortran, Val::Bool(true));
                let array = if dtype.kind == 'O' {
                    let items = match data {
                        Val::Ref(i) => match self.arena.get(*i) {
                            Some(Obj::List(items)) => items.clone(),
                            _ => return self.error("object array data must be a list"),
                        },
                        _ => return self.error("object array data must be a list"),
                    };
                    if element_count(&shape) != Some(items.len()) {
                        return self.error(format!(
                            "object array of shape {shape:?} holds {} items",
                            items.len()
                        ));
                    }
                    let values = self.values_of(&items)?;
                    // numpy pickles an object array's items in C order whatever its layout.
                    NdArray {
                        shape,
                        data: ArrayData::Object(values),
                    }
                } else {
                    let len = self.bytes_of(data)?.len();
                    self.charge_array(len)?;
                    self.array_of(&dtype, shape, data, fortran)?
                };
                self.arena[index] = Obj::Array(Some(array));
                Ok(())
            }
            Some(Obj::Dtype(_)) => {
                let items = self.tuple_items(&state, MAX_ARGS)?;
                let big_endian = match items.get(1) {
                    Some(Val::Str(e)) => &**e == ">",
                    _ => return self.error("dtype state must start with (version, endianness)"),
                };
                if let Some(Obj::Dtype(d)) = self.arena.get_mut(index) {
                    d.little_endian = !big_endian;
                }
                Ok(())
            }
            _ => self.error("BUILD is only allowed on numpy arrays and dtypes"),
        }
    }

    /// Decodes `bytes` as an array of `shape` and `dtype`, once the shape's byte count
    /// (checked arithmetic) equals the bytes the file holds for it; nothing is allocated
    /// before that.
    fn decode_array(
        &self,
        dtype: &Dtype,
        shape: Vec<usize>,
        bytes: &[u8],
        fortran: bool,
    ) -> Result<NdArray, PickleError> {
        let n = self.check_byte_count(dtype, &shape, bytes.len())?;
        let data = match decode(dtype, bytes, n) {
            Ok(data) => data,
            Err(message) => return self.error(message),
        };
        let data = if fortran {
            reorder_fortran(data, &shape)
        } else {
            data
        };
        Ok(NdArray { shape, data })
    }

    /// The element count of `shape`, once its byte count in `dtype` (checked arithmetic)
    /// equals `len`, the bytes the file holds for it.
    fn check_byte_count(
        &self,
        dtype: &Dtype,
        shape: &[usize],
        len: usize,
    ) -> Result<usize, PickleError> {
        let Some(n) = element_count(shape) else {
            return self.error(format!(
                "array of shape {shape:?}: the number of elements overflows"
            ));
        };
        let expected = n.checked_mul(dtype.size.max(1));
        if expected != Some(len) {
            return self.error(format!(
                "array of shape {shape:?} and dtype {}{} needs {} bytes, the file holds {len}",
                dtype.kind,
                dtype.size,
                expected
                    .map(|e| e.to_string())
                    .unwrap_or_else(|| "more than 2^64".into()),
            ));
        }
        Ok(n)
    }

    /// Takes `n` from one part of the budget, or refuses the file, saying what it would
    /// expand to.
    fn charge(
        &mut self,
        part: fn(&mut Budget) -> &mut usize,
        n: usize,
        what: &str,
    ) -> Result<(), PickleError> {
        let left = part(&mut self.left);
        if let Some(rest) = left.checked_sub(n) {
            *left = rest;
            return Ok(());
        }
        let limit = *part(&mut Budget::for_file(self.size));
        let used = limit.saturating_sub(*left);
        self.error(format!(
            "the data would expand to {} {what}, past the {limit} a {}-byte file may hold \
             (memo references repeat the same objects over and over: a memo bomb); refusing it",
            used.saturating_add(n),
            self.size
        ))
    }

    fn charge_values(&mut self, n: usize) -> Result<(), PickleError> {
        self.charge(|b| &mut b.values, n, "values")
    }

    fn charge_text(&mut self, n: usize) -> Result<(), PickleError> {
        self.charge(|b| &mut b.text_bytes, n, "bytes of strings")
    }

    fn charge_array(&mut self, n: usize) -> Result<(), PickleError> {
        self.charge(|b| &mut b.array_bytes, n, "bytes decoded into arrays")
    }

    /// What converting `v` at `depth` would build, measured on the graph before anything is
    /// built: each container once (`seen` keeps what it expands to), so a memo bomb is
    /// refused in time proportional to the file, not to what it would expand to. A container
    /// met again inside itself is a cycle.
    fn expansion(
        &self,
        v: &Val,
        depth: usize,
        seen: &mut HashMap<usize, Measured>,
    ) -> Result<Expansion, PickleError> {
        if depth > MAX_DEPTH {
            return self.error(format!("data nested more than {MAX_DEPTH} levels deep"));
        }
        let index = match v {
            Val::Str(s) => return Ok(Expansion::leaf(s.len())),
            Val::Ref(i) => *i,
            Val::None | Val::Bool(_) | Val::Int(_) | Val::Float(_) => {
                return Ok(Expansion::leaf(0))
            }
        };
        match seen.get(&index) {
            Some(Measured::Open) => {
                return self.error("the data contains itself (a cyclic reference): not plain data")
            }
            Some(Measured::Done(e)) if depth.saturating_add(e.height) > MAX_DEPTH => {
                return self.error(format!("data nested more than {MAX_DEPTH} levels deep"))
            }
            Some(Measured::Done(e)) => return Ok(*e),
            None => {}
        }
        let items: Vec<&Val> = match self.arena.get(index) {
            None => return self.error("reference to an object that does not exist"),
            Some(Obj::Bytes(b)) => return Ok(Expansion::leaf(b.len())),
            Some(Obj::Array(_)) => return Ok(Expansion::leaf(0)),
            Some(Obj::Global(_) | Obj::Dtype(_)) => {
                return self.error("a bare numpy type is not data")
            }
            Some(Obj::List(items) | Obj::Tuple(items)) => items.iter().collect(),
            Some(Obj::Dict(pairs)) => pairs.iter().flat_map(|(k, v)| [k, v]).collect(),
        };
        seen.insert(index, Measured::Open);
        let mut total = Expansion::leaf(0);
        for item in items {
            total = total.holding(self.expansion(item, depth.saturating_add(1), seen)?);
        }
        seen.insert(index, Measured::Done(total));
        Ok(total)
    }

    /// The public values of `vals`: measured together, charged to the budget, and only then
    /// built. `seen` lives for one call: a container may still change after it.
    fn values_of(&mut self, vals: &[Val]) -> Result<Vec<PyValue>, PickleError> {
        let mut seen = HashMap::new();
        let mut total = Expansion::leaf(0);
        for v in vals {
            total = total.holding(self.expansion(v, 0, &mut seen)?);
        }
        drop(seen);
        // `total` counts one value for the list of `vals` itself, which is not built.
        self.charge_values(total.values.saturating_sub(1))?;
        self.charge_text(total.text_bytes)?;
        vals.iter().map(|v| self.convert(v)).collect()
    }

    /// Converts a stack value (measured by [`Vm::expansion`]) into the public tree. Arrays
    /// are shared, never copied.
    fn convert(&mut self, v: &Val) -> Result<PyValue, PickleError> {
        let index = match v {
            Val::None => return Ok(PyValue::None),
            Val::Bool(b) => return Ok(PyValue::Bool(*b)),
            Val::Int(i) => return Ok(PyValue::Int(*i)),
            Val::Float(f) => return Ok(PyValue::Float(*f)),
            Val::Str(s) => return Ok(PyValue::Str(s.to_string())),
            Val::Ref(i) => *i,
        };
        // Containers are cloned shallowly (their items are Vals); arrays are moved, once.
        let (kind, items): (Container, Vec<Val>) = match self.arena.get_mut(index) {
            None => return self.error("reference to an object that does not exist"),
            Some(Obj::Bytes(_)) => return Ok(PyValue::Bytes(self.held_bytes(v)?)),
            Some(Obj::Array(slot)) => {
                let shared = match slot.take() {
                    Some(array) => Arc::new(array),
                    None => match self.converted.get(&index) {
                        Some(shared) => return Ok(PyValue::Array(Arc::clone(shared))),
                        None => return self.error("an array was never filled (BUILD missing)"),
                    },
                };
                self.converted.insert(index, Arc::clone(&shared));
                return Ok(PyValue::Array(shared));
            }
            Some(Obj::Global(_) | Obj::Dtype(_)) => {
                return self.error("a bare numpy type is not data")
            }
            Some(Obj::List(items)) => (Container::List, items.clone()),
            Some(Obj::Tuple(items)) => (Container::Tuple, items.clone()),
            Some(Obj::Dict(pairs)) => (
                Container::Dict,
                pairs
                    .iter()
                    .flat_map(|(k, v)| [k.clone(), v.clone()])
                    .collect(),
            ),
        };
        let values = items
            .iter()
            .map(|x| self.convert(x))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(match kind {
            Container::List => PyValue::List(values),
            Container::Tuple => PyValue::Tuple(values),
            Container::Dict => {
                let mut pairs = Vec::with_capacity(values.len() / 2);
                let mut it = values.into_iter();
                while let (Some(k), Some(v)) = (it.next(), it.next()) {
                    pairs.push((k, v));
                }
                PyValue::Dict(pairs)
            }
        })
    }

    fn finish(&mut self, top: Val) -> Result<PyValue, PickleError> {
        self.op_start = self.pos;
        let mut values = self.values_of(std::slice::from_ref(&top))?;
        Ok(values.pop().expect("one value for one"))
    }
}

/// What converting one value builds: values (each list item, dict key and value, scalar,
/// array reference), bytes of strings copied, and how many levels of containers it nests.
#[derive(Debug, Clone, Copy)]
struct Expansion {
    values: usize,
    text_bytes: usize,
    height: usize,
}

impl Expansion {
    /// One value holding `text_bytes` of text (0 for a number or an array).
    fn leaf(text_bytes: usize) -> Expansion {
        Expansion {
            values: 1,
            text_bytes,
            height: 0,
        }
    }

    /// This container with `item` added to it (saturating: a bomb's count only needs to
    /// exceed the budget).
    fn holding(self, item: Expansion) -> Expansion {
        Expansion {
            values: self.values.saturating_add(item.values),
            text_bytes: self.text_bytes.saturating_add(item.text_bytes),
            height: self.height.max(item.height.saturating_add(1)),
        }
    }
}

/// Where [`Vm::expansion`] stands with one arena object it has met.
#[derive(Debug, Clone, Copy)]
enum Measured {
    /// On the path from the root: met again means a cycle.
    Open,
    Done(Expansion),
}

/// Decodes the `n` elements of `bytes` (whose length was checked) as `dtype`, in the order
/// they are stored.
fn decode(dtype: &Dtype, bytes: &[u8], n: usize) -> Result<ArrayData, String> {
    let size = dtype.size;
    let le = dtype.little_endian;
    // Chunks are at most 8 bytes here (`U` items go through `unicode_item`).
    let word = |chunk: &[u8]| -> u64 {
        let mut b = [0u8; 8];
        for (i, &x) in chunk.iter().take(8).enumerate() {
            b[if le {
                i
            } else {
                chunk.len().saturating_sub(1).saturating_sub(i)
            }] = x;
        }
        u64::from_le_bytes(b)
    };
    Ok(match (dtype.kind, size) {
        ('f', 4) => ArrayData::F32(
            bytes
                .chunks_exact(4)
                .map(|c| f32::from_bits(low_u32(word(c))))
                .collect(),
        ),
        ('f', 8) => ArrayData::F64(
            bytes
                .chunks_exact(8)
                .map(|c| f64::from_bits(word(c)))
                .collect(),
        ),
        ('f', 2) => ArrayData::F32(
            bytes
                .chunks_exact(2)
                .map(|c| half_to_f32(u16::try_from(word(c)).unwrap_or(u16::MAX)))
                .collect(),
        ),
        ('i', 1 | 2 | 4 | 8) => {
            // Sign-extend from the element's top bit.
            let shift = match size {
                1 => 56,
                2 => 48,
                4 => 32,
                _ => 0,
            };
            ArrayData::I64(
                bytes
                    .chunks_exact(size)
                    .map(|c| i64::from_ne_bytes((word(c) << shift).to_ne_bytes()) >> shift)
                    .collect(),
            )
        }
        ('u', 1 | 2 | 4 | 8) => {
            let mut out = Vec::with_capacity(n);
            for c in bytes.chunks_exact(size) {
                match i64::try_from(word(c)) {
                    Ok(v) => out.push(v),
                    Err(_) => return Err("unsigned value too large".into()),
                }
            }
            ArrayData::I64(out)
        }
        ('b', 1) => ArrayData::Bool(bytes.iter().map(|&b| b != 0).collect()),
        ('U', s) if s > 0 => ArrayData::Str(
            bytes
                .chunks_exact(s)
                .map(|item| unicode_item(item, le))
                .collect::<Result<_, _>>()?,
        ),
        ('S', s) if s > 0 => ArrayData::Bytes(
            bytes
                .chunks_exact(s)
                .map(|item| without_trailing_nuls(item, 1).to_vec())
                .collect(),
        ),
        (k, s) => return Err(format!("unsupported numpy dtype {k}{s}")),
    })
}

/// A `U` item (UCS-4 code units) as numpy reads it: its trailing NULs, the padding of a
/// fixed-width item, stripped; inner NULs kept.
fn unicode_item(item: &[u8], little_endian: bool) -> Result<String, String> {
    without_trailing_nuls(item, 4)
        .chunks_exact(4)
        .map(|unit| {
            let unit = [unit[0], unit[1], unit[2], unit[3]];
            let code = if little_endian {
                u32::from_le_bytes(unit)
            } else {
                u32::from_be_bytes(unit)
            };
            char::from_u32(code).ok_or_else(|| "invalid character in a unicode array".to_string())
        })
        .collect()
}

/// `item` without its trailing units of `width` zero bytes (numpy's reading of a fixed-width
/// string item: padding and trailing NULs go, inner NULs stay).
fn without_trailing_nuls(item: &[u8], width: usize) -> &[u8] {
    let nuls = item
        .rchunks_exact(width)
        .take_while(|unit| unit.iter().all(|&b| b == 0))
        .count();
    &item[..item.len().saturating_sub(nuls.saturating_mul(width))]
}

/// The elements of a Fortran-order array in C order.
fn reorder_fortran(data: ArrayData, shape: &[usize]) -> ArrayData {
    if shape.len() < 2 {
        return data;
    }
    match data {
        ArrayData::F32(v) => ArrayData::F32(fortran_to_c(v, shape)),
        ArrayData::F64(v) => ArrayData::F64(fortran_to_c(v, shape)),
        ArrayData::I64(v) => ArrayData::I64(fortran_to_c(v, shape)),
        ArrayData::Bool(v) => ArrayData::Bool(fortran_to_c(v, shape)),
        ArrayData::Str(v) => ArrayData::Str(fortran_to_c(v, shape)),
        ArrayData::Bytes(v) => ArrayData::Bytes(fortran_to_c(v, shape)),
        ArrayData::Object(v) => ArrayData::Object(fortran_to_c(v, shape)),
        stored @ ArrayData::Stored(_) => stored,
    }
}

/// The kinds of containers [`Vm::convert`] rebuilds.
enum Container {
    List,
    Tuple,
    Dict,
}

/// The product of `dims`: 0 when one is 0 (however large the others), else saturating (an
/// array's shape was checked against its bytes, so only an empty one can overflow).
fn product(dims: &[usize]) -> usize {
    if dims.contains(&0) {
        return 0;
    }
    dims.iter().fold(1usize, |acc, &d| acc.saturating_mul(d))
}

/// The product of `shape`, or `None` when it overflows.
fn element_count(shape: &[usize]) -> Option<usize> {
    shape.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d))
}

/// The low 32 bits of a word (the element is 4 bytes wide).
fn low_u32(word: u64) -> u32 {
    u32::try_from(word & u64::from(u32::MAX)).unwrap_or(u32::MAX)
}

/// A little-endian two's-complement int of at most 8 bytes, sign-extended.
fn signed_le(bytes: &[u8]) -> i64 {
    let negative = bytes.last().is_some_and(|&b| b & 0x80 != 0);
    let mut wide = [if negative { 0xff } else { 0 }; 8];
    for (w, &b) in wide.iter_mut().zip(bytes) {
        *w = b;
    }
    i64::from_le_bytes(wide)
}

/// Reorders column-major elements into row-major order.
fn fortran_to_c<T: Clone>(values: Vec<T>, shape: &[usize]) -> Vec<T> {
    if shape.len() < 2 || values.is_empty() {
        return values;
    }
    let n = values.len();
    let mut out = Vec::with_capacity(n);
    let mut index = vec![0usize; shape.len()];
    for _ in 0..n {
        // Position of `index` in Fortran order.
        let mut pos = 0usize;
        let mut stride = 1usize;
        // Below the element count, whose product was checked: nothing saturates.
        for (&i, &extent) in index.iter().zip(shape) {
            pos = pos.saturating_add(i.saturating_mul(stride));
            stride = stride.saturating_mul(extent);
        }
        out.push(values[pos].clone());
        for (i, &extent) in index.iter_mut().zip(shape).rev() {
            *i = i.saturating_add(1);
            if *i < extent {
                break;
            }
            *i = 0;
        }
    }
    out
}

#[expect(
    clippy::arithmetic_side_effects,
    reason = "bit fields of a u16: exponents stay within 98..=142"
)]
fn half_to_f32(h: u16) -> f32 {
    let sign = ((h >> 15) as u32) << 31;
    let exp = ((h >> 10) & 0x1f) as u32;
    let frac = (h & 0x3ff) as u32;
    let bits = match (exp, frac) {
        (0, 0) => sign,
        (0, f) => {
            // Subnormal: normalise.
            let mut e = 127 - 15 + 1;
            let mut f = f;
            while f & 0x400 == 0 {
                f <<= 1;
                e -= 1;
            }
            sign | ((e as u32) << 23) | ((f & 0x3ff) << 13)
        }
        (0x1f, 0) => sign | 0x7f80_0000,
        (0x1f, f) => sign | 0x7fc0_0000 | (f << 13),
        (e, f) => sign | ((e + 127 - 15) << 23) | (f << 13),
    };
    f32::from_bits(bits)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_code() {
        // pickle.dumps of a class whose __reduce__ returns (os.system, ("echo hi",)), protocol 4.
        let payload = b"\x80\x04\x95\"\x00\x00\x00\x00\x00\x00\x00\x8c\x05posix\x94\x8c\x06system\x94\x93\x94\x8c\x07echo hi\x94\x85\x94R\x94.";
        let err = read(payload).unwrap_err();
        assert!(
            err.message.contains("refusing global `posix.system`"),
            "{err}"
        );
        assert_eq!(err.offset, 28);
    }

    #[test]
    fn reads_plain_data() {
        // pickle.dumps({"a": [1, -2, 3.5, None, True], "b": (b"xy", "é")}, protocol=2)
        let p = b"\x80\x02}q\x00(X\x01\x00\x00\x00aq\x01]q\x02(K\x01J\xfe\xff\xff\xffG@\x0c\x00\x00\x00\x00\x00\x00N\x88eX\x01\x00\x00\x00bq\x03c_codecs\nencode\nq\x04X\x02\x00\x00\x00xyq\x05X\x06\x00\x00\x00latin1q\x06\x86q\x07Rq\x08X\x02\x00\x00\x00\xc3\xa9q\t\x86q\nu.";
        let v = read(p).unwrap();
        assert_eq!(
            v.get("a"),
            Some(&PyValue::List(vec![
                PyValue::Int(1),
                PyValue::Int(-2),
                PyValue::Float(3.5),
                PyValue::None,
                PyValue::Bool(true)
            ]))
        );
        assert_eq!(
            v.get("b"),
            Some(&PyValue::Tuple(vec![
                PyValue::Bytes(b"xy".to_vec()),
                PyValue::Str("é".into())
            ]))
        );
    }

    #[test]
    fn an_empty_array_of_protocol_2_reads() {
        // pickle.dumps({"a": np.zeros((0, 3), np.float32)}, protocol=2), numpy 2.4: the
        // empty data is written as `__builtin__.bytes()`.
        let p = b"\x80\x02}q\x00X\x01\x00\x00\x00aq\x01cnumpy._core.multiarray\n_reconstruct\nq\x02cnumpy\nndarray\nq\x03K\x00\x85q\x04c_codecs\nencode\nq\x05X\x01\x00\x00\x00bq\x06X\x06\x00\x00\x00latin1q\x07\x86q\x08Rq\t\x87q\nRq\x0b(K\x01K\x00K\x03\x86q\x0ccnumpy\ndtype\nq\rX\x02\x00\x00\x00f4q\x0e\x89\x88\x87q\x0fRq\x10(K\x03X\x01\x00\x00\x00<q\x11NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tq\x12b\x89c__builtin__\nbytes\nq\x13)Rq\x14tq\x15bs.";
        let v = read(p).unwrap();
        let Some(PyValue::Array(a)) = v.get("a") else {
            panic!("{v:?}");
        };
        assert_eq!(a.shape, vec![0, 3]);
        // Anything but `bytes()` stays refused.
        let called = b"\x80\x02c__builtin__\nbytes\nK\x05\x85R.";
        assert!(read(called).unwrap_err().message.contains("bytes()"));
    }

    #[test]
    fn truncated_input_is_an_error() {
        let p = b"\x80\x02}q\x00(X\x01\x00\x00\x00aq";
        assert!(read(p).unwrap_err().message.contains("truncated"));
        assert!(read(b"").is_err());
    }

    /// Protocol 4 opcodes for tests: `}` `X…` and friends.
    fn short_str(s: &str) -> Vec<u8> {
        let mut out = vec![0x8c, u8::try_from(s.len()).unwrap()];
        out.extend_from_slice(s.as_bytes());
        out
    }

    #[test]
    fn memo_references_to_lists_are_bounded() {
        // [[]] doubled 40 times through the memo: 2^40 items once expanded.
        let mut p = b"\x80\x04]\x94".to_vec();
        for i in 0..40u8 {
            p.extend_from_slice(&[b'(', b'h', i, b'h', i, b'l', 0x94]);
        }
        p.push(b'.');
        let err = read(&p).unwrap_err();
        assert!(err.message.contains("memo bomb"), "{err}");
        // Measured on the graph, not built: the whole count is known.
        let values = (1u64 << 41) - 1;
        assert!(
            err.message.contains(&format!("expand to {values} values")),
            "{err}"
        );
    }

    #[test]
    fn cycles_are_refused() {
        // l = []; l.append(l)
        let err = read(b"\x80\x04]\x94h\x00a.").unwrap_err();
        assert!(err.message.contains("cyclic"), "{err}");
    }

    #[test]
    fn shared_arrays_are_one_array() {
        // {'a': x, 'b': x} with x = _frombuffer(b'\0\0\x80?', dtype('f4'), (1,), 'C')
        let mut p = b"\x80\x04}(".to_vec();
        p.extend(short_str("a"));
        p.extend_from_slice(
            b"cnumpy._core.numeric\n_frombuffer\n(C\x04\x00\x00\x80?cnumpy\ndtype\n(",
        );
        p.extend(short_str("f4"));
        p.extend_from_slice(b"tR(K\x01t");
        p.extend(short_str("C"));
        p.extend_from_slice(b"tR\x94");
        p.extend(short_str("b"));
        p.extend_from_slice(b"h\x00u.");
        let v = read(&p).unwrap();
        let (Some(PyValue::Array(a)), Some(PyValue::Array(b))) = (v.get("a"), v.get("b")) else {
            panic!("{v:?}");
        };
        assert!(Arc::ptr_eq(a, b));
        assert_eq!(a.data, ArrayData::F32(vec![1.0]));
    }

    /// `_frombuffer(data, dtype("<f4"), shape, order)` as the whole pickle.
    fn frombuffer(data: &[u8], shape: &[u8], order: &str) -> Vec<u8> {
        let mut p = b"\x80\x04cnumpy._core.numeric\n_frombuffer\n(B".to_vec();
        p.extend_from_slice(&u32::try_from(data.len()).unwrap().to_le_bytes());
        p.extend_from_slice(data);
        p.extend_from_slice(b"cnumpy\ndtype\n(");
        p.extend(short_str("<f4"));
        p.extend_from_slice(b"tR(");
        for &d in shape {
            p.extend_from_slice(&[b'K', d]);
        }
        p.push(b't');
        p.extend(short_str(order));
        p.extend_from_slice(b"tR.");
        p
    }

    #[test]
    fn large_arrays_stay_in_the_source_and_read_by_rows() {
        // [[[0, 1, …]]] of shape (3, 4, 8), as stored in C and in Fortran order.
        let (n, l, d) = (3usize, 4usize, 8usize);
        let c: Vec<f32> = (0..n * l * d).map(|x| x as f32).collect();
        let f: Vec<f32> = (0..n * l * d)
            .map(|x| ((x % n * l + x / n % l) * d + x / (n * l)) as f32)
            .collect();
        for (order, values) in [("C", &c), ("F", &f)] {
            let data: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
            assert!(data.len() >= STORED_FROM);
            let p = frombuffer(&data, &[3, 4, 8], order);
            let PyValue::Array(a) = read_from(p.as_slice()).unwrap() else {
                panic!("not an array");
            };
            assert!(matches!(a.data, ArrayData::Stored(_)), "{order}");
            assert_eq!((a.kind(), a.row_len()), ("float32", l * d));
            let mut rows = Vec::new();
            a.read_rows_f32(p.as_slice(), 1..3, &mut rows).unwrap();
            assert_eq!(rows, c[l * d..], "{order}");
            let loaded = a.load(p.as_slice()).unwrap();
            assert_eq!(loaded.data, ArrayData::F32(c.clone()), "{order}");
            assert_eq!(read(&p).unwrap(), PyValue::Array(Arc::new(loaded)));
            // Rows past the array, and a source cut short since it was parsed, are errors.
            let err = a.read_rows_f32(p.as_slice(), 2..4, &mut rows).unwrap_err();
            assert!(err.message.contains("out of range"), "{err}");
            let cut = &p[..p.len() - 40];
            let err = a.read_rows_f32(cut, 0..3, &mut rows).unwrap_err();
            assert!(err.message.contains("was the file changed"), "{err}");
        }
        // Short payloads are decoded while parsing.
        let p = frombuffer(&[0, 0, 0x80, 0x3f], &[1], "C");
        let PyValue::Array(a) = read_from(p.as_slice()).unwrap() else {
            panic!("not an array");
        };
        assert_eq!(a.data, ArrayData::F32(vec![1.0]));
    }

    #[test]
    fn fortran_indices_run_in_c_order() {
        // Shape (2, 3): C order (0,0) (0,1) (0,2) (1,0) … at Fortran positions 0 2 4 1 3 5.
        assert_eq!(
            FortranIndices::new(&[2, 3]).collect::<Vec<_>>(),
            [0, 2, 4, 1, 3, 5]
        );
        assert_eq!(FortranIndices::new(&[]).collect::<Vec<_>>(), [0]);
        assert_eq!(FortranIndices::new(&[3, 0]).count(), 0);
    }

    #[test]
    fn dtype_strings_from_files_never_panic() {
        for bad in [
            "",
            "<",
            "é",
            "<é4",
            "fé",
            "U99999999999999999999",
            "U4611686018427387904",
            "f-1",
        ] {
            assert_eq!(Dtype::parse(bad), None, "{bad:?}");
        }
        assert_eq!(
            Dtype::parse(">f8"),
            Some(Dtype {
                kind: 'f',
                size: 8,
                little_endian: false
            })
        );
        assert_eq!(Dtype::parse("U3").map(|d| d.size), Some(12));
        assert_eq!(Dtype::parse("b1").map(|d| d.kind), Some('b'));
    }

    #[test]
    fn lengths_past_the_end_are_refused_before_allocation() {
        let mut p = b"\x80\x04\x8e".to_vec();
        p.extend_from_slice(&u64::MAX.to_le_bytes());
        let err = read(&p).unwrap_err();
        assert!(err.message.contains("runs past the end"), "{err}");
        let mut p = b"\x80\x04\x95".to_vec();
        p.extend_from_slice(&(1u64 << 40).to_le_bytes());
        assert!(read(&p).unwrap_err().message.contains("runs past the end"));
    }

    #[test]
    fn signed_ints() {
        assert_eq!(signed_le(&[0xff]), -1);
        assert_eq!(signed_le(&[0x00, 0x80]), -32768);
        assert_eq!(signed_le(&[0x7f]), 127);
        assert_eq!(signed_le(&[]), 0);
        assert_eq!(signed_le(&i64::MIN.to_le_bytes()), i64::MIN);
    }

    #[test]
    fn half_floats() {
        assert_eq!(half_to_f32(0x3c00), 1.0);
        assert_eq!(half_to_f32(0xc000), -2.0);
        assert_eq!(half_to_f32(0x0001), 5.960_464_5e-8);
        assert!(half_to_f32(0x7e00).is_nan());
    }

    #[test]
    fn string_items_keep_inner_nuls_and_lose_trailing_ones() {
        // np.array(['a\0b', 'c', 'd\0']) is `<U3`; numpy reads its items back as
        // 'a\0b', 'c', 'd': the padding and trailing NULs go, inner NULs stay.
        let ucs4 = |items: &[&str], big: bool| -> Vec<u8> {
            items
                .iter()
                .flat_map(|s| {
                    let mut units: Vec<u32> = s.chars().map(u32::from).collect();
                    units.resize(3, 0);
                    units
                })
                .flat_map(|u| {
                    if big {
                        u.to_be_bytes()
                    } else {
                        u.to_le_bytes()
                    }
                })
                .collect()
        };
        let read = ["a\0b", "c", "d"].map(str::to_string).to_vec();
        for (descr, big) in [("<U3", false), (">U3", true)] {
            let dtype = Dtype::parse(descr).unwrap();
            let bytes = ucs4(&["a\0b", "c", "d\0"], big);
            assert_eq!(decode(&dtype, &bytes, 3), Ok(ArrayData::Str(read.clone())));
        }
        let dtype = Dtype::parse("|S3").unwrap();
        assert_eq!(
            decode(&dtype, b"a\0bc\0\0\0\0\0", 3),
            Ok(ArrayData::Bytes(vec![
                b"a\0b".to_vec(),
                b"c".to_vec(),
                Vec::new()
            ]))
        );
        // A numpy bytes scalar is bytes, stripped the same way.
        let mut p = b"\x80\x04cnumpy._core.multiarray\nscalar\n(cnumpy\ndtype\n(".to_vec();
        p.extend(short_str("S3"));
        p.extend_from_slice(b"tRC\x03a\0\0tR.");
        assert_eq!(read_from(p.as_slice()), Ok(PyValue::Bytes(b"a".to_vec())));
    }

    #[test]
    fn fortran_order() {
        // [[1, 2, 3], [4, 5, 6]] stored column-major: 1 4 2 5 3 6
        assert_eq!(
            fortran_to_c(vec![1, 4, 2, 5, 3, 6], &[2, 3]),
            vec![1, 2, 3, 4, 5, 6]
        );
    }
}
