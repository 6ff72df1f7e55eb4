#!/bin/bash
# Another node's part of a training job on several nodes; the first node's runner starts it there with pbsdsh
# (PBS) or srun (Slurm):
#
#   node.sh stage|train|clean RANK WORKDIR ENV_DIR FIRST_SCRATCH PLAN_WORD
#
#   stage  copy the data set (and a run being continued) to this node's scratch, verified, as the
#          first node does; this node's copy of the plan is kept next to it
#   train  start this node's trainer processes, node rank RANK of the job's rendezvous; they write
#          nothing (rank 0, on the first node, writes the run); scratch is emptied when they end
#   clean  empty this node's scratch
#
# pbsdsh starts it in $HOME with PBS's small task environment and no shell in between: all it needs comes as
# arguments, and the plan is one percent-encoded word that only Python decodes. The work is the runner's
# (`segtrain.cluster.job.runner node`, segtrain/cluster/job/runner.py); its last line, `node.sh: exit status N`,
# tells the first node how it ended where the launcher does not report it (srun says nothing of a 0).

set -uo pipefail
if [ $# -ne 6 ] || [[ ! $1 =~ ^(stage|train|clean)$ ]]; then
    echo "usage: node.sh stage|train|clean RANK WORKDIR ENV_DIR FIRST_SCRATCH PLAN_WORD (run by the first node's runner)" >&2
    exit 2
fi
RANK=$2
trap 'echo "node.sh: exit status $?"' EXIT  # until the runner takes over
say() { printf '[%s] node %s (%s): %s\n' "$(date '+%F %T')" "$RANK" "$(hostname)" "$*"; }
cd "$3" || { say "error: cannot enter $3"; exit 2; }
. jobs/common.sh || exit 2
runner_python "$4"
trap - EXIT
exec "$RUNNER" -m segtrain.cluster.job.runner node "$@"
