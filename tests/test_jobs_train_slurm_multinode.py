"""jobs/train.slurm on two nodes of a real Slurm (CI's: scripts/slurm_local.sh start runs two slurmd on this host).

CPU processes (gloo, ``train.device=cpu``) stand for GPUs. A job of ``--nodes=2`` runs its script on
the first node, which stages and trains there and starts jobs/node.sh on the second node through
``srun`` (stage, train, clean); the two trainers meet at a rendezvous on the first node. It must
train exactly as one node of two processes (``NPROC=2``) and leave every scratch folder empty. The
two "nodes" share this machine's file system, so the second node's scratch is a folder beside the
first's (on a cluster it is the same path on the node's own disk); that case is tested here, the
other only through tests/test_cluster_job_nodes.py.
"""
from __future__ import annotations

import json
import subprocess

import pytest
import torch

from segtrain.cluster.variables import join_overrides
from test_jobs_train_pbs import MANY_STEPS, ONE_STEP, assert_same_weights, make_repo, only_run, weights
from test_jobs_train_slurm import (LOCAL, cancel_mid_training, output, pytestmark as slurm_marks, sbatch,
                                   scratch_base, wait_until_ended)


def _nodes() -> int:
    try:
        out = subprocess.run(["sinfo", "-h", "-N", "-o", "%N"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return 0
    return len(set(out.stdout.split())) if out.returncode == 0 else 0


pytestmark = [*slurm_marks, pytest.mark.skipif(
    _nodes() < 2, reason="the Slurm here has fewer than two nodes (scripts/slurm_local.sh start makes two)")]

# One CPU a process: every trainer process computes with the same number of threads.
ONE_CPU = {**LOCAL, "cpus-per-task": "1"}
CPU_STEP = [*ONE_STEP, "train.device=cpu"]


def run_job(tmp_path_factory, small_data_ro, name: str, resources: dict[str, str], **variables: str):
    repo = make_repo(tmp_path_factory.mktemp(name) / "segtrain", small_data_ro)
    job_id = sbatch(repo, {"CONFIG": "configs/demo.yaml", "OVERRIDES": join_overrides(CPU_STEP), **variables},
                    resources)
    return repo, job_id, wait_until_ended(job_id)


@pytest.fixture(scope="module")
def two_nodes(tmp_path_factory, small_data_ro):
    return run_job(tmp_path_factory, small_data_ro, "slurm-nodes", {**ONE_CPU, "nodes": "2"})


@pytest.fixture(scope="module")
def one_node_two_processes(tmp_path_factory, small_data_ro):
    return run_job(tmp_path_factory, small_data_ro, "slurm-nproc", ONE_CPU, NPROC="2")


def world_size(run) -> int:
    return torch.load(run / "checkpoints" / "last.pt", weights_only=True)["world_size"]


def test_two_node_job_trains_one_run_and_leaves_it_on_storage_and_every_scratch_empty(two_nodes):
    repo, job_id, fields = two_nodes
    assert (fields["JobState"], fields["NumNodes"]) == ("COMPLETED", "2"), output(repo, job_id)
    run = only_run(repo)
    assert json.loads((run / "run.json").read_text())["status"] == "done" and world_size(run) == 2
    assert list(scratch_base(repo).iterdir()) == []


def test_the_second_node_stages_its_own_copy_through_srun_and_meets_the_first_at_its_rendezvous(two_nodes):
    repo, job_id, fields = two_nodes
    first, second = subprocess.run(["scontrol", "show", "hostnames", fields["NodeList"]], capture_output=True,
                                   text=True, check=True).stdout.split()
    text = output(repo, job_id)
    assert "2 nodes x 1 trainer processes" in text and f"node 1 ({second}): stage exit 0" in text
    [launch] = [line for line in text.splitlines() if line.startswith("launching:") and "--node-rank 1" in line]
    assert f"--rdzv-endpoint {first}:" in launch and ".node1/data" in launch


def test_two_nodes_of_one_process_train_exactly_as_one_node_of_two(two_nodes, one_node_two_processes):
    (nodes_repo, _, _), (nproc_repo, nproc_job, fields) = two_nodes, one_node_two_processes
    assert fields["JobState"] == "COMPLETED", output(nproc_repo, nproc_job)
    assert world_size(only_run(nproc_repo)) == 2
    assert_same_weights(weights(only_run(nodes_repo) / "checkpoints" / "last.pt"),
                        weights(only_run(nproc_repo) / "checkpoints" / "last.pt"))


def test_scancel_of_a_two_node_job_stops_both_with_a_checkpoint_copies_back_and_empties_both_scratches(
        tmp_path, small_data_ro):
    repo = make_repo(tmp_path / "segtrain", small_data_ro)
    overrides = [*MANY_STEPS, "train.epochs=50", "train.device=cpu"]
    job_id = sbatch(repo, {"CONFIG": "configs/demo.yaml", "OVERRIDES": join_overrides(overrides)},
                    {**ONE_CPU, "nodes": "2"})
    fields, text = cancel_mid_training(repo, job_id)
    assert fields["JobState"] == "CANCELLED", text
    assert "training stopped early with a checkpoint (SIGTERM" in text and "not resubmitting after SIGTERM" in text
    run = only_run(repo)
    info = json.loads((run / "run.json").read_text())
    assert info["status"] == "stopped" and info["segments"][-1]["exit_code"] == 3 and world_size(run) == 2
    assert "copied back to" in text and list(scratch_base(repo).iterdir()) == []
