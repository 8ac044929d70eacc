#!/usr/bin/env bash
# Installs what `cargo build --release --features cuda` needs, from NVIDIA's PyPI wheels, on a
# Linux x86-64 machine with no CUDA toolkit and no NVIDIA driver (a build or CI machine):
#
#   nvcc, its front end and NVVM (candle-kernels compiles its .cu files with it), the CUDA
#   headers and CCCL (thrust, cuda/std), and the CUDA runtime's static library
#   (libcudart_static.a, which mmflow-stages' build script links in place of the shared
#   runtime candle-kernels asks for). Pinned to CUDA 13.0.x: the PTX it emits (ISA 9.0) is
#   accepted by every CUDA 13 driver (580 and newer).
#
# Nothing else is linked: the binary loads the driver (libcuda.so.1), cuBLAS and cuRAND when
# a stage asks for a GPU, so they are not installed here (a GPU machine has the driver; the
# libraries come with a CUDA 13 toolkit, a CUDA 13 PyTorch, or `pip install nvidia-cublas
# nvidia-curand`; see the README's "Building with CUDA").
#
# Layout, under $MMFLOW_CUDA_PREFIX (default /opt/cuda-13.0-wheels):
#   wheels/nvidia/cu13/   the wheels' tree (bin/, include/, lib/, nvvm/), made to look like a
#                         toolkit: lib64 -> lib
#   /usr/local/cuda       -> wheels/nvidia/cu13 (where candle's build and mmflow-stages' build
#                         script look for a toolkit)
#   /usr/local/bin/nvcc   a two-line wrapper that runs /usr/local/cuda/bin/nvcc (nvcc finds
#                         its front end relative to the path it was started as, so a plain
#                         symbolic link in /usr/local/bin would not work)
# An existing /usr/local/cuda or /usr/local/bin/nvcc that this script did not make is left
# alone and the script stops with an error.
#
# Idempotent: a second run checks a marker and returns at once. Run as a user who can write
# /usr/local (root in CI). MMFLOW_CUDA_PREFIX chooses the install folder.
set -euo pipefail

PREFIX="${MMFLOW_CUDA_PREFIX:-/opt/cuda-13.0-wheels}"
CUDA_LINK=/usr/local/cuda
NVCC_WRAPPER=/usr/local/bin/nvcc
WRAPPER_TAG="# nvcc wrapper written by mmflow scripts/cuda-toolchain.sh"

# CUDA 13.0 update 2.
WHEELS=(
    nvidia-cuda-nvcc==13.0.88
    nvidia-cuda-crt==13.0.88
    nvidia-nvvm==13.0.88
    nvidia-cuda-cccl==13.0.85
    nvidia-cuda-runtime==13.0.96
)

ROOT="$PREFIX/wheels/nvidia/cu13"
MARKER="$PREFIX/.installed"
SPEC="${WHEELS[*]}"

fail() {
    echo "cuda-toolchain.sh: $*" >&2
    exit 1
}

already_installed() {
    [ -f "$MARKER" ] && [ "$(cat "$MARKER")" = "$SPEC" ] &&
        [ "$(readlink "$CUDA_LINK" 2>/dev/null)" = "$ROOT" ] &&
        grep -qF "$WRAPPER_TAG" "$NVCC_WRAPPER" 2>/dev/null
}

check_platform() {
    [ "$(uname -s)-$(uname -m)" = "Linux-x86_64" ] || fail "the wheels are for Linux x86-64 only"
    command -v python3 >/dev/null || fail "python3 is needed to install the wheels"
}

check_targets_free() {
    if [ -e "$CUDA_LINK" ] || [ -L "$CUDA_LINK" ]; then
        [ "$(readlink "$CUDA_LINK" 2>/dev/null)" = "$ROOT" ] ||
            fail "$CUDA_LINK exists and was not made by this script; remove it or build against it"
    fi
    if [ -e "$NVCC_WRAPPER" ] && ! grep -qF "$WRAPPER_TAG" "$NVCC_WRAPPER"; then
        fail "$NVCC_WRAPPER exists and was not made by this script"
    fi
}

install_wheels() {
    # A fresh folder each time: pip --target does not replace a package folder it shares
    # with other wheels (all of them install into nvidia/cu13).
    rm -rf "$PREFIX/wheels" "$PREFIX/pip-venv"
    mkdir -p "$PREFIX"
    python3 -m venv "$PREFIX/pip-venv"
    "$PREFIX/pip-venv/bin/pip" install --quiet --disable-pip-version-check --no-deps \
        --target "$PREFIX/wheels" "${WHEELS[@]}"
    rm -rf "$PREFIX/pip-venv"
    [ -x "$ROOT/bin/nvcc" ] || fail "the nvcc wheel did not install $ROOT/bin/nvcc"
}

link_toolkit_layout() {
    [ -f "$ROOT/lib/libcudart_static.a" ] || fail "missing $ROOT/lib/libcudart_static.a"
    ln -sfn lib "$ROOT/lib64"
}

install_system_links() {
    ln -sfn "$ROOT" "$CUDA_LINK"
    printf '#!/bin/sh\n%s\nexec %s/bin/nvcc "$@"\n' "$WRAPPER_TAG" "$CUDA_LINK" >"$NVCC_WRAPPER"
    chmod 755 "$NVCC_WRAPPER"
}

main() {
    if already_installed; then
        echo "cuda-toolchain.sh: CUDA 13.0 toolchain already installed in $PREFIX"
        return
    fi
    check_platform
    check_targets_free
    install_wheels
    link_toolkit_layout
    install_system_links
    "$NVCC_WRAPPER" --version | grep -q 'release 13\.0' || fail "nvcc does not report CUDA 13.0"
    echo "$SPEC" >"$MARKER"
    echo "cuda-toolchain.sh: installed CUDA 13.0 toolchain in $PREFIX ($CUDA_LINK, $NVCC_WRAPPER)"
}

main "$@"
