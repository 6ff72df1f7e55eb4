"""Trials of parameters drawn before continue the earlier run; ASHA promotes a pruned run ranking high at its rung."""
from __future__ import annotations

import optuna
import pytest
from optuna.distributions import CategoricalDistribution
from optuna.trial import TrialState, create_trial

from conftest import REPO
from segtrain.search.reuse import PROMOTED, REPEAT_OF, ask_trial, promotion, reusable_run
from segtrain.search.spec import load_search
from segtrain.search.study import make_pruner, make_sampler

LRS = [0.001, 0.003, 0.01, 0.03, 0.1, 0.3]
PRUNED, COMPLETE, RUNNING = TrialState.PRUNED, TrialState.COMPLETE, TrialState.RUNNING


def spec_of(tmp_path, pruner: str = "asha", sampler: str = "tpe"):
    path = tmp_path / "search.yaml"
    path.write_text(f"base: {REPO / 'configs' / 'demo.yaml'}\noverrides: [train.epochs=8]\nspace: {{optim.lr: {LRS}}}\n"
                    f"sampler: {sampler}\npruner: {{name: {pruner}, min_epochs: 1, reduction_factor: 2}}\n")
    return load_search(path)


def study_of(spec, *trials: tuple) -> optuna.Study:
    """A study of (lr, state, values by epoch, user attrs) trials, with the spec's pruner."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize", sampler=make_sampler(spec, 0), pruner=make_pruner(spec))
    for lr, state, values, *attrs in trials:
        study.add_trial(create_trial(
            params={"optim.lr": lr}, distributions={"optim.lr": CategoricalDistribution(LRS)}, state=state,
            value=max(values) if state == COMPLETE else None, intermediate_values=dict(enumerate(values, start=1)),
            user_attrs=attrs[0] if attrs else {}))
    return study


def test_parameters_drawn_before_take_the_run_trained_furthest_that_no_running_trial_trains(tmp_path):
    study = study_of(spec_of(tmp_path),
                     (0.01, PRUNED, [0.5]),                                      # 0: its run ...
                     (0.01, PRUNED, [0.5, 0.6, 0.6], {REPEAT_OF: 0}),             # 1: ... trained further by a repeat
                     (0.03, COMPLETE, [0.1] * 8),                                # 2
                     (0.03, RUNNING, [0.1], {REPEAT_OF: 2}),                      # 3: trains run 2 now
                     (0.1, PRUNED, [0.2]), (0.1, COMPLETE, [0.2] * 8))          # 4, 5: two runs of one point
    trials = study.get_trials()
    assert reusable_run(trials, {"optim.lr": 0.01}) == 0
    assert reusable_run(trials, {"optim.lr": 0.03}) is None  # two trainers never share a run directory
    assert reusable_run(trials, {"optim.lr": 0.1}) == 5
    assert reusable_run(trials, {"optim.lr": 0.3}) is None


def test_a_trial_asked_for_parameters_drawn_before_names_the_run_it_continues(tmp_path):
    spec = spec_of(tmp_path, pruner="none", sampler="random")
    study = study_of(spec, *[(lr, COMPLETE, [0.5] * 8) for lr in LRS])  # every point drawn: the next is a repeat
    trial = ask_trial(study, spec)
    assert trial.user_attrs[REPEAT_OF] == LRS.index(trial.params["optim.lr"]) and PROMOTED not in trial.user_attrs


def rung_0(*values: float) -> tuple:
    """A run pruned at epoch 1 with 0.5, beside complete runs with these epoch-1 values."""
    return ((0.001, PRUNED, [0.5]), *[(lr, COMPLETE, [v] + [0.9] * 7) for lr, v in zip(LRS[1:], values)])


@pytest.mark.parametrize("values, promoted", [
    ((0.2, 0.3, 0.6), True),        # 2nd of 4 runs at epoch 1: in the top half (reduction factor 2)
    ((0.2, 0.6, 0.7), False),       # 3rd of 4
    ((0.6, 0.1), False),            # 2nd of 3 runs: below 2 * 2 runs only the best goes on
])
def test_asha_promotes_a_pruned_run_once_it_ranks_in_the_top_of_its_rung(tmp_path, values, promoted):
    spec = spec_of(tmp_path)
    study = study_of(spec, *rung_0(*values))
    assert promotion(study.get_trials(), spec) == ({"optim.lr": 0.001} if promoted else None)
    for other in ("successive_halving", "none"):  # Optuna's own successive halving never goes back
        assert promotion(study.get_trials(), spec_of(tmp_path, pruner=other)) is None
    assert promotion(study.get_trials(), spec_of(tmp_path, sampler="grid")) is None  # a grid draws each point once


def test_a_run_drawn_many_times_counts_once_in_its_rung_and_the_pruner_lets_a_promotion_through(tmp_path):
    spec = spec_of(tmp_path)
    runs = [(0.001, PRUNED, [0.5]), (0.003, COMPLETE, [0.9] * 8), (0.01, COMPLETE, [0.1] * 8)]
    again = [(0.01, COMPLETE, [0.1] * 8, {REPEAT_OF: 2})] * 2
    # 2nd of 3 runs: below 2 * 2 runs only the best goes on, though 0.01 drawn thrice makes 5 trials
    assert promotion(study_of(spec, *runs, *again).get_trials(), spec) is None
    # 2nd of 5 runs, but Optuna's pruner, judging the promoted trial by trials, would count 0.003 four times
    crowded = [*runs, (0.03, COMPLETE, [0.2] * 8), (0.1, COMPLETE, [0.3] * 8),
               *[(0.003, COMPLETE, [0.9] * 8, {REPEAT_OF: 1})] * 3]
    assert promotion(study_of(spec, *crowded).get_trials(), spec) is None
    study = study_of(spec, *runs, (0.03, COMPLETE, [0.2] * 8))  # 2nd of 4 runs: promoted
    trial = ask_trial(study, spec)
    assert trial.params == {"optim.lr": 0.001} and trial.user_attrs == {PROMOTED: True, REPEAT_OF: 0}
    trial.report(0.5, 1)  # catching up on its run, judged by Optuna's pruner as it judges every trial
    assert not trial.should_prune()


def test_a_trial_enqueued_by_hand_goes_before_a_promotion(tmp_path):
    spec = spec_of(tmp_path)
    study = study_of(spec, *rung_0(0.2, 0.3, 0.6))
    study.enqueue_trial({"optim.lr": 0.3})
    assert ask_trial(study, spec).params == {"optim.lr": 0.3}
    assert [t.state for t in study.get_trials()].count(TrialState.WAITING) == 0
