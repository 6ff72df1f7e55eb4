"""Optuna's journal file, kept readable when a writer was killed in the middle of a line.

Optuna's file backend appends whole JSON lines under a lock (a symlink made next to the file:
exclusive on NFS, forcibly released 30 s after its holder died) and reads them back on every
access, so every worker of a study sees the others' trials with no database server. A worker
killed (or a node lost) in the middle of an append leaves a partial last line; Optuna reads
around it, but the next append would glue a whole line onto it and every later reader would
fail on that line. Here each append first moves such a tail aside, under the same lock, into
``journal.log.partial`` (kept for inspection: it never held a complete record).
"""
from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from optuna.storages.journal import JournalFileBackend, JournalFileSymlinkLock, JournalStorage

JOURNAL = "journal.log"


class RepairingJournalBackend(JournalFileBackend):
    """:class:`JournalFileBackend` whose appends first set aside a partial last line."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.lock = JournalFileSymlinkLock(str(self.path))
        super().__init__(str(self.path), lock_obj=self.lock)

    def append_logs(self, logs: list[dict[str, Any]]) -> None:
        with held(self.lock):
            cut_partial_line(self.path)
        super().append_logs(logs)


def cut_partial_line(path: Path) -> bool:
    """Move the bytes after the last newline of ``path`` to ``<path>.partial`` (the caller holds the lock)."""
    with open(path, "rb+") as f:
        size = f.seek(0, os.SEEK_END)
        if size == 0:
            return False
        f.seek(size - 1)
        if f.read(1) == b"\n":
            return False
        start = size
        while start > 0:
            block = min(4096, start)
            f.seek(start - block)
            newline = f.read(block).rfind(b"\n")
            if newline >= 0:
                start = start - block + newline + 1
                break
            start -= block
        f.seek(start)
        tail = f.read()
        with open(f"{path}.partial", "ab") as kept:
            kept.write(tail + b"\n")
            kept.flush()
            os.fsync(kept.fileno())
        f.truncate(start)
        f.flush()
        os.fsync(f.fileno())
    return True


@contextmanager
def held(lock: Any) -> Iterator[None]:
    """Hold an Optuna file lock for a ``with`` block."""
    lock.acquire()
    try:
        yield
    finally:
        lock.release()


def open_storage(study_dir: Path) -> JournalStorage:
    """The study's journal storage (the file is created when missing)."""
    return JournalStorage(RepairingJournalBackend(Path(study_dir) / JOURNAL))
