"""A trainer killed (SIGKILL, no chance to clean up) at each of its write points in turn, or
stopped by a full disk, and resumed each time, ends exactly where an uninterrupted run ends:
same final weights, same best.pt, same metrics.jsonl, the mirror complete, and no temporary file
left anywhere.

The kill comes from ``SEGTRAIN_FAULT`` (see :mod:`segtrain.fsutil`): the training process sends
itself SIGKILL at the N-th write of a file, after the data is on disk and before it is renamed
into place (the worst instant), or its write fails with ENOSPC.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from segtrain.fsutil import FAULT_ENV, TEMP_SUFFIXES
from trainutil import assert_same_weights, train_run

pytestmark = pytest.mark.slow

# 2 epochs of 4 steps, a checkpoint every 2 steps (so also one right before each validation),
# samples and curves at every validation, a mirror: every kind of write in 8 steps. Only the first
# validation can improve (min_delta 1), so a best.pt lost or left stale at its epoch end shows.
SHORT = ["train.epochs=2", "data.tiles_per_epoch=32", "train.checkpoint_every_steps=2", "logging.samples_every_epochs=1",
         "train.early_stopping.min_delta=1"]
VOLATILE = {"time", "tiles_per_s", "data_wait"}  # wall-clock measurements

# Each segment resumes from the last checkpoint the previous one completed; counts are per process.
SEGMENTS = [
    ("enospc:*/run/checkpoints/.last.pt.partial:2", 3),  # disk full at the step-4 checkpoint: stops like a signal
    ("kill:*/run/metrics.jsonl:4", -9),  # (1: the rewrite on resume) step 4 checkpointed, killed right after validation
    ("kill:*/run/curves.png:1", -9),  # plots
    ("kill:*/run/samples/epoch_0000.png:1", -9),  # samples
    ("kill:*/run/checkpoints/.best.pt.partial:1", -9),  # best.pt half-written
    ("kill:*/run/checkpoints/best.pt:1", -9),  # best.pt written, not renamed into place
    ("kill:*/run/checkpoints/last.pt:1", -9),  # best.pt in place, the epoch end's last.pt not yet
    ("kill:*/mirror/checkpoints/best.pt:1", -9),  # epoch end committed, killed mid-mirror
    ("kill:*/run/checkpoints/.last.pt.partial:1", -9),  # a periodic checkpoint half-written
    ("kill:*/mirror/checkpoints/last.pt:2", -9),  # mid-mirror again, step 8
    ("kill:*/run/run.json:3", -9),  # the last epoch end committed, killed recording it in run.json
    (None, 0),  # and to the end
]


def metrics(run: Path) -> list[dict]:
    lines = (run / "metrics.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(line).items() if k not in VOLATILE} for line in lines]


def temporaries(*folders: Path) -> list[Path]:
    return [p for folder in folders for p in folder.rglob(".*") if p.name.endswith(TEMP_SUFFIXES)]


def checkpoint(path: Path) -> dict:
    return torch.load(path, weights_only=True)


def test_killed_at_every_write_point_and_resumed_equals_an_uninterrupted_run(small_data_ro, tmp_path):
    reference = tmp_path / "ref" / "run"
    code, out = train_run(reference, small_data_ro, *SHORT, flags=("--mirror", str(tmp_path / "ref" / "mirror")))
    assert code == 0, out

    run, mirror = tmp_path / "run", tmp_path / "mirror"
    for fault, expected in SEGMENTS:
        code, out = train_run(run, small_data_ro, *SHORT, flags=("--mirror", str(mirror)),
                              env={FAULT_ENV: fault} if fault else {})
        assert code == expected, f"{fault}: exit {code}\n{out}"
        if expected == 3:
            assert "disk full" in out and "resume" in out
            assert (run / "checkpoints" / "last.pt").is_file()  # the step-2 checkpoint, intact

    assert_same_weights(checkpoint(run / "checkpoints" / "last.pt")["model"],
                        checkpoint(reference / "checkpoints" / "last.pt")["model"])
    best, best_ref = checkpoint(run / "checkpoints" / "best.pt"), checkpoint(reference / "checkpoints" / "best.pt")
    assert_same_weights(best["model"], best_ref["model"])
    assert best["position"] == best_ref["position"] and best["best_metric"] == best_ref["best_metric"]
    assert metrics(run) == metrics(reference)
    assert temporaries(run, mirror) == []
    for name in ("metrics.jsonl", "checkpoints/last.pt", "checkpoints/best.pt"):
        assert (mirror / name).read_bytes() == (run / name).read_bytes(), name
    segments = json.loads((run / "run.json").read_text())["segments"]
    assert len(segments) == len(SEGMENTS) and segments[-1]["exit_code"] == 0
