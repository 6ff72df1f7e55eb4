"""Bring run directories (or one grid's) from the cluster to this machine with rsync, and list them."""
from __future__ import annotations

import argparse
from pathlib import Path

from segtrain.commands.common import at_least
from segtrain.errors import UserError

HELP = ("copy run directories from the cluster (USER@HOST:/storage/.../runs) or a folder to a local folder "
        "with rsync, checkpoints left out unless asked; resumable, safe to repeat")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from segtrain.cluster.frontend.fetch import CHECKPOINTS

    parser.add_argument("source", help="the runs folder: USER@HOST:/path/runs, or a local path")
    parser.add_argument("dest", help="the local folder to copy into (created if missing)")
    parser.add_argument("--grid", help="only this grid folder of the runs folder (e.g. loss-20260301-141500)")
    parser.add_argument("--checkpoints", choices=CHECKPOINTS, default="none",
                        help="none (default), best (checkpoints/best.pt only) or all")
    parser.add_argument("--dry-run", action="store_true", help="show what would be copied; copy nothing")
    parser.add_argument("--timeout", type=at_least(0, float, strict=True), help="give up after this many seconds (run again to resume)")


def run(args: argparse.Namespace) -> int:
    from segtrain.cluster.frontend.fetch import fetch, location, runs_brought
    from segtrain.cluster.frontend.status import summarize_run, summary_table

    src, dst = location(args.source), Path(args.dest).absolute()
    if args.grid:
        if Path(args.grid).name != args.grid or args.grid in (".", "..") or args.grid.startswith("-"):
            raise UserError(f"--grid {args.grid!r}: expected a grid folder name such as loss-20260301-141500")
        src, dst = src.join(args.grid), dst / args.grid
    files = fetch(src, dst, args.checkpoints, args.dry_run, args.timeout)
    if args.dry_run:
        print("\n".join(files) + f"\n{len(files)} files would be copied into {dst}")
        return 0
    runs = runs_brought(dst, files)
    print(f"{len(files)} files copied into {dst}" + ("" if files else ": everything was here already"))
    if runs:
        print(summary_table([summarize_run(run) for run in runs], with_jobs=False))
    return 0
