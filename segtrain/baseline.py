"""Per-pixel classifiers on the selected bands: the floor a segmentation model has to beat.

On a real Landsat cloud scene, short runs of segtrain's defaults reached test IoU 0.37-0.52
while a small MLP that sees one pixel's six band values at a time reached 0.78-0.84 in ten
seconds (issue 16). Nothing told the user. So every evaluation fits two such models --
logistic regression and an MLP -- on valid pixels sampled from the train split, chooses each
one's threshold on the val split as the model's is chosen (:mod:`segtrain.calibration`), and
scores them on the same valid pixels of the same split, from the same kind of counts. A model
that does not beat them has learnt nothing from the surroundings of a pixel.

Deterministic for a seed; plain torch, seconds on a CPU.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Optional

import numpy as np
import torch
from torch import nn

from segtrain import calibration
from segtrain.calibration import ProbabilityHistogram
from segtrain.config.schema import DataConfig
from segtrain.data.layout import SceneFiles, filelist_path, read_split
from segtrain.data.reader import SceneReader

SAMPLE_PIXELS = 60_000  # training pixels, drawn over the whole train split
HIDDEN = 32  # MLP: two hidden layers of this width
STEPS, BATCH, LR = 400, 1024, 1e-2  # Adam, one-cycle schedule
BLOCK_PIXELS = 1 << 20  # pixels per read when scoring a scene
MODELS = ("logistic", "mlp")


@dataclass
class PixelClassifier:
    """A per-pixel model and the standardization of its inputs (from its training sample)."""
    name: str
    net: nn.Module
    mean: torch.Tensor
    std: torch.Tensor

    @torch.no_grad()
    def __call__(self, pixels: np.ndarray) -> torch.Tensor:
        """Probabilities of (n, bands) raw pixel values."""
        x = (torch.from_numpy(pixels.astype(np.float32)) - self.mean) / self.std
        return torch.sigmoid(self.net(x)[:, 0])


def _valid_pixels(files: SceneFiles, data: DataConfig, bands: Optional[list[int]]) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(pixels (n, bands), truth (n,)) of a scene's valid pixels, in row blocks."""
    with SceneReader(files.scene, files.mask, bands, data.nodata) as reader:
        rows = max(1, BLOCK_PIXELS // reader.width)
        for y in range(0, reader.height, rows):
            image, valid, mask = reader.read(y, 0, min(rows, reader.height - y), reader.width)
            yield image[:, valid].T, mask[valid] > 0


def sample_pixels(data: DataConfig, bands: Optional[list[int]], n: int = SAMPLE_PIXELS,
                  seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """About ``n`` valid pixels of the train split, each kept with the same probability."""
    files = read_split(data.root, "train")
    total = 0
    for f in files:
        with SceneReader(f.scene, None, bands, data.nodata) as reader:
            total += reader.height * reader.width
    keep = min(1.0, n / max(total, 1))
    rng = np.random.default_rng(seed)
    xs, ys = [], []
    for f in files:
        for pixels, truth in _valid_pixels(f, data, bands):
            chosen = rng.uniform(size=len(truth)) < keep
            xs.append(pixels[chosen])
            ys.append(truth[chosen])
    return np.concatenate(xs), np.concatenate(ys)


def fit(name: str, pixels: np.ndarray, truth: np.ndarray, seed: int = 0) -> PixelClassifier:
    """Logistic regression (``logistic``) or a two-hidden-layer MLP (``mlp``), by Adam on BCE."""
    torch.manual_seed(seed)
    x = torch.from_numpy(pixels.astype(np.float32))
    mean, std = x.mean(0), x.std(0).clamp_min(1e-6)
    x = (x - mean) / std
    y = torch.from_numpy(truth.astype(np.float32))
    c = x.shape[1]
    net = nn.Linear(c, 1) if name == "logistic" else nn.Sequential(
        nn.Linear(c, HIDDEN), nn.ReLU(), nn.Linear(HIDDEN, HIDDEN), nn.ReLU(), nn.Linear(HIDDEN, 1))
    optimizer = torch.optim.Adam(net.parameters(), lr=LR)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, LR, total_steps=STEPS)
    generator = torch.Generator().manual_seed(seed)
    batches = iter(())
    for _ in range(STEPS):
        idx = next(batches, None)
        if idx is None:  # a new epoch: a new order of the pixels
            batches = iter(torch.randperm(len(x), generator=generator).split(BATCH))
            idx = next(batches)
        loss = nn.functional.binary_cross_entropy_with_logits(net(x[idx])[:, 0], y[idx])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
    return PixelClassifier(name, net.eval(), mean, std)


def histograms(models: list[PixelClassifier], files: list[SceneFiles], data: DataConfig,
               bands: Optional[list[int]]) -> list[ProbabilityHistogram]:
    """Each model's probabilities of every valid pixel of the scenes, by class; one read of the scenes."""
    hists = [ProbabilityHistogram() for _ in models]
    for f in files:
        for pixels, truth in _valid_pixels(f, data, bands):
            for model, hist in zip(models, hists):
                prob = model(pixels)
                hist.update(prob, torch.from_numpy(truth), torch.ones_like(prob, dtype=torch.bool))
    return hists


def evaluate_baselines(data: DataConfig, bands: Optional[list[int]], split: str, default_threshold: float = 0.5,
                       seed: int = 0) -> dict[str, dict]:
    """Per model: scores on ``split`` at its threshold calibrated on val (``default_threshold``
    without a val split or without positives there), the threshold, and the scores at the default."""
    pixels, truth = sample_pixels(data, bands, seed=seed)
    models = [fit(name, pixels, truth, seed) for name in MODELS]
    val = read_split(data.root, "val") if filelist_path(data.root, "val").is_file() else []
    found = [calibration.calibrate(h, 0, "val", scenes=len(val), default=default_threshold)
             for h in histograms(models, val, data, bands)]
    out = {}
    for model, cal, hist in zip(models, found, histograms(models, read_split(data.root, split), data, bands)):
        threshold = default_threshold if cal is None else cal.threshold
        out[model.name] = {"threshold": threshold, **calibration.scores_at(hist, threshold),
                           "valid_pixels": int(hist.state.sum()),
                           "at_default_threshold": calibration.scores_at(hist, default_threshold)}
    return out


def verdict(model_iou: float, baselines: dict[str, dict]) -> tuple[str, float]:
    """A plain sentence on how the model compares with the best per-pixel classifier, and the IoU margin."""
    name, best = max(baselines.items(), key=lambda item: item[1]["iou"])
    margin = model_iou - best["iou"]
    label = "an MLP" if name == "mlp" else "logistic regression"
    if margin > 0:
        return (f"the model beats the best per-pixel classifier ({label}, IoU {best['iou']:.4f}) "
                f"by {margin:+.4f} IoU"), margin
    return (f"the model does NOT beat a per-pixel classifier: {label} on the band values of single pixels "
            f"reaches IoU {best['iou']:.4f}, the model {model_iou:.4f} ({margin:+.4f}); it has not yet learnt "
            "anything from the surroundings of a pixel (train longer, check the learning rate and normalization)"), margin
