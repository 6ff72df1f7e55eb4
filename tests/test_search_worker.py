"""Search workers: trials trained, reported and pruned; nothing lost to a stop, a kill, a second worker or a torn journal."""
from __future__ import annotations

import json
import time

import optuna
from searchutil import EPOCHS, make_study, outcome, run_worker, trials, wait_for, worker_proc
from trainutil import SIGKILL, SIGTERM
from wandbutil import records

from segtrain.run.metrics_log import read_metrics
from segtrain.search.claims import CLAIM
from segtrain.search.reuse import REPEAT_OF
from segtrain.search.status import status_text
from segtrain.search.study import HEARTBEATS, trial_dir
from segtrain.search.worker import WorkerOptions
from segtrain.search.worker import run_worker as work

ASHA = "pruner: {name: asha, min_epochs: 1, reduction_factor: 2}\nsampler: {name: tpe, startup_trials: 3}\nseed: 3\n"


def val_epochs(run_dir) -> list[int]:
    return [r["epoch"] for r in read_metrics(run_dir / "metrics.jsonl") if r["split"] == "val"]


def run_info(run_dir) -> dict:
    return json.loads((run_dir / "run.json").read_text())


def test_an_asha_study_of_8_trials_prunes_some_and_completes_the_rest(tmp_path, small_data_ro):
    study = make_study(tmp_path, small_data_ro, ASHA + "n_trials: 8\n")
    code, out = run_worker(study)
    assert code == 0, out
    found = trials(study)
    states = [t.state.name for t in found]
    assert len(found) == 8 and set(states) == {"COMPLETE", "PRUNED"}, states
    for t in found:
        run = trial_dir(study, t.number)
        assert val_epochs(run) == list(range(len(t.intermediate_values)))  # each validation reported once
        assert (run / "checkpoints" / "last.pt").is_file()
        if t.state.name == "PRUNED":
            assert run_info(run)["status"] == "pruned" and len(t.intermediate_values) < EPOCHS
        else:
            assert run_info(run)["status"] == "done" and len(t.intermediate_values) == EPOCHS
            assert t.value == max(t.intermediate_values.values())


def test_a_stopped_worker_resumes_its_trial_in_its_next_job_and_the_study_ends_as_an_uninterrupted_one(
        tmp_path, small_data_ro):
    body = ASHA + "n_trials: 4\n"
    uninterrupted = make_study(tmp_path, small_data_ro, body, name="whole")
    assert run_worker(uninterrupted)[0] == 0
    study = make_study(tmp_path, small_data_ro, body, name="stopped")
    proc = worker_proc(study)
    # trial 0 is past its first epoch; ASHA never prunes the first trial at a rung, so it is still training
    wait_for(trial_dir(study, 0) / "metrics.jsonl", '"split": "val"', proc)
    proc.send_signal(SIGTERM)  # a walltime or qdel
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 3, out
    paused = trials(study)[0]
    assert paused.state.name == "RUNNING" and paused.system_attrs[CLAIM]["state"] == "paused"
    params, reported = paused.params, dict(paused.intermediate_values)

    code, out = run_worker(study)
    assert code == 0, out
    assert "resuming trial 0" in out
    resumed = trials(study)[0]
    assert resumed.params == params and resumed.intermediate_values.items() >= reported.items()
    run = trial_dir(study, 0)
    segments = run_info(run)["segments"]
    assert len(segments) == 2 and segments[1]["start_step"] == segments[0]["end_step"] > 0  # from its checkpoint
    assert val_epochs(run) == sorted(set(val_epochs(run)))  # no epoch trained twice
    assert outcome(study) == outcome(uninterrupted)


def test_a_killed_workers_trial_is_taken_over_by_another_worker_from_its_checkpoint(tmp_path, small_data_ro):
    study = make_study(tmp_path, small_data_ro, "pruner: none\nn_trials: 1\nstale_after: 2\n")
    proc = worker_proc(study, "--worker", "a")
    wait_for(trial_dir(study, 0) / "checkpoints" / "last.pt", "", proc)  # its first epoch is checkpointed
    proc.send_signal(SIGKILL)  # a lost node: no word, no checkpoint, no pause
    proc.communicate(timeout=60)
    killed = trials(study)[0]
    assert killed.state.name == "RUNNING" and killed.system_attrs[CLAIM]["state"] == "running"
    heartbeat = study / HEARTBEATS / "0000"
    while time.time() - heartbeat.stat().st_mtime <= 2:  # until the heartbeat is stale
        time.sleep(0.2)

    code, out = run_worker(study, "--worker", "b")
    assert code == 0, out
    taken = trials(study)[0]
    assert taken.state.name == "COMPLETE" and taken.params == killed.params
    assert taken.system_attrs[CLAIM]["worker"] == "b" and taken.system_attrs[CLAIM]["taken_from"] == "a"
    assert sorted(taken.intermediate_values) == list(range(1, EPOCHS + 1))
    segments = run_info(trial_dir(study, 0))["segments"]
    assert len(segments) == 2 and segments[1]["start_step"] > 0


def test_two_workers_on_one_journal_neither_duplicate_nor_lose_a_trial(tmp_path, small_data_ro):
    study = make_study(tmp_path, small_data_ro, ASHA + "n_trials: 6\nworkers: 2\n")
    procs = [worker_proc(study, "--worker", name) for name in ("0", "1")]
    outs = [proc.communicate(timeout=900)[0] for proc in procs]
    assert [proc.returncode for proc in procs] == [0, 0], outs
    found = trials(study)
    assert [t.number for t in found] == list(range(6))
    assert all(t.state.name in ("COMPLETE", "PRUNED") for t in found)
    assert sorted(p.name for p in (study / "trials").iterdir()) == [f"{n:04d}" for n in range(6)]
    for t in found:  # trained once, by one worker, in one segment
        assert len(run_info(trial_dir(study, t.number))["segments"]) == 1
        assert sum(f"trial {t.number}:" in out for out in outs) == 1


def test_a_partial_last_line_in_the_journal_does_not_break_the_study(tmp_path, small_data_ro):
    study = make_study(tmp_path, small_data_ro, "pruner: none\nn_trials: 2\n")
    with open(study / "journal.log", "ab") as journal:
        journal.write(b'{"op_code": 4, "worker_id": "a-kil')  # a writer killed mid-line
    code, out = run_worker(study)
    assert code == 0, out
    assert [t.state.name for t in trials(study)] == ["COMPLETE", "COMPLETE"]
    assert (study / "journal.log.partial").read_bytes() == b'{"op_code": 4, "worker_id": "a-kil\n'


def test_each_trial_is_an_offline_wandb_run_in_the_studys_group(tmp_path, small_data_ro):
    study = make_study(tmp_path, small_data_ro, "pruner: none\nsampler: random\nn_trials: 2\n",
                       extra=("logging.wandb.mode=offline", "train.epochs=1"))
    code, out = run_worker(study)
    assert code == 0, out
    ids = []
    for t in trials(study):
        run = trial_dir(study, t.number)
        wandb_id = run_info(run)["wandb_id"]
        files = list((run / "wandb").glob(f"offline-run-*-{wandb_id}/run-{wandb_id}.wandb"))
        assert len(files) == 1, list(run.rglob("*.wandb"))
        runs = [r.run for r in records(files[0]) if r.WhichOneof("record_type") == "run"]
        assert runs and {r.run_group for r in runs} == {study.name}, [r.run_group for r in runs]
        assert {r.run_id for r in runs} == {wandb_id}
        ids.append(wandb_id)
    assert len(set(ids)) == 2  # one run per trial


def test_a_trial_of_a_pruned_runs_parameters_continues_that_run_and_ends_as_one_trained_whole(
        tmp_path, small_data_ro, monkeypatch):
    one_point = "space:\n  optim.name: [adamw]\n"  # every trial draws the same parameters
    whole = make_study(tmp_path, small_data_ro, "pruner: none\nn_trials: 1\n", name="whole", space=one_point)
    assert run_worker(whole)[0] == 0
    halving = "pruner: {name: successive_halving, min_epochs: 1, reduction_factor: 2}\n"
    study = make_study(tmp_path, small_data_ro, halving + "n_trials: 3\n", space=one_point)
    should_prune = optuna.trial.Trial.should_prune
    asked = []
    # trial 0 is pruned after its first epoch; the pruner decides the rest
    monkeypatch.setattr(optuna.trial.Trial, "should_prune", lambda trial: asked.append(0) or len(asked) == 1 or
                        should_prune(trial))
    assert work(WorkerOptions(study_dir=study)) == 0
    first, again, third = trials(study)
    assert first.state.name == "PRUNED" and list(first.intermediate_values) == [1]
    # trial 1 continues trial 0's run from its checkpoint: the study ends with the values of a run trained whole
    assert again.user_attrs[REPEAT_OF] == 0 and again.state.name == "COMPLETE"
    assert again.intermediate_values == trials(whole)[0].intermediate_values and again.value == trials(whole)[0].value
    # trial 2 finds that run trained to its end: its values, nothing trained
    assert third.user_attrs[REPEAT_OF] == 0 and (third.value, third.intermediate_values) == (again.value,
                                                                                             again.intermediate_values)
    assert sorted(p.name for p in (study / "trials").iterdir()) == ["0000"]
    run = trial_dir(study, 0)
    segments = run_info(run)["segments"]
    assert len(segments) == 2 and segments[1]["start_step"] == segments[0]["end_step"] > 0
    assert val_epochs(run) == list(range(EPOCHS)) and run_info(run)["trial"]["number"] == 1
    assert "(run of trial 0)" in status_text(study).splitlines()[-1]
