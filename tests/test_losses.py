"""Masked losses: hand-computed values, agreement with torch/smp, and what the validity mask may change."""
from __future__ import annotations

import math

import pytest
import segmentation_models_pytorch as smp
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from segtrain.config.schema import LossConfig
from segtrain.errors import UserError
from segtrain.losses import Criterion, MaskedBCE, MaskedDice, MaskedFocal, MaskedMSE, build_criterion

IGNORE = -1  # the ignore_index given to smp's losses for invalid pixels

ALL_TERMS = {
    "bce": lambda: MaskedBCE(pos_weight=2.5, label_smoothing=0.1),
    "dice_per_sample": lambda: MaskedDice("per_sample", smooth=1.0),
    "dice_per_batch": lambda: MaskedDice("per_batch", smooth=1.0),
    "dice_unsmoothed": lambda: MaskedDice("per_sample", smooth=0.0),
    "focal": lambda: MaskedFocal(gamma=2.0, alpha=0.25),
    "mse": MaskedMSE,
}


def grid(rows, dtype=torch.float64):
    """A (1, 1, H, W) tensor from nested lists, for hand-computed examples."""
    return torch.tensor(rows, dtype=dtype).reshape(1, 1, len(rows), len(rows[0]))


def random_batch(seed: int, n=2, channels=1, h=9, w=11, invalid_fraction=0.3, dtype=torch.float64):
    gen = torch.Generator().manual_seed(seed)
    logits = (3 * torch.randn(n, channels, h, w, generator=gen, dtype=dtype)).requires_grad_()
    target = (torch.rand(n, 1, h, w, generator=gen) < 0.4).to(dtype)
    valid = torch.rand(n, 1, h, w, generator=gen) >= invalid_fraction
    return logits, target, valid


def softplus(x: float) -> float:
    return math.log1p(math.exp(x))


# --- hand-computed values ---------------------------------------------------------------

def test_bce_is_the_mean_over_valid_pixels_only():
    logits, target = grid([[0.0, 2.0], [-1.0, 3.0]]), grid([[1, 0], [0, 1]])
    valid = grid([[1, 1], [1, 0]], torch.bool)
    # -log(sigmoid(x)) = softplus(-x); -log(1 - sigmoid(x)) = softplus(x); the 4th pixel is invalid
    expected = (softplus(-0.0) + softplus(2.0) + softplus(-1.0)) / 3
    assert MaskedBCE()(logits, target, valid).item() == pytest.approx(expected, rel=1e-12)


def test_bce_pos_weight_scales_positives_and_smoothing_moves_targets_to_e_and_1_minus_e():
    logits, target, valid = grid([[1.0, 1.0]]), grid([[1, 0]]), grid([[1, 1]], torch.bool)
    e, w = 0.1, 3.0
    positive = w * (1 - e) * softplus(-1.0) + e * softplus(1.0)  # target 1 -> 1 - e
    negative = w * e * softplus(-1.0) + (1 - e) * softplus(1.0)  # target 0 -> e
    loss = MaskedBCE(pos_weight=w, label_smoothing=e)(logits, target, valid)
    assert loss.item() == pytest.approx((positive + negative) / 2, rel=1e-12)


def test_dice_per_sample_averages_tile_scores_and_per_batch_pools_pixels():
    # probabilities 0.5 everywhere (logit 0); tile 1 has 2 positives of 2 valid, tile 2 one of 4
    logits = torch.zeros(2, 1, 2, 2, dtype=torch.float64)
    target = torch.tensor([[1, 1, 0, 0], [1, 0, 0, 0]], dtype=torch.float64).reshape(2, 1, 2, 2)
    valid = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1]], dtype=torch.bool).reshape(2, 1, 2, 2)
    s = 1.0
    tile1 = 1 - (2 * 1.0 + s) / (1.0 + 2 + s)  # sum p*t = 1, sum p = 1, sum t = 2
    tile2 = 1 - (2 * 0.5 + s) / (2.0 + 1 + s)  # sum p*t = 0.5, sum p = 2, sum t = 1
    pooled = 1 - (2 * 1.5 + s) / (3.0 + 3 + s)
    assert MaskedDice("per_sample", s)(logits, target, valid).item() == pytest.approx((tile1 + tile2) / 2)
    assert MaskedDice("per_batch", s)(logits, target, valid).item() == pytest.approx(pooled)


def test_dice_of_an_empty_tile_is_zero_when_nothing_is_predicted_and_grows_with_false_positives():
    target, valid = torch.zeros(1, 1, 4, 4), torch.ones(1, 1, 4, 4, dtype=torch.bool)
    dice = MaskedDice("per_sample", smooth=1.0)
    assert dice(torch.full((1, 1, 4, 4), -30.0), target, valid).item() == pytest.approx(0.0, abs=1e-9)
    some = dice(torch.full((1, 1, 4, 4), -2.0), target, valid).item()
    many = dice(torch.full((1, 1, 4, 4), 2.0), target, valid).item()
    assert 0 < some < many < 1


def test_dice_of_an_all_positive_tile_is_zero_when_all_is_predicted():
    target, valid = torch.ones(1, 1, 4, 4), torch.ones(1, 1, 4, 4, dtype=torch.bool)
    loss = MaskedDice("per_sample", smooth=1.0)(torch.full((1, 1, 4, 4), 30.0), target, valid)
    assert loss.item() == pytest.approx(0.0, abs=1e-6)


def test_unsmoothed_dice_scores_an_empty_truth_and_empty_prediction_as_perfect_with_finite_gradients():
    logits = torch.full((1, 1, 3, 3), -200.0, requires_grad=True)  # sigmoid underflows to exactly 0
    loss = MaskedDice("per_batch", smooth=0.0)(logits, torch.zeros(1, 1, 3, 3), torch.ones(1, 1, 3, 3, dtype=torch.bool))
    loss.backward()
    assert loss.item() == 0.0
    assert torch.isfinite(logits.grad).all()


def test_focal_loss_by_hand():
    logits, target, valid = grid([[2.0, 2.0]]), grid([[1, 0]]), grid([[1, 1]], torch.bool)
    p = 1 / (1 + math.exp(-2.0))
    positive = 0.25 * (1 - p) ** 2 * -math.log(p)
    negative = 0.75 * p**2 * -math.log(1 - p)
    loss = MaskedFocal(gamma=2.0, alpha=0.25)(logits, target, valid)
    assert loss.item() == pytest.approx((positive + negative) / 2, rel=1e-9)


def test_mse_compares_probabilities_with_targets():
    logits, target, valid = grid([[0.0, 0.0, 5.0]]), grid([[1, 0, 1]]), grid([[1, 1, 0]], torch.bool)
    assert MaskedMSE()(logits, target, valid).item() == pytest.approx((0.25 + 0.25) / 2)


# --- agreement with well-known implementations on random data -----------------------------

@pytest.mark.parametrize("seed", range(3))
def test_bce_matches_torch_on_the_valid_pixels(seed):
    logits, target, valid = random_batch(seed)
    ours = MaskedBCE(pos_weight=1.7, label_smoothing=0.05)(logits, target, valid)
    smoothed = target * 0.9 + 0.05
    reference = F.binary_cross_entropy_with_logits(logits[valid], smoothed[valid],
                                                   pos_weight=torch.tensor(1.7, dtype=logits.dtype))
    torch.testing.assert_close(ours, reference)


@pytest.mark.parametrize("seed", range(3))
def test_two_channel_bce_is_the_weighted_smoothed_cross_entropy(seed):
    logits, target, valid = random_batch(seed, channels=2)
    e, w = 0.05, 2.0
    ours = MaskedBCE(pos_weight=w, label_smoothing=e)(logits, target, valid)
    per_pixel = F.cross_entropy(logits, target[:, 0].long(), weight=torch.tensor([1.0, w], dtype=logits.dtype),
                                label_smoothing=2 * e, reduction="none")
    torch.testing.assert_close(ours, per_pixel[valid[:, 0]].mean())


@pytest.mark.parametrize("name", ALL_TERMS)
def test_two_channel_logits_mean_the_same_as_their_difference_in_one_channel(name):
    logits, target, valid = random_batch(5, channels=2)
    term = ALL_TERMS[name]()
    torch.testing.assert_close(term(logits, target, valid), term(logits[:, 1:] - logits[:, :1], target, valid))


@pytest.mark.parametrize("seed", range(3))
def test_per_batch_dice_matches_smp_dice_loss_with_ignored_pixels(seed):
    logits, target, valid = random_batch(seed)
    # smp 0.6 scores (I + s) / ((sum p + sum t) / 2 + s): our smoothing 2s in (2I + s) / (sum p + sum t + s)
    reference = smp.losses.DiceLoss("binary", smooth=0.5, eps=0.0, ignore_index=IGNORE)
    torch.testing.assert_close(MaskedDice("per_batch", 1.0)(logits, target, valid),
                               reference(logits, torch.where(valid, target, IGNORE)))


def test_per_sample_dice_is_the_mean_of_each_tile_scored_alone():
    logits, target, valid = random_batch(3, n=3)
    dice = MaskedDice("per_sample", 1.0)
    alone = [dice(logits[i:i + 1], target[i:i + 1], valid[i:i + 1]) for i in range(3)]
    torch.testing.assert_close(dice(logits, target, valid), torch.stack(alone).mean())


@pytest.mark.parametrize("alpha", [0.25, None])
def test_focal_matches_smp_focal_loss_with_ignored_pixels(alpha):
    logits, target, valid = random_batch(1)
    reference = smp.losses.FocalLoss("binary", alpha=alpha, gamma=2.0, ignore_index=IGNORE)
    torch.testing.assert_close(MaskedFocal(gamma=2.0, alpha=alpha)(logits, target, valid),
                               reference(logits, torch.where(valid, target, IGNORE)))


def test_mse_matches_torch_on_the_valid_pixels():
    logits, target, valid = random_batch(2)
    torch.testing.assert_close(MaskedMSE()(logits, target, valid),
                               F.mse_loss(torch.sigmoid(logits[valid]), target[valid]))


def test_focal_gradients_stay_finite_for_saturated_logits_and_small_gamma():
    logits = torch.tensor([[[[60.0, -60.0, 200.0]]]], requires_grad=True)
    target = torch.tensor([[[[1.0, 0.0, 1.0]]]])
    MaskedFocal(gamma=0.5)(logits, target, torch.ones_like(target, dtype=torch.bool)).backward()
    assert torch.isfinite(logits.grad).all()


# --- what the validity mask may and may not change ----------------------------------------

@pytest.mark.parametrize("name", ALL_TERMS)
@pytest.mark.parametrize("channels", [1, 2])
def test_a_batch_without_valid_pixels_gives_zero_loss_and_zero_gradients(name, channels):
    logits, target, _ = random_batch(0, channels=channels)
    loss = ALL_TERMS[name]()(logits, target, torch.zeros_like(target, dtype=torch.bool))
    loss.backward()
    assert loss.item() == 0.0
    assert torch.equal(logits.grad, torch.zeros_like(logits))


@pytest.mark.parametrize("name", ALL_TERMS)
def test_labels_and_logits_under_invalid_pixels_do_not_matter(name):
    logits, target, valid = random_batch(4)
    other_logits = torch.where(valid, logits, torch.tensor(float("inf"), dtype=logits.dtype))
    other_target = torch.where(valid, target, 255.0)  # e.g. a no-data label value
    term = ALL_TERMS[name]()
    torch.testing.assert_close(term(other_logits, other_target, valid), term(logits, target, valid))


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**16), channels=st.sampled_from([1, 2]), n=st.integers(1, 3),
       h=st.integers(1, 6), w=st.integers(1, 6), pads=st.tuples(*[st.integers(0, 3)] * 4))
def test_padding_a_tile_with_invalid_pixels_changes_no_loss(seed, channels, n, h, w, pads):
    logits, target, valid = random_batch(seed, n=n, channels=channels, h=h, w=w)
    gen = torch.Generator().manual_seed(seed + 1)
    left, right, top, bottom = pads
    big_h, big_w = h + top + bottom, w + left + right
    big_logits = 5 * torch.randn(n, channels, big_h, big_w, generator=gen, dtype=logits.dtype)
    big_target = (torch.rand(n, 1, big_h, big_w, generator=gen) < 0.5).to(target.dtype)
    big_valid = torch.zeros(n, 1, big_h, big_w, dtype=torch.bool)
    inside = (slice(None), slice(None), slice(top, top + h), slice(left, left + w))
    big_logits[inside], big_target[inside], big_valid[inside] = logits.detach(), target, valid
    for name, make in ALL_TERMS.items():
        term = make()
        torch.testing.assert_close(term(big_logits, big_target, big_valid), term(logits, target, valid), msg=name)


# --- the criterion ---------------------------------------------------------------------

def test_criterion_total_is_the_weighted_sum_and_reports_each_term_unweighted():
    criterion = build_criterion(LossConfig(terms={"bce": 2.0, "dice": 0.5, "mse": 0.0}))
    logits, target, valid = random_batch(0, dtype=torch.float32)
    total, terms = criterion(logits, target, valid)
    assert set(terms) == {"bce", "dice", "mse"}
    assert not any(value.requires_grad for value in terms.values())
    torch.testing.assert_close(total, 2.0 * terms["bce"] + 0.5 * terms["dice"])
    torch.testing.assert_close(terms["bce"], MaskedBCE()(logits, target, valid).detach())
    assert terms["mse"] > 0  # weight 0: reported, not optimised


def test_criterion_takes_its_settings_from_the_config():
    cfg = LossConfig(terms={"bce": 1.0, "dice": 1.0, "focal": 1.0}, pos_weight=3.0, label_smoothing=0.1,
                     dice_mode="per_batch", dice_smooth=0.5, focal_gamma=1.5, focal_alpha=None)
    terms = build_criterion(cfg).terms
    assert (terms["bce"].pos_weight, terms["bce"].label_smoothing) == (3.0, 0.1)
    assert (terms["dice"].mode, terms["dice"].smooth) == ("per_batch", 0.5)
    assert (terms["focal"].gamma, terms["focal"].alpha) == (1.5, None)


def test_auto_pos_weight_comes_from_the_data_statistics():
    criterion = build_criterion(LossConfig(terms={"bce": 1.0}, pos_weight="auto"), pos_weight=4.0)
    assert criterion.terms["bce"].pos_weight == 4.0


def test_a_fixed_pos_weight_ignores_the_data_statistics():
    criterion = build_criterion(LossConfig(terms={"bce": 1.0}, pos_weight=2.0), pos_weight=4.0)
    assert criterion.terms["bce"].pos_weight == 2.0


def test_auto_pos_weight_without_statistics_is_a_user_error_naming_the_key():
    with pytest.raises(UserError, match="^loss.pos_weight: 'auto' needs"):
        build_criterion(LossConfig(pos_weight="auto"))


def test_criterion_refuses_logits_of_the_other_head():
    criterion = build_criterion(LossConfig(), out_channels=2)
    logits, target, valid = random_batch(0, channels=1)
    with pytest.raises(ValueError, match="2 output channel"):
        criterion(logits, target, valid)


def test_half_precision_logits_give_a_float32_loss():
    logits, target, valid = random_batch(0, dtype=torch.float32)
    total, _ = build_criterion(LossConfig())(logits.detach().bfloat16(), target, valid)
    assert total.dtype == torch.float32


def test_criterion_is_built_from_explicit_terms_and_weights_only_when_they_match():
    with pytest.raises(ValueError, match="differ"):
        Criterion({"bce": MaskedBCE()}, {"dice": 1.0})
