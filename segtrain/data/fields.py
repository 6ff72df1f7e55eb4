"""The random fields synthetic scenes are made of (:mod:`segtrain.data.synthetic`, :mod:`segtrain.data.clouds`):
smooth noise, extra bands mixed from four, a swath-like valid footprint."""
from __future__ import annotations

import numpy as np

NODATA = 0


def smooth_noise(rng: np.random.Generator, h: int, w: int, sigma: float) -> np.ndarray:
    """White noise low-passed with a Gaussian of ``sigma`` pixels, scaled to zero mean, unit std."""
    out = blur(rng.normal(size=(h, w)), sigma)
    return (out - out.mean()) / (out.std() + 1e-12)


def blur(x: np.ndarray, sigma: float) -> np.ndarray:
    """``x`` low-passed with a Gaussian of ``sigma`` pixels (in Fourier space: the edges wrap around)."""
    h, w = x.shape
    fy, fx = np.fft.fftfreq(h)[:, None], np.fft.rfftfreq(w)[None, :]
    kernel = np.exp(-2 * (np.pi * sigma) ** 2 * (fy ** 2 + fx ** 2))
    return np.fft.irfft2(np.fft.rfft2(x) * kernel, s=(h, w))


def more_bands(rng: np.random.Generator, refl: np.ndarray, bands: int) -> np.ndarray:
    """Fewer bands: the first ones; more: noisy mixtures of the four, like extra spectral bands."""
    if bands <= refl.shape[0]:
        return refl[:bands]
    mix = rng.dirichlet(np.ones(refl.shape[0]), size=bands - refl.shape[0])
    return np.concatenate([refl, np.einsum("kb,bhw->khw", mix, refl)])


def footprint(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """The valid area: the whole scene, or a rotated rectangle like an orbit's swath edge."""
    if rng.uniform() < 0.35:
        return np.ones((h, w), dtype=bool)
    angle = np.deg2rad(rng.uniform(8, 22) * rng.choice([-1, 1]))
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    cy, cx = h / 2 + rng.uniform(-0.15, 0.15) * h, w / 2 + rng.uniform(-0.15, 0.15) * w
    u = (xx - cx) * np.cos(angle) + (yy - cy) * np.sin(angle)
    v = -(xx - cx) * np.sin(angle) + (yy - cy) * np.cos(angle)
    return (np.abs(u) < w * rng.uniform(0.4, 0.55)) & (np.abs(v) < h * rng.uniform(0.4, 0.55))
