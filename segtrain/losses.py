"""Masked segmentation losses and the weighted criterion configured by ``loss:``.

Conventions shared by every term:

* ``logits`` (N, C, H, W) with C = 1 (sigmoid) or C = 2 (softmax over negative, positive);
  both are reduced to the positive class's log-odds by :func:`segtrain.models.positive_logit`,
  so each term means the same for either head. ``target`` (N, 1, H, W) holds 0/1 and
  ``valid`` (N, 1, H, W) is True where the pixel counts; labels under invalid pixels are
  ignored whatever they hold.
* Pixel-wise terms are the sum over valid pixels divided by the number of valid pixels: a tile
  that is half no-data weighs its valid pixels like a full tile, instead of diluting them.
* A batch without a single valid pixel gives a loss of exactly 0 with zero gradients.
* Half-precision logits (AMP) are promoted to float32 first; sums over large tiles in fp16
  would lose the small per-pixel values.
"""
from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from segtrain.config.schema import LossConfig
from segtrain.errors import UserError
from segtrain.models import positive_logit

DiceMode = Literal["per_sample", "per_batch"]


def _prepare(logits: Tensor, target: Tensor, valid: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """(positive log-odds in >= float32, target with invalid pixels zeroed, valid as bool)."""
    if logits.dtype in (torch.float16, torch.bfloat16):
        logits = logits.float()
    z = positive_logit(logits)
    valid = valid.bool()
    return z, torch.where(valid, target.to(z.dtype), 0.0), valid


def masked_mean(values: Tensor, valid: Tensor) -> Tensor:
    """Sum of ``values`` over valid pixels / number of valid pixels; 0 when none is valid.

    ``torch.where`` (not a multiplication) keeps a non-finite value under an invalid pixel
    from reaching the sum.
    """
    return torch.where(valid, values, 0.0).sum() / valid.sum().clamp_min(1)


class MaskedBCE(nn.Module):
    """Binary cross-entropy with logits over valid pixels.

    ``pos_weight`` multiplies the loss of positive pixels (as in ``BCEWithLogitsLoss``);
    ``label_smoothing`` = e turns the targets 0 and 1 into e and 1 - e. With two output
    channels this is the 2-class cross-entropy: per pixel it equals ``F.cross_entropy`` with
    ``weight=[1, pos_weight]`` and ``label_smoothing=2e``; the reduction differs from torch's
    (a plain mean over valid pixels, not a mean weighted by each pixel's class weight).
    """

    def __init__(self, pos_weight: float | None = None, label_smoothing: float = 0.0):
        super().__init__()
        self.pos_weight = pos_weight
        self.label_smoothing = label_smoothing

    def forward(self, logits: Tensor, target: Tensor, valid: Tensor) -> Tensor:
        z, target, valid = _prepare(logits, target, valid)
        target = target * (1 - 2 * self.label_smoothing) + self.label_smoothing
        pos_weight = None if self.pos_weight is None else z.new_tensor(self.pos_weight)
        loss = F.binary_cross_entropy_with_logits(z, target, pos_weight=pos_weight, reduction="none")
        return masked_mean(loss, valid)


class MaskedDice(nn.Module):
    """Soft Dice loss 1 - (2 sum(p t) + s) / (sum(p) + sum(t) + s) over valid pixels.

    ``per_sample`` takes the score of each tile and averages the tiles that have a valid pixel;
    ``per_batch`` pools all pixels of the batch into one score (stabler for tiles with few
    positives). Empty tiles: with smoothing s > 0 a tile without positives has loss 0 when
    nothing is predicted, rising towards 1 with predicted mass; an all-positive tile has loss
    0 when all is predicted. With s = 0, the one undefined case 0/0 (no positive in truth or
    prediction) is a perfect score, loss 0.
    """

    def __init__(self, mode: DiceMode = "per_sample", smooth: float = 1.0):
        super().__init__()
        self.mode = mode
        self.smooth = smooth

    def forward(self, logits: Tensor, target: Tensor, valid: Tensor) -> Tensor:
        z, target, valid = _prepare(logits, target, valid)
        prob = torch.where(valid, torch.sigmoid(z), 0.0)
        dims = (1, 2, 3) if self.mode == "per_sample" else (0, 1, 2, 3)
        intersection = (prob * target).sum(dims)
        denominator = prob.sum(dims) + target.sum(dims) + self.smooth
        defined = denominator > 0
        # Double where: the 0/0 branch must not produce NaN gradients either.
        score = torch.where(defined, (2 * intersection + self.smooth) / torch.where(defined, denominator, 1.0), 1.0)
        loss = 1 - score
        if self.mode == "per_batch":
            return loss
        counted = valid.flatten(1).any(dim=1)
        return torch.where(counted, loss, 0.0).sum() / counted.sum().clamp_min(1)


class MaskedFocal(nn.Module):
    """Focal loss -alpha_t (1 - p_t)^gamma log(p_t) over valid pixels (Lin et al., 2017).

    ``alpha`` weighs positives (negatives get 1 - alpha); None weighs both classes 1. The same
    conventions as torchvision's ``sigmoid_focal_loss`` and smp's ``FocalLoss``.
    """

    def __init__(self, gamma: float = 2.0, alpha: float | None = 0.25):
        super().__init__()
        self.gamma = gamma
        self.alpha = alpha

    def forward(self, logits: Tensor, target: Tensor, valid: Tensor) -> Tensor:
        z, target, valid = _prepare(logits, target, valid)
        bce = F.binary_cross_entropy_with_logits(z, target, reduction="none")
        # 1 - p_t = 1 - exp(-bce), via expm1 to stay nonzero for confident pixels; the floor
        # keeps the gradient of x**gamma finite at x = 0 when gamma < 1.
        loss = (-torch.expm1(-bce)).clamp_min(1e-12) ** self.gamma * bce
        if self.alpha is not None:
            loss = loss * (self.alpha * target + (1 - self.alpha) * (1 - target))
        return masked_mean(loss, valid)


class MaskedMSE(nn.Module):
    """Mean squared error between the positive-class probability and the 0/1 target (valid pixels)."""

    def forward(self, logits: Tensor, target: Tensor, valid: Tensor) -> Tensor:
        z, target, valid = _prepare(logits, target, valid)
        return masked_mean((torch.sigmoid(z) - target) ** 2, valid)


class Criterion(nn.Module):
    """A weighted sum of masked loss terms that also reports each term on its own.

    A term with weight 0 is still computed and reported (to watch e.g. Dice while training on
    BCE alone) but does not contribute to the total.
    """

    def __init__(self, terms: dict[str, nn.Module], weights: dict[str, float], out_channels: int = 1):
        super().__init__()
        if set(terms) != set(weights):
            raise ValueError(f"terms {sorted(terms)} and weights {sorted(weights)} differ")
        self.terms = nn.ModuleDict(terms)
        self.weights = dict(weights)
        self.out_channels = out_channels

    def forward(self, logits: Tensor, target: Tensor, valid: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """(weighted total, {term name: unweighted value, detached}) for logits of the configured head."""
        if logits.shape[1] != self.out_channels:
            raise ValueError(f"criterion built for {self.out_channels} output channel(s), got logits "
                             f"of shape {tuple(logits.shape)}")
        values = {name: term(logits, target, valid) for name, term in self.terms.items()}
        total = sum(self.weights[name] * value for name, value in values.items())
        return total, {name: value.detach() for name, value in values.items()}


def build_criterion(loss_cfg: LossConfig, out_channels: int = 1, pos_weight: float | None = None) -> Criterion:
    """The criterion of ``loss_cfg``; ``pos_weight`` is the data set's value for ``pos_weight: auto``."""
    weight = loss_cfg.pos_weight
    if weight == "auto":
        if pos_weight is None:
            raise UserError("loss.pos_weight: 'auto' needs the training set's statistics, "
                            "which were not computed; give a number or null")
        weight = pos_weight
    make = {
        "bce": lambda: MaskedBCE(weight, loss_cfg.label_smoothing),
        "dice": lambda: MaskedDice(loss_cfg.dice_mode, loss_cfg.dice_smooth),
        "focal": lambda: MaskedFocal(loss_cfg.focal_gamma, loss_cfg.focal_alpha),
        "mse": MaskedMSE,
    }
    return Criterion({name: make[name]() for name in loss_cfg.terms}, loss_cfg.terms, out_channels)
