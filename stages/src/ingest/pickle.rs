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
//! | `collections.OrderedDict` | a dict |
//!
//! Any other global (e.g. a `__reduce__` payload naming `os.system`), and any opcode that
//! builds arbitrary objects (NEWOBJ, INST, OBJ, persistent ids, extensions, out-of-band
//! buffers) is refused with an error naming it and its byte offset.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};

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
    /// A numpy array.
    Array(NdArray),
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
    /// Unicode (`U`) or bytes (`S`) strings.
    Str(Vec<String>),
    /// Object arrays: Python values.
    Object(Vec<PyValue>),
}

impl NdArray {
    /// Number of elements.
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }

    /// True if the array holds no element.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The name of the element type, for messages.
    pub fn kind(&self) -> &'static str {
        match self.data {
            ArrayData::F32(_) => "float32",
            ArrayData::F64(_) => "float64",
            ArrayData::I64(_) => "int",
            ArrayData::Bool(_) => "bool",
            ArrayData::Str(_) => "str",
            ArrayData::Object(_) => "object",
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

/// Reads a pickle (protocols 2–5) holding only data and numpy arrays.
///
/// Bytes are borrowed from `bytes` until arrays are decoded, and each decoded array is moved
/// (not copied) into the result, so peak memory stays close to the arrays' own size.
pub fn read(bytes: &[u8]) -> Result<PyValue, PickleError> {
    let mut vm = Vm::new(bytes);
    let top = vm.run()?;
    vm.finish(top)
}

#[derive(Debug, Clone, PartialEq)]
enum Global {
    Reconstruct,
    NdarrayType,
    Dtype,
    FromBuffer,
    Scalar,
    CodecsEncode,
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
    fn parse(descr: &str) -> Option<Dtype> {
        let (endian, rest) = match descr.chars().next()? {
            c @ ('<' | '>' | '|' | '=') => (Some(c), &descr[1..]),
            _ => (None, descr),
        };
        let kind = rest.chars().next()?;
        let size: usize = if rest.len() > 1 {
            rest[1..].parse().ok()?
        } else {
            0
        };
        let size = match kind {
            'U' => size * 4,
            'b' | 'B' if size == 0 => 1,
            '?' => 1,
            _ => size,
        };
        Some(Dtype {
            kind: if kind == '?' { 'b' } else { kind },
            size,
            little_endian: endian != Some('>'),
        })
    }
}

/// A value on the VM's stack: scalars inline, everything mutable or large in the arena.
#[derive(Debug, Clone, PartialEq)]
enum Val {
    None,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Ref(usize),
}

#[derive(Debug)]
enum Obj<'a> {
    Bytes(Cow<'a, [u8]>),
    List(Vec<Val>),
    Tuple(Vec<Val>),
    Dict(Vec<(Val, Val)>),
    Global(Global),
    Dtype(Dtype),
    /// An array awaiting BUILD (from `_reconstruct`), or complete.
    Array(Option<NdArray>),
}

struct Vm<'a> {
    bytes: &'a [u8],
    pos: usize,
    op_start: usize,
    stack: Vec<Val>,
    marks: Vec<usize>,
    memo: HashMap<usize, Val>,
    arena: Vec<Obj<'a>>,
    /// Arena indices of arrays already moved into the result.
    converted: HashSet<usize>,
}

impl<'a> Vm<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        Vm {
            bytes,
            pos: 0,
            op_start: 0,
            stack: Vec::new(),
            marks: Vec::new(),
            memo: HashMap::new(),
            arena: Vec::new(),
            converted: HashSet::new(),
        }
    }

    fn error<T>(&self, message: impl Into<String>) -> Result<T, PickleError> {
        Err(PickleError {
            offset: self.op_start,
            message: message.into(),
        })
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], PickleError> {
        match self.pos.checked_add(n) {
            Some(end) if end <= self.bytes.len() => {
                let s = &self.bytes[self.pos..end];
                self.pos = end;
                Ok(s)
            }
            _ => self.error("the file ends in the middle of an opcode (truncated pickle)"),
        }
    }

    fn u8(&mut self) -> Result<u8, PickleError> {
        Ok(self.take(1)?[0])
    }

    fn le_uint(&mut self, n: usize) -> Result<u64, PickleError> {
        let b = self.take(n)?;
        Ok(b.iter().rev().fold(0u64, |acc, &x| (acc << 8) | x as u64))
    }

    fn length(&mut self, n: usize) -> Result<usize, PickleError> {
        let len = self.le_uint(n)?;
        if len > (self.bytes.len() - self.pos) as u64 {
            return self.error(format!(
                "a length of {len} bytes runs past the end of the file (truncated pickle)"
            ));
        }
        Ok(len as usize)
    }

    fn line(&mut self) -> Result<&'a str, PickleError> {
        let rest = &self.bytes[self.pos..];
        let Some(n) = rest.iter().position(|&b| b == b'\n') else {
            return self.error("unterminated text argument");
        };
        self.pos += n + 1;
        match std::str::from_utf8(&rest[..n]) {
            Ok(s) => Ok(s),
            Err(_) => self.error("text argument is not UTF-8"),
        }
    }

    fn utf8(&self, b: &[u8]) -> Result<String, PickleError> {
        match std::str::from_utf8(b) {
            Ok(s) => Ok(s.to_string()),
            Err(_) => self.error("string is not valid UTF-8"),
        }
    }

    fn alloc(&mut self, obj: Obj<'a>) -> Val {
        self.arena.push(obj);
        Val::Ref(self.arena.len() - 1)
    }

    fn pop(&mut self) -> Result<Val, PickleError> {
        match self.stack.pop() {
            Some(v) if self.marks.last().is_none_or(|&m| self.stack.len() >= m) => Ok(v),
            _ => self.error("stack underflow"),
        }
    }

    fn top_mut(&mut self) -> Result<&mut Val, PickleError> {
        if self.stack.is_empty() {
            return self.error("stack underflow");
        }
        Ok(self.stack.last_mut().expect("checked"))
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

    fn obj_mut(&mut self, v: &Val) -> Result<&mut Obj<'a>, PickleError> {
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
                    self.take(8)?; // FRAME: a length hint only
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
                    let v = self.le_uint(4)? as u32 as i32;
                    self.stack.push(Val::Int(v as i64));
                }
                b'K' => {
                    let v = self.u8()?;
                    self.stack.push(Val::Int(v as i64));
                }
                b'M' => {
                    let v = self.le_uint(2)?;
                    self.stack.push(Val::Int(v as i64));
                }
                0x8a | 0x8b => {
                    let n = if op == 0x8a { self.u8()? as usize } else { self.length(4)? };
                    if n > 8 {
                        return self.error("integer wider than 64 bits");
                    }
                    let b = self.take(n)?;
                    let mut v: i64 = 0;
                    for (i, &x) in b.iter().enumerate() {
                        v |= (x as i64) << (8 * i);
                    }
                    if n > 0 && n < 8 && b[n - 1] & 0x80 != 0 {
                        v -= 1i64 << (8 * n);
                    }
                    self.stack.push(Val::Int(v));
                }
                b'G' => {
                    let b = self.take(8)?;
                    let v = f64::from_be_bytes(b.try_into().expect("8 bytes"));
                    self.stack.push(Val::Float(v));
                }
                b'X' | 0x8c | 0x8d => {
                    let n = match op {
                        b'X' => self.length(4)?,
                        0x8c => self.length(1)?,
                        _ => self.length(8)?,
                    };
                    let b = self.take(n)?;
                    let s = self.utf8(b)?;
                    self.stack.push(Val::Str(s));
                }
                b'T' | b'U' => {
                    // Python 2 str: latin-1 text.
                    let n = if op == b'T' { self.length(4)? } else { self.length(1)? };
                    let b = self.take(n)?;
                    self.stack.push(Val::Str(b.iter().map(|&c| c as char).collect()));
                }
                b'B' | b'C' | 0x8e | 0x96 => {
                    let n = match op {
                        b'B' => self.length(4)?,
                        b'C' => self.length(1)?,
                        _ => self.length(8)?,
                    };
                    let b = self.take(n)?;
                    let v = self.alloc(Obj::Bytes(Cow::Borrowed(b)));
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
                    let n = (op - 0x84) as usize;
                    if self.stack.len() < n + self.marks.last().copied().unwrap_or(0) {
                        return self.error("stack underflow");
                    }
                    let items = self.stack.split_off(self.stack.len() - n);
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
                    let n = self.le_uint(if op == b'q' { 1 } else { 4 })? as usize;
                    let v = self.top_mut()?.clone();
                    self.memo.insert(n, v);
                }
                b'h' | b'j' => {
                    let n = self.le_uint(if op == b'h' { 1 } else { 4 })? as usize;
                    match self.memo.get(&n) {
                        Some(v) => self.stack.push(v.clone()),
                        None => return self.error(format!("memo entry {n} was never stored")),
                    }
                }
                b'c' => {
                    let module = self.line()?.to_string();
                    let name = self.line()?.to_string();
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
        if items.len() % 2 != 0 {
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

    fn tuple_items(&self, v: &Val) -> Result<Vec<Val>, PickleError> {
        match v {
            Val::Ref(i) => match self.arena.get(*i) {
                Some(Obj::Tuple(items)) => Ok(items.clone()),
                _ => self.error("expected a tuple of arguments"),
            },
            _ => self.error("expected a tuple of arguments"),
        }
    }

    fn bytes_of(&self, v: &Val) -> Result<&[u8], PickleError> {
        match v {
            Val::Ref(i) => match self.arena.get(*i) {
                Some(Obj::Bytes(b)) => Ok(b),
                _ => self.error("expected bytes"),
            },
            _ => self.error("expected bytes"),
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
        for item in self.tuple_items(v)? {
            match item {
                Val::Int(n) if n >= 0 => shape.push(n as usize),
                _ => return self.error("array shape must hold non-negative ints"),
            }
        }
        Ok(shape)
    }

    fn reduce(&mut self, callable: Val, args: Val) -> Result<Val, PickleError> {
        let Some(global) = self.global_of(&callable) else {
            return self.error("REDUCE on something that is not an allowed global");
        };
        let args = self.tuple_items(&args)?;
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
                    None => self.error(format!("unsupported numpy dtype `{descr}`")),
                },
                _ => self.error("numpy.dtype needs a type string"),
            },
            Global::FromBuffer => {
                let [buffer, dtype, shape, ..] = args.as_slice() else {
                    return self.error("_frombuffer needs (buffer, dtype, shape, order)");
                };
                let fortran = matches!(args.get(3), Some(Val::Str(o)) if o == "F");
                let dtype = self.dtype_of(dtype)?;
                let shape = self.shape_of(shape)?;
                let array = self.decode_array(&dtype, shape, self.bytes_of(buffer)?, fortran)?;
                Ok(self.alloc(Obj::Array(Some(array))))
            }
            Global::Scalar => {
                let [dtype, data] = args.as_slice() else {
                    return self.error("scalar needs (dtype, bytes)");
                };
                let dtype = self.dtype_of(dtype)?;
                let array = self.decode_array(&dtype, vec![1], self.bytes_of(data)?, false)?;
                Ok(match array.data {
                    ArrayData::F32(v) => Val::Float(v[0] as f64),
                    ArrayData::F64(v) => Val::Float(v[0]),
                    ArrayData::I64(v) => Val::Int(v[0]),
                    ArrayData::Bool(v) => Val::Bool(v[0]),
                    ArrayData::Str(mut v) => Val::Str(v.remove(0)),
                    ArrayData::Object(_) => return self.error("object scalars are not supported"),
                })
            }
            Global::CodecsEncode => match args.as_slice() {
                [Val::Str(s), Val::Str(enc)] if enc == "latin1" || enc == "latin-1" => {
                    let mut bytes = Vec::with_capacity(s.len());
                    for c in s.chars() {
                        if (c as u32) > 0xff {
                            return self.error("_codecs.encode: character outside latin-1");
                        }
                        bytes.push(c as u32 as u8);
                    }
                    Ok(self.alloc(Obj::Bytes(Cow::Owned(bytes))))
                }
                _ => self.error("_codecs.encode is only allowed as (str, \"latin1\")"),
            },
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
                let items = self.tuple_items(&state)?;
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
                    let n: usize = shape.iter().product();
                    if items.len() != n {
                        return self.error(format!(
                            "object array of shape {shape:?} holds {} items",
                            items.len()
                        ));
                    }
                    let values = items
                        .iter()
                        .map(|v| self.to_value(v, 0))
                        .collect::<Result<Vec<_>, _>>()?;
                    let values = if fortran {
                        fortran_to_c(values, &shape)
                    } else {
                        values
                    };
                    NdArray {
                        shape,
                        data: ArrayData::Object(values),
                    }
                } else {
                    self.decode_array(&dtype, shape, self.bytes_of(data)?, fortran)?
                };
                self.arena[index] = Obj::Array(Some(array));
                Ok(())
            }
            Some(Obj::Dtype(_)) => {
                let items = self.tuple_items(&state)?;
                let endian = match items.get(1) {
                    Some(Val::Str(e)) => e.clone(),
                    _ => return self.error("dtype state must start with (version, endianness)"),
                };
                if let Some(Obj::Dtype(d)) = self.arena.get_mut(index) {
                    d.little_endian = endian != ">";
                }
                Ok(())
            }
            _ => self.error("BUILD is only allowed on numpy arrays and dtypes"),
        }
    }

    fn decode_array(
        &self,
        dtype: &Dtype,
        shape: Vec<usize>,
        bytes: &[u8],
        fortran: bool,
    ) -> Result<NdArray, PickleError> {
        let n = shape.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d));
        let Some(n) = n else {
            return self.error("array shape overflows");
        };
        let expected = n.checked_mul(dtype.size.max(1));
        if expected != Some(bytes.len()) {
            return self.error(format!(
                "array of shape {shape:?} and dtype {}{} needs {} bytes, the file holds {}",
                dtype.kind,
                dtype.size,
                expected
                    .map(|e| e.to_string())
                    .unwrap_or_else(|| "too many".into()),
                bytes.len()
            ));
        }
        let size = dtype.size;
        let le = dtype.little_endian;
        let word = |chunk: &[u8]| -> u64 {
            let mut b = [0u8; 8];
            if le {
                b[..chunk.len()].copy_from_slice(chunk);
            } else {
                for (i, &x) in chunk.iter().rev().enumerate() {
                    b[i] = x;
                }
            }
            u64::from_le_bytes(b)
        };
        let data = match (dtype.kind, size) {
            ('f', 4) => ArrayData::F32(
                bytes
                    .chunks_exact(4)
                    .map(|c| f32::from_bits(word(c) as u32))
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
                    .map(|c| half_to_f32(word(c) as u16))
                    .collect(),
            ),
            ('i', 1 | 2 | 4 | 8) => ArrayData::I64(
                bytes
                    .chunks_exact(size)
                    .map(|c| {
                        let shift = 64 - 8 * size as u32;
                        ((word(c) << shift) as i64) >> shift
                    })
                    .collect(),
            ),
            ('u', 1 | 2 | 4 | 8) => {
                let mut out = Vec::with_capacity(n);
                for c in bytes.chunks_exact(size) {
                    let v = word(c);
                    if v > i64::MAX as u64 {
                        return self.error("unsigned value too large");
                    }
                    out.push(v as i64);
                }
                ArrayData::I64(out)
            }
            ('b', 1) => ArrayData::Bool(bytes.iter().map(|&b| b != 0).collect()),
            ('U', s) if s > 0 => {
                let mut out = Vec::with_capacity(n);
                for c in bytes.chunks_exact(s) {
                    let mut text = String::new();
                    for u in c.chunks_exact(4) {
                        let code = word(u) as u32;
                        if code == 0 {
                            break;
                        }
                        match char::from_u32(code) {
                            Some(ch) => text.push(ch),
                            None => return self.error("invalid character in a unicode array"),
                        }
                    }
                    out.push(text);
                }
                ArrayData::Str(out)
            }
            ('S', s) if s > 0 => ArrayData::Str(
                bytes
                    .chunks_exact(s)
                    .map(|c| {
                        let end = c.iter().position(|&b| b == 0).unwrap_or(c.len());
                        String::from_utf8_lossy(&c[..end]).into_owned()
                    })
                    .collect(),
            ),
            (k, s) => return self.error(format!("unsupported numpy dtype {k}{s}")),
        };
        let data = if fortran && shape.len() > 1 {
            match data {
                ArrayData::F32(v) => ArrayData::F32(fortran_to_c(v, &shape)),
                ArrayData::F64(v) => ArrayData::F64(fortran_to_c(v, &shape)),
                ArrayData::I64(v) => ArrayData::I64(fortran_to_c(v, &shape)),
                ArrayData::Bool(v) => ArrayData::Bool(fortran_to_c(v, &shape)),
                ArrayData::Str(v) => ArrayData::Str(fortran_to_c(v, &shape)),
                ArrayData::Object(v) => ArrayData::Object(fortran_to_c(v, &shape)),
            }
        } else {
            data
        };
        Ok(NdArray { shape, data })
    }

    /// Converts a stack value into the public tree (with a depth limit against cycles).
    fn to_value(&mut self, v: &Val, depth: usize) -> Result<PyValue, PickleError> {
        if depth > 64 {
            return self.error("data nested more than 64 levels deep (or cyclic)");
        }
        Ok(match v {
            Val::None => PyValue::None,
            Val::Bool(b) => PyValue::Bool(*b),
            Val::Int(i) => PyValue::Int(*i),
            Val::Float(f) => PyValue::Float(*f),
            Val::Str(s) => PyValue::Str(s.clone()),
            Val::Ref(i) => {
                let i = *i;
                // Containers are cloned shallowly (their items are Vals); arrays are moved.
                let items: Vec<Val> = match &self.arena[i] {
                    Obj::List(items) | Obj::Tuple(items) => items.clone(),
                    Obj::Dict(items) => items
                        .iter()
                        .flat_map(|(k, v)| [k.clone(), v.clone()])
                        .collect(),
                    _ => Vec::new(),
                };
                match &mut self.arena[i] {
                    Obj::Bytes(b) => PyValue::Bytes(b.to_vec()),
                    Obj::List(_) => PyValue::List(items.iter().map(|x| self.to_value(x, depth + 1)).collect::<Result<_, _>>()?),
                    Obj::Tuple(_) => PyValue::Tuple(items.iter().map(|x| self.to_value(x, depth + 1)).collect::<Result<_, _>>()?),
                    Obj::Dict(_) => {
                        let mut pairs = Vec::with_capacity(items.len() / 2);
                        for kv in items.chunks_exact(2) {
                            pairs.push((self.to_value(&kv[0], depth + 1)?, self.to_value(&kv[1], depth + 1)?));
                        }
                        PyValue::Dict(pairs)
                    }
                    Obj::Array(slot) => match slot.take() {
                        Some(a) => {
                            self.converted.insert(i);
                            PyValue::Array(a)
                        }
                        None if self.converted.contains(&i) => {
                            return self.error("the same array is referenced twice; re-save the file without shared arrays")
                        }
                        None => return self.error("an array was never filled (BUILD missing)"),
                    },
                    Obj::Global(_) | Obj::Dtype(_) => return self.error("a bare numpy type is not data"),
                }
            }
        })
    }

    fn finish(&mut self, top: Val) -> Result<PyValue, PickleError> {
        self.op_start = self.pos;
        self.to_value(&top, 0)
    }
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
        let mut pos = 0;
        let mut stride = 1;
        for (d, &i) in index.iter().enumerate() {
            pos += i * stride;
            stride *= shape[d];
        }
        out.push(values[pos].clone());
        for d in (0..shape.len()).rev() {
            index[d] += 1;
            if index[d] < shape[d] {
                break;
            }
            index[d] = 0;
        }
    }
    out
}

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
    fn truncated_input_is_an_error() {
        let p = b"\x80\x02}q\x00(X\x01\x00\x00\x00aq";
        assert!(read(p).unwrap_err().message.contains("truncated"));
        assert!(read(b"").is_err());
    }

    #[test]
    fn half_floats() {
        assert_eq!(half_to_f32(0x3c00), 1.0);
        assert_eq!(half_to_f32(0xc000), -2.0);
        assert_eq!(half_to_f32(0x0001), 5.960_464_5e-8);
        assert!(half_to_f32(0x7e00).is_nan());
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
