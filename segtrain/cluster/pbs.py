"""PBS Pro / OpenPBS as a :class:`segtrain.cluster.scheduler.Scheduler`: the facts, from the modules that know them.

``qsub`` words and ``-v`` encoding: :mod:`.qsub`; the job's variables and ``qstat -f``:
:mod:`.job.environment`; ``qstat -x`` states: :mod:`.frontend.status`. PBS sends no warning
before the walltime (the job times itself); ``qdel`` and the walltime send SIGTERM to every
process of the job, SIGKILL ``kill_delay`` later.
"""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import Mapping, Optional, Sequence

from segtrain.cluster import qsub


class Pbs:
    name = "pbs"
    script = "jobs/train.pbs"
    predict_script = "jobs/predict.pbs"

    def job_environment(self, environ: Mapping[str, str]):
        from segtrain.cluster.job.environment import JobEnvironment

        return JobEnvironment.from_environ(environ)

    def submit_argv(self, script: str | Path, variables: Mapping[str, str], *, name: Optional[str] = None,
                    resources: Optional[Mapping[str, str]] = None, depend: Optional[str] = None,
                    queue: Optional[str] = None, array: Optional[str] = None) -> list[str]:
        extra = (["-q", queue] if queue else []) + (["-J", array] if array else [])
        return qsub.qsub_argv(script, variables, name=name, resources=resources, depend=depend, extra=extra)

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
        from segtrain.cluster.job.environment import job_walltime

        return job_walltime(info_text, job_id, scripts)

    def granted(self, info_text: Optional[str], job_id: str) -> dict[str, str]:
        from segtrain.cluster.job.environment import job_attributes

        attrs = job_attributes(info_text, job_id) if info_text else {}
        return {key: attrs[f"Resource_List.{key}"] for key in ("select", "place", "walltime")
                if f"Resource_List.{key}" in attrs}

    def queue_wait(self, info_text: Optional[str], job_id: str) -> Optional[float]:
        from segtrain.cluster.job.environment import job_queue_wait

        return job_queue_wait(info_text, job_id) if info_text else None

    def states(self, job_ids: Sequence[str], qstat: Optional[Sequence[str]] = None):
        from segtrain.cluster.frontend.status import qstat_states

        qstat = qstat or (["qstat"] if shutil.which("qstat") else None)
        return qstat_states(job_ids, qstat) if qstat else {}

    def node_argv(self, host: str, index: int, program: Sequence[str]) -> list[str]:
        from segtrain.cluster.job.nodes import pbsdsh_argv

        return pbsdsh_argv(index, program)

    def node_exit_status(self, output: str) -> Optional[int]:
        from segtrain.cluster.job.nodes import task_exit_status

        return task_exit_status(output)


PBS = Pbs()
