"""Read YAML configs (with ``extends``), apply ``section.key=value`` overrides, validate.

Every leaf value remembers where it came from (which file of the ``extends`` chain, or which
command-line override), so an error names the place the user has to edit, not just the key.
"""
from __future__ import annotations

import dataclasses
import re
import typing
from pathlib import Path
from typing import Any, Iterable

import yaml

from segtrain.config.schema import Config, ConfigError
from segtrain.config.validate import build_config
from segtrain.errors import UserError


class _StrictLoader(yaml.SafeLoader):
    """A safe YAML loader that refuses duplicate keys (PyYAML silently keeps the last one)."""


def _mapping_no_duplicates(loader: _StrictLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    seen = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if isinstance(key, (list, dict, set)):
            raise yaml.constructor.ConstructorError(None, None, f"a key must be a plain value, not a {type(key).__name__}",
                                                    key_node.start_mark)
        if key in seen:
            raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
        seen.add(key)
    return loader.construct_mapping(node, deep=deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping_no_duplicates)
# PyYAML follows YAML 1.1, where ``off``/``no``/``on``/``yes`` are booleans and ``3e-4`` (no dot) is
# a string. Configs read as YAML 1.2 does: only true/false are booleans (``train.amp: off`` is the
# word), and ``3e-4`` is a number.
# YAML 1.2 has no timestamps either: ``2024-01-01`` is a string (a run name, a W&B tag), never a date,
# and a lone ``=`` is the character, not PyYAML's unconstructible "value" tag.
_BOOL = "tag:yaml.org,2002:bool"
_NOT_1_2 = (_BOOL, "tag:yaml.org,2002:timestamp", "tag:yaml.org,2002:value")
_StrictLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag not in _NOT_1_2]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_StrictLoader.add_implicit_resolver(_BOOL, re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF"))
_StrictLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)




class _Dumper(yaml.SafeDumper):
    """Writes configs that :class:`_StrictLoader` reads back as exactly what was written.

    PyYAML decides whether a string may be written unquoted by asking the dumper's own
    resolvers what the bare text would read as; giving it the loader's resolvers quotes every
    string that the loader would take for a number, boolean or null (``"1e-3"``, ``"null"``).
    """


_Dumper.yaml_implicit_resolvers = _StrictLoader.yaml_implicit_resolvers
# Characters that do not come back as written unless escaped in a double-quoted string: line breaks
# (PyYAML reads YAML 1.1, which folds U+0085, U+2028 and U+2029 like a newline: '\x85a' read back as
# ' a'), the byte-order mark, and what the reader refuses in a file (C0 and C1 controls, DEL, surrogates,
# U+FFFE/U+FFFF). In double quotes the emitter escapes every one of them.
_ESCAPED = re.compile("[^\x20-\x7e\xa0-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]|[\u2028\u2029\ufeff]")


def _represent_str(dumper: _Dumper, value: str) -> yaml.ScalarNode:
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style='"' if _ESCAPED.search(value) else None)


_Dumper.add_representer(str, _represent_str)


def parse_yaml(text: str, source: str) -> Any:
    """Parse YAML text; a syntax error becomes a one-line :class:`UserError` naming source:line."""
    try:
        return yaml.load(text, Loader=_StrictLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        where = f"{source}:{mark.line + 1}" if mark is not None else source
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise UserError(f"{where}: invalid YAML: {problem}") from None
    except ValueError as exc:  # a constructor's own limit, e.g. an integer of more than 4300 digits
        raise UserError(f"{source}: invalid YAML: {str(exc).splitlines()[0]}") from None


def yaml_mapping_has(path: Path, key: str) -> bool:
    """Whether ``path`` is a readable .yaml/.yml file holding a mapping with ``key`` (how a grid or a search
    file is told from a config: by a key no config has)."""
    if not path.is_file() or path.suffix not in (".yaml", ".yml"):
        return False
    try:
        data = parse_yaml(path.read_text(encoding="utf-8"), str(path))
    except (UserError, OSError, UnicodeDecodeError):
        return False
    return isinstance(data, dict) and key in data


def read_yaml_mapping(path: Path, kind: str, shape: str) -> dict:
    """A grid or search file's mapping (``kind`` names the file, ``shape`` what its mapping needs), or a UserError."""
    try:
        data = parse_yaml(path.read_text(encoding="utf-8"), str(path))
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: cannot read {kind}: {exc}") from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: a {kind} must be a mapping {shape}")
    return data


def base_and_overrides(data: dict, where: str) -> tuple[str, list[str]]:
    """The ``base`` config and the ``overrides`` list of a grid or search file, checked."""
    base = data.get("base")
    if not isinstance(base, str) or not base:
        raise UserError(f"{where}: base: expected the path of a config file, got {base!r}")
    overrides = data.get("overrides") or []
    if not isinstance(overrides, list) or not all(isinstance(item, str) for item in overrides):
        raise UserError(f"{where}: overrides: expected a list of section.key=value strings")
    for item in overrides:
        parse_override(item)
    return base, overrides


def load_config(path: str | Path, overrides: Iterable[str] = ()) -> Config:
    """Load, merge and validate a config file plus overrides into a :class:`Config`."""
    raw, sources = load_raw(path, overrides)
    try:
        return build_config(raw)
    except ConfigError as exc:
        raise UserError(f"{_source_of(exc.key, sources, str(path))}: {exc}") from None


def load_raw(path: str | Path, overrides: Iterable[str] = ()) -> tuple[dict, dict[str, str]]:
    """The merged, unvalidated config dict and a map from leaf key paths to their source."""
    raw, sources = _load_file(Path(path), chain=())
    for item in overrides:
        key, value = parse_override(item)
        merge(raw, _nest(key, value), Config, sources, _override_name(item))
    return raw, sources


def parse_override(item: str) -> tuple[str, Any]:
    """Split ``section.key=value`` and parse the value as YAML (``[1, 2]``, ``null``, ``1e-3``)."""
    key, sep, text = item.partition("=")
    key = key.strip()
    if not sep or not key or any(not part for part in key.split(".")):
        raise UserError(f"{_override_name(item)}: expected section.key=value")
    value = parse_yaml(text, _override_name(item)) if text.strip() else None
    return key, value


def _override_name(item: str, limit: int = 60) -> str:
    """How errors name an override: quoted, and cut short so that the message stays one line."""
    return f"override {item!r}" if len(item) <= limit else f"override {item[:limit - 3]!r}..."


def to_dict(cfg: Config) -> dict:
    """The plain nested-dict form of a config (what run directories store)."""
    return dataclasses.asdict(cfg)


def to_yaml(cfg: Config) -> str:
    """The resolved config as YAML text, in schema order."""
    return yaml.dump(to_dict(cfg), Dumper=_Dumper, sort_keys=False, allow_unicode=True)


def _load_file(path: Path, chain: tuple[Path, ...]) -> tuple[dict, dict[str, str]]:
    if not path.is_file():
        via = f" (extended by {chain[-1]})" if chain else ""
        raise UserError(f"{path}: config file not found{via}")
    if path.resolve() in chain:
        raise UserError(f"{path}: 'extends' forms a cycle: {' -> '.join(map(str, chain + (path,)))}")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: cannot read config: {exc}") from None
    data = parse_yaml(text, str(path))
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise UserError(f"{path}: a config must be a mapping of sections, got {type(data).__name__}")
    base_name = data.pop("extends", None)
    raw: dict = {}
    sources: dict[str, str] = {}
    if base_name is not None:
        if not isinstance(base_name, str):
            raise UserError(f"{path}: extends: expected a file name, got {base_name!r}")
        raw, sources = _load_file(path.parent / base_name, chain + (path.resolve(),))
    merge(raw, data, Config, sources, str(path))
    return raw, sources


def merge(base: dict, update: dict, schema: Any, sources: dict[str, str], source: str, key: str = "") -> None:
    """Merge ``update`` into ``base`` in place: sections merge key by key, values replace.

    A free-form mapping such as ``loss.terms`` is a value, so a child config that sets
    ``terms: {dice: 1}`` means exactly that, not dice plus whatever the parent had.
    """
    hints = typing.get_type_hints(schema) if dataclasses.is_dataclass(schema) else {}
    for name, value in update.items():
        path = f"{key}.{name}" if key else str(name)
        sub = hints.get(name)
        if dataclasses.is_dataclass(sub) and isinstance(value, dict) and isinstance(base.get(name), dict):
            merge(base[name], value, sub, sources, source, path)
            continue
        base[name] = value
        for old in [k for k in sources if k == path or k.startswith(path + ".")]:
            del sources[old]
        sources[path] = source


def _nest(key: str, value: Any) -> dict:
    out: Any = value
    for part in reversed(key.split(".")):
        out = {part: out}
    return out


def _source_of(key: str, sources: dict[str, str], default: str) -> str:
    key = key.split("[")[0]
    while key:
        if key in sources:
            return sources[key]
        key = key.rpartition(".")[0]
    return default
