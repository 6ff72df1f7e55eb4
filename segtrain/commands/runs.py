"""Where submitted runs stand: queued, running, resubmitted, done, failed, with their last metric."""
from __future__ import annotations

import argparse
from pathlib import Path

HELP = "show each run of a grid (or of a runs folder): its job, status, epoch, step and last/best metric"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("target", nargs="?", help="a grid file (its latest submission), a grid folder, or a runs "
                        "folder (default: runs)")
    parser.add_argument("--runs", help="the runs folder a grid file's submissions went to (default: its config's "
                        "run.root)")
    parser.add_argument("--local", action="store_true", help="ask the local PBS-like runner, not qstat")


def run(args: argparse.Namespace) -> int:
    from segtrain.cluster.frontend.status import status_report
    from segtrain.cluster.schedulers import LOCAL, get_scheduler, job_states

    scheduler = LOCAL if args.local else get_scheduler()
    print(status_report(Path(args.target) if args.target else None, args.runs, job_states(scheduler, args.local),
                        scheduler.status_command))
    return 0
