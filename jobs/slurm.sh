# Slurm's part of a job script's preamble, sourced by jobs/train.slurm and jobs/predict.slurm once they
# entered the submit folder (never run by itself): the shared preamble (jobs/common.sh), the job's id and
# name (an array task is ARRAYID_INDEX), its scratch and node list, the two scheduler commands the job runs
# (jobs/train.sh lists what each part provides), and the time-limit warning.

. jobs/common.sh || exit 2
JOB_ID=$SLURM_JOB_ID JOB_NAME=${SLURM_JOB_NAME:-}
[ -n "${SLURM_ARRAY_JOB_ID:-}" ] && JOB_ID=${SLURM_ARRAY_JOB_ID}_${SLURM_ARRAY_TASK_ID}
SCRATCH_HINT="SCRATCH_BASE, TMPDIR and /tmp not writable"
export OMP_NUM_THREADS=${SLURM_CPUS_PER_TASK:-${OMP_NUM_THREADS:-${SLURM_CPUS_ON_NODE:-1}}}  # as PBS sets it from ncpus
# srun (the other nodes' steps) does not take the job's --cpus-per-task from its environment since 22.05
[ -z "${SLURM_CPUS_PER_TASK:-}" ] || export SRUN_CPUS_PER_TASK=$SLURM_CPUS_PER_TASK
export SEGTRAIN_MAKES_SCRATCH=1  # Slurm makes no scratch: the job makes its folder on every node, and removes it
ORIGINAL_TMPDIR=${TMPDIR:-}

# The job's own folder in SCRATCH_BASE (the site's scratch), else in TMPDIR or /tmp (which the submitter's
# environment may name); and in it the job's nodes, one a line, the first (this one) first: node rank 0,
# host of the rendezvous.
choose_scratch() {
    local base
    for base in "${SCRATCH_BASE:-}" "${TMPDIR:-}" /tmp; do
        [ -n "$base" ] && [ -d "$base" ] && [ -w "$base" ] || continue
        SCRATCH=$(mktemp -d "$base/segtrain.$JOB_ID.XXXXXX") && SCRATCH_OWNED=1 && break
    done
    [ -n "$SCRATCH" ] || return 0
    export SEGTRAIN_NODEFILE=$SCRATCH/.segtrain-nodes
    scontrol show hostnames "${SLURM_JOB_NODELIST:-$(hostname -s)}" >"$SEGTRAIN_NODEFILE" </dev/null \
        || die "cannot list the job's nodes (scontrol show hostnames $SLURM_JOB_NODELIST)"
}

# The time limit and resources the job got.
job_info() { timeout 60 scontrol show job "$SLURM_JOB_ID" </dev/null; }
# The next job of the chain: not this job's array variables, scratch TMPDIR or node list.
submit_next() {
    (
        unset SLURM_ARRAY_JOB_ID SLURM_ARRAY_TASK_ID SLURM_ARRAY_TASK_COUNT SLURM_ARRAY_TASK_MIN \
            SLURM_ARRAY_TASK_MAX SLURM_ARRAY_TASK_STEP SEGTRAIN_NODEFILE SRUN_CPUS_PER_TASK SEGTRAIN_MAKES_SCRATCH
        if [ -n "$ORIGINAL_TMPDIR" ]; then export TMPDIR=$ORIGINAL_TMPDIR; else unset TMPDIR; fi
        timeout "$SUBMIT_TIMEOUT_S" "$@" </dev/null
    )
}

# USR1 (--signal=B:USR1@SECONDS, jobs/train.slurm): the time limit is near. The trainer stops with a
# checkpoint as at its own time limit (SIGTERM to it; torch's launcher passes that on to every rank) and the
# job resubmits itself; a later SIGTERM from Slurm is the limit itself (or scancel).
on_warning() {
    say "USR1: the time limit is near; stopping with a checkpoint, to be continued by the next job"
    [ -n "${TRAINER_PID:-}" ] && kill -TERM "$TRAINER_PID" 2>/dev/null
}
trap on_warning USR1
