"""Where a job's walltime is handled: the margin kept at its end, its deadline, the trainer's time limit,
and telling the walltime's SIGTERM from a qdel; and the HH:MM:SS durations it is written in.

PBS sends no warning before the walltime: at the limit every process of the job gets SIGTERM and,
``kill_delay`` (10 s) later, SIGKILL. A job therefore times itself. Its deadline is
``job_start + walltime - margin`` (:func:`deadline`), the margin (``WALLTIME_MARGIN``, else
:func:`default_margin`) leaving room for the final checkpoint, the copy-back and the resubmission:

- the trainer gets a time limit to the deadline (:func:`training_time_limit`), and on rank 0 a deadline
  file: the training job's runner (:mod:`.job.runner`) asks the scheduler again every
  ``WALLTIME_POLL`` seconds and ``steps deadline`` rewrites the file when a ``qextend`` raised the walltime;
- a prediction job starts no scene that would not end by the deadline;
- Slurm also warns the job's shell before its limit (``--signal=B:USR1``, passed on to the runner, whose
  ``on_warning`` stops the trainer as at its own time limit);
- a SIGTERM close to the walltime or after it is the walltime's, else a ``qdel`` (:func:`walltime_kill`):
  the job resubmits itself after the first only.
"""
from __future__ import annotations

import re
from typing import Optional

from segtrain.errors import UserError

MIN_MARGIN_S = 60.0
MAX_MARGIN_S = 600.0
MARGIN_FRACTION = 0.05
MIN_LIMIT_S = 1.0  # the trainer always does at least one step, so a chain always progresses
WALLTIME_SLACK_S = 10.0  # a SIGTERM this close to the walltime, or after it, is the walltime's

def default_margin(walltime_s: float) -> float:
    """5 % of the walltime, at least a minute and at most ten: room for checkpoint and copy-back."""
    return min(max(MARGIN_FRACTION * walltime_s, MIN_MARGIN_S), MAX_MARGIN_S)


def margin(walltime_s: float, margin_s: Optional[float] = None) -> float:
    """The margin kept at the end of the walltime: the one given (``WALLTIME_MARGIN``), else the default."""
    return default_margin(walltime_s) if margin_s is None else margin_s


def deadline(job_start: float, walltime_s: float, margin_s: Optional[float] = None) -> float:
    """When the job's work must be over (epoch seconds), so that the margin is left for the copy-back."""
    return job_start + walltime_s - margin(walltime_s, margin_s)


def walltime_kill(job_start: float, terminated_at: Optional[float], walltime_s: Optional[float]) -> bool:
    """Whether a SIGTERM at ``terminated_at`` (epoch seconds) was the scheduler ending the walltime (else qdel).

    The node daemon polls: the walltime's SIGTERM came up to ~25 s after the limit on a real server; a
    clean stop that was exiting just then is the walltime's too.
    """
    if terminated_at is None or walltime_s is None:
        return False
    return terminated_at - job_start >= walltime_s - WALLTIME_SLACK_S


def training_time_limit(walltime_s: float, elapsed_s: float, margin_s: Optional[float] = None) -> float:
    """Seconds the trainer may run: the walltime left after ``elapsed_s``, minus the margin.

    Never below :data:`MIN_LIMIT_S`: a job that spent its walltime staging still trains one step
    and checkpoints, so a resubmitted chain cannot loop without progress.
    """
    return max(walltime_s - elapsed_s - margin(walltime_s, margin_s), MIN_LIMIT_S)


_DURATION = re.compile(r"^\s*(?:(?:(\d+):)?(\d+):)?(\d+(?:\.\d*)?)\s*$")


def parse_hms(text: str, what: str = "walltime") -> float:
    """Seconds in a PBS duration: ``SS``, ``MM:SS`` or ``HH:MM:SS`` (hours may exceed 24)."""
    match = _DURATION.match(str(text))
    if not match:
        raise UserError(f"{what}: {text!r} is not a duration (expected HH:MM:SS, MM:SS or seconds)")
    hours, minutes, seconds = match.groups()
    if (hours is not None or minutes is not None) and float(seconds) >= 60:
        raise UserError(f"{what}: {text!r}: seconds must be below 60 in the HH:MM:SS form")
    if hours is not None and int(minutes) >= 60:
        raise UserError(f"{what}: {text!r}: minutes must be below 60 in the HH:MM:SS form")
    return int(hours or 0) * 3600 + int(minutes or 0) * 60 + float(seconds)


def format_hms(seconds: float) -> str:
    """``HH:MM:SS`` as PBS prints it (whole seconds, hours unbounded)."""
    total = max(int(round(seconds)), 0)
    return f"{total // 3600:02d}:{total % 3600 // 60:02d}:{total % 60:02d}"
