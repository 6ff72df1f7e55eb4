"""DDP through PyTorch's elastic launcher, on CPU with gloo: the same run on 2 processes."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import time

import pytest
import torch

from segtrain.data.dataset import TileDataset
from segtrain.data.stats import Stats
from segtrain.metrics import ConfusionCounts
from segtrain.models import positive_probability
from segtrain.run.checkpoint import load_trained
from trainutil import SIGTERM, assert_same_weights, final_weights, segtrain_cmd, tiny_args, train_run, wait_for_step

pytestmark = pytest.mark.slow
TWO = ("--nproc-per-node", "2")


@pytest.fixture(scope="module")
def ddp_reference(small_data_ro, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("ddp") / "run"
    code, out = train_run(run_dir, small_data_ro, "train.checkpoint_every_steps=4", flags=TWO)
    assert code == 0, out
    return run_dir


def single_process_scores(run_dir) -> dict[str, float]:
    """Evaluate the run's final weights on the validation split in this one process."""
    trained = load_trained(run_dir, "last")
    cfg = trained.config
    val = TileDataset(cfg.data, "val", training=False, seed=cfg.train.seed, stats=Stats.from_dict(trained.stats))
    counts = ConfusionCounts()
    with torch.no_grad():
        for item in torch.utils.data.DataLoader(val, batch_size=8):
            prob = positive_probability(trained.model(item["image"]))
            counts.update(prob, item["mask"], item["valid"], threshold=cfg.train.threshold)
    return counts.compute()


def test_two_processes_write_one_run_whose_metrics_match_a_single_process_evaluation(ddp_reference):
    info = json.loads((ddp_reference / "run.json").read_text())
    assert info["status"] == "done" and len(info["segments"]) == 1
    assert sorted(p.name for p in (ddp_reference / "checkpoints").iterdir()) == ["best.pt", "last.prev.pt", "last.pt"]
    assert torch.load(ddp_reference / "checkpoints" / "last.pt", weights_only=True)["world_size"] == 2
    records = [json.loads(line) for line in (ddp_reference / "metrics.jsonl").read_text().splitlines()]
    assert max(r["step"] for r in records) == 18  # 48 tiles / global batch 8 = 6 steps an epoch, as on 1 process
    reported = [r for r in records if r["split"] == "val"][-1]
    evaluated = single_process_scores(ddp_reference)
    for name in ("iou", "dice", "precision", "recall", "tp", "fp", "fn", "tn"):
        assert reported[name] == evaluated[name], name


def test_sigterm_stops_both_processes_and_the_resume_is_exact(ddp_reference, small_data_ro, tmp_path):
    run_dir = tmp_path / "run"
    proc = subprocess.Popen(segtrain_cmd("train", *tiny_args(small_data_ro, "train.checkpoint_every_steps=4"),
                                         "--run-dir", str(run_dir), *TWO),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"}, start_new_session=True)
    wait_for_step(run_dir, 8, proc)
    os.killpg(proc.pid, SIGTERM)  # PBS signals every process of the job
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 3, out
    assert 0 < torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)["position"]["batch"] < 6
    code, out = train_run(run_dir, small_data_ro, "train.checkpoint_every_steps=4", flags=TWO)
    assert code == 0, out
    assert_same_weights(final_weights(run_dir), final_weights(ddp_reference))


def test_resuming_under_another_world_size_is_refused(ddp_reference, small_data_ro, tmp_path):
    import shutil

    run_dir = tmp_path / "run"
    shutil.copytree(ddp_reference, run_dir)
    code, out = train_run(run_dir, small_data_ro, "train.checkpoint_every_steps=4", "train.epochs=4")
    assert code == 2
    assert "written by 2 processes" in out and "Traceback" not in out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_launchers_on_loopback_rendezvous_and_train_as_one_run(small_data_ro, tmp_path):
    run_dir, port = tmp_path / "run", free_port()
    nodes = [subprocess.Popen(
        segtrain_cmd("train", *tiny_args(small_data_ro, "train.epochs=1"), "--run-dir", str(run_dir),
                     "--nnodes", "2", "--node-rank", str(rank), "--nproc-per-node", "1",
                     "--rdzv-endpoint", f"127.0.0.1:{port}", "--rdzv-id", "job-42"),
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
        for rank in (0, 1)]
    outputs = [node.communicate(timeout=180)[0] for node in nodes]
    assert [node.returncode for node in nodes] == [0, 0], outputs
    state = torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)
    assert state["world_size"] == 2 and state["position"]["step"] == 6


def test_workers_checkpoint_and_stop_when_their_launcher_is_killed(small_data_ro, tmp_path):
    """A SIGKILLed launcher must not leave workers training unseen (they run in their own sessions)."""
    run_dir = tmp_path / "run"
    proc = subprocess.Popen(segtrain_cmd("train", *tiny_args(small_data_ro, "train.epochs=30"), "--run-dir", str(run_dir),
                                         *TWO),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ, "OMP_NUM_THREADS": "1"})
    wait_for_step(run_dir, 3, proc)
    proc.kill()
    proc.wait()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and json.loads((run_dir / "run.json").read_text())["status"] == "running":
        time.sleep(0.2)
    info = json.loads((run_dir / "run.json").read_text())
    assert info["status"] == "stopped" and info["segments"][-1]["exit_code"] == 3
    assert 3 <= torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)["position"]["step"] < 180
