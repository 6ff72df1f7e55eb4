"""Where a study stands: its trials by state, the best so far with its values, the hours trained."""
from __future__ import annotations

import datetime as _dt
from pathlib import Path
from typing import Any

from segtrain.run.directory import RunDir
from segtrain.search.claims import CLAIM, Claims
from segtrain.search.journal import open_storage
from segtrain.search.reuse import PROMOTED, run_number
from segtrain.search.spec import SearchSpec
from segtrain.search.study import load_study_spec, open_study, trial_dir

STATES = ("complete", "pruned", "running", "paused", "stale", "failed")


def trial_state(trial: Any, claims: Claims) -> str:
    """Optuna's state, with RUNNING split into running, paused (a stopped worker's) and stale (a dead one's)."""
    name = trial.state.name.lower()
    if name == "fail":
        return "failed"
    if name != "running":
        return name
    if claims.is_paused(trial):
        return "paused"
    return "stale" if claims.is_stale(trial) else "running"


def load(study_dir: Path) -> tuple[SearchSpec, Any, Claims]:
    """The spec, the study and a claims reader (no worker name) of a study folder."""
    spec = load_study_spec(study_dir)
    storage = open_storage(study_dir)
    study = open_study(storage, spec)
    claims = Claims(study_dir, storage, storage.get_study_id_from_name(study.study_name), "", spec.stale_after)
    return spec, study, claims


def trial_hours(study_dir: Path, number: int) -> float:
    """Hours the run of trial ``number`` has trained (its job segments' wall time; a running segment until now)."""
    info = RunDir(trial_dir(study_dir, number)).info.read()
    total = 0.0
    now = _dt.datetime.now(_dt.timezone.utc)
    for segment in info.get("segments", []):
        start = _dt.datetime.fromisoformat(segment["started"])
        end = _dt.datetime.fromisoformat(segment["ended"]) if segment.get("ended") else now
        total += (end - start).total_seconds()
    return total / 3600


def study_finished(study_dir: Path) -> bool:
    """Whether the study has its n_trials and none of them is still running or paused."""
    spec, study, _ = load(study_dir)
    trials = study.get_trials(deepcopy=False)
    return len(trials) >= spec.n_trials and all(t.state.is_finished() for t in trials)


def status_text(study_dir: Path) -> str:
    spec, study, claims = load(study_dir)
    trials = study.get_trials(deepcopy=False)
    states = {t.number: trial_state(t, claims) for t in trials}
    counts = {state: sum(1 for s in states.values() if s == state) for state in STATES}
    hours = sum(trial_hours(study_dir, run) for run in {run_number(t) for t in trials})  # a shared run once
    lines = [f"study {study.study_name}: {len(trials)} of {spec.n_trials} trials asked; "
             + ", ".join(f"{n} {state}" for state, n in counts.items() if n)
             + f"; {hours:.2f} GPU hours (one GPU per trial)"]
    done = [t for t in trials if states[t.number] == "complete"]
    if done:
        best = study.best_trial
        lines.append(f"best: trial {best.number}, {spec.objective.metric} {best.value:.4f} ({spec.objective.direction}): "
                     + " ".join(f"{k}={_show(v)}" for k, v in best.params.items()))
    lines.append(f"{'trial':>5}  {'state':<8} {'epochs':>6} {spec.objective.metric:>8}  params")
    for t in trials:
        steps = t.intermediate_values
        value = t.value if t.value is not None else (steps[max(steps)] if steps else None)
        who = t.system_attrs.get(CLAIM, {}).get("worker") if states[t.number] in ("running", "paused", "stale") else None
        notes = [*(["promoted"] if t.user_attrs.get(PROMOTED) else []),
                 *([f"run of trial {run_number(t)}"] if run_number(t) != t.number else []),
                 *([f"worker {who}"] if who else [])]
        lines.append(f"{t.number:>5}  {states[t.number]:<8} {max(steps) if steps else 0:>6} "
                     f"{'-' if value is None else f'{value:.4f}':>8}  "
                     + " ".join(f"{k}={_show(v)}" for k, v in t.params.items())
                     + (f"  ({'; '.join(notes)})" if notes else ""))
    if counts["stale"]:
        lines.append(f"{counts['stale']} trial(s) stale (no heartbeat for {spec.stale_after:g} s): the next worker "
                     "to start takes them over from their checkpoints")
    return "\n".join(lines)


def _show(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)
