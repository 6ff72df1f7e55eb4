"""``scripts/submit --predict MODEL SCENES... --out DIR``: the options, and submitting (qsub, sbatch, or --local)."""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from segtrain.errors import UserError

GB = 10**9


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("predictions (--predict MODEL SCENES...: jobs/predict.pbs or jobs/predict.slurm "
                                      "as a job array)")
    group.add_argument("--predict", action="store_true", help="predict SCENES (files, folders, globs, list files) "
                       "with MODEL (an .onnx file or a run directory) as a job array; again to finish what is missing")
    group.add_argument("--out", help="the predictions folder: <scene>_mask.tif (_prob.tif) and a sidecar each")
    group.add_argument("--per-job", type=int, default=None, help="most scenes per subjob (default 50)")
    group.add_argument("--per-job-gb", type=float, help="most input GB per subjob (a larger scene gets one alone)")
    group.add_argument("--prob", action="store_true", help="also write the probabilities (float32, NaN no-data)")
    group.add_argument("--int8", action="store_true", help="the run's int8 model (segtrain quantize RUN made it)")
    group.add_argument("--tile", type=int, help="tile size (default: the training tile size)")
    group.add_argument("--overlap", type=int, help="tile overlap (default: the training data.overlap)")
    group.add_argument("--batch-size", type=int, default=16, help="tiles per model call (default 16)")
    group.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                       help="default: the GPU where the job has one (onnxruntime-gpu for .onnx), else the CPU")
    group.add_argument("--checkpoint", choices=("best", "last"), default="best", help="of a run directory (default best)")


def run(args: argparse.Namespace) -> int:
    """Plan, then print (--dry-run), submit, or run here (--local) the prediction array."""
    from segtrain.cluster.frontend.predict_plan import (DEFAULT_PER_JOB, ArrayOptions, describe, dry_run_text, execute,
                                                        lint_warnings, plan_predictions)
    from segtrain.cluster.frontend.predict_status import folder_status
    from segtrain.cluster.frontend.plan import resource_options, submit_site
    from segtrain.cluster.pbs.local import server as local
    from segtrain.cluster.predictions import PredictSettings
    from segtrain.cluster.walltime import format_hms, parse_hms

    if not args.target or not args.overrides:
        raise UserError("--predict: give a model (.onnx file or run directory) and scenes: --predict MODEL SCENES...")
    if not args.out:
        raise UserError("--predict: give the predictions folder with --out DIR")
    model = Path(args.target)
    if args.int8:
        if not model.is_dir():
            raise UserError(f"--int8: {model} is not a run directory (give the run; its int8 model is used)")
        model = model / "export" / "model.int8.onnx"
        if not model.is_file():
            raise UserError(f"--int8: {model} not found; make it with: segtrain quantize {args.target}")
    settings = PredictSettings(prob=args.prob, tile=args.tile, overlap=args.overlap, batch_size=args.batch_size,
                               device=args.device, checkpoint=args.checkpoint)
    site = submit_site(args.site, args.scheduler, args.local, args.account)
    resources = resource_options(site, args.walltime, ngpus=args.gpus, ncpus=args.ncpus, mem=args.mem,
                                 scratch=args.scratch, gpu_mem=args.gpu_mem)
    opts = ArrayOptions(site=site, script=args.script, resources=resources,
                        queue=args.queue, name=args.name, max_resubmits=args.max_resubmits,
                        margin=format_hms(parse_hms(args.margin, "--margin")) if args.margin else None,
                        env=args.env or (sys.prefix if args.local else None), account=args.account)
    budget = int(args.per_job_gb * GB) if args.per_job_gb else None
    sub = plan_predictions(model, args.overrides, Path(args.out), settings, opts, Path.cwd(),
                           per_job=args.per_job or DEFAULT_PER_JOB, per_job_bytes=budget)
    for line in lint_warnings(sub):
        print(line, file=sys.stderr)
    if args.dry_run:
        print(dry_run_text(sub))
        return 0
    print(describe(sub), flush=True)
    if sub.argv is None:
        print("nothing to predict: every scene is done")
        return 0
    if not args.local:
        job_id = execute(sub, opts.scheduler.submit)
        print(f"submitted {job_id}; see where it stands with: scripts/submit --status {os.path.relpath(sub.manifest.out)}")
        return 0
    server = local.LocalServer()
    job_id = execute(sub, lambda argv: server.submit_here(argv, Path.cwd(), opts.site))
    echo = None if args.quiet else sys.stdout.buffer
    print("\n".join(local.describe(server.run_chain(server.get(job_id), echo))), flush=True)
    status = folder_status(Path(sub.manifest.out), opts.scheduler)
    print(status.text())
    return 0 if status.complete else 1
