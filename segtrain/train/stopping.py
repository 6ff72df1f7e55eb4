"""When to stop: signals, the walltime budget and early stopping on a validation metric.

PBS gives no warning before walltime, so the loop times itself: it stops while there is still
room for the next step, a validation when one is due, and a checkpoint, with a safety margin.
A SIGTERM (PBS kill, ``qdel``) or SIGUSR1 is turned into the same orderly stop.
"""
from __future__ import annotations

import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional


class StopSignals:
    """Turn SIGTERM and SIGUSR1 into a flag that the loop checks at step boundaries."""

    SIGNALS = (signal.SIGTERM, signal.SIGUSR1)

    def __init__(self) -> None:
        self.received: Optional[str] = None
        self._previous = {}

    def __enter__(self) -> "StopSignals":
        for sig in self.SIGNALS:
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def _handle(self, signum: int, frame: Any) -> None:
        self.received = signal.Signals(signum).name
        enclosing = self._previous.get(signum)
        if isinstance(getattr(enclosing, "__self__", None), StopSignals):
            # A search worker around its trials hears it too: a signal that comes as a trial ends
            # (pruned, or done) must stop the worker before its next trial, not be lost with the trainer's flag.
            enclosing(signum, frame)


class TimeBudget:
    """Decide whether the remaining time still fits one more step (and what must follow it).

    Durations are measured as the run goes: the slowest step of the recent ones, the last
    validation, the slowest checkpoint write. The margin covers what cannot be measured
    (process exit, W&B flush) and the polling delay of PBS.
    """

    def __init__(self, limit_s: Optional[float], margin_s: float = 10.0, deadline_file: Optional[Path] = None):
        self.limit_s = limit_s
        self.margin_s = margin_s
        self.start = time.monotonic()
        self.step_s = 0.0
        self.validation_s = 0.0
        self.checkpoint_s = 1.0  # until a checkpoint has been timed
        self.deadline_file = deadline_file  # a PBS job rewrites it after a qextend
        self._deadline_seen: Optional[int] = None

    def record_step(self, seconds: float) -> None:
        self.step_s = max(seconds, 0.8 * self.step_s)  # decays slowly from a slow outlier

    def record_validation(self, seconds: float) -> None:
        self.validation_s = seconds

    def record_checkpoint(self, seconds: float) -> None:
        self.checkpoint_s = max(self.checkpoint_s, seconds)

    def remaining(self) -> float:
        self._follow_deadline_file()
        return float("inf") if self.limit_s is None else self.limit_s - (time.monotonic() - self.start)

    def _follow_deadline_file(self) -> None:
        """A new deadline (epoch seconds) in ``deadline_file`` replaces the limit: a walltime raised with
        ``qextend`` while the job runs. Read only when the file changed (one stat per step)."""
        if self.deadline_file is None:
            return
        try:
            changed = self.deadline_file.stat().st_mtime_ns
            if changed == self._deadline_seen:
                return
            deadline = float(self.deadline_file.read_text())
        except (OSError, ValueError):
            return
        self._deadline_seen = changed
        self.limit_s = deadline - time.time() + (time.monotonic() - self.start)

    def exhausted(self, validation_next: bool, steps: int = 1) -> bool:
        """True when ``steps`` more steps, plus a validation if one follows, would not leave room to checkpoint."""
        need = steps * self.step_s + (self.validation_s if validation_next else 0.0) + self.checkpoint_s + self.margin_s
        return self.remaining() < need


@dataclass
class EarlyStopping:
    """Patience on a validation metric; state is checkpointed so a resume continues the count."""
    metric: str
    patience: Optional[int]
    min_delta: float = 0.0
    best: Optional[float] = None
    bad_validations: int = 0

    @property
    def mode(self) -> str:
        return "min" if self.metric == "loss" else "max"

    def update(self, value: float) -> bool:
        """Record a validation result; return True when it is a new best."""
        improved = self.best is None or (
            value < self.best - self.min_delta if self.mode == "min" else value > self.best + self.min_delta)
        if improved:
            self.best, self.bad_validations = value, 0
        else:
            self.bad_validations += 1
        return improved

    @property
    def should_stop(self) -> bool:
        return self.patience is not None and self.bad_validations >= self.patience

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best, "bad_validations": self.bad_validations}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best, self.bad_validations = state["best"], state["bad_validations"]
