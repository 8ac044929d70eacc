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
//!
//! The parts: the opcodes by name ([`opcodes`]), the machine that runs them ([`vm`]: the
//! bytes it reads, the stack and memo, the allowed globals (`vm/globals.rs`) and the conversion
//! of what it built into [`PyValue`]s (`vm/convert.rs`)), and numpy's dtypes and array
//! layouts ([`numpy`]).
#![warn(clippy::cast_possible_truncation, clippy::arithmetic_side_effects)]

use std::collections::HashMap;
use std::fs::File;
use std::ops::Range;
use std::sync::Arc;

mod numpy;
mod opcodes;
mod vm;

use numpy::{decode, narrow, product, reorder_fortran, Dtype};
use vm::Vm;

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

#[cfg(test)]
mod tests {
    use super::numpy::{fortran_to_c, half_to_f32, FortranIndices};
    use super::vm::signed_le;
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
