"""W&B sync after the fact, up to the network boundary: which segments, in which order, the replay
records, idempotence, the refusal without credentials. The upload itself is the one function given in."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from segtrain.cli import main
from segtrain.run.wandb_sync import MARKER, SyncPlan, plan_sync, require_login, sync_run
from segtrain.errors import UserError
from segtrain.run.metrics_log import read_metrics
from segtrain.run.directory import RunDir
from segtrain.run.wandb_log import wandb_values
from trainutil import train_run
from wandbutil import history

pytestmark = pytest.mark.slow
KEY = {"WANDB_API_KEY": "0123456789abcdef0123456789abcdef01234567"}
ONE_EPOCH = ("logging.wandb.mode=offline", "train.epochs=1", "data.tiles_per_epoch=16")


@pytest.fixture(scope="module")
def resumed_run(small_data_ro, tmp_path_factory) -> Path:
    """A run of two job segments: stopped by its time limit after a step, then resumed to the end."""
    run_dir = tmp_path_factory.mktemp("wandb") / "run"
    code, out = train_run(run_dir, small_data_ro, *ONE_EPOCH, flags=("--time-limit", "0.5"))
    assert code == 3, out
    code, out = train_run(run_dir, small_data_ro, *ONE_EPOCH)
    assert code == 0, out
    return run_dir


@pytest.fixture
def run(resumed_run, tmp_path) -> Path:
    """A private copy, for tests that sync or change it."""
    return Path(shutil.copytree(resumed_run, tmp_path / "run"))


class Uploads:
    """The network boundary: records each upload instead of sending it."""

    def __init__(self) -> None:
        self.plans: list[SyncPlan] = []

    def __call__(self, plan: SyncPlan) -> None:
        self.plans.append(plan)



def test_segments_of_a_cleanly_resumed_run_are_uploaded_in_order_into_its_wandb_run(run):
    info = RunDir(run).info.read()
    plan = plan_sync(run)
    assert plan.method == "segments" and "2 job segment(s) continue each other exactly" in plan.reason
    assert [p.name for p in plan.segments] == sorted(p.name for p in (run / "wandb").glob("offline-run-*"))
    assert all(p.name.endswith(info["wandb_id"]) for p in plan.segments) and plan.wandb_id == info["wandb_id"]
    first, second = (history(next(p.glob("*.wandb"))) for p in plan.segments)
    assert max(r["global_step"] for r in first) <= min(r["global_step"] for r in second)
    upload = Uploads()
    assert sync_run(plan, upload_segments=upload, environ=KEY)
    assert upload.plans == [plan] and plan.project == "segtrain"


def test_a_second_sync_uploads_nothing(run):
    upload = Uploads()
    sync_run(plan_sync(run), upload_segments=upload, environ=KEY)
    again = plan_sync(run)
    assert again.method == "none" and not sync_run(again, upload_segments=upload, environ=KEY)
    assert len(upload.plans) == 1
    assert json.loads((run / "wandb" / MARKER).read_text())["segments"] == [p.name for p in upload.plans[0].segments]


def test_replay_logs_every_metrics_record_at_its_global_step_with_the_trainers_keys(run):
    plan = plan_sync(run, method="replay")
    records = list(read_metrics(run / "metrics.jsonl"))
    assert plan.rows == [(r["step"], wandb_values(r)) for r in records]
    logged = [row for folder in sorted((run / "wandb").glob("offline-run-*")) for row in history(next(folder.glob("*.wandb")))]
    val = [row for row in logged if "val/iou" in row]
    assert [(s, v["val/iou"]) for s, v in plan.rows if "val/iou" in v] == [(r["global_step"], r["val/iou"]) for r in val]
    [(step, figure)] = plan.samples
    assert figure.name == "epoch_0000.png" and step == val[-1]["global_step"]


def test_replay_uploads_only_records_added_since_the_last_sync(run):
    upload = Uploads()
    sync_run(plan_sync(run, method="replay"), upload_replay=upload, environ=KEY)
    assert plan_sync(run).method == "none"  # the method sticks; nothing new
    last = list(read_metrics(run / "metrics.jsonl"))[-1]
    extra = {**last, "split": "test", "iou": 0.5}  # same step, a split not uploaded yet
    later = {**last, "step": last["step"] + 1, "split": "train", "loss": 0.1}
    with open(run / "metrics.jsonl", "a") as f:
        f.write(json.dumps(extra) + "\n" + json.dumps(later) + "\n")
    plan = plan_sync(run)
    assert plan.method == "replay" and [step for step, _ in plan.rows] == [last["step"], last["step"] + 1]
    assert plan.samples == []
    sync_run(plan, upload_replay=upload, environ=KEY)
    assert plan_sync(run).method == "none" and len(upload.plans) == 2


def test_a_killed_segment_means_replay_because_it_logged_steps_twice(run):
    info = RunDir(run).info.read()
    info["segments"][0]["exit_code"] = None  # what run.json keeps when the job was SIGKILLed
    RunDir(run).info.update(**info)
    plan = plan_sync(run)
    assert plan.method == "replay" and "segment 1 (job None) ended with exit None" in plan.reason
    with pytest.raises(UserError, match="cannot be appended as they are: segment 1"):
        plan_sync(run, method="segments")


def test_a_missing_offline_folder_means_replay(run):
    shutil.rmtree(sorted((run / "wandb").glob("offline-run-*"))[0])
    plan = plan_sync(run)
    assert plan.method == "replay" and "1 offline W&B folder(s) for 2 job segment(s)" in plan.reason


def test_switching_method_after_an_upload_is_refused(run):
    sync_run(plan_sync(run), upload_segments=Uploads(), environ=KEY)
    with pytest.raises(UserError, match="uploaded before by segments"):
        plan_sync(run, method="replay")


def test_a_run_without_wandb_is_replayed_under_an_id_kept_for_the_next_sync(run):
    shutil.rmtree(run / "wandb")
    RunDir(run).info.update(wandb_id=None)
    plan = plan_sync(run)
    assert plan.method == "replay" and len(plan.wandb_id) == 8
    sync_run(plan, upload_replay=Uploads(), environ=KEY)
    assert plan_sync(run).wandb_id == plan.wandb_id


def test_without_credentials_sync_is_refused_before_anything_in_one_line(run, tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("NETRC", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert main(["wandb-sync", str(run)]) == 2
    err = capsys.readouterr().err
    assert "not logged in to W&B (api.wandb.ai): run `wandb login`" in err and err.count("\n") == 1
    assert not (run / "wandb" / MARKER).exists()


def test_credentials_are_found_in_the_environment_or_in_netrc(tmp_path):
    require_login({"WANDB_API_KEY": "k"})
    (tmp_path / ".netrc").write_text("machine api.wandb.ai\n  login user\n  password secret\n")
    (tmp_path / ".netrc").chmod(0o600)
    require_login({"HOME": str(tmp_path)})
    with pytest.raises(UserError, match="not logged in to W&B \\(wandb.example.org\\)"):
        require_login({"HOME": str(tmp_path), "WANDB_BASE_URL": "https://wandb.example.org"})


def test_dry_run_says_what_would_be_uploaded_without_credentials(run, monkeypatch, capsys):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    assert main(["wandb-sync", str(run), "--dry-run"]) == 0
    assert "2 offline segment(s) -> W&B run segtrain/" in capsys.readouterr().out
    assert not (run / "wandb" / MARKER).exists()
