#!/usr/bin/env bash
# Builds, on a machine with the CUDA toolchain (scripts/cuda-toolchain.sh) but no GPU, what
# scripts/gpu-check.sh runs on a GPU machine that has no Rust toolchain, and gathers it in
# target/gpu-bundle/ (or $CARGO_TARGET_DIR/gpu-bundle/):
#
#   mmflow         the CLI, release, --features cuda
#   integration    the integration-test binary (its GPU tests are marked #[ignore])
#   train-bench    the training benchmark (benches/train.rs)
#
# Debug information is stripped (the binaries are built with line tables). Each binary holds
# candle's PTX and kernels: a stripped CUDA mmflow is about 80 MB, 12 MB compressed, so the
# copy to make is target/gpu-bundle.tar.xz (about 35 MB expected; the size is printed), with
# scripts/gpu-check.sh and benches/train_torch.py. The CUDA libraries are not in it (see
# gpu-check.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
target="${CARGO_TARGET_DIR:-target}"
bundle="$target/gpu-bundle"

# The executables cargo reports for a build of the given targets.
executables() {
    cargo "$@" --release --features cuda --message-format=json |
        python3 -c 'import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable"):
        print(m["target"]["name"], m["executable"])'
}

mkdir -p "$bundle"
while read -r name path; do
    case "$name" in
        mmflow) out=mmflow ;;
        integration) out=integration ;;
        train) out=train-bench ;;
        *) continue ;;
    esac
    strip --strip-debug -o "$bundle/$out" "$path"
done < <(
    executables build --bin mmflow
    executables test --test integration --no-run
    executables test --bench train --no-run
)
for out in mmflow integration train-bench; do
    [ -x "$bundle/$out" ] || { echo "gpu-bundle.sh: $out was not built" >&2; exit 1; }
done
tar -C "$target" -cJf "$target/gpu-bundle.tar.xz" gpu-bundle
du -sh "$bundle" "$target/gpu-bundle.tar.xz"
