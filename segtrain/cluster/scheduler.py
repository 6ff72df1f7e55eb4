"""The workload manager a job goes to: PBS (:mod:`.pbs`) or Slurm (:mod:`.slurm`), behind one interface.

Everything that differs between the two is a fact or a command of one module: the job script,
the submit words and how the job id comes back, the variables a job finds (id, array index,
submit folder), where its granted walltime and resources can be read, the dependency syntax,
what a job array's subjobs are called, and how to ask where jobs stand. The job's Python steps
(:mod:`segtrain.cluster.job.steps`) and the frontend ask this interface and stay neutral; the
job scripts (``jobs/train.pbs``, ``jobs/train.slurm``) are thin preambles to ``jobs/train.sh``.

The scheduler is the named one (``--scheduler``, else ``$SEGTRAIN_SCHEDULER``), else the one
whose submit command is installed (Slurm where ``sbatch`` is and ``qsub`` is not), else PBS;
inside a job, the one that runs it.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Mapping, Optional, Protocol, Sequence

from segtrain.errors import UserError

SCHEDULER_VARIABLE = "SEGTRAIN_SCHEDULER"
SCHEDULERS = ("pbs", "slurm")


class Scheduler(Protocol):
    """What the rest of segtrain asks of a workload manager."""
    name: str
    script: str  # the training job script, relative to the repository
    predict_script: str  # the prediction job script

    def job_environment(self, environ: Mapping[str, str]):
        """The running job (:class:`segtrain.cluster.job.environment.JobEnvironment`)."""

    def submit_argv(self, script: str | Path, variables: Mapping[str, str], *, name: Optional[str] = None,
                    resources: Optional[Mapping[str, str]] = None, depend: Optional[str] = None,
                    queue: Optional[str] = None, array: Optional[str] = None) -> list[str]:
        """The words of one submission; ``variables`` reach the job (values encoded where needed)."""

    def job_id(self, submit_output: str) -> str:
        """The job id in what the submit command printed."""

    def subjob_id(self, array_id: str, index: int) -> str:
        """The id of a job array's subjob ``index``."""

    def after(self, job_id: str) -> Optional[str]:
        """The dependency that holds the next job of a chain until ``job_id`` ends (None: none possible)."""

    def manual(self, run_dir: str) -> str:
        """The command a person types to continue ``run_dir`` in a new job."""

    def walltime(self, info_text: Optional[str], job_id: str, scripts: Sequence[Path]) -> tuple[Optional[float], str]:
        """The job's walltime in seconds from the job query's text (else its script), and where it came from."""

    def granted(self, info_text: Optional[str], job_id: str) -> dict[str, str]:
        """The resources the job got, as submit options for its resubmission (``resources`` above)."""

    def queue_wait(self, info_text: Optional[str], job_id: str) -> Optional[float]:
        """Seconds from the job's submission to its start, from the job query's text (None: not there)."""

    def states(self, job_ids: Sequence[str]):
        """Where jobs stand (:class:`segtrain.cluster.frontend.status.JobState` by id); empty when no one answers."""

    def node_argv(self, host: str, index: int, program: Sequence[str]) -> list[str]:
        """From inside a job on several nodes: run ``program`` as a task of the job on its node ``host``
        (the ``index``-th line of its node file)."""

    def node_exit_status(self, output: str) -> Optional[int]:
        """The exit status of a task :meth:`node_argv` started, from its output (None: none reported)."""


def scheduler_named(name: str) -> Scheduler:
    from segtrain.cluster.pbs import PBS
    from segtrain.cluster.slurm import SLURM

    known = {PBS.name: PBS, SLURM.name: SLURM}
    if name not in known:
        raise UserError(f"scheduler {name!r} is not known; choose one of {', '.join(known)}")
    return known[name]


def get_scheduler(name: Optional[str] = None, environ: Optional[Mapping[str, str]] = None) -> Scheduler:
    """The named scheduler, else ``$SEGTRAIN_SCHEDULER``, else the installed one (Slurm only without qsub)."""
    environ = os.environ if environ is None else environ
    name = name or environ.get(SCHEDULER_VARIABLE)
    if not name:
        name = "slurm" if shutil.which("sbatch") and not shutil.which("qsub") else "pbs"
    return scheduler_named(name)


def current_job_scheduler(environ: Mapping[str, str]) -> Scheduler:
    """The scheduler running this job: Slurm where it set ``SLURM_JOB_ID``, else PBS."""
    return scheduler_named("slurm" if environ.get("SLURM_JOB_ID") else "pbs")


def current_job_id(environ: Optional[Mapping[str, str]] = None) -> Optional[str]:
    """This process's job id (PBS's ``12.server``, Slurm's ``12`` or ``12_3``); None outside a job."""
    environ = os.environ if environ is None else environ
    return current_job_scheduler(environ).job_environment(environ).job_id
