"""The submissions log: which job runs which run (or which subjob of a prediction array), shared by all.

``<runs>/submissions.jsonl`` (a predictions folder keeps its own), one JSON object a line, appended
after each submission by ``scripts/submit`` and by a job that resubmits itself or makes a new run:
job ids mapped to run directories, relative to the folder so that it still reads after
``fetch_results`` copied the folder to a laptop.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Sequence

from segtrain.run.metrics_log import read_metrics

LOG_NAME = "submissions.jsonl"


def log_path(runs_root: Path) -> Path:
    return Path(runs_root) / LOG_NAME


def append_log(runs_root: Path, entries: Sequence[dict]) -> None:
    """Append entries in one write (O_APPEND: concurrent submitters never interleave within a line)."""
    path = log_path(runs_root)
    data = "".join(json.dumps(entry) + "\n" for entry in entries).encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


def read_log(runs_root: Path) -> list[dict]:
    """The log's entries, oldest first; a torn last line (a submitter killed mid-write) is skipped."""
    return list(read_metrics(log_path(runs_root)))
