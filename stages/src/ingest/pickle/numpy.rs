//! numpy's side of an array: its dtype (`"<f4"`, `"U20"`, …), decoding its elements from
//! their bytes in either byte order, Fortran-order layouts, and reading the rows of an array
//! whose numbers stay in the file.

use std::ops::Range;

use super::{ArrayData, PickleError, Source, StoredArray};

/// The most bytes [`StoredArray::read_rows`] reads at once.
pub(super) const RUN_BYTES: usize = 1 << 20;

impl StoredArray {
    /// Appends rows `rows` of an array of `shape` to `out`, as f32 in C order, reading at
    /// most [`RUN_BYTES`] at a time. In Fortran order each element of a row lies in its own
    /// column, so the rows are read column by column: one run of `rows` per element of a row.
    pub(super) fn read_rows<S: Source + ?Sized>(
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
pub(super) struct FortranIndices {
    shape: Vec<usize>,
    /// Fortran strides of the axes.
    strides: Vec<usize>,
    /// The next element's index, `None` once past the last.
    index: Option<Vec<usize>>,
}

impl FortranIndices {
    pub(super) fn new(shape: &[usize]) -> Self {
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
pub(super) fn decode_f32(dtype: &Dtype, bytes: &[u8], out: &mut Vec<f32>) {
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
pub(super) fn narrow(x: f64) -> f32 {
    x as f32
}
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Dtype {
    pub(super) kind: char,
    pub(super) size: usize,
    pub(super) little_endian: bool,
}

impl Dtype {
    /// True for the numeric dtypes whose every bit pattern decodes (floats, ints but 8-byte
    /// unsigned ones, bools): their arrays may stay in the file, as [`ArrayData::Stored`].
    pub(super) fn can_stay_stored(&self) -> bool {
        matches!(
            (self.kind, self.size),
            ('f', 2 | 4 | 8) | ('i', 1 | 2 | 4 | 8) | ('u', 1 | 2 | 4) | ('b', 1)
        )
    }

    /// The largest element a dtype may declare (numpy's strings go far lower in practice).
    pub(super) const MAX_ITEM_SIZE: usize = 1 << 24;

    /// Parses a numpy type string (`"<f4"`, `"U20"`, `"b1"`); `None` for anything else,
    /// including non-ASCII text and sizes past [`Dtype::MAX_ITEM_SIZE`].
    pub(super) fn parse(descr: &str) -> Option<Dtype> {
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

/// Decodes the `n` elements of `bytes` (whose length was checked) as `dtype`, in the order
/// they are stored.
pub(super) fn decode(dtype: &Dtype, bytes: &[u8], n: usize) -> Result<ArrayData, String> {
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
pub(super) fn unicode_item(item: &[u8], little_endian: bool) -> Result<String, String> {
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
pub(super) fn without_trailing_nuls(item: &[u8], width: usize) -> &[u8] {
    let nuls = item
        .rchunks_exact(width)
        .take_while(|unit| unit.iter().all(|&b| b == 0))
        .count();
    &item[..item.len().saturating_sub(nuls.saturating_mul(width))]
}

/// The elements of a Fortran-order array in C order.
pub(super) fn reorder_fortran(data: ArrayData, shape: &[usize]) -> ArrayData {
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

/// The product of `dims`: 0 when one is 0 (however large the others), else saturating (an
/// array's shape was checked against its bytes, so only an empty one can overflow).
pub(super) fn product(dims: &[usize]) -> usize {
    if dims.contains(&0) {
        return 0;
    }
    dims.iter().fold(1usize, |acc, &d| acc.saturating_mul(d))
}

/// The product of `shape`, or `None` when it overflows.
pub(super) fn element_count(shape: &[usize]) -> Option<usize> {
    shape.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d))
}

/// The low 32 bits of a word (the element is 4 bytes wide).
pub(super) fn low_u32(word: u64) -> u32 {
    u32::try_from(word & u64::from(u32::MAX)).unwrap_or(u32::MAX)
}

/// Reorders column-major elements into row-major order.
pub(super) fn fortran_to_c<T: Clone>(values: Vec<T>, shape: &[usize]) -> Vec<T> {
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
pub(super) fn half_to_f32(h: u16) -> f32 {
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
