"""Writes the MOSI words computational sequence and what the SDK makes of it, with the
CMU-MultimodalSDK itself.

    python tests/data/sdk/make_words.py

- `sdk_basic/mosi/CMU_MOSI_TimestampedWords.csd`: one word per interval of the shipped
  `CMU_MOSI_TimestampedWordVectors.csd` (the two share their timeline in the SDK's release),
  as the SDK's `CMU_MOSI_TimestampedWords.csd` holds them: `features` [words, 1] of
  fixed-length byte strings, `sp` for silences; the words are drawn (seeded) from a small
  vocabulary with one non-ASCII word (UTF-8 bytes). Written by `computational_sequence.deploy`.
- `sdk_basic/mosi/words_aligned_reference.json`: the SDK's `mmdataset.align` of the words to
  the opinion labels (no collapse function, as MulT's preprocessing does): per aligned entry
  `<video>[<i>]`, its words in order and its text (the words without `sp`, joined by spaces).

Tests never run this script: they read what it wrote.
"""
import json
import os
import random

import h5py
import numpy as np
from mmsdk import mmdatasdk as md

here = os.path.dirname(os.path.abspath(__file__))
mosi = os.path.join(here, "sdk_basic", "mosi")
vectors = os.path.join(mosi, "CMU_MOSI_TimestampedWordVectors.csd")
labels = os.path.join(mosi, "CMU_MOSI_Opinion_Labels.csd")
out = os.path.join(mosi, "CMU_MOSI_TimestampedWords.csd")

VOCAB = ["i", "really", "liked", "the", "movie", "it", "was", "not", "that", "good",
         "um", "acting", "plot", "boring", "café", "and", "but", "so"]

rng = random.Random(13)
data = {}
with h5py.File(vectors, "r") as f:
    root = f[list(f.keys())[0]]["data"]
    for video in sorted(root.keys()):
        intervals = np.array(root[video]["intervals"])
        words = [b"sp" if rng.random() < 0.2 else rng.choice(VOCAB).encode("utf-8")
                 for _ in range(len(intervals))]
        data[video] = {
            "features": np.array([[w] for w in words], dtype="S32"),
            "intervals": intervals,
        }

metadata = {
    "root name": "CMU_MOSI_TimestampedWords",
    "computational sequence description": "CMU_MOSI_TimestampedWords fixture (MOSI-shaped, synthetic words)",
    "dataset name": "MOSI",
    "alignment compatible": "True",
}
for key in ["computational sequence version", "contact", "creator", "dataset bib citation",
            "dataset version", "featureset bib citation", "md5", "uuid"]:
    metadata[key] = "n/a"
if os.path.exists(out):
    os.remove(out)
seq = md.computational_sequence("CMU_MOSI_TimestampedWords")
seq.setData(data, "CMU_MOSI_TimestampedWords")
seq.setMetadata(metadata, "CMU_MOSI_TimestampedWords")
seq.deploy(out)

dataset = md.mmdataset({"words": out, "labels": labels})
dataset.align("labels")
reference = {}
for key in sorted(dataset["words"].keys()):
    words = [w[0].decode("utf-8") for w in dataset["words"][key]["features"]]
    reference[key] = {"words": words, "text": " ".join(w for w in words if w != "sp")}
with open(os.path.join(mosi, "words_aligned_reference.json"), "w") as f:
    json.dump(reference, f, indent=1, ensure_ascii=False, sort_keys=True)
    f.write("\n")
