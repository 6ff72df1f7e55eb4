"""The interface to a workload manager: what the rest of segtrain asks of PBS (:mod:`.pbs`) or Slurm (:mod:`.slurm`).

Everything that differs between the two is a fact or a command of one package: the job script,
the submit words and how the job id comes back, the variables a job finds (id, array index,
submit folder), where its granted walltime and resources can be read, the dependency syntax,
what a job array's subjobs are called, how to ask where jobs stand, how a job starts work on
its other nodes, how a rerun is told, how a submission is linted and shown. The frontend and the
job's Python steps ask this interface (:mod:`.schedulers` picks the implementation) and stay neutral.

Inside a job, the runner (:mod:`.job.runner`) asks it for the job's scratch and the variables its
processes get, the command that describes the job, another node's scratch, the environment of the
next job's submission, and the signal (if any) that warns of the time limit.

Shared facts live here too: :class:`JobEnvironment` (a running job's identity and places),
:class:`JobState` (where a job stands, in PBS's letters, which every implementation answers in).
"""
from __future__ import annotations

import shlex
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Optional, Protocol, Sequence

from segtrain.cluster.scratch import Scratch
from segtrain.errors import UserError

QUEUED_STATES, ENDED_STATES = set("QHWTS"), set("FXU")
UNKNOWN = "U"  # the job's scheduler no longer knows it (ended, and forgotten without job history)
SUBMIT_TIMEOUT_S = 120  # a submit command may hang on a busy server or wait for a password (no Kerberos ticket)


@dataclass(frozen=True)
class JobState:
    state: str  # PBS's job_state letter (Q queued, R running, F finished, ...; U unknown)
    exit_status: Optional[int]


@dataclass(frozen=True)
class Node:
    """One host of the job."""
    host: str
    index: int  # its first line in the job's node file (``pbsdsh -n INDEX`` reaches it)


def job_nodes(nodefile_text: str) -> list[Node]:
    """The job's nodes in node file order (one line per host, or per rank of a host), each host once."""
    nodes: dict[str, Node] = {}
    for index, host in enumerate(nodefile_text.split()):
        nodes.setdefault(host, Node(host, index))
    return list(nodes.values())


@dataclass(frozen=True)
class JobEnvironment:
    """Identity and places of the current job; every field is None outside a job."""
    job_id: Optional[str] = None
    job_name: Optional[str] = None
    array_index: Optional[int] = None
    workdir: Optional[Path] = None
    nodefile: Optional[Path] = None

    def nodes(self) -> list[Node]:
        """The job's nodes in nodefile order, each host once (none outside a job)."""
        if self.nodefile is None or not self.nodefile.is_file():
            return []
        return job_nodes(self.nodefile.read_text())


class Scheduler(Protocol):
    """What the rest of segtrain asks of a workload manager."""
    name: str
    title: str  # as people write it
    script: str  # the training job script, relative to the repository
    predict_script: str  # the prediction job script
    submit_command: str  # the program that submits (installed where this scheduler is)
    status_command: str  # the program that says where jobs stand
    array_variable: str  # the variable holding a job array's subjob index
    default_site: str  # the site profile (segtrain.cluster.site) used when none is named
    takes_account: bool  # whether a submission names a project account
    takes_nodes: bool  # whether a submission asks for nodes by number (else by chunks)
    time_limit_warning: Optional[int]  # the signal the job's shell gets before the time limit (None: none comes)

    def in_job(self, environ: Mapping[str, str]) -> bool:
        """Whether ``environ`` is a job this scheduler runs."""

    def job_environment(self, environ: Mapping[str, str]) -> JobEnvironment:
        """The running job."""

    def require_job(self, environ: Mapping[str, str]) -> JobEnvironment:
        """The running job, or a UserError saying how to run the job script when this is none."""

    def submit_argv(self, script: str | Path, variables: Mapping[str, str], *, name: Optional[str] = None,
                    resources: Optional[Mapping[str, str]] = None, depend: Optional[str] = None,
                    queue: Optional[str] = None, array: Optional[str] = None) -> list[str]:
        """The words of one submission; ``variables`` reach the job (values encoded where needed)."""

    def submit(self, argv: Sequence[str]) -> str:
        """Run the submit command ``argv`` (no stdin, a timeout); the new job's id."""

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

    def select(self, granted: Mapping[str, str], scripts: Sequence[Path]) -> Optional[str]:
        """The job's chunks as a PBS ``select`` statement (None: the scheduler has none)."""

    def queue_wait(self, info_text: Optional[str], job_id: str) -> Optional[float]:
        """Seconds from the job's submission to its start, from the job query's text (None: not there)."""

    def restarted(self, info_text: Optional[str], job_id: str) -> bool:
        """Whether this job may have run before under its id (a rerun, a requeue)."""

    def states(self, job_ids: Sequence[str]) -> dict[str, JobState]:
        """Where jobs stand, by id; empty when no one answers."""

    def node_argv(self, host: str, index: int, program: Sequence[str]) -> list[str]:
        """From inside a job on several nodes: run ``program`` as a task of the job on its node ``host``
        (the ``index``-th line of its node file)."""

    def node_exit_status(self, output: str) -> Optional[int]:
        """The exit status of a task :meth:`node_argv` started, from its output (None: none reported)."""

    def resource_options(self, site, walltime: Optional[str], changes: dict) -> dict[str, str]:
        """A submission's resource options on ``site``: ``changes`` (site resource fields) and ``walltime``."""

    def lint(self, argv: Sequence[str], options: Mapping[str, str], site, account: Optional[str],
             where: str, workdir: Path) -> list:
        """Lint findings on the submit command ``argv`` (resource ``options``) against the site's profile."""

    def dry_run_lines(self, argv: Sequence[str], workdir: Path) -> list[str]:
        """The submit command for a dry run: the command, and what the job gets (variables decoded)."""

    def enter_job(self, environ: Mapping[str, str]) -> tuple[Scratch, dict[str, str]]:
        """Inside a job: its scratch on its first node (a UserError when it has none), and the variables every
        process of the job gets besides ``environ``."""

    def describe_argv(self, environ: Mapping[str, str]) -> list[str]:
        """Inside a job: the command whose output :meth:`walltime`, :meth:`granted` and :meth:`queue_wait` read."""

    def node_scratch(self, environ: Mapping[str, str], first: Path, rank: int) -> Optional[Scratch]:
        """On the job's node ``rank`` (not the first): its scratch, given the first node's (None: none usable)."""

    def next_job_environ(self, environ: Mapping[str, str], original: Mapping[str, str]) -> dict[str, str]:
        """The environment of the submit command that continues a job from inside it (``environ``: the job's now;
        ``original``: as the job started)."""


def read_directives(script: str | Path, prefix: str) -> list[str]:
    """The option words of a script's directives (``#PBS``, ``#SBATCH``), up to its first executable line."""
    try:
        lines = Path(script).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"{script}: cannot read job script: {exc}") from None
    words: list[str] = []
    for number, line in enumerate(lines, 1):
        stripped = line.strip()
        if stripped.startswith(prefix) and (len(stripped) == len(prefix) or stripped[len(prefix)].isspace()):
            try:
                words += shlex.split(stripped[len(prefix):], comments=True)
            except ValueError as exc:
                raise UserError(f"{script}:{number}: bad directive: {exc}") from None
        elif stripped and not stripped.startswith("#"):
            break
    return words


def run_submit(argv: Sequence[str], where_to_submit: str, timeout_s: float = SUBMIT_TIMEOUT_S,
               env: Optional[Mapping[str, str]] = None) -> str:
    """Run a submit command (no stdin, a timeout; ``env``, else this process's environment); what it printed.
    ``where_to_submit``: the hint when it is missing."""
    program = argv[0]
    try:
        out = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout_s, stdin=subprocess.DEVNULL,
                             env=None if env is None else dict(env))
    except FileNotFoundError:
        raise UserError(f"{program}: command not found; submit on {where_to_submit}") from None
    except subprocess.TimeoutExpired:
        raise UserError(f"{program}: no answer within {timeout_s:.0f} s (server busy, or a missing Kerberos ticket: "
                        "run kinit and try again)") from None
    if out.returncode != 0:
        message = (out.stderr or out.stdout).strip().splitlines()
        raise UserError(f"{program} failed (exit {out.returncode}): {message[-1] if message else 'no message'}")
    return out.stdout.strip()
