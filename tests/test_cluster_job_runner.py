"""The job's runner and what it asks of the scheduler: where scratch is on each node, how it is emptied, which
python runs the steps, what the next job's submission inherits; and that the runner needs nothing but the
standard library (it runs on the host, outside the NGC image). The jobs themselves: tests/test_jobs_*.py."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

from segtrain.cluster.job.software import python_command
from segtrain.cluster.pbs import PBS
from segtrain.cluster.scratch import JOB_FOLDER, Scratch, empty, other_node_scratch
from segtrain.cluster.slurm import NODEFILE, SLURM
from segtrain.errors import UserError

REPO = Path(__file__).resolve().parents[1]


def test_the_runner_imports_with_the_standard_library_alone():
    """Beside an NGC image the runner runs on the node's own python3, where neither torch nor yaml is installed."""
    code = ("import sys, segtrain.cluster.job.runner; "
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'yaml', 'numpy', 'torch', 'optuna', 'wandb'}))")
    out = subprocess.run([sys.executable, "-S", "-c", code], env={"PYTHONPATH": str(REPO)}, capture_output=True,
                         text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_pbs_scratch_is_the_sites_scratchdir_else_the_jobs_own_tmpdir(tmp_path):
    site = tmp_path / "scratch"
    site.mkdir()
    assert PBS.enter_job({"PBS_JOBID": "7.server", "SCRATCHDIR": str(site)}) == (Scratch(site), {})
    own = tmp_path / "pbs.7.server"
    own.mkdir()
    assert PBS.enter_job({"PBS_JOBID": "7.server", "TMPDIR": str(own)})[0] == Scratch(own)


def test_pbs_makes_its_own_folder_in_a_shared_tmpdir_and_says_what_to_ask_for_without_one(tmp_path):
    scratch, _ = PBS.enter_job({"PBS_JOBID": "7.server", "TMPDIR": str(tmp_path)})
    assert scratch.owned and scratch.path.parent == tmp_path and scratch.path.name.startswith("segtrain.7.server.")
    with pytest.raises(UserError, match="ask for scratch_local"):
        PBS.enter_job({"PBS_JOBID": "7.server", "TMPDIR": str(tmp_path / "missing")})


def test_slurm_makes_the_jobs_folder_in_scratch_base_and_lists_the_nodes_there(tmp_path, monkeypatch):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "scontrol").write_text('#!/bin/sh\n[ "$1 $2 $3" = "show hostnames n[1-2]" ] && printf "n1\\nn2\\n"\n')
    (bin_dir / "scontrol").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    base = tmp_path / "base"
    base.mkdir()
    scratch, variables = SLURM.enter_job({"SLURM_JOB_ID": "12", "SLURM_JOB_NODELIST": "n[1-2]",
                                          "SCRATCH_BASE": str(base), "SLURM_CPUS_PER_TASK": "4"})
    assert scratch.owned and scratch.path.parent == base
    assert Path(variables[NODEFILE]).read_text().split() == ["n1", "n2"]
    assert variables["OMP_NUM_THREADS"] == variables["SRUN_CPUS_PER_TASK"] == "4"


def test_a_slurm_resubmission_drops_the_array_and_the_jobs_own_tmpdir():
    now = {"SLURM_ARRAY_JOB_ID": "40", "SLURM_ARRAY_TASK_ID": "2", NODEFILE: "/s/.segtrain-nodes",
           "TMPDIR": "/s/tmp", "HOME": "/home/u"}
    assert SLURM.next_job_environ(now, {"TMPDIR": "/tmp/u"}) == {"HOME": "/home/u", "TMPDIR": "/tmp/u"}
    assert SLURM.next_job_environ(now, {}) == {"HOME": "/home/u"}


def test_another_node_uses_the_sites_scratch_else_the_first_nodes_path(tmp_path):
    first = tmp_path / "first"
    assert other_node_scratch({"SCRATCHDIR": str(tmp_path)}, first, 1, job_makes_it=False) == Scratch(tmp_path)
    assert other_node_scratch({}, first, 1, job_makes_it=False) is None  # PBS made no such folder here
    assert other_node_scratch({}, first, 1, job_makes_it=True) == Scratch(first, owned=True)  # Slurm: the job makes it


def test_a_node_that_sees_the_first_nodes_folder_works_beside_it(tmp_path):
    """Scratch shared between nodes, or the local runner's "nodes" on one machine."""
    first = tmp_path / "first"
    (first / JOB_FOLDER).mkdir(parents=True)
    scratch = other_node_scratch({}, first, 2, job_makes_it=False)
    assert scratch == Scratch(tmp_path / "first.node2", owned=True) and scratch.path.is_dir()


def test_emptying_scratch_removes_the_folder_only_when_the_job_made_it(tmp_path):
    for owned in (False, True):
        folder = tmp_path / f"scratch-{owned}"
        (folder / "data" / "sub").mkdir(parents=True)
        (folder / "run.json").write_text("{}")
        (folder / "link").symlink_to(tmp_path)  # a link is removed, not followed
        assert empty(Scratch(folder, owned=owned), {})
        assert (not folder.exists()) if owned else list(folder.iterdir()) == []
    assert tmp_path.is_dir()


def test_the_steps_run_in_a_virtualenv_or_inside_the_image_with_scratch_and_the_submit_folder_bound(tmp_path,
                                                                                                   monkeypatch):
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "python").write_text("")
    (venv / "bin" / "python").chmod(0o755)
    python, variables = python_command(venv, tmp_path / "repo", [tmp_path / "scratch"], {"PATH": "/usr/bin"})
    assert python == [str(venv / "bin" / "python")] and variables["PATH"] == f"{venv / 'bin'}:/usr/bin"
    ngc = tmp_path / "ngc"
    ngc.mkdir()
    (ngc / "image").write_text(f"{tmp_path / 'PyTorch.SIF'}\n")
    with pytest.raises(UserError, match="PyTorch.SIF .named in .*image. not found"):
        python_command(ngc, tmp_path / "repo", [], {})
    (tmp_path / "PyTorch.SIF").write_text("image")
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(UserError, match="singularity not found"):
        python_command(ngc, tmp_path / "repo", [], {})
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "singularity").write_text("")
    (tmp_path / "empty" / "singularity").chmod(0o755)
    python, variables = python_command(ngc, tmp_path / "repo", [tmp_path / "scratch"], {})
    assert python[:7] == ["singularity", "exec", "--nv", "--bind", str(tmp_path / "scratch"), "--bind",
                          str(tmp_path / "repo")] and python[-2:] == [str(tmp_path / "PyTorch.SIF"), "python"]
    assert variables["PYTHONUSERBASE"] == str(ngc)
    with pytest.raises(UserError, match="no software environment at"):
        python_command(tmp_path / "nothing", tmp_path / "repo", [], {})
