"""The per-pixel floor of a data set: logistic regression and an MLP on single pixels' bands."""
from __future__ import annotations

import argparse

from segtrain.commands.common import add_config_arguments, config_from_args
from segtrain.data.layout import SPLITS

HELP = "score per-pixel classifiers (logistic regression, MLP) on a split: the floor a model must beat"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser)
    parser.add_argument("--split", choices=SPLITS, default="test", help="split to score (default test)")


def run(args: argparse.Namespace) -> int:
    from segtrain.baseline import evaluate_baselines, training
    from segtrain.errors import UserError
    from segtrain.preflight import check_dataset

    cfg = config_from_args(args)
    summary = check_dataset(cfg)
    if args.split not in summary.splits:
        raise UserError(f"--split: the data set {cfg.data.root} has no '{args.split}' split")
    bands = cfg.data.bands if cfg.data.bands is not None else list(range(summary.bands))
    results = evaluate_baselines(cfg.data, bands, args.split, cfg.train.threshold, cfg.train.seed)
    print(f"per-pixel classifiers on bands {bands}, trained on sampled train pixels, threshold calibrated on val:")
    for name, r in results.items():
        print(f"  {args.split} {name:8s}  iou {r['iou']:.4f}  dice {r['dice']:.4f}  precision {r['precision']:.4f}  "
              f"recall {r['recall']:.4f}  (threshold {r['threshold']:g}; at {cfg.train.threshold:g}: "
              f"iou {r['at_default_threshold']['iou']:.4f}); trained {training(r)}")
    return 0
