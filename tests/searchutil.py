"""Helpers for search tests: a study of tiny trials on the small data set, workers as real processes."""
from __future__ import annotations

import os
import subprocess
import textwrap
import time
from pathlib import Path

from trainutil import TINY, segtrain_cmd

from conftest import REPO
from segtrain.search.journal import open_storage
from segtrain.search.spec import load_search
from segtrain.search.study import create_study, load_study_spec, open_study

EPOCHS = 4
SPACE = """\
space:
  optim.lr: {type: float, low: 1.0e-4, high: 0.1, log: true}
  loss.terms.dice: {type: float, low: 0.0, high: 2.0}
  optim.name: [adamw, sgd]
"""


def make_study(tmp_path: Path, data: Path, body: str, name: str = "study", extra: tuple[str, ...] = (),
               space: str = SPACE) -> Path:
    """A study folder of ``body`` (YAML after base/overrides/space) over tiny trials of EPOCHS epochs."""
    overrides = [f"data.root={data}", *TINY, f"train.epochs={EPOCHS}", *extra]
    path = tmp_path / f"{name}.yaml"
    path.write_text(f"base: {REPO / 'configs' / 'demo.yaml'}\noverrides: {overrides}\n{space}" + textwrap.dedent(body))
    return create_study(load_search(path), tmp_path / "studies", name)


def worker_proc(study: Path, *flags: str, **env: str) -> subprocess.Popen:
    return subprocess.Popen(segtrain_cmd("search", "work", str(study), *flags), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env={**os.environ, "OMP_NUM_THREADS": "1", **env})


def run_worker(study: Path, *flags: str) -> tuple[int, str]:
    proc = worker_proc(study, *flags)
    out, _ = proc.communicate(timeout=900)
    return proc.returncode, out


def wait_for(path: Path, text: str, proc: subprocess.Popen, timeout: float = 300) -> None:
    """Block until ``path`` exists and holds ``text`` while ``proc`` runs."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"worker ended early with {proc.returncode}: {proc.stdout.read()}")
        if path.exists() and text in path.read_bytes().decode(errors="replace"):
            return
        time.sleep(0.05)
    raise AssertionError(f"{text!r} never appeared in {path}")


def trials(study: Path) -> list:
    """The study's trials, read fresh from its journal."""
    spec = load_study_spec(study)
    return open_study(open_storage(study), spec).get_trials(deepcopy=False)


def outcome(study: Path) -> list[tuple]:
    """What a study found: each trial's number, state, parameters, value and reported values."""
    return [(t.number, t.state.name, t.params, t.value, dict(t.intermediate_values)) for t in trials(study)]
