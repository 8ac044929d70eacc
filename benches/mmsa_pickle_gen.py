"""Writes an MMSA-layout pickle shaped like CMU-MOSEI's `unaligned_50.pkl`, at a scale.

    python benches/mmsa_pickle_gen.py --scale 0.125 --out mosei_unaligned.pkl   # ~1.0 GB

The file is what MMSA's `pickle.dump` writes: `{train, valid, test}`, each a dict of
numpy arrays and lists,

| key | value |
|---|---|
| `raw_text` | object array of str (the utterance) |
| `id` | object array of str `video$_$clip` |
| `text` | float32 `[N, 50, 768]` (BERT), zero past the text length |
| `audio` | float32 `[N, 500, 74]` (COVAREP), zero past `audio_lengths`, an occasional -inf |
| `vision` | float32 `[N, 375, 35]` (Facet), zero past `vision_lengths` |
| `regression_labels` | float32 `[N]` in [-3, 3] |
| `classification_labels` | float32 `[N]` (0, 1, 2) |
| `annotations` | object array of str |
| `audio_lengths`, `vision_lengths` | lists of int |

with MOSEI's split sizes (16326 / 1871 / 4659) times `--scale`: at 1.0 the file is ~8.1 GB,
at 0.125 ~1.0 GB. Values come from a seeded generator (numpy only), so a file is a pure
function of (scale, seed, protocol). Peak memory is about the file's size plus its largest
array (numpy copies an array to bytes when pickling with protocols below 5).
"""
import argparse
import pickle

import numpy as np

SPLITS = {"train": 16326, "valid": 1871, "test": 4659}
TEXT = (50, 768)
AUDIO = (500, 74)
VISION = (375, 35)
WORDS = ["so", "i", "really", "liked", "the", "movie", "but", "not", "ending", "great", "bad", "okay"]


def padded(rng, n, steps, dim, lengths):
    """`[n, steps, dim]` float32 normals, zero past each row's length."""
    x = rng.standard_normal((n, steps, dim), dtype=np.float32)
    x[np.arange(steps)[None, :] >= np.asarray(lengths)[:, None]] = 0.0
    return x


def split(rng, name, n, first_video):
    videos = [f"v{first_video + i // 8:05d}_{name[:2]}" for i in range(n)]
    ids = np.array([f"{v}$_${i % 8}" for i, v in enumerate(videos)], dtype=object)
    text_len = rng.integers(5, TEXT[0] + 1, n)
    audio_len = rng.integers(50, AUDIO[0] + 1, n)
    vision_len = rng.integers(40, VISION[0] + 1, n)
    raw = np.array([" ".join(rng.choice(WORDS, k)) for k in text_len], dtype=object)
    audio = padded(rng, n, *AUDIO, audio_len)
    # COVAREP writes -inf now and then (MMSA zeroes it).
    audio[rng.random(n) < 0.05, 0, 0] = -np.inf
    labels = np.round(rng.uniform(-3, 3, n) * 3) / 3
    return {
        "raw_text": raw,
        "audio": audio,
        "vision": padded(rng, n, *VISION, vision_len),
        "id": ids,
        "text": padded(rng, n, *TEXT, text_len),
        "annotations": np.array(["Positive" if x > 0 else "Negative" for x in labels], dtype=object),
        "classification_labels": np.sign(labels).astype(np.float32) + 1,
        "regression_labels": labels.astype(np.float32),
        "audio_lengths": [int(x) for x in audio_len],
        "vision_lengths": [int(x) for x in vision_len],
    }


def generate(out, scale, seed=0, protocol=4):
    """Writes the pickle to `out`; returns the number of segments per split."""
    rng = np.random.default_rng(seed)
    data, counts, first = {}, {}, 0
    for name, full in SPLITS.items():
        n = max(1, round(full * scale))
        data[name] = split(rng, name, n, first)
        counts[name] = n
        first += n // 8 + 1
    with open(out, "wb") as f:
        pickle.dump(data, f, protocol=protocol)
    return counts


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scale", type=float, default=0.125, help="fraction of MOSEI's segments (1.0 = ~8.1 GB)")
    ap.add_argument("--out", required=True)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--protocol", type=int, default=4, choices=[2, 3, 4, 5])
    args = ap.parse_args()
    counts = generate(args.out, args.scale, args.seed, args.protocol)
    print(f"{args.out}: {counts}")


if __name__ == "__main__":
    main()
