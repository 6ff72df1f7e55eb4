# The scheduler-neutral part of the training job, sourced by jobs/train.pbs and jobs/train.slurm
# (never run by itself); jobs/train.pbs has the map of its steps. Their preamble has entered the submit
# folder, set JOB_START (when the job started, epoch seconds) and read the scheduler's part (jobs/pbs.sh,
# jobs/slurm.sh, which read jobs/common.sh), which sets:
#   JOB_ID, JOB_NAME  the scheduler's id and name of this job
#   SCRATCH_HINT      what to ask the scheduler for when there is no scratch
# and defines:
#   choose_scratch    sets SCRATCH, this job's scratch folder (SCRATCH_OWNED=1 when it made the folder)
#   job_info          prints the scheduler's description of this job (its walltime, its resources)
#   submit_next       runs the submit command given as words, printing the new job's id
# The Python steps (segtrain.cluster.job.steps) ask segtrain.cluster.schedulers for everything else.

# UMASK (qsub -v UMASK=077, scripts/submit --umask 077): everything this job and the jobs it resubmits
# write is private. `qsub -W umask=077` cannot do that on PBS: the script's #PBS -W umask=022 wins.
if [ -n "${UMASK:-}" ]; then
    [[ $UMASK =~ ^[0-7]{3,4}$ ]] && umask "$UMASK" || die "UMASK=$UMASK: expected an octal umask such as 077"
fi
enter_scratch
PLAN=$JOB_DIR/plan.json WORKDIR=$PWD TRAINER_PID="" TRAINER_EXIT="" TERMINATED="" TERM_AT="" WATCH_PID=""
PY=() NODE_PIDS=()  # NODE_PIDS: the processes starting jobs/node.sh on the other nodes
NODE_GRACE_S=60  # how long the other nodes may take to follow rank 0 out

step() { "${PY[@]}" -m segtrain.cluster.job.steps "$@"; }

# ---- the other nodes (a job on several nodes): jobs/node.sh MODE on each, through pbsdsh or srun,
# from the commands `step node-args` wrote (node-RANK.MODE.args); pbsdsh's report of how the task
# ended goes to node-RANK.MODE.out
start_nodes() {
    local file words
    for file in "$JOB_DIR"/node-*."$1".args; do
        [ -e "$file" ] || continue
        mapfile -d '' -t words <"$file"
        "${words[@]}" >"${file%.args}.out" </dev/null &
        NODE_PIDS+=($!)
    done
}

nodes_running() {
    local pid
    for pid in "${NODE_PIDS[@]}"; do
        kill -0 "$pid" 2>/dev/null && return 0
    done
    return 1
}

# SIGTERM to each node starter still running (pbsdsh, srun: it passes the signal to its task), then reap them.
stop_nodes() {
    local pid
    [ ${#NODE_PIDS[@]} -gt 0 ] || return 0
    for pid in "${NODE_PIDS[@]}"; do
        kill -TERM "$pid" 2>/dev/null
    done
    wait "${NODE_PIDS[@]}" 2>/dev/null
    NODE_PIDS=()
}

# Wait for the other nodes' node.sh (GRACE seconds at most, when given).
await_nodes() {
    local grace=${1:-} deadline
    if [ -n "$grace" ]; then
        deadline=$((SECONDS + grace))
        while [ "$SECONDS" -lt "$deadline" ] && nodes_running; do sleep 1; done
    elif [ ${#NODE_PIDS[@]} -gt 0 ]; then
        wait "${NODE_PIDS[@]}"
    fi
    stop_nodes
}

# How node.sh MODE ended on each other node (exit status 1: on one it failed).
nodes_report() {
    [ -z "$(compgen -G "$JOB_DIR/node-*.$1.out")" ] || step node-status "$PLAN" "$1" --dir "$JOB_DIR"
}

# ---- 4 and 5: on every exit of the job body: success, failure, or after SIGTERM (SIGKILL follows:
# PBS after 10 s, Slurm after KillWait)
on_exit() {
    local rc=$? copied=1
    trap '' TERM INT  # a second signal must not cut the copy-back short
    trap - EXIT
    if [ -f "$PLAN" ] && [ ${#PY[@]} -gt 0 ]; then
        local how=(${TRAINER_EXIT:+--trainer-exit "$TRAINER_EXIT"} ${TERM_AT:+--terminated-at "$TERM_AT"})
        step finish "$PLAN" "${how[@]}" --job-info "$JOB_DIR/job-info.txt" --next "$JOB_DIR/submit.args"
        case $? in 0 | 10) ;; *) copied=0 ;; esac  # 10: copied back, no next job due
        if [ "$copied" = 1 ]; then
            resubmit "$PLAN"
            case $? in 0) rc=3 ;; 2) [ "$rc" = 3 ] && rc=1 ;; esac  # 3: to be continued by the next job
        fi
    fi
    [ -z "$WATCH_PID" ] || kill "$WATCH_PID" 2>/dev/null
    stop_nodes
    # The other nodes' scratch holds copies only: emptied whatever happened here (node.sh empties it
    # itself when its trainer ends; this also covers a job that ended before or while starting them).
    if [ -n "$(compgen -G "$JOB_DIR/node-*.clean.args")" ]; then
        start_nodes clean
        await_nodes 60
    fi
    if [ "$copied" = 1 ]; then
        clean_scratch_dir && say "end of job $JOB_ID: exit $rc; scratch emptied" \
            || say "end of job $JOB_ID: exit $rc; warning: could not clean scratch $SCRATCH"
    else
        say "error: copy-back failed; everything is kept in scratch $SCRATCH on $(hostname)"
        [ "$rc" = 0 ] && rc=1
        say "end of job $JOB_ID: exit $rc; scratch kept"
    fi
    exit "$rc"
}

on_term() {
    TERMINATED=1 TERM_AT=${TERM_AT:-$EPOCHREALTIME}
    say "SIGTERM: stopping (walltime, qdel/scancel or node shutdown); results will be copied back"
    # The scheduler signals every process of the job, the trainer too: it checkpoints and exits 3. Not
    # forwarding a second SIGTERM matters with several processes: torch's elastic agent would
    # cut short its wait for the workers' checkpoints.
    [ -n "$TRAINER_PID" ] || exit 143
}

# qextend: the scheduler asked again every WALLTIME_POLL seconds (default 600) while the trainer PID
# runs; `step deadline` rewrites the trainer's deadline file when the walltime changed.
watch_walltime() {
    trap - TERM INT
    while sleep "${WALLTIME_POLL:-600}" && kill -0 "$1" 2>/dev/null; do
        job_info >"$JOB_DIR/job-info.new" 2>/dev/null && mv -f "$JOB_DIR/job-info.new" "$JOB_DIR/job-info.txt" \
            && step deadline "$PLAN" --job-info "$JOB_DIR/job-info.txt"
    done
}

job_body() {
    trap on_exit EXIT
    trap on_term TERM INT
    if declare -F on_warning >/dev/null; then trap on_warning USR1; fi  # Slurm's time-limit warning
    # ---- the software environment: a virtualenv, or an NGC image plus packages (envs/README.md)
    ENV_DIR=${SEGTRAIN_ENV:-$WORKDIR/.venv}
    use_environment "$WORKDIR" "$ENV_DIR"
    say "job $JOB_ID (${JOB_NAME:-}) on $(hostname): scratch $SCRATCH, environment $ENV_DIR, umask $(umask)"

    # ---- 1. checks, before anything is copied; the walltime from the scheduler (not asked from a container)
    job_info >"$JOB_DIR/job-info.txt" 2>&1 \
        || say "warning: the scheduler did not describe the job; the walltime comes from the job script's directive"
    step plan "$PLAN" --scratch "$SCRATCH" --script "$0" --job-start "$JOB_START" --job-info "$JOB_DIR/job-info.txt" || exit
    # ---- 2. data set (and a continued run) to scratch, verified; each other node stages its own copy
    step node-args "$PLAN" stage train clean --env-dir "$ENV_DIR" --out "$JOB_DIR" || exit
    start_nodes stage
    step stage "$PLAN" || exit
    await_nodes
    nodes_report stage || exit
    # ---- 3. train here and on the other nodes (they meet rank 0's rendezvous); qextend picked up
    step train-args "$PLAN" >"$JOB_DIR/train.args" || exit
    mapfile -d '' -t TRAIN_ARGS <"$JOB_DIR/train.args"
    "${PY[@]}" -m segtrain "${TRAIN_ARGS[@]}" &  # the launch line: segtrain train [--nproc-per-node N ...]
    TRAINER_PID=$!
    start_nodes train
    watch_walltime "$TRAINER_PID" &
    WATCH_PID=$!
    wait_for "$TRAINER_PID" && TRAINER_EXIT=0 || TRAINER_EXIT=$?
    TRAINER_PID=""
    if [ -z "$TERMINATED" ]; then  # after SIGTERM the copy-back comes first
        await_nodes "$NODE_GRACE_S"
        nodes_report train
    fi
    exit "$TRAINER_EXIT"  # 4 and 5 in on_exit
}

# The top shell: PBS kills it at once on qdel (its traps never run), so the job body, with the stop
# path, runs in a child that outlives it; here a SIGTERM (walltime) is only noted, and a scheduler's
# warning to the batch shell (Slurm's USR1) is passed on to the body.
trap : TERM INT
job_body &
BODY_PID=$!
trap 'kill -USR1 "$BODY_PID" 2>/dev/null' USR1
wait_for "$BODY_PID"
