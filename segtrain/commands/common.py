"""Arguments and steps shared by the commands that take a config."""
from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Any, Callable, Iterable

from segtrain.config import Config, load_config
from segtrain.errors import UserError


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", help="YAML config file")
    parser.add_argument("overrides", nargs="*", metavar="section.key=value",
                        help="override config values; values are parsed as YAML")


def config_from_args(args: argparse.Namespace) -> Config:
    return load_config(args.config, args.overrides)


def at_least(minimum: float, kind: Callable[[str], float] = int, strict: bool = False) -> Callable[[str], Any]:
    """An argparse ``type``: a finite ``kind`` number >= ``minimum`` (> with ``strict``), so that
    ``--time-limit -5`` is refused at the command line."""
    def parse(text: str) -> Any:
        value = kind(text)  # a ValueError becomes argparse's "invalid int value: ..."
        if not math.isfinite(value) or value < minimum or (strict and value == minimum):
            raise argparse.ArgumentTypeError(f"expected a number {'>' if strict else '>='} {minimum}, got {text!r}")
        return value

    parse.__name__ = kind.__name__
    return parse


def add_overwrite_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--overwrite", action="store_true", help="replace output files that already exist")


def refuse_existing(outputs: Iterable[Path], overwrite: bool) -> None:
    """Outputs never replace a file they did not write (a ground-truth mask, another tool's
    metrics.json) unless ``--overwrite`` says so; checked before any work starts."""
    if overwrite:
        return
    for path in outputs:
        if path.exists() or path.is_symlink():
            raise UserError(f"{path}: exists; not replacing it (choose another --out, or --overwrite)")
