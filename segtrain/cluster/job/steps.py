"""The steps of ``jobs/train.pbs`` that need logic, as ``python -m segtrain.cluster.job.steps STEP PLAN``.

    plan           read the job's variables, validate config, data set and run before anything
                   is copied; write the plan (a JSON file on scratch) the other steps read
    stage          copy the data set (and a run being continued) to scratch, verified
    train-args     the trainer's arguments, with a time limit from the walltime (NUL-separated)
    finish         say how the trainer ended; copy the run back to storage, verified (exit 1: failed)
    resubmit-args  the qsub command of the next job of the chain (NUL-separated; exit 10: none due)
    record         note a resubmission in the run's run.json on storage
    node-args      the pbsdsh commands that run jobs/node.sh on each other node (jobs on several nodes)
    node-plan      on another node: its copy of the plan, with its own scratch
    node-status    how the other nodes' jobs/node.sh ended, from pbsdsh's report (exit 1: one failed)

The job's variables (``qsub -v``) are decoded here (see :mod:`segtrain.cluster.qsub`);
argument lists go to the shell NUL-separated, read with ``mapfile -d ''``: no value is ever
parsed by a shell.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import signal
import sys
import tarfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Optional, Sequence
from urllib.parse import quote, unquote

from segtrain.cluster import qsub
from segtrain.cluster.job import nodes
from segtrain.cluster.directives import script_request
from segtrain.cluster.job.environment import require_job
from segtrain.cluster.scheduler import current_job_scheduler, scheduler_named
from segtrain.cluster.site import job_name
from segtrain.cluster.job.stage import stage_dataset, sync_tree
from segtrain.cluster.job.walltime import default_margin, training_time_limit
from segtrain.cluster.directives import format_hms, parse_hms
from segtrain.config import Config, load_config
from segtrain.data import memo
from segtrain.errors import EXIT_FAILED, EXIT_NO_RESUBMIT, EXIT_OK, EXIT_RESUMABLE, EXIT_USER_ERROR, UserError
from segtrain.fsutil import atomic_open, atomic_write_json
from segtrain.run.directory import RunDir

DEFAULT_CONFIG = "configs/default.yaml"
DEFAULT_MAX_RESUBMITS = 10
NODE_SCRIPT = "jobs/node.sh"
NODE_MODES = ("stage", "train", "clean")  # what node.sh does on another node


@dataclass
class Plan:
    """Everything the steps of one job agree on; written once by ``plan``, completed by ``stage``."""
    job_id: str
    job_name: str
    workdir: str
    config: str  # absolute path of the config file
    overrides: list[str]  # the user's, exactly as given
    run_dir: str  # on storage: the run's home, and the trainer's --mirror
    continuing: bool
    data: str  # on storage: a data set folder or a tar archive
    runs: str
    scratch: str
    job_start: float
    walltime_s: Optional[float]
    walltime_source: str
    margin_s: Optional[float]
    max_resubmits: int
    resubmits: int
    resources: dict[str, str] = field(default_factory=dict)  # what the job really got, as submit options
    passed_on: dict[str, str] = field(default_factory=dict)  # variables the next job inherits as they are
    data_root: Optional[str] = None  # on scratch, set by ``stage``
    hosts: list[str] = field(default_factory=list)  # the job's nodes; the first runs the job script
    host_indices: list[int] = field(default_factory=list)  # each node's first line in $PBS_NODEFILE (pbsdsh -n)
    nproc_per_node: int = 1  # trainer processes on each node, one per GPU
    nproc_source: str = ""
    rdzv_port: Optional[int] = None  # several nodes: node rank 0's rendezvous port
    node_rank: int = 0  # the node this copy of the plan is for
    first_scratch: Optional[str] = None  # another node's copy: the first node's scratch
    scheduler: str = "pbs"  # the workload manager running the job (segtrain.cluster.scheduler)

    @property
    def work_run(self) -> Path:
        return Path(self.scratch) / "runs" / Path(self.run_dir).name

    @property
    def trainer_run(self) -> Path:
        """The run directory of every rank: rank 0 broadcasts its own, on the first node's scratch."""
        return Path(self.first_scratch or self.scratch) / "runs" / Path(self.run_dir).name

    @property
    def work_data(self) -> Path:
        return Path(self.scratch) / "data"

    def save(self, path: Path) -> None:
        atomic_write_json(path, dataclasses.asdict(self))

    @classmethod
    def load(cls, path: Path) -> "Plan":
        try:
            return cls(**json.loads(Path(path).read_text()))
        except (OSError, ValueError, TypeError) as exc:
            raise UserError(f"{path}: unreadable job plan: {exc}") from None

    def to_word(self) -> str:
        """The plan as one command-line word of letters, digits and ``%_.-~`` (for pbsdsh to carry)."""
        return quote(json.dumps(dataclasses.asdict(self)), safe="")

    @classmethod
    def from_word(cls, word: str) -> "Plan":
        try:
            return cls(**json.loads(unquote(word)))
        except (ValueError, TypeError) as exc:
            raise UserError(f"the job plan given on the command line is unreadable: {exc}") from None


# ---- plan ---------------------------------------------------------------------------------------
def make_plan(environ: Mapping[str, str], script_candidates: Sequence[Path], job_start: float,
              job_info: Optional[str], scratch: Optional[Path] = None) -> tuple[Plan, Config]:
    """Validate the job's variables against the files they name; nothing is written or copied.

    ``scratch`` is the folder the job script chose; by default the job's $SCRATCHDIR or $TMPDIR.
    """
    scheduler = current_job_scheduler(environ)
    env = require_job(scheduler.job_environment(environ))
    workdir = env.workdir.resolve()
    scratch = scratch or env.scratch_dir
    if scratch is None or not scratch.is_dir():
        raise UserError(f"no scratch folder: SCRATCHDIR and TMPDIR unset or missing ({scratch})")
    var = {name: qsub.decode_value(environ.get(name, "")) for name in qsub.JOB_VARIABLES}
    overrides = qsub.split_overrides(var[qsub.OVERRIDES])
    if var[qsub.MANIFEST]:  # a subjob of a grid's job array: its point's config and overrides
        from segtrain.cluster.frontend.grid import manifest_point

        manifest = _existing(workdir, var[qsub.MANIFEST], qsub.MANIFEST)
        var[qsub.CONFIG], overrides = manifest_point(manifest, env.array_index)
    run = _existing(workdir, var[qsub.RUN], qsub.RUN, want_dir=True) if var[qsub.RUN] else None
    info = RunDir(run).read_info() if run else {}
    config = _resolve(workdir, var[qsub.CONFIG] or (str(run / "config.yaml") if run else DEFAULT_CONFIG))
    cfg = load_config(config, overrides)
    data_default = info.get("data_source") or cfg.data.root  # a run's config names the scratch it last used
    data = _existing(workdir, var[qsub.DATA] or data_default, qsub.DATA if var[qsub.DATA] else "data.root")
    if not data.is_dir() and not _is_archive(data):
        raise UserError(f"{qsub.DATA}={data}: neither a data set folder nor a tar archive")
    runs = _resolve(workdir, var[qsub.RUNS] or cfg.run.root)
    run = run or _rerun_of(runs, cfg, env.job_id)  # requeued by the scheduler: this job's run so far
    run_dir = run or _new_run_dir(runs, config, overrides, cfg)
    walltime_s, source = scheduler.walltime(job_info, env.job_id, script_candidates)
    resources = scheduler.granted(job_info, env.job_id)
    found = env.nodes()
    select = resources.get("select") or _directive(script_candidates, "select")
    nproc, nproc_source = nodes.processes_per_node(environ, select, max(len(found), 1), nodes.cuda_device_count)
    world = nproc * max(len(found), 1)
    if cfg.train.batch_size % world:
        raise UserError(f"train.batch_size: {cfg.train.batch_size} (the global batch) is not divisible by the {world} "
                        f"processes of this job ({max(len(found), 1)} node(s) x {nproc}, {nproc_source})")
    plan = Plan(
        job_id=env.job_id, job_name=env.job_name or job_name(config.stem), workdir=str(workdir),
        config=str(config), overrides=overrides, run_dir=str(run_dir), continuing=run is not None, data=str(data),
        runs=str(runs), scratch=str(scratch.resolve()), job_start=job_start, walltime_s=walltime_s,
        walltime_source=source,
        margin_s=parse_hms(var[qsub.MARGIN], qsub.MARGIN) if var[qsub.MARGIN] else None,
        max_resubmits=_count(var, qsub.MAX_RESUBMITS, DEFAULT_MAX_RESUBMITS),
        resubmits=_count(var, qsub.RESUBMITS, 0), resources=resources,
        passed_on={name: environ[name] for name in (qsub.ENV_VARIABLE, qsub.MARGIN, nodes.NPROC, qsub.SCRATCH_BASE)
                   if environ.get(name)},
        hosts=[node.host for node in found], host_indices=[node.index for node in found], nproc_per_node=nproc,
        nproc_source=nproc_source, rdzv_port=nodes.rendezvous_port(env.job_id) if len(found) > 1 else None,
        scheduler=scheduler.name,
    )
    return plan, cfg


def _directive(scripts: Sequence[Path], resource: str) -> Optional[str]:
    """``resource`` as the first readable job script asks for it (qstat did not answer)."""
    for script in scripts:
        if script.is_file():
            return script_request(script).resources.get(resource)
    return None


def _resolve(workdir: Path, text: str) -> Path:
    return (workdir / Path(text).expanduser()).absolute()


def _existing(workdir: Path, text: str, name: str, want_dir: bool = False) -> Path:
    path = _resolve(workdir, text)
    if not path.exists() or (want_dir and not path.is_dir()):
        kind = "folder" if want_dir else "file or folder"
        raise UserError(f"{name}={text}: {kind} not found ({path})")
    return path


def _is_archive(path: Path) -> bool:
    return path.is_file() and tarfile.is_tarfile(path)


def _count(var: Mapping[str, str], name: str, default: int) -> int:
    text = var[name].strip()
    if not text:
        return default
    if not text.isdigit():
        raise UserError(f"{name}={text}: expected a whole number >= 0")
    return int(text)


def _rerun_of(runs: Path, cfg: Config, job_id: str) -> Optional[Path]:
    """The run this very job already started, when the scheduler runs it again (Slurm's --requeue after a
    node failure keeps the job id and its variables): continued from its last mirrored checkpoint."""
    run = runs / cfg.run.name if cfg.run.name else None
    if run is None or not (run / "run.json").is_file():
        return None
    return run if any(s.get("job_id") == job_id for s in RunDir(run).read_info().get("segments", [])) else None


def _new_run_dir(runs: Path, config: Path, overrides: list[str], cfg: Config) -> Path:
    """A fresh run directory named as the trainer names runs (never an existing one)."""
    from segtrain.run.directory import make_run_name, unique_path

    name = cfg.run.name or make_run_name(config, overrides)
    if Path(name).name != name or name in (".", ".."):
        raise UserError(f"run.name: {name!r} must be a plain folder name (no '/')")
    return unique_path(runs, name)


def step_plan(args: argparse.Namespace) -> int:
    job_info = args.job_info.read_text(errors="replace") if args.job_info and args.job_info.is_file() else None
    scheduler = current_job_scheduler(os.environ)
    workdir = scheduler.job_environment(os.environ).workdir or Path(".")
    scripts = ([args.script] if args.script else []) + [workdir / scheduler.script]
    plan, cfg = make_plan(os.environ, scripts, args.job_start, job_info, args.scratch)
    print(f"config {_rel(plan.config, plan.workdir)}" + (f" with {qsub.display(plan.overrides)}" if plan.overrides else ""))
    print(f"run {plan.run_dir} ({'continuing' if plan.continuing else 'new'})")
    print(f"data {plan.data} ({'folder' if Path(plan.data).is_dir() else 'archive'}) -> {plan.work_data}")
    if plan.walltime_s is None:
        print(f"warning: walltime found {plan.walltime_source}; training without a time limit")
    else:
        margin = plan.margin_s if plan.margin_s is not None else default_margin(plan.walltime_s)
        print(f"walltime {format_hms(plan.walltime_s)} from {plan.walltime_source}; "
              f"margin {format_hms(margin)} kept for the checkpoint and the copy-back")
    if len(plan.hosts) > 1:
        print(f"{len(plan.hosts)} nodes x {plan.nproc_per_node} trainer processes ({plan.nproc_source}): "
              f"{', '.join(plan.hosts)}; rendezvous on {plan.hosts[0]}:{plan.rdzv_port}")
    elif plan.nproc_per_node > 1:
        print(f"{plan.nproc_per_node} trainer processes ({plan.nproc_source})")
    if Path(plan.data).is_dir():  # a folder is checked where it is, before anything is copied
        _check_data(cfg, Path(plan.data))
    plan.save(args.plan)
    return EXIT_OK


def _check_data(cfg: Config, root: Path) -> None:
    from segtrain.preflight import check_dataset

    summary = check_dataset(dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, root=str(root))))
    print("\n".join(summary.lines()))


def _rel(path: str, start: str) -> str:
    return os.path.relpath(path, start) if Path(path).is_relative_to(start) else path


# ---- stage --------------------------------------------------------------------------------------
def step_stage(args: argparse.Namespace) -> int:
    plan = Plan.load(args.plan)
    report = stage_dataset(Path(plan.data), plan.work_data)
    print(f"staged data set: {report.summary()}")
    if not report.ok:
        return EXIT_FAILED
    root = staged_root(plan.work_data)
    if Path(plan.data).is_dir():  # same files, sizes and times: what the frontend checked is not checked again
        memo.carry(plan.data, root)
    cfg = load_config(plan.config, plan.overrides)
    if not Path(plan.data).is_dir():  # an archive can only be checked once unpacked
        _check_data(cfg, root)
    if plan.continuing:
        report = sync_tree(Path(plan.run_dir), plan.work_run)
        print(f"staged run {plan.run_dir}: {report.summary()}")
        if not report.ok:
            return EXIT_FAILED
        if plan.node_rank and not plan.trainer_run.is_dir():  # every rank resumes from the checkpoint there
            raise UserError(f"{plan.trainer_run}: rank 0's run directory is not on this node: this site's scratch "
                            f"path differs between nodes ({plan.scratch} here), so a run cannot be continued on "
                            "several nodes; continue it on one")
    if plan.node_rank == 0:  # the other nodes write nothing that reaches storage
        _record_data_source(plan.work_run, plan.data)
    if cfg.data.cache:
        from segtrain.data.cache import build_cache

        start = time.monotonic()
        cached = build_cache(dataclasses.replace(cfg.data, root=str(root)), Path(plan.scratch) / "cache")
        shutil.rmtree(plan.work_data)  # the cache is a complete data root; scratch space is better kept free
        print(f"built the staging cache {cached} in {time.monotonic() - start:.1f} s")
        root = cached
    plan.data_root = str(root)
    plan.save(args.plan)
    return EXIT_OK


def staged_root(staged: Path) -> Path:
    """Where ``filelists/`` is: the staged folder, or the one folder an archive unpacked into."""
    if (staged / "filelists").is_dir():
        return staged
    subfolders = [p for p in staged.iterdir() if p.is_dir()]
    if len(subfolders) == 1 and (subfolders[0] / "filelists").is_dir():
        return subfolders[0]
    raise UserError(f"{staged}: the staged data set has no filelists/ folder (nor one top-level folder with it)")


def _record_data_source(work_run: Path, data: str) -> None:
    """Keep the data set's storage path in run.json, so ``RUN=...`` alone can continue a run."""
    run = RunDir(work_run)
    if run.read_info().get("data_source") != data:
        run.update_info(data_source=data)


# ---- train-args ---------------------------------------------------------------------------------
def trainer_args(plan: Plan, cfg: Config, now: float) -> tuple[list[str], Optional[float]]:
    """``segtrain`` arguments of this job's trainer, and the time limit in them (None: none)."""
    if plan.data_root is None:
        raise UserError(f"{plan.work_data}: the data set was not staged (run the stage step first)")
    words = ["train", plan.config, *plan.overrides, f"data.root={json.dumps(plan.data_root)}"]
    if cfg.data.cache:
        words.append("data.cache=false")  # data.root already is the cache built on scratch
    words += ["--run-dir", str(plan.trainer_run)]
    if plan.node_rank == 0:  # rank 0 writes the run
        words += ["--mirror", plan.run_dir]
    limit = None
    if plan.walltime_s is not None:
        limit = training_time_limit(plan.walltime_s, now - plan.job_start, plan.margin_s)
        words += ["--time-limit", f"{limit:.0f}"]
    words += nodes.launch_flags(plan.nproc_per_node, plan.hosts, plan.node_rank, plan.rdzv_port, plan.job_id)
    return words, limit


def step_train_args(args: argparse.Namespace) -> int:
    plan = Plan.load(args.plan)
    words, limit = trainer_args(plan, load_config(plan.config, plan.overrides), time.time())
    if plan.node_rank == 0 and len(plan.hosts) > 1:
        nodes.check_port_free(plan.hosts[0], plan.rdzv_port)
    _write_words(words)
    note = f" (time limit {format_hms(limit)})" if limit is not None else ""
    print(f"launching: segtrain {qsub.display(words)}{note}", file=sys.stderr)
    return EXIT_OK


def _write_words(words: Sequence[str]) -> None:
    sys.stdout.buffer.write(_nul_separated(words))
    sys.stdout.flush()


def _nul_separated(words: Sequence[str]) -> bytes:
    for word in words:
        if "\0" in word:
            raise UserError(f"argument {word!r} contains a NUL character")
    return b"".join(w.encode() + b"\0" for w in words)


# ---- other nodes --------------------------------------------------------------------------------
def node_commands(plan: Plan, mode: str, env_dir: str) -> dict[int, list[str]]:
    """By node rank, the pbsdsh command that runs ``jobs/node.sh MODE`` on each other node.

    pbsdsh starts a task in $HOME with a small environment, so everything node.sh needs goes as
    arguments: the submit folder, the software environment, the first node's scratch (the same
    path on each node of a PBS site) and that node's copy of the plan, as one encoded word.
    """
    script = str(Path(plan.workdir) / NODE_SCRIPT)
    commands = {}
    for rank in range(1, len(plan.hosts)):
        word = dataclasses.replace(plan, node_rank=rank, first_scratch=plan.scratch).to_word()
        program = ["/bin/bash", "-l", script, mode, str(rank), plan.workdir, env_dir, plan.scratch, word]
        commands[rank] = nodes.pbsdsh_argv(plan.host_indices[rank], program)
    return commands


def step_node_args(args: argparse.Namespace) -> int:
    plan = Plan.load(args.plan)
    for mode in args.modes:
        for rank, argv in node_commands(plan, mode, args.env_dir).items():
            with atomic_open(args.out / f"node-{rank}.{mode}.args") as f:
                f.write(_nul_separated(argv))
    return EXIT_OK


def step_node_plan(args: argparse.Namespace) -> int:
    plan = Plan.from_word(args.word)
    plan.scratch = str(args.scratch.resolve())
    plan.save(args.out)
    return EXIT_OK


def node_status(plan: Plan, mode: str, folder: Path) -> dict[int, Optional[int]]:
    """By node rank, the exit status pbsdsh reported for ``node.sh MODE`` (None: none reported)."""
    statuses = {}
    for rank in range(1, len(plan.hosts)):
        path = folder / f"node-{rank}.{mode}.out"
        statuses[rank] = nodes.task_exit_status(path.read_text(errors="replace")) if path.is_file() else None
    return statuses


def step_node_status(args: argparse.Namespace) -> int:
    plan = Plan.load(args.plan)
    statuses = node_status(plan, args.mode, args.dir)
    for rank, status in statuses.items():
        ended = "no exit status reported (not started, or stopped)" if status is None else f"exit {status}"
        print(f"node {rank} ({plan.hosts[rank]}): {args.mode} {ended}")
    return EXIT_OK if all(status == 0 for status in statuses.values()) else 1


# ---- finish -------------------------------------------------------------------------------------
def explain(code: Optional[int], terminated: bool, plan: Plan) -> str:
    """What the trainer's exit status means for the user, and what to do next."""
    again = f"continue it with: {scheduler_named(plan.scheduler).manual(plan.run_dir)}"
    if code is None:
        return "the job stopped before the trainer started (the lines above say why)"
    if code == EXIT_OK:
        return f"training finished; results in {plan.run_dir}"
    if code == EXIT_USER_ERROR:
        return (f"the trainer stopped on a problem with the config or the data set (exit 2; the line above says "
                f"which); its logs and last checkpoint, if any, are in {plan.run_dir}; after fixing it, {again}")
    if code == EXIT_RESUMABLE:
        why = "SIGTERM: walltime, qdel or node shutdown" if terminated else "the time limit"
        return f"training stopped early with a checkpoint ({why})"
    if code > 128:
        name = _signal_name(code - 128)
        hint = " (out of memory? ask for more mem=; or killed by PBS)" if code - 128 == signal.SIGKILL else ""
        return (f"the trainer was killed by {name}{hint}; the last mirrored checkpoint is in {plan.run_dir}/checkpoints; "
                f"{again}")
    return (f"the trainer crashed (exit {code}; the traceback above says why); its logs and last checkpoint are in "
            f"{plan.run_dir}; {again}")


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def step_finish(args: argparse.Namespace) -> int:
    plan = Plan.load(args.plan)
    print(explain(args.trainer_exit, args.terminated, plan))
    report = sync_tree(plan.work_run, Path(plan.run_dir))
    if not report.ok:
        print(f"copy-back FAILED: {report.summary()}")
        return EXIT_FAILED
    if report.files:
        print(f"copied back to {plan.run_dir}: {report.summary()}")
    return EXIT_OK


# ---- resubmission -------------------------------------------------------------------------------
def resubmission(plan: Plan, code: Optional[int], terminated: bool) -> tuple[Optional[list[str]], str]:
    """The qsub words of the next job, or None and why there is none."""
    scheduler = scheduler_named(plan.scheduler)
    manual = scheduler.manual(plan.run_dir)
    if code != EXIT_RESUMABLE:
        return None, ""
    if terminated:
        return None, f"not resubmitting after SIGTERM (it may have been qdel); to continue: {manual}"
    if plan.resubmits >= plan.max_resubmits:
        return None, f"not resubmitting: MAX_RESUBMITS={plan.max_resubmits} reached; to continue: {manual}"
    variables = {qsub.RUN: plan.run_dir, qsub.DATA: plan.data, qsub.RUNS: plan.runs,
                 qsub.MAX_RESUBMITS: str(plan.max_resubmits), qsub.RESUBMITS: str(plan.resubmits + 1),
                 **plan.passed_on}
    # Where the scheduler takes no dependency (PBS Pro, on a subjob: 13[2].server), the next job may
    # start at once: the run is already copied back.
    argv = scheduler.submit_argv(Path(plan.workdir) / scheduler.script, variables, name=plan.job_name,
                                 resources=plan.resources, depend=scheduler.after(plan.job_id))
    return argv, f"resubmission {plan.resubmits + 1} of at most {plan.max_resubmits}: {qsub.display(argv)}"


def step_resubmit_args(args: argparse.Namespace) -> int:
    plan = Plan.load(args.plan)
    argv, message = resubmission(plan, args.trainer_exit, args.terminated)
    if message:
        print(message, file=sys.stderr)
    if argv is None:
        return EXIT_NO_RESUBMIT
    _write_words(argv)
    return EXIT_OK


def record_resubmission(run_dir: Path, from_job: str, to_job: str) -> None:
    """Append ``{from, to, at}`` to run.json's ``resubmissions`` (atomically; other keys kept)."""
    from segtrain.run.directory import now_iso

    run = RunDir(run_dir)
    done = run.read_info().get("resubmissions", [])
    run.update_info(resubmissions=done + [{"from": from_job, "to": to_job, "at": now_iso()}])


def step_record(args: argparse.Namespace) -> int:
    plan = Plan.load(args.plan)
    record_resubmission(Path(plan.run_dir), plan.job_id, args.job_id.strip())
    return EXIT_OK


# ---- command line -------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m segtrain.cluster.job.steps", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="step", required=True)
    p = sub.add_parser("plan")
    p.add_argument("plan", type=Path)
    p.add_argument("--scratch", type=Path, help="the job's scratch folder (default $SCRATCHDIR, else $TMPDIR)")
    p.add_argument("--script", type=Path, help="the running job script ($0), for its walltime directive")
    p.add_argument("--job-start", type=float, default=None, help="when the job started (epoch seconds)")
    p.add_argument("--job-info", type=Path, help="a file holding the scheduler's description of the job "
                   "(`qstat -f $PBS_JOBID`, `scontrol show job $SLURM_JOB_ID`)")
    p.set_defaults(run=step_plan)
    p = sub.add_parser("node-args")
    p.add_argument("plan", type=Path)
    p.add_argument("modes", nargs="+", choices=NODE_MODES)
    p.add_argument("--env-dir", required=True, help="the software environment (SEGTRAIN_ENV)")
    p.add_argument("--out", type=Path, required=True, help="folder for node-RANK.MODE.args")
    p.set_defaults(run=step_node_args)
    p = sub.add_parser("node-plan")
    p.add_argument("word", help="the plan word node-args put on node.sh's command line")
    p.add_argument("--scratch", type=Path, required=True, help="this node's scratch")
    p.add_argument("out", type=Path)
    p.set_defaults(run=step_node_plan)
    p = sub.add_parser("node-status")
    p.add_argument("plan", type=Path)
    p.add_argument("mode", choices=NODE_MODES)
    p.add_argument("--dir", type=Path, required=True, help="folder of node-RANK.MODE.out (pbsdsh's output)")
    p.set_defaults(run=step_node_status)
    for name, func in (("stage", step_stage), ("train-args", step_train_args), ("finish", step_finish),
                       ("resubmit-args", step_resubmit_args), ("record", step_record)):
        p = sub.add_parser(name)
        p.add_argument("plan", type=Path)
        if name in ("finish", "resubmit-args"):
            p.add_argument("--trainer-exit", type=int, default=None, help="the trainer's exit status (unset: never ran)")
            p.add_argument("--terminated", action="store_true", help="the job received SIGTERM")
        if name == "record":
            p.add_argument("job_id")
        p.set_defaults(run=func)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    if getattr(args, "job_start", 0) is None:
        args.job_start = time.time()
    try:
        return args.run(args)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except OSError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILED


if __name__ == "__main__":
    raise SystemExit(main())
