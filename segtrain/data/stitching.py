"""Stitch tile predictions back into a scene: the inverse of :mod:`segtrain.data.tiling`.

Overlapping tiles are blended with a weight that falls off towards each tile's edges, where a
network sees least context; so seams carry almost no weight and the stitched map has no
visible tile grid. Invalid pixels (padding, no-data) add nothing, and pixels no valid tile
covered are reported as not covered.

Memory: two float32 accumulators of the scene's size (weighted sum and weight), 8 bytes per
pixel, 0.96 GB for a 10980 x 10980 scene, plus the float32 result (12 bytes per pixel at the
end). Tiles are added one by one, so nothing else grows with the scene.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np

WINDOWS = ("gaussian", "pyramid")


@lru_cache(maxsize=8)
def blend_window(tile: int, kind: str = "gaussian") -> np.ndarray:
    """(tile, tile) float32 weights, 1 at the centre, falling towards the edges, never 0.

    ``gaussian``: sigma tile/8 (as nnU-Net), ``pyramid``: linear in the distance to the
    nearest edge. Both are products of per-axis profiles that stay positive (3e-4 at a
    gaussian's edge), so a pixel only a tile's corner covers still gets a value, while next to
    a better-placed tile the corner's weight is negligible. (A floor on the 2-D weight would
    break that: near a scene's border both tiles' weights would sit on the floor, equal.)
    """
    centre = (tile - 1) / 2
    d = np.arange(tile) - centre
    if kind == "gaussian":
        line = np.exp(-0.5 * (d / (tile / 8)) ** 2)
        window = np.outer(line, line)
    elif kind == "pyramid":
        line = (centre + 1 - np.abs(d)) / (centre + 1)
        window = np.minimum.outer(line, line)
    else:
        raise ValueError(f"unknown blending window {kind!r}; choose from {', '.join(WINDOWS)}")
    window = (window / window.max()).astype(np.float32)
    window.flags.writeable = False
    return window


class Stitcher:
    """Accumulates (tile, tile) probability tiles placed at (y, x) into an H x W map."""

    def __init__(self, height: int, width: int, tile: int, overlap: int, window: str = "gaussian"):
        if not 0 <= overlap < tile:
            raise ValueError(f"overlap must be in [0, tile), got overlap={overlap} tile={tile}")
        self.height, self.width, self.tile = height, width, tile
        self._window = blend_window(tile, window)
        self._sum = np.zeros((height, width), dtype=np.float32)
        self._weight = np.zeros((height, width), dtype=np.float32)

    def add(self, prob: np.ndarray, y: int, x: int, valid: np.ndarray | None = None) -> None:
        """Add one tile's probabilities; the part past the scene's edge and invalid pixels are ignored."""
        if prob.shape != (self.tile, self.tile):
            raise ValueError(f"expected a ({self.tile}, {self.tile}) tile, got {prob.shape}")
        h, w = min(self.tile, self.height - y), min(self.tile, self.width - x)
        if h <= 0 or w <= 0 or y < 0 or x < 0:
            raise ValueError(f"tile origin ({y}, {x}) is outside the {self.height}x{self.width} scene")
        weight = self._window[:h, :w]
        if valid is not None:
            weight = weight * valid[:h, :w]
        self._sum[y:y + h, x:x + w] += prob[:h, :w] * weight
        self._weight[y:y + h, x:x + w] += weight

    def result(self) -> tuple[np.ndarray, np.ndarray]:
        """(probabilities float32 (H,W), covered bool (H,W)); uncovered pixels are 0 and not covered."""
        covered = self._weight > 0
        probs = np.divide(self._sum, self._weight, out=np.zeros_like(self._sum), where=covered)
        return probs, covered
