# The preamble every job script shares (jobs/train.pbs, jobs/predict.pbs, jobs/train.slurm, jobs/predict.slurm, and
# jobs/node.sh), sourced in the submit folder, never run. The job itself is one Python runner,
# segtrain/cluster/job/runner.py; the shell keeps what must be shell: the software environment's module, and the
# runner as a child of the job's top shell.

declare -F say >/dev/null || say() { printf '[%s] %s\n' "$(date '+%F %T')" "$*"; }
declare -F die >/dev/null || die() { say "error: $*"; exit 2; }
[ -d segtrain ] && [ -d jobs ] || die "submit from the segtrain folder (this job started in $PWD)"
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1

# The runner's python for the software environment $1 (envs/README.md): the virtualenv's, after the module it was
# built with; beside an NGC image the host's python3 (the scheduler's commands are the host's; the image's python
# runs the steps and the trainer). Sets ENV_DIR and RUNNER.
runner_python() {
    ENV_DIR=$1 RUNNER=python3
    [ -f "$ENV_DIR/image" ] && return 0
    [ -x "$ENV_DIR/bin/python" ] || die "no software environment at $ENV_DIR: build one (envs/README.md) or pass SEGTRAIN_ENV"
    if [ -s "$ENV_DIR/segtrain-module" ] && command -v module >/dev/null 2>&1; then
        module add "$(head -n 1 "$ENV_DIR/segtrain-module")"
    fi
    RUNNER=$ENV_DIR/bin/python
}

# The job ($1: train or predict): the runner in a child of this top shell. PBS kills the top shell at once on qdel
# (its traps never run), so the runner, with the stop path, must outlive it; here a SIGTERM is only noted, and a
# warning the scheduler sends this shell alone (Slurm's USR1 before the time limit) is passed on to the runner,
# which ignores it until it is ready.
run_job() {
    local pid
    runner_python "${SEGTRAIN_ENV:-$PWD/.venv}"
    trap : TERM INT
    trap '' USR1
    "$RUNNER" -m segtrain.cluster.job.runner "$1" --script "$0" --job-start "$JOB_START" --env-dir "$ENV_DIR" &
    pid=$!
    trap 'kill -USR1 "$pid" 2>/dev/null' USR1
    wait_for "$pid"
}

# Wait for a child; a trap interrupts `wait`, so wait again until it has really exited.
wait_for() {
    local pid=$1 rc=0 again
    wait "$pid" || rc=$?
    while kill -0 "$pid" 2>/dev/null; do
        rc=0
        wait "$pid" || rc=$?
    done
    if [ "$rc" -gt 128 ]; then  # interrupted just as it exited: ask for its own status once more
        again=0
        wait "$pid" 2>/dev/null || again=$?
        [ "$again" != 127 ] && rc=$again
    fi
    return "$rc"
}
