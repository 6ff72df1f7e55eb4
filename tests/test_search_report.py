"""What a study shows: its status by trial state with the best so far, its figures and best.yaml."""
from __future__ import annotations

import subprocess
import sys

import pytest
from searchutil import make_study, run_worker, trials

from segtrain.config import load_config
from segtrain.search.status import status_text


@pytest.fixture(scope="module")
def finished_study(tmp_path_factory, small_data_ro):
    tmp_path = tmp_path_factory.mktemp("report")
    study = make_study(tmp_path, small_data_ro, "pruner: {name: median, min_epochs: 1, startup_trials: 1}\n"
                                                "sampler: random\nn_trials: 3\n")
    code, out = run_worker(study)
    assert code == 0, out
    return study


def test_status_counts_trials_by_state_and_names_the_best_with_its_values(finished_study):
    found = trials(finished_study)
    best = max((t for t in found if t.state.name == "COMPLETE"), key=lambda t: t.value)
    text = status_text(finished_study)
    assert text.splitlines()[0].startswith("study study: 3 of 3 trials asked; ")
    assert f"best: trial {best.number}, iou {best.value:.4f} (maximize): optim.lr=" in text
    assert sum(line.split()[1] in ("complete", "pruned") for line in text.splitlines()[3:]) == 3


def test_the_report_writes_the_figures_and_the_best_trial_as_a_config_that_loads(finished_study, tmp_path):
    proc = subprocess.run([sys.executable, "-m", "segtrain", "search", "report", str(finished_study),
                           "--out", str(tmp_path / "report")], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    names = {"history.png", "intermediate.png", "slice.png", "importances.png", "best.yaml"}
    assert {p.name for p in (tmp_path / "report").iterdir()} == names
    best = max((t for t in trials(finished_study) if t.state.name == "COMPLETE"), key=lambda t: t.value)
    cfg = load_config(tmp_path / "report" / "best.yaml")
    assert cfg.optim.lr == best.params["optim.lr"] and cfg.optim.name == best.params["optim.name"]
    assert cfg.loss.terms == {"bce": 1.0, "dice": best.params["loss.terms.dice"]}


def test_a_report_before_any_trial_finished_is_one_line_and_exit_2(tmp_path, small_data_ro):
    study = make_study(tmp_path, small_data_ro, "n_trials: 2\n")
    proc = subprocess.run([sys.executable, "-m", "segtrain", "search", "report", str(study)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1
    assert "no trial has finished yet" in proc.stderr and not (study / "report").exists()
