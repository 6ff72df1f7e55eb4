"""Slurm's facts: times, `scontrol show job`, the job's variables, sbatch words; and which scheduler is chosen."""
from pathlib import Path

import pytest

from segtrain.cluster.pbs import PBS
from segtrain.cluster.variables import decode_value
from segtrain.cluster.schedulers import current_job_id, get_scheduler
from segtrain.cluster.scheduler import JobState
from segtrain.cluster.slurm import SLURM, export_list, parse_show_job, parse_time, sacct_states, script_options
from segtrain.errors import UserError

REPO = Path(__file__).resolve().parents[1]
# scontrol show job of an array task (Slurm 22.05), trimmed
SHOW_JOB = """JobId=14 ArrayJobId=12 ArrayTaskId=2 JobName=segtrain
   UserId=root(0) GroupId=root(0) MCS_label=N/A
   Priority=1 Nice=0 Account=open-00-00 QOS=normal
   JobState=RUNNING Reason=None Dependency=(null)
   Requeue=1 Restarts=0 BatchFlag=1 Reboot=0 ExitCode=0:0
   RunTime=00:00:14 TimeLimit=1-02:00:00 TimeMin=N/A
   Partition=qgpu AllocNode:Sid=login1:12744
   NumNodes=1 NumCPUs=16 NumTasks=1 CPUs/Task=16 ReqB:S:C:T=0:0:*:*
   MinCPUsNode=16 MinMemoryNode=64G MinTmpDiskNode=0
   TresPerNode=gres:gpu:2

JobId=15 JobName=other
   JobState=COMPLETED Reason=None Dependency=(null)
   ExitCode=0:9 TimeLimit=UNLIMITED
"""


# sacct -n -P -X -o JobID,State,ExitCode -j 37,41,42_0,42_1 (Slurm 22.05 with slurmdbd): a job that stopped
# to be resubmitted (exit 3), one cancelled while running, the two tasks of an array
SACCT = "37|FAILED|3:0\n41|CANCELLED by 0|0:0\n42_0|FAILED|1:0\n42_1|COMPLETED|0:0\n"


@pytest.mark.parametrize("text, seconds", [("10", 600), ("5:30", 330), ("01:02:03", 3723), ("2-0", 172800),
                                           ("1-02:30", 95400), ("1-00:00:05", 86405)])
def test_slurm_times_read_as_sbatch_reads_them(text, seconds):
    assert parse_time(text) == seconds


def test_an_unlimited_time_is_none_and_a_bad_one_an_error_naming_it():
    assert parse_time("UNLIMITED") is None
    with pytest.raises(UserError, match="--time: '1h'"):
        parse_time("1h")


def test_scontrol_show_job_names_array_tasks_as_squeue_does():
    jobs = parse_show_job(SHOW_JOB)
    assert set(jobs) == {"12_2", "15"} and jobs["15"]["ExitCode"] == "0:9"


def test_walltime_and_granted_resources_come_from_scontrol_for_the_resubmission():
    assert SLURM.walltime(SHOW_JOB, "12_2", []) == (26 * 3600, "scontrol show job")
    assert SLURM.granted(SHOW_JOB, "12_2") == {"time": "26:00:00", "partition": "qgpu", "account": "open-00-00",
                                               "nodes": "1", "cpus-per-task": "16", "mem": "64G", "gpus-per-node": "2"}


def test_without_scontrol_the_walltime_is_the_scripts_directive():
    assert SLURM.walltime(None, "1", [REPO / "jobs" / "train.slurm"]) == (24 * 3600, f"the directive in {REPO}/jobs/train.slurm")
    assert script_options(REPO / "jobs" / "train.slurm")["signal"] == "B:USR1@300"


def test_a_jobs_variables_say_its_id_folder_and_array_index():
    env = SLURM.job_environment({"SLURM_JOB_ID": "14", "SLURM_ARRAY_JOB_ID": "12", "SLURM_ARRAY_TASK_ID": "2",
                                 "SLURM_SUBMIT_DIR": "/home/u/segtrain", "SLURM_JOB_NAME": "seg"})
    assert (env.job_id, env.job_name, env.array_index, env.workdir) == ("12_2", "seg", 2, Path("/home/u/segtrain"))
    assert current_job_id({"SLURM_JOB_ID": "14"}) == "14" and current_job_id({"PBS_JOBID": "3.pbs"}) == "3.pbs"


def test_sbatch_words_encode_values_with_commas_and_clear_the_other_job_variables():
    argv = SLURM.submit_argv("jobs/train.slurm", {"OVERRIDES": "data.bands='[0, 1]'"}, name="n",
                             resources={"time": "01:00:00"}, depend="afterany:7", array="0-2")
    assert argv[:6] == ["sbatch", "--parsable", "--job-name=n", "--time=01:00:00", "--array=0-2",
                        "--dependency=afterany:7"]
    exported = argv[-2].split(",")
    assert exported[0] == "--export=ALL" and "MANIFEST=" in exported and "RESUBMITS=" in exported
    [overrides] = [w.split("=", 1)[1] for w in exported if w.startswith("OVERRIDES=")]
    assert decode_value(overrides) == "data.bands='[0, 1]'"
    assert export_list({}).startswith("ALL,CONFIG=,")


def test_sbatch_answers_with_the_job_id():
    assert SLURM.job_id("42\n") == "42" and SLURM.job_id("42;karolina\n") == "42"
    with pytest.raises(UserError, match="sbatch answered"):
        SLURM.job_id("sbatch: error")


def test_the_scheduler_is_the_named_one_else_the_installed_one(monkeypatch, tmp_path):
    assert get_scheduler("slurm") is SLURM and get_scheduler(environ={"SEGTRAIN_SCHEDULER": "pbs"}) is PBS
    with pytest.raises(UserError, match="scheduler 'lsf' is not known"):
        get_scheduler("lsf")
    (tmp_path / "sbatch").write_text("#!/bin/sh\n")
    (tmp_path / "sbatch").chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))
    assert get_scheduler(environ={}) is SLURM


def test_a_requeued_job_continues_the_run_it_started_and_a_new_job_never_takes_it(tmp_path, small_data_ro):
    from segtrain.cluster.job.steps import make_plan
    from segtrain.run.directory import RunDir

    work = tmp_path / "work"
    (work / "configs").mkdir(parents=True)
    (work / "configs" / "small.yaml").write_text(f"data: {{root: {small_data_ro}}}\nrun: {{root: runs, name: r1}}\n")
    (work / "runs" / "r1").mkdir(parents=True)
    RunDir(work / "runs" / "r1").info.update(segments=[{"job_id": "41"}])
    env = {"SLURM_JOB_ID": "41", "SLURM_SUBMIT_DIR": str(work), "CONFIG": "configs/small.yaml"}
    plan, _ = make_plan(env, [], 0.0, SHOW_JOB, scratch=tmp_path)
    assert plan.continuing and plan.run_dir == str(work / "runs" / "r1") and plan.scheduler == "slurm"
    plan, _ = make_plan({**env, "SLURM_JOB_ID": "42"}, [], 0.0, SHOW_JOB, scratch=tmp_path)
    assert not plan.continuing and plan.run_dir == str(work / "runs" / "r1-2")


def test_sacct_lines_give_each_asked_jobs_state_and_exit_status():
    assert sacct_states(SACCT, ["37", "41", "42_1", "43"]) == {
        "37": JobState("F", 3), "41": JobState("F", 0), "42_1": JobState("F", 0)}


def test_a_prediction_task_stopped_by_its_time_limit_resubmits_its_rest_with_sbatch(tmp_path):
    from segtrain.cluster.job.predict_steps import JobContext, resubmission
    from segtrain.cluster.predictions import Manifest, PredictSettings

    work = tmp_path / "work"
    manifest = Manifest(model="m.onnx", model_sha256="0", out=str(work / "preds"), settings=PredictSettings(),
                        shards=[["a.tif"], ["b.tif"]], path=work / "preds" / ".segtrain" / "predict-1.json")
    ctx = JobContext(manifest=manifest, shard=1, job_id="12_1", job_name="predict", workdir=work, scratch=tmp_path,
                     deadline=None, resources={"time": "01:00:00", "partition": "qgpu"}, passed_on={}, resubmits=0,
                     max_resubmits=10, scheduler="slurm")
    argv, message = resubmission(ctx)
    assert argv[:4] == ["sbatch", "--parsable", "--job-name=predict", "--time=01:00:00"] and not any(w.startswith("--array") for w in argv)
    assert argv[-1] == str(work / "jobs" / "predict.slurm") and "resubmission 1 of at most 10: sbatch" in message
    exported = dict(item.split("=", 1) for item in argv[-2].removeprefix("--export=").split(",")[1:])
    assert (exported["MANIFEST"], exported["SHARD"], exported["RESUBMITS"]) == ("preds/.segtrain/predict-1.json", "1", "1")
