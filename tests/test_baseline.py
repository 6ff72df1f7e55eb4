"""Per-pixel baselines: what single pixels' band values alone achieve, on the model's own pixels."""
from __future__ import annotations

import json
import re

import numpy as np
import pytest

from conftest import REPO
from segtrain import baseline
from segtrain.baseline import fit, max_steps, unconverged_floor, verdict
from segtrain.cli import main
from segtrain.run.directory import RunDir
from segtrain.run.report import run_quality


def test_the_mlp_learns_a_pixel_rule_that_logistic_regression_cannot():
    """Positive when band 0 lies in a middle range: not linearly separable."""
    rng = np.random.default_rng(0)
    pixels = rng.normal(size=(6000, 3)).astype(np.float32) * [1000, 50, 50] + 5000
    truth = np.abs(pixels[:, 0] - 5000) < 500
    accuracy = {name: float(((fit(name, pixels, truth)(pixels) > 0.5).numpy() == truth).mean())
                for name in ("logistic", "mlp")}
    assert accuracy["mlp"] > 0.95 and accuracy["logistic"] < 0.75


def checkerboard(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixels of two bands, positive on the dark squares of a 6 x 6 checkerboard over their range."""
    rng = np.random.default_rng(seed)
    pixels = rng.uniform(5000, 11000, size=(n, 2)).astype(np.float32)
    x = (pixels - 8000) / 3000
    return pixels, np.sin(9 * x[:, 0]) * np.sin(9 * x[:, 1]) > 0


def test_the_mlp_is_trained_to_convergence_not_to_a_fixed_step_count():
    """A fine pixel rule: 400 steps (the old fixed count) got 84 % of the pixels right (issue 26)."""
    pixels, truth = checkerboard(20_000, 0)
    test_pixels, test_truth = checkerboard(20_000, 1)
    model = fit("mlp", pixels, truth)
    assert float(((model(test_pixels) > 0.5).numpy() == test_truth).mean()) > 0.95
    assert model.convergence.steps >= max_steps(18_000) > 400 and model.convergence.cpu_s > 0


def test_training_stops_on_a_plateau_of_the_held_out_loss(monkeypatch):
    """A rule learnt at once: the held-out loss stops improving long before the step budget."""
    rng = np.random.default_rng(0)
    pixels = rng.normal(size=(100_000, 3)).astype(np.float32)
    truth = pixels[:, 0] + rng.normal(size=100_000) > 0  # noisy labels: a floor the loss cannot pass
    model = fit("logistic", pixels[:80_000], truth[:80_000], held_out=(pixels[80_000:], truth[80_000:]))
    assert model.convergence.stopped == "plateau"
    assert model.convergence.steps < max_steps(80_000)
    first_check = baseline.CHECK_EVERY * (baseline.PATIENCE * (baseline.LR_DROPS + 1) + 1)
    assert model.convergence.steps >= first_check  # patience at the lr and at each of the lower ones


def test_the_step_budget_grows_with_the_training_pixels():
    assert max_steps(1_000) == baseline.MIN_STEPS
    assert max_steps(2_000_000) == baseline.MAX_EPOCHS * 2_000_000 // baseline.BATCH > max_steps(200_000)


def test_the_verdict_says_in_plain_words_when_the_model_does_not_beat_the_floor():
    baselines = {"logistic": {"iou": 0.4}, "mlp": {"iou": 0.7}}
    sentence, margin = verdict(0.5, baselines)
    assert "does NOT beat" in sentence and "MLP" in sentence and margin == pytest.approx(-0.2)
    sentence, margin = verdict(0.75, baselines)
    assert sentence.startswith("the model beats") and "+0.0500" in sentence and margin == pytest.approx(0.05)


def test_the_floor_is_converged_when_the_best_classifier_and_the_mlp_are():
    """A logistic regression stopped at its budget below a converged MLP cannot raise the floor: the MLP can
    represent it. One that is the best, or an MLP stopped at its budget, could."""
    plateau, budget = {"stopped": "plateau"}, {"stopped": "budget"}
    assert unconverged_floor({"logistic": {**budget, "iou": 0.5}, "mlp": {**plateau, "iou": 0.7}}) == []
    assert unconverged_floor({"logistic": {**budget, "iou": 0.8}, "mlp": {**plateau, "iou": 0.7}}) == ["logistic"]
    assert unconverged_floor({"logistic": {**plateau, "iou": 0.8}, "mlp": {**budget, "iou": 0.7}}) == ["mlp"]
    assert unconverged_floor({"logistic": {"iou": 0.5}, "mlp": {**plateau, "iou": 0.7}}) == []


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
    mlp = metrics["baseline"]["mlp"]
    assert mlp["stopped"] in ("plateau", "budget") and mlp["steps"] > 0 and mlp["cpu_s"] > 0
    assert f"{mlp['steps']} steps" in out


def test_the_job_report_shows_the_verdict_of_the_runs_own_evaluation(run_dir, capsys):
    """What eval records (the run's step, which classifiers did not converge) is what the report needs."""
    assert run_quality(run_dir) == {"none": "not evaluated yet", "how": f"`segtrain eval {run_dir}` compares the model "
                                    "with per-pixel classifiers trained to convergence"}
    assert main(["eval", str(run_dir), "--no-wandb", "--quiet"]) == 0
    metrics = json.loads((run_dir / "eval" / "metrics.json").read_text())
    assert metrics["run_step"] == RunDir(run_dir).info.read()["segments"][-1]["end_step"] > 0
    not_converged = unconverged_floor({name: metrics["baseline"][name] for name in baseline.MODELS})
    assert metrics["baseline"]["floor_not_converged"] == not_converged
    quality = run_quality(run_dir)
    if not_converged:
        assert "verdict" not in quality and "stopped at its step budget" in quality["none"]
    else:
        assert quality["verdict"] == metrics["baseline"]["verdict"] and quality["split"] == "test"


def test_baseline_command_scores_both_classifiers_deterministically(small_data_ro, capsys):
    args = ["baseline", str(REPO / "configs" / "demo.yaml"), f"data.root={small_data_ro}", "--split", "val"]
    assert main(args) == 0
    first = capsys.readouterr().out
    assert main(args) == 0
    cpu_seconds = re.compile(r"[0-9.]+ CPU-s")  # the one figure that is the machine's, not the result's
    assert cpu_seconds.sub("", capsys.readouterr().out) == cpu_seconds.sub("", first)
    assert "val logistic" in first and "val mlp" in first
