"""Writes the test inputs in this folder from the full fixture sets, with h5py, numpy and pickle.

    python tests/data/make_fixtures.py <folder of the full fixture sets>

The full sets (CMU-MultimodalSDK `computational_sequence.deploy` output, the SDK's own
`mmdataset.align` result, MMSA pickles written by numpy 1.x and 2.x) are too big to ship; this
keeps a few videos of each, chosen so that every property the tests check still holds (see
`KEEP`). Tests never run this script: they read what it wrote.

- `sdk/<set>/<dataset>/*.csd`: the kept videos' HDF5 groups copied with h5py (dtypes,
  gzip compression and chunking preserved), the `metadata` group as it was;
- `sdk/<set>/<dataset>/sdk_aligned_reference.npz`: the SDK's alignment output for the kept
  videos (alignment is per video, so each kept entry is exactly the SDK's);
- `sdk/<set>/INDEX.json`: the full set's index, reduced to the kept videos;
- `sdk/sdk_basic/mmsa_*_aligned_50.pkl`: MMSA pickles (numpy 2.x, protocols 4 and 5) with a
  few clips per split, re-dumped with the original's protocol;
- `sdk/mmsa_mosei_numpy1_p4.pkl`: the numpy 1.x / protocol 4 pickle with a few clips per
  split, written with numpy 1.x's globals (`numpy.core.*`); the writer is checked to reproduce
  the full original byte for byte before it is trusted with the subset;
- `sdk/EXPECTED.json`: what numpy/h5py read from every shipped .csd and .pkl (shape, dtype,
  finite sum, NaN/+inf/-inf counts, first values; per .csd its metadata strings);
- `csv/facet/<video>.csv`: the kept MOSI FACET frames as OpenFace-style CSV rows (frame,
  timestamp, confidence, success, f0…f46; shortest float32 text), timestamps = interval starts;
- `npz/words.npz`, `npz/facet.npz`: MOSI words and FACET as `<video>/features` +
  `<video>/intervals` arrays (`np.savez`);
- `npz/facet_fps.npz`: FACET as one `<video>` array per video (timed by fps = 30);
- `bad/no_data.csd`: a computational sequence without its `data` group;
- `bad/length_mismatch.csd`: a video with 5 feature rows and 4 intervals;
- `bad/covarep_43.csd`: two videos of MOSI COVAREP, `8d-gEyoeBzc`'s features cut to 43 columns;
- `pickle/p2.pkl`, `pickle/p3.pkl`: two train clips of the numpy 1.x pickle re-pickled with
  protocols 2 and 3 (numpy 2.x);
- `pickle/evil.pkl`: a `__reduce__` payload that would run `os.system` if unpickled.
"""
import io
import json
import os
import pickle
import shutil
import sys

import h5py
import numpy as np

full = sys.argv[1]
here = os.path.dirname(os.path.abspath(__file__))
sdk = os.path.join(here, "sdk")

# Videos kept per set and dataset, and why:
KEEP = {
    "sdk_basic": {
        # Two train videos (8d-gEyoeBzc is the one bad/covarep_43.csd narrows), the smallest
        # valid and test videos: every standard fold, and four videos so fold overrides can
        # leave one out.
        "mosi": ["2iD-tVS8NPw", "8d-gEyoeBzc", "WKA5OygbEKI", "lXPQBPVc5Cw"],
        # The smallest train video and a numeric id like real MOSEI ones (valid).
        "mosei": ["4iG0ffmnCOw", "188343"],
    },
    "sdk_edge": {
        # 2iD-tVS8NPw holds the zero-length label interval, 8d-gEyoeBzc the NaN frames that
        # cover a whole word (NaN in the SDK's aligned FACET), lXPQBPVc5Cw is the video FACET
        # lacks (test). Every video has float64 gzip-chunked COVAREP with -inf, and NaN FACET
        # frames.
        "mosi": ["2iD-tVS8NPw", "8d-gEyoeBzc", "lXPQBPVc5Cw"],
        # hh04W3xXa5s holds the zero-length label interval (train), dZFV0lyedX4 is the video
        # OpenFace2 lacks (test). Gzip-chunked COVAREP with -inf, NaN OpenFace2 frames.
        "mosei": ["hh04W3xXa5s", "dZFV0lyedX4"],
    },
}
# Clips kept per split of the MMSA pickles (the numpy 1.x one: the first train clip carries
# -inf within its audio length, as does the first clip of every split; two train clips feed
# pickle/p2.pkl and p3.pkl; `vid5_0$_$0` is in every split, so ids repeat across splits).
NUMPY1_CLIPS = {"train": 2, "valid": 1, "test": 1}
# The numpy 2.x pickles (768-d text): one clip per split keeps the layout.
MMSA = ["mmsa_mosi_aligned_50.pkl", "mmsa_mosei_aligned_50.pkl"]
MMSA_CLIPS = {"train": 1, "valid": 1, "test": 1}


def out(*parts):
    path = os.path.join(here, *parts)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    return path


def stats(x):
    """EXPECTED.json's entry for one array: numpy's view of it."""
    x = np.asarray(x)
    if x.dtype == object or x.dtype.kind in "US":
        return {"shape": list(x.shape), "dtype": "str", "first": [str(s) for s in x.ravel()[:2]]}
    flat = x.ravel().astype(np.float64)
    return {
        "shape": list(x.shape),
        "dtype": str(x.dtype),
        "finite_sum": float(flat[np.isfinite(flat)].sum()),
        "nan": int(np.isnan(flat).sum()),
        "posinf": int(np.isposinf(flat).sum()),
        "neginf": int(np.isneginf(flat).sum()),
        "first": [float(v) for v in flat[:3]],
    }


def csd_expected(path):
    with h5py.File(path, "r") as h:
        root = list(h.keys())[0]
        data = h[root]["data"]
        metadata = {}
        for key, value in h[root]["metadata"].items():
            v = value[()]
            v = v[0] if getattr(v, "shape", ()) else v
            metadata[key] = v.decode() if isinstance(v, bytes) else str(v)
        return {
            "root": root,
            "videos": {
                v: {"features": stats(data[v]["features"][:]), "intervals": stats(data[v]["intervals"][:])}
                for v in data
            },
            "metadata": metadata,
        }


def pickle_expected(root):
    return {
        split: {key: stats(np.asarray(value) if isinstance(value, list) else value) for key, value in arrays.items()}
        for split, arrays in root.items()
    }


def subset_csd(src, dst, videos):
    """Copies the kept videos' groups and the metadata group with h5py (creation properties kept)."""
    with h5py.File(src, "r") as s, h5py.File(dst, "w") as d:
        (root,) = s.keys()
        group = d.create_group(root)
        s[root].copy("metadata", group)
        data = group.create_group("data")
        for video in videos:
            if video in s[root]["data"]:
                s[root]["data"].copy(video, data)


def subset_reference(src, dst, videos):
    with np.load(src) as npz:
        kept = {k: npz[k] for k in npz.files if k.split("/")[1].rsplit("[", 1)[0] in videos}
    np.savez_compressed(dst, **kept)


def subset_pickle(root, clips):
    def cut(value, n):
        return value[:n] if isinstance(value, list) else np.ascontiguousarray(value[:n]).copy()

    return {split: {k: cut(v, clips[split]) for k, v in arrays.items()} for split, arrays in root.items()}


class Numpy1Pickler(pickle._Pickler):
    """Pickles numpy 2.x arrays as numpy 1.x did: globals under `numpy.core`, not `numpy._core`."""

    def save_global(self, obj, name=None):
        module = getattr(obj, "__module__", "") or ""
        if not module.startswith("numpy._core"):
            return super().save_global(obj, name)
        self.save("numpy.core" + module[len("numpy._core"):])
        self.save(name or obj.__qualname__)
        self.write(pickle.STACK_GLOBAL)
        self.memoize(obj)


def numpy1_dumps(root):
    f = io.BytesIO()
    Numpy1Pickler(f, protocol=4).dump(root)
    return f.getvalue()


expected = {}
shutil.rmtree(sdk, ignore_errors=True)
for fixture_set, datasets in KEEP.items():
    with open(os.path.join(full, fixture_set, "INDEX.json")) as f:
        index = json.load(f)
    for dataset, videos in datasets.items():
        entry = index[dataset]
        assert all(v in {e["video_id"] for e in entry["videos"]} for v in videos), videos
        entry["videos"] = [e for e in entry["videos"] if e["video_id"] in videos]
        folder = os.path.join(full, fixture_set, dataset)
        for name in sorted(entry["files"].values()):
            rel = f"{fixture_set}/{dataset}/{name}"
            subset_csd(os.path.join(folder, name), out("sdk", rel), videos)
            expected[rel] = csd_expected(out("sdk", rel))
        subset_reference(
            os.path.join(folder, "sdk_aligned_reference.npz"),
            out("sdk", fixture_set, dataset, "sdk_aligned_reference.npz"),
            videos,
        )
    index["subset_of"] = f"the full {fixture_set} set: videos kept by tests/data/make_fixtures.py"
    with open(out("sdk", fixture_set, "INDEX.json"), "w") as f:
        json.dump(index, f, indent=1)

# The copies read as the full files read, video by video.
with open(os.path.join(full, "EXPECTED.json")) as f:
    full_expected = json.load(f)
for rel, entry in expected.items():
    assert entry["metadata"] == full_expected[rel]["metadata"], rel
    for video, arrays in entry["videos"].items():
        assert arrays == full_expected[rel]["videos"][video], (rel, video)

for name in MMSA:
    src = os.path.join(full, "sdk_basic", name)
    with open(src, "rb") as f:
        protocol = f.read(2)[1]
        f.seek(0)
        small = subset_pickle(pickle.load(f), MMSA_CLIPS)
    with open(out("sdk", "sdk_basic", name), "wb") as f:
        pickle.dump(small, f, protocol=protocol)
    expected[f"sdk_basic/{name}"] = pickle_expected(small)

with open(os.path.join(full, "mmsa_mosei_numpy1_p4.pkl"), "rb") as f:
    original = f.read()
numpy1 = pickle.loads(original)
assert numpy1_dumps(numpy1) == original, "the numpy 1.x writer does not reproduce the original"
numpy1_small = subset_pickle(numpy1, NUMPY1_CLIPS)
with open(out("sdk", "mmsa_mosei_numpy1_p4.pkl"), "wb") as f:
    f.write(numpy1_dumps(numpy1_small))
expected["mmsa_mosei_numpy1_p4.pkl"] = pickle_expected(numpy1_small)

with open(out("sdk", "EXPECTED.json"), "w") as f:
    json.dump(dict(sorted(expected.items())), f, indent=1)


def check_kept_properties():
    """The properties the tests rely on hold in the subsets (see KEEP)."""

    def data(rel):
        h = h5py.File(os.path.join(sdk, rel), "r")
        return h, h[list(h.keys())[0]]["data"]

    for dataset, visual in (("mosi", "CMU_MOSI_Visual_Facet_41.csd"), ("mosei", "CMU_MOSEI_VisualOpenFace2.csd")):
        labels = {"mosi": "CMU_MOSI_Opinion_Labels.csd", "mosei": "CMU_MOSEI_Labels.csd"}[dataset]
        covarep = f"sdk_edge/{dataset}/CMU_{dataset.upper()}_COVAREP.csd"
        h, d = data(f"sdk_edge/{dataset}/{labels}")
        assert set(d) - set(data(f"sdk_edge/{dataset}/{visual}")[1]), f"{dataset}: a video lacks {visual}"
        assert any((d[v]["intervals"][:, 1] == d[v]["intervals"][:, 0]).any() for v in d), "zero-length interval"
        h, d = data(covarep)
        assert all(d[v]["features"].compression == "gzip" and d[v]["features"].chunks for v in d), covarep
        assert all(np.isneginf(d[v]["features"][:]).any() for v in d), covarep
        h, d = data(f"sdk_edge/{dataset}/{visual}")
        assert all(np.isnan(d[v]["features"][:]).any() for v in d), visual
    h, d = data("sdk_edge/mosi/CMU_MOSI_COVAREP.csd")
    assert all(d[v]["features"].dtype == np.float64 for v in d), "float64 COVAREP"
    with np.load(os.path.join(sdk, "sdk_edge", "mosi", "sdk_aligned_reference.npz")) as z:
        assert any(np.isnan(z[k]).any() for k in z.files if k.startswith("FACET/")), "NaN in aligned FACET"
        # A segment of three words or more, for truncation to `max_length = 2`.
        assert any(z[k].shape[0] >= 3 for k in z.files if k.startswith("words/")), "no long segment"
    assert any(v.isdigit() for v in KEEP["sdk_basic"]["mosei"] + KEEP["sdk_edge"]["mosei"]), "numeric MOSEI id"
    with open(os.path.join(sdk, "sdk_basic", "INDEX.json")) as f:
        folds = [e["fold"] for e in json.load(f)["mosi"]["videos"]]
    assert {"train", "valid", "test"} <= set(folds) and folds.count("train") >= 2 and len(folds) >= 4, folds


check_kept_properties()

# Other formats, from the kept MOSI videos of the basic set.
mosi = os.path.join(sdk, "sdk_basic", "mosi")


def read_csd(path):
    with h5py.File(path, "r") as h:
        root = list(h.keys())[0]
        data = h[root]["data"]
        return {v: (data[v]["features"][:], data[v]["intervals"][:]) for v in data}


facet = read_csd(os.path.join(mosi, "CMU_MOSI_Visual_Facet_41.csd"))
words = read_csd(os.path.join(mosi, "CMU_MOSI_TimestampedWordVectors.csd"))

# CSV, OpenFace-style bookkeeping columns first.
shutil.rmtree(os.path.join(here, "csv"), ignore_errors=True)
for video, (features, intervals) in facet.items():
    with open(out("csv", "facet", f"{video}.csv"), "w") as f:
        f.write("frame, timestamp, confidence, success, " + ", ".join(f"f{i}" for i in range(features.shape[1])) + "\n")
        for t, (row, iv) in enumerate(zip(features, intervals)):
            values = ", ".join(str(x) for x in row.astype(np.float32))
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

narrowed = "8d-gEyoeBzc"
covarep = os.path.join(mosi, "CMU_MOSI_COVAREP.csd")
subset_csd(covarep, out("bad", "covarep_43.csd"), ["2iD-tVS8NPw"])
with h5py.File(covarep, "r") as src, h5py.File(out("bad", "covarep_43.csd"), "a") as h:
    video = src["CMU_MOSI_COVAREP"]["data"][narrowed]
    group = h["CMU_MOSI_COVAREP"]["data"].create_group(narrowed)
    group.create_dataset("features", data=video["features"][:, :43])
    video.copy("intervals", group)

small = {"train": {k: (v[:2] if hasattr(v, "__len__") else v) for k, v in numpy1["train"].items()}}
for protocol in (2, 3):
    with open(out("pickle", f"p{protocol}.pkl"), "wb") as f:
        pickle.dump(small, f, protocol=protocol)


class Evil:
    def __reduce__(self):
        return (os.system, ("echo mmflow must never run this",))


with open(out("pickle", "evil.pkl"), "wb") as f:
    pickle.dump({"train": {"id": Evil()}}, f, protocol=4)
print("written under", here)
