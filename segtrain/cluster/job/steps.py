"""The steps of a training job that need its software environment, as ``python -m segtrain.cluster.job.steps STEP PLAN``;
the job's runner (:mod:`.runner`, outside any container) runs them in order.

    plan           read the job's variables, validate config, data set and run before anything
                   is copied; write the plan (a JSON file on scratch) the other steps read
    stage          copy the data set (and a run being continued) to scratch, verified
    train-args     the trainer's arguments, with a time limit from the walltime (NUL-separated)
    finish         say how the trainer ended; copy the run back to storage, verified (exit 1: failed);
                   the qsub words of the next job of the chain (exit 10: none due; see resubmit.py)
    record         note a resubmission in the run's run.json on storage
    deadline       after the scheduler was asked again: a walltime raised (qextend) moves the trainer's deadline
    node-args      the pbsdsh (srun) commands that run jobs/node.sh on each other node (jobs on several nodes)
    node-status    how the other nodes' jobs/node.sh ended, from pbsdsh's report or node.sh's (exit 1: one failed)

The job's variables are decoded here (see :mod:`segtrain.cluster.variables`);
argument lists go to the runner NUL-separated: no value is ever parsed by a shell.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import sys
import tarfile
import time
from pathlib import Path
from typing import Mapping, Optional, Sequence

from segtrain.cluster import variables as qsub
from segtrain.cluster.frontend.grid import manifest_point
from segtrain.cluster.job import nodes, resubmit
from segtrain.cluster.job.plan import Plan
from segtrain.cluster.job.stage import stage_dataset, sync_tree
from segtrain.cluster.schedulers import current_job_scheduler, scheduler_named
from segtrain.cluster.site import job_name
from segtrain.cluster.submissions import append_log, read_log
from segtrain.cluster.variables import resolve_path
from segtrain.cluster import walltime
from segtrain.cluster.walltime import format_hms, parse_hms
from segtrain.config import Config, load_config, to_yaml
from segtrain.data import memo
from segtrain.errors import EXIT_FAILED, EXIT_NO_RESUBMIT, EXIT_OK, EXIT_USER_ERROR, UserError
from segtrain.fsutil import atomic_open, atomic_write_json, atomic_write_text
from segtrain.run import report as job_report
from segtrain.run.directory import RunDir, create_run_dir, now_iso, run_name, unique_path
from segtrain.run.run_json import job_segment

DEFAULT_CONFIG = "configs/default.yaml"
DEFAULT_MAX_RESUBMITS = 10
NODE_SCRIPT = "jobs/node.sh"
NODE_MODES = ("stage", "train", "clean")  # what node.sh does on another node
DEADLINE_FILE = "deadline"  # next to the plan: the trainer's deadline after a qextend (epoch seconds)


# ---- plan ---------------------------------------------------------------------------------------
def make_plan(environ: Mapping[str, str], script_candidates: Sequence[Path], job_start: float,
              job_info: Optional[str], scratch: Path) -> tuple[Plan, Config]:
    """Validate the job's variables against the files they name; nothing is written or copied.

    ``scratch`` is the job's scratch folder (its scheduler's ``enter_job`` chose it).
    """
    scheduler = current_job_scheduler(environ)
    env = scheduler.require_job(environ)
    workdir = env.workdir.resolve()
    if not scratch.is_dir():
        raise UserError(f"scratch folder {scratch} not found")
    var = {name: qsub.decode_value(environ.get(name, "")) for name in qsub.JOB_VARIABLES}
    overrides = qsub.split_overrides(var[qsub.OVERRIDES])
    if var[qsub.MANIFEST]:  # a subjob of a grid's job array: its point's config and overrides
        manifest = _existing(workdir, var[qsub.MANIFEST], qsub.MANIFEST)
        var[qsub.CONFIG], overrides = manifest_point(manifest, env.array_index, scheduler.array_variable)
    run = _existing(workdir, var[qsub.RUN], qsub.RUN, want_dir=True) if var[qsub.RUN] else None
    study = _existing(workdir, var[qsub.STUDY], qsub.STUDY, want_dir=True) if var[qsub.STUDY] else None
    worker = var[qsub.WORKER] or str(env.array_index or 0)
    if study is not None:  # a search worker: the study's base config; the job's "run" is the worker's folder
        from segtrain.search.study import BASE, load_study_spec, worker_dir

        load_study_spec(study)
        var[qsub.CONFIG], overrides, run = str(study / BASE), [], worker_dir(study, worker)
    info = RunDir(run).info.read() if run else {}
    config = resolve_path(workdir, var[qsub.CONFIG] or (str(RunDir(run).config) if run else DEFAULT_CONFIG))
    cfg = load_config(config, overrides)
    runs = resolve_path(workdir, var[qsub.RUNS] or cfg.run.root)
    if run is None and study is None:  # run again by the scheduler (qrerun, a requeue after a node failure): the run it started
        run = rerun_run_dir(runs, env.job_id, scheduler.restarted(job_info, env.job_id),
                            run_name(config, overrides, cfg.run.name))
        info = RunDir(run).info.read() if run else {}
    data_default = info.get("data_source") or cfg.data.root  # a run's config names the scratch it last used
    data = _existing(workdir, var[qsub.DATA] or data_default, qsub.DATA if var[qsub.DATA] else "data.root")
    if not data.is_dir() and not _is_archive(data):
        raise UserError(f"{qsub.DATA}={data}: neither a data set folder nor a tar archive")
    new_name = None if run else run_name(config, overrides, cfg.run.name)
    run_dir = run or unique_path(runs, new_name)  # a preview: `plan` creates it once every check passed
    walltime_s, source = scheduler.walltime(job_info, env.job_id, script_candidates)
    resources = scheduler.granted(job_info, env.job_id)
    found = env.nodes()
    select = scheduler.select(resources, script_candidates)
    nproc, nproc_source = nodes.processes_per_node(environ, select, max(len(found), 1), nodes.cuda_device_count)
    world = nproc * max(len(found), 1)
    if study is not None and world > 1:
        raise UserError(f"{qsub.STUDY}={study}: a search worker trains each trial in one process on one node; this "
                        f"job has {world} ({max(len(found), 1)} node(s) x {nproc}, {nproc_source}): ask for one GPU")
    if cfg.train.batch_size % world:
        raise UserError(f"train.batch_size: {cfg.train.batch_size} (the global batch) is not divisible by the {world} "
                        f"processes of this job ({max(len(found), 1)} node(s) x {nproc}, {nproc_source})")
    poll = environ.get(qsub.WALLTIME_POLL, "").strip()
    if poll and not (poll.isdigit() and int(poll) > 0):
        raise UserError(f"{qsub.WALLTIME_POLL}={poll}: expected a whole number of seconds > 0")
    continuing = run is not None and (RunDir(run).config.exists() or RunDir(run).checkpoints.exists()
                                      or bool(info.get("segments")))
    recorded = info.get("processes") or {}
    if continuing and recorded.get("world") not in (None, world):
        raise UserError(f"{qsub.RUN}={run}: its checkpoint was written by {recorded['world']} processes "
                        f"({recorded.get('nodes')} node(s) x {recorded.get('per_node')}), this job has {world} "
                        f"({max(len(found), 1)} x {nproc}, {nproc_source}); continue it with scripts/submit {run}, "
                        f"which asks for the same")
    plan = Plan(
        job_id=env.job_id, job_name=env.job_name or job_name(config.stem), workdir=str(workdir),
        config=str(config), overrides=overrides, run_dir=str(run_dir), continuing=continuing, data=str(data),
        runs=str(runs), scratch=str(scratch.resolve()), job_start=job_start, walltime_s=walltime_s,
        walltime_source=source,
        margin_s=parse_hms(var[qsub.MARGIN], qsub.MARGIN) if var[qsub.MARGIN] else None,
        max_resubmits=_count(var, qsub.MAX_RESUBMITS, DEFAULT_MAX_RESUBMITS),
        resubmits=_count(var, qsub.RESUBMITS, 0), resources=resources,
        passed_on={name: environ[name] for name in (qsub.ENV_VARIABLE, qsub.MARGIN, nodes.NPROC, qsub.SCRATCH_BASE,
                                                    qsub.WALLTIME_POLL, qsub.UMASK) if environ.get(name)},
        hosts=[node.host for node in found], host_indices=[node.index for node in found], nproc_per_node=nproc,
        nproc_source=nproc_source, rdzv_port=nodes.rendezvous_port(env.job_id) if len(found) > 1 else None,
        new_run_name=new_name, logged=not var[qsub.MANIFEST], scheduler=scheduler.name,
        queue_wait_s=scheduler.queue_wait(job_info, env.job_id),
        study=str(study) if study else None, worker=worker if study else None,
    )
    return plan, cfg


def rerun_run_dir(runs: Path, job_id: str, restarted: bool, name: str) -> Optional[Path]:
    """The run a job run again by its scheduler (PBS ``qrerun`` or ``-r y`` after a node failure, Slurm's
    requeue) started the first time, under the same job id.

    Its first start listed itself in the run.json of the run it made: the run named ``name`` (a grid
    point's, or ``run.name``), or the one it logged next to the runs, else any run of ``runs`` (a name
    with the time in it is another one a second later, and a grid's subjobs log nothing here; a first
    start that found ``name`` taken made ``name-2``), newest first.
    """
    if not restarted:
        return None
    logged = [runs / entry["run"] for entry in reversed(read_log(runs)) if entry.get("job_id") == job_id]
    others = sorted((info.parent for info in runs.glob("*/run.json")), key=lambda p: p.stat().st_mtime, reverse=True)
    for candidate in dict.fromkeys([runs / name, *logged, *others]):
        info = RunDir(candidate).info.read() if RunDir(candidate).info.exists() else {}
        started = [job.get("id") for job in info.get("jobs", [])] + [s.get("job_id") for s in info.get("segments", [])]
        if job_id in started:
            return candidate
    return None


def open_run_dir(plan: Plan, cfg: Optional[Config] = None) -> None:
    """Make a new run's directory on storage (exclusively: no other job ever shares it) and log it next to
    the runs, so that ``--status`` and ``segtrain runs`` see a plain ``qsub`` job at once; record in
    run.json that this job started (status "starting" until the trainer runs) and its processes (a
    continuation by hand asks for as many). A run without a config yet gets ``cfg``'s (what the trainer
    writes there first), so that a job deleted before its trainer started leaves a run that
    ``scripts/submit RUN`` continues (from step 0), not a folder that cannot be continued."""
    if plan.new_run_name is not None:
        plan.run_dir = str(create_run_dir(Path(plan.runs), plan.new_run_name))
        plan.new_run_name = None
        if plan.logged and not any(entry.get("job_id") == plan.job_id for entry in read_log(Path(plan.runs))):
            append_log(Path(plan.runs), [{"at": now_iso(), "job_id": plan.job_id, "array_id": None,
                                          "run": Path(plan.run_dir).name, "grid": None, "index": None}])
    Path(plan.run_dir).mkdir(parents=True, exist_ok=True)  # a search worker's folder is made by its first job
    run = RunDir(plan.run_dir)
    if cfg is not None and not run.config.exists():
        atomic_write_text(run.config, to_yaml(cfg))
    nodes_n = max(len(plan.hosts), 1)
    run.info.job_started(plan.job_id, {"world": plan.nproc_per_node * nodes_n, "nodes": nodes_n,
                                       "per_node": plan.nproc_per_node, "resources": plan.resources})


def _existing(workdir: Path, text: str, name: str, want_dir: bool = False) -> Path:
    path = resolve_path(workdir, text)
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


def step_plan(args: argparse.Namespace) -> int:
    started = time.time()
    job_info = args.job_info.read_text(errors="replace") if args.job_info and args.job_info.is_file() else None
    scheduler = current_job_scheduler(os.environ)
    workdir = scheduler.job_environment(os.environ).workdir or Path(".")
    scripts = ([args.script] if args.script else []) + [workdir / scheduler.script]
    plan, cfg = make_plan(os.environ, scripts, args.job_start, job_info, args.scratch)
    print(f"config {_rel(plan.config, plan.workdir)}" + (f" with {qsub.display(plan.overrides)}" if plan.overrides else ""))
    print(f"data {plan.data} ({'folder' if Path(plan.data).is_dir() else 'archive'}) -> {plan.work_data}")
    if plan.walltime_s is None:
        print(f"warning: walltime found {plan.walltime_source}; training without a time limit")
    else:
        print(f"walltime {format_hms(plan.walltime_s)} from {plan.walltime_source}; "
              f"margin {format_hms(walltime.margin(plan.walltime_s, plan.margin_s))} kept for the checkpoint and "
              "the copy-back")
    if len(plan.hosts) > 1:
        print(f"{len(plan.hosts)} nodes x {plan.nproc_per_node} trainer processes ({plan.nproc_source}): "
              f"{', '.join(plan.hosts)}; rendezvous on {plan.hosts[0]}:{plan.rdzv_port}")
    elif plan.nproc_per_node > 1:
        print(f"{plan.nproc_per_node} trainer processes ({plan.nproc_source})")
    if Path(plan.data).is_dir():  # a folder is checked where it is, before anything is copied
        _check_data(cfg, Path(plan.data))
    open_run_dir(plan, cfg)
    print(f"run {plan.run_dir} ({'continuing' if plan.continuing else 'new'})")
    plan.marks.update({job_report.JOB_START: plan.job_start, job_report.CHECKS_START: started,
                       job_report.CHECKS_END: time.time()})
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
    from segtrain.data.staged_decode import StagedDecode
    from segtrain.preflight import decoded_pairs

    started = time.time()
    plan = Plan.load(args.plan)
    cfg = load_config(plan.config, plan.overrides)
    with StagedDecode(skip=decoded_pairs(Path(plan.data))) as decode:  # large files decoded beside the copy
        report = stage_dataset(Path(plan.data), plan.work_data,  # the staging cache decodes them itself
                               staged=None if cfg.data.cache else decode.staged)
        print(f"staged data set: {report.summary()}")
        if not report.ok:
            return EXIT_FAILED
        start = time.monotonic()
        corrupt = decode.corrupt()
        if decode.pairs:
            print(f"decoded every tile of {decode.pairs} scene and mask pairs beside the copy (waited "
                  f"{time.monotonic() - start:.1f} s after it)" + "".join(
                      f"\nwarning: {c}; training skips the tiles that touch it" for c in corrupt))
    root = staged_root(plan.work_data)
    if Path(plan.data).is_dir():  # same files, sizes and times: what the frontend checked is not checked again
        memo.carry(plan.data, root)
    if not Path(plan.data).is_dir():  # an archive can only be checked once unpacked
        _check_data(cfg, root)
    report = sync_tree(Path(plan.run_dir), plan.work_run)  # a new run too: its run.json names this job
    if plan.continuing:
        print(f"staged run {plan.run_dir}: {report.summary()}")
    if not report.ok:
        print(f"staging run {plan.run_dir} FAILED: {report.summary()}")
        return EXIT_FAILED
    if plan.continuing:
        if plan.node_rank and not plan.trainer_run.is_dir():  # every rank resumes from the checkpoint there
            raise UserError(f"{plan.trainer_run}: rank 0's run directory is not on this node: this site's scratch "
                            f"path differs between nodes ({plan.scratch} here), so a run cannot be continued on "
                            "several nodes; continue it on one")
    if plan.node_rank == 0:  # the other nodes write nothing that reaches storage
        RunDir(plan.work_run).info.keep_data_source(plan.data)
    if cfg.data.cache:
        from segtrain.data.cache import build_cache

        start = time.monotonic()
        cached = build_cache(dataclasses.replace(cfg.data, root=str(root)), Path(plan.scratch) / "cache")
        shutil.rmtree(plan.work_data)  # the cache is a complete data root; scratch space is better kept free
        print(f"built the staging cache {cached} in {time.monotonic() - start:.1f} s")
        root = cached
    plan.data_root = str(root)
    plan.marks.update({job_report.STAGE_START: started, job_report.STAGE_END: time.time()})
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


# ---- train-args ---------------------------------------------------------------------------------
def trainer_args(plan: Plan, cfg: Config, now: float,
                 deadline_file: Optional[Path] = None) -> tuple[list[str], Optional[float]]:
    """``segtrain`` arguments of this job's trainer, and the time limit in them (None: none); rank 0's
    trainer follows ``deadline_file``, which ``deadline`` rewrites after a qextend."""
    if plan.data_root is None:
        raise UserError(f"{plan.work_data}: the data set was not staged (run the stage step first)")
    on_scratch = [f"data.root={json.dumps(plan.data_root)}"] + (["data.cache=false"] if cfg.data.cache else [])
    if plan.study is not None:  # a search worker: its trials are runs in the study folder, on storage
        words = ["search", "work", plan.study, *on_scratch, "--worker", plan.worker]
    else:  # data.cache=false: data.root already is the cache built on scratch
        words = ["train", plan.config, *plan.overrides, *on_scratch, "--run-dir", str(plan.trainer_run)]
    if plan.node_rank == 0 and plan.study is None:  # rank 0 writes the run
        words += ["--mirror", plan.run_dir]
    limit = None
    if plan.walltime_s is not None:
        limit = walltime.training_time_limit(plan.walltime_s, now - plan.job_start, plan.margin_s)
        words += ["--time-limit", f"{limit:.0f}"]
        if plan.node_rank == 0 and deadline_file is not None:
            words += ["--deadline-file", str(deadline_file)]
    words += nodes.launch_flags(plan.nproc_per_node, plan.hosts, plan.node_rank, plan.rdzv_port, plan.job_id)
    return words, limit


def step_train_args(args: argparse.Namespace) -> int:
    plan = Plan.load(args.plan)
    words, limit = trainer_args(plan, load_config(plan.config, plan.overrides), time.time(),
                                args.plan.parent / DEADLINE_FILE)
    if plan.node_rank == 0 and len(plan.hosts) > 1:
        nodes.check_port_free(plan.hosts[0], plan.rdzv_port)
    plan.marks[job_report.LAUNCH] = time.time()
    plan.save(args.plan)
    _write_words(words)
    note = f" (time limit {format_hms(limit)})" if limit is not None else ""
    print(f"launching: segtrain {qsub.display(words)}{note}", file=sys.stderr)
    return EXIT_OK


def step_deadline(args: argparse.Namespace) -> int:
    """After the scheduler was asked again (``qstat -f``): a walltime raised by ``qextend`` moves the trainer's
    deadline."""
    plan = Plan.load(args.plan)
    scheduler = scheduler_named(plan.scheduler)
    walltime_s, _ = scheduler.walltime(args.job_info.read_text(errors="replace"), plan.job_id, [])
    if walltime_s is None or walltime_s == plan.walltime_s:
        return EXIT_OK
    deadline = walltime.deadline(plan.job_start, walltime_s, plan.margin_s)
    with atomic_open(args.plan.parent / DEADLINE_FILE, "w") as f:
        f.write(f"{deadline:.3f}\n")
    print(f"walltime now {format_hms(walltime_s)} (was {format_hms(plan.walltime_s or 0)}): the trainer stops by "
          f"{time.strftime('%F %T', time.localtime(deadline))}")
    plan.walltime_s = walltime_s
    plan.save(args.plan)
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
    """By node rank, the command (pbsdsh, srun) that runs ``jobs/node.sh MODE`` on each other node.

    pbsdsh starts a task in $HOME with a small environment, so everything node.sh needs goes as
    arguments: the submit folder, the software environment, the first node's scratch (the same
    path on each node of a PBS site; on Slurm, node.sh makes that path on its node) and that node's
    copy of the plan, as one encoded word.
    """
    scheduler = scheduler_named(plan.scheduler)
    script = str(Path(plan.workdir) / NODE_SCRIPT)
    commands = {}
    for rank in range(1, len(plan.hosts)):
        word = dataclasses.replace(plan, node_rank=rank, first_scratch=plan.scratch).to_word()
        program = ["/bin/bash", "-l", script, mode, str(rank), plan.workdir, env_dir, plan.scratch, word]
        commands[rank] = scheduler.node_argv(plan.hosts[rank], plan.host_indices[rank], program)
    return commands


def step_node_args(args: argparse.Namespace) -> int:
    plan = Plan.load(args.plan)
    for mode in args.modes:
        for rank, argv in node_commands(plan, mode, args.env_dir).items():
            with atomic_open(args.out / f"node-{rank}.{mode}.args") as f:
                f.write(_nul_separated(argv))
    return EXIT_OK


def node_status(plan: Plan, mode: str, folder: Path) -> dict[int, Optional[int]]:
    """By node rank, the exit status reported for ``node.sh MODE`` (None: none reported)."""
    scheduler = scheduler_named(plan.scheduler)
    statuses = {}
    for rank in range(1, len(plan.hosts)):
        path = folder / f"node-{rank}.{mode}.out"
        statuses[rank] = scheduler.node_exit_status(path.read_text(errors="replace")) if path.is_file() else None
    return statuses


def step_node_status(args: argparse.Namespace) -> int:
    plan = Plan.load(args.plan)
    statuses = node_status(plan, args.mode, args.dir)
    for rank, status in statuses.items():
        ended = "no exit status reported (not started, or stopped)" if status is None else f"exit {status}"
        print(f"node {rank} ({plan.hosts[rank]}): {args.mode} {ended}")
    return EXIT_OK if all(status == 0 for status in statuses.values()) else 1


# ---- finish -------------------------------------------------------------------------------------
def step_finish(args: argparse.Namespace) -> int:
    """How the trainer ended, the copy-back (verified) and the next job's qsub words (exit 10: none)."""
    plan = Plan.load(args.plan)
    job_info = args.job_info.read_text(errors="replace") if args.job_info and args.job_info.is_file() else None
    walltime_s = scheduler_named(plan.scheduler).walltime(job_info, plan.job_id, [])[0] or plan.walltime_s  # qextend
    copy_start = time.time()
    report = sync_tree(plan.work_run, Path(plan.run_dir))
    copied = {job_report.COPY_START: copy_start, job_report.COPY_END: time.time()}
    print(resubmit.explain(args.trainer_exit, args.terminated_at, plan, walltime_s, stored=report.ok))
    if not report.ok:
        print(f"copy-back FAILED: {report.summary()}")
        print(finish_report(plan, copied, keep_in=None))
        return EXIT_FAILED
    after = f", verified {time.time() - args.terminated_at:.1f} s after SIGTERM" if args.terminated_at else ""
    print(f"copied back to {plan.run_dir}: {report.summary()}{after}")
    print(finish_report(plan, copied, keep_in=Path(plan.run_dir)))
    argv, message = resubmit.resubmission(plan, args.trainer_exit, args.terminated_at, walltime_s)
    if message:
        print(message)
    if argv is None:
        return EXIT_NO_RESUBMIT
    with atomic_open(args.next) as f:
        f.write(_nul_separated(argv))
    return EXIT_OK


def finish_report(plan: Plan, copied: Mapping[str, float], keep_in: Optional[Path]) -> str:
    """The job report's block, from the steps' marks and the figures the trainer left in run.json on scratch, and
    the quality verdict of the run's own eval on storage (``keep_in``, after a verified copy-back); kept with this
    job's segment in ``keep_in``'s run.json as well."""
    segment = job_segment(RunDir(plan.work_run).info.read(), plan.job_id) or {}
    report = job_report.job_report(plan.job_id, {**plan.marks, **copied}, segment.get("timing"), plan.queue_wait_s,
                                   job_report.run_quality(keep_in) if keep_in is not None else None)
    if keep_in is not None and segment:
        RunDir(keep_in).info.keep_report(plan.job_id, report)
    return job_report.format_report(report)


def step_record(args: argparse.Namespace) -> int:
    plan = Plan.load(args.plan)
    job_id = scheduler_named(plan.scheduler).job_id(args.job_id)  # from what the submit command printed
    resubmit.record_resubmission(Path(plan.run_dir), plan.job_id, job_id)
    return EXIT_OK


# ---- command line -------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m segtrain.cluster.job.steps", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="step", required=True)
    p = sub.add_parser("plan")
    p.add_argument("plan", type=Path)
    p.add_argument("--scratch", type=Path, required=True, help="the job's scratch folder")
    p.add_argument("--script", type=Path, help="the running job script ($0), for its walltime directive")
    p.add_argument("--job-start", type=float, default=None, help="when the job started (epoch seconds)")
    p.add_argument("--job-info", type=Path, help="a file holding the scheduler's description of the job "
                   "(its walltime and resources; the job script writes it)")
    p.set_defaults(run=step_plan)
    p = sub.add_parser("node-args")
    p.add_argument("plan", type=Path)
    p.add_argument("modes", nargs="+", choices=NODE_MODES)
    p.add_argument("--env-dir", required=True, help="the software environment (SEGTRAIN_ENV)")
    p.add_argument("--out", type=Path, required=True, help="folder for node-RANK.MODE.args")
    p.set_defaults(run=step_node_args)
    p = sub.add_parser("node-status")
    p.add_argument("plan", type=Path)
    p.add_argument("mode", choices=NODE_MODES)
    p.add_argument("--dir", type=Path, required=True, help="folder of node-RANK.MODE.out (pbsdsh's output)")
    p.set_defaults(run=step_node_status)
    p = sub.add_parser("deadline")
    p.add_argument("plan", type=Path)
    p.add_argument("--job-info", type=Path, required=True, help="the scheduler's fresh description of the job")
    p.set_defaults(run=step_deadline)
    p = sub.add_parser("finish")
    p.add_argument("plan", type=Path)
    p.add_argument("--trainer-exit", type=int, default=None, help="the trainer's exit status (unset: never ran)")
    p.add_argument("--terminated-at", type=float, default=None, help="when the job received SIGTERM (epoch seconds)")
    p.add_argument("--job-info", type=Path, help="the scheduler's latest description of the job (a qextend shows there)")
    p.add_argument("--next", type=Path, required=True, help="where the next job's qsub words go (NUL-separated)")
    p.set_defaults(run=step_finish)
    for name, func in (("stage", step_stage), ("train-args", step_train_args), ("record", step_record)):
        p = sub.add_parser(name)
        p.add_argument("plan", type=Path)
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
