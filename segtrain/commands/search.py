"""Hyperparameter search: make a study folder from a search file, run a worker, see where it stands."""
from __future__ import annotations

import argparse
import datetime as _dt
import os
from pathlib import Path

from segtrain.commands.common import at_least

HELP = ("hyperparameter search on Optuna: `new SEARCH.yaml` makes a study folder, `work STUDY` trains its trials "
        "(exit 3: stopped, run again to resume), `status STUDY`, `report STUDY`")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    new = sub.add_parser("new", help="check a search file and make its study folder (nothing is trained)")
    new.add_argument("search", type=Path, help="the search file (configs/search/)")
    new.add_argument("--study", type=Path, help="the study folder to make (default: run.root/<search name>-<time>)")
    new.add_argument("--no-check", action="store_true", help="skip the data set check")
    work = sub.add_parser("work", help="train the study's trials until it has n_trials (exit 0) or this worker "
                          "must stop (exit 3, its trial paused with a checkpoint)")
    work.add_argument("study", type=Path)
    work.add_argument("overrides", nargs="*", metavar="section.key=value",
                      help="applied to every trial after its own values (a job gives its data set on scratch)")
    work.add_argument("--worker", default=os.environ.get("SEGTRAIN_WORKER", "0"),
                      help="this worker's name (a job array's index): its next job resumes the trial it paused "
                           "(default $SEGTRAIN_WORKER, else 0)")
    work.add_argument("--time-limit", type=at_least(0, float, strict=True), metavar="SECONDS",
                      help="stop with a checkpoint (exit 3) before this many seconds have passed")
    work.add_argument("--deadline-file", type=Path, metavar="PATH", help="as for segtrain train")
    status = sub.add_parser("status", help="trials complete, pruned, running, paused, failed; the best so far")
    status.add_argument("study", type=Path)
    report = sub.add_parser("report", help="figures (history, intermediate values, importances, slices) and "
                            "best.yaml into STUDY/report")
    report.add_argument("study", type=Path)
    report.add_argument("--out", type=Path, help="folder for the figures and best.yaml (default STUDY/report)")


def run(args: argparse.Namespace) -> int:
    if args.action == "new":
        return _new(args)
    if args.action == "work":
        from segtrain.cluster.schedulers import current_job_id
        from segtrain.search.worker import WorkerOptions, run_worker

        return run_worker(WorkerOptions(args.study, list(args.overrides), str(args.worker), time_limit=args.time_limit,
                                        deadline_file=args.deadline_file, job_id=current_job_id()))
    if args.action == "status":
        from segtrain.search.status import status_text

        print(status_text(args.study))
        return 0
    from segtrain.search.report import write_report

    for path in write_report(args.study, args.out):
        print(path)
    return 0


def _new(args: argparse.Namespace) -> int:
    from segtrain.search.spec import load_search
    from segtrain.search.study import create_study

    spec = load_search(args.search)
    if not args.no_check:
        from segtrain.preflight import check_dataset

        check_dataset(spec.config)
    if args.study is not None:
        root, name = args.study.parent, args.study.name
    else:
        root, name = Path(spec.config.run.root), f"{spec.name}-{_dt.datetime.now():%Y%m%d-%H%M%S}"
    study_dir = create_study(spec, root, name)
    print(f"study {study_dir}: {spec.n_trials} trials of {len(spec.space)} parameters, {spec.sampler.name} sampler, "
          f"{spec.pruner.name} pruner; train it with: segtrain search work {study_dir}")
    return 0
