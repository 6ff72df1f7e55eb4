"""Arguments and steps shared by the commands that take a config."""
from __future__ import annotations

import argparse

from segtrain.config import Config, load_config


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", help="YAML config file")
    parser.add_argument("overrides", nargs="*", metavar="section.key=value",
                        help="override config values; values are parsed as YAML")


def config_from_args(args: argparse.Namespace) -> Config:
    return load_config(args.config, args.overrides)
