"""Upload runs' W&B data after the fact: every job segment in order into one W&B run, once."""
from __future__ import annotations

import argparse
from pathlib import Path

from segtrain.errors import UserError

HELP = ("upload a run's offline W&B data (every job segment, in order, into one W&B run; or a replay of "
        "metrics.jsonl where the segments do not continue each other); a repeat uploads only what is new")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from segtrain.run.wandb_sync import METHODS

    parser.add_argument("targets", nargs="+", metavar="RUN", help="run directories, or grid folders (all their runs)")
    parser.add_argument("--method", choices=METHODS, default="auto",
                        help="segments (wandb sync of the offline folders), replay (metrics.jsonl), or auto (default)")
    parser.add_argument("--project", help="W&B project (default: the run's logging.wandb.project)")
    parser.add_argument("--entity", help="W&B entity (default: the run's logging.wandb.entity)")
    parser.add_argument("--dry-run", action="store_true", help="say what would be uploaded; upload nothing")


def run(args: argparse.Namespace) -> int:
    from segtrain.cluster.frontend.grid import MANIFEST_NAME
    from segtrain.cluster.frontend.status import grid_runs
    from segtrain.run.directory import RunDir
    from segtrain.run.wandb_sync import plan_sync, require_login, sync_run

    if not args.dry_run:
        require_login()  # before anything: a sync that cannot upload must not start
    runs: list[Path] = []
    for target in map(Path, args.targets):
        if (target / MANIFEST_NAME).is_file():
            runs += [path for _, path in grid_runs(target) if RunDir(path).info.exists()]
        elif RunDir(target).info.exists():
            runs.append(target)
        else:
            raise UserError(f"{target}: neither a run directory (run.json) nor a grid folder ({MANIFEST_NAME})")
    plans = [plan_sync(run, args.method, args.project, args.entity) for run in runs]  # every refusal first
    for plan in plans:
        print(plan.summary(), flush=True)
        if not args.dry_run and sync_run(plan):
            print("  uploaded", flush=True)
    return 0
