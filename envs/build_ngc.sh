#!/bin/bash
# Use an NGC PyTorch image (MetaCentrum keeps them on CVMFS) plus the few packages it lacks.
#
#   envs/build_ngc.sh IMAGE [DIR]     # default DIR: .venv-ngc in the repository
#   envs/build_ngc.sh /cvmfs/singularity.metacentrum.cz/NGC/PyTorch:24.09-py3.SIF
#
# The image keeps its own torch, torchvision and numpy (pinned here so pip cannot replace
# them); the rest of envs/requirements.txt is installed with `pip install --user` into DIR
# (PYTHONUSERBASE), and DIR/image names the image. Jobs given SEGTRAIN_ENV=DIR run
# `singularity exec --nv IMAGE python` with PYTHONUSERBASE=DIR.
set -euo pipefail
image=${1:?usage: envs/build_ngc.sh IMAGE [DIR]   (images: ls /cvmfs/singularity.metacentrum.cz/NGC/)}
here=$(cd "$(dirname "$0")/.." && pwd)
dir=${2:-$here/.venv-ngc}
[ -e "$image" ] || { echo "error: image $image not found" >&2; exit 2; }
command -v singularity >/dev/null 2>&1 || { echo "error: singularity not found (run this on a MetaCentrum node)" >&2; exit 2; }

export TMPDIR=${SCRATCHDIR:-${TMPDIR:-/tmp}}
export PIP_CACHE_DIR=$TMPDIR/pip-cache SINGULARITY_CACHEDIR=$TMPDIR/singularity-cache
export PYTHONUSERBASE=$dir
mkdir -p "$dir"
in_image() { singularity exec --bind "$here" --bind "$dir" --bind "$TMPDIR" "$image" "$@"; }

in_image python -m pip list --format=freeze | grep -iE '^(torch|torchvision|numpy)==' >"$TMPDIR/ngc-constraints.txt"
grep -viE '^(torch|torchvision|numpy)([=<>!~ ]|$)' "$here/envs/requirements.txt" >"$TMPDIR/ngc-requirements.txt"
in_image python -m pip install --user -r "$TMPDIR/ngc-requirements.txt" -c "$TMPDIR/ngc-constraints.txt"
printf '%s\n' "$image" >"$dir/image"
PYTHONPATH=$here in_image python -c 'import torch, segtrain.cli; print("torch", torch.__version__, "CUDA", torch.version.cuda)'
echo "built $dir: submit with qsub -v SEGTRAIN_ENV=$dir jobs/train.pbs (or scripts/submit --env $dir)"
