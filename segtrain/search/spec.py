"""The search file: what to search, how to judge a trial, how to sample and prune; validated whole.

A search file is YAML with these keys (only ``base`` and ``space`` are required)::

    base: ../demo.yaml                 # the config every trial starts from (relative to this file)
    overrides: [train.epochs=8]        # applied to every trial
    space:                             # each key a config key; each trial draws one value of each
      optim.lr: {type: float, low: 1.0e-4, high: 3.0e-2, log: true}
      loss.terms.dice: {type: float, low: 0.0, high: 2.0}   # one entry of a mapping: the others kept
      model.base_width: {type: int, low: 8, high: 32, step: 8}
      optim.name: [adamw, sgd]         # a list: a categorical choice (values may be mappings)
    objective: {metric: iou, direction: maximize}   # the best value of a validation metric over a trial
    sampler: {name: tpe, startup_trials: 10}        # tpe (default), random, grid
    pruner: {name: asha, min_epochs: 2, reduction_factor: 3}   # asha, successive_halving, hyperband, median, none
    n_trials: 24
    workers: 4                         # jobs of the array that run trials in parallel
    seed: 0
    stale_after: 600                   # seconds without a heartbeat before another worker takes a trial over

Every value a parameter can take is checked against the config schema before anything is
written (both ends of a range, every choice), so a trial never fails on a value the search
file allowed.
"""
from __future__ import annotations

import dataclasses
import json
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

from segtrain.config import Config, ConfigError, build_config, load_raw, to_dict
from segtrain.config.load import (base_and_overrides, merge, parse_override, read_yaml_mapping,
                                  yaml_mapping_has)
from segtrain.errors import UserError

SEARCH_KEYS = ("base", "overrides", "space", "objective", "sampler", "pruner", "n_trials", "workers", "seed",
               "stale_after")
# Validation values the trainer logs at every validation (metrics.jsonl, split "val").
VAL_METRICS = ("iou", "dice", "precision", "recall", "accuracy", "loss", "calibrated_iou")
SAMPLERS = ("tpe", "random", "grid")
PRUNERS = ("asha", "successive_halving", "hyperband", "median", "none")
PARAM_TYPES = ("float", "int", "categorical")
# Set by the search for each trial: its folder, and the W&B group that holds the study's trials.
RESERVED_PREFIXES = ("run.", "logging.wandb.group")


@dataclass(frozen=True)
class Param:
    """One dimension of the space: a config key and the values it may take."""
    key: str
    type: str
    low: Optional[float] = None
    high: Optional[float] = None
    log: bool = False
    step: Optional[float] = None
    choices: tuple = ()

    def grid_values(self) -> Optional[list]:
        """Every value of a finite dimension (choices, or a range with a step); None for a continuous one."""
        if self.type == "categorical":
            return [encode_choice(c) for c in self.choices]
        if self.step is None and self.type == "float":
            return None
        step = self.step or 1
        count = int(math.floor((self.high - self.low) / step + 1e-9)) + 1
        values = [self.low + i * step for i in range(count)]
        return [int(v) for v in values] if self.type == "int" else [round(v, 12) for v in values]

    def distribution(self):
        """The Optuna distribution of this dimension (categorical values that are not scalars as JSON text)."""
        import optuna

        if self.type == "float":
            return optuna.distributions.FloatDistribution(self.low, self.high, log=self.log, step=self.step)
        if self.type == "int":
            return optuna.distributions.IntDistribution(int(self.low), int(self.high), log=self.log,
                                                         step=int(self.step or 1))
        return optuna.distributions.CategoricalDistribution([encode_choice(c) for c in self.choices])

    def decode(self, value: Any) -> Any:
        """The config value of an Optuna parameter value."""
        if self.type == "categorical":
            return {encode_choice(c): c for c in self.choices}[value]
        return int(value) if self.type == "int" else float(value)


@dataclass(frozen=True)
class Objective:
    metric: str = "iou"
    direction: str = "maximize"


@dataclass(frozen=True)
class Sampler:
    name: str = "tpe"
    startup_trials: int = 10  # tpe: trials drawn at random before the model of the good ones is used


@dataclass(frozen=True)
class Pruner:
    name: str = "asha"  # successive halving; asha also promotes pruned runs later (reuse.py), as the paper does
    # No trial is pruned before it has trained this many epochs (the first rung). Not 1: the first validation
    # ranks trials worst (the default config's first epoch ends inside its learning-rate warm-up; on the demo
    # kinds a rung at epoch 1 pruned the best point in most seeds: docs/development/benchmarks.md).
    min_epochs: int = 2
    reduction_factor: int = 3  # asha, successive_halving, hyperband: a third go on at each rung
    startup_trials: int = 5  # median: trials that finish unpruned before any is pruned


@dataclass(frozen=True)
class SearchSpec:
    path: Path
    base: Path
    overrides: list[str]
    space: list[Param]
    objective: Objective
    sampler: Sampler
    pruner: Pruner
    n_trials: int
    workers: int
    seed: int
    stale_after: float
    config: Config = field(repr=False, compare=False)  # the base config with the overrides

    @property
    def name(self) -> str:
        return self.path.stem

    @property
    def epochs(self) -> int:
        return self.config.train.epochs

    def trial_overrides(self, params: dict[str, Any]) -> list[str]:
        """The overrides of a trial with these parameter values (config values, by key)."""
        return [*self.overrides, *param_overrides(self.config, params, str(self.path))]

    def trial_config(self, params: dict[str, Any]) -> Config:
        return _build(self.base, self.trial_overrides(params))


def encode_choice(value: Any) -> Any:
    """A categorical value as Optuna stores it: scalars as they are, mappings and lists as JSON text."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return json.dumps(value, sort_keys=True)


def is_search_file(path: Path) -> bool:
    """A YAML mapping with a ``space`` key (neither a config nor a grid file has one)."""
    return yaml_mapping_has(path, "space")


def load_search(path: str | Path) -> SearchSpec:
    """Read and validate a search file; every problem is one UserError naming the file and the key."""
    path = Path(path)
    data = read_yaml_mapping(path, "search file", "with 'base' and 'space'")
    for key in data:
        if key not in SEARCH_KEYS:
            raise UserError(f"{path}: {key}: unknown key{_suggest(str(key), SEARCH_KEYS)}; a search file has "
                            f"{', '.join(SEARCH_KEYS)}")
    where = str(path)
    base, overrides = base_and_overrides(data, where)
    base_path = path.parent / base
    config = _build(base_path, overrides, f"{where}: base {base}")
    space = _space(data.get("space"), config, base_path, overrides, where)
    objective = _objective(data.get("objective"), where)
    sampler = _section(Sampler, data.get("sampler"), f"{where}: sampler", SAMPLERS)
    pruner = _section(Pruner, data.get("pruner"), f"{where}: pruner", PRUNERS)
    if not (isinstance(data.get("pruner"), dict) and "min_epochs" in data["pruner"]):  # the default, for any run length
        pruner = dataclasses.replace(pruner, min_epochs=min(pruner.min_epochs, config.train.epochs))
    if pruner.name != "none" and not 1 <= pruner.min_epochs <= config.train.epochs:
        raise UserError(f"{where}: pruner.min_epochs: must be between 1 and train.epochs ({config.train.epochs}), "
                        f"got {pruner.min_epochs}")
    if pruner.reduction_factor < 2:
        raise UserError(f"{where}: pruner.reduction_factor: must be >= 2, got {pruner.reduction_factor}")
    grid_size = _grid_size(space, where) if sampler.name == "grid" else None
    n_trials = _integer(data, "n_trials", grid_size or 20, 1, where)
    if grid_size is not None and n_trials > grid_size:
        raise UserError(f"{where}: n_trials: the grid has {grid_size} points, got {n_trials}")
    stale_after = data.get("stale_after", 600)
    if isinstance(stale_after, bool) or not isinstance(stale_after, (int, float)) or not 0 < stale_after < math.inf:
        raise UserError(f"{where}: stale_after: expected seconds > 0, got {stale_after!r}")
    return SearchSpec(path=path, base=base_path, overrides=list(overrides), space=space, objective=objective,
                      sampler=sampler, pruner=pruner, n_trials=n_trials, workers=_integer(data, "workers", 1, 1, where),
                      seed=_integer(data, "seed", 0, 0, where), stale_after=float(stale_after), config=config)


# ---- the space -------------------------------------------------------------------------------------
def _space(raw: Any, config: Config, base: Path, overrides: list[str], where: str) -> list[Param]:
    if not isinstance(raw, dict) or not raw:
        raise UserError(f"{where}: space: expected a mapping of config keys to ranges or lists of values, "
                        f"got {raw!r}" if raw else f"{where}: space: is empty; give at least one config key to search")
    params = []
    for key, spec in raw.items():
        at = f"{where}: space.{key}"
        if not isinstance(key, str):
            raise UserError(f"{at}: expected a config key as section.key")
        whole = [other for other in raw if isinstance(other, str) and key.startswith(other + ".")]
        if whole:
            raise UserError(f"{at}: {whole[0]} is searched too; search the mapping or its entries, not both")
        if key.startswith(RESERVED_PREFIXES):
            raise UserError(f"{at}: set by the search for each trial; not a parameter")
        tp = _config_key_type(key, at)
        param = _param(key, spec, at)
        if param.type in ("float", "int") and not _numeric(tp):
            raise UserError(f"{at}: {key} is not a number in the config schema; use a list of choices")
        for value in ([param.low, param.high] if param.type != "categorical" else list(param.choices)):
            try:
                build_config(_raw_with(base, overrides, config, {key: value}))
            except ConfigError as exc:
                raise UserError(f"{at}: {value!r} is not a valid value: {exc}") from None
            except UserError as exc:
                raise UserError(f"{at}: {value!r} is not a valid value: {exc}") from None
        params.append(param)
    return params


def _param(key: str, spec: Any, at: str) -> Param:
    if isinstance(spec, list):
        spec = {"type": "categorical", "choices": spec}
    if not isinstance(spec, dict):
        raise UserError(f"{at}: expected {{type: float|int|categorical, ...}} or a list of choices, got {spec!r}")
    kind = spec.get("type")
    if kind not in PARAM_TYPES:
        raise UserError(f"{at}.type: must be one of {', '.join(PARAM_TYPES)}, got {kind!r}")
    allowed = ("type", "choices") if kind == "categorical" else ("type", "low", "high", "log", "step")
    for name in spec:
        if name not in allowed:
            raise UserError(f"{at}.{name}: unknown key{_suggest(str(name), allowed)}; a {kind} parameter has "
                            f"{', '.join(allowed)}")
    if kind == "categorical":
        choices = spec.get("choices")
        if not isinstance(choices, list) or not choices:
            raise UserError(f"{at}.choices: expected a non-empty list of values, got {choices!r}")
        encoded = [encode_choice(c) for c in choices]
        if len(set(map(repr, encoded))) != len(encoded):
            raise UserError(f"{at}.choices: a value is listed twice: {choices!r}")
        return Param(key, kind, choices=tuple(choices))
    number = int if kind == "int" else (int, float)
    values = {}
    for name in ("low", "high", "step"):
        value = spec.get(name)
        if value is None and name == "step":
            continue
        if isinstance(value, bool) or not isinstance(value, number) or not math.isfinite(value):
            raise UserError(f"{at}.{name}: expected {'an integer' if kind == 'int' else 'a finite number'}, "
                            f"got {value!r}")
        values[name] = value
    log = spec.get("log", False)
    if not isinstance(log, bool):
        raise UserError(f"{at}.log: expected true or false, got {log!r}")
    low, high, step = values["low"], values["high"], values.get("step")
    if not low < high:
        raise UserError(f"{at}: low must be smaller than high, got low {low} and high {high}")
    if log and low <= 0:
        raise UserError(f"{at}.low: a log scale needs low > 0, got {low}")
    if step is not None and (step <= 0 or step > high - low):
        raise UserError(f"{at}.step: must be > 0 and at most high - low ({high - low}), got {step}")
    if log and step is not None and kind == "float":
        raise UserError(f"{at}: a float parameter takes log or step, not both")
    return Param(key, kind, low=low, high=high, log=log, step=step)


def _config_key_type(key: str, at: str) -> Any:
    """The schema type of ``key``: a field of a section, or an entry of a mapping field (``loss.terms.bce``)."""
    parts = key.split(".")
    schema: Any = Config
    for number, part in enumerate(parts):
        if not dataclasses.is_dataclass(schema):
            if typing.get_origin(schema) is dict and number == len(parts) - 1:
                return typing.get_args(schema)[1]
            raise UserError(f"{at}: not a config key ({'.'.join(parts[:number])} has no keys)")
        hints = typing.get_type_hints(schema)
        if part not in hints:
            raise UserError(f"{at}: not a config key: {'.'.join(parts[:number] + [part])} is unknown"
                            f"{_suggest(part, hints)}")
        schema = hints[part]
    if dataclasses.is_dataclass(schema):
        raise UserError(f"{at}: is a config section, not a key")
    return schema


def _numeric(tp: Any) -> bool:
    options = typing.get_args(tp) if typing.get_origin(tp) in (typing.Union, types.UnionType) else (tp,)
    return any(option in (int, float) for option in options)


def param_overrides(config: Config, params: dict[str, Any], where: str) -> list[str]:
    """``key=value`` overrides for the parameters; entries of one mapping (``loss.terms.bce``) are merged
    into the base config's mapping, so the other entries stay as the base has them."""
    from segtrain.cluster.frontend.grid import format_override

    merged: dict[str, Any] = {}
    base = to_dict(config)
    for key, value in params.items():
        parent, _, entry = key.rpartition(".")
        if _is_mapping_entry(key):
            merged.setdefault(parent, dict(_lookup(base, parent)))[entry] = value
        else:
            merged[key] = value
    return [format_override(key, value, where) for key, value in merged.items()]


def _is_mapping_entry(key: str) -> bool:
    schema: Any = Config
    for part in key.split("."):
        if not dataclasses.is_dataclass(schema):
            return True
        schema = typing.get_type_hints(schema)[part]
    return False


def _lookup(tree: dict, key: str) -> Any:
    for part in key.split("."):
        tree = tree[part]
    return tree


def _raw_with(base: Path, overrides: Sequence[str], config: Config, params: dict[str, Any]) -> dict:
    raw, sources = load_raw(base, overrides)
    for item in param_overrides(config, params, str(base)):
        key, value = parse_override(item)
        update: Any = value
        for part in reversed(key.split(".")):
            update = {part: update}
        merge(raw, update, Config, sources, item)
    return raw


def _build(base: Path, overrides: Sequence[str], where: Optional[str] = None) -> Config:
    try:
        raw, _ = load_raw(base, overrides)
        return build_config(raw)
    except ConfigError as exc:
        raise UserError(f"{where or base}: {exc}") from None
    except UserError as exc:
        raise UserError(f"{where}: {exc}" if where else str(exc)) from None


# ---- the other sections ------------------------------------------------------------------------------
def _objective(raw: Any, where: str) -> Objective:
    raw = {} if raw is None else raw
    if not isinstance(raw, dict):
        raise UserError(f"{where}: objective: expected {{metric: iou, direction: maximize}}, got {raw!r}")
    for key in raw:
        if key not in ("metric", "direction"):
            raise UserError(f"{where}: objective.{key}: unknown key; objective has metric, direction")
    metric = raw.get("metric", "iou")
    if metric not in VAL_METRICS:
        raise UserError(f"{where}: objective.metric: must be a validation metric the trainer logs "
                        f"({', '.join(VAL_METRICS)}), got {metric!r}{_suggest(str(metric), VAL_METRICS)}")
    direction = raw.get("direction", "minimize" if metric == "loss" else "maximize")
    if direction not in ("maximize", "minimize"):
        raise UserError(f"{where}: objective.direction: must be maximize or minimize, got {direction!r}")
    return Objective(metric, direction)


def _section(cls: type, raw: Any, where: str, names: Sequence[str]) -> Any:
    """A sampler or pruner: a name, or a mapping with a name and the numbers of its dataclass."""
    raw = {"name": raw} if isinstance(raw, str) else ({} if raw is None else raw)
    if not isinstance(raw, dict):
        raise UserError(f"{where}: expected a name ({', '.join(names)}) or a mapping with one, got {raw!r}")
    fields = [f.name for f in dataclasses.fields(cls)]
    for key in raw:
        if key not in fields:
            raise UserError(f"{where}.{key}: unknown key{_suggest(str(key), fields)}; it has {', '.join(fields)}")
    name = raw.get("name", cls.name)
    if name not in names:
        raise UserError(f"{where}.name: must be one of {', '.join(names)}, got {name!r}{_suggest(str(name), names)}")
    values = {"name": name}
    for key in fields[1:]:
        if key in raw:
            values[key] = _integer(raw, key, None, 0, where + ".")
    return cls(**values)


def _integer(data: dict, key: str, default: Any, minimum: int, where: str) -> int:
    value = data.get(key, default)
    at = f"{where}{key}" if where.endswith(".") else f"{where}: {key}"
    if isinstance(value, bool) or not isinstance(value, int):
        raise UserError(f"{at}: expected an integer, got {value!r}")
    if value < minimum:
        raise UserError(f"{at}: must be >= {minimum}, got {value}")
    return value


def _grid_size(space: list[Param], where: str) -> int:
    size = 1
    for param in space:
        values = param.grid_values()
        if values is None:
            raise UserError(f"{where}: space.{param.key}: the grid sampler needs a step (or a list of choices)")
        size *= len(values)
    return size


def _suggest(word: str, choices: Any) -> str:
    import difflib

    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""
