"""Checkpoints that survive being killed at any moment, and loading them back.

``last.pt`` is replaced atomically; the one it replaces is kept as ``last.prev.pt``, so a
checkpoint found corrupt (a truncated copy, a failing disk) costs one checkpoint interval, not
the run. Checkpoints hold only tensors and plain Python values and load with
``weights_only=True``, so opening one never executes code from it.
"""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Optional

import torch

from segtrain.errors import UserError
from segtrain.run.directory import RunDir
from segtrain.fsutil import fsync_dir, atomic_copy, atomic_open, write_point

FORMAT = 1
LAST, PREVIOUS, BEST = "last.pt", "last.prev.pt", "best.pt"


def save_checkpoint(state: dict, path: Path, keep_previous: bool = False) -> float:
    """Write ``state`` to ``path`` atomically; return the seconds it took (for time budgeting)."""
    start = time.monotonic()
    tmp = path.with_name(f".{path.name}.partial")
    with atomic_open(tmp, "wb") as f:
        torch.save({"format": FORMAT, **state}, f)
    write_point(path)
    if keep_previous and path.exists():
        os.replace(path, path.with_name(PREVIOUS))
    os.replace(tmp, path)
    fsync_dir(path.parent)
    return time.monotonic() - start


def load_checkpoint(path: Path) -> dict:
    """Load one checkpoint file; raise ValueError when it is unreadable or not ours."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated zip, bad pickle, I/O error: all mean "corrupt" here
        raise ValueError(f"{path}: unreadable checkpoint ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise ValueError(f"{path}: not a segtrain checkpoint (format {FORMAT})")
    return state


def load_latest(checkpoints: Path, warn=print) -> Optional[tuple[dict, Path]]:
    """The newest good checkpoint for resuming and its file: ``last.pt``, else ``last.prev.pt``; None
    for a run that never wrote one.

    A run whose checkpoints all fail to load is refused (:class:`UserError`) instead of being
    restarted from step 0 over its own metrics and best model.
    """
    problems = []
    for name in (LAST, PREVIOUS):
        path = checkpoints / name
        if path.exists():
            try:
                return load_checkpoint(path), path
            except ValueError as exc:
                warn(f"warning: {exc}; trying an older checkpoint")
                problems.append(name)
    if problems or (checkpoints / BEST).exists():
        found = " and ".join(problems) + (" unreadable" if problems else "") or f"only {BEST}, no {LAST}"
        raise UserError(f"{checkpoints}: cannot resume: {found}; not restarting this run from step 0 over its "
                        f"results (copy a good {LAST} there, e.g. from the mirror, or train into a new --run-dir)")
    return None


def mirror_files(run_dir: Path, mirror: Path, names: list[str]) -> None:
    """Copy the named files of a run directory to the same place under ``mirror``, atomically, with their
    modification times; a file already there with the same size and time is not copied again.

    A job stopped by SIGTERM has 10 s before SIGKILL: its final mirror then writes only what changed
    since the last checkpoint (run.json, metrics), and the job's copy-back skips what the mirror wrote.
    """
    for name in names:
        src, dst = run_dir / name, mirror / name
        if not src.exists():
            continue
        st = src.stat()
        if dst.is_file() and (dst.stat().st_size, dst.stat().st_mtime_ns) == (st.st_size, st.st_mtime_ns):
            continue
        atomic_copy(src, dst, keep_mtime=True)


def capture_rng() -> dict[str, Any]:
    """Every random state the loop draws from, in a form ``weights_only`` loading accepts."""
    import random

    import numpy as np

    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {"python": random.getstate(), "numpy": [kind, keys.tolist(), pos, has_gauss, cached],
             "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    import random

    import numpy as np

    random.setstate(tuple(x if not isinstance(x, list) else tuple(x) for x in state["python"]))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class TrainedModel:
    """A model restored from a run directory, with the config and statistics it was trained with.

    ``run_config``: the run's ``config.yaml`` when it has one: the checkpoint must fit it (a best.pt
    copied from another run is refused, not evaluated or exported as this run's)."""

    def __init__(self, state: dict, path: Path, run_config: Optional[Path] = None):
        from segtrain.config import build_config, load_config
        from segtrain.models import build_model
        from segtrain.run.checkpoint_fit import check_fits

        self.path = path
        self.config = build_config(state["config"])
        self.stats: Optional[dict] = state["stats"]
        self.in_channels: int = state["in_channels"]
        self.position: dict = state["position"]
        reference = load_config(run_config) if run_config is not None else self.config
        where = str(run_config) if run_config is not None else "its own config"
        self.model = build_model(self.config.model, self.in_channels)
        check_fits(state, path, reference, where, model=self.model)
        self.model.load_state_dict(state["model"])
        self.model.eval()


def load_trained(run_dir: str | Path, which: str = "best") -> TrainedModel:
    """The ``best`` (or ``last``) model of a run; a missing or corrupt file is a UserError."""
    if which not in ("best", "last"):
        raise UserError(f"--checkpoint: expected 'best' or 'last', got {which!r}")
    path = RunDir(run_dir).checkpoints / (BEST if which == "best" else LAST)
    if not path.is_file():
        raise UserError(f"{path}: checkpoint not found (is {run_dir} a segtrain run directory?)")
    try:
        state = load_checkpoint(path)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    run_config = Path(run_dir) / "config.yaml"
    return TrainedModel(state, path, run_config if run_config.is_file() else None)
