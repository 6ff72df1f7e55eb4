"""How raw band values become network input: the one definition, used by training, eval,
predict and the exported ONNX graph alike.

``data.normalize: stats`` standardizes each band with the mean and standard deviation of the
train split. Real top-of-atmosphere reflectances are heavy-tailed: glints, saturated pixels and
bright clouds stretch the standard deviation so that the bulk of a band's values lands in a
narrow range of inputs. ``data.normalize: robust`` first clips each band at its ROBUST_CLIP
percentiles, then log-scales the bands whose clipped values are still strongly right-skewed
(skewness above LOG_SKEWNESS), then standardizes with the mean and standard deviation of what
that gives. Clip bounds, the log choice and the final mean and standard deviation are
statistics of the data set (:func:`robust_statistics`), computed once with the others and
remembered with them (:mod:`segtrain.data.memo`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch

from segtrain.errors import UserError

ROBUST_CLIP = (0.1, 99.9)  # percentiles: only the extreme tails (glints, saturation) are clipped
LOG_SKEWNESS = 1.5  # a band whose clipped values are more skewed than this is log-scaled


@dataclass(frozen=True)
class Normalization:
    """Per selected band, float32: ``tails(x) * scale - shift``, where ``tails`` clips to
    [low, high] and takes ``log1p((x - low) * inv_spread)`` of the ``log`` bands (robust), or is
    the identity (``low`` is None: mean/std standardization)."""
    scale: np.ndarray
    shift: np.ndarray
    low: Optional[np.ndarray] = None
    high: Optional[np.ndarray] = None
    inv_spread: Optional[np.ndarray] = None
    log: Optional[np.ndarray] = None  # bool

    @property
    def robust(self) -> bool:
        return self.low is not None

    def tensors(self, device: torch.device | str | None = None) -> dict[str, torch.Tensor]:
        """The arrays as (C,) tensors on ``device``, keyed by field name (robust fields only when robust)."""
        names = ("scale", "shift", "low", "high", "inv_spread", "log") if self.robust else ("scale", "shift")
        return {name: torch.from_numpy(np.asarray(getattr(self, name))).to(device) for name in names}


def tails(x: torch.Tensor, low: torch.Tensor, high: torch.Tensor, inv_spread: torch.Tensor,
          log: torch.Tensor) -> torch.Tensor:
    """Clip (N, C, H, W) float32 band values to [low, high] and log-scale the ``log`` bands; the
    (C,) parameters broadcast over channels. NaN stays NaN (no-data is handled by the caller)."""
    shape = (1, -1, 1, 1)
    clipped = torch.minimum(torch.maximum(x, low.reshape(shape)), high.reshape(shape))
    logged = torch.log1p((clipped - low.reshape(shape)) * inv_spread.reshape(shape))
    return torch.where(log.reshape(shape), logged, clipped)


def robust_statistics(sample: np.ndarray) -> dict[str, list]:
    """Per band of ``sample`` (bands, n): clip bounds, spread, log choice and the mean and std of
    the transformed values (what ``data.normalize: robust`` needs), as JSON-ready lists."""
    x = sample.astype(np.float64)
    low, median, high = (np.percentile(x, q, axis=1) for q in (ROBUST_CLIP[0], 50, ROBUST_CLIP[1]))
    clipped = np.clip(x, low[:, None], high[:, None])
    spread = np.where(median > low, median - low, np.where(high > low, high - low, 1.0))
    log = _skewness(clipped) > LOG_SKEWNESS
    out = np.where(log[:, None], np.log1p((clipped - low[:, None]) / spread[:, None]), clipped)
    return {"low": low.tolist(), "high": high.tolist(), "spread": spread.tolist(), "log": log.tolist(),
            "mean": out.mean(axis=1).tolist(), "std": out.std(axis=1).tolist()}


def _skewness(x: np.ndarray) -> np.ndarray:
    centred = x - x.mean(axis=1, keepdims=True)
    std = np.sqrt(np.square(centred).mean(axis=1))
    return np.where(std > 0, np.power(centred, 3).mean(axis=1) / np.where(std > 0, std, 1.0) ** 3, 0.0)


def _scale_shift(mean: list[float], std: list[float], bands: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """Per selected band ``(1/std, mean/std)`` as float32, so that ``x * scale - shift`` standardizes;
    a constant band (std 0) is centred, not divided by zero."""
    mean_b = np.asarray(mean, dtype=np.float64)[bands]
    std_b = np.asarray(std, dtype=np.float64)[bands]
    std_b = np.where(std_b > 0, std_b, 1.0)
    return (1 / std_b).astype(np.float32), (mean_b / std_b).astype(np.float32)


def normalization(mode: str, stats: Optional[dict], bands: list[int], source: str = "statistics") -> Optional[Normalization]:
    """The :class:`Normalization` of ``data.normalize`` ``mode`` for the selected ``bands`` from the
    data set's statistics (a :class:`segtrain.data.stats.Stats` as a dict); None for ``none``."""
    if mode == "none":
        return None
    if stats is None:
        raise UserError(f"data.normalize: is '{mode}' but no statistics were given "
                        "(run `segtrain stats DATA` or set data.normalize: none)")
    if mode == "stats":
        return Normalization(*_scale_shift(stats["mean"], stats["std"], bands))
    robust = stats.get("robust") or {}
    if not robust:
        raise UserError(f"data.normalize: is 'robust' but {source} has no robust statistics "
                        "(written by an older segtrain: recompute them with `segtrain stats DATA`)")
    low, high, spread = (np.asarray(robust[key], dtype=np.float64)[bands] for key in ("low", "high", "spread"))
    return Normalization(*_scale_shift(robust["mean"], robust["std"], bands), low=low.astype(np.float32),
                         high=high.astype(np.float32), inv_spread=(1 / spread).astype(np.float32),
                         log=np.asarray(robust["log"], dtype=bool)[bands])
