#!/usr/bin/env bash
# Checks, on a machine without the NVIDIA driver, that a `--features cuda` build of mmflow
# starts and computes on the CPU, and that asking it for a GPU fails with the reason:
#
#   scripts/cuda-without-gpu.sh [MMFLOW]     # default: $CARGO_TARGET_DIR/debug/mmflow
#
#   1. the binary needs no CUDA library to start (none is among its NEEDED entries);
#   2. configs/demo.toml runs on the CPU (device = "cpu", the file's default) and succeeds;
#   3. the same with device = "cuda" exits 1, its training stage failing with the driver's
#      library (libcuda.so.1) named as missing and where mmflow looked for it;
#   4. device = "auto" succeeds on the CPU and logs why it did not use a GPU;
#   5. with stand-ins for the driver built here (cc) and named in MMFLOW_CUDA_LIBRARY_PATH,
#      device = "cuda" exits 1 with the driver's own reasons: a driver older than the build's
#      CUDA, a driver that sees no device, and one whose functions cudarc cannot find (its
#      panic caught and reported as the reason, not printed).
#
# On a machine where the system loader finds libcuda.so.1 (a GPU machine) 3 to 5 cannot
# hold: the script says so and checks only 1 and 2.
set -euo pipefail
cd "$(dirname "$0")/.."
mmflow="${1:-${CARGO_TARGET_DIR:-target}/debug/mmflow}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
# The CUDA libraries mmflow loads when asked for a GPU; a build that links one of them does
# not start where it is missing.
CUDA_LIBRARIES='libcuda\.so|libcudart\.so|libcublas\.so|libcublasLt\.so|libcurand\.so|libnvrtc\.so'

fail() {
    echo "cuda-without-gpu.sh: $*" >&2
    exit 1
}

# Runs the demo into $work/run with extra arguments; stderr goes to $work/stderr.
demo() {
    "$mmflow" run configs/demo.toml --out "$work/run" "$@" 2>"$work/stderr"
}

# Asserts that device = "cuda" fails (exit 1) with every given text in its message.
cuda_fails_with() {
    local status=0 text
    demo --quiet --set 'pipeline.device="cuda"' || status=$?
    grep 'FAILED' "$work/stderr" || cat "$work/stderr"
    [ "$status" = 1 ] || fail "device = \"cuda\" exited $status, not 1"
    for text in "$@"; do
        grep -qF "$text" "$work/stderr" || fail "device = \"cuda\" did not say: $text"
    done
}

# A folder holding a stand-in for the driver's library (soname libcuda.so.1) that initialises
# and reports CUDA version $1 and $2 devices, and nothing else.
fake_driver() {
    local folder="$work/driver-$1-$2"
    mkdir -p "$folder"
    cc -shared -fPIC -Wl,-soname,libcuda.so.1 -DVERSION="$1" -DDEVICES="$2" \
        -o "$folder/libcuda.so.1" -x c - <<'EOF'
int cuInit(unsigned flags) { return 0; }
int cuDriverGetVersion(int *version) { *version = VERSION; return 0; }
int cuDeviceGetCount(int *count) { *count = DEVICES; return 0; }
int cuGetErrorName(int error, const char **name) { *name = "CUDA_ERROR_FAKE"; return 0; }
int cuGetErrorString(int error, const char **text) { *text = "a stand-in"; return 0; }
EOF
    echo "$folder"
}

# Adds to folder $1 empty libraries named as cuBLAS, cuBLASLt and cuRAND.
fake_libraries() {
    local soname
    for soname in libcublasLt.so.13 libcublas.so.13 libcurand.so.10; do
        cc -shared -fPIC -Wl,-soname,"$soname" -o "$1/$soname" -x c /dev/null
    done
}

[ -x "$mmflow" ] || fail "$mmflow is not an executable: build it with \`cargo build --features cuda\`"

echo "== $mmflow links no CUDA library"
if readelf -d "$mmflow" | grep NEEDED | grep -E "$CUDA_LIBRARIES"; then
    fail "$mmflow links the CUDA libraries above: it does not start where they are missing"
fi

echo "== configs/demo.toml on the CPU"
demo --quiet || { cat "$work/stderr" >&2; fail "the demo failed on the CPU"; }

if ldconfig -p | grep -qF 'libcuda.so.1 '; then
    echo "== the system loader finds libcuda.so.1: the checks of a machine without the driver are skipped"
    exit 0
fi
unset MMFLOW_CUDA_LIBRARY_PATH

echo "== device = \"cuda\" without the driver"
cuda_fails_with 'device = "cuda" but libcuda.so.1 (the NVIDIA driver)' '(looked in '
grep -qF 'panicked' "$work/stderr" && fail "device = \"cuda\" panicked"

echo "== device = \"auto\" without the driver"
demo --set 'pipeline.device="auto"' ||
    { cat "$work/stderr" >&2; fail "device = \"auto\" failed instead of using the CPU"; }
grep -F 'device = "auto": using the CPU, because libcuda.so.1' "$work/stderr" ||
    fail "device = \"auto\" did not log why it used the CPU"

command -v cc >/dev/null || fail "a C compiler (cc) is needed to build the driver stand-ins"
echo "== device = \"cuda\" with a driver for CUDA 12.4"
MMFLOW_CUDA_LIBRARY_PATH="$(fake_driver 12040 1)" cuda_fails_with \
    'the driver supports CUDA 12.4 and this mmflow was built with CUDA 13.'

echo "== device = \"cuda\" with a driver that sees no device"
MMFLOW_CUDA_LIBRARY_PATH="$(fake_driver 13000 0)" cuda_fails_with \
    'the NVIDIA driver reports no CUDA device (0 devices)'

echo "== device = \"cuda\" with a driver that lacks what cudarc calls"
folder="$(fake_driver 13000 1)"
fake_libraries "$folder"
MMFLOW_CUDA_LIBRARY_PATH="$folder" cuda_fails_with 'cudarc stopped: Missing symbol'
grep -qF 'panicked' "$work/stderr" && fail "the panic cudarc stopped with was printed"
echo "cuda-without-gpu.sh: the CUDA build starts without the driver and says what is missing"
