"""Atomic file writes: a reader (or a job killed mid-write) never sees a half-written file.

Every result segtrain keeps (checkpoints, run.json, stats, exports) goes through here: write a
temporary file in the destination folder, fsync it, rename it over the target, fsync the folder.
"""
from __future__ import annotations

import errno
import fnmatch
import json
import os
import shutil
import signal
import tempfile
from collections import Counter
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, Iterator


UMASK = os.umask(0)
os.umask(UMASK)
TEMP_SUFFIXES = (".tmp", ".partial")  # what a write that was killed can leave behind, as ".<name>...<suffix>"
# Fault injection for the tests that prove kills and full disks lose nothing: "ACTION:PATTERN:N"
# makes the N-th write of a file matching PATTERN (a glob on the full path) end with ACTION,
# ``kill`` (SIGKILL this process after the data is written, before it is renamed into place) or
# ``enospc`` (the write fails as on a full disk).
FAULT_ENV = "SEGTRAIN_FAULT"
_fault_hits: Counter = Counter()


def write_point(path: Path) -> None:
    """A place where a write becomes visible; see :data:`FAULT_ENV`. Costs one lookup otherwise."""
    spec = os.environ.get(FAULT_ENV)
    if not spec:
        return
    action, rest = spec.split(":", 1)
    pattern, nth = rest.rsplit(":", 1)
    if not fnmatch.fnmatch(str(path), pattern):
        return
    _fault_hits[spec] += 1
    if _fault_hits[spec] != int(nth):
        return
    if action == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))


@contextmanager
def atomic_open(path: str | Path, mode: str = "wb") -> Iterator[IO]:
    """Open a temporary sibling of ``path`` for writing; on success it replaces ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = make_temp(path)
    try:
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        write_point(path)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


@contextmanager
def atomic_path(path: Path) -> Iterator[str]:
    """The name of a temporary sibling of ``path``, for writers that take a name (memory maps);
    fsynced and renamed to ``path`` when the block ends, removed when it fails."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = make_temp(path)
    os.close(fd)
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def make_temp(path: Path) -> tuple[int, str]:
    """A new temporary sibling of ``path`` (descriptor, name) with the permissions of a normal new file.

    mkstemp makes 0600; a result, or a staging cache a group shares, should be as readable
    as any file the user writes (0666 less the umask).
    """
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.chmod(tmp, 0o666 & ~UMASK)
    return fd, tmp


def atomic_write_text(path: str | Path, text: str) -> None:
    with atomic_open(path, "w") as f:
        f.write(text)


def atomic_write_json(path: str | Path, data: Any) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=False) + "\n")


def atomic_copy(src: str | Path, dst: str | Path, keep_mtime: bool = False) -> None:
    """Copy ``src`` to ``dst`` so that ``dst`` is always either the old or the complete new file.

    ``keep_mtime``: ``dst`` gets the time ``src`` had before the copy, so that a later size-and-time
    check (rsync's, the job's copy-back) sees it as the same file, and one changed meanwhile as not.
    """
    before = os.stat(src)
    with open(src, "rb") as fin, atomic_open(dst, "wb") as fout:
        shutil.copyfileobj(fin, fout, length=16 << 20)
    if keep_mtime:
        os.utime(dst, ns=(before.st_atime_ns, before.st_mtime_ns))


def remove_temporaries(folder: Path, skip: tuple[str, ...] = ()) -> list[Path]:
    """Delete what writes killed mid-way left under ``folder`` (never a finished file); return them.

    Only names this module makes are touched: hidden (``.name...``) and ending in a temporary
    suffix. Sub-folders named in ``skip`` (another program's, e.g. W&B's) are left alone.
    """
    removed = []
    if not folder.is_dir():
        return removed
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = [d for d in dirnames if d not in skip]
        for name in filenames:
            if name.startswith(".") and name.endswith(TEMP_SUFFIXES):
                path = Path(dirpath) / name
                path.unlink(missing_ok=True)
                removed.append(path)
    return removed


def fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some file systems (and platforms) do not support fsync on directories
    finally:
        os.close(fd)
