//! Mutations shared by every target: byte-level havoc (AFL-style) and text edits by line and
//! by cell. All randomness comes from the caller's ChaCha stream, so an input is a pure
//! function of (target, seed, iteration).

use rand::seq::IndexedRandom;
use rand::Rng;
use rand_chacha::ChaCha8Rng;

/// Inputs never grow past this (a repeated chunk is cut here).
pub const MAX_INPUT: usize = 8 << 20;

const BYTES: &[u8] = &[0, 1, 0x7f, 0x80, 0xff, b'\n', b',', b'"', b'.'];
const U16S: &[u16] = &[0, 1, 0x7fff, 0x8000, 0xffff];
const U32S: &[u32] = &[
    0,
    1,
    2,
    0xffff,
    0x1_0000,
    0x7fff_ffff,
    0x8000_0000,
    u32::MAX,
];
const U64S: &[u64] = &[
    0,
    1,
    2,
    0x7fff_ffff,
    0x8000_0000,
    1 << 32,
    1 << 40,
    i64::MAX as u64,
    1 << 63,
    u64::MAX,
];

/// An interesting 64-bit size: 0, 1, 2^31 − 1, 2^31, 2^32, 2^40, u64::MAX, …
pub fn interesting_u64(rng: &mut ChaCha8Rng) -> u64 {
    *U64S.choose(rng).unwrap()
}

/// A random range `[start, end)` of `len` (empty when `len` is 0), mostly short.
pub fn chunk(rng: &mut ChaCha8Rng, len: usize) -> (usize, usize) {
    if len == 0 {
        return (0, 0);
    }
    let start = rng.random_range(0..len);
    let max = (len - start).min(if rng.random_bool(0.8) { 32 } else { len });
    let end = start + rng.random_range(1..=max);
    (start, end)
}

fn put(data: &mut [u8], at: usize, bytes: &[u8]) {
    let n = bytes.len().min(data.len().saturating_sub(at));
    data[at..at + n].copy_from_slice(&bytes[..n]);
}

/// Writes an interesting little-endian number of `width` bytes (1, 2, 4 or 8) at `at`.
pub fn put_interesting(rng: &mut ChaCha8Rng, data: &mut [u8], at: usize, width: usize) {
    match width {
        1 => put(data, at, &[*BYTES.choose(rng).unwrap()]),
        2 => put(data, at, &U16S.choose(rng).unwrap().to_le_bytes()),
        4 => put(data, at, &U32S.choose(rng).unwrap().to_le_bytes()),
        _ => put(data, at, &interesting_u64(rng).to_le_bytes()),
    }
}

/// Offsets of little-endian words that look like sizes or addresses (a u32 or u64 between
/// 1 and the file's length): where a structure's lengths and offsets most likely are.
pub fn number_positions(data: &[u8]) -> Vec<(usize, usize)> {
    let len = data.len() as u64;
    let mut out = Vec::new();
    for at in (0..data.len().saturating_sub(8)).step_by(4) {
        let w64 = u64::from_le_bytes(data[at..at + 8].try_into().unwrap());
        if (1..=len).contains(&w64) {
            out.push((at, 8));
            continue;
        }
        let w32 = u32::from_le_bytes(data[at..at + 4].try_into().unwrap()) as u64;
        if (1..=len).contains(&w32) {
            out.push((at, 4));
        }
    }
    out
}

/// One random byte-level mutation of `data`; `other` is a second seed for splicing,
/// `numbers` the likely size/offset fields of the seed (see [`number_positions`]).
pub fn havoc_once(
    rng: &mut ChaCha8Rng,
    data: &mut Vec<u8>,
    other: &[u8],
    numbers: &[(usize, usize)],
) {
    let len = data.len();
    if len == 0 {
        data.extend_from_slice(&other[..other.len().min(64)]);
        return;
    }
    match rng.random_range(0..14) {
        0 => {
            let at = rng.random_range(0..len);
            data[at] ^= 1 << rng.random_range(0..8);
        }
        1 => {
            let at = rng.random_range(0..len);
            put_interesting(rng, data, at, 1);
        }
        2 => {
            let at = rng.random_range(0..len);
            data[at] = rng.random();
        }
        3 => {
            let at = rng.random_range(0..len);
            let width = *[2, 4, 8].choose(rng).unwrap();
            put_interesting(rng, data, at, width);
        }
        4 | 5 => match numbers.choose(rng) {
            Some(&(at, width)) if at < len => {
                let width = if rng.random_bool(0.3) { 4 } else { width };
                put_interesting(rng, data, at, width);
            }
            _ => {
                let at = rng.random_range(0..len);
                put_interesting(rng, data, at, 8);
            }
        },
        6 => {
            // Add or subtract a little from a number field.
            if let Some(&(at, width)) = numbers.choose(rng) {
                if at + width <= len {
                    let mut word = [0u8; 8];
                    word[..width].copy_from_slice(&data[at..at + width]);
                    let delta = rng.random_range(1..=16u64);
                    let v = u64::from_le_bytes(word);
                    let v = if rng.random() {
                        v.wrapping_add(delta)
                    } else {
                        v.wrapping_sub(delta)
                    };
                    put(data, at, &v.to_le_bytes()[..width]);
                }
            }
        }
        7 => data.truncate(rng.random_range(0..len)),
        8 => {
            let (s, e) = chunk(rng, len);
            data.drain(s..e);
        }
        9 => {
            let (s, e) = chunk(rng, len);
            let piece = data[s..e].to_vec();
            let at = rng.random_range(0..=len);
            data.splice(at..at, piece);
        }
        10 => {
            // Repeat a chunk many times (deep nesting, long runs).
            let (s, e) = chunk(rng, len.min(64));
            let piece = data[s..e].to_vec();
            let times = 1usize << rng.random_range(1..17);
            let times = times.min(MAX_INPUT.saturating_sub(len) / piece.len().max(1));
            let at = rng.random_range(0..=len);
            let repeated: Vec<u8> = piece
                .iter()
                .copied()
                .cycle()
                .take(piece.len() * times)
                .collect();
            data.splice(at..at, repeated);
        }
        11 => {
            let n = rng.random_range(1..=16);
            let bytes: Vec<u8> = (0..n).map(|_| *BYTES.choose(rng).unwrap()).collect();
            let at = rng.random_range(0..=len);
            data.splice(at..at, bytes);
        }
        12 => {
            // Splice: our prefix, the other seed's suffix.
            if !other.is_empty() {
                let cut = rng.random_range(0..=len);
                let from = rng.random_range(0..other.len());
                data.truncate(cut);
                data.extend_from_slice(&other[from..]);
            }
        }
        _ => {
            // Overwrite a chunk with a chunk of the other seed.
            if !other.is_empty() {
                let (s, e) = chunk(rng, other.len());
                let at = rng.random_range(0..len);
                put(data, at, &other[s..e]);
            }
        }
    }
    data.truncate(MAX_INPUT);
}

/// 1–8 stacked byte-level mutations (mostly few).
pub fn havoc(rng: &mut ChaCha8Rng, data: &mut Vec<u8>, other: &[u8], numbers: &[(usize, usize)]) {
    for _ in 0..rounds(rng) {
        havoc_once(rng, data, other, numbers);
    }
}

/// How many mutations to stack: 1 to 8, mostly 1 or 2.
pub fn rounds(rng: &mut ChaCha8Rng) -> usize {
    1 << rng.random_range(0..4)
}

/// Line-level edits of a text: delete, duplicate, swap or cut lines, or insert one of `extra`.
pub fn edit_lines(rng: &mut ChaCha8Rng, lines: &mut Vec<String>, extra: &[String]) {
    let n = lines.len();
    match rng.random_range(0..6) {
        0 if n > 0 => {
            lines.remove(rng.random_range(0..n));
        }
        1 if n > 0 => {
            let line = lines[rng.random_range(0..n)].clone();
            let times = if rng.random_bool(0.9) {
                1
            } else {
                rng.random_range(2..2000)
            };
            let times = times.min(MAX_INPUT / line.len().max(1));
            let at = rng.random_range(0..=n);
            lines.splice(at..at, std::iter::repeat_n(line, times));
        }
        2 if n > 1 => {
            let (a, b) = (rng.random_range(0..n), rng.random_range(0..n));
            lines.swap(a, b);
        }
        3 if n > 1 => lines.truncate(rng.random_range(1..n)),
        _ => {
            if let Some(line) = extra.choose(rng) {
                let at = rng.random_range(0..=n);
                lines.insert(at, line.clone());
            }
        }
    }
}

/// CRC-32 (IEEE), as zip stores it.
pub fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= b as u32;
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xedb8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// The members of a stored (uncompressed) zip such as `np.savez` writes, read from the local
/// headers; `None` if the file is not one.
pub fn unzip_stored(data: &[u8]) -> Option<Vec<(Vec<u8>, Vec<u8>)>> {
    let u16_at = |at: usize| Some(u16::from_le_bytes(data.get(at..at + 2)?.try_into().ok()?));
    let u32_at = |at: usize| Some(u32::from_le_bytes(data.get(at..at + 4)?.try_into().ok()?));
    let mut members = Vec::new();
    let mut at = 0;
    while u32_at(at)? == 0x0403_4b50 {
        let method = u16_at(at + 8)?;
        let mut size = u32_at(at + 18)? as u64;
        let name_len = u16_at(at + 26)? as usize;
        let extra_len = u16_at(at + 28)? as usize;
        let name = data.get(at + 30..at + 30 + name_len)?.to_vec();
        let extra = data.get(at + 30 + name_len..at + 30 + name_len + extra_len)?;
        if size == u32::MAX as u64 {
            // Zip64 extra field: id 1, then the uncompressed and compressed sizes.
            let mut e = 0;
            while e + 4 <= extra.len() {
                let id = u16::from_le_bytes([extra[e], extra[e + 1]]);
                let len = u16::from_le_bytes([extra[e + 2], extra[e + 3]]) as usize;
                if id == 1 && len >= 16 {
                    size = u64::from_le_bytes(extra.get(e + 12..e + 20)?.try_into().ok()?);
                }
                e += 4 + len;
            }
        }
        if method != 0 {
            return None;
        }
        let start = at + 30 + name_len + extra_len;
        let body = data
            .get(start..start + usize::try_from(size).ok()?)?
            .to_vec();
        at = start + body.len();
        members.push((name, body));
    }
    (!members.is_empty()).then_some(members)
}

/// A stored zip of `members` with correct CRCs and a central directory.
pub fn zip_stored(members: &[(Vec<u8>, Vec<u8>)]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut central = Vec::new();
    for (name, body) in members {
        let offset = out.len() as u32;
        let crc = crc32(body);
        let header = |sig: u32, central: bool| {
            let mut h = sig.to_le_bytes().to_vec();
            if central {
                h.extend_from_slice(&20u16.to_le_bytes()); // made by
            }
            h.extend_from_slice(&20u16.to_le_bytes()); // needed
            h.extend_from_slice(&0u16.to_le_bytes()); // flags
            h.extend_from_slice(&0u16.to_le_bytes()); // stored
            h.extend_from_slice(&0u32.to_le_bytes()); // time, date
            h.extend_from_slice(&crc.to_le_bytes());
            h.extend_from_slice(&(body.len() as u32).to_le_bytes());
            h.extend_from_slice(&(body.len() as u32).to_le_bytes());
            h.extend_from_slice(&(name.len() as u16).to_le_bytes());
            h.extend_from_slice(&0u16.to_le_bytes()); // extra
            if central {
                h.extend_from_slice(&[0; 6]); // comment length, disk, internal attributes
                h.extend_from_slice(&0u32.to_le_bytes()); // external attributes
                h.extend_from_slice(&offset.to_le_bytes());
            }
            h.extend_from_slice(name);
            h
        };
        out.extend(header(0x0403_4b50, false));
        out.extend_from_slice(body);
        central.extend(header(0x0201_4b50, true));
    }
    let central_offset = out.len() as u32;
    out.extend_from_slice(&central);
    out.extend_from_slice(&0x0605_4b50u32.to_le_bytes());
    out.extend_from_slice(&[0; 4]); // disk numbers
    out.extend_from_slice(&(members.len() as u16).to_le_bytes());
    out.extend_from_slice(&(members.len() as u16).to_le_bytes());
    out.extend_from_slice(&(central.len() as u32).to_le_bytes());
    out.extend_from_slice(&central_offset.to_le_bytes());
    out.extend_from_slice(&0u16.to_le_bytes()); // comment
    out
}
