//! The globals a pickle may name (how numpy stores arrays, and a few builtins protocol 2
//! needs), what calling them builds, and BUILD on arrays and dtypes.

use super::super::numpy::{decode, element_count, reorder_fortran, Dtype};
use super::super::{read_extent, ArrayData, NdArray, PickleError, Source, StoredArray};
use super::{Bytes, Obj, Val, Vm, MAX_ARGS, MAX_NDIM};

#[derive(Debug, Clone, PartialEq)]
pub(in super::super) enum Global {
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

pub(super) fn allowed_global(module: &str, name: &str) -> Option<Global> {
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

impl<S: Source + ?Sized> Vm<'_, S> {
    pub(super) fn push_global(&mut self, module: &str, name: &str) -> Result<(), PickleError> {
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

    pub(super) fn global_of(&self, v: &Val) -> Option<Global> {
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
    pub(super) fn tuple_items(&self, v: &Val, max: usize) -> Result<Vec<Val>, PickleError> {
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

    pub(super) fn bytes_of(&self, v: &Val) -> Result<&Bytes, PickleError> {
        match v {
            Val::Ref(i) => match self.arena.get(*i) {
                Some(Obj::Bytes(b)) => Ok(b),
                _ => self.error("expected bytes"),
            },
            _ => self.error("expected bytes"),
        }
    }

    /// The bytes of a bytes object, read from the source when they lie there.
    pub(super) fn held_bytes(&self, v: &Val) -> Result<Vec<u8>, PickleError> {
        match self.bytes_of(v)? {
            Bytes::Held(b) => Ok(b.clone()),
            &Bytes::InSource { offset, len } => self.read_source(offset, len),
        }
    }

    /// `len` bytes of the source from `offset` (a bytes object's, so within the file).
    pub(super) fn read_source(&self, offset: usize, len: usize) -> Result<Vec<u8>, PickleError> {
        read_extent(self.source, offset, len).map_err(|e| PickleError {
            offset: self.op_start,
            ..e
        })
    }

    /// The array of `shape` and `dtype` whose elements are the bytes object `data`, once its
    /// byte count matches. Numbers in the source stay there ([`ArrayData::Stored`]); bytes in
    /// memory, and strings, are decoded.
    pub(super) fn array_of(
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

    pub(super) fn dtype_of(&self, v: &Val) -> Result<Dtype, PickleError> {
        match v {
            Val::Ref(i) => match self.arena.get(*i) {
                Some(Obj::Dtype(d)) => Ok(d.clone()),
                _ => self.error("expected a numpy dtype"),
            },
            _ => self.error("expected a numpy dtype"),
        }
    }

    pub(super) fn shape_of(&self, v: &Val) -> Result<Vec<usize>, PickleError> {
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

    pub(super) fn reduce(&mut self, callable: Val, args: Val) -> Result<Val, PickleError> {
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

    pub(super) fn build(&mut self, target: Val, state: Val) -> Result<(), PickleError> {
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
    pub(super) fn decode_array(
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
    pub(super) fn check_byte_count(
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
}
