"""What a training run leaves behind: run directory, logs, curves, samples, W&B offline data."""
from __future__ import annotations

import json
import re

import pytest
import yaml

from trainutil import train_run
from wandbutil import history

pytestmark = pytest.mark.slow
SECRET = "0123456789abcdef0123456789abcdef01234567"  # looks like a W&B API key


@pytest.fixture(scope="module")
def offline_run(small_data_ro, tmp_path_factory):
    """A tiny run with W&B offline and a (fake) API key in the environment."""
    run_dir = tmp_path_factory.mktemp("outputs") / "run"
    code, out = train_run(run_dir, small_data_ro, "logging.wandb.mode=offline", "train.epochs=2",
                          env={"WANDB_API_KEY": SECRET, "PBS_JOBID": "4242.pbs-m1.metacentrum.cz"})
    assert code == 0, out
    return run_dir, out


def test_run_directory_layout(offline_run):
    run_dir, _ = offline_run
    for name in ("config.yaml", "run.json", "metrics.jsonl", "curves.png", "checkpoints/last.pt",
                 "checkpoints/best.pt", "logs/train.log"):
        assert (run_dir / name).is_file(), name
    assert list((run_dir / "samples").glob("epoch_*.png"))
    resolved = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert resolved["train"]["epochs"] == 2 and resolved["model"]["base_width"] == 8


def test_run_json_records_ids_and_the_job_segment(offline_run):
    info = json.loads((offline_run[0] / "run.json").read_text())
    assert info["status"] == "done" and re.fullmatch(r"[0-9a-f]{12}", info["run_id"])
    assert info["wandb_id"] and info["segments"][0]["job_id"] == "4242.pbs-m1.metacentrum.cz"
    assert info["segments"][0]["end_step"] == 12


def test_metrics_jsonl_has_loss_components_and_validation_scores(offline_run):
    records = [json.loads(line) for line in (offline_run[0] / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in records if r["split"] == "train"]
    val = [r for r in records if r["split"] == "val"]
    assert {"loss", "loss/bce", "loss/dice", "lr", "grad_norm", "tiles_per_s", "data_wait"} <= train[0].keys()
    assert [r["epoch"] for r in val] == [0, 1]
    assert all(0 <= r["iou"] <= 1 and 0 <= r["precision"] <= 1 for r in val)


def test_batch_log_has_plain_progress_lines(offline_run):
    _, out = offline_run
    assert re.search(r"epoch 0  step 1/12  loss [0-9.]+  lr [0-9.e-]+  tiles/s [0-9.]+  data wait \d+%  eta", out)
    assert "\r" not in out  # not a TTY: no progress bar redraws in the job log


def test_wandb_offline_run_holds_metrics_and_sample_table(offline_run):
    run_dir, _ = offline_run
    info = json.loads((run_dir / "run.json").read_text())
    files = list((run_dir / "wandb").glob(f"offline-run-*-{info['wandb_id']}/run-{info['wandb_id']}.wandb"))
    assert len(files) == 1
    rows = history(files[0])
    val = [r for r in rows if "val/iou" in r]
    assert [r["global_step"] for r in val] == [6, 12]
    metrics = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert val[-1]["val/iou"] == pytest.approx([m for m in metrics if m["split"] == "val"][-1]["iou"])
    assert any(r.get("samples/_type") == "table-file" and r["samples/nrows"] == 2 for r in rows)


def test_api_key_is_never_written(offline_run):
    run_dir, out = offline_run
    assert SECRET not in out
    for path in run_dir.rglob("*"):
        if path.is_file():
            assert SECRET.encode() not in path.read_bytes(), path
