"""The U-Net of Ronneberger et al. (2015), written out in full so that every layer is visible.

``depth`` down-steps, each halving the resolution and doubling the width (``base_width`` at
full resolution); the decoder mirrors them with transposed convolutions and skip connections.
Convolutions are padded, so the output has the input's size; the input must be a multiple of
``2**depth`` (``segtrain.models.build_model`` wraps the net to pad any size up to that).
"""
from __future__ import annotations

import math
from typing import Literal

import torch
from torch import nn

Norm = Literal["batch", "group"]


def norm_layer(kind: Norm, channels: int) -> nn.Module:
    """BatchNorm, or GroupNorm with up to 32 groups of at least 4 channels.

    GroupNorm does not depend on the batch size (small per-GPU batches of large tiles); the
    group count is a divisor of ``channels`` by construction, for any ``base_width``.
    """
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    groups = math.gcd(channels, min(32, max(1, channels // 4)))
    return nn.GroupNorm(groups, channels)


class DoubleConv(nn.Sequential):
    """(3x3 conv, norm, ReLU) twice; the conv has no bias because the norm that follows has one."""

    def __init__(self, in_channels: int, out_channels: int, norm: Norm):
        super().__init__(
            nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
            norm_layer(norm, out_channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False),
            norm_layer(norm, out_channels),
            nn.ReLU(inplace=True),
        )


class Down(nn.Sequential):
    """Halve the resolution (2x2 max pool), then a double conv to the new width."""

    def __init__(self, in_channels: int, out_channels: int, norm: Norm):
        super().__init__(nn.MaxPool2d(2), DoubleConv(in_channels, out_channels, norm))


class Up(nn.Module):
    """Double the resolution (2x2 transposed conv), concatenate the skip, then a double conv."""

    def __init__(self, in_channels: int, out_channels: int, norm: Norm):
        super().__init__()
        self.up = nn.ConvTranspose2d(in_channels, out_channels, 2, stride=2)
        self.conv = DoubleConv(2 * out_channels, out_channels, norm)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.conv(torch.cat([skip, self.up(x)], dim=1))


class UNet(nn.Module):
    """Logits (N, out_channels, H, W) for inputs (N, in_channels, H, W), H and W multiples of 2**depth."""

    def __init__(self, in_channels: int, out_channels: int, depth: int = 4, base_width: int = 32,
                 norm: Norm = "batch"):
        super().__init__()
        widths = [base_width * 2**level for level in range(depth + 1)]
        self.depth = depth
        self.stem = DoubleConv(in_channels, widths[0], norm)
        self.downs = nn.ModuleList(Down(widths[i], widths[i + 1], norm) for i in range(depth))
        self.ups = nn.ModuleList(Up(widths[i + 1], widths[i], norm) for i in reversed(range(depth)))
        self.head = nn.Conv2d(widths[0], out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = [self.stem(x)]
        for down in self.downs:
            skips.append(down(skips[-1]))
        x = skips.pop()
        for up in self.ups:
            x = up(x, skips.pop())
        return self.head(x)
