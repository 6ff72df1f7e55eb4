"""run.json: what its writers write is what its schema (segtrain.run.run_json) declares, and nothing else."""
from __future__ import annotations

import json

import pytest

from segtrain.run.directory import RunDir
from segtrain.run.run_json import RunJson, problems


def test_a_real_runs_run_json_holds_only_the_keys_the_schema_declares(trained_run_ro):
    info = json.loads(RunDir(trained_run_ro).info.path.read_text())
    assert problems(info) == []
    assert {"name", "run_id", "created", "wandb_id", "git_commit", "status", "segments"} <= set(info)
    assert {"job_id", "host", "started", "ended", "exit_code", "start_step", "end_step", "timing"} <= set(info["segments"][0])


def test_every_writer_of_a_job_writes_only_declared_keys(tmp_path):
    info = RunJson(tmp_path / "run.json")
    info.job_started("7.pbs", {"world": 2, "nodes": 1, "per_node": 2, "resources": {"select": "1:ngpus=2"}})
    info.keep_data_source("/storage/data")
    info.start_segment("run", None, "7.pbs", 0)
    info.update_segment(end_step=4, timing={"steps": 4})
    info.end_segment("stopped", 3, end_step=4)
    info.keep_report("7.pbs", {"job_id": "7.pbs", "elapsed_s": 60.0})
    info.add_resubmission("7.pbs", "8.pbs")
    written = json.loads((tmp_path / "run.json").read_text())
    assert problems(written) == []
    assert written["resubmissions"][0]["from"] == "7.pbs" and written["segments"][0]["report"]["elapsed_s"] == 60.0


@pytest.mark.parametrize("write", [lambda info: info.update(colour="blue"),
                                   lambda info: info.update_segment(gpus=2),
                                   lambda info: info.end_segment("paused", 3)])
def test_a_write_outside_the_schema_is_refused_and_leaves_the_file_as_it_was(tmp_path, write):
    info = RunJson(tmp_path / "run.json")
    info.start_segment("run", None, None, 0)
    before = info.path.read_bytes()
    with pytest.raises(ValueError, match="outside the schema"):
        write(info)
    assert info.path.read_bytes() == before


def test_undeclared_keys_a_file_already_holds_are_kept_by_later_writes(tmp_path):
    path = tmp_path / "run.json"
    path.write_text(json.dumps({"status": "stopped", "note": "written by hand", "segments": [{"job_id": "1", "x": 1}]}))
    RunJson(path).end_segment("done", 0, end_step=9)
    info = json.loads(path.read_text())
    assert info["note"] == "written by hand" and info["segments"][0]["x"] == 1 and info["status"] == "done"


def test_problems_name_undeclared_keys_at_any_depth_and_a_status_outside_the_list():
    assert problems({"status": "paused", "colour": 1, "segments": [{"job_id": "1", "gpus": 2}],
                     "processes": {"world": 1, "cores": 4}, "resubmissions": [{"from": "1", "to": "2", "by": "me"}]}) == [
        "run.json: 'colour' is not declared",
        "run.json.status: 'paused' is not one of starting, running, done, stopped, failed, pruned",
        "run.json.segments[0]: 'gpus' is not declared",
        "run.json.processes: 'cores' is not declared",
        "run.json.resubmissions[0]: 'by' is not declared",
    ]
