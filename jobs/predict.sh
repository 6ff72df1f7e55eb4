# The scheduler-neutral part of the prediction job, sourced by jobs/predict.pbs and jobs/predict.slurm
# (never run by itself), after the preamble jobs/train.sh describes.
#
# The logic is in segtrain/cluster/job/predict_steps.py; this part sets up the environment,
# resubmits the rest after a time-limit stop, and empties scratch (it holds copies only), after a
# qdel or scancel too: the job body runs in a child of the top shell, which PBS kills at once.

enter_scratch
WORKDIR=$PWD STEP_PID="" TERMINATED="" PY=()

step() { "${PY[@]}" -m segtrain.cluster.job.predict_steps "$@"; }

# Runs on every exit. Finished scenes are on storage already; scratch holds copies only.
on_exit() {
    local rc=$?
    trap '' TERM INT
    trap - EXIT
    if [ "$rc" = 3 ] && [ -z "$TERMINATED" ]; then  # stopped before the walltime with scenes left
        resubmit
        [ $? != 2 ] || rc=1
    fi
    clean_scratch_dir || say "warning: could not clean scratch $SCRATCH"
    exit "$rc"
}

on_term() {
    TERMINATED=1
    say "SIGTERM (walltime, qdel, scancel or node shutdown): the scene in progress is abandoned"
    [ -n "$STEP_PID" ] || exit 143  # the scheduler signals the python step too; it stops by itself
}

# The job body; on_exit runs on every way it ends.
job_body() {
    trap on_exit EXIT
    trap on_term TERM INT
    ENV_DIR=${SEGTRAIN_ENV:-$WORKDIR/.venv}
    use_environment "$WORKDIR" "$ENV_DIR"
    say "job $JOB_ID (${JOB_NAME:-}) on $(hostname): scratch $SCRATCH, environment $ENV_DIR"
    job_info >"$JOB_DIR/job-info.txt" 2>&1 \
        || say "warning: the scheduler did not describe the job; the walltime comes from the job script's directive"
    step run --scratch "$SCRATCH" --job-start "$JOB_START" --job-info "$JOB_DIR/job-info.txt" \
        --resubmit "$JOB_DIR/submit.args" &
    STEP_PID=$!
    local rc=0
    wait_for "$STEP_PID" || rc=$?
    STEP_PID=""
    exit "$rc"
}

# The top shell: PBS kills it at once on qdel (its traps never run), so the job body, with the stop
# path, runs in a child that outlives it; here a SIGTERM (walltime) is only noted.
trap : TERM INT
job_body &
wait_for $!
