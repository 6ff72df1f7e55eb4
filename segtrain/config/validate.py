"""Turn a plain nested dict into the typed :class:`Config`, or fail on the first bad key.

The checker walks the dataclass fields and their type hints, so every section of the schema is
validated the same way: unknown keys (with the closest valid key suggested), wrong types,
values out of the bounds declared in field metadata, then each section's own ``check``.
"""
from __future__ import annotations

import dataclasses
import difflib
import math
import operator
import types
import typing
from typing import Any, Literal, Union

from segtrain.config.schema import Config, ConfigError

INT_LIMIT = 2**63


def build(cls: type, raw: Any, key: str = "") -> Any:
    """Build dataclass ``cls`` from ``raw`` (a dict), checking every key against the schema."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(key or "<top level>", f"expected a mapping of keys, got {_describe(raw)}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for name in raw:
        if name not in fields:
            raise ConfigError(_join(key, name), "unknown key" + _suggest(str(name), fields))
    values = {}
    for name, value in raw.items():
        values[name] = _coerce(value, hints[name], _join(key, name))
        _check_bounds(values[name], fields[name].metadata, _join(key, name))
    obj = cls(**values)
    if hasattr(obj, "check"):
        obj.check()
    return obj


def build_config(raw: dict) -> Config:
    """Build and validate a whole :class:`Config` from its nested-dict form."""
    return build(Config, raw)


def _coerce(value: Any, tp: Any, key: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if dataclasses.is_dataclass(tp):
        return build(tp, value, key)
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for option in (a for a in args if a is not type(None)):
            try:
                return _coerce(value, option, key)
            except ConfigError as exc:
                errors.append(exc.message)
        raise ConfigError(key, " or ".join(dict.fromkeys(errors)))
    if origin is Literal:
        if value in args and type(value) is type(args[args.index(value)]):
            return value
        choices = ", ".join(repr(a) for a in args)
        raise ConfigError(key, f"must be one of {choices}, got {value!r}" + _suggest(str(value), [str(a) for a in args]))
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(key, f"expected a list, got {_describe(value)}")
        return [_coerce(v, args[0], f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(key, f"expected a mapping, got {_describe(value)}")
        return {_coerce(k, args[0], key): _coerce(v, args[1], _join(key, str(k))) for k, v in value.items()}
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(key, f"expected true or false, got {_describe(value)}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            if not -INT_LIMIT <= value < INT_LIMIT:  # torch, numpy and checkpoints hold 64-bit integers
                raise ConfigError(key, f"integer out of range (|value| < 2**63), got {_short(value)}")
            return value
        raise ConfigError(key, f"expected an integer, got {_describe(value)}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            try:
                number = float(value)
            except OverflowError:
                number = math.inf
            if not math.isfinite(number):  # .nan passes every bound check; .inf poisons losses at step 1
                raise ConfigError(key, f"expected a finite number, got {_short(value)}")
            return number
        raise ConfigError(key, f"expected a number, got {_describe(value)}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise ConfigError(key, f"expected a string, got {_describe(value)}")
    raise TypeError(f"schema type {tp!r} at {key} is not supported by the validator")


def _check_bounds(value: Any, meta: Any, key: str) -> None:
    if value is None or not meta:
        return
    for name, op, text in (("ge", operator.ge, ">="), ("le", operator.le, "<="),
                           ("gt", operator.gt, ">"), ("lt", operator.lt, "<")):
        if name in meta and isinstance(value, (int, float)) and not op(value, meta[name]):
            raise ConfigError(key, f"must be {text} {meta[name]}, got {_short(value)}")


def _join(key: str, name: str) -> str:
    return f"{key}.{name}" if key else str(name)


def _suggest(word: str, choices: Any) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _describe(value: Any) -> str:
    if isinstance(value, (dict, list)):
        return f"a {type(value).__name__}"
    return f"{_short(value)} ({type(value).__name__})"


def _short(value: Any, limit: int = 40) -> str:
    """``repr`` cut to a length that keeps an error message one readable line."""
    if isinstance(value, int) and value.bit_length() > 128:
        return f"an integer of about {int(value.bit_length() * math.log10(2)) + 1} digits"
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."
