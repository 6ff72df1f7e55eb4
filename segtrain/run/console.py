"""What a person watching the run sees: a live line on a terminal, plain lines in batch logs."""
from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any, Optional, TextIO


def format_duration(seconds: float) -> str:
    seconds = int(max(0, seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


class Console:
    """Progress output: redrawn in place on a TTY, one line per report in a PBS job log."""

    def __init__(self, total_steps: int, stream: Optional[TextIO] = None, enabled: bool = True,
                 log_path: Optional[Path] = None):
        self.stream = stream or sys.stdout
        self.log = open(log_path, "a") if log_path is not None else None  # plain lines, kept in the run
        self.tty = self.stream.isatty()
        self.total_steps = total_steps
        self.enabled = enabled
        self.start = time.monotonic()
        self.start_step: Optional[int] = None

    def progress(self, step: int, epoch: int, values: dict[str, Any]) -> None:
        if not self.enabled:
            return
        if self.start_step is None:
            self.start_step = step - 1
        elapsed = time.monotonic() - self.start
        rate = (step - self.start_step) / elapsed if elapsed > 0 else 0.0
        eta = (self.total_steps - step) / rate if rate > 0 else 0.0
        parts = [f"epoch {epoch}", f"step {step}/{self.total_steps}"]
        parts += [f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in values.items()]
        parts.append(f"eta {format_duration(eta)}")
        line = "  ".join(parts)
        _show(self.stream, self.tty, line)
        self._to_log(line)

    def message(self, text: str) -> None:
        if not self.enabled:
            return
        self.stream.write(("\r\033[K" if self.tty else "") + text + "\n")
        self.stream.flush()
        self._to_log(text)

    def _to_log(self, line: str) -> None:
        if self.log is not None:
            try:
                self.log.write(line + "\n")
                self.log.flush()
            except OSError:  # a full disk: the stream still shows everything; the copy stops here
                self.log = None


class Progress:
    """A progress line on stderr: redrawn in place on a terminal, a line per 10 % in batch logs."""

    def __init__(self, label: str, total: int, stream: Optional[TextIO] = None, enabled: bool = True):
        self.label, self.total, self.enabled = label, max(1, total), enabled
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.start = time.monotonic()
        self._reported = 0

    def update(self, done: int, pixels: int) -> None:
        if not self.enabled:
            return
        tenth = done * 10 // self.total
        if not self.tty and tenth == self._reported and done < self.total:
            return
        self._reported = tenth
        elapsed = time.monotonic() - self.start
        rate = pixels / 1e6 / elapsed if elapsed > 0 else 0.0
        eta = elapsed * (self.total - done) / done if done else 0.0
        filled = 20 * done // self.total
        line = (f"{self.label} [{'#' * filled}{'.' * (20 - filled)}] {100 * done // self.total:3d}%  "
                f"{rate:.2f} Mpx/s  eta {format_duration(eta)}")
        _show(self.stream, self.tty, line, final=done >= self.total)


def _show(stream: TextIO, tty: bool, line: str, final: bool = False) -> None:
    """A progress line: redrawn in place on a terminal (ended by the final one), a plain line otherwise."""
    stream.write(("\r\033[K" + line + ("\n" if final else "")) if tty else line + "\n")
    stream.flush()
