"""Where a job decides whether its chain goes on: what happened, the next job's qsub, or why there is none.

A job ends in one of these ways (the trainer's exit status, and whether and when SIGTERM came):

- the trainer stopped at its time limit (exit 3, no SIGTERM): the next job continues the run;
- SIGTERM at the walltime: a step outran the margin, or the SIGTERM landed while a clean stop was
  exiting (PBS's node daemon polls: it came up to ~25 s after the limit on a real server). Told
  apart from ``qdel`` by the time: the walltime (re-read from ``qstat``, so a ``qextend`` counts)
  has passed. The chain goes on when this job moved the run forward (a checkpoint newer than the
  one it started from), so a walltime too short for one step cannot loop forever;
- SIGTERM before the walltime: ``qdel`` or a node shutdown; the user decides, so no next job;
- done, a user error, a crash: nothing to continue (the message says how to, by hand).
"""
from __future__ import annotations

import signal
from pathlib import Path
from typing import Optional

from segtrain.cluster import variables as qsub
from segtrain.cluster.job.plan import Plan
from segtrain.cluster.schedulers import scheduler_named
from segtrain.cluster.walltime import walltime_kill
from segtrain.errors import EXIT_OK, EXIT_RESUMABLE, EXIT_USER_ERROR
from segtrain.run.directory import RunDir

KILLED_BY_SIGTERM = 128 + signal.SIGTERM


def continue_command(plan: Plan) -> str:
    """The command that continues the run by hand, with this job's processes and resources (not its
    walltime): ``qsub -l select=... -v RUN=...,NPROC=... jobs/train.pbs`` on PBS."""
    scheduler = scheduler_named(plan.scheduler)
    variables = {qsub.RUN: plan.run_dir, **{k: v for k, v in plan.passed_on.items() if k in (qsub.NPROC, qsub.UMASK)}}
    resources = {k: v for k, v in plan.resources.items() if k not in ("walltime", "time")}
    return qsub.display(scheduler.submit_argv(scheduler.script, variables, resources=resources))


def explain(code: Optional[int], terminated_at: Optional[float], plan: Plan, walltime_s: Optional[float],
            stored: bool = True) -> str:
    """What the trainer's exit status means for the user, and what to do next; ``stored``: whether the
    run could be copied back to storage (a storage folder that became unwritable also stops the trainer,
    whose mirror writes there, with exit 2: then storage, not the config or the data, is the reason)."""
    again = f"continue it with: {continue_command(plan)} (or scripts/submit {plan.run_dir})"
    if code is None:
        return "the job stopped before the trainer started (the lines above say why)"
    if code == EXIT_OK:
        return f"training finished; results in {plan.run_dir}"
    if code == EXIT_USER_ERROR and not stored:
        return (f"the trainer stopped (exit 2) and the run could not be copied back: the storage folder "
                f"{plan.run_dir} cannot be written (read-only, full, or gone?), which stops the trainer's mirror "
                f"too; the lines above and below say which file; the run is kept in scratch (below): make "
                f"storage writable, copy it back, then {again}")
    if code == EXIT_USER_ERROR:
        return (f"the trainer stopped on a problem with the config or the data set (exit 2; the line above says "
                f"which); its logs and last checkpoint, if any, are in {plan.run_dir}; after fixing it, {again}")
    if code == EXIT_RESUMABLE:
        if terminated_at is None:
            why = "the time limit"
        elif walltime_kill(plan.job_start, terminated_at, walltime_s):
            why = "SIGTERM at the walltime"
        else:
            why = "SIGTERM: qdel or node shutdown"
        return f"training stopped early with a checkpoint ({why})"
    if code > 128:
        name = _signal_name(code - 128)
        hint = " (out of memory? ask for more mem=; or killed by the scheduler)" if code - 128 == signal.SIGKILL else ""
        return (f"the trainer was killed by {name}{hint}; the last mirrored checkpoint is in "
                f"{RunDir(plan.run_dir).checkpoints}; {again}")
    return (f"the trainer crashed (exit {code}; the traceback above says why); its logs and last checkpoint are in "
            f"{plan.run_dir}; {again}")


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def moved_forward(run_dir: Path, job_id: str) -> bool:
    """Whether this job's segment of the run (run.json on storage) checkpointed past where it started."""
    segments = [s for s in RunDir(run_dir).info.read().get("segments", []) if s.get("job_id") == job_id]
    if not segments:
        return False
    start, end = segments[-1].get("start_step"), segments[-1].get("end_step")
    return start is not None and end is not None and end > start


def _runs_of(plan: Plan) -> list[Path]:
    """The runs this job trained: its run, or a search worker's trials (each names its jobs in its run.json)."""
    if plan.study is None:
        return [Path(plan.run_dir)]
    from segtrain.search.study import TRIALS

    trials = Path(plan.study) / TRIALS
    return sorted(trials.iterdir()) if trials.is_dir() else []


def resubmission(plan: Plan, code: Optional[int], terminated_at: Optional[float],
                 walltime_s: Optional[float]) -> tuple[Optional[list[str]], str]:
    """The qsub words of the next job, or None and why there is none."""
    manual = continue_command(plan)
    if terminated_at is None:
        if code != EXIT_RESUMABLE:
            return None, ""
    elif not walltime_kill(plan.job_start, terminated_at, walltime_s):
        if code not in (EXIT_RESUMABLE, KILLED_BY_SIGTERM):
            return None, ""
        return None, f"not resubmitting after SIGTERM before the walltime (qdel?); to continue: {manual}"
    elif code not in (EXIT_RESUMABLE, KILLED_BY_SIGTERM):
        return None, ""
    elif not any(moved_forward(run, plan.job_id) for run in _runs_of(plan)):
        return None, (f"not resubmitting: killed at the walltime without a new checkpoint (a walltime too short "
                      f"for one step?); to continue with a longer one: {manual}")
    if plan.resubmits >= plan.max_resubmits:
        return None, f"not resubmitting: MAX_RESUBMITS={plan.max_resubmits} reached; to continue: {manual}"
    variables = {qsub.RUN: plan.run_dir, qsub.DATA: plan.data, qsub.RUNS: plan.runs,
                 qsub.MAX_RESUBMITS: str(plan.max_resubmits), qsub.RESUBMITS: str(plan.resubmits + 1),
                 **plan.passed_on, **({qsub.STUDY: plan.study, qsub.WORKER: plan.worker} if plan.study else {})}
    # Where the scheduler takes no dependency (PBS Pro, on a subjob: 13[2].server), the next job may
    # start at once: the run is already copied back.
    scheduler = scheduler_named(plan.scheduler)
    argv = scheduler.submit_argv(Path(plan.workdir) / scheduler.script, variables, name=plan.job_name,
                                 resources=plan.resources, depend=scheduler.after(plan.job_id))
    return argv, f"resubmission {plan.resubmits + 1} of at most {plan.max_resubmits}: {qsub.display(argv)}"


def record_resubmission(run_dir: Path, from_job: str, to_job: str) -> None:
    """Append ``{from, to, at}`` to run.json's ``resubmissions`` (atomically; other keys kept)."""
    RunDir(run_dir).info.add_resubmission(from_job, to_job)
