"""The job scripts' variables, and their values encoded so that they survive a scheduler's parsing.

A job's variables reach it through the submit command: ``qsub -v`` (PBS), ``sbatch --export``
(Slurm). Both split at commas, and qsub and gives quotes and backslashes meanings that differ between
versions, so a value such as ``data.bands=[0, 1]`` or a quote in a W&B tag would arrive cut
or changed. Values made only of other printable characters go as they are (what a user types
by hand: ``qsub -v CONFIG=configs/my.yaml``); any other value is sent percent-encoded behind
the prefix ``pct:`` and decoded by the job. Nothing here ever passes through a shell: the
command is a list of words given to ``subprocess``.
"""
from __future__ import annotations

import shlex
import string
from pathlib import Path
from typing import Optional, Sequence
from urllib.parse import quote, unquote

from segtrain.cluster.site import job_name
from segtrain.errors import UserError

ENCODED_PREFIX = "pct:"
_SAFE = "".join(sorted(set(string.printable) - set(string.whitespace) - set(",'\"\\%") | {" "}))

# The job script's variables: what users set with qsub -v, and what the job passes on.
CONFIG, OVERRIDES, RUN, DATA, RUNS = "CONFIG", "OVERRIDES", "RUN", "DATA", "RUNS"
MAX_RESUBMITS, RESUBMITS, MARGIN = "MAX_RESUBMITS", "RESUBMITS", "WALLTIME_MARGIN"
MANIFEST = "MANIFEST"  # a grid's manifest: a job array's subjob takes its point's config and overrides there
STUDY = "STUDY"  # a hyperparameter search's study folder: the job runs a search worker on it
WORKER = "WORKER"  # that worker's name (default: the job array's index), so its next job finds its paused trial
ENV_VARIABLE = "SEGTRAIN_ENV"
NPROC = "NPROC"  # trainer processes per node (default: one per GPU)
WALLTIME_POLL = "WALLTIME_POLL"  # seconds between asking the scheduler for the walltime again (a qextend)
SCRATCH_BASE = "SCRATCH_BASE"  # Slurm: the folder in which the job makes its scratch folder (a site's scratch)
# The umask the training job sets itself (and passes on): on PBS the script's `#PBS -W umask=022` wins
# over `qsub -W umask=077`, so a private run asks the job itself (segtrain/cluster/job/runner.py).
UMASK = "UMASK"
JOB_VARIABLES = (CONFIG, OVERRIDES, RUN, DATA, RUNS, MAX_RESUBMITS, RESUBMITS, MARGIN, MANIFEST, ENV_VARIABLE,
                 SCRATCH_BASE, UMASK, STUDY, WORKER)


def encode_value(value: str) -> str:
    """``value`` unchanged when qsub passes it intact, else ``pct:`` + its percent-encoding."""
    if all(ch in _SAFE for ch in value) and not value.startswith(ENCODED_PREFIX):
        return value
    return ENCODED_PREFIX + quote(value, safe=_SAFE.replace(" ", ""))


def decode_value(value: str) -> str:
    """The inverse of :func:`encode_value`."""
    return unquote(value[len(ENCODED_PREFIX):]) if value.startswith(ENCODED_PREFIX) else value


def join_overrides(overrides: Sequence[str]) -> str:
    """Overrides as one ``OVERRIDES`` value: shell-quoted words that the job splits back exactly."""
    return shlex.join(overrides)


def split_overrides(text: str) -> list[str]:
    """The words of an ``OVERRIDES`` value (shell quoting rules, never evaluated)."""
    try:
        return shlex.split(text)
    except ValueError as exc:
        raise UserError(f"OVERRIDES: {exc} in {text!r} (quote values with spaces: key='a b')") from None


def display(argv: Sequence[str]) -> str:
    """A command for people to read or paste (quoted for a POSIX shell)."""
    return shlex.join(argv)


def job_variables(config: Optional[str], overrides: Sequence[str], *, data: Optional[str] = None,
                  runs: Optional[str] = None, run: Optional[str] = None, max_resubmits: Optional[int] = None,
                  margin: Optional[str] = None, env: Optional[str] = None, manifest: Optional[str] = None,
                  scratch_base: Optional[str] = None, nproc: Optional[int] = None,
                  umask: Optional[str] = None, study: Optional[str] = None) -> dict[str, str]:
    """The job variables of one training job (see :func:`segtrain.cluster.pbs.qsub.job_argv`); empty ones are not sent."""
    if env is not None and encode_value(env) != env:
        raise UserError(f"--env {env!r}: the environment path may not contain commas, quotes, backslashes or %")
    return {CONFIG: config or "", OVERRIDES: join_overrides(overrides), DATA: data or "", RUNS: runs or "",
            RUN: run or "", MAX_RESUBMITS: "" if max_resubmits is None else str(max_resubmits),
            MARGIN: margin or "", MANIFEST: manifest or "", ENV_VARIABLE: env or "", SCRATCH_BASE: scratch_base or "",
            NPROC: "" if nproc is None else str(nproc), UMASK: umask or "",
            STUDY: study or ""}


def default_job_name(config: Optional[str], run: Optional[str]) -> str:
    """The config's (or the run's) file name, made a safe job name."""
    return job_name(Path(config or run or "").stem)


def resolve_path(workdir: Path, text: str | Path) -> Path:
    """A path as a job variable or a command line names it: relative to the submit folder (the job's
    ``$PBS_O_WORKDIR``) unless absolute; ``~`` expanded."""
    return (Path(workdir) / Path(text).expanduser()).absolute()
