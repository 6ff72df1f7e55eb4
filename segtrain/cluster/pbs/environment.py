"""The PBS job a process runs in (a :class:`~segtrain.cluster.scheduler.JobEnvironment`), and ``qstat -f``.

Stock OpenPBS sets ``PBS_JOBID``, ``PBS_JOBNAME``, ``PBS_O_WORKDIR``, ``PBS_NODEFILE``,
``NCPUS``, ``TMPDIR`` and, in arrays, ``PBS_ARRAY_INDEX``; MetaCentrum adds ``SCRATCHDIR``.
No variable holds the walltime: it is ``Resource_List.walltime`` in ``qstat -f``, and when
``qstat`` cannot answer (no Kerberos ticket, server busy) the job script's own directive.
The shell runs ``qstat`` (it is not available inside a container); this module parses its text.
"""
from __future__ import annotations

import os
import re
import time
from pathlib import Path
from typing import Mapping, Optional, Sequence

from segtrain.cluster.pbs.directives import script_request
from segtrain.cluster.scheduler import JobEnvironment
from segtrain.cluster.walltime import parse_hms
from segtrain.errors import UserError

_JOB_HEADER = re.compile(r"^Job Id:\s*(\S+)\s*$")
_ATTRIBUTE = re.compile(r"^\s+([A-Za-z_][\w.]*)\s=\s?(.*)$")


def job_environment(environ: Optional[Mapping[str, str]] = None) -> JobEnvironment:
    """The PBS job of ``environ`` (every field None outside one)."""
    env = os.environ if environ is None else environ

    def path(name: str) -> Optional[Path]:
        return Path(env[name]) if env.get(name) else None

    def integer(name: str) -> Optional[int]:
        value = env.get(name, "")
        return int(value) if value.strip().lstrip("-").isdigit() else None

    return JobEnvironment(
        job_id=env.get("PBS_JOBID") or None, job_name=env.get("PBS_JOBNAME") or None,
        array_index=integer("PBS_ARRAY_INDEX"), workdir=path("PBS_O_WORKDIR"), nodefile=path("PBS_NODEFILE"),
    )


def parse_qstat_full(text: str) -> dict[str, dict[str, str]]:
    """``qstat -f`` output as {job id: {attribute: value}}; wrapped values (tab-indented) rejoined."""
    jobs: dict[str, dict[str, str]] = {}
    current: Optional[dict[str, str]] = None
    last: Optional[str] = None
    for line in text.splitlines():
        header = _JOB_HEADER.match(line)
        if header:
            current, last = jobs.setdefault(header.group(1), {}), None
            continue
        if current is None:
            continue
        if line.startswith("\t") and last is not None:
            current[last] += line.strip()
            continue
        attribute = _ATTRIBUTE.match(line)
        if attribute:
            last = attribute.group(1)
            current[last] = attribute.group(2).strip()
    return jobs


def job_attributes(qstat_text: str, job_id: Optional[str]) -> dict[str, str]:
    """The attributes of ``job_id`` in ``qstat -f`` output (or of its only job)."""
    jobs = parse_qstat_full(qstat_text)
    if job_id in jobs:
        return jobs[job_id]
    return next(iter(jobs.values())) if len(jobs) == 1 else {}


def job_walltime(qstat_text: Optional[str], job_id: Optional[str],
                 scripts: Sequence[Path]) -> tuple[Optional[float], str]:
    """The walltime in seconds and where it came from: ``qstat -f``, else the first readable script."""
    if qstat_text:
        value = job_attributes(qstat_text, job_id).get("Resource_List.walltime")
        if value:
            return parse_hms(value, "qstat -f: Resource_List.walltime"), "qstat -f"
    for script in scripts:
        if script.is_file():
            value = script_request(script).resources.get("walltime")
            if value:
                return parse_hms(value, f"{script}: walltime directive"), f"the directive in {script}"
    return None, "nowhere (no qstat answer, no walltime directive)"


def job_queue_wait(qstat_text: str, job_id: Optional[str]) -> Optional[float]:
    """``stime - qtime`` of ``qstat -f`` (queued to started, holds included), in seconds; None without them."""
    attrs = job_attributes(qstat_text, job_id)
    try:
        queued, started = (time.mktime(time.strptime(attrs[key], "%a %b %d %H:%M:%S %Y")) for key in ("qtime", "stime"))
    except (KeyError, ValueError):
        return None
    return max(started - queued, 0.0)


def require_job(env: JobEnvironment) -> JobEnvironment:
    """``env``, or a UserError saying how to run the job script when it is not a PBS job."""
    if not env.job_id or env.workdir is None:
        raise UserError("not inside a PBS job (PBS_JOBID or PBS_O_WORKDIR unset): submit with qsub or "
                        "run it here with scripts/submit CONFIG --local")
    return env
