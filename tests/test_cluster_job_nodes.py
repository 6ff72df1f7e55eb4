"""A job's nodes and processes: telling nodes apart, processes per node, launch flags, pbsdsh's
report, the job's steps for the other nodes, and the local runner's chunks and pbsdsh stand-in."""
import argparse
import dataclasses
import os
import re
import socket
from pathlib import Path

import pytest

from segtrain.cluster.job.resubmit import resubmission
from segtrain.cluster.job.steps import Plan, main, make_plan, node_commands, node_status, step_stage, trainer_args
from segtrain.cluster.pbs.local.server import LocalServer
from segtrain.cluster.job.nodes import (RDZV_PORT_BASE, check_port_free, launch_flags, processes_per_node,
                                        rendezvous_port, select_gpus)
from segtrain.cluster.pbs.nodes import task_exit_status
from segtrain.cluster.scheduler import Node, job_nodes
from segtrain.cluster.pbs.directives import parse_qsub_args
from segtrain.cluster.site import METACENTRUM, OPENPBS
from segtrain.cluster.variables import decode_value, join_overrides
from segtrain.config import load_config
from segtrain.errors import UserError
from test_cluster_job_steps import job_env, workdir  # noqa: F401  (workdir is a fixture)

QSTAT_TWO_NODES = """Job Id: 7.server
    Resource_List.select = 2:ncpus=16:ngpus=2:mem=64gb:scratch_local=100gb
    Resource_List.place = scatter
    Resource_List.walltime = 01:00:00
"""


# ---- nodes and processes ------------------------------------------------------------------------
def test_nodes_are_told_apart_by_host_name_each_reached_at_its_first_nodefile_line():
    assert job_nodes("n1\nn1\nn2\nn1\nn3\n") == [Node("n1", 0), Node("n2", 2), Node("n3", 4)]


def test_select_gpus_counts_the_gpus_of_every_chunk():
    assert select_gpus("2:ncpus=8:ngpus=2:mem=8gb+1:ncpus=1:ngpus=1") == 5
    assert select_gpus("1:ncpus=8:mem=32gb") == 0


@pytest.mark.parametrize("environ, select, nodes, devices, expected", [
    ({"NPROC": "3", "CUDA_VISIBLE_DEVICES": "0"}, "1:ngpus=1", 1, 8, 3),  # an explicit NPROC wins
    ({"CUDA_VISIBLE_DEVICES": "GPU-5a1,GPU-9c2"}, "1:ngpus=1", 1, 8, 2),  # the GPUs the site confined the job to
    ({"CUDA_VISIBLE_DEVICES": ""}, "1:ngpus=2", 1, 8, 1),  # confined to none
    ({"ROCR_VISIBLE_DEVICES": "0,1,2,3"}, None, 1, 8, 4),  # LUMI's Slurm confines a job's AMD GPUs (GCDs) so
    ({"ROCR_VISIBLE_DEVICES": "0,1,2,3", "HIP_VISIBLE_DEVICES": "1,2"}, None, 1, 8, 2),  # HIP's list is within it
    ({}, "2:ncpus=16:ngpus=2", 2, 8, 2),  # the select statement's GPUs, shared by the nodes
    ({}, "1:ngpus=4", 1, 2, 2),  # ... but no more than this node shows
    ({}, "1:ngpus=2", 1, 0, 1),  # no GPU at all: one process
    ({}, "1:ncpus=8:mem=32gb", 1, 8, 1),
    ({}, None, 1, 8, 1),
])
def test_one_process_per_gpu_the_job_has_on_a_node(environ, select, nodes, devices, expected):
    assert processes_per_node(environ, select, nodes, lambda: devices)[0] == expected


@pytest.mark.parametrize("environ, select, nodes, message", [
    ({"NPROC": "0"}, None, 1, "NPROC=0: expected a whole number >= 1"),
    ({"NPROC": "two"}, None, 1, "NPROC=two: expected a whole number >= 1"),
    ({}, "1:ngpus=2+1:ngpus=1", 2, "3 GPUs cannot be shared evenly by 2 nodes"),
])
def test_processes_per_node_refuses_what_it_cannot_start(environ, select, nodes, message):
    with pytest.raises(UserError, match=message):
        processes_per_node(environ, select, nodes, lambda: 8)


def test_rendezvous_port_follows_the_job_id_in_a_band_below_the_ephemeral_ports():
    assert rendezvous_port("12345.pbs-m1.metacentrum.cz") == RDZV_PORT_BASE + 345
    assert rendezvous_port("13[2].server") == RDZV_PORT_BASE + 132  # an array's subjob
    assert all(RDZV_PORT_BASE <= rendezvous_port(f"{seq}.s") < 32768 for seq in range(0, 5000, 7))


def test_a_taken_rendezvous_port_is_refused_naming_host_and_port():
    with socket.socket() as taken:
        taken.bind(("", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(UserError, match=f"rendezvous port {port} on node1 is taken"):
            check_port_free("node1", port)


def test_one_process_on_one_node_needs_no_launch_flags():
    assert launch_flags(1, ["n1"], 0, None, "7.server") == []


def test_several_processes_on_one_node_need_only_their_number():
    assert launch_flags(2, ["n1"], 0, None, "7.server") == ["--nproc-per-node", "2"]


def test_every_node_meets_at_the_first_nodes_rendezvous_with_its_own_rank():
    assert launch_flags(2, ["n1", "n2"], 1, 29507, "7.server") == [
        "--nproc-per-node", "2", "--nnodes", "2", "--node-rank", "1", "--rdzv-endpoint", "n1:29507",
        "--rdzv-id", "7.server"]


def test_the_task_exit_status_is_read_from_pbsdshs_verbose_report():
    report = ("pbsdsh: spawned task 0x00000000 on logical node 2 event 1\n"
              "pbsdsh: waiting on 1 spawned and 0 obits\n/opt/pbs/bin/pbsdsh: task 0x00000000 exit status 2\n")
    assert task_exit_status(report) == 2
    assert task_exit_status("pbsdsh: waiting on 1 spawned and 0 obits\n") is None  # the task never reported


# ---- the job's plan and steps for several nodes --------------------------------------------------
def two_node_plan(workdir: Path, **variables: str) -> Plan:
    nodefile = workdir.parent / "nodefile"
    nodefile.write_text("n1\nn1\nn2\nn2\n")  # two chunks of mpiprocs=2 each
    environ = job_env(workdir, CONFIG="configs/small.yaml", PBS_NODEFILE=str(nodefile), CUDA_VISIBLE_DEVICES="0,1",
                      **variables)
    return make_plan(environ, [], 1000.0, QSTAT_TWO_NODES, workdir.parent / "scratch")[0]


def test_plan_of_a_two_node_job_names_its_nodes_processes_and_rendezvous(workdir):
    plan = two_node_plan(workdir)
    assert (plan.hosts, plan.host_indices, plan.nproc_per_node) == (["n1", "n2"], [0, 2], 2)
    assert plan.rdzv_port == rendezvous_port("7.server") and plan.resources["place"] == "scatter"


def test_plan_refuses_a_global_batch_the_processes_cannot_share(workdir):
    with pytest.raises(UserError, match=r"train.batch_size: 6 \(the global batch\) is not divisible by the 4 processes"):
        two_node_plan(workdir, OVERRIDES="train.batch_size=6")


def test_the_next_job_of_a_chain_gets_the_same_nodes_and_processes(workdir):
    argv, _ = resubmission(two_node_plan(workdir, NPROC="2"), 3, None, None)
    request = parse_qsub_args(argv[1:], environ={})
    assert request.resources["place"] == "scatter" and request.resources["select"].startswith("2:")
    assert decode_value(request.variables["NPROC"]) == "2"


def test_rank_0_trains_with_the_rendezvous_and_mirrors_the_run_to_storage(workdir):
    plan = dataclasses.replace(two_node_plan(workdir), data_root="/scratch/data")
    words, _ = trainer_args(plan, load_config(plan.config), now=plan.job_start)
    assert words[words.index("--run-dir") + 1] == str(plan.work_run) and "--mirror" in words
    assert words[-10:] == ["--nproc-per-node", "2", "--nnodes", "2", "--node-rank", "0",
                           "--rdzv-endpoint", f"n1:{plan.rdzv_port}", "--rdzv-id", "7.server"]


def test_another_node_trains_in_rank_0s_run_directory_and_mirrors_nothing(workdir):
    first = two_node_plan(workdir)
    other = dataclasses.replace(first, node_rank=1, first_scratch=first.scratch, scratch="/scratch/n2",
                                data_root="/scratch/n2/data")
    words, _ = trainer_args(other, load_config(other.config), now=other.job_start)
    assert words[words.index("--run-dir") + 1] == str(first.work_run) and "--mirror" not in words
    assert 'data.root="/scratch/n2/data"' in words and words[words.index("--node-rank") + 1] == "1"


def test_other_nodes_run_node_sh_through_pbsdsh_at_their_first_nodefile_line(workdir):
    plan = two_node_plan(workdir)
    [(rank, argv)] = node_commands(plan, "stage", "/envs/segtrain").items()
    assert rank == 1 and argv[:-1] == [
        "pbsdsh", "-v", "-n", "2", "--", "/bin/bash", "-l", str(workdir / "jobs" / "node.sh"), "stage", "1",
        str(workdir), "/envs/segtrain", plan.scratch]
    assert Plan.from_word(argv[-1]) == dataclasses.replace(plan, node_rank=1, first_scratch=plan.scratch)


def test_on_slurm_other_nodes_run_node_sh_as_a_step_on_the_named_node_of_scontrols_list(workdir):
    nodefile = workdir.parent / "nodes"
    nodefile.write_text("acn01\nacn07\n")  # scontrol show hostnames acn[01,07]
    environ = {"SLURM_JOB_ID": "41", "SLURM_SUBMIT_DIR": str(workdir), "SEGTRAIN_NODEFILE": str(nodefile),
               "CONFIG": "configs/small.yaml", "CUDA_VISIBLE_DEVICES": "0,1"}
    plan = make_plan(environ, [], 0.0, None, workdir.parent / "scratch")[0]
    assert (plan.scheduler, plan.hosts, plan.nproc_per_node) == ("slurm", ["acn01", "acn07"], 2)
    [(rank, argv)] = node_commands(plan, "train", "/envs/segtrain").items()
    assert rank == 1 and argv[:10] == ["srun", "--nodes=1", "--ntasks=1", "--nodelist=acn07", "--overlap", "--mem=0",
                                       "--kill-on-bad-exit=0", "--", "/bin/bash", "-l"]
    assert trainer_args(dataclasses.replace(plan, data_root="/d"), load_config(plan.config), now=0.0)[0][-6:] == [
        "--node-rank", "0", "--rdzv-endpoint", f"acn01:{rendezvous_port('41')}", "--rdzv-id", "41"]


def test_on_slurm_a_node_ended_as_node_sh_said_srun_says_nothing_of_a_0(workdir):
    plan = dataclasses.replace(two_node_plan(workdir), scheduler="slurm", hosts=["n1", "n2", "n3"])
    folder = workdir.parent / "job"
    folder.mkdir()
    (folder / "node-1.stage.out").write_text("[2026-11-30 21:00:45] node 1 (n2): staging\nnode.sh: exit status 0\n")
    (folder / "node-2.stage.out").write_text("srun: error: Unable to create step for job 41: Job/step already completing\n")
    assert node_status(plan, "stage", folder) == {1: 0, 2: None}
    (folder / "node-2.stage.out").write_text("node.sh: exit status 1\nsrun: error: n3: task 0: Exited with exit code 1\n")
    assert node_status(plan, "stage", folder) == {1: 0, 2: 1}


def test_a_one_node_job_starts_nothing_elsewhere(workdir):
    plan = make_plan(job_env(workdir, CONFIG="configs/small.yaml"), [], 0.0, None, workdir.parent / "scratch")[0]
    assert node_commands(plan, "train", "/envs/segtrain") == {}


def test_the_plan_word_carries_any_override_verbatim_in_characters_no_tool_interprets(workdir):
    overrides = ["run.name=a b; $(x)", 'logging.wandb.tags=["it\'s", "c,d"]']
    plan = two_node_plan(workdir, OVERRIDES=join_overrides(overrides))
    word = plan.to_word()
    assert re.fullmatch(r"[A-Za-z0-9%_.~-]+", word) and Plan.from_word(word).overrides == overrides


def test_an_unreadable_plan_word_is_a_user_error():
    with pytest.raises(UserError, match="job plan given on the command line is unreadable"):
        Plan.from_word("%7Bnot%20json")


def test_node_status_fails_when_a_node_failed_or_pbsdsh_reported_nothing(workdir, capsys):
    plan = dataclasses.replace(two_node_plan(workdir), hosts=["n1", "n2", "n3"], host_indices=[0, 2, 4])
    folder = workdir.parent / "job"
    folder.mkdir()
    (folder / "node-1.stage.out").write_text("pbsdsh: task 0x00000000 exit status 0\n")
    assert node_status(plan, "stage", folder) == {1: 0, 2: None}
    plan.save(folder / "plan.json")
    assert main(["node-status", str(folder / "plan.json"), "stage", "--dir", str(folder)]) == 1
    assert "node 2 (n3): stage no exit status reported (not started, or stopped)" in capsys.readouterr().out


def test_another_node_refuses_to_continue_a_run_whose_rank_0_directory_it_cannot_see(workdir):
    run = workdir / "storage" / "runs" / "old"
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "last.pt").write_bytes(b"checkpoint")
    first = two_node_plan(workdir, RUN=str(run))
    (workdir.parent / "n2").mkdir()
    other = dataclasses.replace(first, node_rank=1, first_scratch="/nowhere/scratch", scratch=str(workdir.parent / "n2"))
    other.save(workdir.parent / "n2" / "plan.json")
    with pytest.raises(UserError, match="rank 0's run directory is not on this node"):
        step_stage(argparse.Namespace(plan=workdir.parent / "n2" / "plan.json"))


# ---- the local runner: chunks on loopback hosts, and pbsdsh -----------------------------------------
@pytest.fixture
def server(tmp_path, monkeypatch) -> LocalServer:
    monkeypatch.setenv("SEGTRAIN_LOCAL_PBS", str(tmp_path / "state"))
    return LocalServer()


def run_script(server: LocalServer, tmp_path: Path, body: str, *resources: str, site=METACENTRUM):
    work = tmp_path / "work"
    work.mkdir(exist_ok=True)
    (work / "job.sh").write_text("#!/bin/bash\n#PBS -N t\n#PBS -j oe\n" + body)
    options = [word for resource in resources for word in ("-l", resource)]
    job = server.submit([*options, "job.sh"], {"HOME": str(tmp_path), "PATH": os.environ["PATH"]}, work, site=site)
    [done] = server.run_chain(job, kill_delay=2)
    return done, done.output_paths()[0].read_text()


def test_each_chunk_is_a_loopback_host_of_its_own_unless_packed(server, tmp_path):
    _, text = run_script(server, tmp_path, 'cat "$PBS_NODEFILE"\n', "select=2:ncpus=1")
    assert text.split() == ["127.0.0.1", "127.0.0.2"]
    _, text = run_script(server, tmp_path, 'cat "$PBS_NODEFILE"\n', "select=2:ncpus=1", "place=pack")
    assert text.split() == ["127.0.0.1", "127.0.0.1"]


def test_pbsdsh_runs_a_task_on_another_host_with_its_own_scratch_and_reports_its_exit_status(server, tmp_path):
    body = ("pbsdsh -v -n 1 -- /bin/sh -c 'echo \"task $PWD $SCRATCHDIR $TMPDIR\"; exit 3' 2>&1\n"
            'echo "pbsdsh $?"; echo "job $SCRATCHDIR"\n')
    job, text = run_script(server, tmp_path, body, "select=2:ncpus=1")
    [task] = [line.split() for line in text.splitlines() if line.startswith("task ")]
    assert task[1] == str(tmp_path) and task[2].endswith(f"/scratch/{job.id}@127.0.0.2")  # in $HOME, its own scratch
    assert task[3].endswith(f"/tmp/pbs.{job.id}@127.0.0.2") and f"job {job.scratch}" in text
    assert "pbsdsh: task 0x00000000 exit status 3" in text and "pbsdsh 0" in text  # pbsdsh itself exits 0


def test_pbsdsh_passes_sigterm_to_every_process_of_its_task_and_exits_1(server, tmp_path):
    (tmp_path / "task.sh").write_text("sh -c 'trap \"echo grandchild-TERM; exit 0\" TERM; while :; do sleep 0.1; done' &\n"
                                      "wait\n")
    body = 'pbsdsh -n 1 -- /bin/sh "$HOME/task.sh" &\nsleep 1\nkill -TERM $!\nwait $!\necho "pbsdsh $?"\nsleep 0.5\n'
    _, text = run_script(server, tmp_path, body, "select=2:ncpus=1", site=OPENPBS)
    assert "grandchild-TERM" in text and "pbsdsh: killing task 0x00000000 signal 15" in text and "pbsdsh 1" in text


def test_another_hosts_tmpdir_goes_with_the_job_and_its_scratch_stays_only_when_not_empty(server, tmp_path):
    body = "pbsdsh -n 1 -- /bin/sh -c 'touch \"$SCRATCHDIR/result\" \"$TMPDIR/junk\"'\n"
    job, _ = run_script(server, tmp_path, body, "select=2:ncpus=1")
    state = tmp_path / "state"
    assert sorted(p.name for p in (state / "scratch").iterdir()) == [f"{job.id}@127.0.0.2"]
    assert not any((state / "tmp").iterdir())
