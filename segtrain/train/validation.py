"""Validation while training: the loss and confusion counts over the whole validation split (summed
over ranks), the histogram of probabilities that calibrates the threshold, and a few whole tiles
for the sample figures."""
from __future__ import annotations

import numpy as np
import torch

from segtrain import calibration
from segtrain.config import Config
from segtrain.metrics import ConfusionCounts
from segtrain.models import positive_probability
from segtrain.train.distributed import DistContext, sum_across_ranks
from segtrain.train.loaders import TrainingData
from segtrain.train.model_parts import ModelParts

Sample = dict[str, np.ndarray]  # image, truth, valid, prob, pred of one tile


@torch.no_grad()
def validate(parts: ModelParts, data: TrainingData, cfg: Config, ctx: DistContext,
             want_samples: bool) -> tuple[dict[str, float], list[Sample], calibration.ProbabilityHistogram]:
    """Scores (``loss`` and the confusion metrics at ``train.threshold``), rank 0's samples when wanted, and
    the probability histogram; the model is left in training mode."""
    device = parts.device
    loader = data.val_loader  # waits for the tiles to be found; len(data.val_set) is safe after it
    parts.model.eval()
    counts = ConfusionCounts(device=device)
    hist = calibration.ProbabilityHistogram(device=device)
    totals = torch.zeros(2, dtype=torch.float64, device=device)  # valid-pixel-weighted loss, valid pixels
    sample_ids = sample_tiles(data.val_set, cfg.logging.num_samples)
    samples: list[Sample] = []
    seen = 0
    for batch in parts.inputs(loader, data.val_set):
        image, target, valid = batch["image"], batch["mask"], batch["valid"]
        with parts.autocast():
            logits = parts.model(image)
        logits = logits.float()
        loss, _ = parts.criterion(logits, target, valid)
        prob = positive_probability(logits)
        counts.update(prob, target, valid, threshold=cfg.train.threshold)
        hist.update(prob, target, valid)
        n_valid = valid.sum().double()
        totals += torch.stack([loss.double() * n_valid, n_valid])
        if want_samples and ctx.is_main:
            samples += _pick_samples(batch, prob, sample_ids, seen, cfg.train.threshold)
        seen += len(image)
    sum_across_ranks(counts.state, ctx)
    sum_across_ranks(totals, ctx)
    sum_across_ranks(hist.state, ctx)
    parts.model.train()
    scores = counts.compute()
    scores["loss"] = float(totals[0] / totals[1]) if totals[1] > 0 else float("nan")
    return scores, samples, hist


def _pick_samples(batch: dict, prob: torch.Tensor, wanted: set, offset: int, threshold: float) -> list[Sample]:
    out = []
    for i in range(len(prob)):
        if offset + i in wanted:
            valid = batch["valid"][i, 0].cpu().numpy()
            p = prob[i, 0].cpu().numpy()
            out.append({"image": batch["image"][i].cpu().numpy(), "truth": batch["mask"][i, 0].cpu().numpy(), "valid": valid,
                        "prob": p, "pred": (p >= threshold) & valid})
    return out


def sample_tiles(val_set, n: int) -> set[int]:
    """``n`` validation tiles spread evenly over the split for the sample figures: whole tiles,
    not the padded ones at scene borders (the last grid tile is always a padded corner), unless
    there are too few whole ones."""
    t = val_set.tile
    whole = [i for i, w in enumerate(val_set.grid)
             if w.y + t <= val_set.infos[w.scene].height and w.x + t <= val_set.infos[w.scene].width]
    pool = whole if len(whole) >= n else list(range(len(val_set)))
    return {pool[j] for j in np.linspace(0, len(pool) - 1, min(n, len(pool)), dtype=int)}
