//! The pickle opcodes, by the names CPython's `Lib/pickle.py` gives them (protocols 0–5).
//! The reader implements those of protocols 2–5 that plain data uses and refuses the others
//! by name ([`super::vm`]).

// Framing and the end.
/// Protocol version (2–5 read).
pub const PROTO: u8 = 0x80;
/// The length of the next frame.
pub const FRAME: u8 = 0x95;
/// The end: the top of the stack is the result.
pub const STOP: u8 = b'.';

// The stack.
/// A mark before a run of items.
pub const MARK: u8 = b'(';
/// Drops the top item.
pub const POP: u8 = b'0';
/// Drops everything down to the last mark.
pub const POP_MARK: u8 = b'1';
/// Pushes a copy of the top item.
pub const DUP: u8 = b'2';

// Scalars.
/// `None`.
pub const NONE: u8 = b'N';
/// `True`.
pub const NEWTRUE: u8 = 0x88;
/// `False`.
pub const NEWFALSE: u8 = 0x89;
/// A 4-byte signed int.
pub const BININT: u8 = b'J';
/// A 1-byte unsigned int.
pub const BININT1: u8 = b'K';
/// A 2-byte unsigned int.
pub const BININT2: u8 = b'M';
/// An int of a 1-byte count of bytes.
pub const LONG1: u8 = 0x8a;
/// An int of a 4-byte count of bytes.
pub const LONG4: u8 = 0x8b;
/// A big-endian float64.
pub const BINFLOAT: u8 = b'G';

// Text and bytes.
/// UTF-8 text, 4-byte length.
pub const BINUNICODE: u8 = b'X';
/// UTF-8 text, 1-byte length.
pub const SHORT_BINUNICODE: u8 = 0x8c;
/// UTF-8 text, 8-byte length.
pub const BINUNICODE8: u8 = 0x8d;
/// Python 2 `str` (latin-1 here), 4-byte length.
pub const BINSTRING: u8 = b'T';
/// Python 2 `str` (latin-1 here), 1-byte length.
pub const SHORT_BINSTRING: u8 = b'U';
/// Bytes, 4-byte length.
pub const BINBYTES: u8 = b'B';
/// Bytes, 1-byte length.
pub const SHORT_BINBYTES: u8 = b'C';
/// Bytes, 8-byte length.
pub const BINBYTES8: u8 = 0x8e;
/// A bytearray, 8-byte length (read as bytes).
pub const BYTEARRAY8: u8 = 0x96;

// Containers.
/// An empty dict.
pub const EMPTY_DICT: u8 = b'}';
/// An empty list.
pub const EMPTY_LIST: u8 = b']';
/// An empty set (read as a list).
pub const EMPTY_SET: u8 = 0x8f;
/// An empty tuple.
pub const EMPTY_TUPLE: u8 = b')';
/// A tuple of the top item.
pub const TUPLE1: u8 = 0x85;
/// A tuple of the top two items.
pub const TUPLE2: u8 = 0x86;
/// A tuple of the top three items.
pub const TUPLE3: u8 = 0x87;
/// A tuple of the items since the mark.
pub const TUPLE: u8 = b't';
/// A frozenset of the items since the mark (read as a list).
pub const FROZENSET: u8 = 0x91;
/// A list of the items since the mark.
pub const LIST: u8 = b'l';
/// A dict of the key/value items since the mark.
pub const DICT: u8 = b'd';
/// Appends the top item to the list below it.
pub const APPEND: u8 = b'a';
/// Appends the items since the mark to the list below it.
pub const APPENDS: u8 = b'e';
/// Adds the items since the mark to the set below it (read as a list).
pub const ADDITEMS: u8 = 0x90;
/// Sets one key/value in the dict below them.
pub const SETITEM: u8 = b's';
/// Sets the key/value items since the mark in the dict below them.
pub const SETITEMS: u8 = b'u';

// The memo.
/// Stores the top item at the next memo index.
pub const MEMOIZE: u8 = 0x94;
/// Stores the top item at a 1-byte memo index.
pub const BINPUT: u8 = b'q';
/// Stores the top item at a 4-byte memo index.
pub const LONG_BINPUT: u8 = b'r';
/// Pushes the item at a 1-byte memo index.
pub const BINGET: u8 = b'h';
/// Pushes the item at a 4-byte memo index.
pub const LONG_BINGET: u8 = b'j';

// Globals and calls: only the allowed globals, only as numpy stores arrays.
/// A global named by two lines of text.
pub const GLOBAL: u8 = b'c';
/// A global named by the two strings on the stack.
pub const STACK_GLOBAL: u8 = 0x93;
/// Calls a global with a tuple of arguments.
pub const REDUCE: u8 = b'R';
/// Sets an object's state.
pub const BUILD: u8 = b'b';

// Refused: they build arbitrary objects or refer outside the file.
/// `cls.__new__(cls, *args)`.
pub const NEWOBJ: u8 = 0x81;
/// `cls.__new__(cls, *args, **kwargs)`.
pub const NEWOBJ_EX: u8 = 0x92;
/// An instance of a class named by text.
pub const INST: u8 = b'i';
/// An instance of a class on the stack.
pub const OBJ: u8 = b'o';
/// A persistent id as text.
pub const PERSID: u8 = b'P';
/// A persistent id from the stack.
pub const BINPERSID: u8 = b'Q';
/// An extension-registry code, 1 byte.
pub const EXT1: u8 = 0x82;
/// An extension-registry code, 2 bytes.
pub const EXT2: u8 = 0x83;
/// An extension-registry code, 4 bytes.
pub const EXT4: u8 = 0x84;
/// An out-of-band buffer.
pub const NEXT_BUFFER: u8 = 0x97;
/// Makes the out-of-band buffer on the stack read-only.
pub const READONLY_BUFFER: u8 = 0x98;

// Refused: protocol 0's text forms.
/// An int as text.
pub const INT: u8 = b'I';
/// A long as text.
pub const LONG: u8 = b'L';
/// A quoted string.
pub const STRING: u8 = b'S';
/// Raw-unicode-escaped text.
pub const UNICODE: u8 = b'V';
/// A float as text.
pub const FLOAT: u8 = b'F';
/// A memo get, index as text.
pub const GET: u8 = b'g';
/// A memo put, index as text.
pub const PUT: u8 = b'p';
