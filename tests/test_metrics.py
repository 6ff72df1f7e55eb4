"""Confusion counts and scores: hand-computed values, torchmetrics agreement, split-level pooling."""
from __future__ import annotations

import math

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from hypothesis import given, settings
from hypothesis import strategies as st

from segtrain.metrics import ConfusionCounts, Counts, per_scene_scores, scores_from_counts
from segtrain.train.distributed import DistContext, sum_across_ranks

IGNORE = -1


def random_split(seed: int, batches=4, n=2, h=7, w=9):
    """A list of (prob, target, valid) batches."""
    gen = torch.Generator().manual_seed(seed)
    return [(torch.rand(n, 1, h, w, generator=gen),
             (torch.rand(n, 1, h, w, generator=gen) < 0.3).float(),
             torch.rand(n, 1, h, w, generator=gen) < 0.8) for _ in range(batches)]


def counted(batches, threshold=0.5) -> ConfusionCounts:
    counts = ConfusionCounts()
    for prob, target, valid in batches:
        counts.update(prob, target, valid, threshold)
    return counts


def test_counts_by_hand_skip_invalid_pixels_and_threshold_strictly():
    prob = torch.tensor([0.9, 0.5, 0.2, 0.7, 0.1, 0.8]).reshape(1, 1, 2, 3)
    target = torch.tensor([1, 1, 1, 0, 0, 0.0]).reshape(1, 1, 2, 3)
    valid = torch.tensor([1, 1, 1, 1, 1, 0], dtype=torch.bool).reshape(1, 1, 2, 3)
    counts = ConfusionCounts()
    counts.update(prob, target, valid, threshold=0.5)  # 0.5 itself is not above the threshold
    assert counts.counts() == Counts(tp=1, fp=1, fn=2, tn=1)
    counts = ConfusionCounts()
    counts.update(prob, target, valid, threshold=0.15)
    assert counts.counts() == Counts(tp=3, fp=1, fn=0, tn=1)


def test_scores_by_hand():
    scores = scores_from_counts(tp=6, fp=2, fn=4, tn=88)
    assert scores == pytest.approx({"iou": 6 / 12, "dice": 12 / 18, "precision": 6 / 8, "recall": 6 / 10,
                                    "accuracy": 94 / 100})


def test_empty_truth_predicted_empty_scores_perfectly():
    assert scores_from_counts(tp=0, fp=0, fn=0, tn=50) == {
        "iou": 1.0, "dice": 1.0, "precision": 1.0, "recall": 1.0, "accuracy": 1.0}


def test_an_undefined_ratio_with_errors_elsewhere_scores_zero():
    nothing_predicted = scores_from_counts(tp=0, fp=0, fn=5, tn=50)
    assert nothing_predicted["precision"] == 0.0 and nothing_predicted["iou"] == 0.0
    false_alarm_only = scores_from_counts(tp=0, fp=3, fn=0, tn=50)
    assert false_alarm_only["recall"] == 0.0 and false_alarm_only["dice"] == 0.0


def test_no_valid_pixel_at_all_gives_nan_scores():
    assert all(math.isnan(value) for value in scores_from_counts(0, 0, 0, 0).values())


def test_compute_reports_scores_and_integer_counts():
    result = counted(random_split(0)).compute()
    assert {"iou", "dice", "precision", "recall", "accuracy", "tp", "fp", "fn", "tn"} <= set(result)
    assert all(isinstance(result[key], int) for key in ("tp", "fp", "fn", "tn"))
    assert result["tp"] + result["fp"] + result["fn"] + result["tn"] == int(sum(v.sum() for _, _, v in random_split(0)))


@pytest.mark.parametrize("threshold", [0.3, 0.5, 0.8])
def test_scores_match_torchmetrics_with_ignored_pixels(threshold):
    # imported here: the DDP test's worker processes import this module, and torchmetrics takes seconds
    from torchmetrics.classification import (BinaryAccuracy, BinaryF1Score, BinaryJaccardIndex, BinaryPrecision,
                                             BinaryRecall)
    batches = random_split(1)
    reference = {"iou": BinaryJaccardIndex(threshold, ignore_index=IGNORE),
                 "dice": BinaryF1Score(threshold, ignore_index=IGNORE),
                 "precision": BinaryPrecision(threshold, ignore_index=IGNORE),
                 "recall": BinaryRecall(threshold, ignore_index=IGNORE),
                 "accuracy": BinaryAccuracy(threshold, ignore_index=IGNORE)}
    for prob, target, valid in batches:
        for metric in reference.values():
            metric.update(prob, torch.where(valid, target, IGNORE).long())
    ours = counted(batches, threshold).compute()
    for name, metric in reference.items():
        assert ours[name] == pytest.approx(metric.compute().item(), rel=1e-6), name


def test_batch_by_batch_equals_the_whole_split_at_once_and_not_the_mean_of_batch_scores():
    batches = random_split(2, batches=5)
    whole = [torch.cat([batch[i] for batch in batches]) for i in range(3)]
    by_batch = counted(batches)
    at_once = counted([whole])
    assert by_batch.counts() == at_once.counts()
    mean_of_batches = sum(counted([batch]).compute()["iou"] for batch in batches) / len(batches)
    assert by_batch.compute()["iou"] != pytest.approx(mean_of_batches)  # the thing we must not do


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**16), h=st.integers(1, 6), w=st.integers(1, 6),
       pads=st.tuples(*[st.integers(0, 3)] * 4))
def test_padding_a_tile_with_invalid_pixels_changes_no_count(seed, h, w, pads):
    [(prob, target, valid)] = random_split(seed, batches=1, h=h, w=w)
    left, right, top, bottom = pads
    big = torch.Size([2, 1, h + top + bottom, w + left + right])
    gen = torch.Generator().manual_seed(seed + 1)
    big_prob, big_target = torch.rand(big, generator=gen), (torch.rand(big, generator=gen) < 0.5).float()
    big_valid = torch.zeros(big, dtype=torch.bool)
    inside = (slice(None), slice(None), slice(top, top + h), slice(left, left + w))
    big_prob[inside], big_target[inside], big_valid[inside] = prob, target, valid
    assert counted([(big_prob, big_target, big_valid)]).counts() == counted([(prob, target, valid)]).counts()


def test_merge_adds_counts():
    first, second = random_split(3, batches=2)
    total = counted([first])
    total.merge(counted([second]))
    assert total.counts() == counted([first, second]).counts()


def test_summing_across_ranks_is_a_no_op_without_distributed_training():
    counts = counted(random_split(4))
    before = counts.counts()
    sum_across_ranks(counts.state, DistContext())
    assert counts.counts() == before


def _rank_counts(rank: int, world_size: int, init_file: str, result_file: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size)
    try:
        counts = counted(random_split(10 + rank))  # each rank sees different data
        sum_across_ranks(counts.state, DistContext(rank=rank, world_size=world_size))
        if rank == 0:
            torch.save(counts.state, result_file)
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_counts_summed_across_ranks_are_the_counts_of_all_data(tmp_path):
    result = tmp_path / "counts.pt"
    mp.spawn(_rank_counts, args=(2, str(tmp_path / "init"), str(result)), nprocs=2)
    expected = counted(random_split(10)).state + counted(random_split(11)).state
    assert torch.equal(torch.load(result), expected)


# --- per-scene scores ---------------------------------------------------------------------

SCENES = {
    "half": Counts(tp=5, fp=0, fn=5, tn=90),        # iou 0.5
    "perfect": Counts(tp=4, fp=0, fn=0, tn=96),     # iou 1.0
    "empty_clean": Counts(tp=0, fp=0, fn=0, tn=100),  # no positives, none predicted: 1.0
    "empty_noisy": Counts(tp=0, fp=2, fn=0, tn=98),   # no positives, two false alarms: 0.0
    "no_data": Counts(0, 0, 0, 0),                  # not a single valid pixel
}


def test_per_scene_mean_skips_scenes_without_positives_by_default():
    result = per_scene_scores(SCENES)
    assert result["mean"]["iou"] == pytest.approx((0.5 + 1.0) / 2)
    assert (result["n_scenes"], result["n_empty"]) == (2, 2)
    assert result["scenes"]["empty_noisy"]["iou"] == 0.0  # still reported on its own


def test_per_scene_mean_can_include_scenes_without_positives():
    result = per_scene_scores(SCENES, empty="include")
    assert result["mean"]["iou"] == pytest.approx((0.5 + 1.0 + 1.0 + 0.0) / 4)
    assert result["n_scenes"] == 4


def test_per_scene_mean_is_nan_when_no_scene_is_in_it():
    result = per_scene_scores({"empty": Counts(0, 0, 0, 10), "no_data": Counts(0, 0, 0, 0)})
    assert math.isnan(result["mean"]["iou"]) and result["n_scenes"] == 0


def test_per_scene_scores_accept_the_counts_of_accumulators():
    scenes = {"a": counted(random_split(5)).counts(), "b": counted(random_split(6)).counts()}
    result = per_scene_scores(scenes)
    assert result["scenes"]["a"] == scores_from_counts(*scenes["a"])
