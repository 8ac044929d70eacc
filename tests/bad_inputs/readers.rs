//! Bad inputs: the file readers (MMSA pickles, `.csd`, `.npz`) and paths that are not
//! regular files. Every bad file is built here: a minimal valid one, then corrupted.

use std::path::Path;

use super::{check, data, mkfifo, pipeline, write_bytes, Case};
use crate::util::Dir;

// ----------------------------------------------------------------------------------------
// Pickles

/// A pickle under construction (protocol 4 opcodes, no framing).
struct Pickle(Vec<u8>);

impl Pickle {
    fn new() -> Pickle {
        Pickle(vec![0x80, 4])
    }

    fn op(mut self, bytes: &[u8]) -> Pickle {
        self.0.extend_from_slice(bytes);
        self
    }

    fn mark(self) -> Pickle {
        self.op(b"(")
    }

    fn str(self, s: &str) -> Pickle {
        let len = (s.len() as u32).to_le_bytes();
        self.op(b"X").op(&len).op(s.as_bytes())
    }

    fn int(self, i: i64) -> Pickle {
        match i32::try_from(i) {
            Ok(small) => self.op(b"J").op(&small.to_le_bytes()),
            Err(_) => self.op(&[0x8a, 8]).op(&i.to_le_bytes()),
        }
    }

    fn bytes(self, b: &[u8]) -> Pickle {
        let len = (b.len() as u32).to_le_bytes();
        self.op(b"B").op(&len).op(b)
    }

    fn global(self, module: &str, name: &str) -> Pickle {
        self.op(b"c")
            .op(module.as_bytes())
            .op(b"\n")
            .op(name.as_bytes())
            .op(b"\n")
    }

    fn memoize(self) -> Pickle {
        self.op(&[0x94])
    }

    fn get(self, index: u8) -> Pickle {
        self.op(&[b'h', index])
    }

    /// A numpy array as protocol 5 stores it: `_frombuffer(bytes, dtype(descr), shape, "C")`.
    fn array(self, descr: &str, shape: &[i64], data: &[u8]) -> Pickle {
        self.array_in(descr, shape, data, "C")
    }

    /// An array whose `data` is in `order` (`"C"` or `"F"`).
    fn array_in(self, descr: &str, shape: &[i64], data: &[u8], order: &str) -> Pickle {
        let mut p = self
            .global("numpy._core.numeric", "_frombuffer")
            .mark()
            .bytes(data)
            .global("numpy", "dtype")
            .mark()
            .str(descr)
            .op(&[0x89, 0x88])
            .op(b"tR")
            .mark();
        for &d in shape {
            p = p.int(d);
        }
        p.op(b"t").str(order).op(b"tR")
    }

    fn stop(self) -> Vec<u8> {
        self.op(b".").0
    }
}

fn f32_bytes_of(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn f32_bytes(n: usize) -> Vec<u8> {
    (0..n)
        .flat_map(|i| (i as f32 * 0.25).to_le_bytes())
        .collect()
}

/// `{'train': {'id': [2 ids], 'audio': <audio>, 'regression_labels': <labels>}}`.
fn mmsa_pickle(audio: fn(Pickle) -> Pickle, labels: fn(Pickle) -> Pickle) -> Vec<u8> {
    let p = Pickle::new()
        .op(b"}")
        .str("train")
        .op(b"}")
        .mark()
        .str("id")
        .mark()
        .str("v$_$0")
        .str("v$_$1")
        .op(b"l")
        .str("audio");
    let p = audio(p).str("regression_labels");
    labels(p).op(b"us").stop()
}

fn good_audio(p: Pickle) -> Pickle {
    p.array("<f4", &[2, 3, 4], &f32_bytes(24))
}

fn good_labels(p: Pickle) -> Pickle {
    p.array("<f4", &[2], &f32_bytes(2))
}

/// `{'train': {'id': ['v$_$0', 'v$_$1'], …}}`, the split's other keys added by `rest`.
fn split_pickle(rest: impl FnOnce(Pickle) -> Pickle) -> Vec<u8> {
    let p = Pickle::new().op(b"}").str("train").op(b"}").mark();
    rest(two_ids(p)).op(b"us").stop()
}

/// The key `id` with two MMSA ids.
fn two_ids(p: Pickle) -> Pickle {
    texts(p.str("id"), &["v$_$0", "v$_$1"])
}

/// A list of strings.
fn texts(p: Pickle, items: &[&str]) -> Pickle {
    items.iter().fold(p.mark(), |p, s| p.str(s)).op(b"l")
}

fn f64_bytes(values: &[f64]) -> Vec<u8> {
    values.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn i64_bytes(values: &[i64]) -> Vec<u8> {
    values.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// Fixed-width `S` items of `width` bytes (NUL-padded, as numpy stores them).
fn s_items(items: &[&[u8]], width: usize) -> Vec<u8> {
    items
        .iter()
        .flat_map(|item| {
            let mut padded = item.to_vec();
            padded.resize(width, 0);
            padded
        })
        .collect()
}

/// A split `train` with good audio `[2, 3, 4]` and labels, ids written by `ids` (after the
/// key `id`) and more keys by `rest`, read with `audio` as the one modality.
fn audio_case(d: &Dir, ids: impl FnOnce(Pickle) -> Pickle, rest: impl FnOnce(Pickle) -> Pickle) {
    let p = Pickle::new().op(b"}").str("train").op(b"}").mark();
    let p = ids(p.str("id"));
    let p = good_labels(good_audio(p.str("audio")).str("regression_labels"));
    layout_case(
        d,
        &rest(p).op(b"us").stop(),
        "modalities = { audio = \"audio\" }",
    )
}

/// The two ids `v$_$0`, `v$_$1` (segments `v[0]`, `v[1]`) as a list.
fn good_ids(p: Pickle) -> Pickle {
    texts(p, &["v$_$0", "v$_$1"])
}

/// [`audio_case`] with good ids and `audio_lengths` written by `lengths`.
fn lengths_case(d: &Dir, lengths: impl FnOnce(Pickle) -> Pickle) {
    audio_case(d, good_ids, |p| lengths(p.str("audio_lengths")))
}

/// An MMSA split whose `regression_labels` are written by `labels`.
fn labels_case(d: &Dir, labels: impl FnOnce(Pickle) -> Pickle) {
    let bytes = split_pickle(|p| labels(good_audio(p.str("audio")).str("regression_labels")));
    layout_case(d, &bytes, "modalities = { audio = \"audio\" }")
}

/// Writes `bytes` as `x.pkl` and a pipeline reading it with the layout's defaults and
/// `params` (TOML key/values).
fn layout_case(d: &Dir, bytes: &[u8], params: &str) {
    write_bytes(d, "x.pkl", bytes);
    pipeline(
        d,
        &format!(
            "[stages.m]\nkind = \"mmsa_pickle\"\nparams = {{ path = {:?}, {params} }}\n",
            d.join("x.pkl")
        ),
    );
}

/// Writes `bytes` as `x.pkl` and a pipeline reading it.
fn pickle_case(d: &Dir, bytes: &[u8]) {
    write_bytes(d, "x.pkl", bytes);
    pickle_pipeline(d, &d.join("x.pkl"));
}

fn pickle_pipeline(d: &Dir, file: &Path) {
    pipeline(
        d,
        &format!(
            "[stages.m]\nkind = \"mmsa_pickle\"\nparams = {{ path = {file:?}, dataset = \"mosi\", modalities = {{ audio = \"audio\" }}, labels = {{ sentiment = \"regression_labels\" }} }}\n",
        ),
    );
}

/// A list that holds the previous list twice, 30 times over: 2^30 items once expanded.
fn memo_bomb() -> Vec<u8> {
    let p = Pickle::new().op(b"}").str("train").op(b"}").str("id");
    let mut bomb = p.op(b"]").memoize().op(b"0");
    for i in 0..30u8 {
        bomb = bomb.mark().get(i).get(i).op(b"l").memoize();
        if i < 29 {
            bomb = bomb.op(b"0");
        }
    }
    bomb.op(b"ss").stop()
}

// ----------------------------------------------------------------------------------------
// .npz

/// A `.npy` file: version 1 header (padded to 64 bytes, as numpy does) and data.
fn npy(descr: &str, shape: &str, data: &[u8]) -> Vec<u8> {
    let mut dict = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}");
    while (10 + dict.len() + 1) % 64 != 0 {
        dict.push(' ');
    }
    dict.push('\n');
    let mut out = b"\x93NUMPY\x01\x00".to_vec();
    out.extend_from_slice(&(dict.len() as u16).to_le_bytes());
    out.extend_from_slice(dict.as_bytes());
    out.extend_from_slice(data);
    out
}

fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in bytes {
        crc ^= u32::from(b);
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

/// A zip of stored (uncompressed) members, as `np.savez` writes them.
fn zip(members: &[(&str, Vec<u8>)]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut central = Vec::new();
    for (name, data) in members {
        let offset = out.len() as u32;
        let crc = crc32(data);
        let fields = |central: bool| {
            let mut h = Vec::new();
            if central {
                h.extend_from_slice(&[0x50, 0x4b, 1, 2, 20, 0]);
            } else {
                h.extend_from_slice(&[0x50, 0x4b, 3, 4]);
            }
            h.extend_from_slice(&[20, 0, 0, 0, 0, 0, 0, 0, 0x21, 0]);
            h.extend_from_slice(&crc.to_le_bytes());
            h.extend_from_slice(&(data.len() as u32).to_le_bytes());
            h.extend_from_slice(&(data.len() as u32).to_le_bytes());
            h.extend_from_slice(&(name.len() as u16).to_le_bytes());
            h.extend_from_slice(&[0, 0]);
            if central {
                h.extend_from_slice(&[0; 6]);
                h.extend_from_slice(&[0, 0, 0xa4, 0x81]);
                h.extend_from_slice(&offset.to_le_bytes());
            }
            h.extend_from_slice(name.as_bytes());
            h
        };
        out.extend_from_slice(&fields(false));
        out.extend_from_slice(data);
        central.extend_from_slice(&fields(true));
    }
    let start = out.len() as u32;
    out.extend_from_slice(&central);
    out.extend_from_slice(&[0x50, 0x4b, 5, 6, 0, 0, 0, 0]);
    let n = (members.len() as u16).to_le_bytes();
    out.extend_from_slice(&n);
    out.extend_from_slice(&n);
    out.extend_from_slice(&(central.len() as u32).to_le_bytes());
    out.extend_from_slice(&start.to_le_bytes());
    out.extend_from_slice(&[0, 0]);
    out
}

/// Intervals for 3 frames, as float64.
fn intervals_3() -> Vec<u8> {
    [0.0f64, 0.5, 0.5, 1.0, 1.0, 1.5]
        .iter()
        .flat_map(|x| x.to_le_bytes())
        .collect()
}

/// An `.npz` with video `v`: `features` as given, and 3 intervals.
fn npz_with_features(features: Vec<u8>) -> Vec<u8> {
    zip(&[
        ("v/features.npy", features),
        ("v/intervals.npy", npy("<f8", "(3, 2)", &intervals_3())),
    ])
}

/// Writes `bytes` as `x.npz` and a pipeline reading it.
fn npz_case(d: &Dir, bytes: &[u8]) {
    write_bytes(d, "x.npz", bytes);
    aligned_pipeline(d, "npz", "x.npz");
}

/// A `csd`/`npz` stage reading `file` as its one modality (labels: a small real `.csd`).
fn aligned_pipeline(d: &Dir, kind: &str, file: &str) {
    pipeline(
        d,
        &format!(
            "[stages.src]\nkind = \"{kind}\"\n[stages.src.params]\ndataset = \"mosi\"\nrequire_all_modalities = false\nlabels = {{ path = {:?}, format = \"csd\" }}\n[stages.src.params.modalities]\nwords = {{ path = {:?} }}\n",
            data().join("bad/length_mismatch.csd"),
            d.join(file)
        ),
    );
}

// ----------------------------------------------------------------------------------------
// .csd (HDF5): a small real file from h5py, its dataspace patched.

/// The video of `bad/length_mismatch.csd`, whose features are [5, 74] float32.
const CSD_VIDEO: &str = "2iD-tVS8NPw";

/// `bad/length_mismatch.csd` with its features' dimensions (and maximum dimensions)
/// [5, 74] replaced by `dims`, and the dataspace rank byte set to `rank` (with no maximum
/// dimensions when the rank changes).
fn patched_csd(dims: [u64; 2], rank: u8) -> Vec<u8> {
    let mut bytes = std::fs::read(data().join("bad/length_mismatch.csd")).unwrap();
    let from: Vec<u8> = [5u64, 74].iter().flat_map(|d| d.to_le_bytes()).collect();
    let to: Vec<u8> = dims.iter().flat_map(|d| d.to_le_bytes()).collect();
    let at = bytes
        .windows(16)
        .position(|w| w == from.as_slice())
        .expect("the features dataspace of length_mismatch.csd");
    // Dataspace message v1: version, rank, flags, 5 reserved bytes, dims, max dims.
    assert_eq!(
        &bytes[at - 8..at - 5],
        &[1, 2, 1],
        "a v1 dataspace of rank 2"
    );
    if rank != 2 {
        bytes[at - 7] = rank;
        bytes[at - 6] = 0;
    }
    for i in [at, at + 16] {
        if bytes[i..i + 16] == from[..] {
            bytes[i..i + 16].copy_from_slice(&to);
        }
    }
    bytes
}

fn csd_case(d: &Dir, bytes: &[u8]) {
    write_bytes(d, "x.csd", bytes);
    aligned_pipeline(d, "csd", "x.csd");
}

const RUN: &[&str] = &["run", "p.toml"];

/// What every `run` writes before its stages run: the run directory's lock file and the
/// resolved pipeline (no stage output).
const RUN_LOCK: &[&str] = &["data/runs/p/.mmflow-run.lock", "data/runs/p/pipeline.toml"];

const CASES: &[Case] = &[
    // Pickles.
    Case {
        what: "pickle memo bomb: a list holding the previous one twice, 30 times over",
        setup: |d| pickle_case(d, &memo_bomb()),
        args: RUN,
        code: 1,
        says: &["x.pkl", "memo bomb"],
        may_write: RUN_LOCK,
    },
    Case {
        what: "pickle list that contains itself",
        setup: |d| {
            let p = Pickle::new().op(b"}").str("train").op(b"}").str("id");
            let p = p.op(b"]").memoize().get(0).op(b"a").op(b"ss");
            pickle_case(d, &p.stop())
        },
        args: RUN,
        code: 1,
        says: &["x.pkl", "cyclic"],
        may_write: RUN_LOCK,
    },
    Case {
        what: "pickle strings repeated through the memo past the budget",
        setup: |d| {
            let mut p = Pickle::new().op(b"}").str("train").op(b"}").str("id");
            p = p.str(&"x".repeat(64 << 10)).memoize().op(b"0").mark();
            for _ in 0..1200 {
                p = p.get(0);
            }
            pickle_case(d, &p.op(b"lss").stop())
        },
        args: RUN,
        code: 1,
        says: &["x.pkl", "bytes of strings"],
        may_write: RUN_LOCK,
    },
    Case {
        what: "pickle decodes the same bytes into arrays over and over",
        setup: |d| {
            let mut p = Pickle::new()
                .op(b"}")
                .str("train")
                .op(b"}")
                .str("id")
                .mark();
            p = p.bytes(&vec![0u8; 256 << 10]).memoize().op(b"0");
            for _ in 0..8 {
                p = p
                    .global("numpy._core.numeric", "_frombuffer")
                    .mark()
                    .get(0)
                    .global("numpy", "dtype")
                    .mark()
                    .str("f4")
                    .op(b"tR")
                    .mark()
                    .int(64 << 10)
                    .op(b"t")
                    .str("C")
                    .op(b"tR");
            }
            pickle_case(d, &p.op(b"lss").stop())
        },
        args: RUN,
        code: 1,
        says: &["x.pkl", "bytes decoded into arrays"],
        may_write: RUN_LOCK,
    },
    Case {
        what: "pickle BINBYTES8 declaring 2^62 bytes",
        setup: |d| {
            let p = Pickle::new()
                .op(&[0x8e])
                .op(&(1u64 << 62).to_le_bytes())
                .op(b"abc");
            pickle_case(d, &p.stop())
        },
        args: RUN,
        code: 1,
        says: &[
            "x.pkl",
            "4611686018427387904 bytes runs past the end of the file",
        ],
        may_write: RUN_LOCK,
    },
    Case {
        what: "pickle FRAME declaring 2^40 bytes",
        setup: |d| {
            let p = Pickle::new()
                .op(&[0x95])
                .op(&(1u64 << 40).to_le_bytes())
                .op(b"N");
            pickle_case(d, &p.stop())
        },
        args: RUN,
        code: 1,
        says: &["x.pkl", "1099511627776 bytes runs past the end"],
        may_write: RUN_LOCK,
    },
    Case {
        what: "pickle cut in half",
        setup: |d| {
            let bytes = mmsa_pickle(good_audio, good_labels);
            pickle_case(d, &bytes[..bytes.len() / 2])
        },
        args: RUN,
        code: 1,
        says: &["x.pkl", "truncated"],
        may_write: RUN_LOCK,
    },
    Case {
        what: "pickle whose __reduce__ would run os.system",
        setup: |d| pickle_pipeline(d, &data().join("pickle/evil.pkl")),
        args: RUN,
        code: 1,
        says: &["evil.pkl"],
        may_write: RUN_LOCK,
    },
    Case {
        what: "pickle naming a global outside the whitelist",
        setup: |d| pickle_case(d, &Pickle::new().global("builtins", "eval").stop()),
        args: RUN,
        code: 1,
        says: &["x.pkl", "refusing global `builtins.eval`"],
        may_write: RUN_LOCK,
    },
    Case {
        what: "pickle with an unknown opcode",
        setup: |d| pickle_case(d, &Pickle::new().op(&[0xff]).stop()),
        args: RUN,
        code: 1,
        says: &["x.pkl", "unknown opcode 0xff"],
        may_write: RUN_LOCK,
    },
    Case {
        what: "pickle array with a non-ASCII dtype string",
        setup: |d| {
            pickle_case(
                d,
                &mmsa_pickle(|p| p.array("fé4", &[2, 3, 4], &f32_bytes(24)), good_labels),
            )
        },
        args: RUN,
        code: 1,
        says: &["x.pkl", "unsupported numpy dtype \"fé4\""],
        may_write: RUN_LOCK,
    },
    Case {
        what: "pickle array with a dtype string of a huge item size",
        setup: |d| {
            pickle_case(
                d,
                &mmsa_pickle(|p| p.array("U99999999999999999999", &[2], b""), good_labels),
            )
        },
        args: RUN,
        code: 1,
        says: &["x.pkl", "unsupported numpy dtype"],
        may_write: RUN_LOCK,
    },
    Case {
        what: "pickle array with a negative dimension",
        setup: |d| {
            pickle_case(
                d,
                &mmsa_pickle(|p| p.array("<f4", &[2, -3, 4], b""), good_labels),
            )
        },
        args: RUN,
        code: 1,
        says: &["x.pkl", "-3: dimensions cannot be negative"],
        may_write: RUN_LOCK,
    },
    Case {
        what: "pickle array whose shape product overflows",
        setup: |d| {
            pickle_case(
                d,
                &mmsa_pickle(|p| p.array("<f4", &[1 << 62, 1 << 62, 4], b""), good_labels),
            )
        },
        args: RUN,
        code: 1,
        says: &["x.pkl", "the number of elements overflows"],
        may_write: RUN_LOCK,
    },
    Case {
        what: "pickle array whose shape needs more bytes than it holds",
        setup: |d| {
            pickle_case(
                d,
                &mmsa_pickle(|p| p.array("<f4", &[2, 3, 5], &f32_bytes(24)), good_labels),
            )
        },
        args: RUN,
        code: 1,
        says: &["x.pkl", "needs 120 bytes, the file holds 96"],
        may_write: RUN_LOCK,
    },
    Case {
        what: "pickle features 0 wide",
        setup: |d| {
            pickle_case(
                d,
                &mmsa_pickle(|p| p.array("<f4", &[2, 3, 0], b""), good_labels),
            )
        },
        args: RUN,
        code: 1,
        says: &["x.pkl", "split `train`, key `audio`", "0 features wide"],
        may_write: RUN_LOCK,
    },
    Case {
        what: "pickle features 2^31 wide",
        setup: |d| {
            pickle_case(
                d,
                &mmsa_pickle(|p| p.array("<f4", &[0, 1, 1 << 31], b""), good_labels),
            )
        },
        args: RUN,
        code: 1,
        says: &["x.pkl", "key `audio`", "2147483648 features wide"],
        may_write: RUN_LOCK,
    },
    Case {
        what: "pickle features of rank 1",
        setup: |d| {
            pickle_case(
                d,
                &mmsa_pickle(|p| p.array("<f4", &[24], &f32_bytes(24)), good_labels),
            )
        },
        args: RUN,
        code: 1,
        says: &["x.pkl", "key `audio`", "expected [N, L, D]"],
        may_write: RUN_LOCK,
    },
    Case {
        what: "pickle labels of the wrong length",
        setup: |d| {
            pickle_case(
                d,
                &mmsa_pickle(good_audio, |p| p.array("<f4", &[3], &f32_bytes(3))),
            )
        },
        args: RUN,
        code: 1,
        says: &[
            "x.pkl",
            "split `train`, key `regression_labels`",
            "3 values for 2 ids",
        ],
        may_write: RUN_LOCK,
    },
    Case {
        what: "pickle in none of the known layouts",
        setup: |d| {
            let bytes = split_pickle(|p| {
                good_audio(p.str("audio"))
                    .str("score")
                    .array("<f4", &[2], &f32_bytes(2))
            });
            layout_case(d, &bytes, "modalities = { audio = \"audio\" }")
        },
        args: RUN,
        code: 1,
        says: &[
            "x.pkl",
            "split `train` fits none of the known layouts",
            "its keys are `audio`, `id`, `score`",
            "`mmsa` needs `id`, `regression_labels`",
            "`sims` needs `id`, `regression_labels`, `regression_labels_T`",
            "`mult` needs `id`, `labels`",
        ],
        may_write: RUN_LOCK,
    },
    Case {
        what: "pickle splits in two layouts",
        setup: |d| {
            let p = Pickle::new().op(b"}").mark().str("train").op(b"}").mark();
            let p = two_ids(p)
                .str("regression_labels")
                .array("<f4", &[2], &f32_bytes(2));
            let p = p.op(b"u").str("valid").op(b"}").mark();
            let p = two_ids(p)
                .str("labels")
                .array("<f4", &[2, 1, 1], &f32_bytes(2));
            layout_case(d, &p.op(b"u").op(b"u").stop(), "modalities = {}")
        },
        args: RUN,
        code: 1,
        says: &[
            "x.pkl",
            "split `train` is in the `mmsa` layout but split `valid` in the `mult` layout",
        ],
        may_write: RUN_LOCK,
    },
    Case {
        what: "MulT labels of the wrong length",
        setup: |d| {
            let bytes = split_pickle(|p| {
                good_audio(p.str("audio"))
                    .str("labels")
                    .array("<f4", &[3, 1, 1], &f32_bytes(3))
            });
            layout_case(d, &bytes, "modalities = { audio = \"audio\" }")
        },
        args: RUN,
        code: 1,
        says: &["x.pkl", "split `train`, key `labels`: 3 values for 2 ids"],
        may_write: RUN_LOCK,
    },
    Case {
        what: "pickle raw_text of the wrong length",
        setup: |d| {
            let bytes = split_pickle(|p| {
                let p = good_labels(good_audio(p.str("audio")).str("regression_labels"));
                texts(p.str("raw_text"), &["one", "two", "three"])
            });
            layout_case(d, &bytes, "modalities = { audio = \"audio\" }")
        },
        args: RUN,
        code: 1,
        says: &["x.pkl", "split `train`, key `raw_text`: 3 texts for 2 ids"],
        may_write: RUN_LOCK,
    },
    Case {
        what: "pickle raw_text holding a number",
        setup: |d| {
            let bytes = split_pickle(|p| {
                let p = good_labels(p.str("regression_labels"));
                p.str("raw_text")
                    .mark()
                    .str("fine")
                    .op(b"G")
                    .op(&1.5f64.to_be_bytes())
                    .op(b"l")
            });
            layout_case(d, &bytes, "modalities = {}")
        },
        args: RUN,
        code: 1,
        says: &[
            "x.pkl",
            "split `train`, key `raw_text`: item 1 is a float, expected a str",
        ],
        may_write: RUN_LOCK,
    },
    Case {
        what: "pickle without raw_text read with modalities = {}",
        setup: |d| {
            let bytes =
                split_pickle(|p| good_labels(good_audio(p.str("audio")).str("regression_labels")));
            layout_case(d, &bytes, "modalities = {}")
        },
        args: RUN,
        code: 1,
        says: &[
            "x.pkl",
            "split `train`, key `raw_text`: is missing",
            "`modalities = {}` reads only labels and text",
        ],
        may_write: RUN_LOCK,
    },
    Case {
        what: "pickle without any split",
        setup: |d| pickle_case(d, &Pickle::new().op(b"}").stop()),
        args: RUN,
        code: 1,
        says: &["x.pkl", "no train/valid/test split"],
        may_write: RUN_LOCK,
    },
    Case {
        what: "pickle string that is not UTF-8",
        setup: |d| {
            let p = Pickle::new().op(&[0x8c, 2, 0xff, 0xfe]);
            pickle_case(d, &p.stop())
        },
        args: RUN,
        code: 1,
        says: &["x.pkl", "not valid UTF-8"],
        may_write: RUN_LOCK,
    },
    Case {
        what: "pickle lengths as floats holding NaN",
        setup: |d| lengths_case(d, |p| p.array("<f8", &[2], &f64_bytes(&[1.0, f64::NAN]))),
        args: RUN,
        code: 1,
        says: &[
            "x.pkl",
            "split `train`, key `audio_lengths`",
            "segment `v[1]` (row 1): length NaN is NaN",
        ],
        may_write: RUN_LOCK,
    },
    Case {
        what: "pickle lengths as floats holding +inf",
        setup: |d| lengths_case(d, |p| p.array("<f4", &[2], &f32_bytes_of(&[f32::INFINITY, 1.0]))),
        args: RUN,
        code: 1,
        says: &[
            "x.pkl",
            "split `train`, key `audio_lengths`",
            "segment `v[0]` (row 0): length inf is infinite",
        ],
        may_write: RUN_LOCK,
    },
    Case {
        what: "pickle lengths as floats with a fraction",
        setup: |d| lengths_case(d, |p| p.array("<f8", &[2], &f64_bytes(&[2.7, 1.0]))),
        args: RUN,
        code: 1,
        says: &[
            "x.pkl",
            "split `train`, key `audio_lengths`",
            "segment `v[0]` (row 0): length 2.7 is not a whole number",
        ],
        may_write: RUN_LOCK,
    },
    Case {
        what: "pickle lengths negative",
        setup: |d| lengths_case(d, |p| p.array("<i8", &[2], &i64_bytes(&[1, -1]))),
        args: RUN,
        code: 1,
        says: &[
            "x.pkl",
            "split `train`, key `audio_lengths`",
            "segment `v[1]` (row 1): length -1 is negative",
        ],
        may_write: RUN_LOCK,
    },
    Case {
        what: "pickle lengths as floats, negative",
        setup: |d| lengths_case(d, |p| p.array("<f8", &[2], &f64_bytes(&[-2.0, 1.0]))),
        args: RUN,
        code: 1,
        says: &["x.pkl", "key `audio_lengths`", "segment `v[0]` (row 0): length -2.0 is negative"],
        may_write: RUN_LOCK,
    },
    Case {
        what: "pickle length beyond the sequence",
        setup: |d| lengths_case(d, |p| p.array("<i8", &[2], &i64_bytes(&[3, 4]))),
        args: RUN,
        code: 1,
        says: &[
            "x.pkl",
            "split `train`, key `audio_lengths`",
            "segment `v[1]` (row 1): length 4 is past the 3 steps of the sequences",
        ],
        may_write: RUN_LOCK,
    },
    Case {
        what: "pickle lengths as a list holding a fractional float",
        setup: |d| {
            lengths_case(d, |p| {
                p.mark()
                    .int(2)
                    .op(b"G")
                    .op(&0.5f64.to_be_bytes())
                    .op(b"l")
            })
        },
        args: RUN,
        code: 1,
        says: &[
            "x.pkl",
            "key `audio_lengths`",
            "segment `v[1]` (row 1): length 0.5 is not a whole number",
        ],
        may_write: RUN_LOCK,
    },
    Case {
        what: "pickle lengths of shape [N/2, 2]",
        setup: |d| lengths_case(d, |p| p.array("<i8", &[1, 2], &i64_bytes(&[1, 2]))),
        args: RUN,
        code: 1,
        says: &[
            "x.pkl",
            "split `train`, key `audio_lengths`",
            "has shape [1, 2], expected one length per id: shape [2]",
        ],
        may_write: RUN_LOCK,
    },
    Case {
        what: "pickle lengths empty for two ids",
        setup: |d| lengths_case(d, |p| p.array("<i8", &[0], b"")),
        args: RUN,
        code: 1,
        says: &["x.pkl", "key `audio_lengths`", "0 lengths for 2 ids"],
        may_write: RUN_LOCK,
    },
    Case {
        what: "pickle split without the lengths another split has",
        setup: |d| {
            let split = |p: Pickle, lengths: bool| {
                let p = good_labels(good_audio(good_ids(p.str("id")).str("audio")).str("regression_labels"));
                if lengths {
                    p.str("audio_lengths").array("<i8", &[2], &i64_bytes(&[1, 2]))
                } else {
                    p
                }
            };
            let p = Pickle::new().op(b"}").mark().str("train").op(b"}").mark();
            let p = split(p, true).op(b"u").str("test").op(b"}").mark();
            let p = split(p, false).op(b"u").op(b"u");
            layout_case(d, &p.stop(), "modalities = { audio = \"audio\" }")
        },
        args: RUN,
        code: 1,
        says: &[
            "x.pkl",
            "split `test`, key `audio_lengths`: is missing, but split `train` has it",
        ],
        may_write: RUN_LOCK,
    },
    Case {
        what: "pickle labels of shape [N/2, 2]",
        setup: |d| labels_case(d, |p| p.array("<f4", &[1, 2], &f32_bytes(2))),
        args: RUN,
        code: 1,
        says: &[
            "x.pkl",
            "split `train`, key `regression_labels`",
            "has shape [1, 2]; the `mmsa` layout takes one label per id: shape [2] or [2, 1]",
        ],
        may_write: RUN_LOCK,
    },
    Case {
        what: "pickle labels of shape [N, 2]",
        setup: |d| labels_case(d, |p| p.array("<f4", &[2, 2], &f32_bytes(4))),
        args: RUN,
        code: 1,
        says: &[
            "x.pkl",
            "split `train`, key `regression_labels`",
            "has shape [2, 2]; the `mmsa` layout takes one label per id",
        ],
        may_write: RUN_LOCK,
    },
    Case {
        what: "MulT labels of shape [N, 1, 2]",
        setup: |d| {
            let bytes = split_pickle(|p| {
                good_audio(p.str("audio"))
                    .str("labels")
                    .array("<f4", &[2, 1, 2], &f32_bytes(4))
            });
            layout_case(d, &bytes, "modalities = { audio = \"audio\" }")
        },
        args: RUN,
        code: 1,
        says: &[
            "x.pkl",
            "split `train`, key `labels`",
            "has shape [2, 1, 2]; the `mult` layout takes one label per id: shape [2] or [2, 1] or [2, 1, 1]",
        ],
        may_write: RUN_LOCK,
    },
    Case {
        what: "pickle label NaN",
        setup: |d| labels_case(d, |p| p.array("<f4", &[2], &f32_bytes_of(&[0.5, f32::NAN]))),
        args: RUN,
        code: 1,
        says: &[
            "x.pkl",
            "split `train`, key `regression_labels`",
            "segment `v[1]` (row 1): label NaN is not a finite float32",
        ],
        may_write: RUN_LOCK,
    },
    Case {
        what: "pickle ids differing only after an inner NUL, not UTF-8",
        setup: |d| {
            audio_case(
                d,
                |p| p.array("|S8", &[2], &s_items(&[b"v\0\xff$_$0", b"v\0\xfe$_$0"], 8)),
                |p| p,
            )
        },
        args: RUN,
        code: 1,
        says: &[
            "x.pkl",
            "split `train`, key `id`",
            "id 0 is bytes that are not UTF-8 text (b'v\\x00\\xff$_$0')",
        ],
        may_write: RUN_LOCK,
    },
    Case {
        what: "pickle ids mixing str and bytes",
        setup: |d| {
            audio_case(
                d,
                |p| p.mark().str("v$_$0").bytes(b"v$_$1").op(b"l"),
                |p| p,
            )
        },
        args: RUN,
        code: 1,
        says: &[
            "x.pkl",
            "split `train`, key `id`",
            "id 1 is bytes but id 0 is a str",
        ],
        may_write: RUN_LOCK,
    },
    Case {
        what: "pickle id holding the clip separator twice",
        setup: |d| audio_case(d, |p| texts(p, &["v$_$0", "v$_$1$_$2"]), |p| p),
        args: RUN,
        code: 1,
        says: &[
            "x.pkl",
            "split `train`, key `id`",
            "id 1 `v$_$1$_$2` holds `$_$` more than once",
        ],
        may_write: RUN_LOCK,
    },
    Case {
        what: "pickle ids that would become one segment id",
        setup: |d| audio_case(d, |p| texts(p, &["v", "v$_$0"]), |p| p),
        args: RUN,
        code: 1,
        says: &[
            "x.pkl",
            "split `train`, key `id`",
            "id 1 `v$_$0` and id `v` of split `train` would both become segment `v[0]`",
        ],
        may_write: RUN_LOCK,
    },
    Case {
        what: "pickle with both a valid and a dev split",
        setup: |d| {
            let split = |p: Pickle| {
                good_labels(good_audio(good_ids(p.str("id")).str("audio")).str("regression_labels"))
            };
            let p = Pickle::new().op(b"}").mark().str("valid").op(b"}").mark();
            let p = split(p).op(b"u").str("dev").op(b"}").mark();
            let p = split(p).op(b"u").op(b"u");
            layout_case(d, &p.stop(), "modalities = { audio = \"audio\" }")
        },
        args: RUN,
        code: 1,
        says: &["x.pkl", "splits `dev` and `valid` are both the valid split"],
        may_write: RUN_LOCK,
    },
    Case {
        what: "pickle split with a bytes key",
        setup: |d| {
            lengths_case(d, |p| p.array("<i8", &[2], &i64_bytes(&[1, 2])).bytes(b"audio_lengths").array("<i8", &[2], &i64_bytes(&[9, 9])))
        },
        args: RUN,
        code: 1,
        says: &["x.pkl", "split `train` has a key that is a bytes, expected str keys"],
        may_write: RUN_LOCK,
    },
    // .csd (HDF5).
    Case {
        what: "csd declaring 2^40 rows in a 7 KB file",
        setup: |d| csd_case(d, &patched_csd([1 << 40, 74], 2)),
        args: RUN,
        code: 1,
        says: &[
            "x.csd",
            CSD_VIDEO,
            "declares shape [1099511627776, 74]",
            "-byte file",
        ],
        may_write: RUN_LOCK,
    },
    Case {
        what: "csd features 0 wide",
        setup: |d| csd_case(d, &patched_csd([5, 0], 2)),
        args: RUN,
        code: 1,
        says: &["x.csd", CSD_VIDEO, "0 features wide"],
        may_write: RUN_LOCK,
    },
    Case {
        what: "csd features 2^31 wide",
        setup: |d| csd_case(d, &patched_csd([5, 1 << 31], 2)),
        args: RUN,
        code: 1,
        says: &["x.csd", CSD_VIDEO, "2147483648 features wide"],
        may_write: RUN_LOCK,
    },
    Case {
        what: "csd features of rank 3",
        setup: |d| csd_case(d, &patched_csd([5, 74], 3)),
        args: RUN,
        code: 1,
        says: &["x.csd", CSD_VIDEO, "expected [frames, dim]"],
        may_write: RUN_LOCK,
    },
    Case {
        what: "csd cut in half",
        setup: |d| {
            let bytes = std::fs::read(data().join("bad/covarep_43.csd")).unwrap();
            csd_case(d, &bytes[..bytes.len() / 2])
        },
        args: RUN,
        code: 1,
        says: &["x.csd"],
        may_write: RUN_LOCK,
    },
    Case {
        what: "csd that is not HDF5 at all",
        setup: |d| csd_case(d, b"video,frame\nv,1\n"),
        args: RUN,
        code: 1,
        says: &["x.csd", "not a readable HDF5 file"],
        may_write: RUN_LOCK,
    },
    // .npz.
    Case {
        what: "npz header declaring 2^40 rows",
        setup: |d| {
            npz_case(
                d,
                &npz_with_features(npy("<f4", "(1099511627776, 4)", &f32_bytes(12))),
            )
        },
        args: RUN,
        code: 1,
        says: &[
            "x.npz",
            "array `v/features`",
            "needs 17592186044416 bytes, the file holds 48",
        ],
        may_write: RUN_LOCK,
    },
    Case {
        what: "npz header whose shape product overflows",
        setup: |d| {
            npz_case(
                d,
                &npz_with_features(npy(
                    "<f4",
                    "(4611686018427387904, 4611686018427387904)",
                    b"",
                )),
            )
        },
        args: RUN,
        code: 1,
        says: &["x.npz", "array `v/features`", "more than 2^64"],
        may_write: RUN_LOCK,
    },
    Case {
        what: "npz header with a non-ASCII dtype",
        setup: |d| {
            let mut bytes = npy("<f4", "(3, 4)", &f32_bytes(12));
            let at = bytes.windows(3).position(|w| w == b"<f4").unwrap();
            bytes[at + 1] = 0xe9;
            npz_case(d, &npz_with_features(bytes))
        },
        args: RUN,
        code: 1,
        says: &["x.npz", "array `v/features`", "not ASCII"],
        may_write: RUN_LOCK,
    },
    Case {
        what: "npz array of int64",
        setup: |d| npz_case(d, &npz_with_features(npy("<i8", "(3, 4)", &[0u8; 96]))),
        args: RUN,
        code: 1,
        says: &["x.npz", "array `v/features`", "dtype \"<i8\""],
        may_write: RUN_LOCK,
    },
    Case {
        what: "npz header length past the member",
        setup: |d| {
            let mut bytes = npy("<f4", "(3, 4)", &f32_bytes(12));
            bytes[6] = 2;
            bytes.splice(8..10, [0xff, 0xff, 0xff, 0x7f]);
            npz_case(d, &npz_with_features(bytes))
        },
        args: RUN,
        code: 1,
        says: &["x.npz", "array `v/features`", "header declares"],
        may_write: RUN_LOCK,
    },
    Case {
        what: "npz truncated in the middle of the zip",
        setup: |d| {
            let bytes = npz_with_features(npy("<f4", "(3, 4)", &f32_bytes(12)));
            npz_case(d, &bytes[..bytes.len() * 2 / 3])
        },
        args: RUN,
        code: 1,
        says: &["x.npz", "not a readable .npz"],
        may_write: RUN_LOCK,
    },
    Case {
        what: "npz features of rank 3",
        setup: |d| {
            npz_case(
                d,
                &npz_with_features(npy("<f4", "(3, 2, 2)", &f32_bytes(12))),
            )
        },
        args: RUN,
        code: 1,
        says: &["x.npz", "video `v`", "expected [frames, dim]"],
        may_write: RUN_LOCK,
    },
    Case {
        what: "npz features 2^31 wide",
        setup: |d| npz_case(d, &npz_with_features(npy("<f4", "(0, 2147483648)", b""))),
        args: RUN,
        code: 1,
        says: &["x.npz", "video `v`", "2147483648 wide"],
        may_write: RUN_LOCK,
    },
    Case {
        what: "npz features 0 wide",
        setup: |d| npz_case(d, &npz_with_features(npy("<f4", "(3, 0)", b""))),
        args: RUN,
        code: 1,
        says: &["x.npz", "video `v`", "are 0 wide"],
        may_write: RUN_LOCK,
    },
    Case {
        what: "npz member that is not a .npy array",
        setup: |d| npz_case(d, &npz_with_features(b"not an array at all".to_vec())),
        args: RUN,
        code: 1,
        says: &["x.npz", "array `v/features`", "not a .npy array"],
        may_write: RUN_LOCK,
    },
    // Paths that are not regular files.
    Case {
        what: "a FIFO as the pickle path",
        setup: |d| {
            mkfifo(d, "x.pkl");
            pickle_pipeline(d, &d.join("x.pkl"))
        },
        args: RUN,
        code: 1,
        says: &["x.pkl", "is a FIFO"],
        may_write: RUN_LOCK,
    },
    Case {
        what: "a FIFO as a csd modality",
        setup: |d| {
            mkfifo(d, "x.csd");
            aligned_pipeline(d, "csd", "x.csd")
        },
        args: RUN,
        code: 1,
        says: &["x.csd", "is a FIFO"],
        may_write: RUN_LOCK,
    },
    Case {
        what: "a symlink to a FIFO as an npz modality",
        setup: |d| {
            mkfifo(d, "fifo");
            std::os::unix::fs::symlink(d.join("fifo"), d.join("x.npz")).unwrap();
            aligned_pipeline(d, "npz", "x.npz")
        },
        args: RUN,
        code: 1,
        says: &["x.npz", "is a FIFO"],
        may_write: RUN_LOCK,
    },
    Case {
        what: "/dev/zero as the pickle path",
        setup: |d| {
            std::os::unix::fs::symlink("/dev/zero", d.join("x.pkl")).unwrap();
            pickle_pipeline(d, &d.join("x.pkl"))
        },
        args: RUN,
        code: 1,
        says: &["x.pkl", "is a character device"],
        may_write: RUN_LOCK,
    },
    Case {
        what: "a directory as the pickle path",
        setup: |d| {
            std::fs::create_dir(d.join("x.pkl")).unwrap();
            pickle_pipeline(d, &d.join("x.pkl"))
        },
        args: RUN,
        code: 1,
        says: &["x.pkl", "is a directory"],
        may_write: RUN_LOCK,
    },
    Case {
        what: "a directory as a csd modality",
        setup: |d| {
            std::fs::create_dir(d.join("x.csd")).unwrap();
            aligned_pipeline(d, "csd", "x.csd")
        },
        args: RUN,
        code: 1,
        says: &["x.csd", "is a directory"],
        may_write: RUN_LOCK,
    },
];

#[test]
fn bad_readers_inputs_fail_cleanly() {
    check(CASES);
}

/// The builders above make files mmflow reads: the rows fail for what they corrupt.
#[test]
fn the_bad_file_builders_start_from_good_files() {
    let dir = Dir::new();
    pickle_case(&dir, &mmsa_pickle(good_audio, good_labels));
    dir.mmflow(RUN).ok();
    let text_only = split_pickle(|p| {
        texts(
            good_labels(p.str("regression_labels")).str("raw_text"),
            &["a", "b"],
        )
    });
    layout_case(&dir, &text_only, "modalities = {}");
    dir.mmflow(RUN).ok();
    let mult = split_pickle(|p| {
        let p = p.str("labels").array("<f4", &[2, 1, 1], &f32_bytes(2));
        texts(p.str("raw_text"), &["a", "b"])
    });
    layout_case(&dir, &mult, "modalities = {}");
    dir.mmflow(RUN).ok();

    let npz = npz_with_features(npy("<f4", "(3, 4)", &f32_bytes(12)));
    write_bytes(&dir, "x.npz", &npz);
    let source = mmflow_stages::ingest::npz_file::NpzSource::open(
        &dir.join("x.npz"),
        &mmflow_stages::ingest::readers::TimingOptions::default(),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let seq = source.read("v").unwrap();
    assert_eq!((seq.len(), seq.dim), (3, 4));

    write_bytes(&dir, "x.csd", &patched_csd([5, 74], 2));
    let csd = mmflow_stages::ingest::csd_file::CsdFile::open(&dir.join("x.csd")).unwrap();
    assert_eq!(csd.shape(CSD_VIDEO).unwrap().dim, 74);
}

/// One array referenced from two keys (as Python shares it) is read, and not copied.
#[test]
fn a_pickle_sharing_one_array_between_keys_reads() {
    let p = Pickle::new()
        .op(b"}")
        .str("train")
        .op(b"}")
        .mark()
        .str("id")
        .mark()
        .str("v$_$0")
        .str("v$_$1")
        .op(b"l")
        .str("audio");
    let p = good_audio(p).memoize().str("vision").get(0);
    let bytes = good_labels(p.str("regression_labels")).op(b"us").stop();
    let root = mmflow_stages::ingest::pickle::read(&bytes).unwrap();
    let train = root.get("train").unwrap();
    match (train.get("audio"), train.get("vision")) {
        (
            Some(mmflow_stages::ingest::pickle::PyValue::Array(a)),
            Some(mmflow_stages::ingest::pickle::PyValue::Array(b)),
        ) => assert!(std::sync::Arc::ptr_eq(a, b)),
        other => panic!("{other:?}"),
    }
    let dir = Dir::new();
    write_bytes(&dir, "x.pkl", &bytes);
    pipeline(
        &dir,
        &format!(
            "[stages.m]\nkind = \"mmsa_pickle\"\nparams = {{ path = {:?}, modalities = {{ audio = \"audio\", visual = \"vision\" }}, labels = {{ sentiment = \"regression_labels\" }} }}\n",
            dir.join("x.pkl")
        ),
    );
    dir.mmflow(RUN).ok();
}

/// `{'train': {'id': [ids], 'audio': <audio>, 'audio_lengths': [lengths], 'regression_labels': [0.5 …]}}`.
fn mmsa_pickle_of(
    ids: &[String],
    audio: impl FnOnce(Pickle) -> Pickle,
    lengths: &[i64],
) -> Vec<u8> {
    let mut p = Pickle::new()
        .op(b"}")
        .str("train")
        .op(b"}")
        .mark()
        .str("id")
        .mark();
    for id in ids {
        p = p.str(id);
    }
    p = audio(p.op(b"l").str("audio")).str("audio_lengths").mark();
    for &l in lengths {
        p = p.int(l);
    }
    let labels: Vec<u8> = ids.iter().flat_map(|_| 0.5f32.to_le_bytes()).collect();
    p.op(b"l")
        .str("regression_labels")
        .array("<f4", &[ids.len() as i64], &labels)
        .op(b"us")
        .stop()
}

/// Runs the `audio`-only stage on `bytes`; returns its audio table and its row groups.
fn converted_audio(dir: &Dir, bytes: &[u8]) -> (mmflow_schemas::features::FeatureBatch, usize) {
    write_bytes(dir, "x.pkl", bytes);
    pickle_pipeline(dir, &dir.join("x.pkl"));
    dir.mmflow(&["run", "p.toml", "--force", "m"]).ok();
    let path = dir.join("data/runs/p/m/audio.parquet");
    let file = std::fs::File::open(&path).unwrap();
    let groups = parquet::file::reader::SerializedFileReader::new(file)
        .map(|r| parquet::file::reader::FileReader::metadata(&r).num_row_groups())
        .unwrap();
    let batch = mmflow_schemas::features::FeatureReader::open(&path)
        .unwrap()
        .read_all()
        .unwrap();
    (batch, groups)
}

/// Float arrays of any float dtype, byte order and layout (C or Fortran), held in memory or
/// left in the file (payloads of 256 bytes or more), convert to the same table.
#[test]
fn pickle_float_dtypes_and_layouts_convert_alike() {
    let (n, steps, dim) = (2usize, 4usize, 12usize);
    let value = |i: usize, j: usize, k: usize| ((i * steps + j) * dim + k) as f64 * 0.25;
    let c_order: Vec<f64> = (0..n * steps * dim)
        .map(|x| value(x / (steps * dim), x / dim % steps, x % dim))
        .collect();
    let f_order: Vec<f64> = (0..n * steps * dim)
        .map(|x| value(x % n, x / n % steps, x / (n * steps)))
        .collect();
    let encode = |values: &[f64], descr: &str| -> Vec<u8> {
        values
            .iter()
            .flat_map(|&v| match descr {
                "<f4" => (v as f32).to_le_bytes().to_vec(),
                ">f4" => (v as f32).to_be_bytes().to_vec(),
                "<f8" => v.to_le_bytes().to_vec(),
                ">f8" => v.to_be_bytes().to_vec(),
                // Multiples of 0.25 below 2048: exact in float16 (sign 0, exponent, 10 bits).
                "<f2" => {
                    let bits = if v == 0.0 {
                        0u16
                    } else {
                        let e = v.log2().floor() as i32;
                        let frac = ((v / 2f64.powi(e) - 1.0) * 1024.0).round() as u16;
                        (((e + 15) as u16) << 10) | frac
                    };
                    bits.to_le_bytes().to_vec()
                }
                other => panic!("{other}"),
            })
            .collect()
    };
    let ids = ["v$_$0".to_string(), "v$_$1".to_string()];
    let lengths = [3i64, 4];
    let dir = Dir::new();
    let mut expected = Vec::new();
    for (i, &len) in lengths.iter().enumerate() {
        for j in 0..len as usize {
            expected.extend((0..dim).map(|k| value(i, j, k) as f32));
        }
    }
    for descr in ["<f4", ">f4", "<f8", ">f8", "<f2"] {
        for (order, values) in [("C", &c_order), ("F", &f_order)] {
            let data = encode(values, descr);
            let shape = [n as i64, steps as i64, dim as i64];
            let bytes = mmsa_pickle_of(&ids, |p| p.array_in(descr, &shape, &data, order), &lengths);
            let (audio, groups) = converted_audio(&dir, &bytes);
            let what = format!("{descr} {order} ({} payload bytes)", data.len());
            assert_eq!(audio.segment_ids, ["v[0]", "v[1]"], "{what}");
            assert_eq!(audio.offsets, [0, 3, 7], "{what}: cut to audio_lengths");
            assert_eq!(audio.frames, expected, "{what}");
            assert_eq!(groups, 1, "{what}");
        }
    }
}

/// An array larger than the stage's chunk (16 MiB of rows) is read and written a chunk of
/// rows at a time, one row group each, with every value in place.
#[test]
fn a_pickle_array_larger_than_a_chunk_is_written_in_row_groups() {
    let (n, steps, dim) = (9usize, 512usize, 1024usize);
    let values: Vec<f32> = (0..n * steps * dim)
        .map(|x| (x % 1000) as f32 - 500.0)
        .collect();
    let data: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    let ids: Vec<String> = (0..n).map(|i| format!("v$_${i}")).collect();
    let full = vec![steps as i64; n];
    let shape = [n as i64, steps as i64, dim as i64];
    let bytes = mmsa_pickle_of(&ids, |p| p.array("<f4", &shape, &data), &full);
    let dir = Dir::new();
    let (audio, groups) = converted_audio(&dir, &bytes);
    assert_eq!(groups, 2, "8 rows of 2 MiB a chunk, then 1");
    assert_eq!(audio.len(), n);
    assert!(audio.frames == values, "every value in place");
}
