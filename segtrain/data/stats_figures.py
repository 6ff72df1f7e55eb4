"""The figures ``segtrain stats`` writes: what a person should look at before training.

- ``samples.png``: a tile from each of up to eight scenes as a colour composite, the mask
  outlined and tinted, no-data grey: are masks aligned with the scenes, is 0/255 read right?
- ``histograms.png``: each band's distribution of valid values, mean and 1/99 % percentiles:
  saturation, outliers, a no-data value that was not masked.
- ``class_balance.png``: positive, negative and no-data shares, and the positive share per scene.

Figures are drawn on matplotlib ``Figure`` objects (no pyplot state, no display needed) and
written atomically.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

import numpy as np
from matplotlib.figure import Figure

from segtrain.data.layout import SceneFiles
from segtrain.data.reader import SceneReader
from segtrain.data.stats import Stats
from segtrain.fsutil import atomic_open

MAX_SAMPLES = 8
MAX_SCENE_BARS = 40  # above this, per-scene shares are shown as a histogram


def write_figures(stats: Stats, sample: np.ndarray, scenes: Sequence[SceneFiles], out_dir: Path,
                  rgb: Sequence[int], nodata: Optional[float] = None, tile: int = 256) -> list[Path]:
    """Write the three figures into ``out_dir``; return their paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    figures = {
        "samples.png": _samples(stats, scenes, rgb, nodata, tile),
        "histograms.png": _histograms(stats, sample),
        "class_balance.png": _class_balance(stats),
    }
    for name, fig in figures.items():
        with atomic_open(out_dir / name, "wb") as f:
            fig.savefig(f, format="png", dpi=100)
    return [out_dir / name for name in figures]


def _samples(stats: Stats, scenes: Sequence[SceneFiles], rgb: Sequence[int], nodata: Optional[float], tile: int) -> Figure:
    picked = [scenes[int(i)] for i in np.unique(np.linspace(0, len(scenes) - 1, min(MAX_SAMPLES, len(scenes))).round())]
    cols = min(4, len(picked))
    rows = -(-len(picked) // cols)
    fig = Figure(figsize=(3.2 * cols, 3.4 * rows), layout="constrained")
    low = np.array(stats.percentiles["2"])[list(rgb)]
    high = np.array(stats.percentiles["98"])[list(rgb)]
    for k, files in enumerate(picked):
        ax = fig.add_subplot(rows, cols, k + 1)
        with SceneReader(files.scene, files.mask, list(rgb), nodata) as reader:
            h, w = min(tile, reader.height), min(tile, reader.width)
            image, valid, mask = reader.read((reader.height - h) // 2, (reader.width - w) // 2, h, w)
        composite = np.clip((image.transpose(1, 2, 0) - low) / np.maximum(high - low, 1e-12), 0, 1)
        composite[~valid] = 0.5
        ax.imshow(composite, interpolation="nearest")
        ax.imshow(np.ma.masked_where(mask == 0, mask), cmap="cool", alpha=0.35, vmin=0, vmax=1, interpolation="nearest")
        if mask.any() and not mask.all():
            ax.contour(mask, levels=[0.5], colors="cyan", linewidths=0.8)
        share = mask[valid].mean() if valid.any() else 0.0
        ax.set_title(f"{files.name}\n{100 * share:.1f} % positive", fontsize=8, parse_math=False)
        ax.set_axis_off()
    fig.suptitle(f"centre tiles: bands {list(rgb)} as RGB (2-98 % stretch), mask tinted, no-data grey", fontsize=9)
    return fig


def _histograms(stats: Stats, sample: np.ndarray) -> Figure:
    bands = sample.shape[0]
    cols = min(4, bands)
    rows = -(-bands // cols)
    fig = Figure(figsize=(3.6 * cols, 2.6 * rows), layout="constrained")
    for b in range(bands):
        ax = fig.add_subplot(rows, cols, b + 1)
        ax.hist(sample[b], bins=100, color="0.35")
        for q, style in (("1", ":"), ("99", ":")):
            ax.axvline(stats.percentiles[q][b], color="tab:red", linestyle=style, linewidth=1)
        ax.axvline(stats.mean[b], color="tab:blue", linewidth=1)
        ax.set_title(f"band {b}: mean {stats.mean[b]:.4g}, std {stats.std[b]:.4g}", fontsize=8)
        ax.tick_params(labelsize=7)
    fig.suptitle("valid pixel values per band (blue: mean, red: 1 % and 99 %)", fontsize=9)
    return fig


def _class_balance(stats: Stats) -> Figure:
    fig = Figure(figsize=(11, 3.8), layout="constrained")
    ax = fig.add_subplot(1, 2, 1)
    valid = 1 - stats.nodata_fraction
    shares = {"positive": stats.pos_fraction * valid, "negative": (1 - stats.pos_fraction) * valid,
              "no-data": stats.nodata_fraction}
    ax.bar(list(shares), [100 * v for v in shares.values()], color=["tab:cyan", "0.6", "0.85"])
    for i, v in enumerate(shares.values()):
        ax.text(i, 100 * v, f"{100 * v:.1f} %", ha="center", va="bottom", fontsize=8)
    ax.set_ylabel("% of all pixels")
    ax.set_title(f"{stats.split}: positives are {100 * stats.pos_fraction:.1f} % of valid pixels "
                 f"(pos_weight {stats.pos_weight:.2f})", fontsize=9)
    ax = fig.add_subplot(1, 2, 2)
    per_scene = [100 * s["pos_fraction"] for s in stats.scenes]
    if len(per_scene) <= MAX_SCENE_BARS:
        order = np.argsort(per_scene)
        ax.barh([stats.scenes[i]["name"] for i in order], [per_scene[i] for i in order], color="tab:cyan")
        ax.set_xlabel("% positive of valid pixels")
        ax.tick_params(axis="y", labelsize=6)
    else:
        ax.hist(per_scene, bins=30, color="tab:cyan")
        ax.set_xlabel("% positive of valid pixels")
        ax.set_ylabel("scenes")
    ax.set_title("positive share per scene", fontsize=9)
    return fig
