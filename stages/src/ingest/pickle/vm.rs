//! The machine that runs a pickle's opcodes: reading the bytes of the source through a small
//! window, the stack, marks and memo, and one step per family of opcodes
//! ([`super::opcodes`]). The allowed globals and what calling them builds are in `globals`;
//! turning what was built into [`PyValue`]s, within the [`Budget`], in `convert`.

use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;

use super::numpy::Dtype;
use super::opcodes as code;
use super::{read_extent, NdArray, PickleError, Source, STORED_FROM};

mod convert;
mod globals;

use globals::Global;

/// What the values read from a file may add up to, in proportion to the file's size.
///
/// Without shared references nothing can exceed it: every value, string byte and array
/// byte comes from bytes of the file, once. Only a file whose memo references expand one
/// object many times (or decode the same bytes into many arrays) runs out.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Budget {
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
pub(super) const MAX_NDIM: usize = 64;
/// The longest argument tuple an allowed global or BUILD takes (a dtype's state has 8).
pub(super) const MAX_ARGS: usize = 16;
/// How deeply containers may nest (a bound on recursion).
pub(super) const MAX_DEPTH: usize = 64;

/// A value on the VM's stack: scalars inline, everything mutable or large in the arena.
/// Strings are shared: a memo reference to a string does not copy it.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Val {
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
pub(super) enum Bytes {
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
pub(super) enum Obj {
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
pub(super) const WINDOW: usize = 1 << 16;
/// The longest text argument (a GLOBAL's module or name) the parser takes.
pub(super) const MAX_LINE: usize = 4096;

pub(super) struct Vm<'s, S: Source + ?Sized> {
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
    pub(super) fn new(source: &'s S) -> Self {
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

    /// Runs the opcodes up to STOP and returns the top of the stack.
    pub(super) fn run(&mut self) -> Result<Val, PickleError> {
        loop {
            self.op_start = self.pos;
            let op = self.u8()?;
            if op == code::STOP {
                return self.pop();
            }
            self.step(op)?;
        }
    }

    /// One opcode, handed to the step of its family.
    fn step(&mut self, op: u8) -> Result<(), PickleError> {
        match op {
            code::PROTO => self.protocol(),
            code::FRAME => self.length::<8>().map(drop),
            code::MARK | code::POP | code::POP_MARK | code::DUP => self.stack_op(op),
            code::NONE
            | code::NEWTRUE
            | code::NEWFALSE
            | code::BININT
            | code::BININT1
            | code::BININT2
            | code::LONG1
            | code::LONG4
            | code::BINFLOAT => self.push_scalar(op),
            code::BINUNICODE
            | code::SHORT_BINUNICODE
            | code::BINUNICODE8
            | code::BINSTRING
            | code::SHORT_BINSTRING
            | code::BINBYTES
            | code::SHORT_BINBYTES
            | code::BINBYTES8
            | code::BYTEARRAY8 => self.push_text(op),
            code::EMPTY_DICT
            | code::EMPTY_LIST
            | code::EMPTY_SET
            | code::EMPTY_TUPLE
            | code::TUPLE1
            | code::TUPLE2
            | code::TUPLE3
            | code::TUPLE
            | code::FROZENSET
            | code::LIST
            | code::DICT => self.push_container(op),
            code::APPEND | code::APPENDS | code::ADDITEMS | code::SETITEM | code::SETITEMS => {
                self.fill_container(op)
            }
            code::MEMOIZE | code::BINPUT | code::LONG_BINPUT | code::BINGET | code::LONG_BINGET => {
                self.memo_op(op)
            }
            code::GLOBAL | code::STACK_GLOBAL | code::REDUCE | code::BUILD => self.call_op(op),
            other => self.refuse(other),
        }
    }

    /// PROTO: only protocols 2 to 5.
    fn protocol(&mut self) -> Result<(), PickleError> {
        let proto = self.u8()?;
        if !(2..=5).contains(&proto) {
            return self.error(format!(
                "pickle protocol {proto} is not supported (2–5 are)"
            ));
        }
        Ok(())
    }

    /// MARK, POP, POP_MARK and DUP.
    fn stack_op(&mut self, op: u8) -> Result<(), PickleError> {
        match op {
            code::MARK => self.marks.push(self.stack.len()),
            code::POP => {
                self.pop()?;
            }
            code::POP_MARK => {
                self.pop_mark()?;
            }
            code::DUP => {
                let v = self.top_mut()?.clone();
                self.stack.push(v);
            }
            other => return self.refuse(other),
        }
        Ok(())
    }

    /// None, bools, ints and floats.
    fn push_scalar(&mut self, op: u8) -> Result<(), PickleError> {
        let v = match op {
            code::NONE => Val::None,
            code::NEWTRUE => Val::Bool(true),
            code::NEWFALSE => Val::Bool(false),
            code::BININT => Val::Int(i64::from(i32::from_le_bytes(self.array::<4>()?))),
            code::BININT1 => Val::Int(i64::from(self.u8()?)),
            code::BININT2 => Val::Int(i64::from(u16::from_le_bytes(self.array::<2>()?))),
            code::LONG1 | code::LONG4 => {
                let n = if op == code::LONG1 {
                    usize::from(self.u8()?)
                } else {
                    self.length::<4>()?
                };
                if n > 8 {
                    return self.error("integer wider than 64 bits");
                }
                Val::Int(signed_le(&self.take(n)?))
            }
            code::BINFLOAT => Val::Float(f64::from_be_bytes(self.array::<8>()?)),
            other => return self.refuse(other),
        };
        self.stack.push(v);
        Ok(())
    }

    /// Text (UTF-8, or Python 2's `str` as latin-1) and bytes.
    fn push_text(&mut self, op: u8) -> Result<(), PickleError> {
        let v = match op {
            code::BINUNICODE | code::SHORT_BINUNICODE | code::BINUNICODE8 => {
                let n = match op {
                    code::BINUNICODE => self.length::<4>()?,
                    code::SHORT_BINUNICODE => self.length::<1>()?,
                    _ => self.length::<8>()?,
                };
                let b = self.take(n)?;
                Val::Str(self.utf8(b)?.into())
            }
            code::BINSTRING | code::SHORT_BINSTRING => {
                let n = if op == code::BINSTRING {
                    self.length::<4>()?
                } else {
                    self.length::<1>()?
                };
                let text: String = self.take(n)?.iter().map(|&c| char::from(c)).collect();
                Val::Str(text.into())
            }
            code::BINBYTES | code::SHORT_BINBYTES | code::BINBYTES8 | code::BYTEARRAY8 => {
                let n = match op {
                    code::BINBYTES => self.length::<4>()?,
                    code::SHORT_BINBYTES => self.length::<1>()?,
                    _ => self.length::<8>()?,
                };
                let b = self.bytes(n)?;
                self.alloc(Obj::Bytes(b))
            }
            other => return self.refuse(other),
        };
        self.stack.push(v);
        Ok(())
    }

    /// A container: empty, or of the items on the stack (sets and frozensets become lists).
    fn push_container(&mut self, op: u8) -> Result<(), PickleError> {
        let obj = match op {
            code::EMPTY_DICT => Obj::Dict(Vec::new()),
            code::EMPTY_LIST | code::EMPTY_SET => Obj::List(Vec::new()),
            code::EMPTY_TUPLE => Obj::Tuple(Vec::new()),
            code::TUPLE1 | code::TUPLE2 | code::TUPLE3 => {
                let n = match op {
                    code::TUPLE1 => 1,
                    code::TUPLE2 => 2,
                    _ => 3,
                };
                let floor = self.marks.last().copied().unwrap_or(0);
                let Some(start) = self.stack.len().checked_sub(n).filter(|&s| s >= floor) else {
                    return self.error("stack underflow");
                };
                Obj::Tuple(self.stack.split_off(start))
            }
            code::TUPLE => Obj::Tuple(self.pop_mark()?),
            code::FROZENSET | code::LIST => Obj::List(self.pop_mark()?),
            code::DICT => {
                let items = self.pop_mark()?;
                Obj::Dict(self.pairs(items)?)
            }
            other => return self.refuse(other),
        };
        let v = self.alloc(obj);
        self.stack.push(v);
        Ok(())
    }

    /// Items added to the list (or set) or dict below them on the stack.
    fn fill_container(&mut self, op: u8) -> Result<(), PickleError> {
        match op {
            code::APPEND => {
                let item = self.pop()?;
                self.extend_list(vec![item], "APPEND")
            }
            code::APPENDS | code::ADDITEMS => {
                let items = self.pop_mark()?;
                self.extend_list(items, "APPENDS")
            }
            code::SETITEM => {
                let value = self.pop()?;
                let key = self.pop()?;
                self.extend_dict(vec![(key, value)], "SETITEM")
            }
            code::SETITEMS => {
                let items = self.pop_mark()?;
                let pairs = self.pairs(items)?;
                self.extend_dict(pairs, "SETITEMS")
            }
            other => self.refuse(other),
        }
    }

    /// Appends `items` to the list on top of the stack (`name`: the opcode, for the error).
    fn extend_list(&mut self, items: Vec<Val>, name: &str) -> Result<(), PickleError> {
        let list = self.top_mut()?.clone();
        match self.obj_mut(&list)? {
            Obj::List(l) => {
                l.extend(items);
                Ok(())
            }
            _ => self.error(format!("{name} to something that is not a list")),
        }
    }

    /// Sets `pairs` in the dict on top of the stack (`name`: the opcode, for the error).
    fn extend_dict(&mut self, pairs: Vec<(Val, Val)>, name: &str) -> Result<(), PickleError> {
        let dict = self.top_mut()?.clone();
        match self.obj_mut(&dict)? {
            Obj::Dict(d) => {
                d.extend(pairs);
                Ok(())
            }
            _ => self.error(format!("{name} on something that is not a dict")),
        }
    }

    /// The memo: the top item stored, or a stored item pushed.
    fn memo_op(&mut self, op: u8) -> Result<(), PickleError> {
        match op {
            code::MEMOIZE | code::BINPUT | code::LONG_BINPUT => {
                let n = match op {
                    code::MEMOIZE => self.memo.len(),
                    code::BINPUT => self.memo_index::<1>()?,
                    _ => self.memo_index::<4>()?,
                };
                let v = self.top_mut()?.clone();
                self.memo.insert(n, v);
            }
            code::BINGET | code::LONG_BINGET => {
                let n = if op == code::BINGET {
                    self.memo_index::<1>()?
                } else {
                    self.memo_index::<4>()?
                };
                match self.memo.get(&n) {
                    Some(v) => self.stack.push(v.clone()),
                    None => return self.error(format!("memo entry {n} was never stored")),
                }
            }
            other => return self.refuse(other),
        }
        Ok(())
    }

    /// Globals (the allowed ones only), calls of them, and BUILD.
    fn call_op(&mut self, op: u8) -> Result<(), PickleError> {
        match op {
            code::GLOBAL => {
                let module = self.line()?;
                let name = self.line()?;
                self.push_global(&module, &name)
            }
            code::STACK_GLOBAL => {
                let name = self.pop()?;
                let module = self.pop()?;
                match (module, name) {
                    (Val::Str(m), Val::Str(n)) => self.push_global(&m, &n),
                    _ => self.error("STACK_GLOBAL needs two strings"),
                }
            }
            code::REDUCE => {
                let args = self.pop()?;
                let callable = self.pop()?;
                let v = self.reduce(callable, args)?;
                self.stack.push(v);
                Ok(())
            }
            code::BUILD => {
                let state = self.pop()?;
                let target = self.top_mut()?.clone();
                self.build(target, state)
            }
            other => self.refuse(other),
        }
    }

    /// An opcode this reader does not take, refused saying why.
    fn refuse<T>(&self, op: u8) -> Result<T, PickleError> {
        match op {
            code::NEWOBJ | code::NEWOBJ_EX | code::INST | code::OBJ => self.error(
                "refusing to build an arbitrary object (NEWOBJ/INST/OBJ): this pickle holds more than data",
            ),
            code::PERSID | code::BINPERSID => self.error(
                "refusing a persistent id: this pickle refers to objects outside the file",
            ),
            code::EXT1 | code::EXT2 | code::EXT4 => {
                self.error("refusing an extension-registry reference")
            }
            code::NEXT_BUFFER | code::READONLY_BUFFER => {
                self.error("out-of-band buffers are not stored in the file")
            }
            code::INT
            | code::LONG
            | code::STRING
            | code::UNICODE
            | code::FLOAT
            | code::GET
            | code::PUT => self.error(
                "protocol-0 text opcodes are not supported; re-save the file with protocol 2 or newer",
            ),
            other => self.error(format!("unknown opcode 0x{other:02x}")),
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
}

/// The kinds of containers [`Vm::convert`] rebuilds.
pub(super) enum Container {
    List,
    Tuple,
    Dict,
}

/// A little-endian two's-complement int of at most 8 bytes, sign-extended.
pub(super) fn signed_le(bytes: &[u8]) -> i64 {
    let negative = bytes.last().is_some_and(|&b| b & 0x80 != 0);
    let mut wide = [if negative { 0xff } else { 0 }; 8];
    for (w, &b) in wide.iter_mut().zip(bytes) {
        *w = b;
    }
    i64::from_le_bytes(wide)
}
