//! The Thrift compact protocol, read over one bounded buffer, the way the parquet crate reads
//! it — and no further: a field whose wire type is not the type the crate reads it as is
//! refused, so that whatever passes is read by the crate exactly as it was read here.
//!
//! Nothing here allocates from a count read from the buffer: lengths are checked against the
//! bytes left before anything is read, and nesting is bounded.

use super::shapes::{Field, Kind, Shape, Union};
use super::Fault;

/// Deepest nesting of structs and lists read or skipped (the parquet crate's skip depth).
const MAX_NESTING: u32 = 64;
/// The longest varint of a 64-bit value.
const MAX_VARINT_BYTES: usize = 10;

/// A compact-protocol wire type (the low nibble of a field header or list header).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Wire {
    BoolTrue,
    BoolFalse,
    Byte,
    I16,
    I32,
    I64,
    Double,
    Binary,
    List,
    Set,
    Map,
    Struct,
    Uuid,
}

impl Wire {
    fn from_nibble(nibble: u8) -> Option<Wire> {
        Some(match nibble {
            1 => Wire::BoolTrue,
            2 => Wire::BoolFalse,
            3 => Wire::Byte,
            4 => Wire::I16,
            5 => Wire::I32,
            6 => Wire::I64,
            7 => Wire::Double,
            8 => Wire::Binary,
            9 => Wire::List,
            10 => Wire::Set,
            11 => Wire::Map,
            12 => Wire::Struct,
            13 => Wire::Uuid,
            _ => return None,
        })
    }

    fn is_bool(self) -> bool {
        matches!(self, Wire::BoolTrue | Wire::BoolFalse)
    }

    /// Whether a value of this wire type is what the crate reads as `kind`.
    fn carries(self, kind: Kind) -> bool {
        match kind {
            Kind::Bool => self.is_bool(),
            Kind::Byte => self == Wire::Byte,
            Kind::I16 => self == Wire::I16,
            Kind::I32 => self == Wire::I32,
            Kind::I64 => self == Wire::I64,
            Kind::Double => self == Wire::Double,
            Kind::Binary => self == Wire::Binary,
            Kind::List(_) => self == Wire::List,
            Kind::Struct(_) | Kind::Empty => self == Wire::Struct,
            Kind::Refused(_) => false,
        }
    }
}

/// A list's header: the wire type of its elements (none for the one-byte empty list) and
/// how many there are.
#[derive(Debug, Clone, Copy)]
pub(super) struct ListHeader {
    pub(super) element: Option<Wire>,
    pub(super) len: usize,
}

/// A cursor over the bytes of one encoded struct (a footer, a page header).
pub(super) struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    nesting: u32,
    /// What the bytes are, for messages (`the footer`).
    what: &'static str,
}

impl<'a> Reader<'a> {
    pub(super) fn new(buf: &'a [u8], what: &'static str) -> Self {
        Reader {
            buf,
            pos: 0,
            nesting: 0,
            what,
        }
    }

    /// Bytes read so far.
    pub(super) fn read_so_far(&self) -> usize {
        self.pos
    }

    /// Bytes not read yet.
    pub(super) fn left(&self) -> usize {
        self.buf.len() - self.pos
    }

    fn byte(&mut self) -> Result<u8, Fault> {
        let Some(&b) = self.buf.get(self.pos) else {
            return Err(Fault::new(format!(
                "{} ends inside a value (after {} bytes)",
                self.what,
                self.buf.len()
            )));
        };
        self.pos += 1;
        Ok(b)
    }

    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], Fault> {
        if n > self.left() {
            return Err(Fault::new(format!(
                "{what} of {n} bytes, but only {} bytes of {} are left",
                self.left(),
                self.what
            )));
        }
        let bytes = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(bytes)
    }

    /// An unsigned LEB128 varint of at most 64 bits.
    fn varint(&mut self) -> Result<u64, Fault> {
        let mut value = 0u64;
        for i in 0..MAX_VARINT_BYTES {
            let b = self.byte()?;
            let bits = u64::from(b & 0x7f);
            if i == MAX_VARINT_BYTES - 1 && bits > 1 {
                break;
            }
            value |= bits << (7 * i);
            if b & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(Fault::new("a varint longer than 64 bits".into()))
    }

    fn zigzag(&mut self) -> Result<i64, Fault> {
        let v = self.varint()?;
        Ok((v >> 1) as i64 ^ -((v & 1) as i64))
    }

    pub(super) fn i64(&mut self) -> Result<i64, Fault> {
        self.zigzag()
    }

    pub(super) fn i32(&mut self) -> Result<i32, Fault> {
        let v = self.zigzag()?;
        i32::try_from(v).map_err(|_| Fault::new(format!("{v} does not fit a 32-bit field")))
    }

    fn i16(&mut self) -> Result<i16, Fault> {
        let v = self.zigzag()?;
        i16::try_from(v).map_err(|_| Fault::new(format!("{v} does not fit a 16-bit field")))
    }

    /// A length-prefixed byte string.
    pub(super) fn binary(&mut self) -> Result<&'a [u8], Fault> {
        let len = self.varint()?;
        let len = i32::try_from(len)
            .ok()
            .and_then(|n| usize::try_from(n).ok())
            .ok_or_else(|| Fault::new(format!("a string of {len} bytes")))?;
        self.take(len, "a string")
    }

    /// A list's header; its length is checked against the bytes left (every element takes
    /// at least one byte).
    pub(super) fn list_header(&mut self) -> Result<ListHeader, Fault> {
        let header = self.byte()?;
        if header == 0 {
            // Some writers write an empty list as one zero byte, with no element type.
            return Ok(ListHeader {
                element: None,
                len: 0,
            });
        }
        let element = Wire::from_nibble(header & 0x0f).ok_or_else(|| {
            Fault::new(format!(
                "a list of elements of unknown type {}",
                header & 0x0f
            ))
        })?;
        let len = match header >> 4 {
            15 => {
                let len = self.varint()?;
                i32::try_from(len)
                    .ok()
                    .and_then(|n| usize::try_from(n).ok())
                    .ok_or_else(|| Fault::new(format!("a list of {len} elements")))?
            }
            short => usize::from(short),
        };
        if len > self.left() {
            return Err(Fault::new(format!(
                "a list of {len} elements, but only {} bytes of {} are left",
                self.left(),
                self.what
            )));
        }
        Ok(ListHeader {
            element: Some(element),
            len,
        })
    }

    /// A field header: `None` at the end of a struct, else the field's id (a delta from
    /// `last`, or written out) and wire type.
    fn field_header(&mut self, last: i16) -> Result<Option<(i16, Wire)>, Fault> {
        let header = self.byte()?;
        if header & 0x0f == 0 {
            return Ok(None);
        }
        let wire = Wire::from_nibble(header & 0x0f)
            .ok_or_else(|| Fault::new(format!("a field of unknown type {}", header & 0x0f)))?;
        let delta = header >> 4;
        let id = if delta == 0 {
            self.i16()?
        } else {
            last.checked_add(i16::from(delta))
                .ok_or_else(|| Fault::new(format!("field id {last} + {delta} overflows")))?
        };
        Ok(Some((id, wire)))
    }

    /// Enters one level of nesting (a struct or a list).
    fn enter(&mut self) -> Result<(), Fault> {
        self.nesting += 1;
        if self.nesting > MAX_NESTING {
            return Err(Fault::new(format!(
                "structures nested deeper than {MAX_NESTING} levels"
            )));
        }
        Ok(())
    }

    fn leave(&mut self) {
        self.nesting -= 1;
    }

    /// Skips a value of wire type `wire`, as the crate skips a field it does not know.
    fn skip(&mut self, wire: Wire) -> Result<(), Fault> {
        match wire {
            Wire::BoolTrue | Wire::BoolFalse => Ok(()),
            Wire::Byte => self.byte().map(drop),
            Wire::I16 | Wire::I32 | Wire::I64 => self.varint().map(drop),
            Wire::Double => self.take(8, "a double").map(drop),
            Wire::Uuid => self.take(16, "a UUID").map(drop),
            Wire::Binary => self.binary().map(drop),
            Wire::List | Wire::Set => {
                self.enter()?;
                let list = self.list_header()?;
                match list.element {
                    // A boolean in a list is one byte.
                    Some(w) if w.is_bool() => {
                        self.take(list.len, "a list of booleans")?;
                    }
                    Some(w) => {
                        for _ in 0..list.len {
                            self.skip(w)?;
                        }
                    }
                    None => {}
                }
                self.leave();
                Ok(())
            }
            Wire::Map => Err(Fault::new("a map, which no Parquet footer holds".into())),
            Wire::Struct => {
                self.enter()?;
                // Ids do not matter when skipping: the crate reads them as deltas from 0.
                while let Some((_, w)) = self.field_header(0)? {
                    self.skip(w)?;
                }
                self.leave();
                Ok(())
            }
        }
    }

    /// Reads a value the crate reads as `kind` (its wire type already checked), checking
    /// every field inside it the same way.
    pub(super) fn read(&mut self, kind: Kind) -> Result<(), Fault> {
        match kind {
            Kind::Bool => Ok(()),
            Kind::Byte => self.byte().map(drop),
            Kind::I16 => self.i16().map(drop),
            Kind::I32 => self.i32().map(drop),
            Kind::I64 => self.i64().map(drop),
            Kind::Double => self.take(8, "a double").map(drop),
            Kind::Binary => self.binary().map(drop),
            Kind::List(element) => {
                let len = self.list_of(element)?;
                for _ in 0..len {
                    self.read(*element)?;
                }
                self.leave();
                Ok(())
            }
            Kind::Struct(shape) => self.read_struct(shape, |_, _| Ok(false)),
            Kind::Empty => match self.byte()? {
                0 => Ok(()),
                _ => Err(Fault::new("an empty struct that holds fields".into())),
            },
            Kind::Refused(why) => Err(Fault::new(why.into())),
        }
    }

    /// Reads the header of a list the crate reads as a list of `element`, and enters it
    /// (the caller reads the elements, then calls [`Reader::leave`] through [`Reader::end_list`]).
    pub(super) fn list_of(&mut self, element: &Kind) -> Result<usize, Fault> {
        self.enter()?;
        let list = self.list_header()?;
        if let Some(wire) = list.element {
            if list.len > 0 && !wire.carries(*element) {
                return Err(Fault::new(format!(
                    "a list of {wire:?} where {} are expected",
                    element.name()
                )));
            }
        }
        Ok(list.len)
    }

    /// Leaves a list entered by [`Reader::list_of`].
    pub(super) fn end_list(&mut self) {
        self.leave();
    }

    /// Reads a struct of `shape`. Each known field's wire type must be the type the crate
    /// reads it as, and may appear once; `field` reads the fields it wants (returns true),
    /// the others are read by their kind. Unknown fields are skipped by their wire type.
    pub(super) fn read_struct(
        &mut self,
        shape: &Shape,
        mut field: impl FnMut(&mut Self, i16) -> Result<bool, Fault>,
    ) -> Result<(), Fault> {
        self.enter()?;
        if shape.union != Union::No {
            self.read_union(shape, &mut field)?;
            self.leave();
            return Ok(());
        }
        let mut seen = 0u64;
        let mut last = 0i16;
        while let Some((id, wire)) = self.field_header(last)? {
            match shape.field(id) {
                Some((index, known)) => {
                    if seen & (1 << index) != 0 {
                        return Err(Fault::new(format!(
                            "{}.{} appears twice",
                            shape.name, known.name
                        )));
                    }
                    seen |= 1 << index;
                    self.read_field(shape, known, wire, &mut field)?;
                }
                None => self.skip(wire)?,
            }
            last = id;
        }
        self.leave();
        Ok(())
    }

    fn read_field(
        &mut self,
        shape: &Shape,
        known: &Field,
        wire: Wire,
        field: &mut impl FnMut(&mut Self, i16) -> Result<bool, Fault>,
    ) -> Result<(), Fault> {
        if let Kind::Refused(why) = known.kind {
            return Err(Fault::new(why.into()));
        }
        if !wire.carries(known.kind) {
            return Err(Fault::new(format!(
                "{}.{} is written as {wire:?}, not as {}",
                shape.name,
                known.name,
                known.kind.name()
            )));
        }
        if !field(self, known.id)? {
            self.read(known.kind)?;
        }
        Ok(())
    }

    /// A union: exactly one field, then the end of the struct.
    fn read_union(
        &mut self,
        shape: &Shape,
        field: &mut impl FnMut(&mut Self, i16) -> Result<bool, Fault>,
    ) -> Result<(), Fault> {
        let Some((id, wire)) = self.field_header(0)? else {
            return Err(Fault::new(format!("an empty {} union", shape.name)));
        };
        match shape.field(id) {
            Some((_, known)) => self.read_field(shape, known, wire, field)?,
            None if shape.union == Union::Open => self.skip(wire)?,
            None => return Err(Fault::new(format!("{} has no variant {id}", shape.name))),
        }
        if self.field_header(id)?.is_some() {
            return Err(Fault::new(format!(
                "a {} union with more than one field",
                shape.name
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the bytes of these tests are.
    const T: &str = "the test's bytes";

    #[test]
    fn varints_of_more_than_64_bits_are_refused() {
        let mut r = Reader::new(
            &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01],
            T,
        );
        assert_eq!(r.varint().unwrap(), u64::MAX);
        let mut r = Reader::new(
            &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02],
            T,
        );
        assert!(r.varint().is_err());
        let mut r = Reader::new(&[0x80; 11], T);
        assert!(r.varint().is_err());
    }

    #[test]
    fn integers_are_zigzag_and_checked_for_their_width() {
        assert_eq!(Reader::new(&[0x03], T).i32().unwrap(), -2);
        assert_eq!(Reader::new(&[0x04], T).i64().unwrap(), 2);
        // 2^32 read as an i32: the crate would truncate it, so it is refused.
        assert!(Reader::new(&[0x80, 0x80, 0x80, 0x80, 0x20], T)
            .i32()
            .is_err());
    }

    #[test]
    fn lengths_beyond_the_bytes_left_are_refused() {
        // A string of 5 bytes with 2 left.
        let err = Reader::new(&[0x05, b'a', b'b'], T).binary().unwrap_err();
        assert!(err.to_string().contains("only 2 bytes"), "{err}");
        // A list of 2^31 - 1 structs.
        let err = Reader::new(&[0xfc, 0xff, 0xff, 0xff, 0xff, 0x07], T)
            .list_header()
            .unwrap_err();
        assert!(err.to_string().contains("2147483647 elements"), "{err}");
        // Short form: 3 elements, one byte left.
        assert!(Reader::new(&[0x35, 0x00], T).list_header().is_err());
        let empty = Reader::new(&[0x00], T).list_header().unwrap();
        assert_eq!((empty.element, empty.len), (None, 0));
    }

    #[test]
    fn skipping_is_bounded_in_depth_and_refuses_maps() {
        // A struct holding a struct holding … (field 1, type struct) 100 times.
        let mut deep = vec![0x1c; 100];
        deep.extend([0u8; 101]);
        let err = Reader::new(&deep, T).skip(Wire::Struct).unwrap_err();
        assert!(err.to_string().contains("nested deeper"), "{err}");
        assert!(Reader::new(&[0x00], T).skip(Wire::Map).is_err());
        // A list of 3 booleans is 3 bytes.
        let mut r = Reader::new(&[0x31, 1, 2, 1, 0x99], T);
        r.skip(Wire::List).unwrap();
        assert_eq!(r.left(), 1);
    }
}
