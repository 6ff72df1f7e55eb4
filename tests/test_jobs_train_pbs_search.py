"""A search's workers as jobs/train.pbs jobs: the job runs `segtrain search work`, a walltime stop resumes the trial."""
from __future__ import annotations

import json
from pathlib import Path

from searchutil import SPACE, make_study, outcome, run_worker, trials
from test_jobs_train_pbs import make_repo, submit
from trainutil import TINY

from conftest import REPO
from segtrain.cluster.pbs.directives import parse_qsub_args
from segtrain.cluster.job.resubmit import resubmission
from segtrain.cluster.job.steps import make_plan, trainer_args

ASHA = "pruner: {name: asha, min_epochs: 1, reduction_factor: 2}\nsampler: {name: tpe, startup_trials: 2}\nseed: 5\n"


def subjob_env(study: Path, scratch: Path, index: str) -> dict:
    return {"PBS_JOBID": f"13[{index}].server", "PBS_O_WORKDIR": str(REPO), "SCRATCHDIR": str(scratch),
            "STUDY": str(study), "PBS_ARRAY_ID": "13[].server", "PBS_ARRAY_INDEX": index}


def test_a_subjob_of_a_studys_array_runs_its_worker_and_resubmits_as_the_same_worker(tmp_path, small_data_ro):
    study = make_study(tmp_path, small_data_ro, "n_trials: 2\nworkers: 2\n")
    (tmp_path / "scratch").mkdir()
    plan, cfg = make_plan(subjob_env(study, tmp_path / "scratch", "1"), [], 0.0, None, tmp_path / "scratch")
    assert (plan.study, plan.worker, plan.run_dir) == (str(study), "1", str(study / "workers" / "1"))
    plan.data_root = str(tmp_path / "scratch" / "data")
    words, _ = trainer_args(plan, cfg, 0.0)
    assert words == ["search", "work", str(study), f"data.root={json.dumps(plan.data_root)}", "--worker", "1"]
    argv, _ = resubmission(plan, 3, None, None)
    request = parse_qsub_args(argv[1:], environ={})
    assert request.array is None and request.variables["STUDY"] == str(study) and request.variables["WORKER"] == "1"


def test_a_worker_killed_at_the_walltime_resubmits_when_one_of_its_trials_moved_forward(tmp_path, small_data_ro):
    study = make_study(tmp_path, small_data_ro, "n_trials: 2\n")
    (tmp_path / "scratch").mkdir()
    plan, _ = make_plan(subjob_env(study, tmp_path / "scratch", "0"), [], 0.0, None, tmp_path / "scratch")
    trial = study / "trials" / "0000"
    trial.mkdir()
    segment = {"job_id": plan.job_id, "start_step": 6, "end_step": 6}
    (trial / "run.json").write_text(json.dumps({"segments": [segment]}))
    assert resubmission(plan, 3, 100.0, 100.0)[0] is None  # killed before its first new checkpoint
    (trial / "run.json").write_text(json.dumps({"segments": [{**segment, "end_step": 9}]}))
    argv, _ = resubmission(plan, 3, 100.0, 100.0)
    assert parse_qsub_args(argv[1:], environ={}).variables["STUDY"] == str(study)


SHORT = ("train.epochs=2", "data.tiles_per_epoch=16")  # 2 steps an epoch


def search_file(repo: Path, body: str) -> Path:
    """A search file in a repository copy (made by make_repo), over tiny trials on its data/demo."""
    path = repo / "walltime.yaml"
    overrides = [*TINY, "train.epochs=4", *SHORT]
    path.write_text(f"base: configs/demo.yaml\noverrides: {overrides}\n{SPACE}{body}")
    return path


def test_a_study_whose_jobs_stop_at_their_time_limit_ends_as_an_uninterrupted_one(tmp_path, small_data_ro):
    """A 1-minute walltime minus a margin of 0:59 leaves each job's worker a second: one step of one trial a job
    (it always trains one), so every trial is stopped and resumed by the next job, over a chain of jobs."""
    body = ASHA + "n_trials: 2\n"
    uninterrupted = make_study(tmp_path, small_data_ro, body, name="whole", extra=SHORT)
    assert run_worker(uninterrupted)[0] == 0
    repo = make_repo(tmp_path / "segtrain", small_data_ro)
    proc = submit(repo, search_file(repo, body).name, "--ncpus", "1", "--walltime", "00:01:00",
                  "--margin", "00:00:59", "--max-resubmits", "30", wait=False)
    stdout, _ = proc.communicate(timeout=1800)  # a chain of jobs: minutes on a loaded machine
    assert proc.returncode == 0, stdout
    [study] = [p for p in (repo / "runs").iterdir() if p.is_dir()]
    jobs = [line for line in stdout.splitlines() if line.startswith("job ")]
    assert len(jobs) >= 4 and all(": exit 3;" in line for line in jobs[:-1]), jobs  # stopped, resubmitted
    for t in trials(study):
        segments = json.loads((study / "trials" / f"{t.number:04d}" / "run.json").read_text())["segments"]
        assert len(segments) > 1  # stopped by a job's time limit and resumed by the next job
        assert all(later["start_step"] == earlier["end_step"] for earlier, later in zip(segments, segments[1:]))
    assert outcome(study) == outcome(uninterrupted)
