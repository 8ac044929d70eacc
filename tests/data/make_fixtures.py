"""Writes the small test inputs in this folder with h5py, numpy and pickle themselves.

    python tests/data/make_fixtures.py ../shared/fixtures

Everything is derived from the shared fixtures (written by the CMU SDK, h5py and numpy):
- `csv/facet/<video>.csv`: MOSI FACET frames as OpenFace-style CSV rows (frame, timestamp,
  confidence, success, f0…f46), timestamps = interval starts;
- `npz/words.npz`, `npz/facet.npz`: MOSI words and FACET as `<video>/features` +
  `<video>/intervals` arrays (`np.savez`);
- `npz/facet_fps.npz`: FACET as one `<video>` array per video (timed by fps = 30);
- `bad/no_data.csd`: a computational sequence without its `data` group;
- `bad/length_mismatch.csd`: a video with 5 feature rows and 4 intervals;
- `bad/covarep_43.csd`: MOSI COVAREP with one video's features cut to 43 columns;
- `pickle/p2.pkl`, `pickle/p3.pkl`: two train clips of the MMSA fixture re-pickled with
  protocols 2 and 3 (numpy 2.x);
- `pickle/evil.pkl`: a `__reduce__` payload that would run `os.system` if unpickled.
"""
import os
import pickle
import shutil
import sys

import h5py
import numpy as np

shared = sys.argv[1]
here = os.path.dirname(os.path.abspath(__file__))
mosi = os.path.join(shared, "sdk_basic", "mosi")


def read_csd(path):
    with h5py.File(path, "r") as h:
        root = list(h.keys())[0]
        data = h[root]["data"]
        return {v: (data[v]["features"][:], data[v]["intervals"][:]) for v in data}


def out(*parts):
    path = os.path.join(here, *parts)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    return path


facet = read_csd(os.path.join(mosi, "CMU_MOSI_Visual_Facet_41.csd"))
words = read_csd(os.path.join(mosi, "CMU_MOSI_TimestampedWordVectors.csd"))
covarep_path = os.path.join(mosi, "CMU_MOSI_COVAREP.csd")

# CSV, OpenFace-style bookkeeping columns first.
for video, (features, intervals) in facet.items():
    with open(out("csv", "facet", f"{video}.csv"), "w") as f:
        f.write("frame, timestamp, confidence, success, " + ", ".join(f"f{i}" for i in range(features.shape[1])) + "\n")
        for t, (row, iv) in enumerate(zip(features, intervals)):
            values = ", ".join(repr(float(x)) for x in row)
            f.write(f"{t + 1}, {repr(float(iv[0]))}, 0.98, 1, {values}\n")

np.savez(out("npz", "words.npz"), **{f"{v}/{k}": a for v, (x, iv) in words.items() for k, a in (("features", x), ("intervals", iv))})
np.savez(out("npz", "facet.npz"), **{f"{v}/{k}": a for v, (x, iv) in facet.items() for k, a in (("features", x), ("intervals", iv))})
np.savez(out("npz", "facet_fps.npz"), **{v: x for v, (x, iv) in facet.items()})

with h5py.File(out("bad", "no_data.csd"), "w") as h:
    g = h.create_group("CMU_MOSI_COVAREP")
    m = g.create_group("metadata")
    m.create_dataset("root name", (1,), dtype=h5py.special_dtype(vlen=str))[0] = "CMU_MOSI_COVAREP"

with h5py.File(out("bad", "length_mismatch.csd"), "w") as h:
    d = h.create_group("CMU_MOSI_COVAREP").create_group("data").create_group("2iD-tVS8NPw")
    d.create_dataset("features", data=np.zeros((5, 74), np.float32))
    d.create_dataset("intervals", data=np.zeros((4, 2), np.float64))

shutil.copy(covarep_path, out("bad", "covarep_43.csd"))
with h5py.File(out("bad", "covarep_43.csd"), "a") as h:
    data = h["CMU_MOSI_COVAREP"]["data"]
    video = sorted(data.keys())[1]
    features = data[video]["features"][:, :43]
    del data[video]["features"]
    data[video].create_dataset("features", data=features)

with open(os.path.join(shared, "mmsa_mosei_numpy1_p4.pkl"), "rb") as f:
    full = pickle.load(f)
small = {"train": {k: (v[:2] if hasattr(v, "__len__") else v) for k, v in full["train"].items()}}
for protocol in (2, 3):
    with open(out("pickle", f"p{protocol}.pkl"), "wb") as f:
        pickle.dump(small, f, protocol=protocol)


class Evil:
    def __reduce__(self):
        return (os.system, ("echo mmflow must never run this",))


with open(out("pickle", "evil.pkl"), "wb") as f:
    pickle.dump({"train": {"id": Evil()}}, f, protocol=4)
print("written under", here)
