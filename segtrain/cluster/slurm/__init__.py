"""Slurm as a :class:`segtrain.cluster.scheduler.Scheduler` (IT4I Karolina, LUMI): its facts and commands.

- Submit: ``sbatch --parsable ... --export=ALL,NAME=value,... jobs/train.slurm``; it prints
  ``ID`` (or ``ID;cluster``). ``--export`` is split at commas, so values go encoded as for
  ``qsub -v`` (:func:`segtrain.cluster.variables.encode_value`). Every job variable is listed, empty
  ones too: with ``ALL`` a job also inherits its submitter's environment, and a job that
  resubmits itself must not hand on its own ``MANIFEST`` or ``RESUBMITS``.
- A job finds ``SLURM_JOB_ID``, ``SLURM_JOB_NAME``, ``SLURM_SUBMIT_DIR`` (it starts there),
  ``SLURM_JOB_PARTITION``, ``SLURM_CPUS_PER_TASK``/``SLURM_CPUS_ON_NODE``, ``SLURM_JOB_NODELIST``;
  in arrays (``--array=0-2``) ``SLURM_ARRAY_JOB_ID`` and ``SLURM_ARRAY_TASK_ID``, and a subjob is
  called ``ARRAYID_INDEX``. Slurm gives no scratch variable: scratch is site-specific
  (``/scratch/project/...`` on Karolina, ``/flash/...`` on LUMI) or the job's own folder in ``$TMPDIR``.
- The time limit is ``TimeLimit`` in ``scontrol show job``; ``--signal=B:USR1@SECONDS`` warns the
  job's shell that long before it (Slurm's resolution: up to a minute early or late); at the
  limit, and on ``scancel``, every process of the job gets SIGTERM and, ``KillWait`` later, SIGKILL.
- Dependencies: ``--dependency=afterany:ID`` (also on a subjob ``ID_INDEX``).
- Several nodes: the job script runs on the first node of ``$SLURM_JOB_NODELIST`` (``scontrol show
  hostnames`` lists them, one a line: jobs/train.slurm writes that list to ``$SEGTRAIN_NODEFILE``);
  ``srun --nodes=1 --ntasks=1 --nodelist=HOST --overlap`` runs a task on another node as a step of
  the job, in the job's environment (``--export=ALL``), which Slurm signals at the limit and on
  ``scancel`` and kills when the job ends. srun does not take the job's ``--cpus-per-task`` (22.05):
  the job script passes it on as ``SRUN_CPUS_PER_TASK``; ``--mem=0`` gives the step the job's memory
  on its node. srun exits with its task's status but says nothing when it is 0, so the node's script
  prints its own last line, ``node.sh: exit status N``.
- Where jobs stand: ``squeue`` while queued or running; after that ``sacct`` where accounting is
  kept, else ``scontrol show job`` for as long as the controller remembers (``MinJobAge``).
"""
from __future__ import annotations

import dataclasses
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
from datetime import datetime
from pathlib import Path
from typing import Mapping, Optional, Sequence

from segtrain.cluster import variables as job_vars
from segtrain.cluster.frontend.lint import ERROR, Finding, check_walltime, number
from segtrain.cluster.scheduler import JobEnvironment, JobState, read_directives, run_submit
from segtrain.cluster.scratch import Scratch, other_node_scratch
from segtrain.cluster.site import Site
from segtrain.cluster.variables import decode_value, display
from segtrain.cluster.walltime import format_hms, parse_hms
from segtrain.errors import UserError

QUERY_TIMEOUT_S = 60
_TIME = re.compile(r"^\s*(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?\s*$")
_PAIR = re.compile(r"(\S+?)=(\S*)")
_NODE_EXIT = re.compile(r"^node\.sh: exit status (\d+)\s*$", re.MULTILINE)  # jobs/node.sh's last line
NODEFILE = "SEGTRAIN_NODEFILE"  # the job's nodes, one a line, written by jobs/train.slurm
# Slurm's job states, as the letters PBS uses for them (what the status table understands)
_QUEUED = {"PENDING", "CONFIGURING", "REQUEUED", "REQUEUE_FED", "REQUEUE_HOLD", "RESV_DEL_HOLD", "SUSPENDED",
           "STOPPED", "RESIZING", "SIGNALING", "STAGE_OUT"}
_RUNNING = {"RUNNING", "COMPLETING"}


def parse_time(text: str, what: str = "--time") -> Optional[float]:
    """Seconds in a Slurm time: ``M``, ``M:S``, ``H:M:S``, ``D-H``, ``D-H:M``, ``D-H:M:S`` (None: UNLIMITED)."""
    if text.strip().upper() in ("UNLIMITED", "INFINITE", "PARTITION_LIMIT", "NONE"):
        return None
    match = _TIME.match(text)
    if not match:
        raise UserError(f"{what}: {text!r} is not a Slurm time (expected minutes, HH:MM:SS or D-HH:MM:SS)")
    days, a, b, c = (int(v) if v is not None else None for v in match.groups())
    if days is None:  # M, M:S or H:M:S
        hours, minutes, seconds = (a, b, c) if c is not None else (0, a, b or 0)
    else:  # D-H, D-H:M, D-H:M:S
        hours, minutes, seconds = a, b or 0, c or 0
    return float((days or 0) * 86400 + hours * 3600 + minutes * 60 + seconds)


def parse_show_job(text: str) -> dict[str, dict[str, str]]:
    """``scontrol show job`` output as {job id: {key: value}}; an array task's id is ``ARRAYID_INDEX``."""
    jobs = {}
    for block in re.split(r"\n\s*\n", text.strip()):
        fields = dict(_PAIR.findall(block))
        if "JobId" not in fields:
            continue
        job_id = fields["JobId"]
        if fields.get("ArrayJobId") and fields.get("ArrayTaskId", "").isdigit():
            job_id = f"{fields['ArrayJobId']}_{fields['ArrayTaskId']}"
        jobs[job_id] = fields
    return jobs


def job_fields(info_text: Optional[str], job_id: str) -> dict[str, str]:
    jobs = parse_show_job(info_text or "")
    if job_id in jobs:
        return jobs[job_id]
    return next(iter(jobs.values())) if len(jobs) == 1 else {}


def _exit_status(text: str) -> Optional[int]:
    """``ExitCode=rc:signal`` as one number: rc, or 256 + signal when a signal ended it (as PBS counts)."""
    code, _, sig = text.partition(":")
    if not code.isdigit():
        return None
    return 256 + int(sig) if sig.isdigit() and int(sig) else int(code)


def _letter(state: str) -> str:
    state = state.split()[0].rstrip("+") if state.strip() else "?"
    if state in _QUEUED:
        return "Q"
    if state in _RUNNING:
        return "R"
    return "F"  # COMPLETED, FAILED, CANCELLED, TIMEOUT, NODE_FAIL, OUT_OF_MEMORY, PREEMPTED, ...


def _run(argv: Sequence[str]) -> Optional[subprocess.CompletedProcess]:
    try:
        return subprocess.run(list(argv), capture_output=True, text=True, timeout=QUERY_TIMEOUT_S,
                              stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired):
        return None


class Slurm:
    name = "slurm"
    title = "Slurm"
    script = "jobs/train.slurm"
    predict_script = "jobs/predict.slurm"
    submit_command = "sbatch"
    status_command = "squeue"
    array_variable = "SLURM_ARRAY_TASK_ID"
    default_site = "slurm"
    takes_account = True
    takes_nodes = True
    time_limit_warning = signal.SIGUSR1  # --signal=B:USR1@SECONDS (jobs/train.slurm): to the job's shell, passed on

    def in_job(self, environ: Mapping[str, str]) -> bool:
        return bool(environ.get("SLURM_JOB_ID"))

    def job_environment(self, environ: Mapping[str, str]) -> JobEnvironment:
        def integer(name: str) -> Optional[int]:
            value = environ.get(name, "").strip()
            return int(value) if value.isdigit() else None

        array_id, index = environ.get("SLURM_ARRAY_JOB_ID") or None, integer("SLURM_ARRAY_TASK_ID")
        job_id = f"{array_id}_{index}" if array_id and index is not None else environ.get("SLURM_JOB_ID") or None
        return JobEnvironment(
            job_id=job_id, job_name=environ.get("SLURM_JOB_NAME") or None, array_index=index,
            workdir=Path(environ["SLURM_SUBMIT_DIR"]) if environ.get("SLURM_SUBMIT_DIR") else None,
            nodefile=Path(environ[NODEFILE]) if environ.get(NODEFILE) else None)

    def submit_argv(self, script: str | Path, variables: Mapping[str, str], *, name: Optional[str] = None,
                    resources: Optional[Mapping[str, str]] = None, depend: Optional[str] = None,
                    queue: Optional[str] = None, array: Optional[str] = None) -> list[str]:
        argv = ["sbatch", "--parsable"]
        if name:
            argv.append(f"--job-name={name}")
        argv += [f"--{key}={value}" for key, value in (resources or {}).items()]
        if queue:
            argv.append(f"--partition={queue}")
        if array:
            argv.append(f"--array={array}")
        if depend:
            argv.append(f"--dependency={depend}")
        return argv + [f"--export={export_list(variables)}", str(script)]

    def require_job(self, environ: Mapping[str, str]) -> JobEnvironment:
        env = self.job_environment(environ)
        if not env.job_id or env.workdir is None:
            raise UserError("not inside a Slurm job (SLURM_JOB_ID or SLURM_SUBMIT_DIR unset): submit with "
                            "scripts/submit CONFIG --scheduler slurm")
        return env

    def submit(self, argv: Sequence[str]) -> str:
        return self.job_id(run_submit(argv, "a Slurm login node"))

    def job_id(self, submit_output: str) -> str:
        lines = submit_output.strip().splitlines()
        job_id = lines[-1].split(";", 1)[0].strip() if lines else ""
        if not job_id.isdigit():
            raise UserError(f"sbatch answered {submit_output.strip()!r} (expected a job id)")
        return job_id

    def subjob_id(self, array_id: str, index: int) -> str:
        return f"{array_id}_{index}"

    def after(self, job_id: str) -> Optional[str]:
        return f"afterany:{job_id}"

    def manual(self, run_dir: str) -> str:
        return f"sbatch --export=ALL,RUN={run_dir} {self.script}"

    def walltime(self, info_text: Optional[str], job_id: str, scripts: Sequence[Path]) -> tuple[Optional[float], str]:
        limit = job_fields(info_text, job_id).get("TimeLimit")
        if limit:
            return parse_time(limit, "scontrol show job: TimeLimit"), "scontrol show job"
        for script in scripts:
            if script.is_file():
                value = script_options(script).get("time")
                if value:
                    return parse_time(value, f"{script}: --time directive"), f"the directive in {script}"
        return None, "nowhere (no scontrol answer, no --time directive)"

    def granted(self, info_text: Optional[str], job_id: str) -> dict[str, str]:
        fields = job_fields(info_text, job_id)
        out = {}
        limit = parse_time(fields["TimeLimit"]) if fields.get("TimeLimit") else None
        if limit is not None:
            out["time"] = format_hms(limit)  # sbatch takes hours above 24
        for key, option in (("Partition", "partition"), ("Account", "account"), ("QOS", "qos")):
            if fields.get(key) and fields[key] not in ("(null)", "normal" if key == "QOS" else ""):
                out[option] = fields[key]
        if fields.get("NumNodes", "").split("-")[0].isdigit():
            out["nodes"] = fields["NumNodes"].split("-")[0]
        if fields.get("CPUs/Task", "").isdigit():
            out["cpus-per-task"] = fields["CPUs/Task"]
        for key, option in (("MinMemoryNode", "mem"), ("MinMemoryCPU", "mem-per-cpu")):
            if fields.get(key) and fields[key] not in ("0", "0M"):
                out[option] = fields[key]
        gpus = re.match(r"gres[:/]gpu:(\d+)$", fields.get("TresPerNode", ""))  # gres:gpu:2 (22.05), gres/gpu:2
        if gpus:
            out["gpus-per-node"] = gpus.group(1)
        return out

    def select(self, granted: Mapping[str, str], scripts: Sequence[Path]) -> Optional[str]:
        return None  # nodes and GPUs per node, not chunks

    def restarted(self, info_text: Optional[str], job_id: str) -> bool:
        """A requeue keeps the id and counts nothing: the run's own record tells."""
        return True

    def queue_wait(self, info_text: Optional[str], job_id: str) -> Optional[float]:
        fields = job_fields(info_text, job_id)
        try:
            queued, started = (datetime.fromisoformat(fields[key]).timestamp() for key in ("SubmitTime", "StartTime"))
        except (KeyError, ValueError):
            return None
        return max(started - queued, 0.0)

    def states(self, job_ids: Sequence[str]) -> dict[str, JobState]:
        """squeue for queued and running jobs; sacct, else scontrol, for ended ones."""
        if not job_ids or not shutil.which("squeue"):
            return {}
        states: dict[str, JobState] = {}
        out = _run(["squeue", "-h", "-r", "-o", "%i|%T"])
        for line in (out.stdout if out and out.returncode == 0 else "").splitlines():
            job_id, _, state = line.partition("|")
            if job_id in job_ids:
                states[job_id] = JobState(_letter(state), None)
        rest = [job_id for job_id in job_ids if job_id not in states]
        if rest:
            out = _run(["sacct", "-n", "-P", "-X", "-o", "JobID,State,ExitCode", "-j", ",".join(rest)])
            states.update(sacct_states(out.stdout if out and out.returncode == 0 else "", rest))
        for job_id in [job_id for job_id in rest if job_id not in states]:
            out = _run(["scontrol", "show", "job", job_id])
            fields = job_fields(out.stdout if out and out.returncode == 0 else "", job_id)
            if fields.get("JobState"):
                states[job_id] = JobState(_letter(fields["JobState"]), _exit_status(fields.get("ExitCode", "")))
        return states

    def node_argv(self, host: str, index: int, program: Sequence[str]) -> list[str]:
        return ["srun", "--nodes=1", "--ntasks=1", f"--nodelist={host}", "--overlap", "--mem=0",
                "--kill-on-bad-exit=0", "--", *program]

    def node_exit_status(self, output: str) -> Optional[int]:
        found = _NODE_EXIT.findall(output)
        return int(found[-1]) if found else None

    def resource_options(self, site: Site, walltime: Optional[str], changes: dict) -> dict[str, str]:
        """sbatch options: the site profile's requests and partition (the generic profile: only the changes)."""
        if walltime:
            changes["walltime"] = format_hms(parse_hms(walltime, "--walltime"))
        changes.pop("scratch", None), changes.pop("gpu_mem", None)  # Slurm sites reserve neither
        res = dataclasses.replace(site.defaults, **changes)
        options = site.sbatch_options(res, only=None if site.queues else set(changes))
        queue = site.route(parse_hms(res.walltime, "walltime"), res.ngpus) if site.queues else None
        return {**options, **({"partition": queue.name} if queue else {})}

    def lint(self, argv: Sequence[str], options: Mapping[str, str], site: Site, account: Optional[str],
             where: str, workdir: Path) -> list[Finding]:
        return lint_sbatch(dict(options), site, account, where=where)

    def dry_run_lines(self, argv: Sequence[str], workdir: Path) -> list[str]:
        """The command and the job's variables, from ``--export=ALL,NAME=value,...``."""
        exported = [item.partition("=") for item in argv[-2].removeprefix("--export=").split(",")[1:]]
        return ["", display(argv), *(f"#   {name}={decode_value(value)}" for name, _, value in exported if value)]

    def enter_job(self, environ: Mapping[str, str]) -> tuple[Scratch, dict[str, str]]:
        """Slurm makes no scratch: the job makes its own folder in SCRATCH_BASE (the site's scratch), else in
        TMPDIR or /tmp, on every node, and removes it. In it go the job's nodes, one a line, the first (this
        one) first: node rank 0, host of the rendezvous."""
        job_id, scratch = self.job_environment(environ).job_id, None
        for base in (environ.get(job_vars.SCRATCH_BASE), environ.get("TMPDIR"), "/tmp"):
            if base and os.path.isdir(base) and os.access(base, os.W_OK):
                scratch = Scratch(Path(tempfile.mkdtemp(prefix=f"segtrain.{job_id}.", dir=base)), owned=True)
                break
        if scratch is None:
            raise UserError("no writable scratch (SCRATCH_BASE, TMPDIR and /tmp not writable)")
        nodelist = environ.get("SLURM_JOB_NODELIST") or socket.gethostname().split(".")[0]
        hosts = _run(["scontrol", "show", "hostnames", nodelist])
        if hosts is None or hosts.returncode != 0:
            raise UserError(f"cannot list the job's nodes (scontrol show hostnames {nodelist})")
        nodefile = scratch.path / ".segtrain-nodes"
        nodefile.write_text(hosts.stdout)
        cpus = environ.get("SLURM_CPUS_PER_TASK", "")
        variables = {NODEFILE: str(nodefile),  # as PBS sets OMP_NUM_THREADS from ncpus
                     "OMP_NUM_THREADS": cpus or environ.get("OMP_NUM_THREADS") or environ.get("SLURM_CPUS_ON_NODE", "1")}
        if cpus:  # srun (the other nodes' steps) does not take the job's --cpus-per-task from its environment since 22.05
            variables["SRUN_CPUS_PER_TASK"] = cpus
        return scratch, variables

    def describe_argv(self, environ: Mapping[str, str]) -> list[str]:
        return ["scontrol", "show", "job", environ["SLURM_JOB_ID"]]

    def node_scratch(self, environ: Mapping[str, str], first: Path, rank: int) -> Optional[Scratch]:
        return other_node_scratch(environ, first, rank, job_makes_it=True)

    def next_job_environ(self, environ: Mapping[str, str], original: Mapping[str, str]) -> dict[str, str]:
        """Not this job's array variables, node list or scratch TMPDIR: sbatch would take them for the new job's."""
        drop = {"SLURM_ARRAY_JOB_ID", "SLURM_ARRAY_TASK_ID", "SLURM_ARRAY_TASK_COUNT", "SLURM_ARRAY_TASK_MIN",
                "SLURM_ARRAY_TASK_MAX", "SLURM_ARRAY_TASK_STEP", NODEFILE, "SRUN_CPUS_PER_TASK", "TMPDIR"}
        env = {name: value for name, value in environ.items() if name not in drop}
        if original.get("TMPDIR"):
            env["TMPDIR"] = original["TMPDIR"]
        return env


def sacct_states(text: str, job_ids: Sequence[str]):
    """``sacct -n -P -X -o JobID,State,ExitCode`` lines (``12_2|CANCELLED by 0|0:15``) of ``job_ids``, as JobStates.

    A job requeued or resubmitted under the same id has a line per run: the last one is its state now.
    """
    states = {}
    for line in text.splitlines():
        job_id, state, code = (line.split("|") + ["", ""])[:3]
        if job_id in job_ids:
            states[job_id] = JobState(_letter(state), _exit_status(code))
    return states


def export_list(variables: Mapping[str, str]) -> str:
    """``--export``'s value: ``ALL`` and every job variable, encoded, empty ones included (they clear)."""
    for name in variables:
        if not name.isidentifier():
            raise UserError(f"job variable {name!r}: not a valid variable name")
    listed = {name: "" for name in job_vars.JOB_VARIABLES if name != job_vars.ENV_VARIABLE}
    listed.update({name: str(value) for name, value in variables.items() if value != "" or name in listed})
    return ",".join(["ALL"] + [f"{name}={job_vars.encode_value(value)}" for name, value in listed.items()])


def script_options(script: str | Path) -> dict[str, str]:
    """A script's ``#SBATCH --key=value`` (and ``--key value``) directives, by long option name."""
    words, options, i = read_directives(script, prefix="#SBATCH"), {}, 0
    while i < len(words):
        word = words[i]
        if word.startswith("--"):
            key, sep, value = word[2:].partition("=")
            if not sep and i + 1 < len(words) and not words[i + 1].startswith("-"):
                i += 1
                value = words[i]
            options[key] = value
        i += 1
    return options


def lint_sbatch(options: dict[str, str], site: Site, account: Optional[str], where: str = "sbatch") -> list[Finding]:
    """Problems of a Slurm submission against the site's profile: no account, too many GPUs, too long."""
    findings: list[Finding] = []
    if site.account_required and not account:
        findings.append(Finding(ERROR, f"{where}: --account", f"{site.name} accepts no job without a project "
                                "account: give --account (sbatch -A)"))
    gpus = number(options.get("gpus-per-node", ""))
    if site.gpus_per_node is not None and gpus > site.gpus_per_node:
        findings.append(Finding(ERROR, f"{where}: GPUs", f"{gpus} GPUs on one node, but no {site.name} node has "
                                f"more than {site.gpus_per_node}"))
    if options.get("time"):
        findings += check_walltime(parse_hms(options["time"], f"{where}: --time"), max(gpus, 1),
                                    options.get("partition"), site, where)
    return findings


SLURM = Slurm()
