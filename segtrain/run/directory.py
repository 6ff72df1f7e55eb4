"""The run directory: the unit users copy, compare and resume.

    config.yaml  run.json  metrics.jsonl  curves.png  checkpoints/  samples/  logs/  eval/  export/

``run.json`` records who ran what: run and W&B ids, git commit, status and one entry per job
segment, so a chain of resubmitted jobs can be followed back from its results; its schema and
every write of it are :mod:`segtrain.run.run_json`'s.
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import os
from pathlib import Path
from typing import Iterator, Optional, Sequence

from segtrain.errors import UserError
from segtrain.run.run_json import RunJson, now_iso  # noqa: F401  (now_iso: the time stamp of run.json and the logs)

CONFIG, INFO, METRICS, CHECKPOINTS = "config.yaml", "run.json", "metrics.jsonl", "checkpoints"
EVAL = "eval"  # `segtrain eval`'s outputs: its metrics.json holds the verdict the job report shows
RUN_NAMES = {CONFIG, INFO, METRICS, CHECKPOINTS, "samples", "logs", "curves.png", "wandb", EVAL, "export"}


def make_run_name(config_path: str | Path, overrides: Sequence[str], when: Optional[_dt.datetime] = None) -> str:
    """``<config stem>-<6-hex hash of the overrides>-<YYYYmmdd-HHMMSS>``: readable and sortable."""
    digest = hashlib.sha256("\n".join(overrides).encode()).hexdigest()[:6]
    stamp = (when or _dt.datetime.now()).strftime("%Y%m%d-%H%M%S")
    return f"{Path(config_path).stem}-{digest}-{stamp}"


def run_name(config_path: str | Path, overrides: Sequence[str], configured: Optional[str] = None) -> str:
    """The config's ``run.name``, else :func:`make_run_name`; a UserError unless it is a plain folder name."""
    name = configured or make_run_name(config_path, overrides)
    if Path(name).name != name or name in (".", ".."):
        raise UserError(f"run.name: {name!r} must be a plain folder name (no '/')")
    return name


def _candidates(root: Path, name: str) -> Iterator[Path]:
    yield root / name
    n = 2
    while True:
        yield root / f"{name}-{n}"
        n += 1


def unique_path(root: Path, name: str) -> Path:
    """The first free name of ``name``, ``name-2``, ... for a preview (``--dry-run``): nothing is created,
    so it may be taken by the time it is used; :func:`create_run_dir` is what reserves one."""
    return next(path for path in _candidates(root, name) if not path.exists())


def create_run_dir(root: Path, name: str) -> Path:
    """Create and return a new run directory ``root/name`` (``name-2``, ``name-3``, ... when taken).

    The one place a run directory is named and made, for the trainer, the PBS job and
    ``scripts/submit`` alike. ``mkdir`` fails when the folder exists, so of two jobs of the same
    config started in the same second each gets its own directory; a check for existence alone
    let both take one name (nothing was created until the first checkpoint, minutes later).
    """
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"{root}: cannot create the runs folder: {exc.strerror or exc}") from None
    candidates = _candidates(root, name)
    while True:
        path = next(candidates)
        try:
            path.mkdir()
            return path
        except FileExistsError:
            continue
        except OSError as exc:
            raise UserError(f"{path}: cannot create the run directory: {exc.strerror or exc}") from None


def refuse_unwritable(path: Path, flag: str) -> None:
    """Refuse a folder that cannot be written (a read-only mount, an immutable folder, no permission)
    before anything is written, rather than at the first checkpoint after a run folder was made and a
    step trained. Asked of the folder, or of its nearest existing parent when it is still to be made;
    access(2) answers for root too (a read-only mount and an immutable folder refuse root's writes)."""
    existing = path.absolute()
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not os.access(existing, os.W_OK | os.X_OK):
        why = "on a read-only file system" if os.statvfs(existing).f_flag & os.ST_RDONLY else "not writable"
        raise UserError(f"{flag} {path}: {existing} is {why}")


class RunDir:
    """Paths of one run directory, and its ``run.json`` (:attr:`info`)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.config = self.path / CONFIG
        self.info = RunJson(self.path / INFO)
        self.metrics = self.path / METRICS
        self.checkpoints = self.path / CHECKPOINTS
        self.samples = self.path / "samples"
        self.logs = self.path / "logs"

    def is_run_or_empty(self) -> bool:
        """Whether training may write here: a missing or empty folder, or a run (it has run.json,
        or only run-directory names, as one killed right after it was created)."""
        if not self.path.is_dir():
            return True
        names = {p.name for p in self.path.iterdir()}
        return not names or INFO in names or (CONFIG in names and names <= RUN_NAMES)

    def create(self) -> None:
        for folder in (self.path, self.checkpoints, self.samples, self.logs):
            folder.mkdir(parents=True, exist_ok=True)


def locate_data(run_dir: str | Path, configured: str, given: Optional[str] = None) -> str:
    """Where a finished run's data set is now.

    A PBS job trains on a copy staged to scratch, which is gone after the job; the job records
    the data set's storage location in ``run.json`` as ``data_source``. An explicit ``given``
    root wins, then the configured one if it still exists, then ``data_source``.
    """
    if given is not None:
        return given
    if Path(configured).is_dir():
        return configured
    source = RunDir(run_dir).info.read().get("data_source")
    return source if source and Path(source).is_dir() else configured
