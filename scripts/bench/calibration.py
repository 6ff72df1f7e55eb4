#!/usr/bin/env python3
"""Which rule for the decision threshold, chosen on a few validation scenes, holds on the test scenes?

For each run: the probabilities of every val and test scene, predicted whole as ``segtrain
eval`` predicts them, histogrammed per scene and class (:class:`segtrain.calibration.
ProbabilityHistogram`); then, for each rule, the threshold it picks from the val histograms and
the test IoU at that threshold, beside the test IoU at 0.5 measured in the same run. Rules:

- ``0.5``: no calibration;
- ``pooled``: the threshold that maximizes IoU over all val pixels (segtrain before issue 16's
  remedy: overfits a val split of a few scenes);
- ``shrunk``: ``pooled`` moved toward 0.5 by PRIOR_SCENES / (val scenes + PRIOR_SCENES) of the
  way (:func:`segtrain.calibration.shrunk`, segtrain's rule since; half-way with 3 val scenes);
- ``quarter``: a quarter of the way from 0.5 to ``pooled`` (a stronger shrinkage);
- ``scene-cv``: ``pooled``, kept only when choosing it on all val scenes but one beats 0.5 on
  the one left out (summed over the scenes), else 0.5;
- ``bootstrap``: the median of ``pooled`` over 200 resamples of the val scenes;
- ``test-oracle``: the best threshold for the test scenes themselves (the ceiling).

    .venv/bin/python scripts/bench/calibration.py RUN [RUN ...] [--checkpoint best] [--test-data ROOT]

The per-scene histograms are kept in ``RUN/eval/scene_histograms[-ROOT].npz`` and reused.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Optional

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from segtrain import calibration  # noqa: E402
from segtrain.calibration import BINS, ProbabilityHistogram  # noqa: E402
from segtrain.evaluate import score_scenes  # noqa: E402
from segtrain.metrics import scores_from_counts  # noqa: E402
from segtrain.predict import TorchBackend  # noqa: E402
from segtrain.preflight import check_dataset  # noqa: E402
from segtrain.run.directory import locate_data  # noqa: E402

SPLITS = ("val", "test")


def scene_histograms(run: Path, checkpoint: str, test_data: Optional[Path]) -> dict[str, np.ndarray]:
    """Per split, (scenes, 2, BINS) int64 histograms of whole-scene probabilities; the test
    scenes from ``test_data`` when given (a larger held-out set of the same kind)."""
    cache = run / "eval" / f"scene_histograms{'-' + test_data.name if test_data else ''}.npz"
    if cache.is_file():
        return dict(np.load(cache))
    backend = TorchBackend(run, checkpoint, "cpu")
    cfg = backend.trained.config
    cfg.data.root = locate_data(run, cfg.data.root, None)
    splits = {"val": check_dataset(cfg).splits["val"]}
    cfg.data.root = str(test_data or cfg.data.root)
    splits["test"] = check_dataset(cfg).splits["test"]
    out = {}
    for split in SPLITS:
        hists = []
        for files in splits[split]:
            hist = ProbabilityHistogram()
            score_scenes(backend, [files], backend.meta.tile_size, backend.meta.overlap, 16, 0.5, progress=False,
                         hist=hist)
            hists.append(hist.state.numpy())
        out[split] = np.stack(hists)
    cache.parent.mkdir(exist_ok=True)
    np.savez(cache, **out)
    return out


def as_hist(state: np.ndarray) -> ProbabilityHistogram:
    hist = ProbabilityHistogram()
    hist.state = torch.from_numpy(np.ascontiguousarray(state))
    return hist


def pooled(val: np.ndarray) -> float:
    found = calibration.best_threshold(as_hist(val.sum(axis=0)))
    return 0.5 if found is None else found[0]


def bootstrap(val: np.ndarray, rounds: int = 200) -> float:
    rng = np.random.default_rng(0)
    picks = [pooled(val[rng.integers(0, len(val), len(val))]) for _ in range(rounds)]
    return float(np.median(picks))


def held_out_gain(val: np.ndarray) -> float:
    """IoU over the val scenes, each at the threshold chosen on the others, minus IoU at 0.5."""
    chosen, base = np.zeros(4), np.zeros(4)
    for s in range(len(val)):
        others = np.delete(val, s, axis=0)
        scene = as_hist(val[s])
        chosen += scene.counts_at(round(pooled(others) * BINS))
        base += scene.counts_at(BINS // 2)
    return scores_from_counts(*chosen)["iou"] - scores_from_counts(*base)["iou"]


RULES = {
    "0.5": lambda val: 0.5,
    "pooled": pooled,
    "shrunk": lambda val: calibration.shrunk(pooled(val), len(val)),
    "quarter": lambda val: 0.5 + (pooled(val) - 0.5) / 4,
    "scene-cv": lambda val: pooled(val) if held_out_gain(val) > 0 else 0.5,
    "bootstrap": bootstrap,
}


def test_iou(test: np.ndarray, threshold: float) -> float:
    return calibration.scores_at(as_hist(test.sum(axis=0)), round(threshold * BINS) / BINS)["iou"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--checkpoint", default="best")
    parser.add_argument("--test-data", type=Path, help="take the test scenes from this data root (same kind)")
    args = parser.parse_args()
    names = [*RULES, "test-oracle"]
    print(f"{'run':<24}" + "".join(f"{n:>18}" for n in names))
    gains = {n: [] for n in names}
    for run in args.runs:
        h = scene_histograms(run, args.checkpoint, args.test_data)
        cells = []
        base = test_iou(h["test"], 0.5)
        for name in names:
            t = pooled(h["test"]) if name == "test-oracle" else RULES[name](h["val"])
            iou = test_iou(h["test"], t)
            gains[name].append(iou - base)
            cells.append(f"{iou:.4f} (t {t:.3f})")
        print(f"{run.name:<24}" + "".join(f"{c:>18}" for c in cells))
    print(f"{'mean gain over 0.5':<24}" + "".join(f"{np.mean(gains[n]):>+18.4f}" for n in names))
    print(f"{'runs worse than 0.5':<24}" + "".join(f"{sum(g < 0 for g in gains[n]):>18d}" for n in names))


if __name__ == "__main__":
    main()
