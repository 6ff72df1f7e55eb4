"""What a trial need not train again: the run of an earlier trial with its parameters, continued; ASHA's promotions.

A trial's run is a function of its config and seed (bit for bit on CPU; on a GPU up to cuDNN's
nondeterminism), so a trial whose parameters an earlier trial had would train the same run again.
Samplers do draw parameters again, TPE above all on a small categorical space (optuna/optuna#2021;
Optuna's FAQ suggests reusing the earlier value). Such a trial *continues the earlier run* (user
attribute ``repeat_of``: the trial whose run directory holds it): the run's validations are
reported again, the pruner asked after each as if they were trained now, and the trainer resumes
from the run's checkpoint only past them. A repeat of a complete trial costs no epoch; of a pruned
one, only those past where it stopped, and only if the pruner lets it go on now. The study takes
the course it would take with every trial trained from scratch; only the cost differs.

ASHA (Li et al., MLSys 2020) promotes a trial paused at a rung once it ranks in the top
1/reduction_factor of the trials that reached that rung. Optuna's SuccessiveHalvingPruner cannot
resume a trial, so it decides once, when the trial reaches the rung, and the first trials at a rung
must beat every other to go on: an early draw is pruned for arriving early. A pruned segtrain run
keeps its checkpoint, so the ``asha`` pruner promotes as the paper does: before the sampler is
asked, a pruned run that the pruner would now let through every rung up to where it stopped is
continued by a new trial of its parameters (enqueued; user attribute ``promoted``).
"""
from __future__ import annotations

import json
import math
from typing import Any, Optional, Sequence

from optuna.trial import FrozenTrial, TrialState

from segtrain.search.spec import SearchSpec

REPEAT_OF, PROMOTED = "repeat_of", "promoted"


def run_number(trial: FrozenTrial) -> int:
    """The number of the trial whose run directory (``trials/NNNN``) holds this trial's run."""
    return trial.user_attrs.get(REPEAT_OF, trial.number)


def trained_epochs(trials: Sequence[FrozenTrial], run: int) -> int:
    """Validations the run ``run`` has (every trial reports each validation it trains)."""
    return max((len(t.intermediate_values) for t in trials if run_number(t) == run), default=0)


def reusable_run(trials: Sequence[FrozenTrial], params: dict[str, Any]) -> Optional[int]:
    """The run of a finished trial with these parameters (the one trained furthest) that no running trial
    trains; None. A run in use stays its trial's: two trainers never share a run directory."""
    busy = {run_number(t) for t in trials if t.state == TrialState.RUNNING}
    finished = (TrialState.COMPLETE, TrialState.PRUNED)
    runs = {run_number(t) for t in trials if t.state in finished and t.params == params}
    free = sorted(runs - busy)
    return max(free, key=lambda run: trained_epochs(trials, run)) if free else None


def ask_trial(study: Any, spec: SearchSpec) -> Any:
    """A new trial: one enqueued by hand, else a promoted run's parameters (asha), else the sampler's; the run it
    continues named when one exists."""
    trials = study.get_trials(deepcopy=False)
    waiting = any(t.state == TrialState.WAITING for t in trials)
    promoted = None if waiting else promotion(trials, spec)
    if promoted is not None:
        study.enqueue_trial(promoted, user_attrs={PROMOTED: True})
    trial = study.ask({p.key: p.distribution() for p in spec.space})
    run = reusable_run(trials, trial.params)
    if run is not None:
        trial.set_user_attr(REPEAT_OF, run)
    return trial


def promotion(trials: Sequence[FrozenTrial], spec: SearchSpec) -> Optional[dict[str, Any]]:
    """The parameters of a pruned run that ASHA would now let through every rung up to where it stopped (the
    highest such rung first, then the best value there); None. Not for a grid: each point is drawn once."""
    if spec.pruner.name != "asha" or spec.sampler.name == "grid":
        return None
    sign = 1.0 if spec.objective.direction == "maximize" else -1.0
    best: Optional[tuple[tuple[int, float], dict]] = None
    for params in {json.dumps(t.params, sort_keys=True): t.params for t in trials}.values():
        run = reusable_run(trials, params)
        if run is None:
            continue
        furthest = max((t for t in trials if run_number(t) == run), key=lambda t: len(t.intermediate_values))
        if furthest.state != TrialState.PRUNED:
            continue
        rungs = _rungs_passed(furthest, trials, spec, sign)
        if rungs is not None:
            last = furthest.intermediate_values[max(furthest.intermediate_values)]
            key = (rungs, sign * last)
            if best is None or key > best[0]:
                best = (key, dict(furthest.params))
    return None if best is None else best[1]


def _rungs_passed(trial: FrozenTrial, trials: Sequence[FrozenTrial], spec: SearchSpec, sign: float) -> Optional[int]:
    """How many rungs the trial's values would pass now (every one it reached), or None if one would stop it.

    Rung i is step ``min_epochs * reduction_factor**i``. A value passes where it is at least the
    (n // reduction_factor)-th best of the n values there (the best, below reduction_factor values),
    counted two ways: over runs, each once (the paper's rule), and over trials with a trial of these
    parameters asked again, as Optuna's SuccessiveHalvingPruner judges the promoted trial as it catches
    up (a run drawn several times counts as often), so that the promotion is not pruned at once.
    """
    rf, values = spec.pruner.reduction_factor, trial.intermediate_values

    def passes(value: float, competing: list[float]) -> bool:
        ranked = sorted((sign * v for v in competing if not math.isnan(v)), reverse=True)
        return sign * value >= ranked[max(len(ranked) // rf - 1, 0)]

    rung = 0
    while (step := spec.pruner.min_epochs * rf ** rung) in values and step < spec.epochs:
        value = values[step]
        if math.isnan(value):
            return None
        reached = [t for t in trials if step in t.intermediate_values]
        by_run = {run_number(t): t.intermediate_values[step] for t in reached}
        if not (passes(value, list(by_run.values()))
                and passes(value, [t.intermediate_values[step] for t in reached] + [value])):
            return None
        rung += 1
    return rung
