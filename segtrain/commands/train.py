"""Train a model, or resume the run in ``--run-dir`` exactly where it stopped."""
from __future__ import annotations

import argparse
from pathlib import Path

from segtrain.commands.common import add_config_arguments, config_from_args

HELP = "train (or resume) a run; exit 3 means stopped early with a checkpoint, run again to resume"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser)
    parser.add_argument("--run-dir", type=Path, help="run directory; resumes when it holds a checkpoint")
    parser.add_argument("--mirror", type=Path, help="also copy checkpoints, run.json and metrics here (atomically)")
    parser.add_argument("--time-limit", type=float, metavar="SECONDS",
                        help="stop with a checkpoint (exit 3) before this many seconds have passed")


def run(args: argparse.Namespace) -> int:
    from segtrain.train.trainer import TrainOptions, train

    cfg = config_from_args(args)
    return train(cfg, TrainOptions(config_path=args.config, overrides=list(args.overrides), run_dir=args.run_dir,
                                   mirror=args.mirror, time_limit=args.time_limit))
