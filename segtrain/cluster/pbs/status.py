"""Where PBS jobs stand: ``qstat -x -f``, in :class:`~segtrain.cluster.scheduler.JobState`s."""
from __future__ import annotations

import subprocess
from typing import Sequence

from segtrain.cluster.pbs.environment import parse_qstat_full
from segtrain.cluster.scheduler import UNKNOWN, JobState

QSTAT_TIMEOUT_S = 60


def qstat_states(job_ids: Sequence[str], qstat: Sequence[str] = ("qstat",)) -> dict[str, JobState]:
    """States of jobs (finished ones too) from ``qstat -x -f``; empty where qstat cannot answer.

    Stock OpenPBS keeps no history (``job_history_enable`` is off by default): a job that has ended is
    then "Unknown Job Id", shown here as state ``U``, so that a run its killed job left reading
    "running" still shows as failed.
    """
    if not job_ids:
        return {}
    try:
        out = subprocess.run([*qstat, "-x", "-f", *job_ids], capture_output=True, text=True,
                             timeout=QSTAT_TIMEOUT_S, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired):
        return {}
    states = {}
    for job_id, attrs in parse_qstat_full(out.stdout).items():
        status = attrs.get("Exit_status", "").strip()
        states[job_id] = JobState(attrs.get("job_state", "?"), int(status) if status.lstrip("-").isdigit() else None)
    for job_id in job_ids:
        if job_id not in states and f"Unknown Job Id {job_id}" in out.stderr:
            states[job_id] = JobState(UNKNOWN, None)
    return states
