"""Preflight: validate a config and its data set in seconds, before any expensive work."""
from __future__ import annotations

import argparse

from segtrain.commands.common import add_config_arguments, config_from_args

HELP = "validate a config and its data set, print a summary"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from segtrain.preflight import check_dataset
    from segtrain.run.wandb_log import check_login

    cfg = config_from_args(args)
    summary = check_dataset(cfg)
    check_login(cfg.logging.wandb)
    print(f"config {args.config}: ok")
    print("\n".join(summary.lines()))
    return 0
