"""Where submitted runs stand: queued, running, resubmitted, done, failed, with their last metric."""
from __future__ import annotations

import argparse
import shutil
import sys
from collections import Counter
from pathlib import Path
from typing import Optional

from segtrain.errors import UserError

HELP = "show each run of a grid (or of a runs folder): its job, status, epoch, step and last/best metric"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("target", nargs="?", help="a grid file (its latest submission), a grid folder, or a runs "
                        "folder (default: runs)")
    parser.add_argument("--runs", help="the runs folder a grid file's submissions went to (default: its config's "
                        "run.root)")
    parser.add_argument("--local", action="store_true", help="ask the local PBS-like runner, not qstat")


def run(args: argparse.Namespace) -> int:
    return show(args.target, args.runs, args.local)


def show(target: Optional[str], runs: Optional[str], local: bool) -> int:
    """Print the status table of ``target``; used by ``segtrain runs`` and ``scripts/submit --status``."""
    from segtrain.cluster.frontend.status import status_rows, summary_table

    runs_root, grid_dir = locate(Path(target) if target else None, runs)
    qstat = [sys.executable, "-m", "segtrain.cluster.local", "qstat"] if local else (
        ["qstat"] if shutil.which("qstat") else None)
    summaries = status_rows(runs_root, grid_dir, qstat)
    if not summaries:
        print(f"no runs in {grid_dir or runs_root}")
        return 0
    print(summary_table(summaries))
    counts = Counter(summary.status for summary in summaries)
    print(f"{len(summaries)} runs: " + ", ".join(f"{n} {status}" for status, n in counts.most_common())
          + ("" if qstat else " (no qstat here: runs not started yet show as 'not started')"))
    return 0


def locate(target: Optional[Path], runs: Optional[str]) -> tuple[Path, Optional[Path]]:
    """(runs folder, grid folder or None) for a grid file, a grid folder or a runs folder."""
    from segtrain.cluster.frontend.grid import MANIFEST_NAME, is_grid_file, load_grid, read_manifest
    from segtrain.config import load_config

    if target is None:
        return Path(runs or "runs"), None
    if target.is_dir():
        return (target.parent, target) if (target / MANIFEST_NAME).is_file() else (target, None)
    if not is_grid_file(target):
        raise UserError(f"{target}: neither a grid file, a grid folder nor a runs folder")
    grid = load_grid(target)
    root = Path(runs or load_config(grid.base, grid.overrides).run.root)
    folders = sorted(m.parent for m in root.glob(f"{grid.name}-*/{MANIFEST_NAME}")
                     if read_manifest(m).get("name") == grid.name)
    if not folders:
        raise UserError(f"{target}: no submission of this grid in {root} (give --runs if it went elsewhere)")
    return root, folders[-1]
