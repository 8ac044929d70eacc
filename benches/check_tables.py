"""Open every table of an mmflow run directory with pyarrow and polars and check it.

    python benches/check_tables.py data/runs/demo

Proves the tables are plain Parquet that analysts' tools read: schema, mmflow metadata,
sequence lengths, pooled = mean of frames. Exits non-zero on the first problem.
"""
import pathlib
import sys

import numpy as np
import polars as pl
import pyarrow.parquet as pq


def check(path: pathlib.Path) -> None:
    table = pq.read_table(path)
    meta = {k.decode(): v.decode() for k, v in (pq.read_metadata(path).metadata or {}).items()}
    for key in ("mmflow.table", "mmflow.schema_version", "mmflow.version", "mmflow.stage", "mmflow.fingerprint"):
        assert key in meta, f"{path}: metadata {key} missing"
    frame = pl.read_parquet(path)
    assert frame.height == table.num_rows, f"{path}: polars {frame.height} rows, pyarrow {table.num_rows}"
    kind = meta["mmflow.table"]
    if kind == "features":
        dim = int(meta["mmflow.dim"])
        assert frame.schema["pooled"] == pl.Array(pl.Float32, dim), f"{path}: {frame.schema['pooled']}"
        assert frame.schema["frames"] == pl.List(pl.Array(pl.Float32, dim)), f"{path}: {frame.schema['frames']}"
        lengths = frame["frames"].list.len().to_numpy()
        assert (lengths == frame["length"].to_numpy()).all(), f"{path}: lengths"
        first = np.asarray(table.column("frames")[0].as_py(), dtype=np.float64)
        pooled = np.asarray(table.column("pooled")[0].as_py(), dtype=np.float64)
        assert first.shape == (lengths[0], dim), f"{path}: frame shape {first.shape}"
        with np.errstate(invalid="ignore"):
            expect = first.mean(axis=0)
        same = np.isclose(expect, pooled, rtol=1e-5, atol=1e-5) | (np.isnan(expect) & np.isnan(pooled))
        assert same.all(), f"{path}: pooled is not the mean of frames"
    elif kind == "segments":
        for column in ("dataset", "video_id", "segment_id", "split", "speaker_id", "start", "end"):
            assert column in frame.columns, f"{path}: column {column} missing"
        assert set(frame["split"].unique()) <= {"train", "valid", "test"}
        assert frame["segment_id"].n_unique() == frame.height
        for label in meta.get("mmflow.labels", "").split(","):
            if label:
                assert frame.schema[label] == pl.Float32, f"{path}: label {label}"
    elif kind == "norm_stats":
        expected = ["dataset", "modality", "feature", "count", "mean", "std", "min", "max", "nonfinite"]
        assert frame.columns == expected, f"{path}: {frame.columns}"
    elif kind in COLUMNS:
        assert frame.columns == COLUMNS[kind], f"{path}: {frame.columns}"
        if kind == "metrics":
            ci = frame.drop_nulls(["ci_low", "ci_high"])
            assert ci.height > 0, f"{path}: no confidence interval"
            assert ((ci["ci_low"] <= ci["value"]) & (ci["value"] <= ci["ci_high"])).all(), f"{path}: value outside its CI"
        if kind == "history":
            assert frame["is_best"].any(), f"{path}: no best epoch"
        if kind == "targets":
            dim = int(meta["mmflow.dim"])
            assert frame.schema["target"] == pl.Array(pl.Float32, dim), f"{path}: {frame.schema['target']}"


COLUMNS = {
    "history": ["phase", "epoch", "lr", "subject", "metric", "train", "valid", "gap", "is_best"],
    "predictions": ["segment_id", "split", "head", "label", "prediction", "calibrated"],
    "metrics": ["split", "head", "metric", "value", "ci_low", "ci_high", "n", "seed", "note"],
    "diagnostics": ["method", "subject", "metric", "value", "n", "ci_low", "ci_high", "note"],
    "targets": [
        "segment_id", "split", "method", "matched", "cluster", "similarity", "distance",
        "source_label", "target_label", "target",
    ],
}


def main() -> None:
    root = pathlib.Path(sys.argv[1])
    paths = sorted(root.rglob("*.parquet"))
    for path in paths:
        check(path)
    print(f"checked {len(paths)} tables")


if __name__ == "__main__":
    main()
