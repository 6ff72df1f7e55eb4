"""Evaluate a run on whole scenes (tiled, stitched prediction), as deployment will see them."""
from __future__ import annotations

import argparse
from pathlib import Path

from segtrain.commands.common import add_overwrite_argument, at_least, refuse_existing
from segtrain.data.layout import SPLITS

HELP = "evaluate a run on whole scenes of a split: metrics.json, scenes.csv, worst/best overlays"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run", type=Path, help="run directory")
    parser.add_argument("--split", choices=SPLITS, default="test", help="default test")
    parser.add_argument("--checkpoint", choices=("best", "last"), default="best", help="default best")
    parser.add_argument("--out", type=Path, help="output folder (default RUN/eval)")
    parser.add_argument("--data", metavar="ROOT", help="data set root, when not where the run's data.root says")
    parser.add_argument("--batch-size", type=at_least(1), default=16, help="tiles per model call (default 16)")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="default: CUDA if available")
    parser.add_argument("--no-wandb", action="store_true", help="do not log to the run's W&B run")
    parser.add_argument("--threshold", type=float, help="probability above which a pixel is positive "
                        "(default: the checkpoint's calibrated threshold, else train.threshold)")
    parser.add_argument("--calibrate", action="store_true", help="first choose the threshold that maximizes IoU "
                        "on the whole val scenes and store it in the run (used by eval, predict, export)")
    parser.add_argument("--no-baseline", action="store_true", help="skip the per-pixel classifiers "
                        "(`segtrain baseline`) that every evaluation is compared with")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    add_overwrite_argument(parser)


def run(args: argparse.Namespace) -> int:
    from segtrain.baseline import training
    from segtrain.evaluate import OUTPUTS, EvalOptions, evaluate_run
    from segtrain.run.directory import EVAL

    if args.out is not None:  # the run's own eval/ folder is this command's; any other is not
        refuse_existing([args.out / name for name in OUTPUTS], args.overwrite)
    options = EvalOptions(split=args.split, checkpoint=args.checkpoint, out=args.out, data_root=args.data,
                          batch_size=args.batch_size, device=args.device, wandb=not args.no_wandb,
                          progress=not args.quiet, threshold=args.threshold, calibrate=args.calibrate,
                          baseline=not args.no_baseline)
    m = evaluate_run(args.run, options)
    out = args.out or args.run / EVAL
    print(f"{args.split} ({m['scenes']} scenes, whole-scene prediction): {_scores(m)}")
    print(f"  threshold {m['threshold']:g} ({m['threshold_source']})")
    default = m["at_default_threshold"]
    if default["threshold"] != m["threshold"]:
        print(f"  at threshold {default['threshold']:g}: {_scores(default)}")
    for name, b in ((k, v) for k, v in m.get("baseline", {}).items() if isinstance(v, dict)):
        print(f"  per-pixel {name} (threshold {b['threshold']:g}; trained {training(b)}): {_scores(b)}")
    if "baseline" in m:
        print(f"  {m['baseline']['verdict']}")
    print(f"written: {out / 'metrics.json'}, {out / 'scenes.csv'}, overlays {', '.join(m['overlays']) or 'none'} in {out}")
    return 0


def _scores(m: dict) -> str:
    return "  ".join(f"{k} {m[k]:.4f}" for k in ("iou", "dice", "precision", "recall"))
