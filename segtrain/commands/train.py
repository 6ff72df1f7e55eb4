"""Train a model, or resume the run in ``--run-dir`` exactly where it stopped."""
from __future__ import annotations

import argparse
import os
from pathlib import Path

from segtrain.commands.common import add_config_arguments, at_least, config_from_args

HELP = "train (or resume) a run; exit 3 means stopped early with a checkpoint, run again to resume"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser)
    parser.add_argument("--run-dir", type=Path, help="run directory; resumes when it holds a checkpoint")
    parser.add_argument("--mirror", type=Path, help="also copy checkpoints, run.json and metrics here (atomically)")
    parser.add_argument("--time-limit", type=at_least(0, float, strict=True), metavar="SECONDS",
                        help="stop with a checkpoint (exit 3) before this many seconds have passed")
    parser.add_argument("--deadline-file", type=Path, metavar="PATH",
                        help="a file holding a later deadline (epoch seconds) that replaces the time limit when "
                             "it changes (a PBS job writes it after a qextend)")
    dist = parser.add_argument_group("several processes (DDP through torch.distributed's elastic launcher)")
    dist.add_argument("--nproc-per-node", type=at_least(1), default=1, help="processes on this node, one per GPU")
    dist.add_argument("--nnodes", type=at_least(1), default=1, help="nodes taking part (all run this same command)")
    dist.add_argument("--node-rank", type=at_least(0), default=0, help="this node's rank; 0 hosts the rendezvous")
    dist.add_argument("--rdzv-endpoint", metavar="HOST:PORT", help="rendezvous on the first node (several nodes)")
    dist.add_argument("--rdzv-id", help="a job-wide id, the same on every node (e.g. the job id)")


def run(args: argparse.Namespace) -> int:
    from segtrain.cluster.schedulers import current_job_id
    from segtrain.errors import UserError
    from segtrain.run.wandb_log import prepare as prepare_wandb

    cfg = config_from_args(args)
    launching = (args.nproc_per_node > 1 or args.nnodes > 1) and "LOCAL_RANK" not in os.environ
    if not launching and os.environ.get("RANK", "0") == "0":  # W&B logs from rank 0 only
        prepare_wandb(cfg.logging.wandb)  # first: beside the imports, the check and the set-up that follow
    from segtrain.train.trainer import TrainOptions, default_run_dir, train

    opts = TrainOptions(config_path=args.config, overrides=list(args.overrides), run_dir=args.run_dir,
                        mirror=args.mirror, time_limit=args.time_limit, deadline_file=args.deadline_file,
                        job_id=current_job_id())
    if launching:
        from segtrain.preflight import check_dataset
        from segtrain.train.launch import LaunchSpec, launch

        if args.nnodes > 1 and not (args.rdzv_endpoint and args.run_dir):
            raise UserError("--nnodes: several nodes need --rdzv-endpoint HOST:PORT and an explicit --run-dir")
        check_dataset(cfg)  # fail here, once, before starting processes
        spec = LaunchSpec(args.nproc_per_node, args.nnodes, args.node_rank, args.rdzv_endpoint, args.rdzv_id)
        worker_args = [args.config, *args.overrides]
        for flag, value in (("--mirror", args.mirror), ("--time-limit", args.time_limit),
                            ("--deadline-file", args.deadline_file)):
            if value is not None:
                worker_args += [flag, str(value)]
        return launch(spec, opts.run_dir or default_run_dir(cfg, opts), worker_args)
    return train(cfg, opts)
