"""Grid files: a base config plus lists of override values, expanded into points; and manifests.

A grid file is YAML with these keys (all but ``base`` optional)::

    base: ../demo.yaml              # the config every point starts from (relative to this file)
    overrides: [train.epochs=30]    # applied to every point
    product:                        # every combination of these lists (cartesian product)
      optim.lr: [0.0003, 0.001]
    zip:                            # these lists taken together, element by element
      optim.name: [adamw, sgd]
      optim.momentum: [0.9, 0.95]
    points:                         # explicit points, after the combinations
      - {loss.terms: {mse: 1.0}}

``product`` and ``zip`` combine: each combination of the product is taken with each row of the
zip. Values are YAML values; each becomes one ``key=value`` override written so that the
config loader reads back exactly that value, so a value is never re-interpreted on the way.

The manifest (JSON, written next to the grid's runs before anything is submitted) lists every
point with its overrides and run name; a job array's subjob finds its point there by
``$PBS_ARRAY_INDEX``, so no value ever travels through a ``qsub -v`` list or a shell.
"""
from __future__ import annotations

import itertools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

from segtrain.config import Config, to_dict
from segtrain.config.load import base_and_overrides, parse_override, read_yaml_mapping, yaml_mapping_has
from segtrain.errors import UserError
from segtrain.fsutil import atomic_write_json

GRID_KEYS = ("base", "overrides", "product", "zip", "points")
# Set per point by the submission (each point is its own run, in the grid's folder).
RESERVED_KEYS = ("run.name", "run.root")
MANIFEST_NAME = "manifest.json"
MANIFEST_VERSION = 1


@dataclass(frozen=True)
class Point:
    """One point of a grid."""
    index: int
    own: list[str]  # the point's own overrides
    overrides: list[str]  # every override it runs with: the grid's, then its own

    @property
    def label(self) -> str:
        """The point's own overrides, for people (``optim.lr=0.001 optim.name=sgd``)."""
        return " ".join(self.own) or "(the base config)"


@dataclass(frozen=True)
class Grid:
    path: Path
    base: Path
    overrides: list[str]
    points: list[Point]

    @property
    def name(self) -> str:
        return self.path.stem


def is_grid_file(path: Path) -> bool:
    """A YAML mapping with a ``base`` key (a config never has one: it is not a config section)."""
    return yaml_mapping_has(path, "base")


def load_grid(path: str | Path, extra: Sequence[str] = ()) -> Grid:
    """Read and expand a grid file (``extra`` overrides, from the command line, go to every point);
    every problem is a UserError naming the file and the key."""
    path = Path(path)
    data = read_yaml_mapping(path, "grid file", "with a 'base' config")
    unknown = [key for key in data if key not in GRID_KEYS]
    if unknown:
        raise UserError(f"{path}: unknown key {unknown[0]!r}; a grid file has {', '.join(GRID_KEYS)}")
    base, common = base_and_overrides(data, str(path))
    common = [*common, *extra]
    for item in extra:
        parse_override(item)
    points = []
    for index, values in enumerate(expand(data, str(path))):
        own = [format_override(key, value, f"{path}: point {index}") for key, value in values.items()]
        points.append(Point(index, own, [*common, *own]))
    return Grid(path=path, base=path.parent / base, overrides=list(common), points=points)


def expand(data: dict, where: str) -> list[dict[str, Any]]:
    """The points of a grid mapping: product x zip rows, then the explicit points."""
    product = _axes(data.get("product"), f"{where}: product")
    zipped = _axes(data.get("zip"), f"{where}: zip")
    shared = set(product) & set(zipped)
    if shared:
        raise UserError(f"{where}: {sorted(shared)[0]} is in both product and zip; put it in one of them")
    lengths = {len(values) for values in zipped.values()}
    if len(lengths) > 1:
        sizes = ", ".join(f"{key} has {len(values)}" for key, values in zipped.items())
        raise UserError(f"{where}: zip: the lists must have the same length ({sizes})")
    rows = [dict(zip(zipped, row)) for row in zip(*zipped.values())] if zipped else [{}]
    combined = []
    if product or zipped:
        for combo in itertools.product(*product.values()):
            for row in rows:
                combined.append({**dict(zip(product, combo)), **row})
    explicit = data.get("points") or []
    if not isinstance(explicit, list) or not all(isinstance(point, dict) for point in explicit):
        raise UserError(f"{where}: points: expected a list of mappings (section.key: value)")
    for number, point in enumerate(explicit):
        for key in point:
            _check_key(key, f"{where}: points[{number}]")
    combined += [dict(point) for point in explicit]
    return combined or [{}]


def _axes(value: Any, where: str) -> dict[str, list]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise UserError(f"{where}: expected a mapping of section.key: [values]")
    for key, values in value.items():
        _check_key(key, where)
        if not isinstance(values, list) or not values:
            raise UserError(f"{where}: {key}: expected a non-empty list of values, got {values!r}")
    return dict(value)


def _check_key(key: Any, where: str) -> None:
    if not isinstance(key, str) or "." not in key or any(not part for part in key.split(".")):
        raise UserError(f"{where}: {key!r}: expected a config key as section.key")
    if key in RESERVED_KEYS:
        raise UserError(f"{where}: {key}: set by the submission for each point (use --runs for the folder)")


def format_override(key: str, value: Any, where: str) -> str:
    """``key=value`` that the config loader reads back as exactly ``value`` (else a UserError)."""
    if isinstance(value, str) and value == value.strip() and "\n" not in value:
        text = value
        if _reads_back(key, text, value):
            return f"{key}={text}"
    try:
        text = json.dumps(value, ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError):  # a set (!!set, {a, b}), a date, .nan: nothing a config holds
        raise UserError(f"{where}: {key}: value {value!r} ({type(value).__name__}) is not a config value") from None
    if not _reads_back(key, text, value):
        raise UserError(f"{where}: {key}: value {value!r} cannot be written as an override")
    return f"{key}={text}"


def _reads_back(key: str, text: str, value: Any) -> bool:
    try:
        parsed = parse_override(f"{key}={text}")[1]
    except UserError:
        return False
    return parsed == value and type(parsed) is type(value)


def refuse_repeats(grid: Grid, configs: Sequence[Config]) -> None:
    """Refuse a grid with two points of the same resolved config (``configs``, one per point): one
    experiment twice. Compared as configs, not as override text: ``overrides: [train.epochs=2]`` with
    points ``{}`` and ``{train.epochs: 2}``, or ``optim.lr: 0.001`` and ``1e-3``, are repeats too."""
    seen: dict[str, int] = {}
    for point, cfg in zip(grid.points, configs):
        key = json.dumps(to_dict(cfg), sort_keys=True)
        if key in seen:
            raise UserError(f"{grid.path}: point {point.index} ({point.label}) repeats point {seen[key]} "
                            "(the same config)")
        seen[key] = point.index


# ---- manifests ------------------------------------------------------------------------------------
def write_manifest(path: Path, grid: Grid, config: str, run_names: list[str], created: str) -> None:
    """The grid as submitted: ``config`` as the jobs get it, each point's overrides and run name."""
    atomic_write_json(path, {
        "version": MANIFEST_VERSION, "grid": str(grid.path), "name": grid.name, "created": created,
        "config": config,
        "points": [{"index": p.index, "run_name": name, "label": p.label, "overrides": p.overrides}
                   for p, name in zip(grid.points, run_names)],
    })


def read_manifest(path: Path) -> dict:
    try:
        manifest = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise UserError(f"{path}: unreadable grid manifest: {exc}") from None
    if not isinstance(manifest, dict) or manifest.get("version") != MANIFEST_VERSION:
        raise UserError(f"{path}: not a segtrain grid manifest (version {MANIFEST_VERSION})")
    return manifest


def manifest_point(path: Path, index: Optional[int], index_variable: str) -> tuple[str, list[str]]:
    """The config and overrides of point ``index`` (a subjob's array index, the scheduler's ``index_variable``)."""
    manifest = read_manifest(path)
    if index is None:
        raise UserError(f"MANIFEST={path} but {index_variable} is unset: a grid's manifest is read by the "
                        "subjobs of a job array")
    points = {p["index"]: p for p in manifest["points"]}
    if index not in points:
        raise UserError(f"{path}: no point {index} (the grid has {len(points)} points, 0..{len(points) - 1})")
    return manifest["config"], list(points[index]["overrides"])
