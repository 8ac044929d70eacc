//! The Thrift compact protocol as plain values, read from and written to bytes: how the tests
//! build Parquet footers by hand (the bad-input rows) and take them apart to mutate them (the
//! `parquet` fuzz target). It knows no Parquet struct: a value is what its wire type says.

/// Compact-protocol wire types.
pub mod wire {
    pub const TRUE: u8 = 1;
    pub const FALSE: u8 = 2;
    pub const BYTE: u8 = 3;
    pub const I16: u8 = 4;
    pub const I32: u8 = 5;
    pub const I64: u8 = 6;
    pub const DOUBLE: u8 = 7;
    pub const BINARY: u8 = 8;
    pub const LIST: u8 = 9;
    pub const SET: u8 = 10;
    pub const STRUCT: u8 = 12;
    pub const UUID: u8 = 13;
}

/// One value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Bool(bool),
    Byte(u8),
    /// An integer of wire type `I16`, `I32` or `I64`.
    Int(u8, i64),
    Double([u8; 8]),
    Uuid([u8; 16]),
    Binary(Vec<u8>),
    /// A list (or set): its elements' wire type, its elements, and a length to claim
    /// instead of theirs (a lie, for bad inputs).
    List {
        element: u8,
        items: Vec<Value>,
        claimed: Option<u64>,
    },
    /// A struct: its fields in order (ids need not be ascending, or unique).
    Struct(Vec<(i16, Value)>),
    /// A field whose header says wire type `.0`, followed by the bytes `.1` (a lie).
    Raw(u8, Vec<u8>),
}

/// Shorthands for building footers.
pub fn int32(v: i64) -> Value {
    Value::Int(wire::I32, v)
}

pub fn int64(v: i64) -> Value {
    Value::Int(wire::I64, v)
}

pub fn string(s: &str) -> Value {
    Value::Binary(s.as_bytes().to_vec())
}

pub fn list(element: u8, items: Vec<Value>) -> Value {
    Value::List {
        element,
        items,
        claimed: None,
    }
}

pub fn structs(items: Vec<Value>) -> Value {
    list(wire::STRUCT, items)
}

impl Value {
    /// The wire type a field holding this value says.
    pub fn wire(&self) -> u8 {
        match self {
            Value::Bool(true) => wire::TRUE,
            Value::Bool(false) => wire::FALSE,
            Value::Byte(_) => wire::BYTE,
            Value::Int(w, _) | Value::Raw(w, _) => *w,
            Value::Double(_) => wire::DOUBLE,
            Value::Uuid(_) => wire::UUID,
            Value::Binary(_) => wire::BINARY,
            Value::List { .. } => wire::LIST,
            Value::Struct(_) => wire::STRUCT,
        }
    }

    /// The field `id` of a struct.
    pub fn field(&self, id: i16) -> Option<&Value> {
        match self {
            Value::Struct(fields) => fields.iter().find(|(i, _)| *i == id).map(|(_, v)| v),
            _ => None,
        }
    }

    /// The field `id` of a struct, to change it.
    pub fn field_mut(&mut self, id: i16) -> Option<&mut Value> {
        match self {
            Value::Struct(fields) => fields.iter_mut().find(|(i, _)| *i == id).map(|(_, v)| v),
            _ => None,
        }
    }

    /// A list's elements, to change them.
    pub fn items_mut(&mut self) -> Option<&mut Vec<Value>> {
        match self {
            Value::List { items, .. } => Some(items),
            _ => None,
        }
    }

    /// The struct's encoding (a struct value only).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.write(&mut out);
        out
    }

    /// Writes the value's payload (what follows a field header or sits in a list).
    fn write(&self, out: &mut Vec<u8>) {
        match self {
            Value::Bool(b) => out.push(u8::from(*b)),
            Value::Byte(b) => out.push(*b),
            Value::Int(_, v) => varint(out, zigzag(*v)),
            Value::Double(b) => out.extend_from_slice(b),
            Value::Uuid(b) => out.extend_from_slice(b),
            Value::Binary(b) => {
                varint(out, b.len() as u64);
                out.extend_from_slice(b);
            }
            Value::List {
                element,
                items,
                claimed,
            } => {
                let len = claimed.unwrap_or(items.len() as u64);
                if len < 15 {
                    out.push((len as u8) << 4 | element);
                } else {
                    out.push(0xf0 | element);
                    varint(out, len);
                }
                for item in items {
                    item.write(out);
                }
            }
            Value::Struct(fields) => {
                let mut last = 0i16;
                for (id, value) in fields {
                    let delta = i32::from(*id) - i32::from(last);
                    if (1..=15).contains(&delta) {
                        out.push((delta as u8) << 4 | value.wire());
                    } else {
                        out.push(value.wire());
                        varint(out, zigzag(i64::from(*id)));
                    }
                    last = *id;
                    // A boolean field is all in its header.
                    if !matches!(value, Value::Bool(_)) {
                        value.write(out);
                    }
                }
                out.push(0);
            }
            Value::Raw(_, bytes) => out.extend_from_slice(bytes),
        }
    }

    /// Reads a struct from the start of `bytes`; with the bytes it took.
    pub fn read_struct(bytes: &[u8]) -> Option<(Value, usize)> {
        let mut r = Reader { bytes, pos: 0 };
        let value = r.value(wire::STRUCT, 0)?;
        Some((value, r.pos))
    }
}

fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

fn varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push(v as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl Reader<'_> {
    fn byte(&mut self) -> Option<u8> {
        let b = *self.bytes.get(self.pos)?;
        self.pos += 1;
        Some(b)
    }

    fn take(&mut self, n: usize) -> Option<&[u8]> {
        let bytes = self.bytes.get(self.pos..self.pos.checked_add(n)?)?;
        self.pos += n;
        Some(bytes)
    }

    fn varint(&mut self) -> Option<u64> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.byte()?;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Some(v);
            }
        }
        None
    }

    fn int(&mut self) -> Option<i64> {
        let v = self.varint()?;
        Some((v >> 1) as i64 ^ -((v & 1) as i64))
    }

    /// A value of wire type `w` (in a list, a boolean is a byte).
    fn value(&mut self, w: u8, depth: usize) -> Option<Value> {
        if depth > 64 {
            return None;
        }
        Some(match w {
            wire::TRUE | wire::FALSE => Value::Bool(self.byte()? == 1),
            wire::BYTE => Value::Byte(self.byte()?),
            wire::I16 | wire::I32 | wire::I64 => Value::Int(w, self.int()?),
            wire::DOUBLE => Value::Double(self.take(8)?.try_into().ok()?),
            wire::UUID => Value::Uuid(self.take(16)?.try_into().ok()?),
            wire::BINARY => {
                let len = usize::try_from(self.varint()?).ok()?;
                Value::Binary(self.take(len)?.to_vec())
            }
            wire::LIST | wire::SET => {
                let header = self.byte()?;
                let element = header & 0x0f;
                let len = match header >> 4 {
                    15 => usize::try_from(self.varint()?).ok()?,
                    n => usize::from(n),
                };
                if len > self.bytes.len() - self.pos {
                    return None;
                }
                let items = (0..len)
                    .map(|_| self.value(element, depth + 1))
                    .collect::<Option<_>>()?;
                Value::List {
                    element,
                    items,
                    claimed: None,
                }
            }
            wire::STRUCT => {
                let mut fields = Vec::new();
                let mut last = 0i16;
                loop {
                    let header = self.byte()?;
                    let w = header & 0x0f;
                    if w == 0 {
                        break;
                    }
                    let id = match header >> 4 {
                        0 => i16::try_from(self.int()?).ok()?,
                        delta => last.checked_add(i16::from(delta))?,
                    };
                    let value = match w {
                        wire::TRUE | wire::FALSE => Value::Bool(w == wire::TRUE),
                        _ => self.value(w, depth + 1)?,
                    };
                    fields.push((id, value));
                    last = id;
                }
                Value::Struct(fields)
            }
            _ => return None,
        })
    }
}

/// A Parquet file around `metadata` (a `FileMetaData` struct): the magic, `data`, the
/// footer, its length, the magic.
pub fn parquet_file(data: &[u8], metadata: &Value) -> Vec<u8> {
    let footer = metadata.to_bytes();
    let mut out = b"PAR1".to_vec();
    out.extend_from_slice(data);
    out.extend_from_slice(&footer);
    out.extend_from_slice(&(footer.len() as u32).to_le_bytes());
    out.extend_from_slice(b"PAR1");
    out
}

/// A Parquet file's footer, parsed, with the offset where it starts.
pub fn footer(file: &[u8]) -> Option<(Value, usize)> {
    let tail = file.len().checked_sub(8)?;
    if &file[tail + 4..] != b"PAR1" {
        return None;
    }
    let len = u32::from_le_bytes(file[tail..tail + 4].try_into().ok()?) as usize;
    let start = tail.checked_sub(len)?;
    let (value, _) = Value::read_struct(&file[start..tail])?;
    Some((value, start))
}

/// A schema element: `name`, and `children` for a group or an INT32 type for a leaf.
pub fn element(name: &str, children: Option<i64>) -> Value {
    let mut fields = Vec::new();
    if children.is_none() {
        fields.push((1, int32(1)));
    }
    fields.push((3, int32(0)));
    fields.push((4, string(name)));
    if let Some(children) = children {
        fields.push((5, int32(children)));
    }
    Value::Struct(fields)
}

/// A `FileMetaData`: version 2, `schema`, `num_rows`, `row_groups`.
pub fn file_metadata(schema: Vec<Value>, num_rows: i64, row_groups: Vec<Value>) -> Value {
    Value::Struct(vec![
        (1, int32(2)),
        (2, structs(schema)),
        (3, int64(num_rows)),
        (4, structs(row_groups)),
    ])
}

/// A row group of `rows` rows and one INT32 column chunk of `size` bytes at `offset`.
pub fn row_group(rows: i64, offset: i64, size: i64) -> Value {
    let meta = Value::Struct(vec![
        (1, int32(1)),
        (2, list(wire::I32, vec![int32(0)])),
        (4, int32(0)),
        (5, int64(rows)),
        (6, int64(size)),
        (7, int64(size)),
        (9, int64(offset)),
    ]);
    let chunk = Value::Struct(vec![(2, int64(offset + size)), (3, meta)]);
    Value::Struct(vec![
        (1, structs(vec![chunk])),
        (2, int64(size)),
        (3, int64(rows)),
    ])
}

#[test]
fn values_read_back_as_written_and_real_footers_round_trip() {
    let meta = file_metadata(
        vec![element("root", Some(1)), element("x", None)],
        3,
        vec![row_group(3, 4, 10)],
    );
    let bytes = meta.to_bytes();
    assert_eq!(Value::read_struct(&bytes), Some((meta, bytes.len())));
    let tables = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/tables");
    for entry in std::fs::read_dir(tables).unwrap() {
        let file = std::fs::read(entry.unwrap().path()).unwrap();
        let (value, start) = footer(&file).expect("a footer");
        let tail = file.len() - 8;
        assert_eq!(value.to_bytes(), &file[start..tail]);
    }
}
