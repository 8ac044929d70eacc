"""Writes the small pickles in this folder, one per layout `mmsa_pickle` reads, with numpy and pickle.

    python tests/data/mmsa/make_layouts.py

Each file has the keys, dtypes, id formats and nesting of the files researchers download
(MMSA's `MOSI/Processed/unaligned_50.pkl`, CH-SIMS's `unaligned_39.pkl`, MulT's
`mosi_data.pkl`), with a few segments per split and the sequence lengths and feature widths
scaled down so that each file is a few KB. Values are drawn from a seeded generator: running
the script again writes the same files. Tests never run it: they read what it wrote, and
`EXPECTED.json`, what numpy reads back from each file (ids, texts, labels, lengths, per-array
shapes and sums of the frames each segment keeps).

- `mmsa_unaligned.pkl` (layout `mmsa`, protocol 4): MOSI's keys — `id` (`video$_$clip`),
  `raw_text`, `text` [N, 6, 8], `text_bert` [N, 3, 6], `audio` [N, 10, 5] with -inf in the
  padding and one -inf inside a segment, `vision` [N, 5, 20], `audio_lengths` and
  `vision_lengths` (per-modality lengths differ, as in the unaligned files), `annotations`,
  `regression_labels`, `classification_labels`;
- `sims_unaligned.pkl` (layout `sims`, protocol 4): CH-SIMS's keys — the above plus
  `regression_labels_T/A/V`, `classification_labels_T/A/V`; Chinese `raw_text`, float64 labels,
  `audio` [N, 4, 33], `vision` [N, 5, 12];
- `mult_data.pkl` (layout `mult`, protocol 4): MulT's keys — `text` [N, 5, 4], `audio`
  [N, 5, 3], `vision` [N, 5, 2], `labels` [N, 1, 1], `id` [N, 3] bytes rows
  `[video, start, end]` (as MulT's MOSI file stores them); no raw text;
- `text_only.pkl` (layout `mmsa`, protocol 5): `id`, `raw_text` (a list), `regression_labels`
  and no feature array, for `modalities = {}`.

Two more files hold what numpy and Python read differently from a naive reader, and their
EXPECTED.json entries record what numpy reads, item by item, as MMSA's loader would use it
(`numpy`: per split the ids as rows of text and whether they are `str` or `bytes`, each
label as `np.array(v).astype(np.float32)[i].reshape(-1)`, each length as an int, the raw
text, and per feature array its shape and the frames each segment keeps):

- `numpy_edges.pkl` (layout `mmsa`, protocol 4): ids with NULs — inside an id (kept:
  `'v\\0a$_$1'` and `'v\\0b$_$1'` are two videos) and at the end of a fixed-width item
  (stripped by numpy) — as a `U` array (train), an `S` array (valid) and a list of `str`
  (test: a Python str keeps even a trailing NUL); lengths as whole floats (float64, float32,
  a list of floats), int32, a list of numpy int64 scalars and of ints, from 0 to the full
  sequence; labels `[N, 1]` float64, int64 and float32; raw text with NULs as a `U` array, a
  list and an object array of UTF-8 bytes;
- `mult_edges.pkl` (layout `mult`, protocol 4): MulT id rows whose videos differ only
  after a NUL (`S` array), as an object array, and as a `U` array whose trailing NUL numpy
  strips (two rows of one video); labels `[N, 1, 1]`.
"""

import json
import os
import pickle

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
SPLITS = {"train": 3, "valid": 2, "test": 2}
rng = np.random.default_rng(20240611)

WORDS = ["it", "was", "really", "good", "not", "bad", "so", "boring", "fine", "great"]
HANZI = ["我", "很", "喜欢", "这个", "电影", "不", "太", "好", "真的", "难看"]


def sentence(vocabulary, join):
    return join.join(rng.choice(vocabulary, size=int(rng.integers(2, 6))))


def padded(n, steps, dim, lengths, pad=0.0):
    """[n, steps, dim] float32 frames, zero (or `pad`) after each segment's length."""
    x = rng.standard_normal((n, steps, dim)).astype(np.float32)
    for i, length in enumerate(lengths):
        x[i, length:] = pad
    return x


def mmsa_split(n, videos, first_clip, vocabulary, join, dims):
    text_dim, audio_dim, vision_dim, text_steps, audio_steps, vision_steps = dims
    audio_lengths = rng.integers(1, audio_steps + 1, size=n)
    vision_lengths = rng.integers(1, vision_steps + 1, size=n)
    audio = padded(n, audio_steps, audio_dim, audio_lengths, pad=-np.inf)
    audio[0, 0, 0] = -np.inf  # COVAREP's -inf inside a segment
    labels = np.round(rng.uniform(-3, 3, size=n), 4).astype(np.float32)
    return {
        "raw_text": np.array([sentence(vocabulary, join) for _ in range(n)], dtype=object),
        "audio": audio,
        "vision": padded(n, vision_steps, vision_dim, vision_lengths),
        "id": np.array([f"{videos[i % len(videos)]}$_${first_clip + i}" for i in range(n)]),
        "text": rng.standard_normal((n, text_steps, text_dim)).astype(np.float32),
        "text_bert": rng.integers(0, 100, size=(n, 3, text_steps)).astype(np.float32),
        "annotations": np.array(
            ["Negative" if x < 0 else "Positive" for x in labels], dtype=object
        ),
        "classification_labels": (labels >= 0).astype(np.float32),
        "regression_labels": labels,
        "audio_lengths": audio_lengths.astype(np.int64),
        "vision_lengths": vision_lengths.astype(np.int64),
    }


def mmsa_file():
    dims = (8, 5, 20, 6, 10, 5)
    return {
        name: mmsa_split(n, [f"{name}Vid{k}" for k in range(2)], 1, WORDS, " ", dims)
        for name, n in SPLITS.items()
    }


def sims_file():
    out = {}
    first_clip = 1
    for name, n in SPLITS.items():
        # The same videos in every split, clips numbered on: no id repeats.
        split = mmsa_split(
            n, ["video_0001", "video_0002"], first_clip, HANZI, "", (8, 33, 12, 6, 4, 5)
        )
        first_clip += n
        split["regression_labels"] = np.round(rng.uniform(-1, 1, size=n), 1)
        for m in "TAV":
            labels = np.round(rng.uniform(-1, 1, size=n), 1)
            split[f"regression_labels_{m}"] = labels
            split[f"classification_labels_{m}"] = np.sign(labels) + 1
        out[name] = split
    return out


def mult_file():
    out = {}
    for name, n in SPLITS.items():
        ids = []
        for i in range(n):
            # Later rows start earlier: numbering by start differs from numbering by place.
            begin = round(40.0 - 7.5 * i + float(rng.uniform(0, 1)), 3)
            ids.append([f"mult_{name}_{i % 2}", f"{begin:.3f}", f"{begin + 2.5:.3f}"])
        out[name] = {
            "vision": rng.standard_normal((n, 5, 2)).astype(np.float32),
            "text": rng.standard_normal((n, 5, 4)).astype(np.float32),
            "audio": rng.standard_normal((n, 5, 3)).astype(np.float32),
            "labels": np.round(rng.uniform(-3, 3, size=(n, 1, 1)), 4).astype(np.float32),
            "id": np.array(ids, dtype="S"),
        }
    return out


def text_only_file():
    out = {}
    for name, n in SPLITS.items():
        out[name] = {
            "id": np.array([f"{name}Talk{i % 2}$_${i + 1}" for i in range(n)]),
            "raw_text": [sentence(WORDS, " ") for _ in range(n)],
            "regression_labels": np.round(rng.uniform(-3, 3, size=n), 4).astype(np.float32),
        }
    return out


def as_text(x):
    return x.decode("utf-8") if isinstance(x, bytes) else str(x)


def expected_split(split):
    """What numpy reads: the small arrays whole, the features as shape + sum of kept frames."""
    out = {}
    for key, value in split.items():
        value = np.asarray(value) if isinstance(value, list) else value
        if value.dtype == object or value.dtype.kind in "SU":
            out[key] = {"shape": list(value.shape), "values": [as_text(x) for x in value.reshape(-1)]}
        elif value.ndim == 3 and value.shape[2] > 1 and key != "labels":
            lengths = split.get(f"{key}_lengths")
            kept = [
                value[i, : (value.shape[1] if lengths is None else int(lengths[i]))]
                for i in range(value.shape[0])
            ]
            finite = [np.where(np.isfinite(k), k, 0).astype(np.float64).sum() for k in kept]
            out[key] = {
                "shape": list(value.shape),
                "kept_steps": [int(k.shape[0]) for k in kept],
                "finite_sum": [float(s) for s in finite],
                "nonfinite_kept": int(sum((~np.isfinite(k)).sum() for k in kept)),
            }
        else:
            out[key] = {"shape": list(value.shape), "values": value.reshape(-1).astype(np.float64).tolist()}
    return out


FILES = {
    "mmsa_unaligned.pkl": (mmsa_file, 4, "mmsa"),
    "sims_unaligned.pkl": (sims_file, 4, "sims"),
    "mult_data.pkl": (mult_file, 4, "mult"),
    "text_only.pkl": (text_only_file, 5, "mmsa"),
}

expected = {}
for filename, (make, protocol, layout) in FILES.items():
    data = make()
    with open(os.path.join(HERE, filename), "wb") as f:
        pickle.dump(data, f, protocol=protocol)
    with open(os.path.join(HERE, filename), "rb") as f:
        back = pickle.load(f)
    expected[filename] = {
        "layout": layout,
        "splits": {name: expected_split(split) for name, split in back.items()},
    }
def numpy_edges_file():
    """Ids, texts, lengths and labels whose exact reading matters (see the module docs)."""
    rng = np.random.default_rng(20250301)

    def features(n, steps, dim, lengths=None):
        """[n, steps, dim] float32 frames, zero after each segment's length."""
        x = rng.standard_normal((n, steps, dim)).astype(np.float32)
        for i, length in enumerate([steps] * n if lengths is None else lengths):
            x[i, int(length):] = 0.0
        return x

    train_audio = np.array([2.0, 5.0, 0.0, 1.0])
    train_vision = np.array([4, 1, 2, 3], dtype=np.int32)
    valid_audio = [np.int64(5), np.int64(3), np.int64(1)]
    valid_vision = np.array([0.0, 4.0, 2.0], dtype=np.float32)
    test_audio = [3.0, 1.0, 4.0]
    test_vision = [1, 2, 3]
    return {
        "train": {
            "id": np.array(["v\0a$_$1", "v\0b$_$1", "w$_$2\0", "w$_$10"]),
            "raw_text": np.array(["good\0bad", "ok", "fine\0", "x"]),
            "regression_labels": np.array([[0.5], [-1.25], [2.0], [-3.0]]),
            "audio": features(4, 5, 3, train_audio),
            "audio_lengths": train_audio,
            "vision": features(4, 4, 2, train_vision),
            "vision_lengths": train_vision,
            "text": features(4, 3, 2),
        },
        "valid": {
            "id": np.array([b"x\0y$_$1", b"x\0z$_$1", b"x$_$1"]),
            "raw_text": ["ok\0", "a\0b", ""],
            "regression_labels": np.array([1, -2, 0], dtype=np.int64),
            "audio": features(3, 5, 3, valid_audio),
            "audio_lengths": valid_audio,
            "vision": features(3, 4, 2, valid_vision),
            "vision_lengths": valid_vision,
            "text": features(3, 3, 2),
        },
        "test": {
            "id": ["t\0$_$1", "t$_$1", "u$_$3\0"],
            "raw_text": np.array(["café\0!".encode(), b"b", b"c"], dtype=object),
            "regression_labels": np.array([0.1, -0.2, 0.3], dtype=np.float32),
            "audio": features(3, 5, 3, test_audio),
            "audio_lengths": test_audio,
            "vision": features(3, 4, 2, test_vision),
            "vision_lengths": test_vision,
            "text": features(3, 3, 2),
        },
    }


def mult_edges_file():
    """MulT id rows with NULs: inner ones keep two videos apart, a trailing one is stripped."""
    rng = np.random.default_rng(20250302)

    def split(ids):
        n = len(ids)
        return {
            "id": ids,
            "labels": np.round(rng.uniform(-3, 3, size=(n, 1, 1)), 4).astype(np.float32),
            "text": rng.standard_normal((n, 2, 3)).astype(np.float32),
            "audio": rng.standard_normal((n, 2, 2)).astype(np.float32),
            "vision": rng.standard_normal((n, 2, 2)).astype(np.float32),
        }

    return {
        "train": split(
            np.array([[b"m\0a", b"1.5", b"3.0"], [b"m\0b", b"1.5", b"3.0"], [b"m", b"0", b"1"]])
        ),
        "valid": split(
            np.array([["m\0a", "0.0", "1.0"], ["m", "2.0", "2.5"]], dtype=object)
        ),
        "test": split(np.array([["n", "2", "3"], ["n\0", "0", "1"]])),
    }


def id_row(item):
    """One id as a row of strings: MMSA's one string, or MulT's `[video, start, end]`."""
    if isinstance(item, (str, bytes)):
        return [item]
    return list(item)


def whole(x):
    """A length as MMSA uses it: an int, which a float must be exactly."""
    assert float(x).is_integer(), x
    return int(x)


def numpy_reads(split, layout):
    """What numpy (and MMSA's loader) reads from a split: ids, labels, lengths, texts, and
    per feature array its shape and the frames each segment keeps."""
    rows = [id_row(item) for item in split["id"]]
    kinds = {type(x) for row in rows for x in row}
    assert len(kinds) == 1, kinds
    label_key = "labels" if layout == "mult" else "regression_labels"
    labels = np.array(split[label_key]).astype(np.float32)
    out = {
        "ids": [[as_text(x) for x in row] for row in rows],
        "id_type": "bytes" if kinds == {np.bytes_} or kinds == {bytes} else "str",
        "labels": [labels[i].reshape(-1).astype(np.float64).tolist() for i in range(len(rows))],
    }
    if "raw_text" in split:
        out["raw_text"] = [as_text(x) for x in split["raw_text"]]
    for key in ["text", "audio", "vision"]:
        value = split[key]
        lengths = split.get(f"{key}_lengths")
        if lengths is None:
            kept = [value.shape[1]] * value.shape[0]
        else:
            kept = [whole(x) for x in lengths]
        out[key] = {
            "shape": list(value.shape),
            "kept_steps": kept,
            "finite_sum": [float(value[i, :k].astype(np.float64).sum()) for i, k in enumerate(kept)],
        }
    return out


EDGE_FILES = {
    "numpy_edges.pkl": (numpy_edges_file, 4, "mmsa"),
    "mult_edges.pkl": (mult_edges_file, 4, "mult"),
}

for filename, (make, protocol, layout) in EDGE_FILES.items():
    with open(os.path.join(HERE, filename), "wb") as f:
        pickle.dump(make(), f, protocol=protocol)
    with open(os.path.join(HERE, filename), "rb") as f:
        back = pickle.load(f)
    expected[filename] = {
        "layout": layout,
        "numpy": {name: numpy_reads(split, layout) for name, split in back.items()},
    }

with open(os.path.join(HERE, "EXPECTED.json"), "w", encoding="utf-8") as f:
    json.dump(expected, f, indent=1, ensure_ascii=False, sort_keys=True)
    f.write("\n")
