"""scripts/submit --status / segtrain runs: each run's state from its run directory, the log and qstat."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import yaml

from segtrain.cli import main
from segtrain.cluster.job.resubmit import record_resubmission
from segtrain.cluster.pbs.local.server import LocalServer
from segtrain.cluster.frontend.status import status_rows, summarize_run, summary_table
from segtrain.cluster.pbs.status import qstat_states
from segtrain.cluster.scheduler import JobState
from segtrain.cluster.submissions import append_log, read_log
from segtrain.config import load_config, to_yaml
from segtrain.run.metrics_log import MetricsLog
from segtrain.run.directory import RunDir
from segtrain.run.run_json import RunJson

REPO = Path(__file__).resolve().parents[1]
LOCAL_QSTAT = [sys.executable, "-m", "segtrain.cluster.pbs.local", "qstat"]


def start_run(path: Path, job_id: str, metric: str = "iou", values=(0.2, 0.6, 0.5)) -> RunJson:
    """A run directory as the trainer writes it while job ``job_id`` runs (its writers, its layout); its run.json."""
    run = RunDir(path)
    run.create()
    cfg = load_config(REPO / "configs" / "demo.yaml", [f"train.early_stopping.metric={metric}"])
    run.config.write_text(to_yaml(cfg))
    run.info.start_segment(path.name, None, job_id, 0)
    log = MetricsLog(run.metrics, None)
    for epoch, value in enumerate(values):
        log.write({"step": 4 * (epoch + 1), "epoch": epoch, "split": "train", "loss": 1.0})
        log.write({"step": 4 * (epoch + 1), "epoch": epoch, "split": "val", metric: value})
    log.close()
    return run.info


def test_finished_run_shows_done_with_its_last_and_best_monitored_metric(tmp_path):
    start_run(tmp_path / "a", "7.pbs").end_segment("done", 0, end_step=12)
    summary = summarize_run(tmp_path / "a")
    assert (summary.status, summary.job_id, summary.epoch, summary.step) == ("done", "7.pbs", 2, 12)
    assert (summary.metric, summary.last, summary.best) == ("iou", 0.5, 0.6)


def test_loss_as_the_monitored_metric_is_best_when_lowest(tmp_path):
    start_run(tmp_path / "a", "7.pbs", metric="loss", values=(0.9, 0.3, 0.4))
    assert summarize_run(tmp_path / "a").best == 0.3


def test_stopped_run_with_a_queued_next_job_shows_resubmitted_and_that_job(tmp_path):
    start_run(tmp_path / "a", "7.pbs").end_segment("stopped", 3, end_step=12)
    record_resubmission(tmp_path / "a", "7.pbs", "8.pbs")
    summary = summarize_run(tmp_path / "a", {"8.pbs": JobState("Q", None)})
    assert (summary.status, summary.job_id) == ("resubmitted", "8.pbs")


def test_stopped_run_without_a_next_job_shows_stopped(tmp_path):
    start_run(tmp_path / "a", "7.pbs").end_segment("stopped", 3, end_step=12)
    assert summarize_run(tmp_path / "a").status == "stopped"


@pytest.mark.parametrize("state, shown", [(JobState("R", None), "running"), (JobState("F", -29), "failed"), (None, "running")])
def test_a_run_still_reading_running_is_failed_once_qstat_says_its_job_ended(tmp_path, state, shown):
    start_run(tmp_path / "a", "7.pbs")  # killed: no final status written
    assert summarize_run(tmp_path / "a", {"7.pbs": state} if state else {}).status == shown


@pytest.mark.parametrize("state, shown", [(JobState("Q", None), "queued"), (JobState("H", None), "queued"),
                                          (JobState("R", None), "running"), (JobState("F", 2), "failed"),
                                          (None, "not started")])
def test_a_run_not_written_yet_takes_its_state_from_qstat(tmp_path, state, shown):
    jobs = {"9.pbs": state} if state else {}
    assert summarize_run(tmp_path / "nothing-yet", jobs, submitted_as="9.pbs").status == shown


def test_qstat_states_come_from_qstat_x_f_including_finished_subjobs(tmp_path, monkeypatch):
    monkeypatch.setenv("SEGTRAIN_LOCAL_PBS", str(tmp_path / "state"))
    (tmp_path / "job.sh").write_text('#!/bin/bash\n#PBS -N t\nexit "$PBS_ARRAY_INDEX"\n')
    server = LocalServer()
    server.run_chain(server.submit(["-J", "0-1", "job.sh"], os.environ, tmp_path))
    states = qstat_states(["1[0].local", "1[1].local", "77.local"], LOCAL_QSTAT)
    assert states == {"1[0].local": JobState("F", 0), "1[1].local": JobState("F", 1), "77.local": JobState("U", None)}


def test_a_killed_job_shows_failed_on_a_server_without_job_history(tmp_path, monkeypatch):
    monkeypatch.setenv("SEGTRAIN_LOCAL_PBS", str(tmp_path / "state"))
    (tmp_path / "job.sh").write_text('#!/bin/bash\n#PBS -N t\nkill -KILL $$\n')
    server = LocalServer()
    server.configure(job_history=False)
    [job] = server.run_chain(server.submit(["job.sh"], os.environ, tmp_path))
    start_run(tmp_path / "a", job.id)  # it wrote "running", then was killed
    assert qstat_states([job.id], LOCAL_QSTAT) == {job.id: JobState("U", None)}
    assert summarize_run(tmp_path / "a", qstat_states([job.id], LOCAL_QSTAT)).status == "failed"


def test_a_resubmitted_job_that_started_shows_its_run_starting_not_resubmitted(tmp_path):
    start_run(tmp_path / "a", "7.pbs").end_segment("stopped", 3, end_step=12)
    record_resubmission(tmp_path / "a", "7.pbs", "8.pbs")
    RunDir(tmp_path / "a").info.update(status="starting", job_id="8.pbs", jobs=[{"id": "7.pbs"}, {"id": "8.pbs"}])
    summary = summarize_run(tmp_path / "a", {"8.pbs": JobState("R", None)})
    assert (summary.status, summary.job_id) == ("starting", "8.pbs")


def test_qstat_missing_means_no_states(tmp_path):
    assert qstat_states(["1.pbs"], [str(tmp_path / "no-qstat")]) == {}


def test_status_of_a_runs_folder_lists_logged_runs_then_any_others(tmp_path):
    runs = tmp_path / "runs"
    start_run(runs / "b", "5.pbs").end_segment("done", 0, end_step=12)
    start_run(runs / "a", "6.pbs").end_segment("failed", 1, end_step=4)
    append_log(runs, [{"job_id": "6.pbs", "run": "a", "index": None}, {"job_id": "9.pbs", "run": "c", "index": None}])
    rows = status_rows(runs)
    assert [(r.name, r.status, r.job_id) for r in rows] == [("a", "failed", "6.pbs"), ("c", "not started", "9.pbs"),
                                                             ("b", "done", "5.pbs")]
    assert summary_table(rows).splitlines()[0].split() == ["RUN", "JOB", "STATUS", "EPOCH", "STEP", "LAST", "iou",
                                                            "BEST", "iou", "TRAINING"]  # no grid points: no POINT column


def test_status_shows_the_share_of_its_jobs_time_each_run_spent_training(tmp_path):
    start_run(tmp_path / "a", "7.pbs").end_segment("done", 0, end_step=12, report={
        "elapsed_s": 200.0, "phases_s": {"training": 150.0, "start-up": 30.0}})
    start_run(tmp_path / "b", "8.pbs").end_segment("done", 0, end_step=12)  # not trained in a job
    rows = status_rows(tmp_path)
    assert [row.training_share for row in rows] == [0.75, None]
    assert [line.split()[-1] for line in summary_table(rows).splitlines()] == ["TRAINING", "75%", "-"]


def test_log_lines_torn_by_a_killed_submitter_are_skipped(tmp_path):
    append_log(tmp_path, [{"job_id": "1.pbs", "run": "a"}])
    with open(tmp_path / "submissions.jsonl", "a") as f:
        f.write('{"job_id": "2.p')
    assert read_log(tmp_path) == [{"job_id": "1.pbs", "run": "a"}]


def test_status_of_a_grid_file_shows_its_latest_submission(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "base.yaml").write_text("run: {root: out}\n")
    (tmp_path / "g.yaml").write_text(yaml.safe_dump({"base": "base.yaml", "product": {"train.seed": [1, 2]}}))
    for stamp, job in (("20260101-100000", "1.pbs"), ("20260102-100000", "2.pbs")):
        grid_dir = tmp_path / "out" / f"g-{stamp}"
        grid_dir.mkdir(parents=True)
        (grid_dir / "manifest.json").write_text('{"version": 1, "name": "g", "points": '
                                                '[{"index": 0, "run_name": "g-00"}, {"index": 1, "run_name": "g-01"}]}')
        append_log(tmp_path / "out", [{"job_id": job, "run": f"g-{stamp}/g-00", "index": 0}])
    assert main(["runs", "g.yaml"]) == 0
    out = capsys.readouterr().out
    assert "g-00  0      2.pbs  not started" in out and "1.pbs" not in out and "2 runs: 2 not started" in out
