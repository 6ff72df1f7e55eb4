# Slurm's part of a job script's preamble, sourced by jobs/train.slurm and jobs/predict.slurm once
# they entered the submit folder and read jobs/common.sh (never run by itself). Sets JOB_ID and
# JOB_NAME (an array task is ARRAYID_INDEX), OMP_NUM_THREADS, SRUN_CPUS_PER_TASK and SCRATCH
# (SCRATCH_OWNED=1: the job made it); defines job_info and submit_next (see jobs/train.sh).

JOB_ID=$SLURM_JOB_ID JOB_NAME=${SLURM_JOB_NAME:-}
[ -n "${SLURM_ARRAY_JOB_ID:-}" ] && JOB_ID=${SLURM_ARRAY_JOB_ID}_${SLURM_ARRAY_TASK_ID}
export OMP_NUM_THREADS=${SLURM_CPUS_PER_TASK:-${OMP_NUM_THREADS:-${SLURM_CPUS_ON_NODE:-1}}}  # as PBS sets it from ncpus
# srun (the other nodes' steps) does not take the job's --cpus-per-task from its environment since 22.05
[ -z "${SLURM_CPUS_PER_TASK:-}" ] || export SRUN_CPUS_PER_TASK=$SLURM_CPUS_PER_TASK

# Slurm gives no scratch variable: the job makes its own folder in SCRATCH_BASE (the site's
# scratch), else in TMPDIR or /tmp (which the submitter's environment may name), and removes it.
ORIGINAL_TMPDIR=${TMPDIR:-}
for base in "${SCRATCH_BASE:-}" "${TMPDIR:-}" /tmp; do
    [ -n "$base" ] && [ -d "$base" ] && [ -w "$base" ] || continue
    SCRATCH=$(mktemp -d "$base/segtrain.$JOB_ID.XXXXXX") && SCRATCH_OWNED=1 && break
done

# The time limit and resources the job got.
job_info() { timeout 60 scontrol show job "$SLURM_JOB_ID" </dev/null; }
# The next job of the chain: not this job's array variables, scratch TMPDIR or node list.
submit_next() {
    (
        unset SLURM_ARRAY_JOB_ID SLURM_ARRAY_TASK_ID SLURM_ARRAY_TASK_COUNT SLURM_ARRAY_TASK_MIN \
            SLURM_ARRAY_TASK_MAX SLURM_ARRAY_TASK_STEP SEGTRAIN_NODEFILE SRUN_CPUS_PER_TASK
        if [ -n "$ORIGINAL_TMPDIR" ]; then export TMPDIR=$ORIGINAL_TMPDIR; else unset TMPDIR; fi
        timeout 120 "$@" </dev/null
    )
}
