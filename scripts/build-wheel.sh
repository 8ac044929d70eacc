#!/usr/bin/env bash
# Builds the mmflow wheel (the `mmflow` binary and the `mmflow` Python package) with maturin,
# from a clone with nothing else installed: maturin and zig come from PyPI into a virtual
# environment of their own. Prints the wheel's path last.
#
#   scripts/build-wheel.sh         release build, linked against glibc 2.17 through zig:
#                                  tag manylinux_2_17_x86_64 (any Linux of the last ten years)
#   scripts/build-wheel.sh --dev   the dev profile `cargo test` builds (reuses that build, this
#                                  machine's glibc): what CI installs and tests
set -euo pipefail
cd "$(dirname "$0")/.."

profile=(--release --zig --compatibility manylinux2014)
if [ "${1:-}" = "--dev" ]; then
    profile=(--profile dev)
fi
venv=.venv-build
if [ ! -x "$venv/bin/maturin" ]; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check -r python/requirements-build.txt
fi
out="${CARGO_TARGET_DIR:-target}/wheels"
rm -f "$out"/mmflow-*.whl
# maturin finds zig as `python -m ziglang` of the environment it runs in.
PATH="$PWD/$venv/bin:$PATH" "$venv/bin/maturin" build "${profile[@]}" --out "$out" >&2
ls "$out"/mmflow-*.whl
