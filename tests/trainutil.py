"""Helpers for tests that train: a tiny config on the small data set, runs as real processes."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch

from conftest import REPO

TINY = [
    "data.tile_size=48", "data.overlap=8", "data.tiles_per_epoch=48", "data.num_workers=0",
    "model.arch=unet", "model.depth=2", "model.base_width=8",
    "train.epochs=3", "train.batch_size=8", "train.device=cpu", "train.checkpoint_every_minutes=null",
    "logging.every_steps=1", "logging.samples_every_epochs=2", "logging.num_samples=2", "logging.wandb.mode=disabled",
    "optim.warmup_steps=2",
]


def tiny_args(data: Path, *extra: str) -> list[str]:
    return [str(REPO / "configs" / "demo.yaml"), f"data.root={data}", *TINY, *extra]


def segtrain_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "segtrain", *args]


def train_proc(run_dir: Path, data: Path, *extra: str, flags: tuple[str, ...] = (), **kw) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", **kw.pop("env", {})}
    return subprocess.Popen(segtrain_cmd("train", *tiny_args(data, *extra), "--run-dir", str(run_dir), *flags),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, **kw)


def train_run(run_dir: Path, data: Path, *extra: str, flags: tuple[str, ...] = (), env=None) -> tuple[int, str]:
    proc = train_proc(run_dir, data, *extra, flags=flags, env=env or {})
    out, _ = proc.communicate(timeout=300)
    return proc.returncode, out


def wait_for_step(run_dir: Path, step: int, proc: subprocess.Popen, timeout: float = 120) -> None:
    """Block until metrics.jsonl shows ``step`` (the run is then mid-training)."""
    deadline = time.monotonic() + timeout
    metrics = run_dir / "metrics.jsonl"
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"training ended early with {proc.returncode}: {proc.stdout.read()}")
        if metrics.exists() and f'"step": {step},' in metrics.read_text():
            return
        time.sleep(0.05)
    raise AssertionError(f"step {step} not reached")


def interrupt(run_dir: Path, data: Path, at_step: int, sig: int, *extra: str) -> int:
    proc = train_proc(run_dir, data, *extra)
    wait_for_step(run_dir, at_step, proc)
    proc.send_signal(sig)
    proc.communicate(timeout=120)
    return proc.returncode


def final_weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)["model"]


def assert_same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), f"{name} differs"


SIGTERM, SIGKILL = signal.SIGTERM, signal.SIGKILL
