"""The job's Python steps: plan (fail fast), stage, trainer arguments, resubmission, records."""
import argparse
import json
import shutil
from pathlib import Path

import pytest

from segtrain.errors import EXIT_NO_RESUBMIT
from segtrain.cluster.job.resubmit import continue_command, explain, record_resubmission, resubmission
from segtrain.cluster.job.steps import Plan, main, make_plan, open_run_dir, staged_root, step_stage, trainer_args
from conftest import REPO
from segtrain.cluster.pbs.directives import parse_qsub_args
from segtrain.cluster.variables import decode_value, encode_value, join_overrides
from segtrain.cluster.frontend.plan import JobOptions, plan_target
from segtrain.cluster.site import METACENTRUM
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
                     job_info=qstat, scratch=workdir.parent / "scratch")[0]


def test_plan_resolves_defaults_against_the_submit_folder(workdir):
    plan = plan_for(workdir)
    assert plan.data == str(workdir / "data" / "small")
    assert Path(plan.run_dir).parent == workdir / "storage" / "runs" and not plan.continuing
    assert Path(plan.run_dir).name.startswith("small-")
    assert plan.work_run == workdir.parent / "scratch" / "runs" / Path(plan.run_dir).name
    assert (plan.max_resubmits, plan.resubmits) == (10, 0)


def test_plan_without_config_uses_configs_default_yaml(workdir):
    with pytest.raises(UserError, match="configs/default.yaml"):
        make_plan(job_env(workdir), [], 0.0, None, workdir.parent / "scratch")


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
        make_plan({"SCRATCHDIR": "/tmp"}, [], 0.0, None, Path("/tmp"))


def test_continuing_a_run_uses_its_config_and_the_data_set_it_recorded(workdir):
    run = workdir / "storage" / "runs" / "small-1"
    run.mkdir(parents=True)
    (run / "config.yaml").write_text("data: {root: /scratch/of/an/old/job/data}\n")
    (run / "run.json").write_text(json.dumps({"data_source": str(workdir / "data" / "small")}))
    plan, _ = make_plan(job_env(workdir, RUN=str(run)), [], 0.0, QSTAT, workdir.parent / "scratch")
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
    argv, message = resubmission(plan, 3, None, plan.walltime_s)
    request = parse_qsub_args(argv[1:], environ={})
    assert request.attributes == {"depend": "afterany:7.server"} and request.name == "small"
    assert request.resources == plan.resources
    assert {k: decode_value(v) for k, v in request.variables.items()} == {
        "RUN": plan.run_dir, "DATA": plan.data, "RUNS": plan.runs, "MAX_RESUBMITS": "3", "RESUBMITS": "1",
        "SEGTRAIN_ENV": "/envs/segtrain"}
    assert request.script == workdir / "jobs" / "train.pbs" and "resubmission 1 of at most 3" in message


def test_a_private_runs_umask_goes_on_to_the_job_that_continues_it(workdir):
    """UMASK, which the job sets itself (a #PBS -W umask directive beats qsub -W umask), stays with the chain."""
    plan = plan_for(workdir, UMASK="077")
    argv, _ = resubmission(plan, 3, None, plan.walltime_s)
    assert parse_qsub_args(argv[1:], environ={}).variables["UMASK"] == "077"
    assert f"-v RUN={plan.run_dir},UMASK=077 jobs/train.pbs" in continue_command(plan)  # by hand, as private


@pytest.mark.parametrize("code, after_s, variables, reason", [
    (0, None, {}, ""), (1, None, {}, ""), (3, 600, {}, "after SIGTERM before the walltime (qdel?)"),
    (143, 600, {}, "after SIGTERM before the walltime (qdel?)"), (0, 3600, {}, ""),
    (3, None, {"MAX_RESUBMITS": "2", "RESUBMITS": "2"}, "MAX_RESUBMITS=2 reached"),
])
def test_no_resubmission_unless_stopped_by_the_time_limit_within_the_budget(workdir, code, after_s, variables, reason):
    plan = plan_for(workdir, **variables)
    terminated_at = None if after_s is None else plan.job_start + after_s
    argv, message = resubmission(plan, code, terminated_at, plan.walltime_s)
    assert argv is None and reason in message
    if reason:
        assert f"qsub -l select=1:ncpus=8:mem=32gb -v RUN={plan.run_dir} jobs/train.pbs" in message


def checkpointed(plan: Plan, start_step: int, end_step: int) -> None:
    Path(plan.run_dir).mkdir(parents=True, exist_ok=True)
    (Path(plan.run_dir) / "run.json").write_text(json.dumps(
        {"segments": [{"job_id": plan.job_id, "start_step": start_step, "end_step": end_step}]}))


@pytest.mark.parametrize("code", [3, 143])  # a checkpoint; or killed while exiting after a clean stop
def test_a_sigterm_at_the_walltime_continues_the_chain_when_the_job_checkpointed(workdir, code):
    plan = plan_for(workdir)
    checkpointed(plan, 4, 9)
    argv, message = resubmission(plan, code, plan.job_start + 3600 + 25, plan.walltime_s)  # 25 s late
    assert argv is not None and "resubmission 1" in message
    assert "SIGTERM at the walltime" in explain(3, plan.job_start + 3600 + 25, plan, plan.walltime_s)


def test_a_sigterm_at_the_walltime_without_a_new_checkpoint_ends_the_chain(workdir):
    plan = plan_for(workdir)
    checkpointed(plan, 4, 4)
    argv, message = resubmission(plan, 143, plan.job_start + 3600, plan.walltime_s)
    assert argv is None and "without a new checkpoint" in message


def test_a_walltime_extended_with_qextend_makes_a_sigterm_before_it_a_qdel(workdir):
    plan = plan_for(workdir)
    checkpointed(plan, 0, 3)
    assert resubmission(plan, 3, plan.job_start + 3600, 2 * 3600)[0] is None


def test_explanations_say_what_happened_and_how_to_continue(workdir):
    plan = plan_for(workdir)
    wall = plan.walltime_s
    assert "crashed (exit 1" in explain(1, None, plan, wall) and f"RUN={plan.run_dir}" in explain(1, None, plan, wall)
    assert "SIGKILL" in explain(137, None, plan, wall) and "out of memory" in explain(137, None, plan, wall)
    assert "time limit" in explain(3, None, plan, wall) and "qdel" in explain(3, plan.job_start + 5, plan, wall)
    assert "before the trainer started" in explain(None, None, plan, wall)


def test_the_continue_hint_asks_for_the_jobs_processes_and_gpus(workdir):
    plan = plan_for(workdir, NPROC="2")
    plan.resources = {"select": "1:ncpus=8:ngpus=2:mem=32gb", "walltime": "01:00:00"}
    assert (f"qsub -l select=1:ncpus=8:ngpus=2:mem=32gb -v RUN={plan.run_dir},NPROC=2 jobs/train.pbs"
            in explain(1, None, plan, 3600))


def test_a_new_run_directory_is_created_at_job_start_with_this_job_and_its_processes(workdir):
    first, second = plan_for(workdir), plan_for(workdir, PBS_JOBID="8.server")  # same config, same second
    assert first.run_dir == second.run_dir  # the preview: nothing created yet
    open_run_dir(first)
    open_run_dir(second)
    assert first.run_dir != second.run_dir and Path(second.run_dir).name == Path(first.run_dir).name + "-2"
    info = json.loads((Path(first.run_dir) / "run.json").read_text())
    assert info["job_id"] == "7.server" and info["status"] == "starting"
    assert info["processes"] == {"world": 1, "nodes": 1, "per_node": 1, "resources": first.resources}
    log = (workdir / "storage" / "runs" / "submissions.jsonl").read_text().splitlines()
    assert [json.loads(line)["run"] for line in log] == [Path(first.run_dir).name, Path(second.run_dir).name]


def test_a_job_deleted_before_its_trainer_started_leaves_a_run_that_can_be_continued(workdir, monkeypatch):
    """qdel while the trainer is still starting: the run on storage is what the plan step made. The continue
    commands the job prints (qsub -v RUN=..., scripts/submit RUN) must work on it: it holds its config."""
    shutil.copytree(REPO / "jobs", workdir / "jobs")
    qstat = workdir.parent / "qstat.txt"
    qstat.write_text(QSTAT.replace("mem=32gb", "mem=32gb:scratch_local=10gb"))
    for name, value in job_env(workdir, CONFIG="configs/small.yaml").items():
        monkeypatch.setenv(name, value)
    plan_file = workdir.parent / "plan.json"
    assert main(["plan", str(plan_file), "--scratch", str(workdir.parent / "scratch"), "--job-info", str(qstat)]) == 0
    run = Path(Plan.load(plan_file).run_dir)  # then the job is deleted: its trainer wrote nothing
    assert load_config(run / "config.yaml") == load_config(workdir / "configs" / "small.yaml")
    continued, _ = make_plan(job_env(workdir, PBS_JOBID="8.server", RUN=str(run)), [], 1000.0, qstat.read_text(),
                             workdir.parent / "scratch")  # qsub -v RUN=... jobs/train.pbs
    assert continued.run_dir == str(run) and continued.continuing and continued.config == str(run / "config.yaml")
    sub = plan_target(run, [], JobOptions(site=METACENTRUM, check_data=False), workdir, array=False)  # scripts/submit RUN
    assert workdir / decode_value(parse_qsub_args(sub.jobs[0][1:], environ={}).variables["RUN"]) == run


def test_a_job_rerun_by_pbs_continues_the_run_it_started(workdir):
    first = plan_for(workdir)
    open_run_dir(first)
    (Path(first.run_dir) / "config.yaml").write_text("data: {root: data/small}\n")  # the trainer wrote it
    rerun = plan_for(workdir, qstat=QSTAT + "    run_count = 2\n")
    assert rerun.run_dir == first.run_dir and rerun.continuing and rerun.new_run_name is None
    assert plan_for(workdir).run_dir != first.run_dir  # run_count 1: a new job that happens to reuse the id


def test_continuing_with_another_process_count_fails_before_anything_is_copied(workdir):
    first = plan_for(workdir, NPROC="2")
    open_run_dir(first)
    (Path(first.run_dir) / "config.yaml").write_text("data: {root: data/small}\n")
    with pytest.raises(UserError, match="written by 2 processes .* this job has 1 .* scripts/submit"):
        plan_for(workdir, RUN=first.run_dir)


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


def test_finish_step_copies_back_and_exits_10_when_no_resubmission_is_due(workdir, capsys):
    path, plan = workdir.parent / "plan.json", plan_for(workdir)
    plan.save(path)
    plan.work_run.mkdir(parents=True)
    (plan.work_run / "metrics.jsonl").write_text("{}\n")
    qsub_file = workdir.parent / "qsub.args"
    assert main(["finish", str(path), "--trainer-exit", "0", "--next", str(qsub_file)]) == EXIT_NO_RESUBMIT
    assert (Path(plan.run_dir) / "metrics.jsonl").is_file() and not qsub_file.exists()
    assert main(["finish", str(path), "--trainer-exit", "3", "--next", str(qsub_file)]) == 0
    assert qsub_file.read_bytes().split(b"\0")[0] == b"qsub"


def test_a_failed_copy_back_after_exit_2_blames_storage_not_the_config_or_the_data(workdir, capsys):
    """Storage that became unwritable mid-run stops the trainer's mirror (exit 2) and then the copy-back."""
    path, plan = workdir.parent / "plan.json", plan_for(workdir)
    plan.save(path)
    plan.work_run.mkdir(parents=True)
    (plan.work_run / "metrics.jsonl").write_text("{}\n")
    Path(plan.run_dir).parent.mkdir(parents=True)
    Path(plan.run_dir).write_text("not a folder")  # what root sees as unwritable storage
    assert main(["finish", str(path), "--trainer-exit", "2", "--next", str(workdir.parent / "qsub.args")]) != 0
    out = capsys.readouterr().out
    assert "config or the data set" not in out and "copy-back FAILED" in out
    assert f"the storage folder {plan.run_dir} cannot be written" in out and "kept in scratch" in out


def test_a_walltime_raised_with_qextend_moves_the_trainers_deadline(workdir, capsys):
    path = workdir.parent / "job" / "plan.json"
    plan = plan_for(workdir, WALLTIME_MARGIN="00:01:00")
    plan.data_root = "/scratch/data"
    plan.save(path)
    words, _ = trainer_args(plan, load_config(plan.config), now=plan.job_start, deadline_file=path.parent / "deadline")
    assert words[words.index("--deadline-file") + 1] == str(path.parent / "deadline")
    qstat = workdir.parent / "qstat.txt"
    qstat.write_text(QSTAT)  # unchanged: nothing written
    assert main(["deadline", str(path), "--job-info", str(qstat)]) == 0 and not (path.parent / "deadline").exists()
    qstat.write_text(QSTAT.replace("01:00:00", "03:00:00"))  # qextend +2 h
    assert main(["deadline", str(path), "--job-info", str(qstat)]) == 0
    assert float((path.parent / "deadline").read_text()) == plan.job_start + 3 * 3600 - 60
    assert Plan.load(path).walltime_s == 3 * 3600 and "walltime now 03:00:00" in capsys.readouterr().out
