"""A search worker: take a trial, train it as an ordinary run, report its validations, tell, repeat.

One worker runs one trial at a time, in this process (one trainer process: one GPU). Each trial
is a segtrain run in ``STUDY/trials/NNNN`` with the base config and the trial's values as
overrides, so everything a run does (checkpoints, exact resume, metrics.jsonl, W&B) it does here.
The trainer calls :class:`Reporter` after each validation's checkpoint: it reports the value to
Optuna (the step is the number of epochs trained) and asks the pruner; a pruned trial stops with
its checkpoint, is told PRUNED and marked ``pruned`` in its run.json (continue it as any run).
A trial whose parameters an earlier trial had continues that trial's run instead (reuse.py): its
validations are reported first, and it trains only past them, if the pruner lets it.

Stopped by its time limit or a signal (the trainer exits 3), the worker pauses its claim and
exits 3: the trial stays RUNNING, and the next job of the same worker (or any worker) resumes it
from its checkpoint with its parameters and the values it already reported. A resumed run hands
the reporter its validations first, so a value whose report a kill cut off is reported then.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from segtrain.config import load_config
from segtrain.errors import EXIT_OK, EXIT_RESUMABLE, UserError
from segtrain.run.directory import RunDir
from segtrain.run.metrics_log import read_metrics
from segtrain.search.claims import Claim, Claims
from segtrain.search.journal import open_storage
from segtrain.search.reuse import ask_trial, run_number
from segtrain.search.spec import SearchSpec
from segtrain.search.study import BASE, load_study_spec, open_study, trial_dir
from segtrain.train.stopping import StopSignals

# run.json's status of a trial's run, by how the trial ended (the trainer writes done, stopped, failed).
PRUNED = "pruned"


@dataclass
class WorkerOptions:
    study_dir: Path
    overrides: list[str] = field(default_factory=list)  # after each trial's own (a job's data set on scratch)
    worker: str = "0"  # the worker's name: its array index, so that its next job finds its paused trial
    time_limit: Optional[float] = None  # seconds for this job's share of the search
    deadline_file: Optional[Path] = None  # passed to the trainer (a qextend moves it)
    job_id: Optional[str] = None


class Reporter:
    """The trainer's validation hook for one trial: new values to Optuna, then the pruner's word."""

    def __init__(self, study: Any, claims: Claims, claim: Claim, spec: SearchSpec):
        import optuna

        self.claims, self.claim, self.spec = claims, claim, spec
        self.trial = optuna.Trial(study, claim.trial_id)
        self.reported = set(claims.storage.get_trial(claim.trial_id).intermediate_values)
        self.outcome: Optional[str] = None  # "pruned" or "lost" once the hook has stopped the run

    def __call__(self, records: list[dict[str, Any]]) -> Optional[str]:
        pruned_at = None
        for record in records:
            step = record["epoch"] + 1
            if step in self.reported:
                continue
            # calibrated_iou is missing where a validation had no positive pixel to calibrate on
            self.trial.report(float(record.get(self.spec.objective.metric, math.nan)), step)
            self.reported.add(step)
            # after each value, as a trial trained now would be asked (a repeat catches up many at once)
            if step < self.spec.epochs and self.trial.should_prune():
                pruned_at = step
                break
        if not records:
            return None
        if not self.claims.still_mine(self.claim):
            self.outcome = "lost"
            return "another worker took this trial over"
        if pruned_at is not None:
            self.outcome = PRUNED
            return f"pruned by {self.spec.pruner.name} after {pruned_at} epochs"
        return None


def run_worker(opts: WorkerOptions) -> int:
    """Train trials until the study has ``n_trials`` (exit 0) or this job must stop (exit 3)."""
    from segtrain.preflight import check_dataset

    spec = load_study_spec(opts.study_dir)
    # A data set that is missing fails the worker once, not every trial.
    check_dataset(load_config(opts.study_dir / BASE, opts.overrides))
    storage = open_storage(opts.study_dir)
    study = open_study(storage, spec)
    study_id = storage.get_study_id_from_name(study.study_name)
    claims = Claims(opts.study_dir, storage, study_id, opts.worker, spec.stale_after, opts.job_id)
    deadline = None if opts.time_limit is None else time.monotonic() + opts.time_limit
    trained = 0
    with StopSignals() as signals:
        while True:  # a job always takes one trial, as the trainer always trains one step: a chain moves on
            if signals.received or (trained and deadline is not None and time.monotonic() >= deadline):
                print(f"worker {opts.worker}: stopping before the next trial ({signals.received or 'time limit'})")
                return EXIT_RESUMABLE
            claim = claims.take(spec.n_trials, lambda draw: _ask(storage, spec, draw))
            if claim is None:
                print(f"worker {opts.worker}: the study has its {spec.n_trials} trials; nothing left to take")
                return EXIT_OK
            remaining = None if deadline is None else max(deadline - time.monotonic(), 0.0)
            code = _train_trial(opts, spec, study, claims, claim, remaining)
            trained += 1
            if code == EXIT_RESUMABLE:
                return code


def _ask(storage: Any, spec: SearchSpec, draw: int) -> int:
    """A new trial drawn by a sampler seeded for draw number ``draw`` (or promoted); its number."""
    return ask_trial(open_study(storage, spec, draw), spec).number


def _train_trial(opts: WorkerOptions, spec: SearchSpec, study: Any, claims: Claims, claim: Claim,
                 time_limit: Optional[float]) -> int:
    """Train (or resume) one claimed trial and tell Optuna how it ended; 3 when it was paused."""
    import optuna

    from segtrain.train.trainer import TrainOptions, train

    storage = claims.storage
    frozen = storage.get_trial(claim.trial_id)
    params = {p.key: p.decode(frozen.params[p.key]) for p in spec.space}
    overrides = [*spec.trial_overrides(params), f"logging.wandb.group={study.study_name}", *opts.overrides]
    run = run_number(frozen)
    run_dir = trial_dir(opts.study_dir, run)
    how = "resuming" if claim.resumed else "starting"
    on = f" on the run of trial {run}" if run != claim.number else ""
    print(f"worker {opts.worker}: {how} trial {claim.number}{on}: "
          + " ".join(spec.trial_overrides(params)[len(spec.overrides):]), flush=True)
    reporter = Reporter(study, claims, claim, spec)
    trained = not (run != claim.number and _caught_up(reporter, run_dir))
    base = opts.study_dir / BASE
    try:
        code = EXIT_OK
        if trained:
            with claims.beating(claim.number):
                code = train(load_config(base, overrides), TrainOptions(
                    config_path=str(base), overrides=overrides, run_dir=run_dir, time_limit=time_limit,
                    deadline_file=opts.deadline_file, job_id=opts.job_id, on_validation=reporter))
    except UserError as exc:
        print(f"worker {opts.worker}: trial {claim.number} failed: {exc}", flush=True)
        study.tell(claim.number, state=optuna.trial.TrialState.FAIL)
        storage.set_trial_user_attr(claim.trial_id, "error", str(exc))
        return EXIT_OK
    if reporter.outcome == "lost":
        print(f"worker {opts.worker}: trial {claim.number} was taken over by another worker; leaving it", flush=True)
        return EXIT_OK
    if reporter.outcome == PRUNED:
        study.tell(claim.number, state=optuna.trial.TrialState.PRUNED)
        if trained:
            _mark(run_dir, PRUNED, claim.number)
    elif code == EXIT_OK:
        values = storage.get_trial(claim.trial_id).intermediate_values.values()
        best = (max if spec.objective.direction == "maximize" else min)(v for v in values if not math.isnan(v))
        study.tell(claim.number, best)
        if trained:
            _mark(run_dir, "done", claim.number, best)
    elif code == EXIT_RESUMABLE:
        claims.pause(claim)
        print(f"worker {opts.worker}: trial {claim.number} paused with its checkpoint; the next job resumes it",
              flush=True)
        return code
    else:
        study.tell(claim.number, state=optuna.trial.TrialState.FAIL)
        _mark(run_dir, "failed", claim.number)
    claims.heartbeat_path(claim.number).unlink(missing_ok=True)
    return EXIT_OK


def _caught_up(reporter: Reporter, run_dir: Path) -> bool:
    """A trial on an earlier trial's run: its validations reported (the pruner asked after each); True when
    nothing is left to train (pruned now, or the run trained to its end)."""
    reporter([r for r in read_metrics(RunDir(run_dir).metrics) if r.get("split") == "val"])
    return reporter.outcome is not None or RunDir(run_dir).info.read().get("status") == "done"


def _mark(run_dir: Path, status: str, number: int, value: Optional[float] = None) -> None:
    """The trial's outcome in its run's run.json (``status: pruned`` for a pruned one)."""
    rd = RunDir(run_dir)
    if rd.info.exists():
        rd.info.update(status=status, trial={"number": number, "value": value})
