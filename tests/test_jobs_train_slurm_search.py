"""A search's two workers as a job array of jobs/train.slurm on the real Slurm (skipped where none answers)."""
from __future__ import annotations

import json

from searchutil import SPACE, trials
from test_jobs_train_slurm import pytestmark, scratch_base, submit, submitted_ids, wait_until_ended  # noqa: F401
from test_jobs_train_pbs import make_repo
from trainutil import TINY

from segtrain.cluster.slurm import SLURM


def test_two_workers_as_a_job_array_train_every_trial_once(tmp_path, small_data_ro):
    repo = make_repo(tmp_path / "segtrain", small_data_ro)
    (repo / "search.yaml").write_text(f"base: configs/demo.yaml\noverrides: {[*TINY, 'train.epochs=3']}\n{SPACE}"
                                      "pruner: none\nsampler: random\nn_trials: 3\nworkers: 2\n")
    [array_id] = submitted_ids(submit(repo, "search.yaml", "--name", "segtrain-test"))
    tasks = [SLURM.subjob_id(array_id, index) for index in range(2)]
    for task in tasks:
        assert wait_until_ended(task)["JobState"] == "COMPLETED"
    [study] = [p for p in (repo / "runs").iterdir() if p.is_dir()]
    found = trials(study)
    assert [t.state.name for t in found] == ["COMPLETE"] * 3
    trained_by = []
    for t in found:  # each trial trained once, in one segment, by one of the array's tasks
        [segment] = json.loads((study / "trials" / f"{t.number:04d}" / "run.json").read_text())["segments"]
        trained_by.append(segment["job_id"])
    assert set(trained_by) <= set(tasks)
    status = submit(repo, "--status", str(study))
    assert "3 of 3 trials asked; 3 complete" in status.stdout
    assert list(scratch_base(repo).iterdir()) == []
