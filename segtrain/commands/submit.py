"""Submit training jobs: a config, a grid file of configs, or a run to continue; qsub, or --local."""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from segtrain.errors import UserError

HELP = ("submit jobs/train.pbs (PBS) or jobs/train.slurm (Slurm) for a config or a grid file (one job per point, "
        "or --array), or a search file's workers (a job array; a study folder to add workers), or run it here PBS-like "
        "with --local; --dry-run prints the qsub/sbatch commands, --status "
        "shows where the runs stand")


def octal_umask(text: str) -> str:
    """An umask as PBS and the shell write it: three or four octal digits."""
    if not (text.isdigit() and 3 <= len(text) <= 4 and set(text) <= set("01234567")):
        raise argparse.ArgumentTypeError(f"expected an octal umask such as 077, got {text!r}")
    return text


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from segtrain.cluster.schedulers import SCHEDULERS
    from segtrain.cluster.site import SITES

    parser.add_argument("target", nargs="?", help="a config file, a grid file (configs/grids/), a search file "
                        "(configs/search/), a run directory or a study folder to continue; with --status a grid file, "
                        "a grid folder, a study folder or a runs folder")
    parser.add_argument("overrides", nargs="*", metavar="section.key=value",
                        help="override config values (of every point of a grid); values are parsed as YAML")
    mode = parser.add_argument_group("what to do")
    mode.add_argument("--dry-run", action="store_true", help="print every qsub command and the directives the "
                      "server would queue; write and submit nothing")
    mode.add_argument("--local", action="store_true",
                      help="run the job script on this machine as PBS would, with its resubmissions")
    mode.add_argument("--array", action="store_true", help="a grid as one job array (qsub -J), not one job per point")
    mode.add_argument("--status", action="store_true", help="show each run of a grid (or of the runs folder): "
                      "queued, running, resubmitted, done or failed, with its last metric")
    mode.add_argument("--no-check", action="store_true", help="skip the data set check here (the job still "
                      "checks it before copying anything)")
    mode.add_argument("--quiet", action="store_true", help="with --local: do not echo the jobs' output")
    res = parser.add_argument_group("resources (over the job script's #PBS lines)")
    res.add_argument("--site", choices=sorted(SITES), help="site profile: its scheduler, resource names and limits "
                     "(default $SEGTRAIN_SITE, else metacentrum, whose resources jobs/train.pbs's directives ask for; "
                     "slurm for jobs/train.slurm's; karolina and lumi are Slurm sites)")
    res.add_argument("--scheduler", choices=SCHEDULERS, help="PBS (qsub, jobs/train.pbs) or Slurm (sbatch, "
                     "jobs/train.slurm); default: the site's, else $SEGTRAIN_SCHEDULER, else the one installed here")
    res.add_argument("--account", help="Slurm project account (sbatch -A), which Karolina and LUMI require")
    res.add_argument("--walltime", help="HH:MM:SS (default: the job script's directive)")
    res.add_argument("--gpus", type=int, help="GPUs (default 1)")
    res.add_argument("--ncpus", type=int, help="CPU cores (default 8)")
    res.add_argument("--nodes", type=int, help="Slurm: nodes of one run, each with --gpus GPUs (default 1; "
                     "train.batch_size is global); on PBS: qsub -l select=N:... -l place=scatter")
    res.add_argument("--mem", help="memory, e.g. 32gb")
    res.add_argument("--scratch", help="node-local scratch, e.g. 100gb")
    res.add_argument("--gpu-mem", help="least memory per GPU, e.g. 10gb")
    res.add_argument("--queue", help="a queue (default: the server routes by walltime and GPUs)")
    job = parser.add_argument_group("the job")
    job.add_argument("--name", help="job name: a letter, then letters, digits and - _ + ., at most 230 (PBS's rules); "
                     "default: the config's or the grid's file name")
    job.add_argument("--umask", type=octal_umask, help="e.g. 077: the run private to you (the job sets it itself, "
                     "and the jobs it resubmits; default: the job script's, 022, group-readable)")
    job.add_argument("--data", help="data set on storage, a folder or a .tar (default: the config's data.root)")
    job.add_argument("--runs", help="where run directories go (default: the config's run.root)")
    job.add_argument("--max-resubmits", type=int, help="resubmissions after time-limit stops (default 10)")
    job.add_argument("--margin", help="HH:MM:SS of walltime kept for the final checkpoint and copy-back "
                     "(WALLTIME_MARGIN; default 5 %% of the walltime, 1 to 10 minutes)")
    job.add_argument("--env", help="software environment folder, passed as SEGTRAIN_ENV "
                     "(default: .venv on the cluster; this Python's environment with --local)")
    job.add_argument("--script", help="the job script (default jobs/train.pbs, jobs/train.slurm on Slurm; "
                     "jobs/predict.pbs with --predict)")
    from segtrain.cluster.frontend import predict_submit

    predict_submit.add_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from segtrain.cluster.frontend.plan import (JobOptions, describe, dry_run_text, execute, lint_warnings,
                                                plan_target, resource_options, run_here, submit_site)
    from segtrain.cluster.frontend.status import status_report, summary_table
    from segtrain.cluster.frontend.predict_status import folder_status, is_predictions_folder
    from segtrain.cluster.schedulers import job_states, scheduler_named
    from segtrain.cluster.walltime import format_hms, parse_hms
    from segtrain.cluster.job_name import check_job_name
    from segtrain.search.status import status_text, study_finished
    from segtrain.search.study import is_study

    if args.name is not None:
        check_job_name(args.name)
    if args.predict:
        from segtrain.cluster.frontend import predict_submit

        return predict_submit.run(args)
    site = submit_site(args.site, args.scheduler, args.local, None if args.status else args.account)
    scheduler = scheduler_named(site.scheduler)
    if args.status and args.target and is_predictions_folder(Path(args.target)):
        print(folder_status(Path(args.target), scheduler, job_states(scheduler, args.local)).text())
        return 0
    if args.status and args.target and is_study(Path(args.target)):
        print(status_text(Path(args.target)))
        return 0
    if args.status:
        print(status_report(Path(args.target) if args.target else None, args.runs, job_states(scheduler, args.local),
                            scheduler.status_command))
        return 0
    if not args.target:
        raise UserError("give a config file, a grid file or a run directory (or --status)")
    if args.nodes is not None and (args.nodes < 1 or not scheduler.takes_nodes):
        raise UserError(f"--nodes {args.nodes}: a whole number >= 1, on Slurm; on PBS ask for chunks: "
                        "qsub -l select=N:ncpus=...:ngpus=... -l place=scatter jobs/train.pbs")
    resources = resource_options(site, args.walltime, ngpus=args.gpus, ncpus=args.ncpus, mem=args.mem,
                                 scratch=args.scratch, gpu_mem=args.gpu_mem, nodes=args.nodes)
    opts = JobOptions(site=site, script=args.script, resources=resources, queue=args.queue,
                      name=args.name, data=args.data, runs=args.runs, max_resubmits=args.max_resubmits,
                      margin=format_hms(parse_hms(args.margin, "--margin")) if args.margin else None,
                      env=args.env or (sys.prefix if args.local else None), check_data=not args.no_check,
                      account=args.account, umask=args.umask)
    sub = plan_target(Path(args.target), args.overrides, opts, Path.cwd(), args.array)
    for line in lint_warnings(sub):
        print(line, file=sys.stderr)
    if args.dry_run:
        print(dry_run_text(sub))
        return 0
    if args.umask:  # the run folder this submission makes is as private as what its jobs write
        os.umask(int(args.umask, 8))
    print(describe(sub), flush=True)
    if not args.local:
        ids = execute(sub, opts.scheduler.submit)
        where = os.path.relpath(sub.grid_dir or sub.study_dir or sub.runs_root)
        print(f"submitted {', '.join(ids)}; see where they stand with: scripts/submit --status {where}")
        return 0
    summaries = run_here(sub, site, None if args.quiet else sys.stdout.buffer)
    if sub.search is not None:
        print(status_text(sub.study_dir))
        return 0 if study_finished(sub.study_dir) else 1
    print(summary_table(summaries, with_jobs=True))
    return 0 if all(summary.status == "done" for summary in summaries) else 1
