"""Reading ahead: the next windows of a scene are read and decoded while the caller works on this one.

Prediction reads a scene as a known sequence of row strips; decoding a compressed strip
(zlib, in C, without the GIL) and running the model (torch or onnxruntime, also without the
GIL) can then overlap. A thread reads the windows in order, at most ``depth`` ahead, so memory
grows by ``depth`` strips at most. A read that is not the next expected window is served
directly, so a caller that reads otherwise still gets the right pixels.
"""
from __future__ import annotations

import queue
import threading
from typing import Sequence

from segtrain.data.reader import SceneReader

Window = tuple[int, int, int, int]  # y, x, height, width
_STOP_POLL_S = 0.2


class ReadAhead:
    """The ``read`` of a :class:`SceneReader`, with ``windows`` read in a background thread."""

    def __init__(self, reader: SceneReader, windows: Sequence[Window], depth: int = 2):
        self.reader, self.height, self.width = reader, reader.height, reader.width
        self._windows = list(windows)
        self._next = 0
        self._ready: queue.Queue = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="read ahead", daemon=True)
        self._thread.start()

    def read(self, y: int, x: int, h: int, w: int):
        if self._next < len(self._windows) and self._windows[self._next] == (y, x, h, w):
            self._next += 1
            ok, value = self._ready.get()
            if not ok:
                raise value
            return value
        return self.reader.read(y, x, h, w)

    def _run(self) -> None:
        for window in self._windows:
            try:
                item = (True, self.reader.read(*window))
            except Exception as exc:  # raised in the caller, at the window that failed
                item = (False, exc)
            while not self._stop.is_set():
                try:
                    self._ready.put(item, timeout=_STOP_POLL_S)
                    break
                except queue.Full:
                    continue
            if self._stop.is_set() or not item[0]:
                return

    def close(self) -> None:
        self._stop.set()
        self._thread.join()

    def __enter__(self) -> "ReadAhead":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
