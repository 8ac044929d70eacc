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
with open(os.path.join(HERE, "EXPECTED.json"), "w", encoding="utf-8") as f:
    json.dump(expected, f, indent=1, ensure_ascii=False, sort_keys=True)
    f.write("\n")
