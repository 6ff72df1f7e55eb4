"""jobs/train.pbs on several processes and several nodes, in local PBS-like mode, with the real trainer.

CPU processes (gloo, ``train.device=cpu``) stand for GPUs: the job variable ``NPROC`` sets the processes per node. Two
nodes are two chunks (``select=2:...``) that the local runner puts on two loopback hosts, each
with its own scratch; the job reaches the second through the runner's pbsdsh stand-in. As in
tests/test_jobs_train_pbs.py, a copy of the repository stands for the user's clone on storage.
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

from segtrain.cluster.pbs.local.server import process_tree
from segtrain.cluster.pbs.qsub import qsub_argv
from segtrain.cluster.variables import join_overrides
from test_jobs_train_pbs import (ONE_STEP, TINY, assert_same_weights, job_output, make_repo, only_run, server_of,
                                wait_for_first_mirrored_checkpoint, weights)

pytestmark = pytest.mark.slow
# One CPU a chunk: every trainer process computes with the same number of threads.
ONE_NODE = {"select": "1:ncpus=1:ngpus=1:mem=4gb:scratch_local=1gb"}
TWO_NODES = {"select": "2:ncpus=1:ngpus=1:mem=4gb:scratch_local=1gb", "place": "scatter"}
TEN_STEPS = TINY + ["train.epochs=1", "data.tiles_per_epoch=160", "train.checkpoint_every_steps=1"]


def job_argv(overrides: list[str], resources: dict[str, str] | None = None, **variables: str) -> list[str]:
    """qsub's arguments for jobs/train.pbs training configs/demo.yaml on CPU in this test's Python environment."""
    overrides = [*overrides, "train.device=cpu"]
    return qsub_argv("jobs/train.pbs", {"CONFIG": "configs/demo.yaml", "OVERRIDES": join_overrides(overrides),
                                        "SEGTRAIN_ENV": sys.prefix, **variables}, resources=resources)[1:]


def run_job(repo: Path, argv: list[str]):
    server = server_of(repo)
    [job] = server.run_chain(server.submit(argv, os.environ, repo))
    return job


def leftovers(repo: Path) -> list[str]:
    """Whatever the jobs left in any node's scratch or TMPDIR (the runner removes empty ones)."""
    state = repo.parent / "state"
    return sorted(str(p.relative_to(state)) for kind in ("scratch", "tmp") for p in (state / kind).glob("*"))


def signal_all(pids: list[int], sig: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


def world_size(run: Path) -> int:
    return torch.load(run / "checkpoints" / "last.pt", weights_only=True)["world_size"]


@pytest.fixture(scope="module")
def one_node_two_processes(tmp_path_factory, small_data_ro):
    repo = make_repo(tmp_path_factory.mktemp("nproc") / "segtrain", small_data_ro)
    return repo, run_job(repo, job_argv(ONE_STEP, ONE_NODE, NPROC="2"))


@pytest.fixture(scope="module")
def two_nodes(tmp_path_factory, small_data_ro):
    repo = make_repo(tmp_path_factory.mktemp("nodes") / "segtrain", small_data_ro)
    return repo, run_job(repo, job_argv(ONE_STEP, TWO_NODES))


def test_job_with_nproc_2_trains_one_run_with_two_processes_and_ends_done(one_node_two_processes):
    repo, job = one_node_two_processes
    assert job.exit_status == 0, job_output(repo, job.id)
    run = only_run(repo)
    assert json.loads((run / "run.json").read_text())["status"] == "done" and world_size(run) == 2
    assert "2 trainer processes (NPROC=2)" in job_output(repo, job.id) and leftovers(repo) == []


def test_two_node_job_trains_one_run_and_leaves_it_on_storage_and_every_scratch_empty(two_nodes):
    repo, job = two_nodes
    assert job.exit_status == 0, job_output(repo, job.id)
    run = only_run(repo)
    assert json.loads((run / "run.json").read_text())["status"] == "done" and world_size(run) == 2
    assert leftovers(repo) == []


def test_the_second_node_trains_on_its_own_staged_copy_of_the_data_set(two_nodes):
    repo, job = two_nodes
    text = job_output(repo, job.id)
    assert "rendezvous on 127.0.0.1:" in text and "node 1 (127.0.0.2): stage exit 0" in text
    second = [line for line in text.splitlines() if line.startswith("launching:") and "--node-rank 1" in line]
    assert len(second) == 1 and f"scratch/{job.id}@127.0.0.2/data" in second[0]


def test_two_nodes_of_one_process_train_exactly_as_one_node_of_two(two_nodes, one_node_two_processes):
    (nodes_repo, _), (nproc_repo, _) = two_nodes, one_node_two_processes
    assert_same_weights(weights(only_run(nodes_repo) / "checkpoints" / "last.pt"),
                        weights(only_run(nproc_repo) / "checkpoints" / "last.pt"))


def test_two_node_job_deleted_with_sigterm_stops_every_rank_with_a_checkpoint_and_cleans_up(tmp_path, small_data_ro):
    repo = make_repo(tmp_path / "segtrain", small_data_ro)
    env = {**os.environ, "SEGTRAIN_LOCAL_PBS": str(repo.parent / "state"), "PYTHONPATH": str(repo)}
    proc = subprocess.Popen([sys.executable, "-m", "segtrain.cluster.pbs.local", "run", "--quiet", "--",
                             *job_argv(TEN_STEPS, TWO_NODES)], cwd=repo, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    frozen = process_tree(wait_for_first_mirrored_checkpoint(repo, proc))  # trainers have sessions of their own
    signal_all(frozen, signal.SIGSTOP)  # both nodes, mid-training, when SIGTERM arrives
    proc.send_signal(signal.SIGTERM)  # the runner passes it on as qdel does: to every process on every node
    output = server_of(repo).get("1.local").output_paths()[0]
    while "job killed: deleted" not in output.read_text():  # the runner notes it, then signals
        assert proc.poll() is None
        time.sleep(0.05)
    time.sleep(0.2)
    signal_all(frozen, signal.SIGCONT)
    proc.communicate(timeout=120)
    text = job_output(repo, "1.local")
    assert "training stopped early with a checkpoint (SIGTERM" in text and "not resubmitting after SIGTERM" in text
    run = only_run(repo)
    info = json.loads((run / "run.json").read_text())
    assert info["status"] == "stopped" and info["segments"][-1]["exit_code"] == 3 and world_size(run) == 2
    assert torch.load(run / "checkpoints" / "last.pt", weights_only=True)["position"]["step"] >= 1
    assert leftovers(repo) == []
