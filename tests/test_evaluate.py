"""`segtrain eval`: scores of whole scenes predicted as deployment predicts them, and what to look at."""
from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest
import tifffile

from conftest import tree_state
from segtrain.cli import main
from segtrain.data.layout import read_split
from segtrain.data.reader import SceneReader
from segtrain.evaluate import ExtremeScenes, SceneScore
from segtrain.metrics import Counts, scores_from_counts
from wandbutil import history

SCORES = ("iou", "dice", "precision", "recall")


@pytest.fixture(scope="module")
def evaluated(run_dir) -> Path:
    assert main(["eval", str(run_dir), "--quiet"]) == 0
    return run_dir / "eval"


def test_eval_writes_metrics_per_scene_table_and_overlays(evaluated, small_data_ro):
    metrics = json.loads((evaluated / "metrics.json").read_text())
    assert metrics["split"] == "test" and metrics["checkpoint"] == "best"
    assert all(0 <= metrics[k] <= 1 for k in SCORES)
    rows = list(csv.DictReader((evaluated / "scenes.csv").open()))
    assert [r["scene"] for r in rows] == [f.name for f in read_split(small_data_ro, "test")]
    for name in ("worst.png", "best.png"):
        assert (evaluated / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_split_scores_come_from_counts_summed_over_the_scenes(evaluated):
    metrics = json.loads((evaluated / "metrics.json").read_text())
    rows = list(csv.DictReader((evaluated / "scenes.csv").open()))
    totals = [sum(int(r[k]) for r in rows) for k in ("tp", "fp", "fn", "tn")]
    assert [metrics[k] for k in ("tp", "fp", "fn", "tn")] == totals
    expected = scores_from_counts(*totals)
    assert all(metrics[k] == pytest.approx(expected[k]) for k in SCORES)


def test_every_valid_pixel_of_every_scene_is_counted_once(evaluated, small_data_ro):
    rows = {r["scene"]: r for r in csv.DictReader((evaluated / "scenes.csv").open())}
    for files in read_split(small_data_ro, "test"):
        with SceneReader(files.scene) as reader:
            _, valid, _ = reader.read(0, 0, reader.height, reader.width)
        assert int(rows[files.name]["valid_pixels"]) == int(valid.sum())


def test_eval_counts_equal_those_of_the_masks_segtrain_predict_writes(run_dir, evaluated, small_data_ro, tmp_path):
    files = read_split(small_data_ro, "test")
    assert main(["predict", str(run_dir), *(str(f.scene) for f in files), "--out", str(tmp_path), "--quiet"]) == 0
    rows = {r["scene"]: r for r in csv.DictReader((evaluated / "scenes.csv").open())}
    for f in files:
        pred = tifffile.imread(tmp_path / f"{Path(f.name).stem}_mask.tif")
        truth = tifffile.imread(f.mask) > 0
        valid = pred != 255
        counts = [(pred == 1) & truth & valid, (pred == 1) & ~truth, (pred == 0) & truth, (pred == 0) & ~truth]
        assert [int(c.sum()) for c in counts] == [int(rows[f.name][k]) for k in ("tp", "fp", "fn", "tn")]


def test_eval_logs_scores_and_overlays_to_the_runs_wandb_run(run_dir, evaluated):
    info = json.loads((run_dir / "run.json").read_text())
    files = sorted((run_dir / "wandb").glob(f"offline-run-*-{info['wandb_id']}/run-{info['wandb_id']}.wandb"))
    rows = [row for path in files for row in history(path) if "eval/test/iou" in row]
    metrics = json.loads((evaluated / "metrics.json").read_text())
    assert len(rows) == 1 and rows[0]["eval/test/iou"] == pytest.approx(metrics["iou"])
    assert rows[0]["global_step"] == metrics["step"]
    assert rows[0]["eval/test/worst/_type"] == rows[0]["eval/test/best/_type"] == "image-file"
    assert rows[0]["eval/test/scenes/_type"] == "table-file"


def test_eval_of_another_split_and_checkpoint_into_another_folder(run_dir, tmp_path, capsys):
    out = tmp_path / "val-last"
    assert main(["eval", str(run_dir), "--split", "val", "--checkpoint", "last", "--out", str(out), "--no-wandb",
                 "--quiet"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert (metrics["split"], metrics["checkpoint"], metrics["scenes"]) == ("val", "last", 2)
    assert "val (2 scenes, whole-scene prediction): iou" in capsys.readouterr().out


def test_eval_reads_a_moved_data_set_given_with_data(run_dir, small_data_ro, tmp_path):
    moved = tmp_path / "moved"
    shutil.copytree(small_data_ro, moved)
    out = tmp_path / "eval"
    assert main(["eval", str(run_dir), "--data", str(moved), "--out", str(out), "--no-wandb", "--quiet"]) == 0
    assert (out / "metrics.json").is_file()


def test_a_missing_split_is_a_user_error_naming_the_filelist_and_nothing_is_written(run_dir, small_data, capsys):
    (small_data / "filelists" / "test.csv").unlink()
    before = tree_state(run_dir)
    assert main(["eval", str(run_dir), "--data", str(small_data), "--out", str(run_dir / "eval2"), "--no-wandb"]) == 2
    err = capsys.readouterr().err
    assert str(small_data / "filelists" / "test.csv") in err and err.count("\n") == 1
    assert tree_state(run_dir) == before


@pytest.mark.parametrize("ious, worst, best", [
    ([0.5, 0.9, 0.1, 0.7, 0.3, 0.8, 0.6], [0.1, 0.3, 0.5], [0.9, 0.8, 0.7]),
    ([0.5, 0.9, 0.1], [0.1, 0.5], [0.9]),
    ([0.4], [0.4], []),
])
def test_overlays_show_the_worst_and_the_best_scenes_never_the_same_one_twice(ious, worst, best):
    extremes = ExtremeScenes(3)
    for i, iou in enumerate(ious):
        tp = round(iou * 100)
        extremes.offer(SceneScore(f"s{i}", 10, 10, Counts(tp, 100 - tp, 0, 0)), preview=None)
    shown_worst, shown_best = extremes.worst_and_best()
    assert [s.scores["iou"] for s, _ in shown_worst] == pytest.approx(worst)
    assert [s.scores["iou"] for s, _ in shown_best] == pytest.approx(best)
