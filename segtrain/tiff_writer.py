"""A one-band tiled TIFF written from consecutive row blocks, as prediction produces them (atomic, bounded memory)."""
from __future__ import annotations

import queue
import threading
from pathlib import Path
from typing import Iterator, Optional

import numpy as np
import tifffile

from segtrain.data.scene import GDAL_NODATA_TAG
from segtrain.fsutil import atomic_open

OUT_TILE = 256  # tile size of the written TIFFs
_END, _ABORT = object(), object()


class _Aborted(Exception):
    pass


class RowWriter:
    """An image written from consecutive row blocks: ``write``, then ``close``; ``abort`` leaves no trace.
    As a context manager it closes on success and aborts on an exception."""

    def close(self) -> None:
        raise NotImplementedError

    def abort(self) -> None:
        raise NotImplementedError

    def __enter__(self):
        return self

    def __exit__(self, kind, *exc: object) -> None:
        if kind is None:
            self.close()
        else:
            self.abort()


class TiledTiffWriter(RowWriter):
    """A one-band (H, W) TIFF written from consecutive row blocks: tiled, deflate, atomic.

    tifffile writes a tiled image from an iterator that it pulls, while prediction pushes
    strips, so a thread runs tifffile and takes blocks from a queue of at most two: memory
    stays a few strips whatever the scene size. On :meth:`abort` (or an exception inside the
    ``with``) the temporary file is removed and an existing file at ``path`` is left as it was.
    """

    def __init__(self, path: Path, height: int, width: int, dtype: np.dtype, nodata: str,
                 extratags: list[tuple] = ()):
        self.path, self.height, self.width, self.dtype = Path(path), height, width, np.dtype(dtype)
        self._tags = [(GDAL_NODATA_TAG, "s", 0, nodata, True), *extratags]
        self._blocks: queue.Queue = queue.Queue(maxsize=2)
        self._failure: Optional[BaseException] = None
        self._thread = threading.Thread(target=self._run, name=f"write {self.path.name}", daemon=True)
        self._thread.start()

    def write(self, rows: np.ndarray) -> None:
        """Append the next rows (h, W) of the image."""
        self._put(rows)

    def close(self) -> None:
        """Finish the file and move it into place; raises what went wrong in the writer."""
        self._put(_END)
        self._thread.join()
        if self._failure is not None:
            raise self._failure

    def abort(self) -> None:
        if self._thread.is_alive():
            self._blocks.put(_ABORT)
        self._thread.join()

    def _put(self, item: object) -> None:
        while True:
            if not self._thread.is_alive():
                if item is _END and self._failure is None:
                    return  # tifffile stops pulling once it has every tile: a height of whole tiles ends early
                raise self._failure or RuntimeError(f"{self.path}: the writer thread has stopped")
            try:
                self._blocks.put(item, timeout=0.2)
                return
            except queue.Full:
                continue

    def _run(self) -> None:
        big = self.height * self.width * self.dtype.itemsize > 2**31  # classic TIFF ends at 4 GB
        try:
            with atomic_open(self.path, "wb") as f, \
                    tifffile.TiffWriter(tifffile.FileHandle(f, mode="wb", name=self.path.name), bigtiff=big) as tif:
                tif.write(self._tiles(), shape=(self.height, self.width), dtype=self.dtype,
                          tile=(OUT_TILE, OUT_TILE), compression="zlib", photometric="minisblack",
                          metadata=None, extratags=self._tags)
        except _Aborted:
            pass
        except BaseException as exc:  # reported to the producer by close() / write()
            self._failure = exc

    def _tiles(self) -> Iterator[np.ndarray]:
        """Output tiles in row-major order, cut from bands of OUT_TILE rows gathered from the blocks."""
        band, filled, rows = np.empty((OUT_TILE, self.width), self.dtype), 0, 0
        while True:
            item = self._blocks.get()
            if item is _ABORT:
                raise _Aborted
            if item is _END:
                break
            rows += len(item)
            pos = 0
            while pos < len(item):
                n = min(OUT_TILE - filled, len(item) - pos)
                band[filled:filled + n] = item[pos:pos + n]
                filled, pos = filled + n, pos + n
                if filled == OUT_TILE:
                    yield from (band[:, x:x + OUT_TILE] for x in range(0, self.width, OUT_TILE))
                    band, filled = np.empty((OUT_TILE, self.width), self.dtype), 0
        if rows != self.height:
            raise ValueError(f"{self.path}: got {rows} rows of {self.height}")
        if filled:
            yield from (band[:filled, x:x + OUT_TILE] for x in range(0, self.width, OUT_TILE))
