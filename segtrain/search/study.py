"""The study folder, and the Optuna study, sampler and pruner that a search file names.

    STUDY/search.yaml     the search file the workers read (base: base.yaml, its overrides folded in)
    STUDY/base.yaml       the base config with the search file's overrides, resolved
    STUDY/source.yaml     the search file as it was given, for the record
    STUDY/journal.log     Optuna's journal: every trial, its parameters, its reported values
    STUDY/trials/NNNN/    one ordinary segtrain run directory per trial (trial number NNNN)
    STUDY/heartbeats/NNNN touched by the worker training trial NNNN (claims.py)
    STUDY/workers/NAME/   a worker job's own folder (its jobs and resubmissions; jobs/train.pbs with STUDY)

The folder is self-contained: moved or fetched elsewhere, it still opens (optuna-dashboard
reads ``journal.log`` as it is).
"""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import yaml

from segtrain.config import to_yaml
from segtrain.config.load import parse_yaml
from segtrain.errors import UserError
from segtrain.fsutil import atomic_write_text
from segtrain.run.directory import create_run_dir
from segtrain.search.journal import JOURNAL, open_storage
from segtrain.search.spec import SearchSpec, load_search

SEARCH, BASE, SOURCE = "search.yaml", "base.yaml", "source.yaml"
TRIALS, HEARTBEATS, WORKERS = "trials", "heartbeats", "workers"


def is_study(path: Path) -> bool:
    return (Path(path) / SEARCH).is_file() and (Path(path) / JOURNAL).is_file()


def trial_dir(study_dir: Path, number: int) -> Path:
    return Path(study_dir) / TRIALS / f"{number:04d}"


def worker_dir(study_dir: Path, worker: str) -> Path:
    return Path(study_dir) / WORKERS / worker


def create_study(spec: SearchSpec, root: Path, name: str) -> Path:
    """Make the study folder ``root/name`` (``name-2``, ... when taken) and its Optuna study; the folder."""
    study_dir = create_run_dir(root, name)
    init_study(spec, study_dir)
    return study_dir


def init_study(spec: SearchSpec, study_dir: Path) -> None:
    """Write a new, empty study folder's files and its Optuna study."""
    import optuna

    raw = parse_yaml(spec.path.read_text(encoding="utf-8"), str(spec.path))
    raw["base"] = BASE
    raw.pop("overrides", None)
    atomic_write_text(study_dir / BASE, to_yaml(spec.config))
    atomic_write_text(study_dir / SEARCH, yaml.safe_dump(raw, sort_keys=False, allow_unicode=True))
    shutil.copyfile(spec.path, study_dir / SOURCE)
    (study_dir / TRIALS).mkdir()
    (study_dir / HEARTBEATS).mkdir()
    load_search(study_dir / SEARCH)  # what the workers will read must read back
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    optuna.create_study(study_name=study_dir.name, storage=open_storage(study_dir),
                        direction=spec.objective.direction)


def load_study_spec(study_dir: Path) -> SearchSpec:
    if not is_study(study_dir):
        raise UserError(f"{study_dir}: not a study folder (no {SEARCH} and {JOURNAL}); make one with "
                        f"`segtrain search new SEARCH.yaml`")
    return load_search(Path(study_dir) / SEARCH)


def open_study(storage: Any, spec: SearchSpec, draw: int = 0) -> Any:
    """The study of a study folder's journal storage, with a sampler seeded for its ``draw``-th trial (so a
    restarted worker draws what an uninterrupted one would) and the spec's pruner."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    names = [s.study_name for s in storage.get_all_studies()]
    if len(names) != 1:
        raise UserError(f"{JOURNAL}: expected one study, found {len(names)}")
    return optuna.load_study(study_name=names[0], storage=storage, sampler=make_sampler(spec, draw),
                             pruner=make_pruner(spec))


def make_sampler(spec: SearchSpec, draw: int) -> Any:
    import optuna

    seed = (spec.seed * 1_000_003 + draw) % 2**32
    if spec.sampler.name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if spec.sampler.name == "grid":
        return optuna.samplers.GridSampler({p.key: p.grid_values() for p in spec.space}, seed=seed)
    # constant_liar: trials running in other workers count as bad, so parallel workers spread out
    return optuna.samplers.TPESampler(n_startup_trials=spec.sampler.startup_trials, seed=seed, constant_liar=True)


def make_pruner(spec: SearchSpec) -> Any:
    """Steps are epochs trained (1 after the first epoch), so ``min_epochs`` is the pruners' minimum resource.
    ``asha`` is Optuna's successive halving too; its promotions of pruned runs are the workers' (reuse.py)."""
    import optuna

    p = spec.pruner
    if p.name in ("asha", "successive_halving"):
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=p.min_epochs, reduction_factor=p.reduction_factor)
    if p.name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=p.min_epochs, max_resource=spec.epochs,
                                              reduction_factor=p.reduction_factor)
    if p.name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=p.startup_trials, n_warmup_steps=p.min_epochs)
    return optuna.pruners.NopPruner()
