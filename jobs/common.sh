# Shell functions of jobs/train.pbs, jobs/train.slurm and jobs/node.sh (sourced from the submit folder, never run).
# The caller defines say and die, and sets SCRATCH (and SCRATCH_OWNED=1 when it made that folder).

# The one place a job's scratch folder is chosen (jobs/train.pbs, and jobs/node.sh on the other
# nodes, which pass the first node's scratch as $1): sets SCRATCH, and SCRATCH_OWNED=1 when it made
# the folder. MetaCentrum's $SCRATCHDIR; on another node the first node's scratch path, which a PBS
# site makes on every node of a job (/scratch/USER/job_ID, /var/tmp/pbs.ID), but never the first
# node's folder itself (it holds .segtrain-job: a scratch shared between nodes, or the local runner's
# "nodes" on one machine); else the job's own $TMPDIR; on the first node, a TMPDIR that is not the
# job's own (a shared /tmp) gets a job folder inside it, so that cleaning up never touches anything
# but this job's files.
#   On Slurm, which gives no scratch folder, another node (rank $2) makes the first node's path
# itself, so that a continued run's checkpoint lies where every rank looks for it; where it sees
# the first node's folder (a shared file system, or the local Slurm's "nodes" on one machine) it
# makes a folder of its own beside it. Either is this job's, removed when emptied.
choose_scratch() {
    local first=$1 rank=${2:-}
    SCRATCH="" SCRATCH_OWNED=""
    if [ -n "${SCRATCHDIR:-}" ]; then
        SCRATCH=$SCRATCHDIR
    elif [ -n "$first" ] && [ -n "${SLURM_JOB_ID:-}" ]; then
        SCRATCH=$first SCRATCH_OWNED=1
        [ -e "$first/.segtrain-job" ] && SCRATCH=$first.node$rank
        mkdir -p "$SCRATCH" 2>/dev/null || SCRATCH=""
    elif [ -n "$first" ] && [ -d "$first" ] && [ ! -e "$first/.segtrain-job" ]; then
        SCRATCH=$first
    elif [ -n "${TMPDIR:-}" ] && [ -n "${PBS_JOBID:-}" ] && [[ $TMPDIR == *"$PBS_JOBID"* ]]; then
        SCRATCH=$TMPDIR
    elif [ -z "$first" ] && [ -n "${TMPDIR:-}" ]; then
        SCRATCH=$(mktemp -d "$TMPDIR/segtrain.${PBS_JOBID:-job}.XXXXXX") && SCRATCH_OWNED=1 || SCRATCH=""
    fi
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
