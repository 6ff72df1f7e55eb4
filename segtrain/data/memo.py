"""What segtrain learnt about a data set's files, remembered per data set version.

Checking every file (``segtrain check``) and the statistics of the train split cost minutes
for large data sets, and every command, every job of a chain and every point of a grid would
pay them again. They are remembered in one small JSON file per data root in the user's cache
folder (``$XDG_CACHE_HOME/segtrain/datasets``, default ``~/.cache``), never inside the data
set: it may be read-only or shared, and a dry run must leave it untouched.

Whatever is remembered names the files it came from by size and modification time (a
*stamp*); a changed file is a different version and is looked at again. A file modified in
the last RACY_S seconds gets no stamp: a rewrite of the same size within the file system's
time stamp granularity would otherwise go unnoticed (git's "racily clean" problem). A job's
staged copy of a data set keeps sizes and modification times, so what was learnt on the
frontend carries over to it (:func:`carry`).
"""
from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path
from typing import Optional

from segtrain.fsutil import atomic_write_text

RACY_S = 2.0
Stamp = list[int]  # [size, mtime_ns]


def cache_home() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "segtrain" / "datasets"


def memo_path(root: str | Path) -> Path:
    """The memo file of the data set at ``root`` (by its absolute path)."""
    key = str(Path(root).resolve())
    return cache_home() / f"{hashlib.sha256(key.encode()).hexdigest()[:24]}.json"


def stamp(path: Path, now: Optional[float] = None) -> Optional[Stamp]:
    """``[size, mtime_ns]`` of a file; None when it is missing or too recently modified to trust."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    if st.st_mtime_ns > ((time.time() if now is None else now) - RACY_S) * 1e9:
        return None
    return [st.st_size, st.st_mtime_ns]


def load_section(root: str | Path, name: str) -> dict:
    """One section of the data set's memo; empty when there is none or it is unreadable."""
    return _read(memo_path(root)).get(name) or {}


def save_section(root: str | Path, name: str, section: dict) -> bool:
    """Replace one section of the data set's memo (atomically); False when the cache folder is not writable.

    Other sections are re-read just before writing, so processes remembering different
    things do not undo each other; a lost race only means something is computed again.
    """
    path = memo_path(root)
    data = _read(path)
    data.update(root=str(Path(root).resolve()), **{name: section})
    try:  # compact: the C encoder, ~20x faster than indented JSON, for a file that grows with the data set
        atomic_write_text(path, json.dumps(data, separators=(",", ":")))
    except OSError:
        return False
    return True


def carry(src_root: str | Path, dst_root: str | Path) -> bool:
    """Give a copy of a data set (same relative paths, sizes and modification times) what was learnt about the original."""
    data = _read(memo_path(src_root))
    ok = True
    for name, section in data.items():
        if name != "root":
            ok = save_section(dst_root, name, section) and ok
    return ok


def _read(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}
