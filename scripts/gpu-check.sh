#!/usr/bin/env bash
# Runs mmflow's GPU checks on a machine with an NVIDIA GPU and driver but no Rust toolchain,
# from binaries built elsewhere by scripts/gpu-bundle.sh:
#
#   1. the GPU tests of the integration-test binary (marked #[ignore]: each trains a pipeline
#      on the CPU and on the GPU from the same seed and compares losses, predictions and
#      metrics within the tolerances stated in tests/training.rs);
#   2. the training benchmark on the GPU, and PyTorch's on the same shapes when `torch` is
#      importable (benches/train_torch.py --device cuda).
#
#   scripts/gpu-check.sh [BUNDLE]     # the folder or its .tar.xz; default: target/gpu-bundle
#
# The binaries load the driver (libcuda.so.1) and the CUDA 13 libraries libcublas.so.13,
# libcublasLt.so.13 and libcurand.so.10 (large, so not in the bundle) when they open
# the GPU: mmflow looks for them in MMFLOW_CUDA_LIBRARY_PATH, the loader's paths,
# /usr/local/cuda and the NVIDIA wheels of the python3 on PATH (a CUDA 13 PyTorch brings
# them), and names what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
bundle="${1:-${CARGO_TARGET_DIR:-target}/gpu-bundle}"
# A compressed bundle (gpu-bundle.tar.xz) is unpacked beside itself.
if [ -f "$bundle" ]; then
    tar -C "$(dirname "$bundle")" -xJf "$bundle"
    bundle="$(dirname "$bundle")/gpu-bundle"
fi
bundle="$(cd "$bundle" && pwd)"

fail() {
    echo "gpu-check.sh: $*" >&2
    exit 1
}

for bin in mmflow integration train-bench; do
    [ -x "$bundle/$bin" ] || fail "$bundle/$bin missing: build the bundle with scripts/gpu-bundle.sh"
done
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader

echo "== GPU tests (CPU vs GPU from the same seed)"
# The GPU tests use synthetic data and configs compiled into the binary; they run the
# bundled mmflow (MMFLOW_BIN), one at a time.
MMFLOW_BIN="$bundle/mmflow" "$bundle/integration" --ignored training::gpu_ --test-threads=1

echo "== training benchmark on the GPU"
export CARGO_TARGET_DIR="$bundle"
MMFLOW_BENCH_DEVICE=cuda "$bundle/train-bench" --bench
if python3 -c 'import torch; assert torch.cuda.is_available()' 2>/dev/null; then
    python3 benches/train_torch.py --device cuda
else
    echo "(no CUDA PyTorch here: benches/train_torch.py --device cuda skipped)"
fi
