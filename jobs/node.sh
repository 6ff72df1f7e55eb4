#!/bin/bash
# Another node's part of a training job on several nodes; jobs/train.pbs starts it there with pbsdsh,
# jobs/train.slurm with srun:
#
#   node.sh stage|train|clean RANK WORKDIR ENV_DIR FIRST_SCRATCH PLAN_WORD
#
#   stage  copy the data set (and a run being continued) to this node's scratch, verified, as the
#          first node does; this node's copy of the plan is kept next to it
#   train  start this node's trainer processes, node rank RANK of the job's rendezvous; they write
#          nothing (rank 0, on the first node, writes the run); scratch is emptied when they end
#   clean  empty this node's scratch
#
# pbsdsh starts it in $HOME with PBS's small task environment and no shell in between: all it
# needs comes as arguments, and the plan is one percent-encoded word that only Python decodes.
# SIGTERM (walltime, qdel: PBS signals every process of the job on every node; Slurm's time limit
# and scancel likewise) reaches the trainer, whose ranks agree on the stop; the first node's trap
# copies the run back and resubmits. Its last line, `node.sh: exit status N`, tells the first node
# how it ended where the launcher does not report it (srun says nothing of a 0).

set -uo pipefail
if [ $# -ne 6 ] || [[ ! $1 =~ ^(stage|train|clean)$ ]]; then
    echo "usage: node.sh stage|train|clean RANK WORKDIR ENV_DIR FIRST_SCRATCH PLAN_WORD (run by jobs/train.pbs, jobs/train.slurm)" >&2
    exit 2
fi
MODE=$1 RANK=$2 WORKDIR=$3 ENV_DIR=$4 FIRST_SCRATCH=$5 PLAN_WORD=$6
STOPPED="" PY=()
trap 'echo "node.sh: exit status $?"' EXIT

say() { printf '[%s] node %s (%s): %s\n' "$(date '+%F %T')" "$RANK" "$(hostname)" "$*"; }
die() { say "error: $*"; exit 2; }

cd "$WORKDIR" || die "cannot enter $WORKDIR"
. jobs/common.sh || die "cannot read jobs/common.sh in $WORKDIR"

node_scratch "$FIRST_SCRATCH" "$RANK" \
    || die "no writable scratch (SCRATCHDIR, $FIRST_SCRATCH or the job's TMPDIR); ask every chunk for scratch_local"
[ -e "$SCRATCH/.segtrain-job" ] \
    && die "scratch $SCRATCH is the first node's (shared between nodes?): ask every chunk for scratch_local"
NODE_DIR=$SCRATCH/.segtrain-node

# The first node may clean while this node's own node.sh still does: judge by what is left.
clean_here() {
    clean_scratch_dir 2>/dev/null
    [ -z "$(ls -A "$SCRATCH" 2>/dev/null)" ] || say "warning: could not empty scratch $SCRATCH"
}

if [ "$MODE" = clean ]; then
    clean_here
    exit 0
fi
mkdir -p "$NODE_DIR" "$SCRATCH/tmp" || die "cannot write to scratch $SCRATCH"
export TMPDIR=$SCRATCH/tmp
use_environment "$WORKDIR" "$ENV_DIR"

# SIGTERM reaches every process of the task, from PBS (walltime, qdel: the whole job) or from the
# first node through pbsdsh: the Python step gets it itself (a second one would cut the launcher's
# own shutdown short); this shell only takes no further step, and cleans up once its child ended.
trap 'STOPPED=1' TERM INT
run_py() {
    [ -z "$STOPPED" ] || return 143
    "${PY[@]}" "$@" &
    wait_for $!
}

if [ "$MODE" = stage ]; then
    say "staging to scratch $SCRATCH"
    run_py -m segtrain.cluster.job.steps node-plan "$PLAN_WORD" --scratch "$SCRATCH" "$NODE_DIR/plan.json" \
        && run_py -m segtrain.cluster.job.steps stage "$NODE_DIR/plan.json" && exit 0
    clean_here
    exit 1
fi
run_py -m segtrain.cluster.job.steps train-args "$NODE_DIR/plan.json" >"$NODE_DIR/train.args" || { clean_here; exit 2; }
mapfile -d '' -t TRAIN_ARGS <"$NODE_DIR/train.args"
run_py -m segtrain "${TRAIN_ARGS[@]}"
rc=$?
clean_here
exit "$rc"
