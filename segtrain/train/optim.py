"""Optimizers and learning-rate schedules from the ``optim`` config section.

Step schedules are a ``LambdaLR`` over a pure function of the step, so that resuming with
more epochs (a safe config change) simply stretches the schedule from where it stands, and
checkpoints hold no pickled closures.
"""
from __future__ import annotations

import math
from typing import Optional

import torch

from segtrain.config.schema import OptimConfig
from segtrain.errors import UserError


def build_optimizer(cfg: OptimConfig, params) -> torch.optim.Optimizer:
    if cfg.name == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay, nesterov=cfg.momentum > 0)
    cls = torch.optim.AdamW if cfg.name == "adamw" else torch.optim.Adam
    return cls(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


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


class Schedule:
    """One object for every schedule: ``step()`` after each optimizer step, ``validated(v)`` after validation."""

    def __init__(self, cfg: OptimConfig, optimizer: torch.optim.Optimizer, total_steps: int, monitor_mode: str):
        if cfg.schedule == "plateau" and cfg.warmup_steps:
            raise UserError("optim.warmup_steps: warm-up is not available with optim.schedule: plateau; set it to 0")
        self.cfg = cfg
        self.plateau: Optional[torch.optim.lr_scheduler.ReduceLROnPlateau] = None
        self.lambda_lr: Optional[torch.optim.lr_scheduler.LambdaLR] = None
        if cfg.schedule == "plateau":
            self.plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(
                optimizer, mode=monitor_mode, factor=cfg.plateau_factor, patience=cfg.plateau_patience, min_lr=cfg.min_lr)
        else:
            self.lambda_lr = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, total_steps, cfg))

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
        return state

    def load_state_dict(self, state: dict) -> None:
        sched = self.plateau if self.plateau is not None else self.lambda_lr
        sched.load_state_dict({**state, **({"lr_lambdas": [None]} if self.lambda_lr is not None else {})})
