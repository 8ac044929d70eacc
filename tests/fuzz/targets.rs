//! The fuzz targets: per reader, its seeds, a structure-aware mutator and what one input runs.
//!
//! A target's `run` calls the reader's public API the way the stages do and checks the
//! invariants later code relies on (a sequence holds `frames × dim` values; an array holds
//! the product of its shape). Errors are fine; a panic, abort, hang or allocation bomb is a
//! finding.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rand::seq::IndexedRandom;
use rand::Rng;
use rand_chacha::ChaCha8Rng;

use mmflow_stages::ingest::align::{self, Collapse, Sequence, Timeline, Values};
use mmflow_stages::ingest::csd_file::CsdFile;
use mmflow_stages::ingest::csv_dir::CsvSource;
use mmflow_stages::ingest::npz_file::NpzSource;
use mmflow_stages::ingest::pickle::{self, ArrayData, FileSource, NdArray, PyValue};
use mmflow_stages::ingest::readers::TimingOptions;

use super::mutate::{self, chunk, edit_lines, havoc, number_positions, rounds, MAX_INPUT};

/// One seed input with the likely size/offset fields of binary formats.
pub struct Seed {
    pub bytes: Vec<u8>,
    pub numbers: Vec<(usize, usize)>,
}

/// A reader under test.
pub struct Target {
    /// `pickle`, `csd`, `npz`, `csv`, `config`, `template`, `model`: the test's name and the
    /// files' prefix.
    pub name: &'static str,
    /// Extension of input files (so a reproducer opens in the usual tools).
    pub ext: &'static str,
    /// For CSV: inputs live in a directory of their own (the reader lists a directory).
    pub in_directory: bool,
    /// Seeds larger than this are left out (they would slow every iteration down).
    pub max_seed: usize,
    /// The seed inputs, read from the repository at its root ([`seed_files`]: the files with
    /// the target's extension).
    pub seeds: fn(&Target, &Path) -> Vec<Vec<u8>>,
    /// Computes the structure hints of a seed.
    pub numbers: fn(&[u8]) -> Vec<(usize, usize)>,
    /// Derives one input from the corpus.
    pub mutate: fn(&mut ChaCha8Rng, &[Seed]) -> Vec<u8>,
    /// Runs one input, already written to the given path.
    pub run: fn(&Path),
}

pub const PICKLE: Target = Target {
    name: "pickle",
    ext: "pkl",
    in_directory: false,
    max_seed: 4 << 20,
    seeds: seed_files,
    numbers: pickle_numbers,
    mutate: mutate_pickle,
    run: run_pickle,
};

pub const CSD: Target = Target {
    name: "csd",
    ext: "csd",
    in_directory: false,
    max_seed: 5 << 19,
    seeds: seed_files,
    numbers: number_positions,
    mutate: mutate_binary,
    run: run_csd,
};

pub const NPZ: Target = Target {
    name: "npz",
    ext: "npz",
    in_directory: false,
    max_seed: 4 << 20,
    seeds: seed_files,
    numbers: no_numbers,
    mutate: mutate_npz,
    run: run_npz,
};

pub const CSV: Target = Target {
    name: "csv",
    ext: "csv",
    in_directory: true,
    max_seed: 4 << 20,
    seeds: seed_files,
    numbers: no_numbers,
    mutate: mutate_csv,
    run: run_csv,
};

pub const CONFIG: Target = Target {
    name: "config",
    ext: "toml",
    in_directory: false,
    max_seed: 1 << 20,
    seeds: seed_files,
    numbers: no_numbers,
    mutate: mutate_config,
    run: run_config,
};

pub const TEMPLATE: Target = Target {
    name: "template",
    ext: "toml",
    in_directory: false,
    max_seed: 1 << 20,
    seeds: seed_files,
    numbers: no_numbers,
    mutate: mutate_template,
    run: run_config,
};

fn no_numbers(_: &[u8]) -> Vec<(usize, usize)> {
    Vec::new()
}

fn pick<'a>(rng: &mut ChaCha8Rng, seeds: &'a [Seed]) -> (&'a Seed, &'a Seed) {
    (seeds.choose(rng).unwrap(), seeds.choose(rng).unwrap())
}

// ---------------------------------------------------------------- binary (.csd / HDF5)

fn mutate_binary(rng: &mut ChaCha8Rng, seeds: &[Seed]) -> Vec<u8> {
    let (seed, other) = pick(rng, seeds);
    let mut data = seed.bytes.clone();
    havoc(rng, &mut data, &other.bytes, &seed.numbers);
    data
}

/// Checks a sequence's invariant, then aligns it as the source stages do with the raw
/// frames of a video (to its own first intervals as words, and as the word reference).
fn check_sequence(what: &str, seq: &Sequence) {
    let values = match &seq.values {
        Values::F32(v) => v.len(),
        Values::F64(v) => v.len(),
    };
    assert_eq!(
        Some(values),
        seq.len().checked_mul(seq.dim),
        "{what}: {} frames × dim {} but {values} values",
        seq.len(),
        seq.dim
    );
    let words: Vec<[f64; 2]> = seq.intervals.iter().take(16).copied().collect();
    let epsilon = align::SDK_EPSILON;
    let _ = align::words_after_alignment(seq, Collapse::Mean, epsilon);
    let aligned =
        align::align_to_words(&words, &Timeline::new(seq.clone()), Collapse::Mean, epsilon);
    let timeline = Timeline::new(aligned);
    if let Some(&first) = words.first() {
        let _ = timeline.intersect(first, epsilon);
    }
}

/// At most this many videos of one input are read (each read is the expensive part).
const VIDEOS: usize = 16;

fn run_csd(path: &Path) {
    let Ok(csd) = CsdFile::open(path) else {
        return;
    };
    let _ = (csd.root(), csd.metadata().len());
    for video in csd.videos().iter().take(VIDEOS) {
        let shape = csd.shape(video);
        if let Ok(seq) = csd.read(video) {
            check_sequence(video, &seq);
            if let Ok(shape) = shape {
                assert_eq!(
                    (shape.frames, shape.dim),
                    (seq.len(), seq.dim),
                    "{video}: shape() disagrees with read()"
                );
            }
        }
        if let Ok(words) = csd.read_words(video) {
            assert_eq!(words.words.len(), words.intervals.len(), "{video}");
        }
    }
}

// ---------------------------------------------------------------- pickle

/// One opcode: where it starts, where its argument starts, where it ends, and its numeric
/// field (a length, an int or a memo index) if it has one.
struct Op {
    start: usize,
    end: usize,
    number: Option<(usize, usize)>,
    text: Option<(usize, usize)>,
}

/// Splits a pickle into opcodes (stops at the first it cannot size).
fn ops(bytes: &[u8]) -> Vec<Op> {
    let mut out = Vec::new();
    let mut at = 0;
    let uint = |at: usize, n: usize| -> Option<usize> {
        let b = bytes.get(at..at + n)?;
        usize::try_from(b.iter().rev().fold(0u64, |acc, &x| (acc << 8) | x as u64)).ok()
    };
    while at < bytes.len() {
        let op = bytes[at];
        let arg = at + 1;
        // (fixed argument bytes, width of a length prefix)
        let (fixed, prefix) = match op {
            b'K' | b'q' | b'h' | 0x82 | 0x80 => (1, 0),
            b'M' | 0x83 => (2, 0),
            b'J' | b'r' | b'j' | 0x84 => (4, 0),
            b'G' | 0x95 => (8, 0),
            b'X' | b'B' | b'T' | 0x8b => (0, 4),
            0x8c | b'C' | b'U' | 0x8a => (0, 1),
            0x8d | 0x8e | 0x96 => (0, 8),
            b'c' | b'I' | b'L' | b'F' | b'S' | b'V' | b'P' | b'p' | b'g' | b'i' => {
                let lines = if matches!(op, b'c' | b'i') { 2 } else { 1 };
                let mut end = arg;
                for _ in 0..lines {
                    match bytes[end.min(bytes.len())..]
                        .iter()
                        .position(|&b| b == b'\n')
                    {
                        Some(n) => end += n + 1,
                        None => return out,
                    }
                }
                out.push(Op {
                    start: at,
                    end,
                    number: None,
                    text: Some((arg, end)),
                });
                at = end;
                continue;
            }
            _ => (0, 0),
        };
        let (end, number, text) = if prefix > 0 {
            let Some(len) = uint(arg, prefix) else {
                return out;
            };
            let Some(end) = (arg + prefix).checked_add(len) else {
                return out;
            };
            (end, Some((arg, prefix)), Some((arg + prefix, end)))
        } else {
            (arg + fixed, (fixed > 0).then_some((arg, fixed)), None)
        };
        if end > bytes.len() {
            return out;
        }
        out.push(Op {
            start: at,
            end,
            number,
            text,
        });
        at = end;
    }
    out
}

fn pickle_numbers(bytes: &[u8]) -> Vec<(usize, usize)> {
    ops(bytes).iter().filter_map(|o| o.number).collect()
}

const PICKLE_SNIPPETS: &[&[u8]] = &[
    b"(",
    b")",
    b"]",
    b"}",
    b"N",
    b"\x88",
    b"0",
    b"1",
    b"2",
    b"a",
    b"e",
    b"s",
    b"u",
    b"t",
    b"R",
    b"b",
    b"\x85",
    b"\x86",
    b"\x87",
    b"\x94",
    b".",
    b"\x93",
    b"l",
    b"d",
    b"\x8f",
    b"\x90",
    b"\x91",
    b"h\x00",
    b"h\xff",
    b"j\xff\xff\xff\xff",
    b"j\x00\x00\x00\x80",
    b"q\x00",
    b"q\xff",
    b"r\xff\xff\xff\x7f",
    b"r\xff\xff\xff\xff",
    b"K\x00",
    b"K\xff",
    b"J\xff\xff\xff\xff",
    b"J\x00\x00\x00\x80",
    b"M\xff\xff",
    b"\x8a\x08\xff\xff\xff\xff\xff\xff\xff\x7f",
    b"\x8a\x09\x00\x00\x00\x00\x00\x00\x00\x00\x01",
    b"\x8a\x00",
    b"\x8b\xff\xff\xff\xff",
    b"G\x7f\xf8\x00\x00\x00\x00\x00\x00",
    b"G\x7f\xf0\x00\x00\x00\x00\x00\x00",
    b"\x95\xff\xff\xff\xff\xff\xff\xff\xff",
    b"\x80\x05",
    b"\x80\xff",
    b"C\x00",
    b"C\x08\x00\x00\x80\x7f\x00\x00\xc0\x7f",
    b"B\xff\xff\xff\x7f",
    b"\x8e\xff\xff\xff\xff\xff\xff\xff\xff",
    b"\x96\x00\x00\x00\x00\x00\x00\x00\x00",
    b"\x8c\x05numpy\x8c\x05dtype\x93",
    b"\x8c\x05numpy\x8c\x07ndarray\x93",
    b"\x8c\x16numpy.core.multiarray\x8c\x0c_reconstruct\x93",
    b"\x8c\x17numpy._core.multiarray\x8c\x0c_reconstruct\x93",
    b"\x8c\x13numpy.core.numeric\x8c\x0b_frombuffer\x93",
    b"\x8c\x16numpy.core.multiarray\x8c\x06scalar\x93",
    b"2\x86",
    b"22\x87",
    b"(22l",
    b"\x942",
    b"]\x94",
    b"(]",
    b"c_codecs\nencode\n",
    b"ccollections\nOrderedDict\n",
    b"cnumpy\ndtype\n",
    b"\x8c\x06latin1",
    b"\x8c\x01C",
    b"\x8c\x01F",
];

const DTYPES: &[&str] = &[
    "f2",
    "f4",
    "f8",
    "<f4",
    ">f8",
    "=f4",
    "|f4",
    "i8",
    "<i4",
    ">i2",
    "u1",
    "b1",
    "?",
    "U",
    "U0",
    "<U20",
    ">U3",
    "S0",
    "S3",
    "O8",
    "O",
    "V8",
    "c8",
    "f16",
    "M8",
    "i",
    "<",
    "",
    "f99999999999999999999",
    "U4611686018427387904",
    "U18446744073709551615",
    "<f\u{e9}",
    "\u{e9}f4",
    "\u{1F600}",
    "f-1",
    "f0",
    "i0",
    "i3",
    "i16",
];

/// `f4`, `<U20`, `|b1`, `O8`…
fn looks_like_dtype(text: &[u8]) -> bool {
    let text = text
        .strip_prefix(b"<")
        .or(text.strip_prefix(b">"))
        .or(text.strip_prefix(b"|"))
        .unwrap_or(text);
    text.len() <= 4
        && text
            .first()
            .is_some_and(|c| c.is_ascii_alphabetic() || *c == b'?')
        && text[1..].iter().all(u8::is_ascii_digit)
}

/// A pickle string op (SHORT_BINUNICODE) holding `s`.
fn short_str(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    if b.len() < 256 {
        let mut out = vec![0x8c, b.len() as u8];
        out.extend_from_slice(b);
        out
    } else {
        let mut out = vec![b'X'];
        out.extend_from_slice(&(b.len() as u32).to_le_bytes());
        out.extend_from_slice(b);
        out
    }
}

fn mutate_pickle(rng: &mut ChaCha8Rng, seeds: &[Seed]) -> Vec<u8> {
    let (seed, other) = pick(rng, seeds);
    let mut data = seed.bytes.clone();
    for _ in 0..rounds(rng) {
        if rng.random_bool(0.3) {
            mutate::havoc_once(rng, &mut data, &other.bytes, &seed.numbers);
            continue;
        }
        let list = ops(&data);
        let Some(op) = list.choose(rng) else {
            mutate::havoc_once(rng, &mut data, &other.bytes, &seed.numbers);
            continue;
        };
        match rng.random_range(0..8) {
            7 => {
                // Shared references: a value, DUP + TUPLE2 k times (2^k leaves in k levels).
                let k = rng.random_range(1..=64);
                let at = op.end;
                data.splice(at..at, b"2\x86".repeat(k));
            }
            0 => match op.number {
                Some((at, width)) => mutate::put_interesting(rng, &mut data, at, width),
                None => {
                    let numbered: Vec<&Op> = list.iter().filter(|o| o.number.is_some()).collect();
                    if let Some((at, width)) = numbered.choose(rng).and_then(|o| o.number) {
                        mutate::put_interesting(rng, &mut data, at, width);
                    }
                }
            },
            1 => {
                data.drain(op.start..op.end);
            }
            2 => {
                // Repeat a run of up to 8 ops, up to 2^16 times (nesting, memo bombs).
                let i = list.iter().position(|o| o.start == op.start).unwrap();
                let j = (i + rng.random_range(1..=8)).min(list.len());
                let piece = data[list[i].start..list[j - 1].end].to_vec();
                let times = (1usize << rng.random_range(0..17))
                    .min(MAX_INPUT.saturating_sub(data.len()) / piece.len().max(1));
                let at = list[j - 1].end;
                let repeated: Vec<u8> = piece
                    .iter()
                    .copied()
                    .cycle()
                    .take(piece.len() * times)
                    .collect();
                data.splice(at..at, repeated);
            }
            3 => {
                let mut snippet = PICKLE_SNIPPETS.choose(rng).unwrap().to_vec();
                if rng.random_bool(0.3) {
                    // Runs of one snippet: nesting, sharing (DUP + TUPLE2), memo churn.
                    snippet = snippet.repeat(1 << rng.random_range(1..14));
                }
                let at = if rng.random_bool(0.5) {
                    op.start
                } else {
                    op.end
                };
                data.splice(at..at, snippet);
            }
            4 => {
                // Replace a string (most often a short one: dtypes, keys, module names).
                let mut texts: Vec<&Op> = list
                    .iter()
                    .filter(|o| {
                        o.text.is_some_and(|(s, e)| e - s <= 32)
                            && matches!(data[o.start], 0x8c | b'X')
                    })
                    .collect();
                if rng.random_bool(0.6) {
                    // Mostly the dtype strings: where a type and a size are parsed.
                    texts.retain(|o| o.text.is_some_and(|(s, e)| looks_like_dtype(&data[s..e])));
                }
                if let Some(o) = texts.choose(rng) {
                    let s = if rng.random_bool(0.7) {
                        DTYPES.choose(rng).unwrap().to_string()
                    } else {
                        [
                            "train",
                            "id",
                            "audio",
                            "vision",
                            "text",
                            "regression_labels",
                            "audio_lengths",
                            "latin1",
                            "numpy",
                            "dtype",
                        ]
                        .choose(rng)
                        .unwrap()
                        .to_string()
                    };
                    data.splice(o.start..o.end, short_str(&s));
                }
            }
            5 => {
                // Move an op elsewhere.
                let piece = data[op.start..op.end].to_vec();
                data.drain(op.start..op.end);
                let at = list
                    .choose(rng)
                    .map(|o| o.start)
                    .unwrap_or(0)
                    .min(data.len());
                data.splice(at..at, piece);
            }
            _ => {
                // Splice with another seed at op boundaries.
                let theirs = ops(&other.bytes);
                if let Some(o) = theirs.choose(rng) {
                    data.truncate(op.start);
                    data.extend_from_slice(&other.bytes[o.start..]);
                }
            }
        }
        data.truncate(MAX_INPUT);
    }
    data
}

/// Checks every array of `v` holds as many elements as its shape says; arrays left in the
/// file are loaded, and float ones read row by row too, which must give the same values.
/// An array referenced many times (one `Arc`) is checked once: `seen` holds those checked.
fn check_value(v: &PyValue, source: &FileSource, seen: &mut HashSet<*const NdArray>, depth: usize) {
    if depth > 64 {
        return;
    }
    match v {
        PyValue::List(items) | PyValue::Tuple(items) => items
            .iter()
            .for_each(|i| check_value(i, source, seen, depth + 1)),
        PyValue::Dict(items) => items.iter().for_each(|(k, v)| {
            check_value(k, source, seen, depth + 1);
            check_value(v, source, seen, depth + 1);
        }),
        PyValue::Array(a) if !seen.insert(Arc::as_ptr(a)) => {}
        PyValue::Array(a) => {
            let len = match &a.data {
                ArrayData::F32(x) => x.len(),
                ArrayData::F64(x) => x.len(),
                ArrayData::I64(x) => x.len(),
                ArrayData::Bool(x) => x.len(),
                ArrayData::Str(x) => x.len(),
                ArrayData::Bytes(x) => x.len(),
                ArrayData::Object(x) => {
                    x.iter()
                        .for_each(|i| check_value(i, source, seen, depth + 1));
                    x.len()
                }
                ArrayData::Stored(_) => {
                    let loaded = a
                        .load(source)
                        .expect("an array checked against its file loads");
                    let loaded_len = match &loaded.data {
                        ArrayData::F32(x) => x.len(),
                        ArrayData::F64(x) => x.len(),
                        ArrayData::I64(x) => x.len(),
                        ArrayData::Bool(x) => x.len(),
                        other => panic!("a stored array loads as numbers, not {}", other.kind()),
                    };
                    assert_eq!(loaded_len, a.len());
                    if a.data.is_float() {
                        check_rows(a, &loaded, source);
                    }
                    a.len()
                }
            };
            let product = a
                .shape
                .iter()
                .try_fold(1usize, |acc, &d| acc.checked_mul(d));
            assert_eq!(
                product,
                Some(len),
                "array of shape {:?} holds {len} elements",
                a.shape
            );
            let _ = (a.kind(), v.type_name());
        }
        _ => {}
    }
}

/// A stored float array read in two runs of rows equals the array loaded whole.
fn check_rows(stored: &NdArray, loaded: &NdArray, source: &FileSource) {
    let count = stored.shape.first().copied().unwrap_or(1);
    let mut rows = Vec::new();
    for part in [0..count / 2, count / 2..count] {
        stored
            .read_rows_f32(source, part, &mut rows)
            .expect("rows of an array checked against its file read");
    }
    let mut whole = Vec::new();
    loaded
        .read_rows_f32(source, 0..count, &mut whole)
        .expect("a loaded float array reads");
    assert_eq!(
        rows.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
        whole.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
        "rows of an array of shape {:?}",
        stored.shape
    );
}

/// Reads the file as the stage does (positioned reads, arrays left in the file), and from
/// memory: both accept or both refuse it.
fn run_pickle(path: &Path) {
    let bytes = std::fs::read(path).expect("the input was just written");
    let file = std::fs::File::open(path).expect("the input was just written");
    let source = FileSource::new(file, bytes.len() as u64).expect("a small file");
    let from_file = pickle::read_from(&source);
    assert_eq!(from_file.is_ok(), pickle::read(&bytes).is_ok());
    if let Ok(value) = from_file {
        check_value(&value, &source, &mut HashSet::new(), 0);
        let _ = value.get("train").map(|t| t.get("id"));
    }
}

// ---------------------------------------------------------------- npz

const NPY_DESCRS: &[&str] = &[
    "'<f4'",
    "'<f8'",
    "'>f4'",
    "'>f8'",
    "'<f2'",
    "'|u1'",
    "'<i8'",
    "'<i4'",
    "'|b1'",
    "'<U8'",
    "'|O'",
    "'<c8'",
    "'|V4'",
    "'|S0'",
    "'<f16'",
    "'f4'",
    "''",
    "'<M8[s]'",
    "[('a', '<f4')]",
    "'\u{e9}'",
    "'<f4",
    "None",
    "3",
];
const NPY_SHAPES: &[&str] = &[
    "()",
    "(0,)",
    "(1,)",
    "(0, 0)",
    "(1, 0)",
    "(0, 35)",
    "(0, 2)",
    "(1, 2)",
    "(3, 2)",
    "(18446744073709551615,)",
    "(4294967296, 4294967296)",
    "(2147483648, 2)",
    "(-1, 2)",
    "(1, 2, 3)",
    "(1, 1, 1, 1, 1, 1, 1, 1)",
    "(99999999999999999999999,)",
    "(65536, 65536)",
    "(1152921504606846976, 16)",
    "(10, 47)",
    "(2,",
    "[3, 2]",
    "(3.5, 2)",
];
const NPZ_NAMES: &[&str] = &[
    "v/features.npy",
    "v/intervals.npy",
    "v.npy",
    "/features.npy",
    "features.npy",
    "v/features",
    "",
    "v/a/features.npy",
    "\u{e9}/features.npy",
    "../v.npy",
    "v/intervals",
];

/// Where an `.npy` member's header text is: (length field, its width, text start, text end).
fn npy_header(npy: &[u8]) -> Option<(usize, usize, usize, usize)> {
    if npy.len() < 10 || &npy[..6] != b"\x93NUMPY" {
        return None;
    }
    let width = if npy[6] == 1 { 2 } else { 4 };
    let start = 8 + width;
    let end = start + npy.get(start..)?.iter().position(|&b| b == b'\n')? + 1;
    Some((8, width, start, end))
}

/// Gives a member a new shape with exactly the data it needs (its own bytes, cut or padded
/// with ones), so the array loads and the shape itself is what is tested.
fn reshape_npy(npy: &mut Vec<u8>, shape: &[usize]) {
    let Some((len_at, width, start, end)) = npy_header(npy) else {
        return;
    };
    let header = String::from_utf8_lossy(&npy[start..end]).into_owned();
    let item = if header.contains("f8") { 8 } else { 4 };
    let shape_text = match shape {
        [n] => format!("({n},)"),
        _ => format!(
            "({})",
            shape
                .iter()
                .map(|d| d.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    let Some(k) = header.find("'shape': (") else {
        return;
    };
    let Some(close) = header[k..].find(')') else {
        return;
    };
    let mut header = format!(
        "{}'shape': {shape_text}{}",
        &header[..k],
        &header[k + close + 1..]
    );
    while (start + header.len()) % 64 != 0 {
        header.insert(header.len() - 1, ' ');
    }
    let mut data = npy[end..].to_vec();
    data.resize(shape.iter().product::<usize>() * item, 0x3f);
    let mut out = npy[..start].to_vec();
    out[len_at..len_at + width].copy_from_slice(&(header.len() as u32).to_le_bytes()[..width]);
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(&data);
    *npy = out;
}

/// A small frame count or width, 0 and 1 most often.
fn small_dim(rng: &mut ChaCha8Rng) -> usize {
    *[0, 1, 1, 2, 3, 5, 8, 47].choose(rng).unwrap()
}

/// Edits an `.npy` member's header dict (descr, shape, fortran_order) and, mostly, keeps
/// the header length field right.
fn edit_npy_header(rng: &mut ChaCha8Rng, npy: &mut Vec<u8>) {
    if npy.len() < 10 || &npy[..6] != b"\x93NUMPY" {
        return;
    }
    let (len_at, width) = if npy[6] == 1 { (8, 2) } else { (8, 4) };
    let start = len_at + width;
    let Some(end) = npy[start..]
        .iter()
        .position(|&b| b == b'\n')
        .map(|n| start + n + 1)
    else {
        return;
    };
    let mut header = String::from_utf8_lossy(&npy[start..end]).into_owned();
    let replace = |header: &mut String, key: &str, value: &str| {
        if let Some(k) = header.find(key) {
            let from = k + key.len();
            let to = header[from..]
                .find(if key.contains("shape") { ")" } else { "," })
                .map(|n| from + n + usize::from(key.contains("shape")))
                .unwrap_or(header.len());
            header.replace_range(from..to, value);
        }
    };
    match rng.random_range(0..4) {
        0 => replace(&mut header, "'descr': ", NPY_DESCRS.choose(rng).unwrap()),
        1 => {
            let shape = if rng.random_bool(0.7) {
                NPY_SHAPES.choose(rng).unwrap().to_string()
            } else {
                format!("({}, {})", rng.random_range(0..64), rng.random_range(0..64))
            };
            replace(&mut header, "'shape': ", &shape)
        }
        2 => replace(
            &mut header,
            "'fortran_order': ",
            ["True", "False", "1", "None"].choose(rng).unwrap(),
        ),
        _ => {
            let mut bytes = header.into_bytes();
            mutate::havoc_once(rng, &mut bytes, b"{'descr': '<f8', }", &[]);
            header = String::from_utf8_lossy(&bytes).into_owned();
        }
    }
    let header = header.into_bytes();
    let mut out = npy[..start].to_vec();
    if rng.random_bool(0.9) {
        let n = header.len() as u32;
        out[len_at..len_at + width].copy_from_slice(&n.to_le_bytes()[..width]);
    } else {
        mutate::put_interesting(rng, &mut out, len_at, width);
    }
    out.extend_from_slice(&header);
    out.extend_from_slice(&npy[end..]);
    *npy = out;
}

fn mutate_npz(rng: &mut ChaCha8Rng, seeds: &[Seed]) -> Vec<u8> {
    let (seed, other) = pick(rng, seeds);
    let members = mutate::unzip_stored(&seed.bytes);
    let Some(mut members) = members.filter(|_| rng.random_bool(0.8)) else {
        let mut data = seed.bytes.clone();
        havoc(
            rng,
            &mut data,
            &other.bytes,
            &number_positions(&seed.bytes[..seed.bytes.len().min(4096)]),
        );
        return data;
    };
    if members.len() > 4 && rng.random_bool(0.7) {
        // A window of a few whole videos keeps inputs small.
        let start = rng.random_range(0..members.len() / 2) * 2;
        let n = rng.random_range(1..=4).min(members.len() - start);
        members = members[start..start + n].to_vec();
    }
    for _ in 0..rounds(rng) {
        let i = rng.random_range(0..members.len().max(1));
        if members.is_empty() {
            break;
        }
        match rng.random_range(0..8) {
            0 | 1 => edit_npy_header(rng, &mut members[i].1),
            7 => {
                // A consistent small shape: features [t, d] (or [t]) with intervals [t, 2].
                let (t, d) = (small_dim(rng), small_dim(rng));
                let name = String::from_utf8_lossy(&members[i].0).into_owned();
                let shape = if rng.random_bool(0.2) {
                    vec![t]
                } else {
                    vec![t, d]
                };
                reshape_npy(&mut members[i].1, &shape);
                if let Some(video) = name.strip_suffix("/features.npy") {
                    let intervals = format!("{video}/intervals.npy").into_bytes();
                    if let Some(m) = members.iter_mut().find(|m| m.0 == intervals) {
                        reshape_npy(&mut m.1, &[t, 2]);
                    }
                }
            }
            2 => {
                let body = &mut members[i].1;
                let (s, e) = chunk(rng, body.len());
                if rng.random() {
                    body.truncate(s);
                } else {
                    body.drain(s..e);
                }
            }
            3 => {
                let body = &mut members[i].1;
                let numbers = number_positions(&body[..body.len().min(256)]);
                mutate::havoc_once(rng, body, &[], &numbers);
            }
            4 => {
                let name = NPZ_NAMES.choose(rng).unwrap();
                members[i].0 = name.replace('v', "video").into_bytes();
            }
            5 => {
                if rng.random() {
                    members.remove(i);
                } else {
                    let m = members[i].clone();
                    members.push(m);
                }
            }
            _ => {
                // Swap bodies of two members (features ↔ intervals).
                let j = rng.random_range(0..members.len());
                let body = members[j].1.clone();
                members[i].1 = body;
            }
        }
    }
    let mut data = mutate::zip_stored(&members);
    if rng.random_bool(0.15) {
        let numbers = number_positions(&data[data.len().saturating_sub(512)..]);
        let shift = data.len().saturating_sub(512);
        let numbers: Vec<_> = numbers.into_iter().map(|(a, w)| (a + shift, w)).collect();
        mutate::havoc_once(rng, &mut data, &other.bytes, &numbers);
    }
    data
}

fn run_npz(path: &Path) {
    let fps = TimingOptions {
        fps: Some(30.0),
        ..TimingOptions::default()
    };
    for timing in [TimingOptions::default(), fps] {
        if let Ok(npz) = NpzSource::open(path, &timing) {
            for video in npz.videos().iter().take(VIDEOS) {
                if let Ok(seq) = npz.read(video) {
                    check_sequence(video, &seq);
                }
            }
        }
    }
}

// ---------------------------------------------------------------- CSV

const CELLS: &[&str] = &[
    "",
    " ",
    "nan",
    "NaN",
    "inf",
    "-inf",
    "+inf",
    "1e308",
    "1e400",
    "-1e400",
    "-0",
    "0",
    "abc",
    "\"",
    "\"\"",
    "\"a,b\"",
    "1,5",
    "0x10",
    "9223372036854775808",
    "-9223372036854775809",
    "1_000",
    "\u{e9}",
    "\u{ff11}",
    "\u{0}",
    "true",
    "1.0.0",
    "2024-01-01",
    "1e-400",
    "4.9e-324",
    "\t",
    "\r",
    "null",
    "-",
    "1.5",
    "100000",
    "-3",
];
const HEADERS: &[&str] = &[
    "timestamp",
    " timestamp",
    "timestamp ",
    "",
    "frame",
    "video",
    "success",
    "\u{e9}",
    "f0",
    "f1",
    "\"timestamp\"",
    "\"a,b\"",
];

/// Inputs stop growing at [`MAX_INPUT`].
fn too_long(lines: &[String]) -> bool {
    lines.iter().map(|l| l.len() + 1).sum::<usize>() > MAX_INPUT
}

fn cells(line: &str) -> Vec<String> {
    line.split(',').map(str::to_string).collect()
}

fn mutate_csv(rng: &mut ChaCha8Rng, seeds: &[Seed]) -> Vec<u8> {
    let (seed, other) = pick(rng, seeds);
    let text = String::from_utf8_lossy(&seed.bytes);
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    if rng.random_bool(0.85) {
        lines.truncate(1 + rng.random_range(0..40));
    }
    let extra: Vec<String> = [
        "",
        ",,,,",
        "timestamp",
        "nan",
        "\"unterminated",
        "a,b",
        "1",
        "1, 0.5, 1, 1",
    ]
    .iter()
    .map(|s| s.to_string())
    .chain(
        other
            .bytes
            .split(|&b| b == b'\n')
            .take(3)
            .map(|l| String::from_utf8_lossy(l).into_owned()),
    )
    .collect();
    for _ in 0..rounds(rng) {
        if too_long(&lines) {
            break;
        }
        let n = lines.len();
        match rng.random_range(0..8) {
            0 | 1 => edit_lines(rng, &mut lines, &extra),
            2 | 3 if n > 0 => {
                // One cell.
                let i = rng.random_range(0..n);
                let mut row = cells(&lines[i]);
                let j = rng.random_range(0..row.len());
                row[j] = if i == 0 { HEADERS } else { CELLS }
                    .choose(rng)
                    .unwrap()
                    .to_string();
                lines[i] = row.join(",");
            }
            4 if n > 0 => {
                // One column, every row: set to one value, or delete.
                let width = cells(&lines[0]).len();
                let j = rng.random_range(0..width);
                let value = CELLS.choose(rng).unwrap();
                let delete = rng.random_bool(0.3);
                for (i, line) in lines.iter_mut().enumerate() {
                    let mut row = cells(line);
                    if j < row.len() {
                        if delete {
                            row.remove(j);
                        } else if i > 0 {
                            row[j] = value.to_string();
                        }
                    }
                    *line = row.join(",");
                }
            }
            5 if n > 0 => {
                // A header cell removed or duplicated (ragged rows, duplicate names).
                let mut row = cells(&lines[0]);
                let j = rng.random_range(0..row.len());
                if rng.random() {
                    row.remove(j);
                } else {
                    let c = row[j].clone();
                    row.insert(j, c);
                }
                lines[0] = row.join(",");
            }
            6 if n > 0 => {
                // Extra or missing cells in one row.
                let i = rng.random_range(0..n);
                let mut row = cells(&lines[i]);
                if rng.random() && row.len() > 1 {
                    row.truncate(rng.random_range(1..row.len()));
                } else {
                    row.extend((0..rng.random_range(1..5)).map(|_| "1".to_string()));
                }
                lines[i] = row.join(",");
            }
            _ => {
                let mut bytes = lines.join("\n").into_bytes();
                mutate::havoc_once(rng, &mut bytes, &other.bytes, &[]);
                lines = String::from_utf8_lossy(&bytes)
                    .lines()
                    .map(str::to_string)
                    .collect();
            }
        }
    }
    let mut out = lines.join("\n");
    if rng.random_bool(0.8) {
        out.push('\n');
    }
    out.into_bytes()
}

fn run_csv(path: &Path) {
    let directory = path.parent().expect("inputs are written into a directory");
    let timing = |fps: Option<f64>, video: Option<&str>, columns: Option<&[&str]>| TimingOptions {
        fps,
        timestamp_column: "timestamp".into(),
        columns: columns.map(|c| c.iter().map(|s| s.to_string()).collect()),
        exclude: vec!["frame".into()],
        video_column: video.map(str::to_string),
        text_column: None,
    };
    let runs: [(&Path, TimingOptions); 3] = [
        (directory, timing(None, None, None)),
        (directory, timing(Some(30.0), None, Some(&["f0", "f1"]))),
        (path, timing(Some(30.0), Some("success"), None)),
    ];
    for (at, timing) in runs {
        if let Ok(csv) = CsvSource::open(at, &timing) {
            for video in csv.videos().iter().take(VIDEOS) {
                if let Ok(seq) = csv.read(video) {
                    check_sequence(video, &seq);
                }
            }
        }
    }
}

// ---------------------------------------------------------------- config

/// Overrides travel in the input as trailing comments, so a reproducer is one TOML file:
/// `mmflow validate FILE --set …` with the same arguments.
pub const OVERRIDE_PREFIX: &str = "#mmflow-fuzz-set ";

const VALUES: &[&str] = &[
    "[]",
    "{}",
    "inf",
    "-inf",
    "nan",
    "+nan",
    "0",
    "-1",
    "1",
    "2",
    "9223372036854775807",
    "-9223372036854775808",
    "1e308",
    "1e-320",
    "\"\"",
    "\"x\"",
    "\"\u{e9}\u{1F600}\"",
    "true",
    "[[]]",
    "[1, \"a\"]",
    "{ a = 1 }",
    "0.0",
    "-0.0",
    "\"../x\"",
    "\"/\"",
    "18446744073709551615",
    "[1, 2, 3, 4, 5, 6, 7, 8, 9, 10]",
    "\"grid\"",
    "\"one_at_a_time\"",
    "\"cuda\"",
    "\"auto\"",
    "4294967296",
    "1979-05-27",
    "'''a'''",
    "[0.1, 0.2]",
    "{ path = \"x\" }",
    "\"kmeans\"",
    "\"csd\"",
    "\"mmsa_pickle\"",
    "\"synthetic\"",
    "0.5",
    "\"src\"",
    "[\"src\"]",
    "\"src.segments\"",
    "\"\\u0000\"",
];
const LINES: &[&str] = &[
    "[]",
    "[stages]",
    "[stages.x]",
    "[stages.x.params]",
    "[[stages]]",
    "[sweep]",
    "[sweep.vary]",
    "mode = \"grid\"",
    "seeds = []",
    "seeds = [1, 2, 3, 4, 5, 6, 7, 8]",
    "[pipeline]",
    "seed = -1",
    "a.b.c.d.e.f.g.h.i.j.k = 1",
    "\"\" = 1",
    "kind = \"x\"",
    "inputs = [\"nowhere\"]",
    "[stages.\u{e9}]",
    "x = \"\u{e9}\u{e9}\u{e9}\"",
    "[templates.t]",
    "[templates.t.stages.x]",
    "foreach = [\"a\", 1, 0.5, true]",
    "foreach = { a = { k = 1 }, b = 2 }",
    "matrix = { a = [1, 2], b = [\"x\", \"y\"] }",
    "x = \"${item}\"",
    "x = \"${item.a}-${key}\"",
    "x = \"${\"",
    "[stages.\"x@a\"]",
    "=",
    "[[",
];

/// Dotted key paths and value texts of the seeds (for overrides and value swaps).
fn toml_words(seeds: &[Seed]) -> (Vec<String>, Vec<String>) {
    fn walk(prefix: &str, table: &toml::Table, keys: &mut Vec<String>, values: &mut Vec<String>) {
        for (k, v) in table {
            let key = if prefix.is_empty() {
                k.clone()
            } else {
                format!("{prefix}.{k}")
            };
            keys.push(key.clone());
            match v {
                toml::Value::Table(t) => walk(&key, t, keys, values),
                other => values.push(other.to_string()),
            }
        }
    }
    let (mut keys, mut values) = (Vec::new(), Vec::new());
    for seed in seeds {
        if let Ok(table) = toml::from_str::<toml::Table>(&String::from_utf8_lossy(&seed.bytes)) {
            walk("", &table, &mut keys, &mut values);
        }
    }
    (keys, values)
}

fn random_value(rng: &mut ChaCha8Rng, values: &[String]) -> String {
    if rng.random_bool(0.6) || values.is_empty() {
        VALUES.choose(rng).unwrap().to_string()
    } else {
        values.choose(rng).unwrap().clone()
    }
}

fn mutate_config(rng: &mut ChaCha8Rng, seeds: &[Seed]) -> Vec<u8> {
    let (seed, other) = pick(rng, seeds);
    static WORDS: std::sync::OnceLock<(Vec<String>, Vec<String>)> = std::sync::OnceLock::new();
    let (keys, values) = WORDS.get_or_init(|| toml_words(seeds));
    let text = String::from_utf8_lossy(&seed.bytes);
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    let kv = |lines: &[String]| -> Vec<usize> {
        (0..lines.len())
            .filter(|&i| !lines[i].trim_start().starts_with('#') && lines[i].contains(" = "))
            .collect()
    };
    let extra: Vec<String> = LINES.iter().map(|s| s.to_string()).collect();
    for _ in 0..rounds(rng) {
        if too_long(&lines) {
            break;
        }
        let pairs = kv(&lines);
        match rng.random_range(0..10) {
            0 | 1 => edit_lines(rng, &mut lines, &extra),
            9 => {
                // Grow an inline array (many values: sweeps, seeds, lists of inputs), or
                // switch a sweep to the full grid.
                if rng.random_bool(0.3) {
                    for line in lines.iter_mut().filter(|l| l.starts_with("mode = ")) {
                        *line = "mode = \"grid\"".into();
                    }
                } else if let Some(&i) = pairs
                    .iter()
                    .copied()
                    .filter(|&i| lines[i].ends_with(']') && lines[i].contains(" = ["))
                    .collect::<Vec<usize>>()
                    .choose(rng)
                {
                    let (key, value) = lines[i].split_once(" = ").unwrap();
                    let inner = &value[1..value.len() - 1];
                    let times = (1usize << rng.random_range(1..15))
                        .min(MAX_INPUT / inner.len().max(1))
                        .max(1);
                    lines[i] = format!("{key} = [{}]", vec![inner; times].join(", "));
                }
            }
            2 | 3 => {
                if let Some(&i) = pairs.choose(rng) {
                    let key = lines[i].split(" = ").next().unwrap().to_string();
                    lines[i] = format!("{key} = {}", random_value(rng, values));
                }
            }
            4 => {
                if let (Some(&i), Some(&j)) = (pairs.choose(rng), pairs.choose(rng)) {
                    let vi = lines[i].split_once(" = ").unwrap().1.to_string();
                    let vj = lines[j].split_once(" = ").unwrap().1.to_string();
                    let ki = lines[i].split_once(" = ").unwrap().0.to_string();
                    let kj = lines[j].split_once(" = ").unwrap().0.to_string();
                    lines[i] = format!("{ki} = {vj}");
                    lines[j] = format!("{kj} = {vi}");
                }
            }
            5 => {
                // Rename a key: another key's last segment, a typo, or a deep dotted key.
                if let Some(&i) = pairs.choose(rng) {
                    let value = lines[i].split_once(" = ").unwrap().1.to_string();
                    let key = match rng.random_range(0..3) {
                        0 => keys
                            .choose(rng)
                            .and_then(|k| k.rsplit('.').next())
                            .unwrap_or("x")
                            .to_string(),
                        1 => {
                            let mut k = lines[i].split(" = ").next().unwrap().trim().to_string();
                            if !k.is_empty() {
                                let at = rng.random_range(0..k.len());
                                if k.is_char_boundary(at) && k.is_char_boundary(at + 1) {
                                    k.remove(at);
                                }
                            }
                            k
                        }
                        _ => vec!["a"; rng.random_range(2..200)].join("."),
                    };
                    lines[i] = format!("{key} = {value}");
                }
            }
            6 => {
                // Non-ASCII text where positions are computed (line:column of problems).
                if !lines.is_empty() {
                    let i = rng.random_range(0..lines.len());
                    let at = rng.random_range(0..=lines[i].len());
                    if lines[i].is_char_boundary(at) {
                        let s = ["\u{e9}", "\u{65e5}\u{672c}", "\u{1F600}", "\t", "\r"]
                            .choose(rng)
                            .unwrap();
                        lines[i].insert_str(at, s);
                    }
                }
            }
            7 => {
                // Splice: our first lines, the other seed's last ones.
                let theirs: Vec<String> = String::from_utf8_lossy(&other.bytes)
                    .lines()
                    .map(str::to_string)
                    .collect();
                if !theirs.is_empty() && !lines.is_empty() {
                    lines.truncate(rng.random_range(0..lines.len()));
                    let from = rng.random_range(0..theirs.len());
                    lines.extend_from_slice(&theirs[from..]);
                }
            }
            _ => {
                let mut bytes = lines.join("\n").into_bytes();
                mutate::havoc_once(rng, &mut bytes, &other.bytes, &[]);
                lines = String::from_utf8_lossy(&bytes)
                    .lines()
                    .map(str::to_string)
                    .collect();
            }
        }
    }
    let mut out = lines.join("\n");
    out.push('\n');
    for _ in 0..rng.random_range(0..4usize).saturating_sub(1) {
        let set = match rng.random_range(0..4) {
            0 => [
                "=",
                "a..b=1",
                "stages=1",
                ".=1",
                "a.=1",
                "=1",
                "stages.x.params=[]",
                "pipeline=\u{e9}",
            ]
            .choose(rng)
            .unwrap()
            .to_string(),
            1 => format!("{}=1", vec!["a"; rng.random_range(2..300)].join(".")),
            _ => format!(
                "{}={}",
                keys.choose(rng)
                    .map(String::as_str)
                    .unwrap_or("pipeline.seed"),
                random_value(rng, values)
            ),
        };
        out.push_str(&format!("{OVERRIDE_PREFIX}{}\n", set.replace('\n', " ")));
    }
    out.into_bytes()
}

fn run_config(path: &Path) {
    let text = std::fs::read(path).expect("the input was just written");
    let overrides: Vec<String> = String::from_utf8_lossy(&text)
        .lines()
        .filter_map(|l| l.strip_prefix(OVERRIDE_PREFIX))
        .map(str::to_string)
        .collect();
    let registry = mmflow_stages::registry();
    let shown = |problems: mmflow_pipeline::Problems| {
        for p in &problems.shown {
            let _ = p.to_string();
        }
        let _ = problems.to_string();
    };
    match mmflow_pipeline::load(path, &overrides, &registry) {
        Err(problems) => shown(problems),
        Ok(pipeline) => {
            let Some(section) = pipeline.sweep else {
                return;
            };
            if !mmflow_pipeline::sweep::check(&section).is_empty() {
                return;
            }
            // As `mmflow sweep` does: every point is loaded before anything runs.
            for point in mmflow_pipeline::sweep::points(&section).iter().take(4) {
                let _ = mmflow_pipeline::sweep::run_dir_name(point, 1);
                let mut set = overrides.clone();
                set.extend(point.overrides.iter().cloned());
                set.push("pipeline.seed=1".into());
                if let Err(problems) = mmflow_pipeline::load(path, &set, &registry) {
                    shown(problems);
                }
            }
        }
    }
}

/// The seed files of a target (see [`seed_paths`]), read.
pub fn seed_files(target: &Target, root: &Path) -> Vec<Vec<u8>> {
    seed_paths(target, root)
        .into_iter()
        .map(|path| std::fs::read(&path).unwrap())
        .collect()
}

// ---------------------------------------------------------------- template

/// What may stand inside a template string: names the items give or not, a literal `$${`, an
/// unterminated `${`.
const TEMPLATE_NAMES: &[&str] = &[
    "${item}",
    "${key}",
    "${item.k}",
    "${item.next}",
    "${item.method}",
    "${item.}",
    "${}",
    "${itme}",
    "${item.k",
    "$${item}",
    "$$${key}",
    "${ item }",
    "${item.\u{e9}}",
    "${${item}}",
    "${key}${key}${item.k}",
];

/// Values an item (or a matrix variable's value) may be, good and bad.
const ITEM_VALUES: &[&str] = &[
    "\"a\"",
    "\"kmeans\"",
    "\"x-y\"",
    "\"a b\"",
    "\"\"",
    "\"\u{e9}\"",
    "1",
    "-3",
    "0.5",
    "16.0",
    "1e300",
    "true",
    "[1]",
    "{ k = 1 }",
    "{ k = 1, method = \"cosine\" }",
    "{ next = \"n@a.text\" }",
    "{ \"k.k\" = 1 }",
    "1979-05-27",
];

/// Lines a template pipeline may gain.
const TEMPLATE_LINES: &[&str] = &[
    "[templates.t]",
    "[templates.u]",
    "[templates.t.stages.n]",
    "[templates.t.stages.m]",
    "[templates.\"a b\".stages.n]",
    "[stages.\"n@a\"]",
    "foreach = []",
    "foreach = {}",
    "foreach = \"a\"",
    "matrix = {}",
    "matrix = { k = [] }",
    "matrix = { k = [1, 2], method = [\"a\", \"b\"] }",
    "matrix = { k = [1, 2], k2 = [1, 2], k3 = [1, 2], k4 = [1, 2] }",
    "foreach = { a = { k = 1 }, b = { method = \"x\" } }",
    "kind = \"normalize\"",
    "kind = \"${item}\"",
    "inputs = { segments = \"mosi.segments\", features = [\"n.text\"] }",
    "inputs = { segments = \"mosi.segments\", features = [\"m.text\"] }",
    "inputs = { segments = \"mosi.segments\", features = [\"n@${key}.text\"] }",
    "inputs = { segments = \"${item}.segments\", features = [\"${item.next}\"] }",
    "description = \"${key} of ${item}\"",
    "params = { clip = \"${item.k}\" }",
    "seed = \"${item.k}\"",
    "stages = 1",
    "templates = []",
];

/// A template pipeline made up from scratch: a source, one template over a list, a table of
/// plain or named items or a matrix, whose stages read the source, a sibling, or another
/// instance (a chain, or a ring when the last reads the first).
fn generated_template(rng: &mut ChaCha8Rng) -> String {
    // Mostly a few items; now and then thousands (up to the cap and past it).
    let n = match rng.random_range(0..1000) {
        0 => rng.random_range(9_990..10_010),
        1..=4 => rng.random_range(100..3_000),
        _ => rng.random_range(1..12),
    };
    let value = |rng: &mut ChaCha8Rng, k: usize| -> String {
        if rng.random_bool(0.05) {
            ITEM_VALUES.choose(rng).unwrap().to_string()
        } else {
            format!("\"v{k}\"")
        }
    };
    let closed = rng.random_bool(0.5);
    let next = |k: usize| match (k + 1 < n, closed) {
        (true, _) => format!("n@i{}.text", k + 1),
        (false, true) => "n@i0.text".to_string(),
        (false, false) => "mosi.text".to_string(),
    };
    let items = match rng.random_range(0..4) {
        0 => format!(
            "foreach = [{}]",
            (0..n).map(|k| value(rng, k)).collect::<Vec<_>>().join(", ")
        ),
        1 => format!(
            "foreach = {{ {} }}",
            (0..n)
                .map(|k| format!("i{k} = {}", value(rng, k)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        2 => format!(
            "foreach = {{ {} }}",
            (0..n)
                .map(|k| format!("i{k} = {{ next = \"{}\", k = {k} }}", next(k)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        _ => {
            let side = (n as f64).sqrt().ceil() as usize;
            let column = |rng: &mut ChaCha8Rng| {
                (0..side)
                    .map(|k| value(rng, k))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            let (k, method) = (column(rng), column(rng));
            format!("matrix = {{ method = [{method}], k = [{k}] }}")
        }
    };
    let reads = [
        "mosi.text",
        "${item.next}",
        "n.text",
        "m.text",
        "n@${key}.text",
        "${item}.text",
    ];
    let mut text = format!(
        "[stages.mosi]\nkind = \"synthetic\"\nparams = {{ profile = \"mosi\", scale = 0.1 }}\n[templates.t]\n{items}\n"
    );
    for stage in ["n", "m"].iter().take(rng.random_range(1..3)) {
        text.push_str(&format!(
            "[templates.t.stages.{stage}]\nkind = \"normalize\"\ninputs = {{ segments = \"mosi.segments\", features = [\"{}\"] }}\ndescription = \"{} {}\"\n",
            reads.choose(rng).unwrap(),
            TEMPLATE_NAMES.choose(rng).unwrap(),
            TEMPLATE_NAMES.choose(rng).unwrap(),
        ));
    }
    text
}

/// The seeds that hold templates (all of them, when none does).
fn templated(seeds: &[Seed]) -> Vec<&Seed> {
    let with: Vec<&Seed> = seeds
        .iter()
        .filter(|s| s.bytes.windows(11).any(|w| w == b"[templates."))
        .collect();
    if with.is_empty() {
        seeds.iter().collect()
    } else {
        with
    }
}

/// Replaces one `${…}` of `line` (or, when it has none, appends one inside its first string).
fn swap_name(rng: &mut ChaCha8Rng, line: &mut String) {
    let name = TEMPLATE_NAMES.choose(rng).unwrap();
    if let Some(at) = line.find("${") {
        let end = line[at..].find('}').map_or(line.len(), |e| at + e + 1);
        line.replace_range(at..end, name);
    } else if let Some(at) = line.find('"') {
        line.insert_str(at + 1, name);
    }
}

/// Adds a value to the first list of `line` (a `foreach` list or a matrix variable).
fn add_item(rng: &mut ChaCha8Rng, line: &mut String) {
    if let Some(at) = line.find('[') {
        let value = ITEM_VALUES.choose(rng).unwrap();
        let closes = line[at + 1..].trim_start().starts_with(']');
        let sep = if closes { "" } else { ", " };
        line.insert_str(at + 1, &format!("{value}{sep}"));
    }
}

fn mutate_template(rng: &mut ChaCha8Rng, seeds: &[Seed]) -> Vec<u8> {
    let text = if rng.random_bool(0.5) {
        generated_template(rng)
    } else {
        String::from_utf8_lossy(&templated(seeds).choose(rng).unwrap().bytes).into_owned()
    };
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    let extra: Vec<String> = TEMPLATE_LINES.iter().map(|s| s.to_string()).collect();
    for _ in 0..rounds(rng) {
        if too_long(&lines) || lines.is_empty() {
            break;
        }
        let i = rng.random_range(0..lines.len());
        match rng.random_range(0..8) {
            0 | 1 => swap_name(rng, &mut lines[i]),
            2 => {
                if let Some(j) = (0..lines.len()).find(|&j| {
                    lines[j].starts_with("foreach = [") || lines[j].starts_with("matrix = {")
                }) {
                    add_item(rng, &mut lines[j]);
                }
            }
            3 | 4 => edit_lines(rng, &mut lines, &extra),
            5 => {
                // A value replaced by an item-like one (a reference, a name, a table).
                if let Some((key, _)) = lines[i].split_once(" = ") {
                    lines[i] = format!("{key} = {}", ITEM_VALUES.choose(rng).unwrap());
                }
            }
            6 => {
                // An input read from another instance, a sibling or itself.
                lines[i] = lines[i]
                    .replace("mosi.text", "n@i0.text")
                    .replace("n.text", "m.text");
            }
            _ => {
                let mut bytes = lines.join("\n").into_bytes();
                mutate::havoc_once(rng, &mut bytes, &[], &[]);
                lines = String::from_utf8_lossy(&bytes)
                    .lines()
                    .map(str::to_string)
                    .collect();
            }
        }
    }
    let mut out = lines.join("\n");
    out.push('\n');
    // Overrides of the templates (applied before expansion) and of instances (after).
    for _ in 0..rng.random_range(0..4usize).saturating_sub(1) {
        let set = match rng.random_range(0..5) {
            0 => format!(
                "templates.t.matrix.z=[{}]",
                ITEM_VALUES.choose(rng).unwrap()
            ),
            1 => format!("templates.t.foreach=[{}]", ITEM_VALUES.choose(rng).unwrap()),
            2 => format!(
                "templates.t.stages.n.description=\"{}\"",
                TEMPLATE_NAMES.choose(rng).unwrap()
            ),
            3 => "stages.n@i0.seed=1".to_string(),
            _ => "stages.n@v0.inputs.features=[\"n@v1.text\"]".to_string(),
        };
        out.push_str(&format!("{OVERRIDE_PREFIX}{set}\n"));
    }
    out.into_bytes()
}

/// Where seeds are looked for (recursively), relative to the repository; folders that do
/// not exist are skipped. `MMFLOW_FUZZ_CORPUS` adds more (separated by `:`).
const SEED_ROOTS: &[&str] = &["configs", "tests/data", "tests/fuzz/seeds"];

/// The seed files of a target, sorted (the corpus order is part of what makes an iteration
/// reproducible from its seed and number).
pub fn seed_paths(target: &Target, root: &Path) -> Vec<PathBuf> {
    let mut folders: Vec<PathBuf> = SEED_ROOTS.iter().map(|f| root.join(f)).collect();
    if let Ok(extra) = std::env::var("MMFLOW_FUZZ_CORPUS") {
        folders.extend(
            extra
                .split(':')
                .filter(|s| !s.is_empty())
                .map(PathBuf::from),
        );
    }
    let mut out = Vec::new();
    while let Some(folder) = folders.pop() {
        let Ok(entries) = std::fs::read_dir(&folder) else {
            continue;
        };
        for path in entries.flatten().map(|e| e.path()) {
            let Ok(meta) = std::fs::metadata(&path) else {
                continue;
            };
            if meta.is_dir() {
                folders.push(path);
            } else if meta.len() as usize <= target.max_seed
                && path.extension().is_some_and(|e| e == target.ext)
            {
                out.push(path);
            }
        }
    }
    out.sort_by(|a, b| a.file_name().cmp(&b.file_name()).then(a.cmp(b)));
    out.dedup();
    out
}
