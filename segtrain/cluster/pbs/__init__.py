"""PBS Pro / OpenPBS as a :class:`segtrain.cluster.scheduler.Scheduler`: every PBS fact segtrain uses.

- submit words and ``-v`` encoding: :mod:`.qsub`; ``#PBS`` directives and qsub's options: :mod:`.directives`;
- the job's variables and ``qstat -f``: :mod:`.environment`; ``qstat -x`` states: :mod:`.status`;
- starting work on other nodes (``pbsdsh``): :mod:`.nodes`; lint of a request: :mod:`.lint`;
- the job's scratch (MetaCentrum's ``$SCRATCHDIR``, else the job's ``$TMPDIR``): :meth:`Pbs.enter_job`;
  the local stand-in that runs the same job script here: :mod:`.local`.

PBS sends no warning before the walltime (the job times itself); ``qdel`` and the walltime send
SIGTERM to every process of the job, SIGKILL ``kill_delay`` later; ``qrerun`` (or ``-r y`` after
a node failure) starts a job again under its id, and ``run_count`` in ``qstat -f`` counts its starts.
"""
from __future__ import annotations

import dataclasses
import os
import tempfile
from pathlib import Path
from typing import Mapping, Optional, Sequence

from segtrain.cluster.pbs import qsub
from segtrain.cluster.pbs.directives import job_request, script_request
from segtrain.cluster.pbs.environment import (job_attributes, job_environment, job_queue_wait, job_walltime,
                                              require_job)
from segtrain.cluster.pbs.lint import lint_request, lint_script
from segtrain.cluster.pbs.nodes import pbsdsh_argv, task_exit_status
from segtrain.cluster.pbs.status import qstat_states
from segtrain.cluster.scheduler import JobEnvironment, JobState
from segtrain.cluster.scratch import SITE_SCRATCH, Scratch, other_node_scratch
from segtrain.cluster.site import DEFAULT_SITE, SCRIPT_SITE
from segtrain.cluster.variables import decode_value, display
from segtrain.cluster.walltime import format_hms, parse_hms
from segtrain.errors import UserError


class Pbs:
    name = "pbs"
    title = "PBS"
    script = "jobs/train.pbs"
    predict_script = "jobs/predict.pbs"
    submit_command = "qsub"
    status_command = "qstat"
    array_variable = "PBS_ARRAY_INDEX"
    default_site = DEFAULT_SITE
    takes_account = False
    takes_nodes = False  # chunks: qsub -l select=N:... -l place=scatter
    time_limit_warning = None  # PBS warns no job before its walltime: the job times itself

    def in_job(self, environ: Mapping[str, str]) -> bool:
        return bool(environ.get("PBS_JOBID"))

    def job_environment(self, environ: Mapping[str, str]) -> JobEnvironment:
        return job_environment(environ)

    def require_job(self, environ: Mapping[str, str]) -> JobEnvironment:
        return require_job(job_environment(environ))

    def submit_argv(self, script: str | Path, variables: Mapping[str, str], *, name: Optional[str] = None,
                    resources: Optional[Mapping[str, str]] = None, depend: Optional[str] = None,
                    queue: Optional[str] = None, array: Optional[str] = None) -> list[str]:
        extra = (["-q", queue] if queue else []) + (["-J", array] if array else [])
        return qsub.qsub_argv(script, variables, name=name, resources=resources, depend=depend, extra=extra)

    def submit(self, argv: Sequence[str]) -> str:
        return self.job_id(qsub.run_qsub(argv))

    def job_id(self, submit_output: str) -> str:
        return submit_output.strip()

    def subjob_id(self, array_id: str, index: int) -> str:
        return qsub.subjob_id(array_id, index)

    def after(self, job_id: str) -> Optional[str]:
        # PBS Pro takes no dependency on a subjob (13[2].server)
        return None if "[" in job_id else f"afterany:{job_id}"

    def manual(self, run_dir: str) -> str:
        return f"qsub -v RUN={run_dir} {self.script}"

    def walltime(self, info_text: Optional[str], job_id: str, scripts: Sequence[Path]) -> tuple[Optional[float], str]:
        return job_walltime(info_text, job_id, scripts)

    def granted(self, info_text: Optional[str], job_id: str) -> dict[str, str]:
        attrs = job_attributes(info_text, job_id) if info_text else {}
        return {key: attrs[f"Resource_List.{key}"] for key in ("select", "place", "walltime")
                if f"Resource_List.{key}" in attrs}

    def select(self, granted: Mapping[str, str], scripts: Sequence[Path]) -> Optional[str]:
        if granted.get("select"):
            return granted["select"]
        script = next((script for script in scripts if script.is_file()), None)  # qstat did not answer
        return script_request(script).resources.get("select") if script else None

    def queue_wait(self, info_text: Optional[str], job_id: str) -> Optional[float]:
        return job_queue_wait(info_text, job_id) if info_text else None

    def restarted(self, info_text: Optional[str], job_id: str) -> bool:
        """PBS counts starts (``run_count`` in ``qstat -f``), so a new job that happens to reuse an old id
        is never taken for a rerun."""
        count = (job_attributes(info_text, job_id) if info_text else {}).get("run_count", "").strip()
        return count.isdigit() and int(count) >= 2

    def states(self, job_ids: Sequence[str]) -> dict[str, JobState]:
        return qstat_states(job_ids, [self.status_command])

    def node_argv(self, host: str, index: int, program: Sequence[str]) -> list[str]:
        return pbsdsh_argv(index, program)

    def node_exit_status(self, output: str) -> Optional[int]:
        return task_exit_status(output)

    def resource_options(self, site, walltime: Optional[str], changes: dict) -> dict[str, str]:
        """``-l`` options: only what differs from the job script's own directives (its site's profile)."""
        if changes.get("ngpus") and not site.gpu_resource:
            raise UserError(f"--gpus: the {site.name} site profile defines no GPU resource")
        resources = {}
        if site is not SCRIPT_SITE or changes:
            resources = site.resource_list(dataclasses.replace(site.defaults, **changes))
        if walltime:
            resources["walltime"] = format_hms(parse_hms(walltime, "--walltime"))
        return resources

    def lint(self, argv: Sequence[str], options: Mapping[str, str], site, account: Optional[str],
             where: str, workdir: Path) -> list:
        """The script file and the request the server would queue (its directives under the command line)."""
        request = job_request(list(argv[1:]), os.environ, workdir)
        return lint_script(request.script) + lint_request(request, site, where=where)

    def dry_run_lines(self, argv: Sequence[str], workdir: Path) -> list[str]:
        request = job_request(list(argv[1:]), os.environ, workdir)
        return ["", display(argv), *request.directives(),
                *(f"#   {name}={decode_value(value)}" for name, value in request.variables.items())]

    def enter_job(self, environ: Mapping[str, str]) -> tuple[Scratch, dict[str, str]]:
        """MetaCentrum gives each job ``$SCRATCHDIR``; stock PBS has only the job's ``$TMPDIR``
        (``/var/tmp/pbs.<id>``, made on every node of the job); a TMPDIR that is not the job's own (a shared
        /tmp) gets a job folder inside it, so that cleaning up never touches anything but this job's files."""
        job_id, tmpdir = environ["PBS_JOBID"], environ.get("TMPDIR")
        scratch = None
        if environ.get(SITE_SCRATCH):
            scratch = Scratch(Path(environ[SITE_SCRATCH]))
        elif tmpdir and job_id in tmpdir:
            scratch = Scratch(Path(tmpdir))
        elif tmpdir and os.path.isdir(tmpdir):
            scratch = Scratch(Path(tempfile.mkdtemp(prefix=f"segtrain.{job_id}.", dir=tmpdir)), owned=True)
        if scratch is None or not scratch.usable():
            raise UserError("no writable scratch (SCRATCHDIR and TMPDIR unset or missing; ask for scratch_local)")
        return scratch, {}

    def describe_argv(self, environ: Mapping[str, str]) -> list[str]:
        return ["qstat", "-f", environ["PBS_JOBID"]]  # not available inside a container: the runner is outside

    def node_scratch(self, environ: Mapping[str, str], first: Path, rank: int) -> Optional[Scratch]:
        return other_node_scratch(environ, first, rank, job_makes_it=False)

    def next_job_environ(self, environ: Mapping[str, str], original: Mapping[str, str]) -> dict[str, str]:
        return dict(environ)  # qsub passes on only the -v variables


PBS = Pbs()
