"""Networks by config, and the one convention for reading their outputs.

Every model returns logits (N, out_channels, H, W) for inputs of any H and W. With one
channel the logit is that of the positive class (sigmoid); with two channels the classes are
(negative, positive) under a softmax. :func:`positive_logit` maps both to the positive class's
log-odds, so losses, metrics and prediction need not know which head a model has.
"""
from __future__ import annotations

import torch
from torch import nn

from segtrain.config.schema import SMP_ARCHS, ModelConfig
from segtrain.errors import UserError
from segtrain.models.padding import PadToMultiple
from segtrain.models.pixel_branch import WithPixelBranch
from segtrain.models.registry import build_smp
from segtrain.models.unet import UNet

MODEL_NAMES: tuple[str, ...] = ("unet", *SMP_ARCHS)


def build_model(model_cfg: ModelConfig, in_channels: int) -> nn.Module:
    """The network for ``model_cfg``, taking ``in_channels`` bands (the number of selected bands).

    An explicit ``model.in_channels`` must agree with the data: a mismatch would only surface
    as a shape error deep inside the first convolution.
    """
    if model_cfg.in_channels is not None and model_cfg.in_channels != in_channels:
        raise UserError(f"model.in_channels: is {model_cfg.in_channels} but the data provide "
                        f"{in_channels} bands (data.bands); set it to null to follow the data")
    if model_cfg.arch == "unet":
        net = UNet(in_channels, model_cfg.out_channels, model_cfg.depth, model_cfg.base_width, model_cfg.norm)
        padded = PadToMultiple(net, 2**model_cfg.depth)
    else:
        padded = build_smp(model_cfg, in_channels)
    if model_cfg.pixel_branch:
        padded.net = WithPixelBranch(padded.net, in_channels, model_cfg.out_channels, model_cfg.pixel_branch)
    return padded


def positive_logit(logits: torch.Tensor) -> torch.Tensor:
    """(N, 1, H, W) log-odds of the positive class: the logit itself, or logit1 - logit0 for two.

    sigmoid(logit1 - logit0) is exactly softmax(...)[:, 1], and working with the difference
    keeps the 2-class losses numerically as stable as the 1-class ones.
    """
    if logits.shape[1] == 1:
        return logits
    if logits.shape[1] == 2:
        return logits[:, 1:2] - logits[:, 0:1]
    raise ValueError(f"expected logits with 1 or 2 channels, got shape {tuple(logits.shape)}")


def positive_probability(logits: torch.Tensor) -> torch.Tensor:
    """(N, 1, H, W) probability of the positive class: sigmoid of 1 logit, softmax[:, 1:2] of 2."""
    return torch.sigmoid(positive_logit(logits))
