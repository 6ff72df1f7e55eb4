"""The job's side of a grid array: a subjob takes its point from the manifest; its resubmission."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from segtrain.cluster.frontend.grid import load_grid, write_manifest
from segtrain.cluster.job.resubmit import resubmission
from segtrain.cluster.job.steps import make_plan, open_run_dir
from segtrain.cluster.pbs.directives import parse_qsub_args
from segtrain.cluster.pbs.qsub import job_argv, subjob_id
from segtrain.errors import UserError


@pytest.fixture
def workdir(tmp_path, small_data_ro) -> Path:
    """A submit folder with a config, a data set, and a grid of two points whose manifest is written."""
    work = tmp_path / "work"
    (work / "configs").mkdir(parents=True)
    (work / "configs" / "small.yaml").write_text("data: {root: data/small}\n")
    (work / "grid.yaml").write_text("base: configs/small.yaml\nproduct: {optim.lr: [0.1, 0.2]}\n")
    shutil.copytree(small_data_ro, work / "data" / "small")
    (work / "runs" / "g-1").mkdir(parents=True)
    write_manifest(work / "runs" / "g-1" / "manifest.json", load_grid(work / "grid.yaml"), "configs/small.yaml",
                   ["grid-00", "grid-01"], "now")
    (tmp_path / "scratch").mkdir()
    return work


def subjob_env(workdir: Path, index: str | None) -> dict:
    env = {"PBS_JOBID": f"13[{index}].server", "PBS_O_WORKDIR": str(workdir), "SCRATCHDIR": str(workdir.parent / "scratch"),
           "MANIFEST": "runs/g-1/manifest.json", "RUNS": "runs/g-1", "PBS_ARRAY_ID": "13[].server"}
    return {**env, "PBS_ARRAY_INDEX": index} if index is not None else env


def test_a_subjob_trains_the_config_and_overrides_of_its_point(workdir):
    plan, cfg = make_plan(subjob_env(workdir, "1"), [], 0.0, None, workdir.parent / "scratch")
    assert plan.config == str(workdir / "configs" / "small.yaml") and plan.overrides == ["optim.lr=0.2"]
    assert cfg.optim.lr == 0.2 and Path(plan.run_dir).parent == workdir / "runs" / "g-1"


@pytest.mark.parametrize("index, message", [(None, "PBS_ARRAY_INDEX is unset"), ("7", "no point 7")])
def test_a_job_that_is_not_one_of_the_manifests_subjobs_fails_in_the_plan_step(workdir, index, message):
    with pytest.raises(UserError, match=message):
        make_plan(subjob_env(workdir, index), [], 0.0, None, workdir.parent / "scratch")


def test_a_subjob_resubmits_its_run_as_a_plain_job_without_a_dependency_on_itself(workdir):
    plan, _ = make_plan(subjob_env(workdir, "0"), [], 0.0, None, workdir.parent / "scratch")
    argv, _ = resubmission(plan, 3, None, None)
    request = parse_qsub_args(argv[1:], environ={})
    assert "depend" not in request.attributes and request.array is None
    assert request.variables["RUN"] == plan.run_dir and "MANIFEST" not in request.variables


RERUN = "Job Id: 13[0].server\n    run_count = 2\n"  # qstat -f of a subjob in its second start


def test_a_subjob_rerun_by_pbs_continues_its_points_run(workdir):
    """The point has no run.name here, so each start names a new run after its own second: the rerun
    finds the run its first start made by the job id in its run.json, whichever second it starts in."""
    first, _ = make_plan(subjob_env(workdir, "0"), [], 0.0, None, workdir.parent / "scratch")
    open_run_dir(first)
    rerun, _ = make_plan(subjob_env(workdir, "0"), [], 0.0, RERUN, workdir.parent / "scratch")
    assert rerun.run_dir == first.run_dir and rerun.new_run_name is None


def test_a_subjob_rerun_finds_its_run_where_the_points_name_was_taken(workdir):
    """As scripts/submit writes it, a point names its run (run.name grid-00); a folder of that name made
    by another job sends the first start to grid-00-2, where its rerun must look too."""
    write_manifest(workdir / "runs" / "g-1" / "manifest.json", load_grid(workdir / "grid.yaml", ["run.name=grid-00"]),
                   "configs/small.yaml", ["grid-00", "grid-01"], "now")
    other = workdir / "runs" / "g-1" / "grid-00"
    other.mkdir()
    (other / "run.json").write_text('{"jobs": [{"id": "12.server"}]}')
    first, _ = make_plan(subjob_env(workdir, "0"), [], 0.0, None, workdir.parent / "scratch")
    open_run_dir(first)
    assert Path(first.run_dir).name == "grid-00-2"
    rerun, _ = make_plan(subjob_env(workdir, "0"), [], 0.0, RERUN, workdir.parent / "scratch")
    assert rerun.run_dir == first.run_dir and rerun.new_run_name is None


def test_array_job_argv_carries_the_manifest_range_and_queue():
    argv = job_argv(None, [], name="loss", runs="runs/loss-1", manifest="runs/loss-1/manifest.json", array="0-3",
                    queue="gpu")
    request = parse_qsub_args(argv[1:], environ={})
    assert (request.array, request.queue, request.name) == ("0-3", "gpu", "loss")
    assert request.variables == {"RUNS": "runs/loss-1", "MANIFEST": "runs/loss-1/manifest.json"}


def test_subjob_ids_are_named_as_pbs_names_them():
    assert subjob_id("13[].pbs-m1.metacentrum.cz", 2) == "13[2].pbs-m1.metacentrum.cz"
    with pytest.raises(UserError, match="expected an id like 13"):
        subjob_id("13.server", 2)
