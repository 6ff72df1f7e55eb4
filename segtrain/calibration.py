"""The decision threshold that maximizes IoU on validation probabilities, and where a run keeps it.

A model trained with class weights (``loss.pos_weight``) or on imbalanced data is rarely best
at probability 0.5: on a Landsat cloud scene ``pos_weight: auto`` cost 0.07-0.09 IoU at 0.5
(issue 16). The fix costs one pass over the validation split: a histogram of the predicted
probabilities of the positive and of the negative valid pixels. A pixel is predicted positive
when its probability is above the threshold (:mod:`segtrain.metrics`), so for every candidate
threshold ``k / BINS`` the confusion counts are sums of histogram bins; they are exact, not
approximations, because each bin holds the probabilities in ``(t_k, t_{k+1}]`` compared in the
probabilities' own float32, as the metrics compare them. IoU and F1 (Dice) are monotone in each
other (IoU = F1 / (2 - F1)), so one threshold maximizes both.

A few validation scenes make a noisy choice (the best threshold of single clouds demo scenes
ranged from 0.30 to 0.89), so the optimum is shrunk toward the default by the number of
validation scenes behind it (:func:`shrunk`); both are reported.

The chosen threshold is stored per checkpoint in ``<run>/calibration.json`` with the step it
was measured at; eval, predict and export use it for a checkpoint of that step, unless a
threshold is given explicitly.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional

import torch
from torch import Tensor

from segtrain.errors import UserError
from segtrain.fsutil import atomic_write_json
from segtrain.metrics import Counts, scores_from_counts

BINS = 1000  # candidate thresholds k / BINS, k = 1 .. BINS - 1
PRIOR_SCENES = 3  # the calibrated threshold is shrunk toward the default as if this many scenes voted for it
FILE = "calibration.json"


def candidate_thresholds() -> Tensor:
    """The thresholds ``k / BINS`` as float32 (k = 1 .. BINS - 1): the bin edges."""
    return torch.arange(1, BINS, dtype=torch.float64).div(BINS).float()


class ProbabilityHistogram:
    """Per class (negative, positive), how many valid pixels fall into each probability bin.

    Bin ``k`` holds the probabilities ``p`` with ``t_k < p <= t_{k+1}`` (bin 0: ``p <= t_1``), so
    ``p > t_k`` exactly when its bin is ``>= k``. Kept on the device like the confusion counts.
    """

    def __init__(self, device: torch.device | str | None = None):
        self.state = torch.zeros(2, BINS, dtype=torch.int64, device=device)
        self._edges = candidate_thresholds().to(device)

    def update(self, prob: Tensor, target: Tensor, valid: Tensor) -> None:
        """Add a batch: ``prob`` probabilities, ``target`` 0/1 and ``valid`` of the same shape."""
        valid = valid.bool()
        p = prob.float()[valid]
        truth = (target > 0.5)[valid].long()
        bins = torch.bucketize(p, self._edges.to(p.device), right=False)
        self.state += torch.bincount(truth * BINS + bins, minlength=2 * BINS).view(2, BINS).to(self.state.device)

    def add_numpy(self, prob, truth, valid) -> None:
        """The same for numpy arrays (whole-scene strips in eval)."""
        self.update(torch.from_numpy(prob), torch.from_numpy(truth), torch.from_numpy(valid))

    def counts_at(self, k: int) -> Counts:
        """Exact confusion counts at threshold ``k / BINS`` (k = 1 .. BINS - 1)."""
        neg, pos = (row.tolist() for row in self.state)
        tp, fp = sum(pos[k:]), sum(neg[k:])
        return Counts(tp, fp, sum(pos) - tp, sum(neg) - fp)


@dataclass
class Calibration:
    """The threshold chosen on validation probabilities and the scores at it and at 0.5."""
    threshold: float  # the one used: ``optimum`` shrunk toward the default (:func:`shrunk`)
    step: int  # the checkpoint's global step the probabilities came from
    source: str  # what was predicted: "val tiles (training)" or "val scenes (eval)"
    iou: float  # on the validation pixels, at ``threshold``
    dice: float
    iou_at_default: float  # at the config's threshold (train.threshold, 0.5 by default)
    default_threshold: float
    valid_pixels: int
    optimum: float  # the threshold that maximizes IoU on the validation pixels
    iou_at_optimum: float
    scenes: int  # validation scenes the probabilities came from

    def to_dict(self) -> dict:
        return asdict(self)


def best_threshold(hist: ProbabilityHistogram, default: float = 0.5) -> Optional[tuple[float, Counts]]:
    """The candidate threshold with the highest IoU and its counts; None when the histogram has no
    positive pixel (any threshold above every probability would be 'perfect': nothing to learn).

    Ties go to the candidate nearest ``default``, so a flat optimum does not move the threshold
    to an extreme that the validation pixels happen not to contradict.
    """
    neg, pos = hist.state.double().cpu()
    if pos.sum() == 0:
        return None
    tp = pos.flip(0).cumsum(0).flip(0)[1:]  # positives with bin >= k, k = 1 .. BINS - 1
    fp = neg.flip(0).cumsum(0).flip(0)[1:]
    fn = pos.sum() - tp
    iou = tp / (tp + fp + fn)
    thresholds = candidate_thresholds().double()
    best = iou.max()
    ties = torch.nonzero(iou == best).flatten()
    k = int(ties[torch.argmin((thresholds[ties] - default).abs())]) + 1
    return k / BINS, hist.counts_at(k)


def shrunk(optimum: float, scenes: int, default: float = 0.5) -> float:
    """The threshold to use: ``optimum`` moved toward ``default`` by ``PRIOR_SCENES / (scenes +
    PRIOR_SCENES)`` of the way, on the candidate grid.

    A threshold chosen on a few validation scenes follows those scenes: on clouds demo data the
    best threshold of single scenes ranged from 0.30 to 0.89 (issue 16). Shrinking toward the
    default by the number of scenes behind the choice is the usual empirical-Bayes estimate
    for a mean of few noisy groups; PRIOR_SCENES is the measured compromise (docs/defaults.md): with 3 val scenes the threshold goes half-way, with 30 nine tenths.
    """
    weight = scenes / (scenes + PRIOR_SCENES)
    return round((default + weight * (optimum - default)) * BINS) / BINS


def calibrate(hist: ProbabilityHistogram, step: int, source: str, *, scenes: int,
              default: float = 0.5) -> Optional[Calibration]:
    """The :class:`Calibration` of a validation histogram of ``scenes`` scenes, or None without positive pixels."""
    found = best_threshold(hist, default)
    if found is None:
        return None
    optimum, counts = found
    threshold = min(max(shrunk(optimum, scenes, default), 1 / BINS), 1 - 1 / BINS)
    scores = scores_at(hist, threshold)
    at_default = scores_at(hist, default)
    return Calibration(threshold=threshold, step=step, source=source, iou=scores["iou"], dice=scores["dice"],
                       iou_at_default=at_default["iou"], default_threshold=default, valid_pixels=sum(counts),
                       optimum=optimum, iou_at_optimum=scores_from_counts(*counts)["iou"], scenes=scenes)


def _counts_at_threshold(hist: ProbabilityHistogram, threshold: float) -> Counts:
    """Exact counts at a threshold that is a candidate; the nearest candidate above otherwise."""
    k = int(torch.searchsorted(candidate_thresholds(), torch.tensor([threshold], dtype=torch.float32))[0]) + 1
    return hist.counts_at(min(max(k, 1), BINS - 1))


def scores_at(hist: ProbabilityHistogram, threshold: float) -> dict[str, float]:
    """Scores at ``threshold`` (a candidate ``k / BINS``, e.g. 0.5 or a calibrated one) from the histogram."""
    return scores_from_counts(*_counts_at_threshold(hist, threshold))


def check_threshold(threshold: Optional[float]) -> None:
    """A threshold given on the command line (``--threshold``), or None for the stored one."""
    if threshold is not None and not 0 < threshold < 1:
        raise UserError(f"--threshold: must be between 0 and 1 (exclusive), got {threshold}")


# ---- stored in the run ----------------------------------------------------------------------------
def store(run_dir: str | Path, checkpoint: str, calibration: Calibration) -> None:
    """Record ``calibration`` for ``checkpoint`` ("best" or "last") in ``<run>/calibration.json``."""
    path = Path(run_dir) / FILE
    data = _read(path)
    data[checkpoint] = calibration.to_dict()
    atomic_write_json(path, data)


def stored_entry(checkpoint_path: str | Path, step: int) -> Optional[dict]:
    """The calibration of the checkpoint file ``<run>/checkpoints/<name>.pt`` if it was measured at
    ``step`` (the checkpoint's own step: a checkpoint written later, mid-epoch, has none), else None."""
    path = Path(checkpoint_path)
    entry = _read(path.parents[1] / FILE).get(path.stem)
    if not isinstance(entry, dict) or entry.get("step") != step:
        return None
    threshold = entry.get("threshold")
    return entry if isinstance(threshold, float) and 0 < threshold < 1 else None


def stored_threshold(checkpoint_path: str | Path, step: int) -> Optional[float]:
    """The calibrated threshold of a checkpoint (see :func:`stored_entry`), else None."""
    entry = stored_entry(checkpoint_path, step)
    return None if entry is None else entry["threshold"]


def _read(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}  # none yet, or unreadable: the config's threshold applies
    return data if isinstance(data, dict) else {}
