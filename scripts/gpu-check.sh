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
# The binaries load the driver (libcuda.so.1) and CUDA 13 runtime libraries: libcudart.so.13,
# libcublas.so.13, libcublasLt.so.13, libcurand.so.10, libnvrtc.so.13 (about 0.9 GB, so not
# in the bundle). They are looked for in the loader's paths, /usr/local/cuda, and the
# `nvidia/cu13/lib` folder of any Python's NVIDIA wheels (a CUDA 13 PyTorch brings them);
# MMFLOW_CUDA_LIBS names a folder explicitly.
set -euo pipefail
cd "$(dirname "$0")/.."
bundle="${1:-${CARGO_TARGET_DIR:-target}/gpu-bundle}"
# A compressed bundle (gpu-bundle.tar.xz) is unpacked beside itself.
if [ -f "$bundle" ]; then
    tar -C "$(dirname "$bundle")" -xJf "$bundle"
    bundle="$(dirname "$bundle")/gpu-bundle"
fi
bundle="$(cd "$bundle" && pwd)"
NEEDED=(libcudart.so.13 libcublas.so.13 libcublasLt.so.13 libcurand.so.10 libnvrtc.so.13)

fail() {
    echo "gpu-check.sh: $*" >&2
    exit 1
}

# Folders that may hold the CUDA 13 libraries, best first.
candidate_lib_dirs() {
    [ -n "${MMFLOW_CUDA_LIBS:-}" ] && echo "$MMFLOW_CUDA_LIBS"
    echo /usr/local/cuda/lib64
    echo /usr/local/cuda/lib
    local py
    for py in python3 python; do
        command -v "$py" >/dev/null || continue
        "$py" - <<'EOF' 2>/dev/null || true
import site, sys, os
for base in site.getsitepackages() + [site.getusersitepackages()]:
    lib = os.path.join(base, "nvidia", "cu13", "lib")
    if os.path.isdir(lib):
        print(lib)
EOF
    done
}

# Adds to LD_LIBRARY_PATH the first folder that has every library the loader lacks.
find_cuda_libs() {
    local missing=() lib dir
    for lib in "${NEEDED[@]}"; do
        ldconfig -p 2>/dev/null | grep -qF "$lib " || missing+=("$lib")
    done
    [ ${#missing[@]} -eq 0 ] && return
    while read -r dir; do
        local all=1
        for lib in "${missing[@]}"; do
            [ -e "$dir/$lib" ] || all=0
        done
        if [ $all -eq 1 ]; then
            export LD_LIBRARY_PATH="$dir${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
            echo "CUDA libraries from $dir"
            return
        fi
    done < <(candidate_lib_dirs)
    fail "missing ${missing[*]}: install the CUDA 13 runtime, cuBLAS, cuRAND and NVRTC (e.g. pip install nvidia-cuda-runtime nvidia-cublas nvidia-curand nvidia-cuda-nvrtc) or set MMFLOW_CUDA_LIBS"
}

for bin in mmflow integration train-bench; do
    [ -x "$bundle/$bin" ] || fail "$bundle/$bin missing: build the bundle with scripts/gpu-bundle.sh"
done
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
find_cuda_libs

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
