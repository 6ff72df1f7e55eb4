"""Start one training process per GPU (and per node) with PyTorch's own elastic launcher.

``segtrain train --nproc-per-node N`` is ``torchrun`` with two differences that batch jobs
need: the run directory is fixed before the workers start (so every rank and every node
agree on it), and the exit code is the trainer's own (0 done, 2 user error, 3 stopped to
resume), read back from ``run.json``, instead of torchrun's generic failure code.
"""
from __future__ import annotations

import sys
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

from segtrain.errors import EXIT_FAILED, EXIT_OK, EXIT_RESUMABLE, EXIT_USER_ERROR
from segtrain.run.directory import RunDir



@dataclass(frozen=True)
class LaunchSpec:
    """How many processes, on how many nodes, meeting where."""
    nproc_per_node: int
    nnodes: int = 1
    node_rank: int = 0
    rdzv_endpoint: Optional[str] = None  # host:port on the first node; None for one node
    rdzv_id: Optional[str] = None  # the same string on every node of one job (e.g. $PBS_JOBID)


def launch(spec: LaunchSpec, run_dir: Path, worker_args: Sequence[str]) -> int:
    """Run ``python -m segtrain train <worker_args> --run-dir run_dir`` on every local rank; return the exit code."""
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    single = spec.nnodes == 1 and spec.rdzv_endpoint is None
    config = LaunchConfig(
        min_nodes=spec.nnodes, max_nodes=spec.nnodes, nproc_per_node=spec.nproc_per_node,
        run_id=spec.rdzv_id or uuid.uuid4().hex, rdzv_backend="c10d",
        rdzv_endpoint="localhost:0" if single else spec.rdzv_endpoint,
        rdzv_configs={} if single else {"is_host": spec.node_rank == 0},
        max_restarts=0, monitor_interval=0.5, start_method="spawn",
    )
    before = len(RunDir(run_dir).info.read().get("segments", [])) if run_dir.exists() else 0
    try:
        elastic_launch(config, entrypoint=sys.executable)("-m", "segtrain", "train", *worker_args, "--run-dir", str(run_dir))
    except (ChildFailedError, SignalException) as exc:
        return _exit_code_from_run(run_dir, before, fallback=_child_code(exc))
    return _exit_code_from_run(run_dir, before, fallback=0)


def _child_code(exc: Exception) -> int:
    failures = getattr(exc, "failures", {}) or {}
    codes = {f.exitcode for f in failures.values()}
    return codes.pop() if len(codes) == 1 else EXIT_FAILED


def _exit_code_from_run(run_dir: Path, before: int, fallback: int) -> int:
    """Rank 0 records the trainer's exit code in run.json; that is the launch's result."""
    segments = RunDir(run_dir).info.read().get("segments", []) if run_dir.exists() else []
    if len(segments) > before and segments[-1].get("exit_code") is not None:
        return int(segments[-1]["exit_code"])
    return fallback if fallback in (EXIT_OK, EXIT_USER_ERROR, EXIT_RESUMABLE) else EXIT_FAILED
