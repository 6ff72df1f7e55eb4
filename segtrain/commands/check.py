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
    from segtrain.train.budget import schedule_warnings, steps_per_epoch

    cfg = config_from_args(args)
    summary = check_dataset(cfg)
    check_login(cfg.logging.wandb)
    print(f"config {args.config}: ok")
    print("\n".join(summary.lines()))
    train_scenes = [summary.infos[f.name] for f in summary.splits["train"]]
    for line in schedule_warnings(cfg, *steps_per_epoch(cfg, train_scenes)):
        print(line)
    return 0
