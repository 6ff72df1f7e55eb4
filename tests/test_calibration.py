"""Threshold calibration: exact counts from probability histograms, the IoU-best threshold, storage."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from segtrain.calibration import (BINS, ProbabilityHistogram, best_threshold, calibrate, scores_at, shrunk, store,
                                  stored_threshold)
from segtrain.metrics import ConfusionCounts, scores_from_counts


def _hist(prob, truth, valid=None) -> ProbabilityHistogram:
    prob = torch.as_tensor(np.asarray(prob, dtype=np.float32))
    truth = torch.as_tensor(np.asarray(truth, dtype=np.float32))
    valid = torch.ones_like(prob, dtype=torch.bool) if valid is None else torch.as_tensor(np.asarray(valid))
    hist = ProbabilityHistogram()
    hist.update(prob, truth, valid)
    return hist


def test_histogram_counts_equal_thresholded_counts_at_every_candidate():
    """Probabilities on and next to bin edges included: p > t exactly as the metrics decide it."""
    rng = np.random.default_rng(0)
    edges = np.arange(1, BINS, dtype=np.float64) / BINS
    prob = np.concatenate([rng.uniform(size=5000), edges[::7], np.nextafter(edges[::11].astype(np.float32), 1),
                           [0.0, 1.0]]).astype(np.float32)
    truth = rng.uniform(size=prob.size) < 0.3
    valid = rng.uniform(size=prob.size) < 0.9
    hist = _hist(prob, truth, valid)
    for k in (1, 2, 137, 499, 500, 501, 998, 999):
        counts = ConfusionCounts()
        counts.update(torch.from_numpy(prob), torch.from_numpy(truth.astype(np.float32)), torch.from_numpy(valid),
                      threshold=k / BINS)
        assert hist.counts_at(k) == counts.counts()


def test_the_threshold_that_maximizes_iou_is_found():
    """Positives score 0.3-0.4, negatives below 0.3 or (a few) at 0.9: only a threshold in
    [0.29, 0.3) separates them, and 0.5 misses every positive."""
    prob = [0.31, 0.35, 0.39, 0.4, 0.05, 0.1, 0.2, 0.29, 0.9]
    truth = [1, 1, 1, 1, 0, 0, 0, 0, 0]
    threshold, counts = best_threshold(_hist(prob, truth))
    assert 0.29 <= threshold < 0.31
    assert counts == (4, 1, 0, 4)  # the 0.9 negative stays a false positive at any threshold below 0.9
    assert scores_from_counts(*counts)["iou"] == pytest.approx(0.8)
    assert scores_at(_hist(prob, truth), 0.5)["iou"] == pytest.approx(0.0)


def test_a_flat_optimum_keeps_the_threshold_nearest_the_default():
    """Perfectly separated classes: every threshold in [0.2, 0.8) is best; 0.5 stays."""
    threshold, counts = best_threshold(_hist([0.1, 0.2, 0.8, 0.9], [0, 0, 1, 1]))
    assert threshold == 0.5 and counts == (2, 0, 0, 2)


def test_no_positive_pixel_means_no_calibration():
    assert calibrate(_hist([0.1, 0.7], [0, 0]), step=3, source="test", scenes=3) is None


def test_calibration_reports_the_scores_at_the_default_threshold_too():
    prob = [0.6, 0.7, 0.45, 0.3, 0.2, 0.55]
    truth = [1, 1, 1, 1, 0, 0]
    cal = calibrate(_hist(prob, truth), step=10, source="test", scenes=10**6)  # so many scenes: no shrinkage
    assert cal.iou == pytest.approx(4 / 5) and 0.2 <= cal.threshold < 0.3 and cal.threshold == cal.optimum
    assert cal.iou_at_default == pytest.approx(2 / 5) and cal.default_threshold == 0.5
    assert cal.iou > cal.iou_at_default and cal.valid_pixels == 6


def test_stored_threshold_applies_only_to_the_checkpoint_of_its_step(tmp_path):
    cal = calibrate(_hist([0.31, 0.35, 0.1, 0.2], [1, 1, 0, 0]), step=40, source="test", scenes=3)
    store(tmp_path, "best", cal)
    best, last = tmp_path / "checkpoints" / "best.pt", tmp_path / "checkpoints" / "last.pt"
    assert stored_threshold(best, 40) == cal.threshold
    assert stored_threshold(best, 48) is None  # best.pt has moved on since
    assert stored_threshold(last, 40) is None
    (tmp_path / "calibration.json").write_text("{not json")
    assert stored_threshold(best, 40) is None
    assert json.loads(json.dumps(cal.to_dict()))["step"] == 40


def test_a_threshold_chosen_on_few_val_scenes_is_shrunk_toward_the_default():
    """Positives at 0.85-0.95 and negatives up to 0.8: the val optimum is 0.8, but with 3 scenes
    behind it the threshold used goes only half-way from 0.5 (PRIOR_SCENES = 3), with 30 scenes
    ten elevenths of the way; the IoU reported is the one at the threshold used."""
    prob = [0.85, 0.9, 0.95, 0.3, 0.6, 0.8, 0.7, 0.55]
    truth = [1, 1, 1, 0, 0, 0, 0, 0]
    few = calibrate(_hist(prob, truth), step=1, source="test", scenes=3)
    assert few.optimum == 0.8 and few.iou_at_optimum == 1.0
    assert few.threshold == 0.65 and few.iou == pytest.approx(3 / 5)  # 0.7 and 0.8 still above it
    many = calibrate(_hist(prob, truth), step=1, source="test", scenes=30)
    assert many.threshold == pytest.approx(0.773) and many.iou == pytest.approx(3 / 4)
    assert shrunk(0.2, 1) == 0.425 and shrunk(0.5, 5) == 0.5  # toward the default from below too; no move at it
