"""A learning-rate range test (Smith 2017; the fastai "lr_find"): which ``optim.lr`` to use.

The model of the config trains on its train split for ``steps`` optimizer steps while the
learning rate grows exponentially from ``start`` to ``end``. The loss, smoothed by an
exponential moving average, first barely moves (lr too small), then falls, then climbs and
diverges (lr too large); the test stops there. The suggestion is the learning rate of the
steepest descent of the loss against log(lr), found before the minimum: where one step of
training gains the most. The "minimum / 10" rule is reported alongside.

The moving average only stops the test (it must be computed as the steps come). The suggestion
and the minimum come from a centered average of the raw losses: an exponential average of
weight 0.98 remembers about 50 steps, half of a 100-step sweep, so it lags the raw loss by
about half a decade of lr, and on a real Landsat scene it put the minimum at lr 1, the end of
the sweep, where the raw loss had long turned up (issue 26).

Same building blocks as training (data set, model, criterion, optimizer, device batches), so
what is measured is the run the config would make; nothing is written into the data set.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import numpy as np
import torch

from segtrain.config import Config
from segtrain.data.dataset import TileDataset, raw_loader
from segtrain.data.stats import Stats
from segtrain.errors import UserError
from segtrain.losses import build_criterion
from segtrain.models import build_model
from segtrain.train.optim import build_optimizer
from segtrain.train.prefetch import DeviceBatches

SMOOTHING = 0.98  # EMA weight of the past: fastai's value, about 50 steps of memory
DIVERGED = 4.0  # stop when the smoothed loss exceeds this multiple of its best
SKIP_START = 0.1  # fraction of the first steps ignored by the suggestion: the EMA is still settling there
MIN_POINTS = 5  # a curve this short before its minimum gives no slope: the minimum/10 rule then
CENTERED_SHARE = 0.05  # the centered average spans this share of the steps on either side (at least 2)


@dataclass
class RangeTest:
    """The curve of a range test and its suggestion (``method`` says which rule chose it)."""
    lrs: list[float]
    losses: list[float]
    smoothed: list[float]
    centered: list[float]  # what the suggestion is taken from (:func:`centered`)
    suggested_lr: float
    method: str  # "steepest descent" or "minimum/10"
    min_lr: float  # the learning rate at the smoothed loss's minimum
    diverged: bool  # the test stopped early because the loss diverged
    cpu_s: float = 0.0  # CPU seconds of the test (this process, all threads)

    def to_dict(self) -> dict:
        return {"suggested_lr": self.suggested_lr, "method": self.method, "min_loss_lr": self.min_lr,
                "min_loss_lr_over_10": self.min_lr / 10, "diverged": self.diverged, "cpu_s": self.cpu_s,
                "smoothing": SMOOTHING, "centered_half_width": half_width(len(self.losses)),
                "curve": {"lr": self.lrs, "loss": self.losses, "smoothed": self.smoothed, "centered": self.centered}}


def lr_at(step: int, steps: int, start: float, end: float) -> float:
    """The learning rate of ``step`` (0-based) of ``steps``: exponential from ``start`` to ``end``."""
    return start * (end / start) ** (step / max(1, steps - 1))


def smooth(losses: Sequence[float], beta: float = SMOOTHING) -> list[float]:
    """Exponential moving average with bias correction (so the first values are not pulled to 0)."""
    avg, out = 0.0, []
    for i, loss in enumerate(losses, 1):
        avg = beta * avg + (1 - beta) * loss
        out.append(avg / (1 - beta ** i))
    return out


def half_width(steps: int) -> int:
    return max(2, round(CENTERED_SHARE * steps))


def centered(losses: Sequence[float]) -> list[float]:
    """The mean of each loss and its :func:`half_width` neighbours on either side (fewer at the
    ends): smooth, and without the moving average's lag. Non-finite losses count as the largest
    finite one."""
    raw = np.asarray(losses, dtype=np.float64)
    finite = raw[np.isfinite(raw)]
    raw = np.where(np.isfinite(raw), raw, finite.max() if finite.size else 0.0)
    k = half_width(len(raw))
    sums = np.concatenate([[0.0], np.cumsum(raw)])
    lo, hi = np.maximum(np.arange(len(raw)) - k, 0), np.minimum(np.arange(len(raw)) + k + 1, len(raw))
    return ((sums[hi] - sums[lo]) / (hi - lo)).tolist()


def suggest(lrs: Sequence[float], smoothed: Sequence[float]) -> tuple[float, str, float]:
    """(suggested lr, the rule that chose it, lr at the minimum) of a smoothed curve (:func:`centered`).

    Steepest descent: the most negative slope of loss against log(lr), searched from
    ``SKIP_START`` of the curve up to its minimum. If fewer than ``MIN_POINTS`` lie there,
    the minimum / 10 (at least the sweep's first lr).
    """
    loss = np.asarray(smoothed, dtype=np.float64)
    lr = np.asarray(lrs, dtype=np.float64)
    lowest = int(np.argmin(loss))
    first = min(int(SKIP_START * len(loss)), lowest)
    if lowest - first + 1 < MIN_POINTS:  # never below the sweep: nothing is known there
        return float(max(lr[lowest] / 10, lr[0])), "minimum/10", float(lr[lowest])
    slope = np.gradient(loss[first:lowest + 1], np.log(lr[first:lowest + 1]))
    return float(lr[first + int(np.argmin(slope))]), "steepest descent", float(lr[lowest])


def range_test(cfg: Config, stats: Optional[Stats], in_channels: int, device: torch.device, steps: int,
               start: float, end: float, progress: Callable[[int, float, float], None] = lambda *a: None) -> RangeTest:
    """Train a fresh model of ``cfg`` for at most ``steps`` steps, the lr growing from ``start`` to ``end``."""
    started = time.process_time()
    torch.manual_seed(cfg.train.seed)
    tiles = TileDataset(cfg.data, "train", training=True, seed=cfg.train.seed, stats=stats)
    if len(tiles) < cfg.train.batch_size:
        raise UserError(f"train.batch_size: {cfg.train.batch_size} is larger than the {len(tiles)} tiles of an epoch")
    model = build_model(cfg.model, in_channels).to(device).train()
    criterion = build_criterion(cfg.loss, cfg.model.out_channels,
                                pos_weight=stats.pos_weight if stats is not None else None).to(device)
    optimizer = build_optimizer(cfg.optim, model.parameters())
    clip = cfg.optim.grad_clip or math.inf
    lrs: list[float] = []
    losses: list[float] = []
    smoothed: list[float] = []
    epoch, diverged = 0, False
    while len(lrs) < steps and not diverged:
        tiles.set_epoch(epoch)
        loader = raw_loader(tiles, cfg.train.batch_size, shuffle=True, drop_last=True, num_workers=cfg.data.num_workers,
                            generator=torch.Generator().manual_seed(cfg.train.seed * 100_003 + epoch),
                            finished=device.type == "cpu")
        for batch in DeviceBatches(loader, tiles.transform, device):
            lr = lr_at(len(lrs), steps, start, end)
            for group in optimizer.param_groups:
                group["lr"] = lr
            loss, _ = criterion(model(batch["image"]).float(), batch["mask"], batch["valid"])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
            optimizer.step()
            value = float(loss.detach())
            lrs.append(lr)
            losses.append(value if math.isfinite(value) else math.inf)
            smoothed = smooth(losses)
            progress(len(lrs), lr, smoothed[-1])
            if not math.isfinite(smoothed[-1]) or smoothed[-1] > DIVERGED * min(smoothed):
                diverged = True
            if diverged or len(lrs) == steps:
                break
        epoch += 1
    curve = centered(losses)
    suggested, method, min_lr = suggest(lrs, curve)
    return RangeTest(lrs, losses, smoothed, curve, suggested, method, min_lr, diverged, time.process_time() - started)


def plot(result: RangeTest, path, title: str) -> None:
    """Loss (raw, faint; smoothed, solid) against the learning rate on a log axis, suggestion marked."""
    from segtrain.run.plots import _pyplot, save_figure

    fig, ax = _pyplot().subplots(figsize=(7, 4))
    finite = [(lr, s) for lr, s in zip(result.lrs, result.smoothed) if math.isfinite(s)]
    ax.plot(result.lrs, [x if math.isfinite(x) else np.nan for x in result.losses], alpha=0.3, label="loss")
    ax.plot([lr for lr, _ in finite], [s for _, s in finite], label="moving average (stops the test)")
    ax.plot(result.lrs, result.centered, label="centered average (the suggestion's)")
    ax.axvline(result.suggested_lr, color="C3", linestyle="--",
               label=f"suggested {result.suggested_lr:.2g} ({result.method})")
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(lambda value, _: f"{value:g}")  # the plots' text is not TeX, so no 10^x labels
    best = min(s for _, s in finite)
    ax.set_ylim(top=min(max(s for _, s in finite), DIVERGED * best) * 1.05)
    ax.set_xlabel("learning rate")
    ax.set_ylabel("training loss")
    ax.set_title(title)
    ax.legend()
    save_figure(fig, path)
