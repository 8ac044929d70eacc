#!/usr/bin/env bash
# mmflow from Python as a user meets it: the wheel installed into a fresh virtual environment
# with no Rust toolchain on PATH, then the demo through the `mmflow` command the wheel installed,
# the API's tests (python/tests) and the example notebook (executed headless).
#
#   scripts/python-tests.sh [WHEEL]    default: the wheel of scripts/build-wheel.sh --dev
set -euo pipefail
cd "$(dirname "$0")/.."
repo="$PWD"

wheel="${1:-$(scripts/build-wheel.sh --dev | tail -1)}"
wheel="$(cd "$(dirname "$wheel")" && pwd)/$(basename "$wheel")"
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
python3 -m venv "$scratch/venv"
install() { "$scratch/venv/bin/pip" install --quiet --disable-pip-version-check "$@"; }
install --upgrade pip
# What the tests use first, so that the time below is the wheel's own install (its
# dependencies, pyarrow and pandas, already there as in an analyst's environment).
install -r python/requirements-test.txt pyarrow pandas
now() { python3 -c 'import time; print(time.monotonic())'; }
start=$(now)
install "$wheel"
python3 -c "import sys; print(f'installed {sys.argv[1]} ({int(sys.argv[2]) / 1e6:.0f} MB) in {float(sys.argv[4]) - float(sys.argv[3]):.1f} s')" \
    "$(basename "$wheel")" "$(stat -c %s "$wheel")" "$start" "$(now)"

# Nothing of the build on PATH: the environment's own commands and the system's.
export PATH="$scratch/venv/bin:/usr/bin:/bin"
unset MMFLOW_BIN CARGO_TARGET_DIR
if command -v cargo >/dev/null || command -v rustc >/dev/null; then
    echo "error: a Rust toolchain is on PATH; the wheel must work without one" >&2
    exit 1
fi
case "$(command -v mmflow)" in
    "$scratch/venv/bin/mmflow") ;;
    *) echo "error: \`mmflow\` is not the wheel's: $(command -v mmflow)" >&2; exit 1 ;;
esac

# The demo, as the README runs it, from a folder of the user's.
mkdir "$scratch/work"
(cd "$scratch/work" && cp -r "$repo/configs" . && mmflow --quiet run configs/demo.toml)

# The API and the notebook, importing the installed package (not the source tree).
(cd "$scratch/work" && python -c 'import mmflow, sys; sys.exit(0 if "site-packages" in mmflow.__file__ else "not the installed package: " + mmflow.__file__)')
ruff check --no-cache python && ruff format --no-cache --check python
python -m pytest --quiet -p no:cacheprovider python/tests
