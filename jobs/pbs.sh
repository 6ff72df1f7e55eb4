# PBS's part of a job script's preamble, sourced by jobs/train.pbs and jobs/predict.pbs once they entered
# the submit folder (never run by itself): the shared preamble (jobs/common.sh), the job's id and name,
# its scratch, and the two scheduler commands the job runs (jobs/train.sh lists what each part provides).

. jobs/common.sh || exit 2
JOB_ID=$PBS_JOBID JOB_NAME=${PBS_JOBNAME:-}
SCRATCH_HINT="SCRATCHDIR and TMPDIR unset or missing; ask for scratch_local"

# MetaCentrum gives each job $SCRATCHDIR; stock PBS has only the job's $TMPDIR (/var/tmp/pbs.<id>, made
# on every node of the job); a TMPDIR that is not the job's own (a shared /tmp) gets a job folder inside
# it, so that cleaning up never touches anything but this job's files.
choose_scratch() {
    if [ -n "${SCRATCHDIR:-}" ]; then
        SCRATCH=$SCRATCHDIR
    elif [ -n "${TMPDIR:-}" ] && [[ $TMPDIR == *"$PBS_JOBID"* ]]; then
        SCRATCH=$TMPDIR
    elif [ -n "${TMPDIR:-}" ]; then
        SCRATCH=$(mktemp -d "$TMPDIR/segtrain.$PBS_JOBID.XXXXXX") && SCRATCH_OWNED=1 || SCRATCH=""
    fi
}

# The walltime and resources the job got (qstat is not available inside a container).
job_info() { timeout 60 qstat -f "$PBS_JOBID" </dev/null; }
# The next job of a chain: no stdin, and a timeout.
submit_next() { timeout "$SUBMIT_TIMEOUT_S" "$@" </dev/null; }
