#!/usr/bin/env bash
# Every benchmark next to the Python tool a user would otherwise run, in one invocation, and
# one table at the end: workload, mmflow, anchor, ratio (> 1: mmflow ahead), memory.
#
#   benches/run_all.sh                 # everything (the SDK data is ~1.4 GB, generated once)
#   BENCH_VIDEOS=40 BENCH_PICKLE_SCALE=0.03 BENCH_SENTENCES=2000 benches/run_all.sh   # smaller data
#   BENCH_ZOO_SEEDS=3 BENCH_ZOO_SCALE=0.3 …   # a smaller MMSA zoo comparison; BENCH_ZOO=0 skips it
#
# Installs the Python anchors (benches/requirements-bench.txt) into a virtual environment of
# its own (MMFLOW_BENCH_VENV, default <target dir>/bench-venv). Both sides run on the same
# machine in the same invocation: read the ratios, not the absolute times.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
threads="${BENCH_THREADS:-$(nproc)}"
venv="${MMFLOW_BENCH_VENV:-$CARGO_TARGET_DIR/bench-venv}"
if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv"
fi
"$venv/bin/pip" install --quiet --disable-pip-version-check -r benches/requirements-bench.txt
# MMSA's model code, without its pinned dependencies (what its modules import is in the file above).
"$venv/bin/pip" install --quiet --disable-pip-version-check --no-deps mmsa==2.2.1
py="$venv/bin/python"

export MMFLOW_BENCH_RESULTS="$CARGO_TARGET_DIR/bench-results.jsonl"
rm -f "$MMFLOW_BENCH_RESULTS"
export RAYON_NUM_THREADS="$threads"

cargo build --release --quiet
cargo bench --quiet --bench normalize
"$py" benches/normalize_numpy.py
cargo bench --quiet --bench targets
"$py" benches/targets_sklearn.py
cargo bench --quiet --bench train
"$py" benches/train_torch.py --threads "$threads"
"$py" benches/sdk_recipe.py --videos "${BENCH_VIDEOS:-160}"
"$py" benches/embed_text.py --sentences "${BENCH_SENTENCES:-20000}" --threads "$threads"
"$py" benches/text_finetune.py --mmflow "$CARGO_TARGET_DIR/release/mmflow" --threads "$threads"
if [ -f benches/mmsa_pickle.py ]; then
    "$py" benches/mmsa_pickle.py --scale "${BENCH_PICKLE_SCALE:-0.125}"
fi

# MMSA's trainer against mmflow's recipe: its own table (hours at full size with 5 seeds).
if [ "${BENCH_ZOO:-1}" != 0 ]; then
    "$py" benches/mmsa_zoo.py --mmflow "$CARGO_TARGET_DIR/release/mmflow" --threads "$threads" \
        --seeds "${BENCH_ZOO_SEEDS:-5}" --scale "${BENCH_ZOO_SCALE:-1.0}"
fi
echo
echo "$(nproc) cores, $threads threads, $(date -u +%Y-%m-%d)"
"$py" benches/results.py "$MMFLOW_BENCH_RESULTS"
