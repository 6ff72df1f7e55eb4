"""The decision threshold end to end: calibrated by training and `eval --calibrate`, stored in the
run, used by eval, predict and the ONNX metadata, overridden by --threshold."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import tifffile

from conftest import tree_state
from segtrain.cli import main
from segtrain.data.layout import read_split

SCORES = ("iou", "dice", "precision", "recall")


def _eval(run_dir: Path, out: Path, *flags: str) -> dict:
    assert main(["eval", str(run_dir), "--out", str(out), "--no-wandb", "--no-baseline", "--quiet", *flags]) == 0
    return json.loads((out / "metrics.json").read_text())


def _step(run_dir: Path, checkpoint: str = "best") -> int:
    import torch

    return torch.load(run_dir / "checkpoints" / f"{checkpoint}.pt", weights_only=True)["position"]["step"]


def test_training_calibrates_the_threshold_of_its_checkpoints(trained_run_ro):
    stored = json.loads((trained_run_ro / "calibration.json").read_text())
    for checkpoint in ("best", "last"):
        assert stored[checkpoint]["step"] == _step(trained_run_ro, checkpoint)
        assert 0 < stored[checkpoint]["threshold"] < 1
    val = [json.loads(line) for line in (trained_run_ro / "metrics.jsonl").read_text().splitlines()]
    val = [r for r in val if r.get("split") == "val"]
    assert val and all(r["calibrated_iou"] >= r["iou"] for r in val)  # 0.5 is among the candidates


def test_eval_uses_the_calibrated_threshold_and_reports_the_default_one_too(run_dir, tmp_path, capsys):
    stored = json.loads((run_dir / "calibration.json").read_text())["best"]
    metrics = _eval(run_dir, tmp_path / "cal")
    assert metrics["threshold"] == stored["threshold"]
    assert metrics["threshold_source"] == (f"calibrated on val tiles (training); optimum {stored['optimum']:g} there, "
                                           f"shrunk toward 0.5 for 2 val scenes")
    at_half = _eval(run_dir, tmp_path / "half", "--threshold", "0.5")
    assert at_half["threshold_source"] == "--threshold"
    assert metrics["at_default_threshold"] == {"threshold": 0.5, **{k: at_half[k] for k in (*SCORES, "accuracy")}}


def test_threshold_option_of_eval_and_predict_gives_the_same_masks(run_dir, small_data_ro, tmp_path):
    low, high = _eval(run_dir, tmp_path / "low", "--threshold", "0.2"), _eval(run_dir, tmp_path / "high",
                                                                               "--threshold", "0.8")
    assert low["tp"] + low["fp"] > high["tp"] + high["fp"]
    files = read_split(small_data_ro, "test")
    assert main(["predict", str(run_dir), *(str(f.scene) for f in files), "--out", str(tmp_path / "pred"),
                 "--threshold", "0.2", "--quiet"]) == 0
    rows = {r["scene"]: r for r in csv.DictReader((tmp_path / "low" / "scenes.csv").open())}
    for f in files:
        pred = tifffile.imread(tmp_path / "pred" / f"{Path(f.name).stem}_mask.tif")
        truth = tifffile.imread(f.mask) > 0
        assert int(((pred == 1) & truth).sum()) == int(rows[f.name]["tp"])
        assert int(((pred == 1) & ~truth).sum()) == int(rows[f.name]["fp"])


def test_eval_calibrate_stores_the_threshold_that_predict_and_export_then_use(run_dir, tmp_path):
    from segtrain.predict import OnnxBackend, TorchBackend

    metrics = _eval(run_dir, tmp_path / "e", "--calibrate", "--split", "val")
    stored = json.loads((run_dir / "calibration.json").read_text())["best"]
    assert stored["source"] == "val scenes (eval --calibrate)" and stored["step"] == _step(run_dir)
    assert metrics["threshold"] == stored["threshold"] and metrics["iou"] == pytest.approx(stored["iou"])
    assert metrics["iou"] >= metrics["at_default_threshold"]["iou"]  # on the split it was calibrated on
    assert TorchBackend(run_dir).meta.threshold == stored["threshold"]
    assert main(["export", str(run_dir)]) == 0
    assert OnnxBackend(run_dir / "export" / "model.onnx").meta.threshold == stored["threshold"]


@pytest.mark.parametrize("flags", [["--threshold", "1.5"], ["--threshold", "0.3", "--calibrate"]])
def test_a_bad_threshold_is_one_line_and_writes_nothing(run_dir, flags, capsys):
    before = tree_state(run_dir)
    assert main(["eval", str(run_dir), "--no-wandb", *flags]) == 2
    err = capsys.readouterr().err
    assert "--threshold" in err and err.count("\n") == 1
    assert tree_state(run_dir) == before


def test_predict_refuses_a_threshold_outside_0_1(run_dir, small_data_ro, tmp_path, capsys):
    scene = read_split(small_data_ro, "test")[0].scene
    assert main(["predict", str(run_dir), str(scene), "--out", str(tmp_path / "p"), "--threshold", "0"]) == 2
    assert "--threshold: must be between 0 and 1" in capsys.readouterr().err
    assert not (tmp_path / "p").exists()


def test_eval_of_a_single_scene_shows_no_best_overlay(run_dir, small_data, tmp_path, capsys):
    test_csv = small_data / "filelists" / "test.csv"
    test_csv.write_text(test_csv.read_text().splitlines()[0] + "\n")
    metrics = _eval(run_dir, tmp_path / "one", "--data", str(small_data))
    assert metrics["scenes"] == 1 and metrics["overlays"] == ["worst.png"]
    assert not (tmp_path / "one" / "best.png").exists()
    assert "best.png" not in capsys.readouterr().out
