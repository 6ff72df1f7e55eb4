"""Speckled demo scenes: labels made per pixel by a spectral rule, as QA bands and Fmask make them.

Real masks often come from a per-pixel test, not from a person drawing outlines: a QA band's
cloud bits, Fmask, an index threshold, rasterized points. Such a mask is speckled: on a
Landsat-8 scene 23 % of the clouds were objects of 1-4 pixels (issue 26), and a model that
smooths in space before it has learnt the per-pixel signal misses them. Here a thin haze of
fine texture lies over smooth land covers; a pixel is positive when a whiteness test on its
own noise-free top-of-atmosphere reflectance passes (Fmask's haze-optimized transform, HOT =
blue - 0.5 red), with noise in the test itself; the image adds sensor noise of its own. The
rule is per pixel, so a per-pixel classifier gets most of it; the land cover under the haze
moves each pixel's test, and only a pixel's surroundings tell which cover that is.
"""
from __future__ import annotations

import numpy as np

from segtrain.data import fields as s
from segtrain.data.clouds import DN_OFFSET, DN_SCALE, PATH_RADIANCE, SURFACES

HAZE = np.array([0.50, 0.49, 0.47, 0.45])  # a thin cloud's flat TOA spectrum
HOT_RED = 0.5  # HOT = blue - HOT_RED * red (Zhang et al. 2002; Fmask's haze test)
RULE_NOISE = 0.006  # reflectance noise of the test itself (the QA algorithm's own measurement)
SENSOR_NOISE = 0.005  # reflectance noise of the image the model sees
HOT_THRESHOLD = 0.168


def make_speckled_scene(rng: np.random.Generator, h: int, w: int, bands: int) -> tuple[np.ndarray, np.ndarray]:
    """One scene (bands, h, w) uint16 of TOA-like digital numbers and its 0/1 mask (h, w) of the rule."""
    fields = np.stack([s.smooth_noise(rng, h, w, sigma=rng.uniform(8, 20)) for _ in SURFACES])
    surface = SURFACES[np.argmax(fields, axis=0)].transpose(2, 0, 1)
    surface = surface * (1 + 0.08 * s.smooth_noise(rng, h, w, sigma=3.0))[None]
    # Haze: a smooth veil that comes and goes, broken into pixel-scale speckle.
    veil = s.smooth_noise(rng, h, w, sigma=rng.uniform(10, 25))
    speckle = s.smooth_noise(rng, h, w, sigma=0.6)
    alpha = np.clip(0.12 + 0.05 * veil + 0.09 * speckle - rng.uniform(0.0, 0.04), 0, 1)[None]
    reflectance = surface * (1 - alpha) + HAZE[:, None, None] * alpha
    reflectance = reflectance + PATH_RADIANCE[:, None, None] * rng.uniform(0.8, 1.2)
    hot = reflectance[0] - HOT_RED * reflectance[2] + rng.normal(0, RULE_NOISE, (h, w))
    mask = hot > HOT_THRESHOLD
    reflectance = s.more_bands(rng, reflectance, bands)
    reflectance = reflectance + rng.normal(0, SENSOR_NOISE, reflectance.shape)
    image = np.clip((reflectance - DN_OFFSET) / DN_SCALE, 1, 65535).astype(np.uint16)
    valid = s.footprint(rng, h, w)
    image[:, ~valid] = s.NODATA
    return image, (mask & valid).astype(np.uint8)


def component_sizes(mask: np.ndarray) -> np.ndarray:
    """The size in pixels of each 8-connected object of a 0/1 mask, one entry per positive pixel
    (so ``(sizes <= 4).mean()`` is the share of positives in objects of 1-4 pixels)."""
    h, w = mask.shape
    positive = mask.astype(bool)
    label = np.where(positive, np.arange(h * w).reshape(h, w), h * w)
    padded = np.full((h + 2, w + 2), h * w)
    while True:  # every positive pixel takes the smallest label among itself and its neighbours
        padded[1:-1, 1:-1] = label
        neighbours = np.min([padded[1 + dy:h + 1 + dy, 1 + dx:w + 1 + dx]
                             for dy in (-1, 0, 1) for dx in (-1, 0, 1)], axis=0)
        new = np.where(positive, neighbours, h * w)
        if (new == label).all():
            break
        label = new
    counts = np.bincount(label[positive])
    return counts[label[positive]]
