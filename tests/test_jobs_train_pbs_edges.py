"""jobs/train.pbs at the edges a real PBS server showed, in local PBS-like mode with the real trainer.

The local server behaves as the real one did: ``qdel`` kills the job's top shell at once and
SIGTERMs the rest, SIGKILL 10 s later; the walltime's SIGTERM may come late; jobs run with
umask 077 unless ``-W umask`` says otherwise. As in tests/test_jobs_train_pbs.py, a copy of the
repository stands for the user's clone on storage.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from segtrain.cluster.pbs.local.server import EXIT_QDEL, process_tree
from test_jobs_train_pbs import (TINY, assert_same_weights, job_output, make_repo, server_of, submit, uninterrupted,
                                 wait_for_first_mirrored_checkpoint, weights)
from test_jobs_train_pbs_multinode import ONE_NODE, job_argv, leftovers, signal_all, world_size

pytestmark = pytest.mark.slow
TEN_STEPS = TINY + ["train.epochs=1", "data.tiles_per_epoch=160", "train.checkpoint_every_steps=1"]


def local_run(repo: Path, argv: list[str]) -> subprocess.Popen:
    """``python -m segtrain.cluster.pbs.local run -- ARGV`` (a plain qsub, run here) in the background."""
    env = {**os.environ, "SEGTRAIN_LOCAL_PBS": str(repo.parent / "state"), "PYTHONPATH": str(repo)}
    return subprocess.Popen([sys.executable, "-m", "segtrain.cluster.pbs.local", "run", "--quiet", "--", *argv], cwd=repo,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def pbs_command(repo: Path, *words: str) -> None:
    """A PBS command (qdel, qextend) of the local server, as the user types it on the frontend."""
    env = {**os.environ, "SEGTRAIN_LOCAL_PBS": str(repo.parent / "state"), "PYTHONPATH": str(repo)}
    subprocess.run([sys.executable, "-m", "segtrain.cluster.pbs.local", *words], env=env, check=True)


def qdel(repo: Path, job_id: str) -> None:
    pbs_command(repo, "qdel", job_id)


def wait_for_line(repo: Path, job_id: str, text: str, proc: subprocess.Popen) -> None:
    output = server_of(repo).get(job_id).output_paths()[0]
    deadline = time.monotonic() + 240
    while text not in output.read_text():
        assert proc.poll() is None, proc.stdout.read()
        assert time.monotonic() < deadline, f"no line {text!r} in {output}"
        time.sleep(0.05)


def run_dirs(repo: Path) -> list[Path]:
    return sorted(p for p in (repo / "runs").iterdir() if p.is_dir())


# ---- two jobs of one config at once ------------------------------------------------------------------
def test_two_jobs_of_the_same_config_started_together_get_a_run_directory_each(tmp_path, small_data_ro):
    """The same run.name stands for "same config and overrides, same second": both ask for one name."""
    repo = make_repo(tmp_path / "segtrain", small_data_ro)
    twins = TINY + ["train.epochs=1", "data.tiles_per_epoch=16", "run.name=twin"]
    jobs = [local_run(repo, job_argv(twins)), local_run(repo, job_argv(twins))]
    for proc in jobs:
        proc.communicate(timeout=300)
    runs = run_dirs(repo)
    assert [p.name for p in runs] == ["twin", "twin-2"]
    infos = [json.loads((run / "run.json").read_text()) for run in runs]
    assert sorted(s["job_id"] for info in infos for s in info["segments"]) == ["1.local", "2.local"]
    assert [info["status"] for info in infos] == ["done", "done"]


# ---- qdel --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("nproc", ["1", "2"])
def test_qdel_mid_step_leaves_checkpoint_logs_metrics_and_wandb_on_storage_and_scratch_empty(
        tmp_path, small_data_ro, nproc):
    repo = make_repo(tmp_path / "segtrain", small_data_ro)
    proc = local_run(repo, job_argv([*TEN_STEPS, "logging.wandb.mode=offline"], ONE_NODE, NPROC=nproc))
    frozen = process_tree(wait_for_first_mirrored_checkpoint(repo, proc))  # DDP workers have sessions of their own
    signal_all(frozen, signal.SIGSTOP)  # mid-step when SIGTERM arrives
    qdel(repo, "1.local")
    wait_for_line(repo, "1.local", "job killed: deleted by qdel", proc)
    time.sleep(0.2)
    signal_all(frozen, signal.SIGCONT)
    proc.communicate(timeout=120)
    job = server_of(repo).get("1.local")
    text = job_output(repo, "1.local")
    [run] = run_dirs(repo)
    info = json.loads((run / "run.json").read_text())
    assert "training stopped early with a checkpoint (SIGTERM: qdel" in text and "not resubmitting" in text
    assert info["status"] == "stopped" and world_size(run) == int(nproc)
    assert torch.load(run / "checkpoints" / "last.pt", weights_only=True)["position"]["step"] >= 1
    for name in ("logs/train.log", "metrics.jsonl", "config.yaml"):
        assert (run / name).is_file(), name
    assert list(run.glob("wandb/offline-run-*/run-*.wandb"))
    assert leftovers(repo) == [] and job.exit_status == EXIT_QDEL
    assert text.splitlines()[-1].endswith("end of job 1.local: exit 3; scratch emptied")
    print(f"\nnproc={nproc}: " + next(line for line in text.splitlines() if "after SIGTERM" in line)
          + f"; the job's last process ended {job.emptied - job.signalled:.1f} s after SIGTERM")
    resumed = submit(repo, str(run.relative_to(repo)))  # by hand: scripts/submit runs/NAME
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert json.loads((run / "run.json").read_text())["status"] == "done" and world_size(run) == int(nproc)


# ---- qrerun ------------------------------------------------------------------------------------------
def test_qrerun_mid_training_continues_the_same_run_to_the_weights_of_an_uninterrupted_run(tmp_path, small_data_ro):
    """PBS ends the job as for qdel and starts it again under its id (run_count 2): the run goes on."""
    repo = make_repo(tmp_path / "segtrain", small_data_ro)
    proc = local_run(repo, job_argv(TEN_STEPS))
    wait_for_first_mirrored_checkpoint(repo, proc)
    pbs_command(repo, "qrerun", "1.local")
    proc.communicate(timeout=300)
    job = server_of(repo).get("1.local")
    assert job.run_count == 2 and job.exit_status == 0 and server_of(repo).get("2.local") is None
    [run] = run_dirs(repo)
    info = json.loads((run / "run.json").read_text())
    assert info["status"] == "done" and [s["job_id"] for s in info["segments"]] == ["1.local", "1.local"]
    assert_same_weights(weights(run / "checkpoints" / "last.pt"),
                        uninterrupted(repo, [*TEN_STEPS, "train.device=cpu"], tmp_path / "straight"))


# ---- the walltime ------------------------------------------------------------------------------------
def trainer_processes(pgid: int) -> list[int]:
    """``python -m segtrain train`` of the job and its descendants (data loader workers, ranks)."""
    for pid in process_tree(pgid):
        try:
            words = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"segtrain" in words and words[words.index(b"segtrain") + 1:][:1] == [b"train"]:
            return process_tree(pid)
    raise AssertionError("no trainer process")


def test_qextend_while_training_moves_the_trainers_deadline_and_the_run_ends_in_one_job(tmp_path, small_data_ro):
    """The job asks qstat again every WALLTIME_POLL s; the trainer, frozen past the first walltime, goes on."""
    repo = make_repo(tmp_path / "segtrain", small_data_ro)
    argv = job_argv(TEN_STEPS, {"walltime": "00:00:45"}, WALLTIME_MARGIN="00:00:01", WALLTIME_POLL="1")
    proc = local_run(repo, argv)
    trainer = trainer_processes(wait_for_first_mirrored_checkpoint(repo, proc))
    signal_all(trainer, signal.SIGSTOP)
    pbs_command(repo, "qextend", "1.local", "00:10:00")
    wait_for_line(repo, "1.local", "walltime now 00:10:45 (was 00:00:45)", proc)
    while time.time() < server_of(repo).get("1.local").started + 47:  # past the first walltime
        assert proc.poll() is None, proc.stdout.read()
        time.sleep(0.2)
    signal_all(trainer, signal.SIGCONT)
    proc.communicate(timeout=300)
    job = server_of(repo).get("1.local")
    [run] = run_dirs(repo)
    assert job.exit_status == 0 and server_of(repo).get("2.local") is None, job_output(repo, "1.local")
    assert json.loads((run / "run.json").read_text())["status"] == "done"


def test_walltime_kill_with_a_late_sigterm_resubmits_and_the_chain_ends_as_an_uninterrupted_run(tmp_path, small_data_ro):
    repo = make_repo(tmp_path / "segtrain", small_data_ro)
    # SIGTERM 5 s after the walltime. SIGKILL 30 s after it, not 10: the 10 s budget is the qdel tests'
    # subject; here it is the decision to go on, on a machine other CPU-heavy work may slow down.
    server_of(repo).configure(walltime_late_s=5.0, kill_delay_s=30.0)
    argv = job_argv(TEN_STEPS, {"walltime": "00:00:45"}, WALLTIME_MARGIN="00:00:01")
    proc = local_run(repo, argv)
    frozen = process_tree(wait_for_first_mirrored_checkpoint(repo, proc))
    signal_all(frozen, signal.SIGSTOP)  # a step longer than the margin: the walltime comes first
    wait_for_line(repo, "1.local", "job killed: walltime", proc)
    signal_all(frozen, signal.SIGCONT)
    proc.communicate(timeout=300)
    first = job_output(repo, "1.local")
    assert "stopped early with a checkpoint (SIGTERM at the walltime)" in first and "resubmitted as 2.local" in first
    chain = sorted(server_of(repo).jobs_dir.glob("*.json"), key=lambda p: int(p.stem))
    assert [server_of(repo).get(p.stem).exit_status for p in chain][-1] == 0  # the chain went on to the end
    [run] = run_dirs(repo)
    assert_same_weights(weights(run / "checkpoints" / "last.pt"),
                        uninterrupted(repo, [*TEN_STEPS, "train.device=cpu"], tmp_path / "straight"))
