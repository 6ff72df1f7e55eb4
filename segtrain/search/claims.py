"""Which trial a worker trains next, decided under one lock so that two workers never take the same.

A trial a worker trains is Optuna-RUNNING and carries a *claim* in the journal (a trial system
attribute): the worker's name, its job, a generation that grows with every takeover, and a state,
``running`` or ``paused``. A worker stopped by its time limit or a signal pauses its claim (the
trial keeps its parameters, its reported values and its checkpoint). A worker that died without
a word (SIGKILL, a lost node) leaves a ``running`` claim whose heartbeat goes stale: the worker
touches ``STUDY/heartbeats/NNNN`` every ``stale_after / 10`` seconds (60 s at most), and a trial
whose heartbeat is older than ``stale_after`` is taken over. A heartbeat file was chosen over
Optuna's heartbeat, which its journal storage does not keep, and over writing heartbeats into the
journal, which every worker reads whole.

Order of preference, each by trial number: a trial this worker paused (its next job finishes it),
any paused trial, any stale one, then a new trial while the study has fewer than ``n_trials``.
Every decision, and the ask of a new trial, happens under ``STUDY/claims.lock`` (Optuna's
NFS-safe symlink lock), reading the journal fresh, so of two workers one takes a trial and the
other sees it taken.
"""
from __future__ import annotations

import os
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

from optuna.storages.journal import JournalFileSymlinkLock
from optuna.trial import FrozenTrial, TrialState

from segtrain.search.journal import held
from segtrain.search.study import HEARTBEATS

CLAIM = "segtrain:claim"


@dataclass(frozen=True)
class Claim:
    trial_id: int
    number: int
    generation: int
    resumed: bool  # the trial was started before (by this worker or another)


class Claims:
    """A worker's side of the claims: take a trial, check it is still ours, pause it, finish it."""

    def __init__(self, study_dir: Path, storage: Any, study_id: int, worker: str, stale_after: float,
                 job_id: Optional[str] = None):
        self.study_dir, self.storage, self.study_id = Path(study_dir), storage, study_id
        self.worker, self.stale_after, self.job_id = worker, stale_after, job_id
        self.lock = JournalFileSymlinkLock(str(self.study_dir / "claims"))

    def heartbeat_path(self, number: int) -> Path:
        return self.study_dir / HEARTBEATS / f"{number:04d}"

    def take(self, n_trials: int, ask: Callable[[int], int]) -> Optional[Claim]:
        """The trial to train next, claimed; None when the study needs no more work from this worker.

        ``ask(n)`` asks a new trial, given how many the study has (its draw number), and returns its number.
        """
        with held(self.lock):
            trials = self.storage.get_all_trials(self.study_id, deepcopy=False)
            running = sorted((t for t in trials if t.state == TrialState.RUNNING), key=lambda t: t.number)
            for wanted in (self.mine_paused, self.is_paused, self.is_stale):
                for trial in running:
                    if wanted(trial):
                        return self._claim(trial.number, _claim(trial), resumed=True)
            if len(trials) >= n_trials:
                return None
            return self._claim(ask(len(trials)), None, resumed=False)

    def still_mine(self, claim: Claim) -> bool:
        current = _claim(self.storage.get_trial(claim.trial_id))
        return current is not None and current["generation"] == claim.generation

    def pause(self, claim: Claim) -> None:
        """Leave the trial for this worker's next job (or any worker): RUNNING, claim paused."""
        with held(self.lock):
            current = _claim(self.storage.get_trial(claim.trial_id))
            if current is not None and current["generation"] == claim.generation:
                self.storage.set_trial_system_attr(claim.trial_id, CLAIM, {**current, "state": "paused",
                                                                            "at": time.time()})

    def beating(self, number: int) -> "Heartbeat":
        return Heartbeat(self.heartbeat_path(number), min(60.0, self.stale_after / 10))

    # ---- what may be taken -----------------------------------------------------------------------
    def mine_paused(self, trial: FrozenTrial) -> bool:
        claim = _claim(trial)
        return self.is_paused(trial) and claim["worker"] == self.worker

    @staticmethod
    def is_paused(trial: FrozenTrial) -> bool:
        claim = _claim(trial)
        return claim is not None and claim["state"] == "paused"

    def is_stale(self, trial: FrozenTrial) -> bool:
        """A running claim whose heartbeat (else the claim itself, else the trial's start) is older than stale_after."""
        claim = _claim(trial)
        if claim is not None and claim["state"] != "running":
            return False
        try:
            last = self.heartbeat_path(trial.number).stat().st_mtime
        except FileNotFoundError:
            last = claim["at"] if claim else trial.datetime_start.timestamp()
        return time.time() - last > self.stale_after

    def _claim(self, number: int, old: Optional[dict], resumed: bool) -> Claim:
        generation = (old["generation"] + 1) if old else 0
        trial_id = self.storage.get_trial_id_from_study_id_trial_number(self.study_id, number)
        self.storage.set_trial_system_attr(trial_id, CLAIM, {
            "worker": self.worker, "job": self.job_id, "host": socket.gethostname(), "pid": os.getpid(),
            "generation": generation, "state": "running", "at": time.time(),
            "taken_from": old["worker"] if old else None})
        self.heartbeat_path(number).touch()
        return Claim(trial_id, number, generation, resumed)


def _claim(trial: FrozenTrial) -> Optional[dict]:
    return trial.system_attrs.get(CLAIM)


class Heartbeat:
    """Touches a file every ``interval`` seconds in a thread while a trial trains."""

    def __init__(self, path: Path, interval: float):
        self.path, self.interval = path, interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, daemon=True)

    def __enter__(self) -> "Heartbeat":
        self.path.touch()
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()

    def _beat(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.path.touch()
            except OSError:  # storage hiccup: the next beat tries again
                pass
