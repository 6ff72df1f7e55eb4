"""Which scheduler: the named one, the one installed, the one running this job, or the local stand-in's.

The scheduler is the named one (``--scheduler``, else ``$SEGTRAIN_SCHEDULER``), else the one
whose submit command is installed (Slurm where ``sbatch`` is and ``qsub`` is not), else PBS;
inside a job, the one that runs it. ``--local`` runs jobs on this machine under PBS's stand-in
(:mod:`segtrain.cluster.pbs.local`): :data:`LOCAL` is that one fact.
"""
from __future__ import annotations

import os
import shutil
from typing import Mapping, Optional

from segtrain.cluster.pbs import PBS
from segtrain.cluster.pbs.local.server import local_states
from segtrain.cluster.scheduler import JobEnvironment, Scheduler
from segtrain.cluster.slurm import SLURM
from segtrain.errors import UserError

SCHEDULER_VARIABLE = "SEGTRAIN_SCHEDULER"
KNOWN: dict[str, Scheduler] = {PBS.name: PBS, SLURM.name: SLURM}
SCHEDULERS = tuple(KNOWN)
DEFAULT = PBS  # where no scheduler is named, installed or running
LOCAL = PBS  # --local: the scheduler whose stand-in runs jobs here


def scheduler_named(name: str) -> Scheduler:
    if name not in KNOWN:
        raise UserError(f"scheduler {name!r} is not known; choose one of {', '.join(KNOWN)}")
    return KNOWN[name]


def get_scheduler(name: Optional[str] = None, environ: Optional[Mapping[str, str]] = None) -> Scheduler:
    """The named scheduler, else ``$SEGTRAIN_SCHEDULER``, else the only one installed, else :data:`DEFAULT`."""
    environ = os.environ if environ is None else environ
    name = name or environ.get(SCHEDULER_VARIABLE)
    if name:
        return scheduler_named(name)
    installed = [s for s in KNOWN.values() if shutil.which(s.submit_command)]
    return installed[0] if len(installed) == 1 else DEFAULT


def current_job_scheduler(environ: Mapping[str, str]) -> Scheduler:
    """The scheduler running this job (else :data:`DEFAULT`)."""
    return next((s for s in (SLURM, PBS) if s.in_job(environ)), DEFAULT)


def current_job(environ: Optional[Mapping[str, str]] = None) -> JobEnvironment:
    """The job this process runs in (every field None outside one)."""
    environ = os.environ if environ is None else environ
    return current_job_scheduler(environ).job_environment(environ)


def current_job_id(environ: Optional[Mapping[str, str]] = None) -> Optional[str]:
    """This process's job id (PBS's ``12.server``, Slurm's ``12`` or ``12_3``); None outside a job."""
    return current_job(environ).job_id


def job_states(scheduler: Scheduler, local: bool):
    """Where jobs stand (a function of job ids): the local stand-in's with ``local``, else the scheduler's
    where its status command is installed; None where nobody can say."""
    if local:
        return local_states
    return scheduler.states if shutil.which(scheduler.status_command) else None
