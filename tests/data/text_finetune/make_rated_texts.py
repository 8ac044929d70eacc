"""Writes `rated_texts.pkl`: a small MOSI-layout pickle (MMSA's keys) whose labels come from
its raw text, for the fine-tuning tests and `configs/text_finetune.toml`'s smoke run.

    python tests/data/text_finetune/make_rated_texts.py

Each segment's `raw_text` is a short review of words the repository's tiny BERT knows
(`tests/data/models/tiny-bert`); its label is the sum of its words' scores (good +1.5,
great +2, liked +1.5, fine +0.5, bad −1.5, boring −1.5, hated −2), a word after "not"
counting negated, clipped to [−3, 3]. Word order therefore matters ("not bad" ≠ "bad"):
a mean of fixed word vectors cannot tell the two apart, a fine-tuned encoder can learn to.
`audio` [N, 6, 4] and `vision` [N, 5, 3] carry a weak copy of the label in their first
feature (plus noise), with per-segment lengths, as MMSA's unaligned files. 160 / 40 / 60
segments. A seeded generator: running it again writes the same file.
"""

import os
import pickle

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
SPLITS = {"train": 160, "valid": 40, "test": 60}
SCORES = {"good": 1.5, "great": 2.0, "liked": 1.5, "fine": 0.5,
          "bad": -1.5, "boring": -1.5, "hated": -2.0}
FILLER = ["it", "was", "really", "the", "movie", "is", "very", "and", "so", "i", "this", "a"]
rng = np.random.default_rng(20261207)


def review():
    words = []
    for _ in range(int(rng.integers(1, 4))):
        words += list(rng.choice(FILLER, size=int(rng.integers(0, 3))))
        if rng.uniform() < 0.35:
            words.append("not")
        words.append(str(rng.choice(list(SCORES))))
    words += list(rng.choice([".", "!", ","], size=int(rng.integers(0, 2))))
    return " ".join(words)


def score(text):
    total, negate = 0.0, False
    for word in text.split():
        if word == "not":
            negate = True
        elif word in SCORES:
            total += -SCORES[word] if negate else SCORES[word]
            negate = False
    return float(np.clip(total, -3, 3))


def frames(n, steps, dim, labels, lengths):
    x = rng.standard_normal((n, steps, dim)).astype(np.float32)
    x[:, :, 0] += 0.3 * labels[:, None]
    for i, length in enumerate(lengths):
        x[i, length:] = 0.0
    return x


def split(name, n):
    texts = [review() for _ in range(n)]
    labels = np.array([score(t) for t in texts], dtype=np.float32)
    audio_lengths = rng.integers(2, 7, size=n)
    vision_lengths = rng.integers(2, 6, size=n)
    return {
        "id": np.array([f"{name}Review{i // 10}$_${i % 10 + 1}" for i in range(n)]),
        "raw_text": np.array(texts, dtype=object),
        "audio": frames(n, 6, 4, labels, audio_lengths),
        "vision": frames(n, 5, 3, labels, vision_lengths),
        "audio_lengths": audio_lengths.astype(np.int64),
        "vision_lengths": vision_lengths.astype(np.int64),
        "regression_labels": labels,
        "classification_labels": (labels >= 0).astype(np.float32),
    }


def main():
    data = {name: split(name, n) for name, n in SPLITS.items()}
    path = os.path.join(HERE, "rated_texts.pkl")
    with open(path, "wb") as f:
        pickle.dump(data, f, protocol=4)
    train = data["train"]
    print(f"{path}: {os.path.getsize(path)} bytes; e.g. {train['raw_text'][0]!r} → "
          f"{train['regression_labels'][0]}")


if __name__ == "__main__":
    main()
