#!/usr/bin/env bash
# Installs what `cargo build --release --features cuda` needs, from NVIDIA's PyPI wheels, on a
# Linux x86-64 machine with no CUDA toolkit and no NVIDIA driver (a build or CI machine):
#
#   nvcc, its front end and NVVM (candle-kernels compiles its .cu files with it), the CUDA
#   headers and CCCL (thrust, cuda/std), and the libraries the binary links against:
#   cudart, cublas + cublasLt, curand, nvrtc. Pinned to CUDA 13.0.x: the PTX it emits (ISA
#   9.0) is accepted by every CUDA 13 driver (580 and newer).
#
# Layout, under $MMFLOW_CUDA_PREFIX (default /opt/cuda-13.0-wheels):
#   wheels/nvidia/cu13/   the wheels' tree (bin/, include/, lib/, nvvm/), made to look like a
#                         toolkit: lib64 -> lib, unversioned lib*.so links for the linker,
#                         lib/stubs/libcuda.so (see below)
#   /usr/local/cuda       -> wheels/nvidia/cu13 (where cudarc and candle look for a toolkit)
#   /usr/local/bin/nvcc   a two-line wrapper that runs /usr/local/cuda/bin/nvcc (nvcc finds
#                         its front end relative to the path it was started as, so a plain
#                         symbolic link in /usr/local/bin would not work)
# An existing /usr/local/cuda or /usr/local/bin/nvcc that this script did not make is left
# alone and the script stops with an error.
#
# The driver library. candle-core turns on cudarc's `dynamic-linking` feature, so the linker
# needs libcuda.so, which only the NVIDIA driver ships (no wheel has it). cudarc's
# `dynamic-loading` (dlopen at run time) cannot be chosen instead: cudarc's build script
# refuses `dynamic-loading` together with `dynamic-linking`, and candle-core's dependency
# declaration always enables the latter, so it would mean patching candle. Instead this
# script generates a link-time stub: every driver entry point declared in the wheels'
# cuda.h (plain and versioned names, e.g. cuMemAlloc and cuMemAlloc_v2) as a function that
# returns CUDA_ERROR_STUB_LIBRARY, built with cc as lib/stubs/libcuda.so with soname
# libcuda.so.1. The stubs folder is only a linker search path (cudarc passes
# /usr/local/cuda/lib/stubs to the linker); it is not in the dynamic loader's path and the
# binary gets no rpath, so at run time the machine's real driver libcuda.so.1 is loaded.
#
# Idempotent: a second run checks a marker and returns at once. Run as a user who can write
# /usr/local (root in CI). MMFLOW_CUDA_PREFIX chooses the install folder.
set -euo pipefail

PREFIX="${MMFLOW_CUDA_PREFIX:-/opt/cuda-13.0-wheels}"
CUDA_LINK=/usr/local/cuda
NVCC_WRAPPER=/usr/local/bin/nvcc
WRAPPER_TAG="# nvcc wrapper written by mmflow scripts/cuda-toolchain.sh"

# CUDA 13.0 update 2 (cublas 13.1.0 and curand 10.4.0 are the versions that release ships).
WHEELS=(
    nvidia-cuda-nvcc==13.0.88
    nvidia-cuda-crt==13.0.88
    nvidia-nvvm==13.0.88
    nvidia-cuda-cccl==13.0.85
    nvidia-cuda-runtime==13.0.96
    nvidia-cuda-nvrtc==13.0.88
    nvidia-cublas==13.1.0.3
    nvidia-curand==10.4.0.35
)
# Shared libraries the binary links (-l<name>): <name> -> the wheel's versioned file.
LINKED_LIBS=(cudart.so.13 cublas.so.13 cublasLt.so.13 curand.so.10 nvrtc.so.13)

ROOT="$PREFIX/wheels/nvidia/cu13"
MARKER="$PREFIX/.installed"
SPEC="${WHEELS[*]} stub-v1"

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
    command -v cc >/dev/null || fail "a C compiler (cc) is needed to build the libcuda link stub"
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
    ln -sfn lib "$ROOT/lib64"
    local lib
    for lib in "${LINKED_LIBS[@]}"; do
        [ -f "$ROOT/lib/lib$lib" ] || fail "missing $ROOT/lib/lib$lib"
        ln -sfn "lib$lib" "$ROOT/lib/lib${lib%%.so.*}.so"
    done
}

# Every cu* function name in cuda.h: the declared names and the versioned names the
# `#define cuX cuX_v2` lines map them to (the real driver exports both).
driver_symbols() {
    local header="$ROOT/include/cuda.h"
    {
        grep -oE 'CUDAAPI[[:space:]]+cu[A-Za-z0-9_]+[[:space:]]*\(' "$header" |
            sed -E 's/CUDAAPI[[:space:]]+//; s/[[:space:]]*\($//'
        grep -oE '^[[:space:]]*#[[:space:]]*define[[:space:]]+cu[A-Za-z0-9_]+[[:space:]]+cu[A-Za-z0-9_]+[[:space:]]*$' "$header" |
            awk '{ print $(NF-1); print $NF }'
        grep -oE '__CUDA_API_PTDS\(cu[A-Za-z0-9_]+\)|__CUDA_API_PTSZ\(cu[A-Za-z0-9_]+\)' "$header" |
            sed -E 's/__CUDA_API_PTDS\((.*)\)/\1_ptds/; s/__CUDA_API_PTSZ\((.*)\)/\1_ptsz/'
    } | sort -u
}

build_libcuda_stub() {
    local stubs="$ROOT/lib/stubs" src
    mkdir -p "$stubs"
    src="$(mktemp --suffix=.c)"
    {
        echo "/* Link-time stand-in for the NVIDIA driver library; never loaded at run time. */"
        echo "#define CUDA_ERROR_STUB_LIBRARY 34"
        driver_symbols | sed 's/.*/int &(void) { return CUDA_ERROR_STUB_LIBRARY; }/'
    } >"$src"
    [ "$(grep -c 'return' "$src")" -gt 400 ] || fail "too few driver functions found in cuda.h"
    cc -shared -fPIC -O0 -Wl,-soname,libcuda.so.1 -o "$stubs/libcuda.so" "$src"
    rm -f "$src"
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
    build_libcuda_stub
    install_system_links
    "$NVCC_WRAPPER" --version | grep -q 'release 13\.0' || fail "nvcc does not report CUDA 13.0"
    echo "$SPEC" >"$MARKER"
    echo "cuda-toolchain.sh: installed CUDA 13.0 toolchain in $PREFIX ($CUDA_LINK, $NVCC_WRAPPER)"
}

main "$@"
