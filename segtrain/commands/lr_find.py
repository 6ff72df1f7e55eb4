"""Learning-rate range test: the loss against an exponentially growing lr, and a suggested ``optim.lr``."""
from __future__ import annotations

import argparse
from pathlib import Path

from segtrain.commands.common import (add_config_arguments, add_overwrite_argument, at_least, config_from_args,
                                      refuse_existing)

HELP = "learning-rate range test: plot the loss as the lr grows from 1e-7 to 1, suggest optim.lr"
PLOT, RESULT = "lr_find.png", "lr_find.json"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser)
    parser.add_argument("--out", type=Path, help="folder for lr_find.png and lr_find.json "
                                                 "(default: a new folder lr-find-CONFIG under run.root)")
    parser.add_argument("--steps", type=at_least(2), default=100, help="optimizer steps at most (default 100)")
    parser.add_argument("--start", type=at_least(0, float, strict=True), default=1e-7, help="first lr (default 1e-7)")
    parser.add_argument("--end", type=at_least(0, float, strict=True), default=1.0, help="last lr (default 1)")
    add_overwrite_argument(parser)


def run(args: argparse.Namespace) -> int:
    from segtrain.data.stats import training_stats
    from segtrain.device import select_device
    from segtrain.errors import UserError
    from segtrain.fsutil import atomic_write_json
    from segtrain.preflight import check_dataset
    from segtrain.run.directory import unique_path
    from segtrain.train.lr_find import plot, range_test

    if args.end <= args.start:
        raise UserError(f"--end: {args.end:g} must be larger than --start {args.start:g}")
    cfg = config_from_args(args)
    out = args.out or unique_path(Path(cfg.run.root), f"lr-find-{Path(args.config).stem}")
    root = Path(cfg.data.root).resolve()
    if out.resolve() == root or root in out.resolve().parents:
        raise UserError(f"--out {out}: is inside the data set {cfg.data.root}; nothing is written there")
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out}: is a file, not a folder")
    refuse_existing([out / PLOT, out / RESULT], args.overwrite)
    summary = check_dataset(cfg)
    device = select_device(cfg.train.device, "train.device")
    result = range_test(cfg, training_stats(cfg, summary.infos), summary.in_channels, device, args.steps, args.start, args.end)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / RESULT, {"config": args.config, "overrides": list(args.overrides), "start": args.start,
                                     "end": args.end, "steps": args.steps, **result.to_dict()})
    plot(result, out / PLOT, f"{args.config}: lr range test, {len(result.lrs)} steps")
    stopped = "stopped when the loss diverged" if result.diverged else "did not diverge"
    print(f"suggested optim.lr={result.suggested_lr:.2g} ({result.method} of the centered average of the loss; "
          f"minimum at {result.min_lr:.2g}, {len(result.lrs)} steps, {stopped}, {result.cpu_s:.0f} CPU-s); "
          f"wrote {out / PLOT}, {out / RESULT}")
    return 0
