"""jobs/train.slurm end to end against a real Slurm (CI starts one: scripts/slurm_local.sh start).

The same job as jobs/train.pbs, submitted with sbatch to the single-node Slurm on this machine,
with the real trainer on a small data set: a job to done, a chain of time-limit stops continued
by resubmission, scancel, a grid as a job array, and the status table from squeue. A copy of the
repository stands for the user's clone on storage; jobs make their scratch in SCRATCH_BASE, a
folder of the test. Without a Slurm controller that answers, every test here is skipped.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from segtrain.cluster.scheduler import JobState
from segtrain.cluster.variables import join_overrides
from segtrain.cluster.slurm import SLURM, job_fields
from test_jobs_train_pbs import MANY_STEPS, ONE_STEP, assert_same_weights, make_repo, only_run, uninterrupted, weights


def _slurm_answers() -> bool:
    if not shutil.which("sbatch"):
        return False
    try:
        return subprocess.run(["scontrol", "ping"], capture_output=True, timeout=30).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


pytestmark = [pytest.mark.slow, pytest.mark.skipif(
    not _slurm_answers(), reason="no Slurm controller answers here (sbatch missing or `scontrol ping` fails); "
    "start one with: scripts/slurm_local.sh install && scripts/slurm_local.sh start")]

CPUS = str(min(8, os.cpu_count()))  # the thread count uninterrupted() trains with, for bit-identical weights
# Over the directives: no GPU and little memory (the local node has neither), a short time limit.
LOCAL = {"gpus-per-node": "0", "mem": "2G", "cpus-per-task": CPUS, "time": "10"}
TWO_STEPS = MANY_STEPS + ["data.tiles_per_epoch=32"]
ENDED = ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "PREEMPTED", "BOOT_FAIL")


def sbatch(repo: Path, variables: dict[str, str], resources: dict[str, str] = LOCAL, **kw) -> str:
    """Submit jobs/train.slurm from the repository copy; the job id."""
    variables = {"SEGTRAIN_ENV": sys.prefix, "SCRATCH_BASE": str(scratch_base(repo)), **variables}
    argv = SLURM.submit_argv("jobs/train.slurm", variables, resources=resources, name="segtrain-test", **kw)
    env = {**os.environ, "PYTHONPATH": str(repo)}
    out = subprocess.run(argv, cwd=repo, env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return SLURM.job_id(out.stdout)


def scratch_base(repo: Path) -> Path:
    path = repo.parent / "scratch"
    path.mkdir(exist_ok=True)
    return path


def show(job_id: str) -> dict[str, str]:
    out = subprocess.run(["scontrol", "show", "job", job_id], capture_output=True, text=True, timeout=60)
    return job_fields(out.stdout, job_id)


def completing(job_id: str) -> bool:
    """Still in squeue: a cancelled job's processes are still ending (its state says CANCELLED already)."""
    out = subprocess.run(["squeue", "-h", "-j", job_id, "-o", "%T"], capture_output=True, text=True, timeout=60)
    return out.returncode == 0 and bool(out.stdout.strip())


def wait_until_ended(job_id: str, timeout: float = 300) -> dict[str, str]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        fields = show(job_id)
        if fields.get("JobState") in ENDED and not completing(job_id):
            return fields
        time.sleep(0.5)
    subprocess.run(["scancel", job_id])
    raise AssertionError(f"job {job_id} did not end within {timeout} s: {show(job_id)}")


def wait_for_chain(repo: Path, first: str, timeout: float = 600) -> list[str]:
    """The jobs of a resubmission chain, each waited for until it ended: run.json names the next."""
    jobs = [first]
    while True:
        wait_until_ended(jobs[-1], timeout)
        resubmissions = json.loads((only_run(repo) / "run.json").read_text()).get("resubmissions", [])
        following = [r["to"] for r in resubmissions if r["from"] == jobs[-1]]
        if not following:
            return jobs
        jobs.append(following[0])


def output(repo: Path, job_id: str) -> str:
    return (repo / f"segtrain-test.o{job_id}").read_text()


# ---- one job to done ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def done_job(tmp_path_factory, small_data_ro):
    repo = make_repo(tmp_path_factory.mktemp("slurm-demo") / "segtrain", small_data_ro)
    job_id = sbatch(repo, {"CONFIG": "configs/demo.yaml", "OVERRIDES": join_overrides(ONE_STEP)})
    return repo, job_id, wait_until_ended(job_id)


def test_slurm_job_trains_the_config_into_a_run_directory_on_storage(done_job):
    repo, job_id, fields = done_job
    assert (fields["JobState"], fields["ExitCode"]) == ("COMPLETED", "0:0"), output(repo, job_id)
    run = only_run(repo)
    info = json.loads((run / "run.json").read_text())
    assert info["status"] == "done" and [s["job_id"] for s in info["segments"]] == [job_id]
    for name in ("config.yaml", "metrics.jsonl", "checkpoints/last.pt", "checkpoints/best.pt", "logs/train.log"):
        assert (run / name).is_file(), name


def test_slurm_job_leaves_scratch_empty_and_says_what_it_did(done_job):
    repo, job_id, _ = done_job
    assert list(scratch_base(repo).iterdir()) == []
    text = output(repo, job_id)
    assert "training finished" in text and "copied back to" in text and "walltime 00:10:00 from scontrol show job" in text


def test_an_ended_jobs_state_comes_from_sacct_where_slurm_keeps_accounting(done_job, tmp_path, monkeypatch):
    """squeue no longer lists it and scontrol is out of reach (a job older than MinJobAge): sacct answers
    (CI's Slurm keeps accounting in slurmdbd)."""
    repo, job_id, _ = done_job
    argv = ["sacct", "-n", "-P", "-X", "-o", "JobID,State,ExitCode", "-j", job_id]
    deadline = time.monotonic() + 60
    while (out := subprocess.run(argv, capture_output=True, text=True, timeout=60)).stdout.strip() != f"{job_id}|COMPLETED|0:0":
        if "accounting storage is disabled" in out.stderr:
            pytest.skip("this Slurm keeps no accounting (scripts/slurm_local.sh starts slurmdbd where it is installed)")
        assert time.monotonic() < deadline, out.stdout + out.stderr  # slurmdbd records a job's end shortly after it
        time.sleep(1)
    for command in ("squeue", "sacct"):
        (tmp_path / command).symlink_to(shutil.which(command))
    monkeypatch.setenv("PATH", str(tmp_path))
    assert SLURM.states([job_id]) == {job_id: JobState("F", 0)}


# ---- through scripts/submit --scheduler slurm -------------------------------------------------------
def submit(repo: Path, *args: str) -> subprocess.CompletedProcess:
    """``scripts/submit ARGS`` for the local Slurm (no GPU, 2 GB); jobs make their scratch in TMPDIR."""
    env = {**os.environ, "TMPDIR": str(scratch_base(repo)), "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    argv = [str(repo / "scripts" / "submit"), *args, "--scheduler", "slurm", "--gpus", "0", "--ncpus", CPUS,
            "--mem", "2gb", "--env", sys.prefix]
    result = subprocess.run(argv, cwd=repo, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def submitted_ids(result: subprocess.CompletedProcess) -> list[str]:
    [line] = [line for line in result.stdout.splitlines() if line.startswith("submitted ")]
    return line.removeprefix("submitted ").split(";")[0].split(", ")


@pytest.fixture(scope="module")
def chain(tmp_path_factory, small_data_ro):
    """Two steps and the final validation, one per job: a 10-minute limit minus a margin of 9:59 leaves the
    trainer a second (it always does one step; validation comes after the last)."""
    repo = make_repo(tmp_path_factory.mktemp("slurm-chain") / "segtrain", small_data_ro)
    [first] = submitted_ids(submit(repo, "configs/demo.yaml", *TWO_STEPS, "--walltime", "00:10:00",
                                   "--margin", "00:09:59", "--name", "segtrain-test"))
    return repo, wait_for_chain(repo, first)


def test_time_limit_chain_resubmits_with_sbatch_dependency_and_ends_with_uninterrupted_weights(chain, tmp_path):
    repo, jobs = chain
    run = only_run(repo)
    info = json.loads((run / "run.json").read_text())
    assert len(jobs) == 3 and [s["job_id"] for s in info["segments"]] == jobs and info["status"] == "done"
    assert [(r["from"], r["to"]) for r in info["resubmissions"]] == list(zip(jobs, jobs[1:]))
    assert show(jobs[1])["Dependency"] in ("(null)", f"afterany:{jobs[0]}(unfulfilled)")  # resolved once it ran
    for job_id in jobs[:-1]:
        assert "training stopped early with a checkpoint (the time limit)" in output(repo, job_id)
    assert list(scratch_base(repo).iterdir()) == []
    assert_same_weights(weights(run / "checkpoints" / "last.pt"), uninterrupted(repo, TWO_STEPS, tmp_path / "straight"))


def test_status_reads_the_chain_from_run_json_and_squeue(chain):
    repo, jobs = chain
    result = submit(repo, "--status", "runs")
    assert jobs[-1] in result.stdout and "1 runs: 1 done" in result.stdout


def cancel_mid_training(repo: Path, job_id: str) -> tuple[dict[str, str], str]:
    """scancel once a checkpoint is on storage; the job's scontrol fields when it ended, and its output."""
    deadline = time.monotonic() + 300
    while not list((repo / "runs").glob("*/checkpoints/last.pt")):
        assert time.monotonic() < deadline and show(job_id).get("JobState") not in ENDED, output(repo, job_id)
        time.sleep(0.2)
    subprocess.run(["scancel", job_id], check=True, timeout=60)
    return wait_until_ended(job_id), output(repo, job_id)


def test_scancel_checkpoints_copies_back_cleans_up_and_does_not_resubmit(tmp_path, small_data_ro):
    repo = make_repo(tmp_path / "segtrain", small_data_ro)
    [job_id] = submitted_ids(submit(repo, "configs/demo.yaml", *MANY_STEPS, "train.epochs=50", "--name", "segtrain-test"))
    fields, text = cancel_mid_training(repo, job_id)
    assert fields["JobState"] == "CANCELLED"
    assert "training stopped early with a checkpoint (SIGTERM" in text and "not resubmitting after SIGTERM" in text
    info = json.loads((only_run(repo) / "run.json").read_text())
    assert info["status"] == "stopped" and info["segments"][-1]["exit_code"] == 3 and "resubmissions" not in info
    assert "copied back to" in text and list(scratch_base(repo).iterdir()) == []


def test_grid_as_a_job_array_of_three_trains_every_point(tmp_path, small_data_ro):
    repo = make_repo(tmp_path / "segtrain", small_data_ro)
    (repo / "grid.yaml").write_text("base: configs/demo.yaml\nproduct: {optim.lr: [0.001, 0.002, 0.003]}\n")
    [array_id] = submitted_ids(submit(repo, "grid.yaml", *ONE_STEP, "--array", "--name", "segtrain-test"))
    tasks = [SLURM.subjob_id(array_id, index) for index in range(3)]
    for task in tasks:
        wait_until_ended(task)
    [grid] = [p for p in (repo / "runs").iterdir() if p.is_dir()]
    for index, task in enumerate(tasks):
        info = json.loads((grid / f"grid-{index:02d}" / "run.json").read_text())
        assert info["status"] == "done" and [s["job_id"] for s in info["segments"]] == [task]
    status = submit(repo, "--status", str(grid))
    assert "3 runs: 3 done" in status.stdout and all(task in status.stdout for task in tasks)
    assert list(scratch_base(repo).iterdir()) == []


# ---- the time-limit warning: --signal=B:USR1@SECONDS ------------------------------------------------
def test_usr1_before_the_time_limit_stops_the_trainer_with_a_checkpoint_and_resubmits(tmp_path, small_data_ro):
    """A 3-minute limit with the warning 60 s before it: slurmctld, which looks every 30 s, sends USR1
    90 to 120 s into the job, long before the trainer's own limit (a margin of 5 s: at 175 s)."""
    repo = make_repo(tmp_path / "segtrain", small_data_ro)
    job_id = sbatch(repo, {"CONFIG": "configs/demo.yaml", "OVERRIDES": join_overrides([*MANY_STEPS, "train.epochs=1000"]),
                           "WALLTIME_MARGIN": "00:00:05"},
                    {**LOCAL, "time": "3", "signal": "B:USR1@60"})
    fields = wait_until_ended(job_id)
    text = output(repo, job_id)
    info = json.loads((only_run(repo) / "run.json").read_text())
    [resubmission] = info.get("resubmissions", [None])
    assert resubmission and resubmission["from"] == job_id, text
    subprocess.run(["scancel", resubmission["to"]], timeout=60)  # the next job would train on, to its own warning
    wait_until_ended(resubmission["to"])
    assert "USR1: the time limit is near" in text and "(SIGTERM); checkpoint written" in text
    assert "training stopped early with a checkpoint (the time limit)" in text and f"resubmitted as {resubmission['to']}" in text
    assert info["segments"][0]["job_id"] == job_id and info["segments"][0]["exit_code"] == 3
    assert fields["ExitCode"] == "3:0" and "copied back to" in text
