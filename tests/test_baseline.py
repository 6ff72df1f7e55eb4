"""Per-pixel baselines: what single pixels' band values alone achieve, on the model's own pixels."""
from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import REPO
from segtrain.baseline import fit, verdict
from segtrain.cli import main


def test_the_mlp_learns_a_pixel_rule_that_logistic_regression_cannot():
    """Positive when band 0 lies in a middle range: not linearly separable."""
    rng = np.random.default_rng(0)
    pixels = rng.normal(size=(6000, 3)).astype(np.float32) * [1000, 50, 50] + 5000
    truth = np.abs(pixels[:, 0] - 5000) < 500
    accuracy = {name: float(((fit(name, pixels, truth)(pixels) > 0.5).numpy() == truth).mean())
                for name in ("logistic", "mlp")}
    assert accuracy["mlp"] > 0.95 and accuracy["logistic"] < 0.75


def test_the_verdict_says_in_plain_words_when_the_model_does_not_beat_the_floor():
    baselines = {"logistic": {"iou": 0.4}, "mlp": {"iou": 0.7}}
    sentence, margin = verdict(0.5, baselines)
    assert "does NOT beat" in sentence and "MLP" in sentence and margin == pytest.approx(-0.2)
    sentence, margin = verdict(0.75, baselines)
    assert sentence.startswith("the model beats") and "+0.0500" in sentence and margin == pytest.approx(0.05)


def test_every_eval_scores_the_baselines_on_the_same_pixels(run_dir, tmp_path, capsys):
    assert main(["eval", str(run_dir), "--out", str(tmp_path), "--no-wandb", "--quiet"]) == 0
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    counted = sum(metrics[k] for k in ("tp", "fp", "fn", "tn"))
    for name in ("logistic", "mlp"):
        assert metrics["baseline"][name]["valid_pixels"] == counted
        assert 0 <= metrics["baseline"][name]["iou"] <= 1
    margin = metrics["iou"] - max(metrics["baseline"][n]["iou"] for n in ("logistic", "mlp"))
    assert metrics["baseline"]["model_minus_best_iou"] == pytest.approx(margin)
    out = capsys.readouterr().out
    assert "per-pixel mlp" in out and metrics["baseline"]["verdict"] in out


def test_baseline_command_scores_both_classifiers_deterministically(small_data_ro, capsys):
    args = ["baseline", str(REPO / "configs" / "demo.yaml"), f"data.root={small_data_ro}", "--split", "val"]
    assert main(args) == 0
    first = capsys.readouterr().out
    assert main(args) == 0
    assert capsys.readouterr().out == first
    assert "val logistic" in first and "val mlp" in first
