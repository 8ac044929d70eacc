"""One row per workload for `benches/run_all.sh`'s table: each bench script calls `record`,
which appends a JSON line to the file named by MMFLOW_BENCH_RESULTS (nothing when unset, so
every script also runs on its own)."""
import json
import os


def record(workload, mmflow, anchor, ratio, memory="", unit=""):
    """`ratio` > 1 means mmflow is ahead of the anchor (faster, or more samples/s)."""
    path = os.environ.get("MMFLOW_BENCH_RESULTS")
    if not path:
        return
    row = {"workload": workload, "mmflow": mmflow, "anchor": anchor, "ratio": ratio, "memory": memory, "unit": unit}
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(row) + "\n")


def table(path):
    """The recorded rows as a Markdown table."""
    rows = [json.loads(line) for line in open(path, encoding="utf-8") if line.strip()]
    out = ["| workload | mmflow | anchor | ratio | memory |", "|---|---|---|---|---|"]
    for r in rows:
        unit = r.get("unit", "")
        fmt = lambda v: v if isinstance(v, str) else f"{v:.4g} {unit}".strip()
        ratio = r["ratio"] if isinstance(r["ratio"], str) else f"{r['ratio']:.2f}x"
        out.append(f"| {r['workload']} | {fmt(r['mmflow'])} | {fmt(r['anchor'])} | {ratio} | {r.get('memory', '')} |")
    return "\n".join(out)


if __name__ == "__main__":
    import sys

    print(table(sys.argv[1]))
