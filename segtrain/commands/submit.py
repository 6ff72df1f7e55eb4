"""Submit a training job: ``qsub jobs/train.pbs`` for a config, or the same job here with --local."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from segtrain.config import load_config
from segtrain.errors import UserError

HELP = "submit jobs/train.pbs for a config with qsub, or run that job here, PBS-like, with --local"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from segtrain.cluster.resources import SITES

    parser.add_argument("config", help="YAML config file, or a run directory to continue (its config.yaml)")
    parser.add_argument("overrides", nargs="*", metavar="section.key=value",
                        help="override config values; values are parsed as YAML")
    parser.add_argument("--local", action="store_true",
                        help="run the job script on this machine as PBS would, with its resubmissions")
    parser.add_argument("--site", choices=sorted(SITES), help="PBS site profile: its resource names "
                        "(default $SEGTRAIN_SITE or metacentrum, whose resources the job script's directives ask for)")
    parser.add_argument("--walltime", help="HH:MM:SS (default: the job script's directive)")
    parser.add_argument("--name", help="job name (default: the config's file name)")
    parser.add_argument("--data", help="data set on storage, a folder or a .tar (default: the config's data.root)")
    parser.add_argument("--runs", help="where run directories go (default: the config's run.root)")
    parser.add_argument("--max-resubmits", type=int, help="resubmissions after time-limit stops (default 10)")
    parser.add_argument("--margin", help="HH:MM:SS of walltime kept for the final checkpoint and copy-back "
                        "(WALLTIME_MARGIN; default 5 %% of the walltime, 1 to 10 minutes)")
    parser.add_argument("--env", help="software environment folder, passed as SEGTRAIN_ENV "
                        "(default: .venv on the cluster; this Python's environment with --local)")
    parser.add_argument("--script", default="jobs/train.pbs", help="the job script (default jobs/train.pbs)")
    parser.add_argument("--quiet", action="store_true", help="with --local: do not echo the job's output")


def run(args: argparse.Namespace) -> int:
    from segtrain.cluster import local, submit
    from segtrain.cluster.resources import SCRIPT_SITE, get_site
    from segtrain.cluster.walltime import format_duration, parse_duration

    config, run = _config_or_run(Path(args.config))
    load_config(config or Path(run) / "config.yaml", args.overrides)  # a bad config fails here, not in the queue
    site = get_site(args.site)
    resources = {}
    if site is not SCRIPT_SITE:  # the job script's directives ask for SCRIPT_SITE's resources
        resources = site.resource_list()
    if args.walltime:
        resources["walltime"] = format_duration(parse_duration(args.walltime, "--walltime"))
    margin = format_duration(parse_duration(args.margin, "--margin")) if args.margin else None
    env = args.env or (sys.prefix if args.local else None)
    argv = submit.job_argv(config, args.overrides, script=args.script, name=args.name, resources=resources,
                           data=args.data, runs=args.runs, run=run, max_resubmits=args.max_resubmits,
                           margin=margin, env=env)
    if not args.local:
        print(submit.run_qsub(argv))
        return 0
    print(f"running here, PBS-like: {submit.display(argv)}", flush=True)
    jobs = local.submit_and_run(argv[1:], site, echo=None if args.quiet else sys.stdout.buffer, cwd=Path.cwd())
    print("\n".join(local.describe(jobs)))
    last = jobs[-1].exit_status if jobs else None
    return 0 if last == 0 else 1


def _config_or_run(path: Path) -> tuple[str | None, str | None]:
    """(config, None) for a config file; (None, run directory) for a run to continue."""
    if not path.is_dir():
        return str(path), None
    if not (path / "config.yaml").is_file():
        raise UserError(f"{path}: a folder but not a run directory (no config.yaml)")
    return None, str(path)
