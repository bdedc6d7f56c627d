#!/usr/bin/env bash
# The GPU machine's check for issue 12: one table, at most 8 minutes (see jobs/benchmarks/gpu.py).
#
#   bash jobs/benchmarks/gpu.sh              # on a GPU machine
#   bash jobs/benchmarks/gpu.sh --dry-run    # every part at tiny sizes on the CPU (the test suite runs this)
#
# That machine reaches no package index, so nothing is installed from the network.  Packages its image
# lacks (ray, mlflow, faiss-gpu, pytorch-metric-learning, ...) travel as wheels in .whl/ at the repository
# root, fetched beforehand on a machine that has an index, e.g.
#   pip download --no-deps --only-binary=:all: --python-version 3.12 --platform manylinux_2_28_x86_64 -d .whl ray==2.60.0
# and are installed from there alone (--no-index) into a private folder.  A part whose packages are still
# missing is reported as skipped in the table.  PYTHON picks the interpreter (default: python3).
set -euo pipefail
cd "$(dirname "$0")/../.."
PYTHON=${PYTHON:-python3}
LIMIT_S=${LIMIT_S:-480}

if compgen -G ".whl/*.whl" >/dev/null; then
    site=$(mktemp -d)
    "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$site" .whl/*.whl
    export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
exec timeout "$LIMIT_S" "$PYTHON" jobs/benchmarks/gpu.py "$@"
