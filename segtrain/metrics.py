"""Confusion counts over valid pixels, and the scores computed from them.

Scores are ratios of counts summed over a whole split (and over DDP ranks) -- never averages
of per-batch or per-tile ratios, which weigh a tile with 10 valid pixels like one with 65536
and depend on the batch size. Counts are int64 tensors kept on the device, so updating them
costs no host synchronisation; only :meth:`ConfusionCounts.compute` reads them back.

A pixel is predicted positive when its probability is strictly greater than the threshold
(as in torchmetrics); invalid pixels are never counted.
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Literal, NamedTuple

import torch
from torch import Tensor

EmptyScenePolicy = Literal["skip", "include"]
SCORES = ("iou", "dice", "precision", "recall", "accuracy")


class Counts(NamedTuple):
    """True/false positives/negatives over valid pixels."""
    tp: int
    fp: int
    fn: int
    tn: int


def scores_from_counts(tp: int, fp: int, fn: int, tn: int) -> dict[str, float]:
    """IoU, Dice (= F1), precision, recall and accuracy of the positive class.

    Conventions for a ratio 0/0:

    * 1.0 when nothing was to be found and nothing was found (tp = fp = fn = 0): an empty
      truth predicted empty is a perfect result, e.g. IoU 1.0.
    * 0.0 otherwise (e.g. precision when nothing was predicted but positives were missed),
      as torchmetrics' ``zero_division=0``.
    * NaN for every score when no valid pixel was counted at all: nothing was measured.
    """
    if tp + fp + fn + tn == 0:
        return {name: math.nan for name in SCORES}
    empty = 1.0 if tp + fp + fn == 0 else 0.0

    def ratio(numerator: int, denominator: int) -> float:
        return numerator / denominator if denominator else empty

    return {
        "iou": ratio(tp, tp + fp + fn),
        "dice": ratio(2 * tp, 2 * tp + fp + fn),
        "precision": ratio(tp, tp + fp),
        "recall": ratio(tp, tp + fn),
        "accuracy": (tp + tn) / (tp + fp + fn + tn),
    }


class ConfusionCounts:
    """int64 TP/FP/FN/TN over valid pixels, accumulated over a split."""

    def __init__(self, device: torch.device | str | None = None):
        self.state = torch.zeros(4, dtype=torch.int64, device=device)  # tp, fp, fn, tn

    def update(self, prob: Tensor, target: Tensor, valid: Tensor, threshold: float = 0.5) -> None:
        """Add the counts of one batch: ``prob`` (N,1,H,W) positive-class probabilities,
        ``target`` 0/1 and ``valid`` bool of the same shape."""
        valid = valid.bool()
        pred = (prob > threshold) & valid
        truth = (target > 0.5) & valid
        tp = (pred & truth).sum()
        fp = pred.sum() - tp
        fn = truth.sum() - tp
        tn = valid.sum() - tp - fp - fn
        self.state += torch.stack([tp, fp, fn, tn]).to(self.state.device)

    def merge(self, other: ConfusionCounts) -> None:
        """Add another accumulator's counts (e.g. one per scene into a split total)."""
        self.state += other.state.to(self.state.device)

    def counts(self) -> Counts:
        """The counts as Python ints (one read from the device)."""
        return Counts(*(int(value) for value in self.state.tolist()))

    def compute(self) -> dict[str, float]:
        """The scores of :func:`scores_from_counts`, plus the counts themselves."""
        counts = self.counts()
        return {**scores_from_counts(*counts), **counts._asdict()}


def per_scene_scores(counts: Mapping[str, Counts], empty: EmptyScenePolicy = "skip") -> dict:
    """Scores of each scene and their unweighted mean over scenes.

    A scene is *empty* when its truth has no positive valid pixel. Its IoU, Dice, precision
    and recall are then 1.0 if nothing was predicted and 0.0 otherwise (see
    :func:`scores_from_counts`): one stray pixel swings them fully, so such scenes would
    dominate the mean. ``empty`` says what the mean does with them:

    * ``"skip"``: left out of the mean (their false positives still count in the split's
      pooled scores, which is where they belong);
    * ``"include"``: averaged in with those 1.0/0.0 scores.

    Scenes without any valid pixel are always left out. Returns ``{"scenes": {name: scores},
    "mean": {score: value}, "n_scenes": scenes in the mean, "n_empty": empty scenes}``; the
    mean is NaN when no scene is in it. ``counts`` values are :class:`Counts` or 4-tuples.
    """
    if empty not in ("skip", "include"):
        raise ValueError(f"empty-scene policy must be 'skip' or 'include', got {empty!r}")
    counts = {name: Counts(*c) for name, c in counts.items()}
    scenes = {name: scores_from_counts(*c) for name, c in counts.items()}
    measured = {name: c for name, c in counts.items() if sum(c) > 0}
    empty_names = {name for name, c in measured.items() if c.tp + c.fn == 0}
    averaged = [name for name in measured if empty == "include" or name not in empty_names]
    mean = {score: (sum(scenes[name][score] for name in averaged) / len(averaged) if averaged else math.nan)
            for score in SCORES}
    return {"scenes": scenes, "mean": mean, "n_scenes": len(averaged), "n_empty": len(empty_names)}
