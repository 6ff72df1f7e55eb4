"""The full decode of a data set's large files, in the job while it is staged.

The frontend check decodes large scenes and masks only in part (:mod:`segtrain.data.integrity`);
their full decode happens where their bytes are read anyway and cores are idle: on the compute
node, each pair as soon as both of its files are staged, in threads beside the copy, while the
page cache still holds them, before the GPU starts. A corrupt segment is reported (the training
data loader skips the windows that touch it); a mask that is not binary stops the job as a user
error, before the training starts.
"""
from __future__ import annotations

import os
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Optional

from segtrain.data.integrity import verify_pair
from segtrain.data.layout import SceneFiles
from segtrain.data.reader import CorruptSegment


class StagedDecode:
    """Decode each scene and mask pair (``.../scenes/NAME``, ``.../masks/NAME``) once both files were staged (:meth:`staged`).

    ``skip``: names of pairs already decoded whole (by the frontend check). ``workers``: threads
    (default: the cores this process may use). Use as a context manager; :meth:`corrupt` waits
    for every pair and returns the corrupt segments found, raising the first user error.
    """

    def __init__(self, skip: set[str] = frozenset(), workers: Optional[int] = None):
        self.skip = set(skip)
        self._seen: dict[str, set[str]] = {}
        self._futures: list[Future] = []
        self._pool = ThreadPoolExecutor(max_workers=workers or len(os.sched_getaffinity(0)))

    def __enter__(self) -> "StagedDecode":
        return self

    def __exit__(self, *exc: object) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)

    def staged(self, path: Path) -> None:
        """A file was staged at ``path``; decode its pair when the other file is there too."""
        path = Path(path)
        folder, name, root = path.parent.name, path.name, path.parent.parent
        if folder not in ("scenes", "masks") or name in self.skip:
            return
        seen = self._seen.setdefault(f"{root}/{name}", set())
        seen.add(folder)
        if seen == {"scenes", "masks"}:
            files = SceneFiles(name, root / "scenes" / name, root / "masks" / name)
            self._futures.append(self._pool.submit(verify_pair, files, 1))

    @property
    def pairs(self) -> int:
        """Pairs submitted for decoding so far."""
        return len(self._futures)

    def corrupt(self) -> list[CorruptSegment]:
        """Every corrupt segment found, once all pairs are decoded (raises a pair's UserError)."""
        found: list[CorruptSegment] = []
        for future in self._futures:
            found += future.result()
        return found
