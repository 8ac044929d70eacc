"""mmflow's `mmsa_pickle` source against `pickle.load` + pyarrow, on the same MMSA pickle.

    pip install -r benches/requirements-bench.txt
    cargo build --release
    python benches/mmsa_pickle.py --scale 0.125          # generates a ~1.0 GB pickle, then times

The pickle is shaped like CMU-MOSEI's `unaligned_50.pkl` (`benches/mmsa_pickle_gen.py`:
BERT text 50×768, COVAREP 500×74, Facet 375×35, float32). Each side runs in its own process
under /usr/bin/time (wall time, peak RSS):

1. `mmflow run` of an `mmsa_pickle` stage (first run: the executor hashes the file too), then
   again with `--force` (the hash is known: the stage alone);
2. the anchor: `pickle.load` of the file, then the same tables built with numpy (sequences
   cut to `*_lengths`, -inf in audio zeroed, a pooled mean per segment) and written with
   pyarrow as mmflow writes them (zstd level 3, no dictionary, one row group per split).

Prints one line per side and a summary: workload, mmflow, anchor, ratio, memory.
"""
import argparse
import os
import pathlib
import subprocess
import sys
import tempfile
import time

from results import record

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

MODALITIES = {"text": "text", "audio": "audio", "visual": "vision"}

ANCHOR = r"""
import pickle, sys
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

src, out = sys.argv[1], sys.argv[2]
MODALITIES = {"text": "text", "audio": "audio", "visual": "vision"}
with open(src, "rb") as f:
    data = pickle.load(f)
opts = dict(compression="zstd", compression_level=3, use_dictionary=False)
seg = {"dataset": [], "video_id": [], "segment_id": [], "split": [], "sentiment": []}
writers = {}
for split in ["train", "valid", "test"]:
    d = data[split]
    ids = [str(x) for x in d["id"]]
    segment_ids = [i.replace("$_$", "[") + "]" for i in ids]
    seg["dataset"] += ["mosei"] * len(ids)
    seg["video_id"] += [i.split("$_$")[0] for i in ids]
    seg["segment_id"] += segment_ids
    seg["split"] += [split] * len(ids)
    seg["sentiment"] += [float(x) for x in d["regression_labels"]]
    for name, key in MODALITIES.items():
        x = d[key]
        n, steps, dim = x.shape
        lengths = np.minimum(np.asarray(d.get(key + "_lengths", [steps] * n), dtype=np.int64), steps)
        frames = x[np.arange(steps)[None, :] < lengths[:, None]]
        if name == "audio":
            frames[~np.isfinite(frames)] = 0.0
        offsets = np.zeros(n + 1, dtype=np.int32)
        np.cumsum(lengths, out=offsets[1:])
        sums = np.add.reduceat(frames, np.minimum(offsets[:-1], max(len(frames) - 1, 0)), axis=0) if len(frames) else np.zeros((n, dim), np.float32)
        with np.errstate(invalid="ignore", divide="ignore"):
            pooled = np.where(lengths[:, None] > 0, sums, np.nan) / lengths[:, None]
        vectors = pa.FixedSizeListArray.from_arrays(pa.array(frames.reshape(-1)), dim)
        table = pa.table({
            "segment_id": pa.array(segment_ids),
            "length": pa.array(lengths.astype(np.int32)),
            "frames": pa.ListArray.from_arrays(pa.array(offsets), vectors),
            "pooled": pa.FixedSizeListArray.from_arrays(pa.array(pooled.astype(np.float32).reshape(-1)), dim),
        })
        if name not in writers:
            writers[name] = pq.ParquetWriter(f"{out}/{name}.parquet", table.schema, **opts)
        writers[name].write_table(table)
        del frames, vectors, table
for w in writers.values():
    w.close()
pq.write_table(pa.table(seg), f"{out}/segments.parquet", **opts)
"""


def timed(cmd, **kw):
    """Runs `cmd` under /usr/bin/time; returns (wall seconds, peak RSS in MB)."""
    with tempfile.NamedTemporaryFile("r") as t:
        start = time.perf_counter()
        subprocess.run(["/usr/bin/time", "-f", "%M", "-o", t.name, *cmd], check=True, **kw)
        wall = time.perf_counter() - start
        rss = int(t.read().strip().splitlines()[-1]) / 1024
    return wall, rss


def main():
    target = pathlib.Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scale", type=float, default=0.125, help="fraction of MOSEI (1.0 = ~8.1 GB)")
    ap.add_argument("--pickle", help="an existing MMSA pickle to use instead of generating one")
    ap.add_argument("--dir", help="where the pickle and the outputs go (default: a temporary folder)")
    ap.add_argument("--mmflow", default=str(target / "release" / "mmflow"))
    ap.add_argument("--skip-anchor", action="store_true", help="only time mmflow (e.g. at full scale)")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        work = pathlib.Path(args.dir or tmp)
        work.mkdir(parents=True, exist_ok=True)
        if args.pickle:
            pkl = pathlib.Path(args.pickle).resolve()
        else:
            from mmsa_pickle_gen import generate

            pkl = work / f"mosei_unaligned_{args.scale}.pkl"
            if not pkl.exists():
                print(f"generating {pkl} …", flush=True)
                print(generate(pkl, args.scale))
        size = pkl.stat().st_size
        workload = f"MMSA pickle, MOSEI unaligned shape, {size / 1e9:.2f} GB"
        print(workload)

        config = work / "mmsa_bench.toml"
        mods = ", ".join(f'{k} = "{v}"' for k, v in MODALITIES.items())
        config.write_text(
            '[pipeline]\nname = "mmsa_bench"\nrun_cache = false\n[stages.mosei]\nkind = "mmsa_pickle"\n[stages.mosei.params]\n'
            f'path = "{pkl}"\ndataset = "mosei"\nmodalities = {{ {mods} }}\nnonfinite = {{ audio = "zero" }}\n'
        )
        out_dir = work / "mmflow_out"
        mm_wall, mm_rss = timed([args.mmflow, "run", str(config), "--out", str(out_dir), "-q"])
        print(f"mmflow run             {mm_wall:7.2f} s  {mm_rss:7.0f} MB peak = {mm_rss * 2**20 / size:.2f}x the file (first run: hashes the file too)")
        warm_wall, warm_rss = timed([args.mmflow, "run", str(config), "--out", str(out_dir), "-q", "--force", "mosei"])
        print(f"mmflow run --force     {warm_wall:7.2f} s  {warm_rss:7.0f} MB peak = {warm_rss * 2**20 / size:.2f}x the file (hash known)")
        if args.skip_anchor:
            return
        anchor_out = work / "anchor_out"
        anchor_out.mkdir(exist_ok=True)
        an_wall, an_rss = timed([sys.executable, "-c", ANCHOR, str(pkl), str(anchor_out)])
        print(f"pickle.load + pyarrow  {an_wall:7.2f} s  {an_rss:7.0f} MB peak = {an_rss * 2**20 / size:.2f}x the file")
        print()
        print(f"workload: {workload}")
        print(f"mmflow:   {mm_wall:.2f} s ({warm_wall:.2f} s with the hash known), {mm_rss:.0f} MB peak")
        print(f"anchor:   {an_wall:.2f} s, {an_rss:.0f} MB peak (pickle.load + numpy + pyarrow)")
        print(f"ratio:    {an_wall / mm_wall:.2f}x ({an_wall / warm_wall:.2f}x with the hash known; higher = mmflow faster)")
        print(f"memory:   {mm_rss / an_rss:.2f}x the anchor's peak")
        record(
            f"MMSA pickle to Parquet, {size / 1e9:.2f} GB (pickle.load + pyarrow)",
            mm_wall,
            an_wall,
            an_wall / mm_wall,
            f"{mm_rss:.0f} MB ({mm_rss * 2**20 / size:.2f}x the file) vs {an_rss:.0f} MB",
            unit="s",
        )


if __name__ == "__main__":
    main()
