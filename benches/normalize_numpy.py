"""numpy's per-feature mean/std (float64 accumulation) on the data `benches/normalize.rs`
uses, and the ratio to mmflow's time from criterion's last run.

    cargo bench --bench normalize && python benches/normalize_numpy.py
"""
import json
import os
import pathlib
import time

import numpy as np

from results import record

SHAPES = [(22856, 713), (1_600_000, 74)]


def matrix(rows: int, cols: int) -> np.ndarray:
    i = np.arange(rows * cols, dtype=np.uint64)
    h = (i * np.uint64(2654435761)) % np.uint64(1 << 32)
    x = (h.astype(np.float64) / float(1 << 32) * 10.0 - 5.0).astype(np.float32)
    x[i % 997 == 0] = -np.inf
    return x.reshape(rows, cols)


def numpy_fit(x: np.ndarray):
    # What users write: statistics over finite values in float64.
    finite = np.isfinite(x)
    clean = np.where(finite, x, np.float32(0))
    count = finite.sum(axis=0)
    mean = clean.sum(axis=0, dtype=np.float64) / count
    var = (np.where(finite, x - mean, 0.0) ** 2).sum(axis=0, dtype=np.float64) / count
    return mean, np.sqrt(var)


def plain_fit(x: np.ndarray):
    # The baseline: x.mean/std(axis=0, dtype=float64), blind to -inf.
    return x.mean(axis=0, dtype=np.float64), x.std(axis=0, dtype=np.float64)


def median_of(fn, x, repeats=5):
    """The median time of `repeats` runs: the statistic criterion reports for mmflow's side."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn(x)
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def criterion_ms(rows: int, cols: int):
    target = pathlib.Path(os.environ.get("CARGO_TARGET_DIR", "target"))
    path = target / "criterion" / "normalize_fit" / f"{rows}x{cols}" / "new" / "estimates.json"
    if not path.exists():
        return None
    return json.loads(path.read_text())["median"]["point_estimate"] / 1e6


def main() -> None:
    print(f"{'shape':>14} {'numpy plain':>12} {'numpy finite':>13} {'mmflow':>9} {'speed-up vs plain':>18}")
    for rows, cols in SHAPES:
        x = matrix(rows, cols)
        plain = median_of(plain_fit, x) * 1e3
        finite = median_of(numpy_fit, x) * 1e3
        ours = criterion_ms(rows, cols)
        ratio = f"{plain / ours:.1f}x" if ours else "(run cargo bench first)"
        ours_s = f"{ours:.1f} ms" if ours else "-"
        print(f"{rows:>7}x{cols:<6} {plain:>9.1f} ms {finite:>10.1f} ms {ours_s:>9} {ratio:>18}")
        if ours:
            record(f"normalize fit {rows}x{cols} (numpy f64)", ours, plain, plain / ours, unit="ms")


if __name__ == "__main__":
    main()
