"""Learning-rate schedules from the ``optim`` config section, and how a resumed run extends one.

Step schedules are a ``LambdaLR`` over a pure function of the step, so checkpoints hold no
pickled closures. A checkpoint keeps the schedule's plan: the steps it was planned for, in
segments. Resuming with the same number of epochs follows the same plan (bit-exact); with a
different number (``train.epochs``, a safe change) a schedule that depends on the run's length
used to be stretched in place, which jumped the learning rate: a finished 8-epoch cosine run
resumed with 16 epochs went from 0 back to half its peak at once, and its val IoU fell 0.38 ->
0.26 (issue 26). Now the plan gets a new segment from the step where the run stands:

- the run was still on its schedule: it **continues smoothly**, a cosine decay from the
  learning rate it had reached down to ``optim.min_lr`` at the new last step (a run still
  warming up keeps its warm-up and decays over the new length);
- the run had finished its schedule: a **new schedule** is planned over the added steps, the
  config's warm-up and decay again (a warm restart: the learning rate rises to its peak, so
  validation scores may dip before they improve).

The log says which. ``constant`` and ``plateau`` do not depend on the run's length.
"""
from __future__ import annotations

import math
from typing import Optional

import torch

from segtrain.config.schema import OptimConfig
from segtrain.errors import UserError

CONTINUED, NEW = "continued", "new"


def lr_factor(step: int, total: int, cfg: OptimConfig) -> float:
    """The multiplier of the base learning rate at ``step`` of ``total`` (pure, for tests and plots).

    constant: 1 after warm-up. cosine: linear warm-up, then cosine decay to ``min_lr``.
    onecycle: warm-up from lr/25 over ``warmup_steps`` (30 % of the run when 0), then cosine
    annealing to lr/1e4, the shape of Smith's one-cycle policy.
    """
    if cfg.schedule == "onecycle":
        warmup = cfg.warmup_steps or max(1, int(0.3 * total))
        start, end = 1 / 25, 1e-4
        if step < warmup:
            return start + (1 - start) * step / warmup
        return end + (1 - end) * 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warmup) / max(1, total - warmup))))
    if step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    if cfg.schedule == "cosine":
        floor = cfg.min_lr / cfg.lr
        progress = min(1.0, (step - cfg.warmup_steps) / max(1, total - cfg.warmup_steps))
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))
    return 1.0


def final_factor(cfg: OptimConfig) -> float:
    """Where a decaying schedule ends: ``min_lr`` (cosine) or lr/1e4 (onecycle), as a factor."""
    return 1e-4 if cfg.schedule == "onecycle" else cfg.min_lr / cfg.lr


class Plan:
    """The schedule's factor at each step, as segments ``[start, end, kind, factor at start]``.

    The first segment is the config's schedule over ``[0, end)``; each resume with another length
    adds one from the step the run stood at (see the module docstring).
    """

    def __init__(self, cfg: OptimConfig, total_steps: int):
        self.cfg = cfg
        self.segments: list[list] = [[0, total_steps, NEW, 1.0]]

    @property
    def total(self) -> int:
        return self.segments[-1][1]

    def factor(self, step: int) -> float:
        start, end, kind, first = next(s for s in reversed(self.segments) if step >= s[0])
        if kind == NEW:
            return lr_factor(step - start, end - start, self.cfg)
        floor = final_factor(self.cfg)
        progress = min(1.0, (step - start) / max(1, end - start))
        return floor + (first - floor) * 0.5 * (1 + math.cos(math.pi * progress))

    def extend(self, step: int, total: int) -> str:
        """Plan for ``total`` steps from ``step`` on; a sentence for the log saying what was planned."""
        before, planned = self.factor(step), self.total
        lr = f"lr {self.cfg.lr * before:.3g}"
        if step >= planned:
            self.segments.append([step, total, NEW, 1.0])
            return (f"schedule: the run had finished its {self.cfg.schedule} schedule of {planned} steps "
                    f"({lr}); a new one is planned over steps {step}..{total}: warm-up to optim.lr "
                    f"{self.cfg.lr:g} again, then decay (expect the val scores to dip before they improve)")
        start, end, kind, _ = self.segments[-1]
        warming = kind == NEW and step - start < self._warmup(end - start)
        if warming:  # warm-up does not depend on the length: the same schedule over the new length
            self.segments[-1] = [start, total, NEW, 1.0]
        else:
            self.segments.append([step, total, CONTINUED, before])
        return (f"schedule: continues smoothly from step {step} ({lr}) to step {total} instead of {planned}"
                f"{' (still warming up)' if warming else ', decaying from there'}")

    def _warmup(self, length: int) -> int:
        if self.cfg.schedule == "onecycle":
            return self.cfg.warmup_steps or max(1, int(0.3 * length))
        return self.cfg.warmup_steps


class Schedule:
    """One object for every schedule: ``step()`` after each optimizer step, ``validated(v)`` after validation."""

    def __init__(self, cfg: OptimConfig, optimizer: torch.optim.Optimizer, total_steps: int, monitor_mode: str):
        if cfg.schedule == "plateau" and cfg.warmup_steps:
            raise UserError("optim.warmup_steps: warm-up is not available with optim.schedule: plateau; set it to 0")
        self.cfg = cfg
        self.plan = Plan(cfg, total_steps)
        self.plateau: Optional[torch.optim.lr_scheduler.ReduceLROnPlateau] = None
        self.lambda_lr: Optional[torch.optim.lr_scheduler.LambdaLR] = None
        if cfg.schedule == "plateau":
            self.plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(
                optimizer, mode=monitor_mode, factor=cfg.plateau_factor, patience=cfg.plateau_patience, min_lr=cfg.min_lr)
        else:
            self.lambda_lr = torch.optim.lr_scheduler.LambdaLR(optimizer, self.plan.factor)

    def step(self) -> None:
        if self.lambda_lr is not None:
            self.lambda_lr.step()

    def validated(self, value: float) -> None:
        if self.plateau is not None:
            self.plateau.step(value)

    def state_dict(self) -> dict:
        sched = self.plateau if self.plateau is not None else self.lambda_lr
        state = sched.state_dict()
        state.pop("lr_lambdas", None)
        if self.lambda_lr is not None:
            state["plan"] = [list(s) for s in self.plan.segments]
        return state

    def load_state_dict(self, state: dict, planned_total: int) -> Optional[str]:
        """Restore a checkpoint's schedule; ``planned_total`` is the length it was planned for when
        the checkpoint predates stored plans (its config's epochs x steps per epoch). Returns a
        note for the log when the run's length changed and the plan was extended."""
        sched = self.plateau if self.plateau is not None else self.lambda_lr
        state = dict(state)
        saved = state.pop("plan", None)
        sched.load_state_dict({**state, **({"lr_lambdas": [None]} if self.lambda_lr is not None else {})})
        if self.lambda_lr is None:
            return None
        total = self.plan.total
        self.plan.segments = [list(s) for s in saved] if saved else [[0, planned_total, NEW, 1.0]]
        if self.plan.total == total:
            return None
        if self.cfg.schedule == "constant":  # its warm-up counts steps, whatever the run's length
            self.plan.segments[-1][1] = total
            return None
        return self.plan.extend(state["last_epoch"], total)
