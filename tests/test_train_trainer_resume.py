"""Exact resume: a run stopped anywhere and resumed ends with the weights of one never stopped."""
from __future__ import annotations

import json
import os
import shutil
import subprocess

import pytest
import torch

from conftest import age, corrupt_segment
from trainutil import SIGKILL, SIGTERM, assert_same_weights, final_weights, interrupt, segtrain_cmd, tiny_args, train_run

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def reference(small_data_ro, tmp_path_factory):
    """An uninterrupted tiny run (3 epochs of 6 steps), the baseline for every resume test."""
    run_dir = tmp_path_factory.mktemp("reference") / "run"
    code, out = train_run(run_dir, small_data_ro, "train.checkpoint_every_steps=4")
    assert code == 0, out
    return run_dir


def test_uninterrupted_run_finishes_with_status_done(reference):
    info = json.loads((reference / "run.json").read_text())
    assert info["status"] == "done"
    assert [s["exit_code"] for s in info["segments"]] == [0]
    steps = [json.loads(line)["step"] for line in (reference / "metrics.jsonl").read_text().splitlines()]
    assert max(steps) == 18 and steps == sorted(steps)


def test_sigterm_mid_epoch_stops_with_exit_3_and_resumes_exactly(reference, small_data_ro, tmp_path):
    run_dir = tmp_path / "run"
    assert interrupt(run_dir, small_data_ro, 8, SIGTERM, "train.checkpoint_every_steps=4") == 3
    stopped = torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)["position"]
    assert 0 < stopped["batch"] < 6, "the stop must land inside an epoch for this test to mean anything"
    code, out = train_run(run_dir, small_data_ro, "train.checkpoint_every_steps=4")
    assert code == 0, out
    assert "resuming" in out
    assert_same_weights(final_weights(run_dir), final_weights(reference))
    info = json.loads((run_dir / "run.json").read_text())
    assert [s["exit_code"] for s in info["segments"]] == [3, 0]
    assert info["status"] == "done"


def test_sigkill_resumes_from_the_last_checkpoint_exactly(reference, small_data_ro, tmp_path):
    run_dir = tmp_path / "run"
    assert interrupt(run_dir, small_data_ro, 11, SIGKILL, "train.checkpoint_every_steps=4") == -9
    kept = torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)["position"]["step"]
    assert 6 <= kept < 18  # killed after step 11 (one more step may slip in before the signal lands)
    code, out = train_run(run_dir, small_data_ro, "train.checkpoint_every_steps=4")
    assert code == 0, out
    assert_same_weights(final_weights(run_dir), final_weights(reference))
    steps = [json.loads(line)["step"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()
             if json.loads(line)["split"] == "train"]
    assert steps == list(range(1, 19)), "metrics.jsonl reads as one uninterrupted run"


def test_corrupt_last_checkpoint_falls_back_to_the_previous_one(reference, small_data_ro, tmp_path):
    run_dir = tmp_path / "run"
    assert interrupt(run_dir, small_data_ro, 13, SIGTERM, "train.checkpoint_every_steps=4") == 3
    last = run_dir / "checkpoints" / "last.pt"
    last.write_bytes(last.read_bytes()[:1000])
    code, out = train_run(run_dir, small_data_ro, "train.checkpoint_every_steps=4")
    assert code == 0, out
    assert "unreadable checkpoint" in out
    assert_same_weights(final_weights(run_dir), final_weights(reference))


def test_band_dropout_and_robust_normalization_resume_exactly(reference, small_data_ro, tmp_path):
    extra = ("train.checkpoint_every_steps=4", "data.augment.band_dropout=0.3", "data.normalize=robust")
    whole = tmp_path / "whole"
    code, out = train_run(whole, small_data_ro, *extra)
    assert code == 0, out
    stopped = tmp_path / "stopped"
    assert interrupt(stopped, small_data_ro, 8, SIGTERM, *extra) == 3
    code, out = train_run(stopped, small_data_ro, *extra)
    assert code == 0 and "resuming" in out, out
    assert_same_weights(final_weights(stopped), final_weights(whole))
    with pytest.raises(AssertionError, match="differs"):
        assert_same_weights(final_weights(whole), final_weights(reference))  # the options changed the training


def test_time_limit_stops_with_a_checkpoint(small_data_ro, tmp_path):
    run_dir = tmp_path / "run"
    code, out = train_run(run_dir, small_data_ro, "train.epochs=50", flags=("--time-limit", "15"))
    assert code == 3, out
    position = torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)["position"]
    assert 0 < position["step"] < 50 * 6
    assert json.loads((run_dir / "run.json").read_text())["status"] == "stopped"


def test_unsafe_config_change_is_refused_and_safe_one_accepted(reference, small_data_ro, tmp_path):
    import shutil

    run_dir = tmp_path / "run"
    shutil.copytree(reference, run_dir)
    before = (run_dir / "checkpoints" / "last.pt").read_bytes()
    code, out = train_run(run_dir, small_data_ro, "train.checkpoint_every_steps=4", "optim.lr=0.1")
    assert code == 2
    assert "optim.lr: changed from 0.01 to 0.1" in out and "Traceback" not in out
    assert (run_dir / "checkpoints" / "last.pt").read_bytes() == before
    code, out = train_run(run_dir, small_data_ro, "train.checkpoint_every_steps=4", "train.epochs=4")
    assert code == 0, out
    assert "config change accepted on resume: train.epochs: 3 -> 4" in out
    assert "schedule: the run had finished its cosine schedule of 18 steps" in out  # and what happens instead
    assert torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)["position"]["step"] == 24


def test_a_corrupt_tile_met_in_training_is_skipped_and_reported_and_resume_stays_exact(reference, small_data_ro, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(small_data_ro, data)
    age(data)
    scene = data / "scenes" / "scene_000.tif"  # a train scene in 64 px deflate tiles
    check = subprocess.run(segtrain_cmd("check", *tiny_args(data)), capture_output=True, text=True)
    assert check.returncode == 0, check.stderr
    st = scene.stat()
    corrupt_segment(scene, 1)  # after the check, as storage may rot it, or as the check's sample of a large file misses it
    os.utime(scene, ns=(st.st_atime_ns, st.st_mtime_ns))  # the check's memo takes it for the file that passed
    named = "scenes/scene_000.tif: tile 1 (rows 0-63, cols 64-127)"

    whole = tmp_path / "whole"
    code, out = train_run(whole, data, "train.checkpoint_every_steps=4")
    assert code == 0, out
    assert out.count(f"warning: skipping the tiles that touch a corrupt segment: {named}") == 1
    assert named in (whole / "logs" / "train.log").read_text()
    segment = json.loads((whole / "run.json").read_text())["segments"][-1]
    assert segment["timing"]["corrupt_tiles"] == [named]
    with pytest.raises(AssertionError, match="differs"):
        assert_same_weights(final_weights(whole), final_weights(reference))  # the skipped windows were redrawn

    stopped = tmp_path / "stopped"
    assert interrupt(stopped, data, 8, SIGTERM, "train.checkpoint_every_steps=4") == 3
    code, out = train_run(stopped, data, "train.checkpoint_every_steps=4")
    assert code == 0 and "resuming" in out, out
    assert_same_weights(final_weights(stopped), final_weights(whole))


def test_more_epochs_after_a_stop_mid_schedule_continue_its_decay_without_a_jump(reference, small_data_ro, tmp_path):
    """Stretching the cosine in place raised the lr at the resume (issue 26); now it decays on from where it was."""
    run_dir = tmp_path / "run"
    assert interrupt(run_dir, small_data_ro, 8, SIGTERM, "train.checkpoint_every_steps=4") == 3
    stopped = torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)["position"]["step"]
    code, out = train_run(run_dir, small_data_ro, "train.checkpoint_every_steps=4", "train.epochs=4")
    assert code == 0, out
    assert f"schedule: continues smoothly from step {stopped}" in out and "to step 24 instead of 18" in out
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    lrs = {r["step"]: r["lr"] for r in records if r["split"] == "train"}
    after = [lrs[s] for s in sorted(lrs) if s > stopped]
    assert after[0] <= lrs[stopped] and all(b <= a for a, b in zip(after, after[1:])) and len(after) == 24 - stopped
