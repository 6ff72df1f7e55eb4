"""Numerical health of the training steps, watched on the device so the loop never waits for it.

Testing each step's loss with ``bool(torch.isfinite(loss))`` makes the host wait for the GPU
at every step. Instead the first step with a non-finite loss or gradient norm is remembered
in a device tensor, and the loop reads it (one sync) where it matters: before a checkpoint is
written, at the end of an epoch and at each logged step. A bad step can therefore be followed
by a few more before the run fails, but never by a checkpoint, and the error names the step.
"""
from __future__ import annotations

from typing import Optional

import torch


class NonFiniteWatch:
    """The first step (1-based) whose recorded values were not all finite, kept on the device."""

    def __init__(self, device: torch.device):
        self._first = torch.zeros((), dtype=torch.int64, device=device)

    def record(self, step: int, *values: torch.Tensor) -> None:
        """Note ``step`` if any of ``values`` (scalars) is NaN or infinite; no host sync."""
        bad = ~torch.isfinite(torch.stack([v.detach().float() for v in values])).all()
        self._first = torch.where(bad & (self._first == 0), step, self._first)

    def first_bad_step(self) -> Optional[int]:
        """The first bad step recorded so far, or None (waits for the device)."""
        return int(self._first) or None
