# The preamble and shell functions every job script shares (jobs/*.pbs, jobs/*.slurm through their scheduler's
# part, jobs/pbs.sh or jobs/slurm.sh; and jobs/node.sh), sourced in the submit folder, never run.
# JOB_START (when the job started, epoch seconds) is set before, as the script's first command.

declare -F say >/dev/null || say() { printf '[%s] %s\n' "$(date '+%F %T')" "$*"; }
declare -F die >/dev/null || die() { say "error: $*"; exit 2; }
[ -d segtrain ] && [ -d jobs ] || die "submit from the segtrain folder (this job started in $PWD)"
SCRATCH="" SCRATCH_OWNED=""
# A submission from inside the job (the next job of a chain) is bounded by the smallest margin the job
# keeps at the end of its walltime (1 minute): qsub may wait for a password without a Kerberos ticket.
SUBMIT_TIMEOUT_S=60

# This job's scratch on the first node: the scheduler's choose_scratch (jobs/pbs.sh, jobs/slurm.sh) sets
# SCRATCH (SCRATCH_OWNED=1 when it made the folder); then the job's own folders in it, and TMPDIR there
# (a node's /tmp is small).
enter_scratch() {
    choose_scratch
    [ -n "$SCRATCH" ] && [ -d "$SCRATCH" ] && [ -w "$SCRATCH" ] || die "no writable scratch ($SCRATCH_HINT)"
    JOB_DIR=$SCRATCH/.segtrain-job
    mkdir -p "$JOB_DIR" "$SCRATCH/tmp" || die "cannot write to scratch $SCRATCH"
    export TMPDIR=$SCRATCH/tmp
}

# The one "next job due" protocol of training and prediction jobs: their Python step (steps finish,
# predict_steps run) writes the next job's submit words to $JOB_DIR/submit.args when one is due. This
# submits it (outside any container: the scheduler's commands are the host's) and records it with
# `step record ARGS... NEW_ID`. Status 0: resubmitted; 1: none due; 2: the submission failed.
resubmit() {
    local words=() new_id
    [ -s "$JOB_DIR/submit.args" ] || return 1
    mapfile -d '' -t words <"$JOB_DIR/submit.args"
    if ! new_id=$(submit_next "${words[@]}"); then
        say "error: resubmission failed; continue by hand with the command above"
        return 2
    fi
    say "resubmitted as $new_id"
    step record "$@" "$new_id" || say "warning: could not record $new_id"
}

# Another node's scratch (jobs/node.sh; $1 the first node's scratch path, $2 this node's rank): the site's
# $SCRATCHDIR where it has one; else the first node's path, which a PBS site makes on every node of a job
# and the job makes itself where no one does ($SEGTRAIN_MAKES_SCRATCH, set by jobs/slurm.sh); where this
# node sees the first node's folder itself (it holds .segtrain-job: a scratch shared between nodes, or the
# local runners' "nodes" on one machine), a folder of its own beside it. Sets SCRATCH, and SCRATCH_OWNED=1
# for a folder the job made (removed once emptied).
node_scratch() {
    local first=$1 rank=$2
    SCRATCH="" SCRATCH_OWNED=""
    if [ -n "${SCRATCHDIR:-}" ]; then
        SCRATCH=$SCRATCHDIR
    elif [ -e "$first/.segtrain-job" ]; then
        SCRATCH=$first.node$rank SCRATCH_OWNED=1
    elif [ -n "${SEGTRAIN_MAKES_SCRATCH:-}" ] || [ -d "$first" ]; then
        SCRATCH=$first SCRATCH_OWNED=${SEGTRAIN_MAKES_SCRATCH:-}
    fi
    [ -z "$SCRATCH_OWNED" ] || mkdir -p "$SCRATCH" 2>/dev/null || SCRATCH=""
    [ -n "$SCRATCH" ] && [ -d "$SCRATCH" ] && [ -w "$SCRATCH" ]
}

# Empty this node's scratch with the site's clean_scratch where it has one. The folder itself goes
# only when the script made it: a site's own (MetaCentrum's $SCRATCHDIR, PBS's $TMPDIR) stays.
clean_scratch_dir() {
    if [ -n "${SCRATCHDIR:-}" ] && command -v clean_scratch >/dev/null 2>&1; then
        clean_scratch
    else
        find "$SCRATCH" -mindepth 1 -delete
        [ -z "${SCRATCH_OWNED:-}" ] || rmdir "$SCRATCH"
    fi
}

# Wait for the trainer; a trap interrupts `wait`, so wait again until it has really exited.
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

# The software environment (envs/README.md) of the submit folder $1: the virtualenv or the folder
# made by envs/build_ngc.sh (NGC image + packages) in $2. Sets PY, the python command.
use_environment() {
    local workdir=$1 env_dir=$2 image binds
    if [ -f "$env_dir/image" ]; then
        image=$(head -n 1 "$env_dir/image")
        [ -n "$image" ] && [ -e "$image" ] || die "image $image (named in $env_dir/image) not found"
        command -v singularity >/dev/null 2>&1 || die "singularity not found on $(hostname)"
        export PYTHONUSERBASE=$env_dir  # the packages the image lacks, installed by envs/build_ngc.sh
        binds=(--bind "$SCRATCH" --bind "$workdir")
        [ -d /storage ] && binds+=(--bind /storage)
        PY=(singularity exec --nv "${binds[@]}" "$image" python)
    elif [ -x "$env_dir/bin/python" ]; then
        if [ -s "$env_dir/segtrain-module" ] && command -v module >/dev/null 2>&1; then
            module add "$(head -n 1 "$env_dir/segtrain-module")"
        fi
        export VIRTUAL_ENV=$env_dir PATH=$env_dir/bin:$PATH
        PY=("$env_dir/bin/python")
    else
        die "no software environment at $env_dir: build one (envs/README.md) or pass SEGTRAIN_ENV"
    fi
    export PYTHONPATH=$workdir${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
}
