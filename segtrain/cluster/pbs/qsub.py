"""The words of a ``qsub`` call: options, ``-v`` variables (encoded, :mod:`segtrain.cluster.variables`), arrays.

Nothing here ever passes through a shell: the command is a list of words given to ``subprocess``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Mapping, Optional, Sequence

from segtrain.cluster.scheduler import SUBMIT_TIMEOUT_S, run_submit
from segtrain.cluster.variables import default_job_name, encode_value, job_variables
from segtrain.errors import UserError


def variable_list(variables: Mapping[str, str]) -> str:
    """The ``-v`` argument: ``NAME=value,...`` with every value encoded; empty values left out."""
    for name in variables:
        if not name.isidentifier():
            raise UserError(f"job variable {name!r}: not a valid variable name")
    return ",".join(f"{name}={encode_value(str(value))}" for name, value in variables.items() if value != "")


def qsub_argv(script: str | Path, variables: Mapping[str, str], *, name: Optional[str] = None,
              resources: Optional[Mapping[str, str]] = None, depend: Optional[str] = None,
              extra: Sequence[str] = ()) -> list[str]:
    """The words of one qsub command: ``qsub [-N] [-l ...] [-W depend=] [-v ...] [extra] SCRIPT``."""
    argv = ["qsub"]
    if name:
        argv += ["-N", name]
    for key, value in (resources or {}).items():
        argv += ["-l", f"{key}={value}"]
    if depend:
        argv += ["-W", f"depend={depend}"]
    listed = variable_list(variables)
    if listed:
        argv += ["-v", listed]
    return argv + list(extra) + [str(script)]


def run_qsub(argv: Sequence[str], timeout_s: float = SUBMIT_TIMEOUT_S) -> str:
    """Submit with qsub (no stdin, a timeout); the new job's id as qsub printed it."""
    return run_submit(argv, "a PBS frontend, or run here with --local", timeout_s)


def job_argv(config: Optional[str], overrides: Sequence[str], *, script: str = "jobs/train.pbs", name: Optional[str] = None,
             resources: Optional[Mapping[str, str]] = None, data: Optional[str] = None, runs: Optional[str] = None,
             run: Optional[str] = None, max_resubmits: Optional[int] = None, margin: Optional[str] = None,
             env: Optional[str] = None, queue: Optional[str] = None, manifest: Optional[str] = None,
             array: Optional[str] = None, nproc: Optional[int] = None) -> list[str]:
    """The qsub words of one training job: a new run of ``config``, or (config None) continuing ``run``,
    or (``manifest`` and ``array``) a job array whose subjobs each train one point of a grid."""
    variables = job_variables(config, overrides, data=data, runs=runs, run=run, max_resubmits=max_resubmits,
                              margin=margin, env=env, manifest=manifest, nproc=nproc)
    extra = (["-q", queue] if queue else []) + (["-J", array] if array else [])
    return qsub_argv(script, variables, name=name or default_job_name(config, run), resources=resources, extra=extra)


def subjob_id(array_id: str, index: int) -> str:
    """``13[2].server`` from the array's ``13[].server``, as PBS names its subjobs."""
    if "[]" not in array_id:
        raise UserError(f"qsub answered {array_id!r} for a job array (expected an id like 13[].server)")
    return array_id.replace("[]", f"[{index}]", 1)
