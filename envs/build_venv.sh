#!/bin/bash
# Build segtrain's virtualenv on storage, with the CUDA build of torch from PyPI.
#
#   envs/build_venv.sh [DIR]          # default DIR: .venv in the repository (what jobs use)
#
# Build it where jobs will run it: in an interactive job on a GPU-like node, not on a frontend
# (see envs/README.md). PYTHON_MODULE names a module that provides Python >= 3.10; it is loaded
# here and recorded in DIR, and jobs load it again before using the environment.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
dir=${1:-$here/.venv}

if [ -n "${PYTHON_MODULE:-}" ]; then
    command -v module >/dev/null 2>&1 || { echo "error: no 'module' command; run: module add $PYTHON_MODULE" >&2; exit 2; }
    module add "$PYTHON_MODULE"
fi
python=${PYTHON:-python3}
"$python" -c 'import sys; sys.exit(sys.version_info < (3, 10))' \
    || { echo "error: $python is older than 3.10; set PYTHON_MODULE (module avail python)" >&2; exit 2; }

# pip unpacks several GB: keep that off the node's small /tmp and out of the home quota.
export TMPDIR=${SCRATCHDIR:-${TMPDIR:-/tmp}}
export PIP_CACHE_DIR=$TMPDIR/pip-cache
"$python" -m venv "$dir"
"$dir/bin/python" -m pip install --quiet --upgrade pip
"$dir/bin/python" -m pip install -r "$here/envs/requirements.txt"  # pinned; PyPI's Linux torch is the CUDA build
"$dir/bin/python" -m pip install --no-deps -e "$here"
if [ -n "${PYTHON_MODULE:-}" ]; then
    printf '%s\n' "$PYTHON_MODULE" >"$dir/segtrain-module"
fi
"$dir/bin/python" -c 'import torch, segtrain.cli; print("torch", torch.__version__, "CUDA", torch.version.cuda, "GPU visible:", torch.cuda.is_available())'
if [ "$dir" = "$here/.venv" ]; then
    echo "built $dir: jobs use it by default"
else
    echo "built $dir: submit with qsub -v SEGTRAIN_ENV=$dir jobs/train.pbs (or scripts/submit --env $dir)"
fi
