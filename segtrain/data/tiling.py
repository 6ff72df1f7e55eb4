"""The tile grid over a scene and the padding of border tiles (pure numpy).

Tiles keep one size everywhere, so a scene of any H x W (smaller than a tile, or no multiple
of the stride) is covered by windows that may run past the bottom and right edges. That part
is padding: filled by reflection so the network sees plausible texture instead of a hard
edge, and marked invalid, so it never reaches a loss, a metric or a stitched prediction.
"""
from __future__ import annotations

import math

import numpy as np


def tile_origins(height: int, width: int, tile: int, overlap: int) -> list[tuple[int, int]]:
    """Top-left (y, x) of tile x tile windows with stride ``tile - overlap`` covering H x W.

    Rows of origins start at 0 and stop at the first window that reaches the far edge, so with
    ``overlap=0`` every pixel is covered exactly once.
    """
    if not 0 <= overlap < tile:
        raise ValueError(f"overlap must be in [0, tile), got overlap={overlap} tile={tile}")
    stride = tile - overlap
    ys = axis_origins(height, tile, stride)
    xs = axis_origins(width, tile, stride)
    return [(y, x) for y in ys for x in xs]


def axis_origins(size: int, tile: int, stride: int) -> list[int]:
    """Window starts along one axis: 0, stride, ... until a window ends at or past ``size``."""
    count = 1 + max(0, math.ceil((size - tile) / stride))
    return [i * stride for i in range(count)]


def pad_tile(image: np.ndarray, valid: np.ndarray, tile: int,
             mask: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Pad a window read at the top-left of a tile (C,h,w), (h,w), (h,w) to (C,tile,tile).

    The image is reflected where the window has at least two pixels along an axis (edge value
    otherwise, as reflection needs a neighbour), the validity is padded with False and the
    mask with 0. Windows that already have the tile size are returned as they are.
    """
    h, w = valid.shape
    if (h, w) == (tile, tile):
        return image, valid, mask
    pad = ((0, tile - h), (0, tile - w))
    modes = ["reflect" if n > 1 else "edge" for n in (h, w)]
    image = np.pad(image, ((0, 0), (0, tile - h), (0, 0)), mode=modes[0])
    image = np.pad(image, ((0, 0), (0, 0), (0, tile - w)), mode=modes[1])
    valid = np.pad(valid, pad, constant_values=False)
    if mask is not None:
        mask = np.pad(mask, pad, constant_values=0)
    return image, valid, mask


def cut_tile(image: np.ndarray, valid: np.ndarray, y: int, x: int, tile: int) -> tuple[np.ndarray, np.ndarray]:
    """The tile at (y, x) of an in-memory scene (C,H,W), (H,W): (C,tile,tile), (tile,tile) padded."""
    window, window_valid, _ = pad_tile(image[:, y:y + tile, x:x + tile], valid[y:y + tile, x:x + tile], tile)
    return window, window_valid
