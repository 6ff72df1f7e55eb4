"""Seeded augmentations, applied identically to a tile's image, mask and validity mask.

An :class:`Augmentation` is drawn from a generator the data set seeds with (seed, epoch,
item), never from global state, so a tile looks the same whatever the number of DataLoader
workers and after a resume. Geometry (flips, quarter turns) moves the three arrays together;
brightness is a gain on the image's raw values only (applied before normalization); band
dropout sets whole input bands of a tile to 0 after normalization (the band's mean), so the
model cannot lean on one band alone.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from segtrain.config.schema import AugmentConfig
from segtrain.data.item_random import ItemRandom


@dataclass(frozen=True)
class Augmentation:
    """One draw: quarter turns, flips, a brightness factor and the input bands dropped."""
    rot90: int = 0
    hflip: bool = False
    vflip: bool = False
    brightness: float = 1.0
    dropped: tuple[bool, ...] = ()  # per selected band; empty without band dropout


def draw_augmentation(rng: np.random.Generator | ItemRandom, cfg: AugmentConfig, bands: int) -> Augmentation:
    """Draw one augmentation; always consumes the same four values, whatever is enabled, and
    then, with ``band_dropout``, one per band (so tiles without it are drawn as before). A
    draw that would drop every band drops none."""
    k, h, v, b = int(rng.integers(4)), rng.random() < 0.5, rng.random() < 0.5, rng.uniform(-1.0, 1.0)
    dropped: tuple[bool, ...] = ()
    if cfg.band_dropout > 0:
        draw = tuple(rng.random() < cfg.band_dropout for _ in range(bands))
        dropped = draw if not all(draw) else (False,) * bands
    return Augmentation(rot90=k if cfg.rot90 else 0, hflip=bool(h and cfg.hflip), vflip=bool(v and cfg.vflip),
                        brightness=float(1.0 + b * cfg.brightness), dropped=dropped)


def apply_augmentation(aug: Augmentation, image: np.ndarray, mask: np.ndarray,
                       valid: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Flip and turn (C,T,T) image, (T,T) mask and (T,T) validity alike, as views (no copy).

    Brightness is left to the caller: the data set folds ``aug.brightness`` into its
    normalization, so the pixels are converted, moved and scaled in a single pass.
    """
    out = []
    for a in (image, mask, valid):
        if aug.hflip:
            a = a[..., ::-1]
        if aug.vflip:
            a = a[..., ::-1, :]
        out.append(np.rot90(a, aug.rot90, axes=(-2, -1)))
    image, mask, valid = out
    return image, mask, valid
