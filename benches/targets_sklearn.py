"""scikit-learn's KMeans and numpy's cosine top-1 on the data `benches/targets.rs` uses, and
the ratios to mmflow's times from criterion's last run (and its inertias).

    cargo bench --bench targets && python benches/targets_sklearn.py
"""
import json
import os
import pathlib
import time

import numpy as np
from sklearn.cluster import KMeans

from results import record

DIM = 300
TARGET = pathlib.Path(os.environ.get("CARGO_TARGET_DIR", "target"))


def hash01(v):
    return ((v * np.uint64(2654435761)) % np.uint64(1 << 32)).astype(np.float64) / float(1 << 32)


def points(n, salt):
    i = np.arange(n, dtype=np.uint64)[:, None]
    j = np.arange(DIM, dtype=np.uint64)[None, :]
    cluster = (i * np.uint64(7) + np.uint64(salt)) % np.uint64(40)
    center = (hash01(cluster * np.uint64(1_000_003) + j) - 0.5) * 4.0
    noise = hash01(np.uint64(salt) * np.uint64(10_000_000_000) + i * np.uint64(DIM) + j + np.uint64(7)) - 0.5
    return (center + 2.0 * noise).astype(np.float32)


def median_of(fn, repeats=5):
    """The median time of `repeats` runs: the statistic criterion reports for mmflow's side."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return float(np.median(times)), out


def criterion_ms(name):
    path = TARGET / "criterion" / "targets" / name / "new" / "estimates.json"
    return json.loads(path.read_text())["median"]["point_estimate"] / 1e6 if path.exists() else None


def main():
    targets, sources = points(22856, 0), points(2199, 1)
    ours = json.loads((TARGET / "bench-targets.json").read_text()) if (TARGET / "bench-targets.json").exists() else {}
    print(f"{'work':<22} {'python':>10} {'mmflow':>10} {'speed-up':>9}   mean inertia over 5 seeds, sklearn / mmflow")
    for k in (16, 64):
        t, _ = median_of(lambda: KMeans(n_clusters=k, n_init=1, init="k-means++", max_iter=100, tol=1e-4, random_state=0).fit(targets))
        # k-means++ is random: compare mean inertias over the same five seeds on both sides.
        theirs = np.mean([KMeans(n_clusters=k, n_init=1, init="k-means++", max_iter=100, tol=1e-4, random_state=s).fit(targets).inertia_ for s in range(5)])
        mine = criterion_ms(f"kmeans/{k}")
        inertia = ours.get(f"kmeans_k{k}")
        ratio = f"{t * 1e3 / mine:.2f}x" if mine else "-"
        rel = f"{theirs:.4g} / {inertia:.4g} ({inertia / theirs - 1:+.2%})" if inertia else "-"
        print(f"{'k-means k=' + str(k):<22} {t * 1e3:8.1f}ms {mine or float('nan'):8.1f}ms {ratio:>9}   {rel}")
        if mine:
            record(f"k-means k={k}, 22856x300 (scikit-learn; inertia {rel})", mine, t * 1e3, t * 1e3 / mine, unit="ms")

    def cosine():
        q = sources / np.linalg.norm(sources, axis=1, keepdims=True)
        t = targets / np.linalg.norm(targets, axis=1, keepdims=True)
        return (q @ t.T).argmax(axis=1)

    t, _ = median_of(cosine)
    mine = criterion_ms("cosine_top1")
    ratio = f"{t * 1e3 / mine:.2f}x" if mine else "-"
    print(f"{'cosine top-1':<22} {t * 1e3:8.1f}ms {mine or float('nan'):8.1f}ms {ratio:>9}")
    if mine:
        record("cosine top-1, 2199x22856x300 (numpy)", mine, t * 1e3, t * 1e3 / mine, unit="ms")


if __name__ == "__main__":
    main()
