"""The training time limit derived from a job's walltime.

PBS sends no warning before the walltime: at the limit every process of the job gets SIGTERM
and, ``kill_delay`` (10 s) later, SIGKILL. A job therefore times itself: the trainer gets a
limit of the walltime minus what has already passed minus a margin that leaves room for the
final checkpoint, the copy-back and the resubmission.
"""
from __future__ import annotations

import re

from segtrain.errors import UserError

MIN_MARGIN_S = 60.0
MAX_MARGIN_S = 600.0
MARGIN_FRACTION = 0.05
MIN_LIMIT_S = 1.0  # the trainer always does at least one step, so a chain always progresses

def default_margin(walltime_s: float) -> float:
    """5 % of the walltime, at least a minute and at most ten: room for checkpoint and copy-back."""
    return min(max(MARGIN_FRACTION * walltime_s, MIN_MARGIN_S), MAX_MARGIN_S)


def training_time_limit(walltime_s: float, elapsed_s: float, margin_s: float | None = None) -> float:
    """Seconds the trainer may run: the walltime left after ``elapsed_s``, minus the margin.

    Never below :data:`MIN_LIMIT_S`: a job that spent its walltime staging still trains one step
    and checkpoints, so a resubmitted chain cannot loop without progress.
    """
    margin = default_margin(walltime_s) if margin_s is None else margin_s
    return max(walltime_s - elapsed_s - margin, MIN_LIMIT_S)


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
