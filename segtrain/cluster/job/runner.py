"""The one runner inside a job: ``python -m segtrain.cluster.job.runner train|predict|node``.

The job scripts (jobs/*.pbs, jobs/*.slurm, through ``run_job`` in jobs/common.sh) start it as a child of the
job's top shell: on ``qdel`` PBS kills that shell at once, while this process gets SIGTERM and runs its stop
path. It runs outside any container, on the standard library alone, because the scheduler's commands (qstat,
qsub, pbsdsh; scontrol, sbatch, srun) are the host's; the work that needs the software environment (config,
data set, torch) runs in it (:mod:`.software`) as the steps of :mod:`.steps` and :mod:`.predict_steps`, and as
the trainer. A signal is noted when it comes and acted upon between steps: the scheduler signals every process
of the job, so the step or trainer running stops by itself.

A training job (``train``), the map of jobs/train.pbs:
  1 plan     variables, config, data set and run checked before anything is copied; the run directory made
             on storage (or the one to continue found), run.json with this job
  2 stage    data set (and a run being continued) to scratch in one verified stream; each other node stages
             its own copy (jobs/node.sh stage, through pbsdsh or srun)
  3 train    the trainer here (one process per GPU) and on the other nodes, with a time limit from the
             walltime; checkpoints mirrored to storage; the scheduler asked again every WALLTIME_POLL seconds,
             so a qextend moves the limit; Slurm's warning before its limit stops the trainer with a checkpoint
  4 finish   on any exit (done, failure, SIGTERM from walltime or qdel): the run copied back and verified, the
             next job submitted when the chain goes on (a time-limit stop, or a walltime kill)
  5 scratch  emptied after a verified copy-back (kept, and said where, when the copy failed)
After SIGTERM, PBS sends SIGKILL 10 s later: 4 and 5 are built to end well inside that.

A prediction job (``predict``): the subjob's scenes (:func:`.predict_steps.run_shard`), the next job when it
stopped with scenes left before its walltime, scratch emptied. Another node of a training job (``node``, from
jobs/node.sh): stage its own copy, train as node rank RANK, or empty its scratch.
"""
from __future__ import annotations

import argparse
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Optional, Sequence

from segtrain.cluster import variables
from segtrain.cluster.job.plan import Plan
from segtrain.cluster.job.software import python_command
from segtrain.cluster.scheduler import run_submit
from segtrain.cluster.schedulers import current_job_scheduler, scheduler_named
from segtrain.cluster.scratch import JOB_FOLDER, NODE_FOLDER, Scratch, empty
from segtrain.errors import EXIT_FAILED, EXIT_NO_RESUBMIT, EXIT_OK, EXIT_RESUMABLE, EXIT_USER_ERROR, UserError

STEPS, PREDICT_STEPS = "segtrain.cluster.job.steps", "segtrain.cluster.job.predict_steps"
EXIT_TERMINATED = 128 + signal.SIGTERM  # as a shell reports a process ended by SIGTERM
# A submission from inside the job is bounded by the smallest margin the job keeps at the end of its walltime
# (1 minute): qsub may wait for a password without a Kerberos ticket.
SUBMIT_TIMEOUT_S = 60
DESCRIBE_TIMEOUT_S = 60
DEFAULT_WALLTIME_POLL_S = 600
NODE_GRACE_S = 60  # how long the other nodes may take to follow rank 0 out, and to empty their scratch
NEXT_JOB = "submit.args"  # in the job folder: the next job's submit words, NUL-separated, when one is due
RESUBMITTED, NONE_DUE, SUBMIT_FAILED = 0, 1, 2


def say(message: str, who: str = "") -> None:
    """One line of the job's output, written straight to the file: a signal handler says what it got, and a
    buffered print interrupted by another would fail (``reentrant call``) in the middle of the stop path."""
    os.write(sys.stdout.fileno(), f"[{time.strftime('%F %T')}] {who}{message}\n".encode())


def exit_status(returncode: int) -> int:
    """A child's exit status as a shell reports it (128 + N: ended by signal N)."""
    return 128 - returncode if returncode < 0 else returncode


def nul_words(data: bytes) -> list[str]:
    return [word.decode() for word in data.split(b"\0")[:-1]]


def run_python(python: Sequence[str], *words: str, capture: bool = False) -> tuple[int, bytes]:
    """The environment's python with ``words``: its exit status, and what it printed when ``capture``."""
    proc = subprocess.Popen([*python, *words], stdout=subprocess.PIPE if capture else None)
    out, _ = proc.communicate()
    return exit_status(proc.returncode), out or b""


def enter_scratch(scratch: Scratch, folder_name: str) -> Path:
    """The job's folder ``folder_name`` in a node's scratch, and TMPDIR there (a node's /tmp is small)."""
    folder = scratch.path / folder_name
    try:
        folder.mkdir(parents=True, exist_ok=True)
        (scratch.path / "tmp").mkdir(exist_ok=True)
    except OSError:
        raise UserError(f"cannot write to scratch {scratch.path}") from None
    os.environ["TMPDIR"] = str(scratch.path / "tmp")
    return folder


def use_environment(env_dir: Path, workdir: Path, scratch: Scratch) -> list[str]:
    """The software environment's python for this node's steps; its variables set for every child."""
    python, software_variables = python_command(env_dir, workdir, [scratch.path], os.environ)
    os.environ.update(software_variables)
    return python


class Job:
    """The running job on its first node: its scheduler, scratch, software, the signals it got, its children."""

    def __init__(self, env_dir: Path, job_start: float, stop_message: str):
        self.original = dict(os.environ)  # as the job started: what the next job's submission keeps
        self.scheduler = current_job_scheduler(os.environ)
        self.id = self.scheduler.require_job(os.environ).job_id
        self.name = self.scheduler.job_environment(os.environ).job_name or ""
        self.workdir, self.env_dir, self.start = Path.cwd(), env_dir, job_start
        self.scratch: Optional[Scratch] = None
        self.folder = Path()  # the job's own folder in scratch: plan and exchange files
        self.python: list[str] = []  # the software environment's python, once set up
        self.terminated_at: Optional[float] = None  # when SIGTERM (walltime, qdel, scancel) came
        self.stop_message = stop_message

    def enter(self) -> None:
        """The job's scratch (its scheduler's choice) and its folder there."""
        self.scratch, job_variables = self.scheduler.enter_job(os.environ)
        os.environ.update(job_variables)
        self.folder = enter_scratch(self.scratch, JOB_FOLDER)

    def listen(self, on_warning: Optional[Callable[[], None]] = None) -> None:
        signal.signal(signal.SIGTERM, self._on_term)
        signal.signal(signal.SIGINT, self._on_term)
        warning = self.scheduler.time_limit_warning
        if warning is not None and on_warning is not None:
            signal.signal(warning, lambda signum, frame: on_warning())

    def _on_term(self, signum: int, frame: object) -> None:
        self.terminated_at = self.terminated_at or time.time()
        say(self.stop_message)

    def deaf(self) -> None:
        """From here on a second signal must not cut the copy-back short (the steps started now inherit this)."""
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)

    def use_environment(self) -> None:
        self.python = use_environment(self.env_dir, self.workdir, self.scratch)

    def describe(self, path: Path) -> bool:
        """The scheduler's description of this job (walltime, resources) into ``path``; False: no answer."""
        try:
            with open(path, "wb") as out:
                return subprocess.run(self.scheduler.describe_argv(os.environ), stdout=out, stderr=subprocess.STDOUT,
                                      stdin=subprocess.DEVNULL, timeout=DESCRIBE_TIMEOUT_S).returncode == 0
        except (OSError, subprocess.TimeoutExpired):
            return False

    @property
    def info(self) -> Path:
        """The scheduler's latest description of the job, which the steps read."""
        return self.folder / "job-info.txt"

    def describe_at_start(self) -> None:
        if not self.describe(self.info):
            say("warning: the scheduler did not describe the job; the walltime comes from the job script's directive")

    def step(self, module: str, *args: str) -> int:
        return run_python(self.python, "-m", module, *args)[0]

    def resubmit(self, *record: str) -> int:
        """The one "next job due" protocol of training and prediction jobs: their step wrote the next job's submit
        words to :data:`NEXT_JOB` when one is due; submit it (on the host, no stdin, a timeout) and record the new
        id with the step ``record`` (its words, then the id). RESUBMITTED, NONE_DUE or SUBMIT_FAILED."""
        path = self.folder / NEXT_JOB
        if not path.is_file() or path.stat().st_size == 0:
            return NONE_DUE
        words = nul_words(path.read_bytes())
        try:
            new_id = run_submit(words, "the frontend", SUBMIT_TIMEOUT_S,
                                env=self.scheduler.next_job_environ(os.environ, self.original))
        except UserError as exc:
            say(f"error: resubmission failed ({exc}); continue by hand with the command above")
            return SUBMIT_FAILED
        say(f"resubmitted as {new_id}")
        if self.step(*record, new_id) != EXIT_OK:
            say(f"warning: could not record {new_id}")
        return RESUBMITTED

    def clean(self) -> bool:
        return self.scratch is not None and empty(self.scratch, os.environ)


class OtherNodes:
    """The processes (pbsdsh, srun) running jobs/node.sh MODE on the job's other nodes, from the commands the
    ``node-args`` step wrote (``node-RANK.MODE.args``); each one's report goes to ``node-RANK.MODE.out``."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.running: list[subprocess.Popen] = []

    def start(self, mode: str) -> None:
        for args in sorted(self.folder.glob(f"node-*.{mode}.args")):
            with open(args.with_suffix(".out"), "wb") as out:
                self.running.append(subprocess.Popen(nul_words(args.read_bytes()), stdout=out,
                                                     stdin=subprocess.DEVNULL))

    def has(self, mode: str, kind: str = "args") -> bool:
        return any(self.folder.glob(f"node-*.{mode}.{kind}"))

    def wait(self, grace_s: Optional[float] = None, interrupted: Callable[[], bool] = lambda: False) -> None:
        """Until each has ended (``grace_s`` at most, then :meth:`stop`); back early, leaving them, when ``interrupted()``."""
        deadline = None if grace_s is None else time.monotonic() + grace_s
        while any(proc.poll() is None for proc in self.running):
            if interrupted():
                return
            if deadline is not None and time.monotonic() >= deadline:
                break
            time.sleep(0.2)
        self.stop()

    def stop(self) -> None:
        """SIGTERM to each still running (pbsdsh and srun pass it on to their task), then reap them."""
        for proc in self.running:
            if proc.poll() is None:
                proc.terminate()
        for proc in self.running:
            proc.wait()
        self.running = []


# ---- a training job -------------------------------------------------------------------------------------------
class TrainingJob:
    def __init__(self, job: Job, script: str):
        self.job, self.script = job, script
        self.plan = job.folder / "plan.json"
        self.nodes = OtherNodes(job.folder)
        self.trainer: Optional[subprocess.Popen] = None
        self.trainer_exit: Optional[int] = None  # None: the trainer never ran

    def run(self) -> int:
        self.job.listen(on_warning=self.on_warning)
        try:
            rc = self.body()
        except UserError as exc:
            say(f"error: {exc}")
            rc = EXIT_USER_ERROR
        return self.finish(rc)

    def on_warning(self) -> None:
        """The time limit is near (Slurm): the trainer stops with a checkpoint as at its own time limit (torch's
        launcher passes SIGTERM on to every rank) and the job resubmits itself; a later SIGTERM is the limit."""
        say("USR1: the time limit is near; stopping with a checkpoint, to be continued by the next job")
        if self.trainer is not None and self.trainer.poll() is None:
            self.trainer.send_signal(signal.SIGTERM)

    def stopped(self) -> bool:
        return self.job.terminated_at is not None

    def body(self) -> int:
        job, plan = self.job, str(self.plan)
        job.use_environment()
        say(f"job {job.id} ({job.name}) on {socket.gethostname()}: scratch {job.scratch.path}, environment "
            f"{job.env_dir}, umask {current_umask():04o}")
        # 1. checks, before anything is copied; the walltime from the scheduler
        job.describe_at_start()
        for step in (("plan", plan, "--scratch", str(job.scratch.path), "--script", self.script,
                      "--job-start", f"{job.start:.6f}", "--job-info", str(self.job.info)),
                     ("node-args", plan, "stage", "train", "clean", "--env-dir", str(job.env_dir),
                      "--out", str(job.folder))):
            rc = job.step(STEPS, *step)
            if rc or self.stopped():
                return rc or EXIT_TERMINATED
        # 2. data set (and a continued run) to scratch, verified; each other node stages its own copy
        self.nodes.start("stage")
        rc = job.step(STEPS, "stage", plan)
        if rc or self.stopped():
            return rc or EXIT_TERMINATED
        self.nodes.wait(interrupted=self.stopped)
        if self.stopped():
            return EXIT_TERMINATED
        rc = self.nodes_report("stage")
        if rc:
            return rc
        # 3. train here and on the other nodes (they meet rank 0's rendezvous)
        rc, words = run_python(job.python, "-m", STEPS, "train-args", plan, capture=True)
        if rc or self.stopped():
            return rc or EXIT_TERMINATED
        self.trainer = subprocess.Popen([*job.python, "-m", "segtrain", *nul_words(words)])
        self.nodes.start("train")
        self.trainer_exit = self.watch(self.trainer)
        self.trainer = None
        if not self.stopped():  # after SIGTERM the copy-back comes first
            self.nodes.wait(NODE_GRACE_S, interrupted=self.stopped)
            if self.stopped():
                return EXIT_TERMINATED
            self.nodes_report("train")
        return self.trainer_exit

    def watch(self, trainer: subprocess.Popen) -> int:
        """Wait for the trainer, asking the scheduler again every WALLTIME_POLL seconds: a walltime raised by
        ``qextend`` moves the trainer's deadline (the ``deadline`` step)."""
        poll_s = float(os.environ.get(variables.WALLTIME_POLL) or DEFAULT_WALLTIME_POLL_S)
        while True:
            try:
                return exit_status(trainer.wait(timeout=poll_s))
            except subprocess.TimeoutExpired:
                fresh = self.job.folder / "job-info.new"
                if self.job.describe(fresh):
                    os.replace(fresh, self.job.info)
                    self.job.step(STEPS, "deadline", str(self.plan), "--job-info", str(self.job.info))

    def nodes_report(self, mode: str) -> int:
        """How jobs/node.sh MODE ended on each other node (1: on one it failed)."""
        if not self.nodes.has(mode, "out"):
            return EXIT_OK
        return self.job.step(STEPS, "node-status", str(self.plan), mode, "--dir", str(self.job.folder))

    def finish(self, rc: int) -> int:
        """4 and 5, on every exit of the body: the copy-back, the next job, the other nodes, scratch."""
        job = self.job
        job.deaf()
        copied = True
        if self.plan.is_file() and job.python:
            how = (["--trainer-exit", str(self.trainer_exit)] if self.trainer_exit is not None else []) + \
                  (["--terminated-at", f"{job.terminated_at:.6f}"] if job.terminated_at else [])
            code = job.step(STEPS, "finish", str(self.plan), *how, "--job-info", str(self.job.info),
                            "--next", str(job.folder / NEXT_JOB))
            copied = code in (EXIT_OK, EXIT_NO_RESUBMIT)
            if copied:
                resubmitted = job.resubmit(STEPS, "record", str(self.plan))
                if resubmitted == RESUBMITTED:
                    rc = EXIT_RESUMABLE  # to be continued by the next job
                elif resubmitted == SUBMIT_FAILED and rc == EXIT_RESUMABLE:
                    rc = EXIT_FAILED
        self.nodes.stop()
        # The other nodes' scratch holds copies only: emptied whatever happened here (jobs/node.sh empties it when
        # its trainer ends; this also covers a job that ended before or while starting them).
        if self.nodes.has("clean"):
            self.nodes.start("clean")
            self.nodes.wait(NODE_GRACE_S)
        if not copied:
            say(f"error: copy-back failed; everything is kept in scratch {job.scratch.path} on {socket.gethostname()}")
            rc = rc or EXIT_FAILED
            say(f"end of job {job.id}: exit {rc}; scratch kept")
        elif job.clean():
            say(f"end of job {job.id}: exit {rc}; scratch emptied")
        else:
            say(f"end of job {job.id}: exit {rc}; warning: could not clean scratch {job.scratch.path}")
        return rc


def current_umask() -> int:
    mask = os.umask(0)  # the only way to read it is to set it
    os.umask(mask)
    return mask


def set_umask(text: str) -> None:
    """UMASK (qsub -v UMASK=077, scripts/submit --umask 077): everything this job and the jobs it resubmits write
    is private. ``qsub -W umask=077`` cannot do that on PBS: the script's ``#PBS -W umask=022`` wins."""
    if not re.fullmatch(r"[0-7]{3,4}", text):
        raise UserError(f"{variables.UMASK}={text}: expected an octal umask such as 077")
    os.umask(int(text, 8))


def train(args: argparse.Namespace) -> int:
    job = Job(args.env_dir, args.job_start,
              "SIGTERM: stopping (walltime, qdel/scancel or node shutdown); results will be copied back")
    if os.environ.get(variables.UMASK):
        set_umask(os.environ[variables.UMASK])
    job.enter()
    return TrainingJob(job, args.script).run()


# ---- a prediction job -----------------------------------------------------------------------------------------
def predict(args: argparse.Namespace) -> int:
    """The subjob's scenes; finished scenes are on storage already and scratch holds copies only, so it is
    emptied on every way the job ends, after a qdel or scancel too."""
    job = Job(args.env_dir, args.job_start,
              "SIGTERM (walltime, qdel, scancel or node shutdown): the scene in progress is abandoned")
    job.enter()
    job.listen()
    try:
        job.use_environment()
        say(f"job {job.id} ({job.name}) on {socket.gethostname()}: scratch {job.scratch.path}, environment "
            f"{job.env_dir}")
        job.describe_at_start()
        rc = EXIT_TERMINATED if job.terminated_at else job.step(
            PREDICT_STEPS, "run", "--scratch", str(job.scratch.path), "--job-start", f"{job.start:.6f}",
            "--job-info", str(job.info), "--resubmit", str(job.folder / NEXT_JOB))
    except UserError as exc:
        say(f"error: {exc}")
        rc = EXIT_USER_ERROR
    job.deaf()
    if rc == EXIT_RESUMABLE and job.terminated_at is None:  # stopped before the walltime with scenes left
        if job.resubmit(PREDICT_STEPS, "record") == SUBMIT_FAILED:
            rc = EXIT_FAILED
    if not job.clean():
        say(f"warning: could not clean scratch {job.scratch.path}")
    return rc


# ---- another node of a training job ---------------------------------------------------------------------------
def node(args: argparse.Namespace) -> int:
    """jobs/node.sh MODE on the job's node RANK: its last line, ``node.sh: exit status N``, tells the first node
    how it ended where the launcher does not report it (srun says nothing of a 0)."""
    who = f"node {args.rank} ({socket.gethostname()}): "
    rc = EXIT_USER_ERROR
    try:
        rc = node_mode(args, who)
    except UserError as exc:
        say(f"error: {exc}", who)
    finally:
        os.write(sys.stdout.fileno(), f"node.sh: exit status {rc}\n".encode())
    return rc


def node_mode(args: argparse.Namespace, who: str) -> int:
    plan = Plan.from_word(args.plan_word)
    scratch = scheduler_named(plan.scheduler).node_scratch(os.environ, args.first_scratch, args.rank)
    if scratch is None:
        raise UserError(f"no writable scratch (SCRATCHDIR, {args.first_scratch} or the job's TMPDIR); ask every "
                        "chunk for scratch_local")
    if (scratch.path / JOB_FOLDER).exists():
        raise UserError(f"scratch {scratch.path} is the first node's (shared between nodes?): ask every chunk for "
                        "scratch_local")

    def clean_here() -> None:  # the first node may clean while this node does: judge by what is left
        empty(scratch, os.environ)
        if scratch.path.is_dir() and any(scratch.path.iterdir()):
            say(f"warning: could not empty scratch {scratch.path}", who)

    if args.mode == "clean":
        clean_here()
        return EXIT_OK
    folder = enter_scratch(scratch, NODE_FOLDER)
    python = use_environment(args.env_dir, args.workdir, scratch)
    # SIGTERM reaches every process of the task (the scheduler, or the first node through pbsdsh): the python
    # step gets it itself (a second one would cut the launcher's own shutdown short); here only no further step.
    stopped: list[int] = []
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda number, frame: stopped.append(number))

    def step(*words: str, capture: bool = False) -> tuple[int, bytes]:
        return (EXIT_TERMINATED, b"") if stopped else run_python(python, *words, capture=capture)

    if args.mode == "stage":  # this node's copy of the plan, which its stage completes and its train reads
        say(f"staging to scratch {scratch.path}", who)
        plan.scratch = str(scratch.path.resolve())
        plan.save(folder / "plan.json")
        if step("-m", STEPS, "stage", str(folder / "plan.json"))[0] == EXIT_OK:
            return EXIT_OK
        clean_here()
        return EXIT_FAILED
    rc, out = step("-m", STEPS, "train-args", str(folder / "plan.json"), capture=True)
    if rc:
        clean_here()
        return EXIT_USER_ERROR
    rc = step("-m", "segtrain", *nul_words(out))[0]
    clean_here()
    return rc


# ---- command line -----------------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m segtrain.cluster.job.runner", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="kind", required=True)
    for kind, func in (("train", train), ("predict", predict)):
        p = sub.add_parser(kind)
        p.add_argument("--script", default="", help="the running job script ($0), for its walltime directive")
        p.add_argument("--job-start", type=float, required=True, help="when the job started (epoch seconds)")
        p.add_argument("--env-dir", type=Path, required=True, help="the software environment (SEGTRAIN_ENV)")
        p.set_defaults(run=func)
    p = sub.add_parser("node", help="another node's part of a training job (jobs/node.sh)")
    p.add_argument("mode", choices=("stage", "train", "clean"))
    p.add_argument("rank", type=int)
    p.add_argument("workdir", type=Path, help="the submit folder (jobs/node.sh entered it)")
    p.add_argument("env_dir", type=Path)
    p.add_argument("first_scratch", type=Path, help="the first node's scratch")
    p.add_argument("plan_word", help="this node's copy of the plan, as one word")
    p.set_defaults(run=node)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except UserError as exc:  # before the job had anything to clean up
        say(f"error: {exc}")
        return EXIT_USER_ERROR


if __name__ == "__main__":
    sys.exit(main())
