"""jobs/train.pbs end to end, in local PBS-like mode, with the real trainer on a small data set.

The repository is copied to a temporary folder that stands for the user's clone on storage
(``runs/`` and ``data/demo`` inside it are "storage"); the runner's state folder holds the
jobs' scratch. Trainings are tiny (64 px tiles, a 2-level U-Net of width 8, one or two steps
per epoch), so each job takes seconds.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from segtrain.cluster.frontend.status import status_rows
from segtrain.cluster.pbs.local.server import LocalServer
from segtrain.cluster.pbs.qsub import qsub_argv
from segtrain.run.report import OTHER, PHASES
from segtrain.run.run_json import problems

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
TINY = ["logging.wandb.mode=disabled", "data.tile_size=64", "data.overlap=8", "model.base_width=8", "model.depth=2",
        "train.batch_size=16", "logging.every_steps=1", "logging.num_samples=1"]
ONE_STEP = TINY + ["train.epochs=1", "data.tiles_per_epoch=16"]  # one epoch of one step
MANY_STEPS = TINY + ["train.epochs=1", "data.tiles_per_epoch=48", "train.checkpoint_every_steps=1"]  # 3 steps


def make_repo(root: Path, data: Path) -> Path:
    """A copy of the repository, as cloned on storage, with the demo data set in data/demo."""
    for name in ("segtrain", "jobs", "configs", "scripts"):
        shutil.copytree(REPO / name, root / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(data, root / "data" / "demo")
    return root


def submit(repo: Path, *args: str, wait: bool = True):
    """``scripts/submit ARGS --local --quiet`` from the repository root, with this test's venv on PATH."""
    env = {**os.environ, "SEGTRAIN_LOCAL_PBS": str(repo.parent / "state"),
           "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    argv = [str(repo / "scripts" / "submit"), *args, "--local", "--quiet"]
    if not wait:
        return subprocess.Popen(argv, cwd=repo, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    return subprocess.run(argv, cwd=repo, env=env, capture_output=True, text=True, timeout=300)


def server_of(repo: Path) -> LocalServer:
    return LocalServer(repo.parent / "state")


def job_output(repo: Path, job_id: str) -> str:
    return server_of(repo).get(job_id).output_paths()[0].read_text()


def only_run(repo: Path) -> Path:
    [run] = [p for p in (repo / "runs").iterdir() if p.is_dir()]
    return run


def weights(checkpoint: Path) -> dict:
    return torch.load(checkpoint, map_location="cpu", weights_only=True)["model"]


def assert_same_weights(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def uninterrupted(repo: Path, overrides: list[str], run_dir: Path) -> dict:
    """Final weights of the same training run straight through, with the jobs' thread count."""
    env = {**os.environ, "PYTHONPATH": str(repo), "OMP_NUM_THREADS": str(min(8, os.cpu_count()))}
    subprocess.run([sys.executable, "-m", "segtrain", "train", "configs/demo.yaml", *overrides, "--run-dir", str(run_dir)],
                   cwd=repo, env=env, check=True, capture_output=True, timeout=300)
    return weights(run_dir / "checkpoints" / "last.pt")


def wait_for_first_mirrored_checkpoint(repo: Path, proc: subprocess.Popen) -> int:
    """The process group of job 1 once its first checkpoint has reached storage."""
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        job = server_of(repo).get("1.local")
        runs = repo / "runs"
        if job and job.pgid and runs.is_dir() and any(runs.glob("*/checkpoints/last.pt")):
            return job.pgid
        assert proc.poll() is None, proc.stdout.read()
        time.sleep(0.01)
    raise AssertionError("no checkpoint reached storage")


# ---- the demo job: scripts/submit configs/demo.yaml --local -------------------------------------
@pytest.fixture(scope="module")
def demo_job(tmp_path_factory, small_data_ro):
    repo = make_repo(tmp_path_factory.mktemp("demo") / "segtrain", small_data_ro)
    result = submit(repo, "configs/demo.yaml", *ONE_STEP)
    return repo, result


def test_local_demo_job_trains_the_config_into_a_run_directory_on_storage(demo_job):
    repo, result = demo_job
    assert result.returncode == 0, result.stdout + result.stderr
    run = only_run(repo)
    info = json.loads((run / "run.json").read_text())
    assert info["status"] == "done" and [s["job_id"] for s in info["segments"]] == ["1.local"]
    for name in ("config.yaml", "metrics.jsonl", "checkpoints/last.pt", "checkpoints/best.pt", "logs/train.log"):
        assert (run / name).is_file(), name
    assert info["data_source"] == str(repo / "data" / "demo")


def test_local_demo_job_leaves_scratch_empty(demo_job):
    repo, _ = demo_job
    job = server_of(repo).get("1.local")
    assert job.exit_status == 0 and not Path(job.scratch).exists() and job.tmpdir_left == []


def test_local_demo_job_shares_its_run_and_output_with_the_group_although_pbs_starts_it_with_umask_077(demo_job):
    repo, _ = demo_job
    run = only_run(repo)
    for path in (run, run / "checkpoints", run / "run.json", run / "checkpoints" / "last.pt", run / "logs" / "train.log",
                 repo / "demo.o1"):
        assert path.stat().st_mode & 0o040, path  # group-readable (the job script's #PBS -W umask=022)
    assert server_of(repo).get("1.local").umask == "022"


def test_a_job_submitted_with_umask_077_keeps_its_run_private_although_the_scripts_directive_says_022(tmp_path,
                                                                                                   small_data_ro):
    """On PBS `qsub -W umask=077` loses to the script's #PBS -W umask=022 (the local server behaves so); the
    job's own UMASK does not. PBS still writes the job's output file with the directive's umask."""
    repo = make_repo(tmp_path / "segtrain", small_data_ro)
    result = submit(repo, "configs/demo.yaml", *ONE_STEP, "--umask", "077")
    assert result.returncode == 0, result.stdout + result.stderr
    run = only_run(repo)
    assert run.stat().st_mode & 0o777 == 0o700
    for path in (run / "checkpoints", run / "run.json", run / "checkpoints" / "last.pt", run / "logs" / "train.log"):
        assert not path.stat().st_mode & 0o077, path
    assert "umask 0077" in job_output(repo, "1.local") and server_of(repo).get("1.local").umask == "022"


def test_local_demo_job_writes_its_output_next_to_the_config_like_pbs(demo_job):
    repo, _ = demo_job
    text = (repo / "demo.o1").read_text()
    assert "training finished" in text and "copied back to" in text and "walltime 24:00:00" in text


def test_local_demo_job_ends_with_a_report_of_where_its_walltime_went(demo_job):
    repo, _ = demo_job
    text = (repo / "demo.o1").read_text()
    block = text[text.index("---- job report 1.local: where the walltime went ----"):].splitlines()
    assert [line.split()[0] for line in block[3:12]] == [*PHASES, OTHER]
    assert all(re.search(r"\d:\d\d:\d\d\.\d +\d+\.\d%", line) for line in block[3:12]), block
    assert block[12] == "GPU           no GPU"  # on a CPU NVML is not asked
    report = json.loads((only_run(repo) / "run.json").read_text())["segments"][0]["report"]
    assert report["job_id"] == "1.local" and report["steps"] == 1 and report["gpu"] == {"skipped": "no GPU"}
    assert report["queue_wait_s"] >= 0  # qtime and stime in the local qstat -f
    phases = report["phases_s"]
    assert all(seconds >= 0 for seconds in phases.values()) and phases["start-up"] > 0 and phases["copy-back"] > 0
    assert sum(phases.values()) == pytest.approx(report["elapsed_s"])
    [row] = status_rows(repo / "runs")  # segtrain runs: the training share of each run
    assert row.training_share == pytest.approx(phases["training"] / report["elapsed_s"])


def test_local_demo_job_report_looks_up_the_runs_quality_verdict_and_says_how_to_get_one(demo_job):
    """A job that trains has no up-to-date eval of its run: the report says so (never a verdict from elsewhere)."""
    repo, _ = demo_job
    run = only_run(repo)
    text = (repo / "demo.o1").read_text()
    assert f"no verdict (not evaluated yet); `segtrain eval {run}` compares" in text
    report = json.loads((run / "run.json").read_text())["segments"][0]["report"]
    assert report["quality"]["none"] == "not evaluated yet"


# ---- a walltime shorter than the training ----------------------------------------------------------
@pytest.fixture(scope="module")
def chain(tmp_path_factory, small_data_ro):
    """One step per job: walltime 60 s minus a 50 s margin leaves a time limit the trainer ends after a step."""
    repo = make_repo(tmp_path_factory.mktemp("chain") / "segtrain", small_data_ro)
    result = submit(repo, "configs/demo.yaml", *ONE_STEP, "--walltime", "00:01:00", "--margin", "00:00:50")
    return repo, result


def test_short_walltime_job_stops_with_a_checkpoint_and_resubmits_itself(chain):
    repo, result = chain
    assert result.returncode == 0, result.stdout + result.stderr
    first = job_output(repo, "1.local")
    assert "training stopped early with a checkpoint (the time limit)" in first
    assert "resubmitted as 2.local" in first
    assert [j.exit_status for j in (server_of(repo).get("1.local"), server_of(repo).get("2.local"))] == [3, 0]
    assert server_of(repo).get("2.local").depend == "afterany:1.local"


def test_resubmitted_chain_ends_with_the_weights_of_an_uninterrupted_run(chain, tmp_path):
    repo, _ = chain
    assert_same_weights(weights(only_run(repo) / "checkpoints" / "last.pt"),
                        uninterrupted(repo, ONE_STEP, tmp_path / "straight"))


def test_run_json_lists_every_job_of_the_chain(chain):
    repo, _ = chain
    info = json.loads((only_run(repo) / "run.json").read_text())
    assert [s["job_id"] for s in info["segments"]] == ["1.local", "2.local"]
    assert [(r["from"], r["to"]) for r in info["resubmissions"]] == [("1.local", "2.local")]
    assert info["status"] == "done"


def test_run_json_of_a_chain_holds_only_the_keys_its_schema_declares(chain):
    repo, _ = chain
    info = json.loads((only_run(repo) / "run.json").read_text())  # every writer: the jobs', the trainers'
    assert problems(info) == []
    assert {"jobs", "processes", "data_source", "resubmissions"} <= set(info) and "report" in info["segments"][0]


# ---- failures ------------------------------------------------------------------------------------
def test_job_that_fails_mid_run_keeps_logs_and_checkpoint_on_storage_and_says_why(tmp_path, small_data_ro):
    repo = make_repo(tmp_path / "segtrain", small_data_ro)
    proc = submit(repo, "configs/demo.yaml", *MANY_STEPS, wait=False)
    pgid = wait_for_first_mirrored_checkpoint(repo, proc)
    os.killpg(pgid, signal.SIGSTOP)  # hold the job while a staged data file disappears under it
    scratch = Path(server_of(repo).get("1.local").scratch)
    val_scenes = (repo / "data" / "demo" / "filelists" / "val.csv").read_text().split()
    for name in val_scenes:
        (scratch / "data" / "scenes" / name).unlink()
    os.killpg(pgid, signal.SIGCONT)
    proc.communicate(timeout=300)
    text = job_output(repo, "1.local")
    assert any(f"scenes/{name}: file not found" in text for name in val_scenes)  # the trainer's line (exit 2) ...
    assert "the trainer stopped on a problem with the config or the data set" in text  # ... and the job's
    run = only_run(repo)
    assert (run / "logs" / "train.log").is_file() and (run / "checkpoints" / "last.pt").is_file()
    assert json.loads((run / "run.json").read_text())["status"] == "failed"
    assert server_of(repo).get("1.local").exit_status == 2 and server_of(repo).get("2.local") is None


def test_sigkilled_job_loses_at_most_the_work_since_its_last_checkpoint(tmp_path, small_data_ro):
    repo = make_repo(tmp_path / "segtrain", small_data_ro)
    proc = submit(repo, "configs/demo.yaml", *MANY_STEPS, wait=False)
    os.killpg(wait_for_first_mirrored_checkpoint(repo, proc), signal.SIGKILL)  # the node dies
    proc.communicate(timeout=300)
    killed = server_of(repo).get("1.local")
    assert killed.exit_status == 256 + signal.SIGKILL
    assert any(Path(killed.scratch).iterdir())  # no verified copy-back, so no cleanup
    run = only_run(repo)
    assert torch.load(run / "checkpoints" / "last.pt", weights_only=True)["position"]["step"] >= 1
    resumed = submit(repo, str(run))  # a run directory alone: its own config and data set
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert_same_weights(weights(run / "checkpoints" / "last.pt"), uninterrupted(repo, MANY_STEPS, tmp_path / "straight"))


def test_job_deleted_with_sigterm_checkpoints_copies_back_cleans_up_and_does_not_resubmit(tmp_path, small_data_ro):
    repo = make_repo(tmp_path / "segtrain", small_data_ro)
    proc = submit(repo, "configs/demo.yaml", *MANY_STEPS, wait=False)
    pgid = wait_for_first_mirrored_checkpoint(repo, proc)
    os.killpg(pgid, signal.SIGSTOP)  # so that SIGTERM surely arrives mid-training
    proc.send_signal(signal.SIGTERM)  # the runner passes it on as qdel does: to every process of the job
    time.sleep(0.5)
    os.killpg(pgid, signal.SIGCONT)
    proc.communicate(timeout=300)
    text = job_output(repo, "1.local")
    assert "training stopped early with a checkpoint (SIGTERM" in text and "not resubmitting after SIGTERM" in text
    run = only_run(repo)
    info = json.loads((run / "run.json").read_text())
    assert info["status"] == "stopped" and info["segments"][-1]["exit_code"] == 3
    assert (run / "logs" / "train.log").is_file() and "copied back to" in text
    job = server_of(repo).get("1.local")
    assert not Path(job.scratch).exists() and server_of(repo).get("2.local") is None


def test_job_whose_copy_back_fails_keeps_scratch_and_says_where(tmp_path, small_data_ro):
    repo = make_repo(tmp_path / "segtrain", small_data_ro)
    proc = submit(repo, "configs/demo.yaml", *MANY_STEPS, wait=False)
    pgid = wait_for_first_mirrored_checkpoint(repo, proc)
    os.killpg(pgid, signal.SIGSTOP)  # storage breaks under the running job: a file where its run should be
    run = only_run(repo)
    run.rename(tmp_path / "moved-away")
    run.write_text("not a folder")
    os.killpg(pgid, signal.SIGCONT)
    proc.communicate(timeout=300)
    job = server_of(repo).get("1.local")
    text = job_output(repo, "1.local")
    assert job.exit_status not in (0, None)
    assert "copy-back FAILED" in text and f"everything is kept in scratch {job.scratch}" in text
    assert "config or the data set" not in text  # storage broke, not the config
    assert list(Path(job.scratch).glob("runs/*/checkpoints/last.pt"))


def test_job_fails_before_copying_anything_when_the_data_set_is_missing(tmp_path, small_data_ro):
    repo = make_repo(tmp_path / "segtrain", small_data_ro)
    result = submit(repo, "configs/demo.yaml", "--data", "data/nowhere", "--no-check")  # the job's own check
    assert result.returncode != 0
    job = server_of(repo).get("1.local")
    assert job.exit_status == 2 and "DATA=data/nowhere: file or folder not found" in job_output(repo, "1.local")
    [reserved] = [p for p in (repo / "runs").iterdir() if p.is_dir()]  # scripts/submit made it for the job
    assert not Path(job.scratch).exists() and not any(reserved.iterdir())


def test_job_checks_the_data_set_before_copying_it(tmp_path, small_data_ro):
    repo = make_repo(tmp_path / "segtrain", small_data_ro)
    scene = repo / "data" / "demo" / "scenes" / "scene_000.tif"
    scene.write_bytes(scene.read_bytes()[:1000])
    result = submit(repo, "configs/demo.yaml", "--no-check")  # the job's own check, not scripts/submit's
    job = server_of(repo).get("1.local")
    assert result.returncode != 0 and job.exit_status == 2
    assert "scene_000.tif: corrupt TIFF" in job_output(repo, "1.local") and "staged data set" not in job_output(repo, "1.local")
    assert not Path(job.scratch).exists()


def test_job_runs_python_inside_the_ngc_image_with_gpus_and_scratch_bound(tmp_path, small_data_ro):
    """Singularity is not installed here: a stand-in logs its arguments and runs the command it was given."""
    repo = make_repo(tmp_path / "segtrain", small_data_ro)
    bin_dir, env_dir = tmp_path / "bin", tmp_path / "ngc-env"
    bin_dir.mkdir()
    env_dir.mkdir()
    (tmp_path / "PyTorch.SIF").write_text("image")
    (env_dir / "image").write_text(f"{tmp_path / 'PyTorch.SIF'}\n")
    (bin_dir / "python").symlink_to(sys.executable)
    (bin_dir / "singularity").write_text(
        '#!/bin/bash\necho "singularity $*" >>"$SINGULARITY_LOG"\nshift\n'
        'while [ "${1#-}" != "$1" ]; do [ "$1" = --bind ] && shift; shift; done\nshift\nexec "$@"\n')
    (bin_dir / "singularity").chmod(0o755)
    argv = qsub_argv("jobs/train.pbs", {"CONFIG": "configs/demo.yaml", "DATA": "data/nowhere", "SEGTRAIN_ENV": str(env_dir),
                                        "PATH": f"{bin_dir}:/usr/bin:/bin", "SINGULARITY_LOG": str(tmp_path / "log")})
    server = server_of(repo)
    [job] = server.run_chain(server.submit(argv[1:], os.environ, repo))
    log = (tmp_path / "log").read_text()
    assert f"exec --nv --bind {job.scratch} --bind {repo} " in log
    assert f"{tmp_path / 'PyTorch.SIF'} python -m segtrain.cluster.job.steps plan" in log
    assert "DATA=data/nowhere: file or folder not found" in job_output(repo, job.id)  # the step ran in the "image"


def test_job_in_a_shared_tmpdir_works_in_its_own_folder_and_removes_only_that(tmp_path, small_data_ro):
    repo = make_repo(tmp_path / "segtrain", small_data_ro)
    shared = tmp_path / "shared-tmp"
    shared.mkdir()
    (shared / "someone-elses-file").write_text("keep")
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "PBS_JOBID": "5.server", "PBS_O_WORKDIR": str(repo),
           "TMPDIR": str(shared), "SEGTRAIN_ENV": str(tmp_path / "no-env")}
    result = subprocess.run(["bash", str(repo / "jobs" / "train.pbs")], cwd=tmp_path, env=env, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 2 and "no software environment" in result.stdout
    assert [p.name for p in shared.iterdir()] == ["someone-elses-file"]


def test_job_fails_fast_without_a_software_environment(tmp_path, small_data_ro):
    repo = make_repo(tmp_path / "segtrain", small_data_ro)
    submit(repo, "configs/demo.yaml", "--env", str(tmp_path / "no-env"))
    assert f"no software environment at {tmp_path / 'no-env'}" in job_output(repo, "1.local")
    assert server_of(repo).get("1.local").exit_status == 2


# ---- values that must not break out of a command line, on a stock OpenPBS site ---------------------
TAGS = ["a b", "it's", "x; touch PWNED", "$(touch PWNED2)", "`touch PWNED3`", "c,d", "50%", 'q"uote']
RUN_NAME = "tricky run; it's $(x)"


@pytest.fixture(scope="module")
def tricky_job(tmp_path_factory, small_data_ro):
    repo = make_repo(tmp_path_factory.mktemp("tricky") / "segtrain", small_data_ro)
    result = submit(repo, "configs/demo.yaml", *ONE_STEP, f"logging.wandb.tags={json.dumps(TAGS)}",
                    f"run.name={json.dumps(RUN_NAME)}", "--site", "openpbs")
    return repo, result


def test_override_values_with_spaces_quotes_and_semicolons_reach_the_trainer_verbatim(tricky_job):
    repo, result = tricky_job
    assert result.returncode == 0, result.stdout + result.stderr
    run = repo / "runs" / RUN_NAME
    config = (run / "config.yaml").read_text()
    assert yaml.safe_load(config)["logging"]["wandb"]["tags"] == TAGS
    assert not [p for p in repo.parent.rglob("PWNED*")] and not list(Path.home().glob("PWNED*"))


def test_stock_openpbs_job_uses_tmpdir_as_scratch_and_cleans_it_itself(tricky_job):
    repo, _ = tricky_job
    job = server_of(repo).get("1.local")
    assert job.resources["select"] == "1:ncpus=8:mem=32gb" and job.scratch is None
    tmpdir = repo.parent / "state" / "tmp" / "pbs.1.local"
    assert f"scratch {tmpdir}," in job_output(repo, "1.local") and f"-> {tmpdir}/data" in job_output(repo, "1.local")
    assert job.exit_status == 0 and job.tmpdir_left == []
