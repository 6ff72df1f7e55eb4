"""Validity and mask of a cached scene, precomputed: one byte a pixel, stored in square blocks.

Every training window needs its validity (False where every band holds the no-data value or
any band is NaN) and its mask. Computed per tile from the window and read from the mask file,
they cost the training process about 80 us a 256 px tile, two thirds of copying the window
itself: the rows of a window of a 10980 px wide plane lie a page apart, so each of its 256 rows
costs a page walk and cache misses, and the validity test reads every band again.

The staging cache therefore keeps ``labels/<name>.<scene mtime>.<mask mtime>.npy`` beside its
``scenes/`` and ``masks/``: uint8 (block rows, block columns, BLOCK, BLOCK), bit 0 the mask
(> 0), bit 1 the validity over all bands with the file's own no-data value. A 256 px window is
at most four runs of contiguous rows; a copy and two byte operations give both planes. The
name carries the modification times of the staged scene and mask it was made from, so a file
made from other versions is never used (a restaged scene gets new labels). A data set uses
them only where they mean what it would compute: all bands selected, no ``data.nodata`` other
than the file's own; otherwise (and for a cache built before labels existed) it computes
validity per tile as before.
"""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Optional

import numpy as np

from segtrain.data.reader import SceneReader
from segtrain.fsutil import atomic_path

BLOCK = 256
MASK_BIT, VALID_BIT = 1, 2


def labels_path(root: Path, name: str, scene: Path, mask: Path) -> Path:
    """Where the labels of ``name`` made from these versions of ``scene`` and ``mask`` are (or go)."""
    return root / "labels" / f"{name}.{os.stat(scene).st_mtime_ns}.{os.stat(mask).st_mtime_ns}.npy"


def write_labels(scene: Path, mask: Path, out: Path) -> bool:
    """Write the labels of ``scene`` and ``mask`` at ``out`` (atomically); False when already there."""
    if out.is_file():
        return False
    with atomic_path(out) as tmp, SceneReader(scene, mask) as reader:
        rows, cols = math.ceil(reader.height / BLOCK), math.ceil(reader.width / BLOCK)
        blocks = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(rows, cols, BLOCK, BLOCK))
        strip = np.zeros((BLOCK, cols * BLOCK), np.uint8)
        for row in range(rows):
            h = min(BLOCK, reader.height - row * BLOCK)
            _, valid, window_mask = reader.read_raw(row * BLOCK, 0, h, reader.width)
            strip[:] = 0
            np.left_shift(valid, 1, out=strip[:h, :reader.width], dtype=np.uint8)
            strip[:h, :reader.width] |= window_mask
            blocks[row] = strip.reshape(BLOCK, cols, BLOCK).transpose(1, 0, 2)
        blocks.flush()
        del blocks
    return True


def remove_other_labels(root: Path, keep: set[Path]) -> None:
    """Remove the labels under ``root`` not in ``keep`` (those of older versions of the scenes)."""
    for path in (root / "labels").glob("*.npy"):
        if path not in keep:
            path.unlink(missing_ok=True)


class Labels:
    """Windows of a scene's precomputed validity and mask."""

    def __init__(self, path: Path):
        self._blocks = np.load(path, mmap_mode="r").view(np.ndarray)  # plain views: cheaper slicing

    @classmethod
    def find(cls, root: Path, name: str, scene: Path, mask: Path) -> Optional["Labels"]:
        """The labels of the current versions of ``scene`` and ``mask`` under ``root``, if made."""
        path = labels_path(root, name, scene, mask)
        return cls(path) if path.is_file() else None

    def read(self, y: int, x: int, valid: np.ndarray, mask: np.ndarray) -> None:
        """Fill ``valid`` (h,w) bool and ``mask`` (h,w) uint8 0/1 with the window at (y, x)."""
        h, w = mask.shape
        cols = _spans(x, w)
        for row, y0, y1, top, bottom in _spans(y, h):
            for col, x0, x1, left, right in cols:
                mask[top:bottom, left:right] = self._blocks[row, col, y0:y1, x0:x1]
        np.greater_equal(mask, VALID_BIT, out=valid)
        np.bitwise_and(mask, MASK_BIT, out=mask)


def _spans(start: int, size: int) -> list[tuple[int, int, int, int, int]]:
    """The blocks a window [start, start + size) crosses along one axis: (block, first, end) inside
    the block and (first, end) inside the window."""
    spans = []
    block, first = divmod(start, BLOCK)
    done = 0
    while done < size:
        n = min(BLOCK - first, size - done)
        spans.append((block, first, first + n, done, done + n))
        block, first, done = block + 1, 0, done + n
    return spans
