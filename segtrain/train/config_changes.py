"""Which config changes a resumed run accepts.

A resume must continue the same experiment. Changes that do not alter what the already-trained
steps mean are accepted and said in the log (more epochs, where the data set was staged this
time, logging, checkpoint cadence); anything else (model, loss, optimizer, seed, tiles, ...)
is refused, because the result would be neither the old run nor a clean new one.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from segtrain.config import Config, to_dict
from segtrain.errors import UserError

SAFE_KEYS = (
    "train.epochs", "train.early_stopping.patience", "train.checkpoint_every_steps", "train.checkpoint_every_minutes",
    "train.device", "train.compile", "train.channels_last",
    "data.root", "data.num_workers", "data.cache", "data.stats_file",
    "logging", "run",
)


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in tree.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and key != "terms":
            out.update(flatten(value, path + "."))
        else:
            out[path] = value
    return out


def check_resume_compatible(old: Config, new: Config, where: Path) -> list[str]:
    """Return log notes for the safe changes; raise :class:`UserError` for the first unsafe one."""
    before, after = flatten(to_dict(old)), flatten(to_dict(new))
    notes = []
    for key in sorted(set(before) | set(after)):
        if before.get(key) == after.get(key):
            continue
        if any(key == safe or key.startswith(safe + ".") for safe in SAFE_KEYS):
            notes.append(f"config change accepted on resume: {key}: {before.get(key)!r} -> {after.get(key)!r}")
            continue
        raise UserError(f"{key}: changed from {before.get(key)!r} to {after.get(key)!r}, but {where} belongs to a run "
                        f"trained with the old value; resume with the same value or start a new run")
    return notes
