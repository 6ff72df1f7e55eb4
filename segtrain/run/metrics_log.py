"""``metrics.jsonl``: every logged value, one JSON object a line; the run's source of truth.

W&B mirrors it, the curves are drawn from it and ``fetch_results`` tables read it. On resume
the lines written after the checkpoint (by a segment that was then killed) are dropped, so the
file reads as one uninterrupted run: a checkpoint records how many records it covers.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Iterator

from segtrain.fsutil import atomic_write_text, write_point


def read_metrics(path: Path) -> Iterator[dict[str, Any]]:
    """The records of a metrics file; a torn last line (killed mid-write) is skipped."""
    if not path.exists():
        return
    with open(path) as f:
        for line in f:
            try:
                yield json.loads(line)
            except json.JSONDecodeError:
                continue


class MetricsLog:
    """Append-only writer of ``metrics.jsonl`` that also keeps the history in memory."""

    def __init__(self, path: Path, resume_step: int | None, records: int | None = None):
        """Keep the first ``records`` records (the count a checkpoint saved), or those up to
        ``resume_step`` (checkpoints without a count); a new run (both None) starts empty."""
        self.path = path
        if records is not None:
            self.history = list(read_metrics(path))[:records]
        else:
            self.history = [r for r in read_metrics(path) if resume_step is not None and r.get("step", 0) <= resume_step]
        atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in self.history))
        self._file = open(path, "a")

    def write(self, record: dict[str, Any]) -> None:
        self.history.append(record)
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()
        write_point(self.path)

    def sync(self) -> None:
        """Force the lines to disk (called at checkpoints, so the two agree after a crash)."""
        self._file.flush()
        os.fsync(self._file.fileno())

    def close(self) -> None:
        self._file.close()
