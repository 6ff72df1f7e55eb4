"""Cloud-like demo scenes: top-of-atmosphere reflectances with heavy tails, clouds as the target.

Made to fail the way real cloud masking fails (a Landsat-8 trial, issue 16): clouds are bright
and white, but so are snow, bare sand and rooftops; thin cloud at the edges and a scene-wide
cirrus veil mix with whatever lies below; clouds cast dark shadows beside themselves; the
edges are fractal and speckled; cover is small (1-15 %). The mask is what a QA band gives: the
optically thick part of the cloud, dilated by a pixel or two as Fmask does, so some clear
pixels next to clouds are positives that only their surroundings reveal. Values are scaled
like Landsat Collection 2 Level-1 digital numbers (reflectance = DN * 2e-5 - 0.1), with the
heavy tails of real scenes: lognormal surface texture, rare glints and saturated pixels.
"""
from __future__ import annotations

import numpy as np

from segtrain.data import fields as s

# TOA reflectance (blue, green, red, nir) of the surfaces under the clouds.
SURFACES = np.array([
    [0.04, 0.08, 0.05, 0.35],  # forest
    [0.07, 0.10, 0.12, 0.28],  # cropland
    [0.07, 0.09, 0.05, 0.02],  # water
    [0.22, 0.26, 0.31, 0.36],  # bare sand / dry soil: bright in the visible
    [0.15, 0.17, 0.19, 0.25],  # built-up
])
SNOW = np.array([0.80, 0.78, 0.72, 0.55])  # as bright and white as a cloud, with smooth edges
CLOUD = np.array([0.55, 0.55, 0.54, 0.52])  # flat spectrum; scaled by the cloud's own brightness
PATH_RADIANCE = np.array([0.08, 0.05, 0.03, 0.01])  # Rayleigh scattering: strongest in blue
DN_SCALE, DN_OFFSET = 2e-5, -0.1  # reflectance = DN * DN_SCALE + DN_OFFSET


def make_cloud_scene(rng: np.random.Generator, h: int, w: int, bands: int) -> tuple[np.ndarray, np.ndarray]:
    """One scene (bands, h, w) uint16 of TOA-like digital numbers and its 0/1 cloud mask (h, w)."""
    fields = np.stack([s.smooth_noise(rng, h, w, sigma=rng.uniform(8, 20)) for _ in SURFACES])
    surface = SURFACES[np.argmax(fields, axis=0)].transpose(2, 0, 1)
    snow = s.smooth_noise(rng, h, w, sigma=rng.uniform(10, 18)) > rng.uniform(1.6, 3.0)
    surface = np.where(snow[None], SNOW[:, None, None], surface)
    surface = surface * np.exp(0.25 * rng.standard_normal((1, h, w)))  # lognormal texture: heavy tails
    glints = rng.uniform(size=(h, w)) < 5e-4
    surface = np.where(glints[None], surface * rng.uniform(3, 8, size=(h, w))[None], surface)

    cover = rng.uniform(0.01, 0.15)
    thickness = fractal_noise(rng, h, w, roughness=rng.uniform(0.55, 0.75))
    thick = np.quantile(thickness, 1 - cover * 0.6)
    opacity = np.clip((thickness - (thick - 0.6)) / 0.9, 0, 1) ** 0.8  # thin, semi-transparent edges
    shadow = _shifted(opacity, int(rng.integers(-25, 26)), int(rng.integers(-25, 26)))
    surface = surface * (1 - 0.65 * shadow)[None]
    cirrus = 0.12 * np.clip(s.smooth_noise(rng, h, w, sigma=40.0) * 0.5 + 0.3, 0, 1) * rng.uniform(0, 1)
    brightness = 0.75 + 0.35 * np.clip(s.smooth_noise(rng, h, w, sigma=6.0), -1.5, 1.5) / 1.5
    alpha = np.clip(opacity + cirrus, 0, 1)[None]
    reflectance = surface * (1 - alpha) + CLOUD[:, None, None] * brightness[None] * alpha
    reflectance = reflectance + PATH_RADIANCE[:, None, None] * rng.uniform(0.6, 1.4)
    reflectance = s.more_bands(rng, reflectance, bands)
    reflectance = reflectance + rng.normal(0, 0.004, reflectance.shape)
    image = np.clip((reflectance - DN_OFFSET) / DN_SCALE, 1, 65535).astype(np.uint16)  # saturates like a sensor
    valid = s.footprint(rng, h, w)
    image[:, ~valid] = s.NODATA
    mask = _dilate(thickness > thick, int(rng.integers(1, 3)))
    return image, (mask & valid).astype(np.uint8)


def fractal_noise(rng: np.random.Generator, h: int, w: int, roughness: float, octaves: int = 6) -> np.ndarray:
    """Sum of smooth noise octaves (scale halving, amplitude times ``roughness``): cloud-like
    fields whose thresholded edges are ragged and shed small specks."""
    out = np.zeros((h, w))
    for octave in range(octaves):
        out += roughness ** octave * s.smooth_noise(rng, h, w, sigma=24.0 / 2 ** octave)
    return out


def _shifted(x: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """``x`` moved by (dy, dx) pixels, zero where nothing moved in (a cloud's shadow)."""
    out = np.zeros_like(x)
    h, w = x.shape
    out[max(dy, 0):h + min(dy, 0), max(dx, 0):w + min(dx, 0)] = x[max(-dy, 0):h - max(dy, 0), max(-dx, 0):w - max(dx, 0)]
    return out


def _dilate(mask: np.ndarray, radius: int) -> np.ndarray:
    """Binary dilation by a (2r+1)-pixel square, as cloud masks are buffered."""
    out = mask.copy()
    for dy in range(-radius, radius + 1):
        for dx in range(-radius, radius + 1):
            out |= _shifted(mask.astype(np.uint8), dy, dx).astype(bool)
    return out
