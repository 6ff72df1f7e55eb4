"""Run a network on inputs of any size: pad up to the size it needs, crop its logits back.

Encoders halve the resolution several times, so most networks only accept sizes that are a
multiple of their total stride. Padding inside the model (instead of in the data pipeline)
keeps tiles, scenes and exported ONNX models free of that constraint; the padded border never
reaches the caller because the logits are cropped back to the input size.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def pad_to_multiple(x: torch.Tensor, multiple: int) -> torch.Tensor:
    """Pad (N, C, H, W) at the bottom and right, replicating edge pixels, to multiples of ``multiple``.

    Replicate rather than reflect: it works for any pad width, also one wider than the input.
    """
    h, w = x.shape[-2:]
    return F.pad(x, (0, (-w) % multiple, 0, (-h) % multiple), mode="replicate")


class PadToMultiple(nn.Module):
    """Wraps ``net``: the input is padded to a multiple of ``multiple``, the logits cropped back."""

    def __init__(self, net: nn.Module, multiple: int):
        super().__init__()
        self.net = net
        self.multiple = multiple

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        return self.net(pad_to_multiple(x, self.multiple))[..., :h, :w]
