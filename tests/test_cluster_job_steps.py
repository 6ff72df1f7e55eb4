"""The job's Python steps: plan (fail fast), stage, trainer arguments, resubmission, records."""
import argparse
import json
import shutil
from pathlib import Path

import pytest

from segtrain.errors import EXIT_NO_RESUBMIT
from segtrain.cluster.job.steps import (Plan, explain, main, make_plan, record_resubmission, staged_root,
                                  resubmission, step_stage, trainer_args)
from segtrain.cluster.directives import parse_qsub_args
from segtrain.cluster.qsub import decode_value, encode_value, join_overrides
from segtrain.config import load_config
from segtrain.errors import UserError

QSTAT = """Job Id: 7.server
    Resource_List.select = 1:ncpus=8:mem=32gb
    Resource_List.walltime = 01:00:00
"""


@pytest.fixture
def workdir(tmp_path, small_data_ro) -> Path:
    """A submit folder with a config whose data.root is a small data set, and a scratch folder."""
    work = tmp_path / "work"
    (work / "configs").mkdir(parents=True)
    (work / "configs" / "small.yaml").write_text("data: {root: data/small}\nrun: {root: storage/runs}\n")
    shutil.copytree(small_data_ro, work / "data" / "small")
    (tmp_path / "scratch").mkdir()
    return work


def job_env(workdir: Path, **variables: str) -> dict:
    return {"PBS_JOBID": "7.server", "PBS_JOBNAME": "small", "PBS_O_WORKDIR": str(workdir),
            "SCRATCHDIR": str(workdir.parent / "scratch"), **variables}


def plan_for(workdir: Path, qstat=QSTAT, **variables: str) -> Plan:
    return make_plan(job_env(workdir, CONFIG="configs/small.yaml", **variables), [], job_start=1000.0,
                     job_info=qstat)[0]


def test_plan_resolves_defaults_against_the_submit_folder(workdir):
    plan = plan_for(workdir)
    assert plan.data == str(workdir / "data" / "small")
    assert Path(plan.run_dir).parent == workdir / "storage" / "runs" and not plan.continuing
    assert Path(plan.run_dir).name.startswith("small-")
    assert plan.work_run == workdir.parent / "scratch" / "runs" / Path(plan.run_dir).name
    assert (plan.max_resubmits, plan.resubmits) == (10, 0)


def test_plan_without_config_uses_configs_default_yaml(workdir):
    with pytest.raises(UserError, match="configs/default.yaml"):
        make_plan(job_env(workdir), [], 0.0, None)


def test_plan_takes_walltime_and_resources_from_qstat(workdir):
    plan = plan_for(workdir)
    assert plan.walltime_s == 3600 and plan.resources == {"select": "1:ncpus=8:mem=32gb", "walltime": "01:00:00"}


def test_plan_decodes_overrides_sent_by_submit(workdir):
    words = ["train.epochs=3", "logging.wandb.tags=['a b', \"it's\", 'x;y']"]
    plan = plan_for(workdir, OVERRIDES=encode_value(join_overrides(words)))
    assert plan.overrides == words


@pytest.mark.parametrize("variables, message", [
    ({"DATA": "nowhere"}, "DATA=nowhere: file or folder not found"),
    ({"RUN": "storage/runs/missing"}, "RUN=storage/runs/missing: folder not found"),
    ({"OVERRIDES": "run.name='unclosed"}, "OVERRIDES: No closing quotation"),
    ({"OVERRIDES": "train.epoch=3"}, "train.epoch"),
    ({"MAX_RESUBMITS": "many"}, "MAX_RESUBMITS=many"),
    ({"WALLTIME_MARGIN": "soon"}, "WALLTIME_MARGIN"),
])
def test_plan_fails_fast_naming_the_variable_or_key(workdir, variables, message):
    with pytest.raises(UserError, match=message.replace("(", r"\(")):
        plan_for(workdir, **variables)


def test_plan_refuses_a_data_file_that_is_not_an_archive(workdir):
    (workdir / "data.csv").write_text("x")
    with pytest.raises(UserError, match="neither a data set folder nor a tar archive"):
        plan_for(workdir, DATA="data.csv")


def test_plan_outside_a_job_says_how_to_run_the_script(workdir):
    with pytest.raises(UserError, match="--local"):
        make_plan({"SCRATCHDIR": "/tmp"}, [], 0.0, None)


def test_continuing_a_run_uses_its_config_and_the_data_set_it_recorded(workdir):
    run = workdir / "storage" / "runs" / "small-1"
    run.mkdir(parents=True)
    (run / "config.yaml").write_text("data: {root: /scratch/of/an/old/job/data}\n")
    (run / "run.json").write_text(json.dumps({"data_source": str(workdir / "data" / "small")}))
    plan, _ = make_plan(job_env(workdir, RUN=str(run)), [], 0.0, QSTAT)
    assert plan.continuing and plan.run_dir == str(run) and plan.config == str(run / "config.yaml")
    assert plan.data == str(workdir / "data" / "small")


def test_trainer_args_put_data_on_scratch_and_mirror_to_storage_with_a_time_limit(workdir):
    plan = plan_for(workdir, WALLTIME_MARGIN="00:01:00", OVERRIDES="train.epochs=2")
    plan.data_root = "/scratch/it's here/data"
    words, limit = trainer_args(plan, load_config(plan.config), now=plan.job_start + 100)
    assert limit == 3600 - 100 - 60
    assert words[:4] == ["train", plan.config, "train.epochs=2", 'data.root="/scratch/it\'s here/data"']
    assert words[4:] == ["--run-dir", str(plan.work_run), "--mirror", plan.run_dir, "--time-limit", "3440"]


def test_trainer_args_have_no_time_limit_without_a_walltime(workdir):
    plan = plan_for(workdir, qstat=None)
    plan.data_root = "/scratch/data"
    assert "--time-limit" not in trainer_args(plan, load_config(plan.config), now=0)[0]


def test_a_time_limit_stop_resubmits_the_same_run_after_this_job(workdir):
    plan = plan_for(workdir, SEGTRAIN_ENV="/envs/segtrain", MAX_RESUBMITS="3")
    argv, message = resubmission(plan, 3, terminated=False)
    request = parse_qsub_args(argv[1:], environ={})
    assert request.attributes == {"depend": "afterany:7.server"} and request.name == "small"
    assert request.resources == plan.resources
    assert {k: decode_value(v) for k, v in request.variables.items()} == {
        "RUN": plan.run_dir, "DATA": plan.data, "RUNS": plan.runs, "MAX_RESUBMITS": "3", "RESUBMITS": "1",
        "SEGTRAIN_ENV": "/envs/segtrain"}
    assert request.script == workdir / "jobs" / "train.pbs" and "resubmission 1 of at most 3" in message


@pytest.mark.parametrize("code, terminated, variables, reason", [
    (0, False, {}, ""), (1, False, {}, ""), (3, True, {}, "after SIGTERM"),
    (3, False, {"MAX_RESUBMITS": "2", "RESUBMITS": "2"}, "MAX_RESUBMITS=2 reached"),
])
def test_no_resubmission_unless_stopped_by_the_time_limit_within_the_budget(workdir, code, terminated, variables, reason):
    plan = plan_for(workdir, **variables)
    argv, message = resubmission(plan, code, terminated)
    assert argv is None and reason in message
    if reason:
        assert f"qsub -v RUN={plan.run_dir} jobs/train.pbs" in message


def test_explanations_say_what_happened_and_how_to_continue(workdir):
    plan = plan_for(workdir)
    assert "crashed (exit 1" in explain(1, False, plan) and f"RUN={plan.run_dir}" in explain(1, False, plan)
    assert "SIGKILL" in explain(137, False, plan) and "out of memory" in explain(137, False, plan)
    assert "time limit" in explain(3, False, plan) and "SIGTERM" in explain(3, True, plan)
    assert "before the trainer started" in explain(None, False, plan)


def test_resubmission_is_recorded_in_run_json_keeping_the_trainers_fields(tmp_path):
    (tmp_path / "run.json").write_text(json.dumps({"status": "stopped", "segments": [{"job_id": "7.server"}]}))
    record_resubmission(tmp_path, "7.server", "8.server")
    info = json.loads((tmp_path / "run.json").read_text())
    assert info["segments"] == [{"job_id": "7.server"}] and info["status"] == "stopped"
    assert [(r["from"], r["to"]) for r in info["resubmissions"]] == [("7.server", "8.server")]


def test_data_root_is_found_inside_an_archive_s_single_top_folder(tmp_path):
    (tmp_path / "demo" / "filelists").mkdir(parents=True)
    assert staged_root(tmp_path) == tmp_path / "demo"
    (tmp_path / "other").mkdir()
    with pytest.raises(UserError, match="no filelists"):
        staged_root(tmp_path)


def test_stage_builds_the_staging_cache_on_scratch_when_the_config_asks(workdir):
    plan = plan_for(workdir, OVERRIDES="data.cache=true")
    path = workdir.parent / "scratch" / "plan.json"
    plan.save(path)
    assert step_stage(argparse.Namespace(plan=path)) == 0
    staged = Plan.load(path)
    assert staged.data_root == str(workdir.parent / "scratch" / "cache")
    assert (Path(staged.data_root) / "filelists" / "train.csv").is_file() and not plan.work_data.exists()
    assert json.loads((plan.work_run / "run.json").read_text())["data_source"] == plan.data
    words, _ = trainer_args(staged, load_config(plan.config, plan.overrides), now=plan.job_start)
    assert "data.cache=false" in words


def test_resubmit_step_exits_10_when_no_resubmission_is_due(workdir, capsys):
    path = workdir.parent / "plan.json"
    plan_for(workdir).save(path)
    assert main(["resubmit-args", str(path), "--trainer-exit", "0"]) == EXIT_NO_RESUBMIT
    assert main(["resubmit-args", str(path), "--trainer-exit", "3"]) == 0
    assert capsys.readouterr().out.split("\0")[0] == "qsub"
