"""One-band GeoTIFFs with internal overviews, written from row blocks in bounded memory.

A GIS opens a large raster fast when it is tiled and carries overviews (reduced-resolution
copies: 1/2, 1/4, ... of the full size), as GDAL's ``gdaladdo`` or a cloud-optimized GeoTIFF
has them. Prediction produces rows top to bottom, so every level is built as the rows come:
each level halves the rows it receives (masks by taking every second pixel, GDAL's
``nearest``; probabilities by the mean of the valid pixels of each 2 x 2 block, GDAL's
``average``) and passes them on to the next, and each level streams into a tiled, compressed
TIFF of its own (:class:`segtrain.tiff_writer.TiledTiffWriter`, one thread each). At the end the
levels are assembled into one cloud-optimized GeoTIFF by copying their compressed tiles as
they are (nothing is decoded or compressed twice; :mod:`segtrain.cog`): the full resolution
and each overview as a reduced image (``NewSubfileType`` 1), which is GDAL's internal-overview
layout and what tifffile reads as ``series[0].levels``. Memory holds a few tile rows per
level, whatever the scene size.
"""
from __future__ import annotations

import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Optional

import numpy as np

from segtrain.cog import write_cog
from segtrain.fsutil import atomic_open
from segtrain.tiff_writer import OUT_TILE, RowWriter, TiledTiffWriter


def overview_shapes(height: int, width: int, tile: int = OUT_TILE) -> list[tuple[int, int]]:
    """Each overview's (height, width): halving (rounded up) while the level is larger than a tile."""
    shapes = []
    while max(height, width) > tile:
        height, width = (height + 1) // 2, (width + 1) // 2
        shapes.append((height, width))
    return shapes


def halve(rows: np.ndarray) -> np.ndarray:
    """2 x 2 blocks of ``rows`` (an even number of rows, or the image's last odd one) as one pixel:
    the mean of the non-NaN values for floats (NaN where none), the top-left pixel otherwise."""
    if rows.dtype.kind != "f":
        return rows[::2, ::2]
    h, w = rows.shape
    padded = np.full((h + h % 2, w + w % 2), np.nan, rows.dtype)
    padded[:h, :w] = rows
    blocks = padded.reshape(padded.shape[0] // 2, 2, padded.shape[1] // 2, 2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN blocks: NaN, as intended
        return np.nanmean(blocks, axis=(1, 3)).astype(rows.dtype)


class OverviewTiffWriter(RowWriter):
    """Like :class:`segtrain.tiff_writer.TiledTiffWriter` (``write`` rows, ``close``, ``abort``, a context
    manager; atomic), plus overviews. The levels are written next to ``path`` in a temporary
    folder that is removed in every case."""

    def __init__(self, path: Path, height: int, width: int, dtype: np.dtype, nodata: str,
                 extratags: list[tuple] = ()):
        self.path, self.height, self.width, self.dtype = Path(path), height, width, np.dtype(dtype)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._work = Path(tempfile.mkdtemp(prefix=f".{self.path.name}.", suffix=".tmp", dir=self.path.parent))
        self._tags = list(extratags)
        self._nodata = nodata
        shapes = [(height, width)] + overview_shapes(height, width)
        self._writers: list[TiledTiffWriter] = []
        try:
            for level, (h, w) in enumerate(shapes):
                self._writers.append(TiledTiffWriter(self._work / f"level{level}.tif", h, w, self.dtype, nodata,
                                                     self._tags if level == 0 else []))
        except BaseException:
            self.abort()
            raise
        self._carry: list[Optional[np.ndarray]] = [None] * len(shapes)  # an odd row waiting for its pair

    def write(self, rows: np.ndarray) -> None:
        """Append the next rows (h, W) of the full-resolution image."""
        self._write(0, rows, last=False)

    def _write(self, level: int, rows: np.ndarray, last: bool) -> None:
        if len(rows):
            self._writers[level].write(rows)
        if level + 1 == len(self._writers):
            return
        if self._carry[level] is not None:
            rows = np.concatenate([self._carry[level], rows])
            self._carry[level] = None
        even = len(rows) - len(rows) % 2
        if not last and even < len(rows):
            self._carry[level] = rows[even:].copy()
            rows = rows[:even]
        if len(rows):
            self._write(level + 1, halve(rows), last)

    def close(self) -> None:
        """Finish every level, then assemble them into ``path`` (atomically)."""
        try:
            self._flush()
            for writer in self._writers:
                writer.close()
            self._assemble()
        except BaseException:
            self.abort()
            raise
        shutil.rmtree(self._work, ignore_errors=True)

    def _flush(self) -> None:
        """The last odd rows of every level go down the levels."""
        for level in range(len(self._writers) - 1):
            carry, self._carry[level] = self._carry[level], None
            if carry is not None:
                self._write(level + 1, halve(carry), last=True)

    def abort(self) -> None:
        for writer in self._writers:
            writer.abort()
        shutil.rmtree(self._work, ignore_errors=True)

    def _assemble(self) -> None:
        big = sum(p.stat().st_size for p in self._work.iterdir()) > 2**31
        with atomic_open(self.path, "wb") as f:
            write_cog(f, [writer.path for writer in self._writers], big)
