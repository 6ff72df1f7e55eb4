"""scripts/submit with grid files: every point checked first, dry runs, job arrays, the submissions log."""
from __future__ import annotations

import json
import os
import shlex
import shutil
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings, strategies as st

from conftest import REPO, tree_state
from segtrain.cli import main
from segtrain.cluster.pbs.directives import parse_qsub_args
from segtrain.cluster.site import METACENTRUM
from segtrain.cluster.submissions import read_log
from segtrain.cluster.frontend.plan import JobOptions, plan_grid
from segtrain.cluster.variables import decode_value, split_overrides

COMMON = ["logging.wandb.mode=disabled", "train.epochs=1"]


@pytest.fixture
def workdir(tmp_path, small_data_ro, monkeypatch) -> Path:
    """A submit folder: the job script, the configs, a data set, a grid of 2 x 2 points; qsub fails if called."""
    work = tmp_path / "work"
    shutil.copytree(REPO / "jobs", work / "jobs")
    shutil.copytree(REPO / "configs", work / "configs")
    shutil.copytree(small_data_ro, work / "data" / "demo")
    (work / "grid.yaml").write_text(yaml.safe_dump({
        "base": "configs/demo.yaml", "overrides": COMMON,
        "product": {"optim.lr": [0.001, 0.003]}, "zip": {"optim.name": ["adam", "sgd"], "train.seed": [1, 2]}}))
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "qsub").write_text(f"#!/bin/sh\ntouch {tmp_path}/QSUB-CALLED\nexit 1\n")
    (bin_dir / "qsub").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    monkeypatch.chdir(work)
    return work


def qsub_lines(out: str) -> list[list[str]]:
    return [shlex.split(line)[1:] for line in out.splitlines() if line.startswith("qsub ")]


def job_overrides(qsub_args: list[str]) -> list[str]:
    """What the job gets: qsub's -v parsing, then the job's decoding and splitting."""
    variables = parse_qsub_args(qsub_args, environ={}).variables
    return split_overrides(decode_value(variables["OVERRIDES"]))


POINTS = [["optim.lr=0.001", "optim.name=adam", "train.seed=1"], ["optim.lr=0.001", "optim.name=sgd", "train.seed=2"],
          ["optim.lr=0.003", "optim.name=adam", "train.seed=1"], ["optim.lr=0.003", "optim.name=sgd", "train.seed=2"]]


def test_dry_run_prints_one_qsub_per_point_with_its_overrides_and_submits_nothing(workdir, capsys):
    before = tree_state(workdir)
    assert main(["submit", "grid.yaml", "--dry-run"]) == 0
    out = capsys.readouterr().out
    jobs = qsub_lines(out)
    assert len(jobs) == 4
    for number, (args, point) in enumerate(zip(jobs, POINTS)):
        assert job_overrides(args) == [*COMMON, *point, f"run.name=grid-{number:02d}"]
        assert parse_qsub_args(args, environ={}).name == f"grid-{number}"
    assert "#PBS -l select=1:ncpus=8:ngpus=1:mem=32gb:scratch_local=100gb:gpu_mem=10gb" in out
    assert tree_state(workdir) == before and not (workdir.parent / "QSUB-CALLED").exists()


def test_dry_run_of_an_array_prints_one_qsub_with_J_0_3_and_the_manifest_it_would_write(workdir, capsys):
    before = tree_state(workdir)
    assert main(["submit", "grid.yaml", "--array", "--dry-run"]) == 0
    out = capsys.readouterr().out
    [args] = qsub_lines(out)
    request = parse_qsub_args(args, environ={})
    assert request.array == "0-3" and "#PBS -J 0-3" in out
    grid_dir = request.variables["RUNS"]
    assert grid_dir.startswith("runs/grid-") and request.variables["MANIFEST"] == f"{grid_dir}/manifest.json"
    assert "CONFIG" not in request.variables and "OVERRIDES" not in request.variables
    assert tree_state(workdir) == before and not (workdir.parent / "QSUB-CALLED").exists()


def test_a_grid_with_one_invalid_point_is_refused_whole_naming_the_point_and_the_key(workdir, capsys):
    (workdir / "grid.yaml").write_text(yaml.safe_dump({"base": "configs/demo.yaml",
                                                       "points": [{"optim.lr": 0.1}, {"optim.lr": 0.2},
                                                                  {"optim.lr": -1.0}, {"optim.lr": 0.3}]}))
    before = tree_state(workdir)
    assert main(["submit", "grid.yaml"]) == 2
    err = capsys.readouterr().err
    assert "grid.yaml: point 2 (optim.lr=-1.0)" in err and "optim.lr" in err.split("point 2")[1]
    assert tree_state(workdir) == before and not (workdir.parent / "QSUB-CALLED").exists()


def test_a_point_whose_data_set_does_not_fit_is_refused_before_anything_is_submitted(workdir, capsys):
    (workdir / "grid.yaml").write_text(yaml.safe_dump({"base": "configs/demo.yaml",
                                                       "product": {"data.bands": [[0], [0, 9]]}}))
    assert main(["submit", "grid.yaml", "--array"]) == 2
    assert "point 1 (data.bands=[0, 9]): data.bands: selects band 9" in capsys.readouterr().err
    assert not (workdir / "runs").exists() and not (workdir.parent / "QSUB-CALLED").exists()


NASTY = st.lists(st.sampled_from(list(" ,;'\"$()`\\%=&|<>*?\n\t{}[]#!~aü") + ["pct:", "$(touch PWNED)", "a b"]),
                 max_size=8).map("".join)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.lists(NASTY, max_size=3), min_size=2, max_size=3, unique_by=json.dumps))
def test_grid_values_with_quotes_semicolons_commas_or_substitutions_reach_the_job_verbatim(workdir, tags):
    (workdir / "grid.yaml").write_text(yaml.safe_dump({"base": "configs/demo.yaml",
                                                       "product": {"logging.wandb.tags": tags}}))
    sub = plan_grid(Path("grid.yaml"), [], JobOptions(site=METACENTRUM, check_data=False), workdir, array=False)
    assert all(parse_qsub_args(job[1:], environ={}).script == Path("jobs/train.pbs") for job in sub.jobs)
    got = [yaml.safe_load(job_overrides(job[1:])[0].partition("=")[2]) for job in sub.jobs]
    assert got == tags


def fake_qsub(bin_dir: Path, fail_on: int = 0) -> None:
    """qsub's stand-in at the process boundary: answers 100.pbs-m1, 101.pbs-m1, ... (fails on call fail_on)."""
    (bin_dir / "qsub").write_text(
        '#!/bin/sh\nn=$(cat "$0.count" 2>/dev/null || echo 0); echo $((n + 1)) >"$0.count"\n'
        f'[ "$n" = "{fail_on - 1}" ] && echo "qsub: would exceed queue limit" >&2 && exit 38\n'
        'case " $* " in *" -J "*) echo "$((100 + n))[].pbs-m1" ;; *) echo "$((100 + n)).pbs-m1" ;; esac\n')


def test_submitted_grid_writes_its_manifest_and_logs_every_job_with_its_run_directory(workdir, tmp_path, capsys):
    fake_qsub(tmp_path / "bin")
    assert main(["submit", "grid.yaml"]) == 0
    entries = read_log(workdir / "runs")
    assert [e["job_id"] for e in entries] == ["100.pbs-m1", "101.pbs-m1", "102.pbs-m1", "103.pbs-m1"]
    grid_dir = workdir / "runs" / entries[0]["grid"]
    manifest = json.loads((grid_dir / "manifest.json").read_text())
    assert [p["run_name"] for p in manifest["points"]] == [Path(e["run"]).name for e in entries]
    assert [p["overrides"][2:-1] for p in manifest["points"]] == POINTS
    capsys.readouterr()
    assert main(["runs", str(grid_dir)]) == 0
    table = capsys.readouterr().out
    assert "grid-03  3      103.pbs-m1  not started" in table


def test_submitted_array_logs_each_subjob_under_the_id_pbs_gives_it(workdir, tmp_path):
    fake_qsub(tmp_path / "bin")
    assert main(["submit", "grid.yaml", "--array"]) == 0
    entries = read_log(workdir / "runs")
    assert [(e["job_id"], e["array_id"], e["index"]) for e in entries] == [
        (f"100[{i}].pbs-m1", "100[].pbs-m1", i) for i in range(4)]


def test_a_qsub_failure_midway_says_which_jobs_were_submitted(workdir, tmp_path, capsys):
    fake_qsub(tmp_path / "bin", fail_on=3)
    assert main(["submit", "grid.yaml"]) == 2
    err = capsys.readouterr().err
    assert "point 2: qsub failed (exit 38): qsub: would exceed queue limit; jobs 100.pbs-m1, 101.pbs-m1 were submitted" in err
    assert len(read_log(workdir / "runs")) == 2


def test_resources_are_set_per_submission_over_the_scripts_directives(workdir, capsys):
    assert main(["submit", "configs/demo.yaml", "--dry-run", "--gpus", "2", "--mem", "64GB", "--ncpus", "16",
                 "--walltime", "48:00:00", "--queue", "gpu_long"]) == 0
    out = capsys.readouterr().out
    assert "#PBS -l select=1:ncpus=16:ngpus=2:mem=64gb:scratch_local=100gb:gpu_mem=10gb" in out
    assert "#PBS -l walltime=48:00:00" in out and "#PBS -q gpu_long" in out


@pytest.mark.parametrize("args, message", [
    (["--mem", "64"], "--mem '64': expected a size"),
    (["--site", "openpbs", "--gpus", "1"], "defines no GPU resource"),
    (["--walltime", "30:00:00", "--queue", "gpu"], "queue gpu takes at most 24:00:00"),
    (["--gpus", "12"], "no metacentrum node has more than 8 GPUs"),
    (["--walltime", "00:00:15"], "walltime=00:00:15: no longer than the 00:01:00 kept at the end for the checkpoint"),
    (["--walltime", "00:10:00", "--margin", "00:10:00"], "(WALLTIME_MARGIN=00:10:00): the trainer would get no time"),
])
def test_resource_requests_the_site_cannot_meet_are_refused(workdir, capsys, args, message):
    assert main(["submit", "configs/demo.yaml", "--dry-run", *args]) == 2
    assert message in capsys.readouterr().err


def job_run(qsub_args: list[str]) -> str:
    return decode_value(parse_qsub_args(qsub_args, environ={}).variables["RUN"])


def test_a_single_config_gets_its_run_directory_chosen_at_submission(workdir, capsys):
    assert main(["submit", "configs/demo.yaml", "train.epochs=2", "--dry-run"]) == 0
    [args] = qsub_lines(capsys.readouterr().out)
    assert job_overrides(args) == ["train.epochs=2"] and job_run(args).startswith("runs/demo-")
    assert not (workdir / "runs").exists()  # a dry run makes nothing
    assert main(["submit", "configs/demo.yaml", "run.name=mine", "--dry-run"]) == 0
    assert job_run(qsub_lines(capsys.readouterr().out)[0]) == "runs/mine"


def test_a_submitted_config_gets_a_run_directory_of_its_own_even_when_its_name_was_just_taken(workdir, tmp_path, capsys):
    fake_qsub(tmp_path / "bin")
    (workdir / "runs" / "mine").mkdir(parents=True)  # another job took the name
    assert main(["submit", "configs/demo.yaml", "run.name=mine"]) == 0
    entry = read_log(workdir / "runs")[-1]
    assert entry["run"] == "mine-2" and (workdir / "runs" / "mine-2").is_dir()
    assert main(["submit", "configs/demo.yaml", "run.name=mine"]) == 0
    assert read_log(workdir / "runs")[-1]["run"] == "mine-3"


def test_continuing_a_run_asks_for_the_processes_and_gpus_that_wrote_its_checkpoint(workdir, capsys):
    run = workdir / "runs" / "two"
    run.mkdir(parents=True)
    shutil.copy(workdir / "configs" / "demo.yaml", run / "config.yaml")
    shutil.copy(workdir / "configs" / "default.yaml", run / "default.yaml")
    (run / "run.json").write_text(json.dumps({"processes": {"world": 2, "nodes": 1, "per_node": 2, "resources": {
        "select": "1:ncpus=16:ngpus=2:mem=64gb:scratch_local=10gb", "walltime": "24:00:00"}}}))
    assert main(["submit", str(run), "--dry-run"]) == 0
    [args] = qsub_lines(capsys.readouterr().out)
    request = parse_qsub_args(args, environ={})
    assert request.resources["select"] == "1:ncpus=16:ngpus=2:mem=64gb:scratch_local=10gb" and request.variables["NPROC"] == "2"
    assert request.name == "two"


def test_on_slurm_a_run_takes_several_nodes_and_a_continued_run_the_nodes_that_wrote_it(workdir, capsys):
    assert main(["submit", "configs/demo.yaml", "--dry-run", "--scheduler", "slurm", "--nodes", "2", "--gpus", "4"]) == 0
    [sbatch] = [line.split() for line in capsys.readouterr().out.splitlines() if line.startswith("sbatch ")]
    assert "--nodes=2" in sbatch and "--gpus-per-node=4" in sbatch
    run = workdir / "runs" / "wide"
    run.mkdir(parents=True)
    shutil.copy(workdir / "configs" / "demo.yaml", run / "config.yaml")
    shutil.copy(workdir / "configs" / "default.yaml", run / "default.yaml")
    (run / "run.json").write_text(json.dumps({"processes": {"world": 2, "nodes": 2, "per_node": 1, "resources": {
        "time": "01:00:00", "nodes": "2", "cpus-per-task": "8"}}}))
    assert main(["submit", str(run), "--dry-run", "--scheduler", "slurm"]) == 0
    [sbatch] = [line.split() for line in capsys.readouterr().out.splitlines() if line.startswith("sbatch ")]
    assert "--nodes=2" in sbatch
    assert main(["submit", "configs/demo.yaml", "--dry-run", "--nodes", "2"]) == 2  # PBS: chunks of a select
    assert "on PBS ask for chunks: qsub -l select=N" in capsys.readouterr().err


def test_array_of_a_config_is_refused(workdir, capsys):
    assert main(["submit", "configs/demo.yaml", "--array"]) == 2
    assert "not a grid file" in capsys.readouterr().err


# ---- end to end: a job array in local mode, the real job script and trainer -----------------------------
TINY = COMMON + ["data.tile_size=48", "data.overlap=8", "model.base_width=8", "model.depth=2", "train.batch_size=8",
                 "data.tiles_per_epoch=16", "logging.every_steps=1", "logging.num_samples=1"]
TAGS = [["a b", "$(touch PWNED)"], ["c,d", "x; touch PWNED2", "it's \"q\" `touch PWNED3`"]]


@pytest.fixture(scope="module")
def local_array(tmp_path_factory, small_data_ro):
    from test_jobs_train_pbs import make_repo, submit

    repo = make_repo(tmp_path_factory.mktemp("grid") / "segtrain", small_data_ro)
    (repo / "configs" / "grids" / "tiny.yaml").write_text(yaml.safe_dump({
        "base": "../demo.yaml", "overrides": TINY,
        "product": {"optim.lr": [0.001, 0.003]}, "zip": {"logging.wandb.tags": TAGS}}))
    result = submit(repo, "configs/grids/tiny.yaml", "--array")
    return repo, result


@pytest.mark.slow
def test_local_array_trains_every_point_into_its_own_run_directory_with_its_overrides(local_array):
    repo, result = local_array
    assert result.returncode == 0, result.stdout + result.stderr
    [grid_dir] = (repo / "runs").glob("tiny-*")
    runs = sorted(p for p in grid_dir.iterdir() if p.is_dir())
    assert [p.name for p in runs] == ["tiny-00", "tiny-01", "tiny-02", "tiny-03"]
    got = [(c["optim"]["lr"], c["logging"]["wandb"]["tags"])
           for c in (yaml.safe_load((run / "config.yaml").read_text()) for run in runs)]
    assert got == [(lr, tags) for lr in (0.001, 0.003) for tags in TAGS]
    assert [json.loads((run / "run.json").read_text())["status"] for run in runs] == ["done"] * 4
    assert len(json.loads((grid_dir / "manifest.json").read_text())["points"]) == 4
    assert not list(repo.parent.rglob("PWNED*")) and not list(Path.home().glob("PWNED*"))


@pytest.mark.slow
def test_local_array_subjobs_write_pbs_named_outputs_and_the_log_maps_them_to_runs(local_array):
    repo, _ = local_array
    assert sorted(p.name for p in repo.glob("tiny.o*")) == ["tiny.o1.0", "tiny.o1.1", "tiny.o1.2", "tiny.o1.3"]
    entries = read_log(repo / "runs")
    assert [(e["job_id"], Path(e["run"]).name) for e in entries] == [(f"1[{i}].local", f"tiny-0{i}") for i in range(4)]
    segments = [json.loads((repo / "runs" / e["run"] / "run.json").read_text())["segments"] for e in entries]
    assert [s[0]["job_id"] for s in segments] == [e["job_id"] for e in entries]


@pytest.mark.slow
def test_status_of_the_grid_shows_every_run_done_with_its_metric(local_array):
    from segtrain.cluster.frontend.status import status_rows

    repo, result = local_array
    [grid_dir] = (repo / "runs").glob("tiny-*")
    rows = status_rows(repo / "runs", grid_dir)
    assert [(r.index, r.status, r.job_id) for r in rows] == [(i, "done", f"1[{i}].local") for i in range(4)]
    assert all(r.last is not None and r.metric == "iou" for r in rows)
    assert "tiny-03  3      1[3].local  done" in result.stdout  # the table printed after the local run


def test_a_missing_data_set_is_refused_at_submission(workdir, capsys):
    assert main(["submit", "configs/demo.yaml", "--data", "data/nowhere"]) == 2
    assert f"--data: data set {workdir / 'data' / 'nowhere'} not found" in capsys.readouterr().err
    assert not (workdir.parent / "QSUB-CALLED").exists()


def test_continuing_a_grid_run_logs_the_new_job_against_that_run(workdir, tmp_path):
    fake_qsub(tmp_path / "bin")
    assert main(["submit", "grid.yaml"]) == 0
    point = read_log(workdir / "runs")[1]["run"]
    run = workdir / "runs" / point
    run.mkdir()
    shutil.copy(workdir / "configs" / "demo.yaml", run / "config.yaml")
    shutil.copy(workdir / "configs" / "default.yaml", run / "default.yaml")
    assert main(["submit", str(run)]) == 0
    entry = read_log(workdir / "runs")[-1]
    assert (entry["job_id"], entry["run"]) == ("104.pbs-m1", point)
