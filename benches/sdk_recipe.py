"""mmflow's `csd` source against the CMU Multimodal SDK's standard recipe, on the same files.

    pip install -r benches/requirements-bench.txt
    cargo build --release
    python benches/sdk_recipe.py --videos 160            # generates ~1.4 GB of .csd, then times

Generates MOSEI-shaped computational sequences with h5py (GloVe 300-d per word, COVAREP
74-d at 100 Hz with occasional -inf, OpenFace2 713-d at 30 Hz, ~72 s per video, ~7 labelled
segments per video, 7 label columns), then runs, each in its own process under
/usr/bin/time (wall time, peak RSS):

1. h5py reading every dataset of the files (the raw I/O rate);
2. the SDK recipe: load, align to the words with the mean, add the labels, align to them,
   write one Parquet table per modality with pyarrow;
3. `mmflow run` of the equivalent `csd` stage.
"""
import argparse
import json
import os
import pathlib
import subprocess
import sys
import tempfile
import time

import numpy as np

from results import record

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parent
METADATA = {
    "alignment compatible": "True",
    "computational sequence description": "MOSEI-shaped benchmark data",
    "computational sequence version": "1.0",
    "contact": "n/a",
    "creator": "mmflow benches/sdk_recipe.py",
    "dataset bib citation": "n/a",
    "dataset name": "CMU-MOSEI",
    "dataset version": "1.0",
    "featureset bib citation": "n/a",
    "md5": "n/a",
    "uuid": "n/a",
}


def write_csd(path, root, entries):
    import h5py

    with h5py.File(path, "w") as h:
        g = h.create_group(root)
        data = g.create_group("data")
        for video, (features, intervals) in entries:
            v = data.create_group(video)
            v.create_dataset("features", data=features)
            v.create_dataset("intervals", data=intervals)
        meta = g.create_group("metadata")
        for key, value in {**METADATA, "root name": root}.items():
            meta.create_dataset(key, (1,), dtype=h5py.special_dtype(vlen=str))[0] = value


def generate(folder, n_videos, seed=0):
    rng = np.random.default_rng(seed)
    folds = json.loads((ROOT / "data" / "standard_folds.json").read_text())["mosei"]
    videos = (folds["train"] + folds["valid"] + folds["test"])[:n_videos]

    def per_video(make):
        for v in videos:
            yield v, make(v)

    duration = {v: 72.0 + rng.uniform(-10, 10) for v in videos}

    def words(v):
        t, rows = 0.2, []
        while t < duration[v] - 1:
            d = rng.uniform(0.15, 0.6)
            rows.append([t, t + d])
            t += d + rng.uniform(0.0, 0.3)
        iv = np.array(rows)
        return rng.standard_normal((len(iv), 300)).astype(np.float32), iv

    def frames(rate, dim, neginf=0.0):
        def make(v):
            n = int(duration[v] * rate)
            t = np.arange(n, dtype=np.float64)
            x = rng.standard_normal((n, dim)).astype(np.float32)
            if neginf:
                x[rng.random((n, dim)) < neginf] = -np.inf
            return x, np.stack([t / rate, (t + 1) / rate], axis=1)
        return make

    def labels(v):
        k = rng.integers(4, 10)
        starts = np.sort(rng.uniform(0, duration[v] - 8, k))
        iv = np.stack([starts, starts + rng.uniform(2, 8, k)], axis=1)
        y = np.concatenate([rng.uniform(-3, 3, (k, 1)), rng.uniform(0, 3, (k, 6))], axis=1).astype(np.float32)
        return y, iv

    files = {
        "words": ("CMU_MOSEI_TimestampedGloveVectors", words),
        "COVAREP": ("CMU_MOSEI_COVAREP", frames(100, 74, neginf=0.0005)),
        "OpenFace2": ("CMU_MOSEI_VisualOpenFace2", frames(30, 713)),
        "labels": ("CMU_MOSEI_Labels", labels),
    }
    paths = {}
    for name, (root, make) in files.items():
        path = folder / f"{root}.csd"
        write_csd(path, root, per_video(make))
        paths[name] = path
    return paths


SDK_RECIPE = r"""
import importlib.util, os, sys, types, numpy as np, pyarrow as pa, pyarrow.parquet as pq
# `import mmsdk` also imports its model SDK (and torch); load only the data SDK.
spec = importlib.util.find_spec('mmsdk')
package = types.ModuleType('mmsdk')
package.__path__ = list(spec.submodule_search_locations)
sys.modules['mmsdk'] = package
from mmsdk import mmdatasdk
paths, out = dict(a.split('=', 1) for a in sys.argv[1:-1]), sys.argv[-1]
def avg(intervals, features):
    return np.average(features, axis=0)
ds = mmdatasdk.mmdataset({k: v for k, v in paths.items() if k != 'labels'})
ds.align('words', collapse_functions=[avg])
ds.add_computational_sequences({'labels': paths['labels']}, destination=None)
ds.align('labels')
for name in ds.keys():
    seq = ds[name]
    ids = sorted(seq.keys())
    arrays = [np.asarray(seq[i]['features'], dtype=np.float32) for i in ids]
    dim = arrays[0].shape[1]
    offsets = np.concatenate([[0], np.cumsum([a.shape[0] for a in arrays])]).astype(np.int32)
    values = pa.array(np.concatenate(arrays).reshape(-1))
    frames = pa.ListArray.from_arrays(pa.array(offsets), pa.FixedSizeListArray.from_arrays(values, dim))
    pq.write_table(pa.table({'segment_id': ids, 'frames': frames}), f'{out}/{name}.parquet', compression='zstd')
"""

H5PY_READ = r"""
import sys, h5py
total = 0
for path in sys.argv[1:]:
    with h5py.File(path, 'r') as h:
        root = list(h.keys())[0]
        for v, g in h[root]['data'].items():
            total += g['features'][()].nbytes + g['intervals'][()].nbytes
print(total)
"""


def timed(cmd, **kw):
    """Runs `cmd` under /usr/bin/time; returns (wall seconds, peak RSS in MB, stdout)."""
    with tempfile.NamedTemporaryFile("r") as t:
        start = time.perf_counter()
        out = subprocess.run(["/usr/bin/time", "-f", "%M", "-o", t.name, *cmd], check=True, capture_output=True, text=True, **kw)
        wall = time.perf_counter() - start
        rss = int(t.read().strip().splitlines()[-1]) / 1024
    return wall, rss, out.stdout


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--videos", type=int, default=160)
    target = pathlib.Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
    ap.add_argument("--dir", type=pathlib.Path, default=target / "bench-sdk")
    ap.add_argument("--mmflow", default=str(target / "release" / "mmflow"))
    ap.add_argument("--skip-sdk", action="store_true", help="only time h5py and mmflow (e.g. at full MOSEI scale)")
    args = ap.parse_args()
    data = args.dir / f"mosei-{args.videos}"
    data.mkdir(parents=True, exist_ok=True)
    marker = data / "done"
    if not marker.exists():
        print(f"generating {args.videos} MOSEI-shaped videos in {data} …", flush=True)
        generate(data, args.videos)
        marker.write_text("ok")
    paths = {
        "words": data / "CMU_MOSEI_TimestampedGloveVectors.csd",
        "COVAREP": data / "CMU_MOSEI_COVAREP.csd",
        "OpenFace2": data / "CMU_MOSEI_VisualOpenFace2.csd",
        "labels": data / "CMU_MOSEI_Labels.csd",
    }
    size = sum(p.stat().st_size for p in paths.values())
    print(f"{args.videos} videos, {size / 1e9:.2f} GB of .csd")

    # Twice, keeping the faster: both tools then read from a warm page cache.
    runs = [timed([sys.executable, "-c", H5PY_READ, *map(str, paths.values())]) for _ in range(2)]
    h5_wall, h5_rss, out = min(runs)
    raw = int(out.strip())
    print(f"h5py plain read        {h5_wall:7.2f} s  {h5_rss:7.0f} MB peak  {raw / h5_wall / 1e9:.2f} GB/s")

    config = data / "mmflow.toml"
    config.write_text(
        "[pipeline]\nname = \"bench\"\nrun_cache = false\n[stages.mosei]\nkind = \"csd\"\n[stages.mosei.params]\n"
        f"dataset = \"mosei\"\nlabels = {{ path = \"{paths['labels']}\" }}\n"
        "[stages.mosei.params.modalities]\n"
        + "".join(f"{k} = {{ path = \"{v}\" }}\n" for k, v in paths.items() if k != "labels")
    )
    out_dir = data / "mmflow-run"

    def first_run():
        # A first run in a new run directory (no run-cache): the sources' hashes are unknown.
        subprocess.run(["rm", "-rf", str(out_dir)], check=True)
        return timed([args.mmflow, "run", str(config), "--out", str(out_dir), "-q"])

    # Twice each, keeping the faster, as for h5py.
    mm_wall, mm_rss, _ = min(first_run() for _ in range(2))
    print(f"mmflow run (csd)       {mm_wall:7.2f} s  {mm_rss:7.0f} MB peak  {raw / mm_wall / 1e9:.2f} GB/s = {h5_wall / mm_wall:.0%} of h5py's rate (first run: hashes the sources too)")
    warm_wall, warm_rss, _ = min(timed([args.mmflow, "run", str(config), "--out", str(out_dir), "-q", "--force", "mosei"]) for _ in range(2))
    print(f"mmflow run --force     {warm_wall:7.2f} s  {warm_rss:7.0f} MB peak  {raw / warm_wall / 1e9:.2f} GB/s = {h5_wall / warm_wall:.0%} of h5py's rate (source hashes known)")

    record(f"csd first run, {args.videos} MOSEI-shaped videos (h5py plain read)", mm_wall, h5_wall, h5_wall / mm_wall, f"{mm_rss:.0f} MB vs {h5_rss:.0f} MB", unit="s")
    record(f"csd re-run, {args.videos} videos (h5py plain read)", warm_wall, h5_wall, h5_wall / warm_wall, f"{warm_rss:.0f} MB vs {h5_rss:.0f} MB", unit="s")
    if args.skip_sdk:
        return
    sdk_out = data / "sdk-run"
    sdk_out.mkdir(exist_ok=True)
    sdk_wall, sdk_rss, _ = timed([sys.executable, "-c", SDK_RECIPE, *(f"{k}={v}" for k, v in paths.items()), str(sdk_out)])
    print(f"SDK recipe + pyarrow   {sdk_wall:7.2f} s  {sdk_rss:7.0f} MB peak")
    record(f"SDK recipe, {args.videos} videos (CMU SDK + pyarrow)", mm_wall, sdk_wall, sdk_wall / mm_wall, f"{mm_rss:.0f} MB vs {sdk_rss:.0f} MB ({mm_rss / sdk_rss:.2f}x)", unit="s")
    print(f"\nmmflow is {sdk_wall / mm_wall:.1f}x faster than the SDK recipe at {mm_rss / sdk_rss:.2f}x its peak memory")


if __name__ == "__main__":
    main()
