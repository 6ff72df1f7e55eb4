"""A run's config.yaml is read back as exactly the config that ran, for every value the schema
accepts: strings that look like numbers, booleans, dates or nulls stay strings, numbers stay
numbers. Otherwise a resumed run (or a PBS chain at its first resubmission) reads another config.
"""
from __future__ import annotations

import dataclasses
import math
import types
import typing
from pathlib import Path
from typing import Any, Literal, Union

from hypothesis import HealthCheck, assume, given, settings, strategies as st

from segtrain.config import Config, ConfigError, build_config, load_config, to_yaml
from segtrain.config.schema import LOSS_TERMS

# Text that a YAML reader is tempted to take for something else.
LOOKALIKES = [
    "1e-3", "1e5", "1.5e3", "3E4", "2e+3", "-1e-3", "lr3e4", "0x1F", "0o17", "017", "1_000", "1:30", ".5", "+1", "-0",
    ".inf", "-.Inf", ".nan", "NaN", "inf", "true", "False", "TRUE", "yes", "no", "on", "off", "y", "n", "null", "Null",
    "~", "", " ", "2024-01-01", "2024-01-01 12:00:00", "2001-12-14t21:59:43.10-05:00", "=", "<<", "!tag", "&a", "*a",
    "- x", "a: b", "#x", "x #y", "[1]", "{a: 1}", "'q'", '"q"', "%x", "@x", "`x", "multi\nline", "tab\there", "ü",
]
TEXT = st.one_of(st.sampled_from(LOOKALIKES), st.text(max_size=12),
                 st.from_regex(r"[-+]?[0-9_.]{1,6}([eE][-+]?[0-9]{1,3})?", fullmatch=True))


def values(tp: Any, meta: dict) -> st.SearchStrategy:
    """Values of schema type ``tp`` inside the bounds in ``meta`` (the validator has the last word)."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if dataclasses.is_dataclass(tp):
        return sections(tp)
    if origin in (Union, types.UnionType):
        return st.one_of(*[values(a, meta) if a is not type(None) else st.none() for a in args])
    if origin is Literal:
        return st.sampled_from(args)
    if origin is list:
        return st.lists(values(args[0], {}), max_size=3)
    if origin is dict:
        return st.dictionaries(st.sampled_from(LOSS_TERMS), st.floats(0, 10, allow_nan=False), min_size=1, max_size=4)
    low = meta.get("ge", meta.get("gt"))
    high = meta.get("le", meta.get("lt"))
    if tp is bool:
        return st.booleans()
    if tp is int:
        return st.integers(int(low) if low is not None else -2**63, int(high) if high is not None else 2**63 - 1)
    if tp is float:
        return st.floats(low if low is not None else -1e308, high if high is not None else 1e308, allow_nan=False,
                         allow_infinity=False, exclude_min="gt" in meta, exclude_max="lt" in meta)
    if tp is str:
        return TEXT
    raise TypeError(tp)


def sections(cls: type) -> st.SearchStrategy:
    hints = typing.get_type_hints(cls)
    return st.fixed_dictionaries({}, optional={f.name: values(hints[f.name], dict(f.metadata))
                                               for f in dataclasses.fields(cls)})


def accepted(raw: dict) -> Config:
    try:
        return build_config(raw)
    except ConfigError:
        assume(False)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(raw=sections(Config))
def test_any_accepted_config_written_and_read_back_is_equal(raw, tmp_path_factory):
    cfg = accepted(raw)
    path = tmp_path_factory.mktemp("cfg") / "config.yaml"
    path.write_text(to_yaml(cfg), encoding="utf-8")
    again = load_config(path)
    assert again == cfg
    assert to_yaml(again) == to_yaml(cfg)


@settings(max_examples=100, deadline=None)
@given(tag=TEXT, name=TEXT)
def test_strings_that_look_like_other_types_stay_strings(tag, name, tmp_path_factory):
    cfg = accepted({"logging": {"wandb": {"tags": [tag, "lr3e4"], "project": name}}, "run": {"name": name}})
    path = tmp_path_factory.mktemp("cfg") / "config.yaml"
    path.write_text(to_yaml(cfg), encoding="utf-8")
    again = load_config(path)
    assert again.logging.wandb.tags == [tag, "lr3e4"] and again.run.name == name


def test_the_reported_tags_survive_a_resume(tmp_path: Path):
    cfg = build_config({"logging": {"wandb": {"tags": ["1e-3", "lr3e4", "1e5", "1.5e3", "3E4", "2e+3"]}}})
    (tmp_path / "config.yaml").write_text(to_yaml(cfg))
    assert load_config(tmp_path / "config.yaml").logging.wandb.tags == ["1e-3", "lr3e4", "1e5", "1.5e3", "3E4", "2e+3"]


def test_floats_keep_every_bit(tmp_path: Path):
    lr = math.nextafter(1e-3, 1)
    cfg = build_config({"optim": {"lr": lr, "min_lr": 5e-324}})
    (tmp_path / "config.yaml").write_text(to_yaml(cfg))
    again = load_config(tmp_path / "config.yaml")
    assert again.optim.lr == lr and again.optim.min_lr == 5e-324


# Every class of character that YAML reads otherwise than as itself unless escaped (PyYAML reads YAML 1.1):
CHARACTER_CLASSES = {
    "line breaks": "\n\r\x85\u2028\u2029",  # NEL, LINE and PARAGRAPH SEPARATOR fold like a newline
    "byte-order mark": "\ufeff",
    "C0 controls and DEL": "".join(map(chr, range(0x20))) + "\x7f",
    "C1 controls": "".join(map(chr, range(0x80, 0xa0))),
    "non-characters": "\ufffe\uffff",
}
SPECIAL = "".join(CHARACTER_CLASSES.values())
SURROGATES = st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF)  # what a non-UTF-8 argv byte becomes
SPECIAL_TEXT = st.lists(st.one_of(st.sampled_from(SPECIAL), SURROGATES, st.sampled_from(["\r\n", " ", "a", "ü", "😀"]),
                                  st.text(max_size=3)), min_size=1, max_size=8).map("".join)


@settings(max_examples=300, deadline=None)
@given(name=SPECIAL_TEXT, tag=SPECIAL_TEXT, project=SPECIAL_TEXT)
def test_strings_with_characters_yaml_treats_specially_read_back_exactly(name, tag, project, tmp_path_factory):
    """A run trained with run.name '\\x85a' wrote a config.yaml that read back as ' a'."""
    cfg = accepted({"logging": {"wandb": {"tags": [tag], "project": project}}, "run": {"name": name}})
    path = tmp_path_factory.mktemp("cfg") / "config.yaml"
    path.write_text(to_yaml(cfg), encoding="utf-8")
    again = load_config(path)
    assert (again.run.name, again.logging.wandb.tags, again.logging.wandb.project) == (name, [tag], project)
    assert again == cfg


def test_each_class_of_special_characters_reads_back(tmp_path: Path):
    for label, chars in {**CHARACTER_CLASSES, "surrogates": "\ud800\udbff\udc00\udfff"}.items():
        cfg = build_config({"run": {"name": f"a{chars}b"}, "logging": {"wandb": {"tags": list(chars)}}})
        (tmp_path / "config.yaml").write_text(to_yaml(cfg), encoding="utf-8")
        again = load_config(tmp_path / "config.yaml")
        assert (again.run.name, again.logging.wandb.tags) == (f"a{chars}b", list(chars)), label
