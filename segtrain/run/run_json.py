"""run.json, a run's record of who ran what: its schema and its one writer.

The trainer, a batch job's steps and its resubmission all record here, through :class:`RunJson`
(read, change, write atomically). The schema below is the whole file: a change that would write
a key it does not declare is refused (a ValueError, a defect of segtrain, never of the user), so
the documentation of run.json cannot drift from what is written. Undeclared keys already in a file
(written by another segtrain version, or by hand) are kept as they are.
"""
from __future__ import annotations

import datetime as _dt
import json
import socket
import subprocess
import uuid
from pathlib import Path
from typing import Any, Callable, Literal, Mapping, Optional, TypedDict, get_args, get_origin, get_type_hints

from segtrain.errors import UserError
from segtrain.fsutil import atomic_write_json

Status = Literal["starting", "running", "done", "stopped", "failed", "pruned"]


class Segment(TypedDict, total=False):
    """One trainer process's life (one job segment): written by the trainer, ``report`` by its job."""
    job_id: Optional[str]  # the batch job it ran in (None outside a job)
    host: str  # the host of rank 0
    started: str  # ISO time it started
    ended: Optional[str]  # ISO time it ended (None while running, or when killed)
    exit_code: Optional[int]  # the trainer's exit code (0 done, 3 stopped to resume, 1 failed, 2 bad input)
    start_step: Optional[int]  # the optimizer step it resumed from (0 for a new run)
    end_step: Optional[int]  # the step of its last checkpoint
    timing: dict[str, Any]  # where its time went (run.report.TrainerClock.to_dict, with "gpu")
    report: dict[str, Any]  # the job report of the job it ran in (run.report.job_report)


class JobStart(TypedDict):
    """A batch job that opened the run (its checks passed), before its trainer started."""
    id: str  # the job's id
    started: str  # ISO time


class Processes(TypedDict):
    """The trainer processes of the run's last job: a continuation by hand asks for as many."""
    world: int  # processes in all (nodes x per_node)
    nodes: int  # nodes of the job
    per_node: int  # processes on each node (one per GPU)
    resources: dict[str, Any]  # what the scheduler granted (select, ngpus, walltime, ...)


# "from" is a Python keyword: the functional form.
Resubmission = TypedDict("Resubmission", {
    "from": str,  # the job that submitted the next one
    "to": str,  # the job it submitted
    "at": str,  # ISO time
})
Resubmission.__doc__ = "A job of the chain that submitted the next one to continue the run."


class Trial(TypedDict):
    """The hyperparameter-search trial a run is (segtrain search): written by the search worker when it ends."""
    number: int  # the trial's number in its study
    value: Optional[float]  # the objective: the best validation value (None when pruned or failed)


class RunInfo(TypedDict, total=False):
    """The content of run.json."""
    name: str  # the run's name (its folder's name when first recorded)
    run_id: str  # 12 hex digits, made once, the same over all segments
    created: str  # ISO time of the first record
    wandb_id: Optional[str]  # the W&B run id (None while W&B is disabled)
    git_commit: Optional[str]  # the segtrain commit of the last segment (None outside a git checkout)
    status: Status  # starting (a job opened it, no trainer yet), running (or killed so), done, stopped (to resume), failed, pruned (a search's pruner stopped it, resumable)
    segments: list[Segment]  # one per trainer process run, oldest first
    job_id: str  # the batch job that opened the run last
    jobs: list[JobStart]  # every batch job that opened the run, oldest first
    processes: Processes  # how many trainer processes the last job ran (a checkpoint resumes on as many)
    data_source: str  # the data set's path on storage (a job trains on a copy on scratch)
    resubmissions: list[Resubmission]  # the chain of jobs that submitted each other
    trial: Trial  # a search's trial: its number (the last that trained this run) and objective value


def now_iso() -> str:
    return _dt.datetime.now(_dt.timezone.utc).astimezone().isoformat(timespec="seconds")


def git_commit() -> Optional[str]:
    """The commit of the segtrain checkout that runs, or None outside a git checkout."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).resolve().parent, capture_output=True,
                             text=True, timeout=5, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def problems(info: Mapping[str, Any]) -> list[str]:
    """What in ``info`` the schema does not declare: unknown keys at any depth, a status not in Status."""
    return _problems(info, RunInfo, "run.json")


def _problems(value: Any, schema: Any, where: str) -> list[str]:
    if isinstance(schema, type) and issubclass(schema, dict) and hasattr(schema, "__annotations__"):
        if not isinstance(value, dict):
            return [f"{where}: expected an object"]
        fields = get_type_hints(schema)
        found = [f"{where}: {key!r} is not declared" for key in value if key not in fields]
        for key, item in value.items():
            if key in fields:
                found += _problems(item, fields[key], f"{where}.{key}")
        return found
    origin, args = get_origin(schema), get_args(schema)
    if origin is list and isinstance(value, list):
        return [problem for i, item in enumerate(value) for problem in _problems(item, args[0], f"{where}[{i}]")]
    if origin is Literal and value not in args:
        return [f"{where}: {value!r} is not one of {', '.join(args)}"]
    return []


class RunJson:
    """One run's run.json: every write of it (read, change, validate, write atomically)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def exists(self) -> bool:
        return self.path.is_file()

    def read(self) -> RunInfo:
        """The record ({} before the first write); a UserError naming the file when it is unreadable."""
        if not self.path.exists():
            return {}
        try:
            return json.loads(self.path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise UserError(f"{self.path}: unreadable run.json: {exc}") from None

    def _change(self, change: Callable[[RunInfo], Optional[bool]]) -> RunInfo:
        """Apply ``change`` to the record and write it, unless ``change`` returns False (nothing to write)."""
        info = self.read()
        before = set(problems(info))
        if change(info) is False:
            return info
        added = [problem for problem in problems(info) if problem not in before]
        if added:
            raise ValueError(f"{self.path}: not written, outside the schema of segtrain.run.run_json: {'; '.join(added)}")
        atomic_write_json(self.path, info)
        return info

    def update(self, **fields: Any) -> RunInfo:
        """Set top-level keys, keeping the others."""
        return self._change(lambda info: info.update(fields))

    def start_segment(self, name: str, wandb_id: Optional[str], job_id: Optional[str], start_step: int) -> RunInfo:
        """A trainer process starts (status "running"): its segment, and the run's ids on the first one."""
        def change(info: RunInfo) -> None:
            info.setdefault("name", name)
            info.setdefault("run_id", uuid.uuid4().hex[:12])
            info.setdefault("created", now_iso())
            info.update(wandb_id=wandb_id, git_commit=git_commit(), status="running")
            info.setdefault("segments", []).append(Segment(
                job_id=job_id, host=socket.gethostname(), started=now_iso(), ended=None, exit_code=None,
                start_step=start_step, end_step=None))
        return self._change(change)

    def update_segment(self, **fields: Any) -> None:
        """Set keys of the last segment (nothing without one)."""
        self._change(lambda info: bool(info.get("segments")) and info["segments"][-1].update(fields))

    def end_segment(self, status: Status, exit_code: int, **fields: Any) -> None:
        """The trainer ends: the run's status, and the last segment's end, exit code and ``fields``."""
        def change(info: RunInfo) -> None:
            info["status"] = status
            if info.get("segments"):
                info["segments"][-1].update(ended=now_iso(), exit_code=exit_code, **fields)
        self._change(change)

    def job_started(self, job_id: str, processes: Processes) -> None:
        """A batch job opened the run (status "starting" until its trainer runs), with its processes."""
        def change(info: RunInfo) -> None:
            info.setdefault("name", self.path.parent.name)
            info.setdefault("created", now_iso())
            info.update(status="starting", job_id=job_id, processes=processes,
                        jobs=info.get("jobs", []) + [JobStart(id=job_id, started=now_iso())])
        self._change(change)

    def keep_data_source(self, data: str) -> None:
        """The data set's storage path, so ``RUN=...`` alone can continue a run (written only when it changed)."""
        self._change(lambda info: info.get("data_source") != data and info.update(data_source=data))

    def add_resubmission(self, from_job: str, to_job: str) -> None:
        """Job ``from_job`` submitted ``to_job`` to continue the run."""
        entry: Resubmission = {"from": from_job, "to": to_job, "at": now_iso()}
        self._change(lambda info: info.update(resubmissions=info.get("resubmissions", []) + [entry]))

    def keep_report(self, job_id: str, report: dict[str, Any]) -> None:
        """The job report, with the last segment job ``job_id`` trained (nothing when it trained none)."""
        def change(info: RunInfo) -> bool:
            segment = job_segment(info, job_id)
            if segment is None:
                return False
            segment["report"] = report
            return True
        self._change(change)


def trained_to(info: RunInfo) -> Optional[int]:
    """The step of the run's last checkpoint (its last segment's ``end_step``; None before one): what an
    evaluation records, so that a later reader can tell whether the run has trained on since."""
    segments = info.get("segments") or []
    return segments[-1].get("end_step") if segments else None


def job_segment(info: RunInfo, job_id: str) -> Optional[Segment]:
    """The last segment of ``info`` that job ``job_id`` trained (None: its trainer never started one)."""
    return next((s for s in reversed(info.get("segments", [])) if s.get("job_id") == job_id), None)
