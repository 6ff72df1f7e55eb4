"""The search file: a valid one becomes parameters and trial configs; a bad one is one line, exit 2, nothing written."""
from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from conftest import REPO, tree_state
from segtrain.errors import UserError
from segtrain.search.spec import load_search

DEMO = REPO / "configs" / "demo.yaml"
SPACE = """\
space:
  optim.lr: {type: float, low: 1.0e-4, high: 0.1, log: true}
  loss.terms.dice: {type: float, low: 0.0, high: 2.0}
  model.base_width: {type: int, low: 8, high: 32, step: 8}
  loss.pos_weight: [null, auto, 3.0]
"""


def search_file(tmp_path: Path, body: str, base: Path = DEMO) -> Path:
    path = tmp_path / "search.yaml"
    path.write_text(f"base: {base}\n" + textwrap.dedent(body))
    return path


def test_a_search_file_gives_parameters_checked_against_the_config_schema(tmp_path):
    spec = load_search(search_file(tmp_path, SPACE + "pruner: {name: hyperband, min_epochs: 2}\nn_trials: 12\n"))
    assert [p.key for p in spec.space] == ["optim.lr", "loss.terms.dice", "model.base_width", "loss.pos_weight"]
    assert (spec.sampler.name, spec.pruner.name, spec.pruner.min_epochs, spec.n_trials) == ("tpe", "hyperband", 2, 12)
    assert (spec.objective.metric, spec.objective.direction, spec.workers, spec.seed) == ("iou", "maximize", 1, 0)
    assert spec.space[2].grid_values() == [8, 16, 24, 32]


def test_no_trial_is_pruned_before_2_epochs_unless_the_file_says_or_the_run_is_shorter(tmp_path):
    assert load_search(search_file(tmp_path, SPACE)).pruner.min_epochs == 2
    assert load_search(search_file(tmp_path, SPACE + "pruner: {name: asha, min_epochs: 1}\n")).pruner.min_epochs == 1
    assert load_search(search_file(tmp_path, "overrides: [train.epochs=1]\n" + SPACE)).pruner.min_epochs == 1


def test_a_mapping_entry_keeps_the_other_entries_of_the_base_mapping(tmp_path):
    spec = load_search(search_file(tmp_path, SPACE))
    cfg = spec.trial_config({"loss.terms.dice": 0.25, "optim.lr": 0.01})
    assert cfg.loss.terms == {"bce": 1.0, "dice": 0.25} and cfg.optim.lr == 0.01
    assert spec.trial_config({"loss.pos_weight": None}).loss.terms == {"bce": 1.0, "dice": 1.0}


def test_a_categorical_value_may_be_a_mapping(tmp_path):
    spec = load_search(search_file(tmp_path, "space: {loss.terms: [{bce: 1.0}, {mse: 1.0}]}\n"))
    (param,) = spec.space
    assert param.decode(param.distribution().choices[1]) == {"mse": 1.0}
    assert spec.trial_config({"loss.terms": {"mse": 1.0}}).loss.terms == {"mse": 1.0}


def test_the_grid_sampler_takes_as_many_trials_as_the_grid_has_points(tmp_path):
    spec = load_search(search_file(tmp_path, """\
        space:
          optim.name: [adamw, sgd]
          model.base_width: {type: int, low: 8, high: 16, step: 8}
        sampler: grid
        """))
    assert spec.n_trials == 4


@pytest.mark.parametrize("body, message", [
    (SPACE + "trials: 8\n", "trials: unknown key (did you mean 'n_trials'?)"),
    ("space: {loss.terms: [{bce: 1.0}], loss.terms.dice: [0.5]}\n",
     "space.loss.terms.dice: loss.terms is searched too; search the mapping or its entries, not both"),
    ("space: {}\n", "space: is empty"),
    ("objective: {metric: iou}\n", "space: is empty"),
    ("space: {optim.learning_rate: {type: float, low: 0.1, high: 1}}\n",
     "space.optim.learning_rate: not a config key: optim.learning_rate is unknown"),
    ("space: {optim: [adamw]}\n", "space.optim: is a config section, not a key"),
    ("space: {optim.lr: {type: float, low: 0.1, high: 0.01}}\n", "space.optim.lr: low must be smaller than high"),
    ("space: {optim.lr: {type: float, low: 0.0, high: 0.1, log: true}}\n", "space.optim.lr.low: a log scale needs low > 0"),
    ("space: {optim.lr: {type: float, low: 0.1, high: 20}}\n", "space.optim.lr: 20 is not a valid value: optim.lr: must be <= 10.0"),
    ("space: {optim.name: [adamw, nadam]}\n", "space.optim.name: 'nadam' is not a valid value"),
    ("space: {optim.name: {type: float, low: 0, high: 1}}\n", "space.optim.name: optim.name is not a number"),
    ("space: {run.name: [a, b]}\n", "space.run.name: set by the search for each trial"),
    ("space: {optim.lr: {type: float, low: 0.001, hgh: 0.1}}\n", "space.optim.lr.hgh: unknown key (did you mean 'high'?)"),
    (SPACE + "objective: {metric: f1}\n", "objective.metric: must be a validation metric the trainer logs"),
    (SPACE + "pruner: {name: asha, min_epochs: 999}\n", "pruner.min_epochs: must be between 1 and train.epochs ("),
    (SPACE + "sampler: grid\n", "space.optim.lr: the grid sampler needs a step"),
    (SPACE + "n_trials: 0\n", "n_trials: must be >= 1"),
])
def test_a_bad_search_file_is_one_line_naming_file_and_key_exit_2_and_nothing_written(tmp_path, body, message):
    path = search_file(tmp_path, body)
    before = tree_state(tmp_path)
    proc = subprocess.run([sys.executable, "-m", "segtrain", "search", "new", str(path), "--study",
                           str(tmp_path / "studies" / "s")], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
    assert f"{path}: {message}" in proc.stderr
    assert tree_state(tmp_path) == before and not (tmp_path / "studies").exists()


def test_a_base_config_that_does_not_load_is_refused_naming_the_search_file(tmp_path):
    with pytest.raises(UserError, match="search.yaml: base missing.yaml: .*missing.yaml: config file not found"):
        load_search(search_file(tmp_path, SPACE, base=Path("missing.yaml")))
