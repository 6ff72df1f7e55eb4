"""Figures a person looks at first: training curves and sample predictions, as PNG files."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

from segtrain.fsutil import atomic_open


def _pyplot() -> Any:
    """pyplot with the headless backend, imported on first use: importing it costs every
    trainer's start-up seconds on a loaded node, and the first figure is drawn an epoch later."""
    import matplotlib

    matplotlib.use("Agg")
    matplotlib.rcParams["text.parse_math"] = False  # titles hold scene and run names: a "$" there is text, not TeX
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig: Any, path: Path) -> None:
    with atomic_open(path, "wb") as f:
        fig.savefig(f, format="png", dpi=90, bbox_inches="tight")
    _pyplot().close(fig)


def plot_curves(history: Sequence[dict[str, Any]], path: Path) -> None:
    """Loss (train and val) and validation scores against the global step."""
    train = [r for r in history if r.get("split") == "train"]
    val = [r for r in history if r.get("split") == "val"]
    fig, (ax_loss, ax_score) = _pyplot().subplots(1, 2, figsize=(11, 4))
    if train:
        ax_loss.plot([r["step"] for r in train], [r["loss"] for r in train], label="train loss", alpha=0.8)
    if val:
        steps = [r["step"] for r in val]
        ax_loss.plot(steps, [r["loss"] for r in val], "o-", label="val loss")
        for name in ("iou", "dice", "precision", "recall"):
            ax_score.plot(steps, [r[name] for r in val], "o-", label=name)
    ax_loss.set(xlabel="step", ylabel="loss", yscale="log" if train else "linear")
    ax_score.set(xlabel="step", ylabel="validation score", ylim=(0, 1))
    for ax in (ax_loss, ax_score):
        ax.grid(alpha=0.3)
        ax.legend(loc="best", fontsize=8)
    save_figure(fig, path)


def rgb_composite(image: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """A displayable (H, W, 3) image from normalized bands: first three bands (or one, grey),
    each stretched between its 2nd and 98th percentile over valid pixels; no-data is black."""
    bands = image[:3] if image.shape[0] >= 3 else np.repeat(image[:1], 3, axis=0)
    out = np.zeros(bands.shape[1:] + (3,), dtype=np.float32)
    for i, band in enumerate(bands[::-1] if image.shape[0] >= 3 else bands):  # B,G,R order -> R,G,B
        values = band[valid]
        if values.size:
            lo, hi = np.percentile(values, [2, 98])
            out[..., i] = np.clip((band - lo) / max(hi - lo, 1e-6), 0, 1)
    out[~valid] = 0
    return out


def error_overlay(truth: np.ndarray, pred: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """True positives white, false positives red, false negatives blue, no-data grey."""
    out = np.zeros(truth.shape + (3,), dtype=np.float32)
    out[truth & pred] = (1, 1, 1)
    out[~truth & pred] = (1, 0.2, 0.2)
    out[truth & ~pred] = (0.2, 0.4, 1)
    out[~valid] = (0.35, 0.35, 0.35)
    return out


def plot_samples(samples: Sequence[dict[str, np.ndarray]], path: Path, title: str) -> None:
    """One row per sample: image, ground truth, predicted probability, errors."""
    rows = max(1, len(samples))
    fig, axes = _pyplot().subplots(rows, 4, figsize=(12, 3 * rows), squeeze=False)
    for row, s in zip(axes, samples):
        row[0].imshow(rgb_composite(s["image"], s["valid"]))
        row[1].imshow(s["truth"], cmap="gray", vmin=0, vmax=1)
        row[2].imshow(np.where(s["valid"], s["prob"], np.nan), cmap="magma", vmin=0, vmax=1)
        row[3].imshow(error_overlay(s["truth"] > 0.5, s["pred"], s["valid"]))
    for ax, name in zip(axes[0], ("image", "truth", "probability", "errors (FP red, FN blue)")):
        ax.set_title(name, fontsize=9)
    for ax in axes.ravel():
        ax.set_axis_off()
    fig.suptitle(title)
    save_figure(fig, path)
