"""A submission: a config, a grid file or a run to continue, turned into checked qsub commands.

Everything that can fail is done before the first qsub: every point's config is loaded and its
data set checked (the preflight), each grid value is written as an override that reads back
exactly, the request is linted against the site's limits, and a run directory is chosen for
every point (so the submissions log can map job ids to run directories at once). Then the
commands are printed (``--dry-run``: nothing is written or submitted), given to qsub, or run
here by the local PBS-like runner. A grid's points go as one job each, or as one job array
whose subjobs read their point from the manifest written next to the runs.
"""
from __future__ import annotations

import dataclasses
import datetime as _dt
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Callable, Optional, Sequence

from segtrain.cluster import variables as job_vars
from segtrain.cluster.frontend.grid import (MANIFEST_NAME, Grid, format_override, is_grid_file, load_grid, refuse_repeats,
                                            write_manifest)
from segtrain.cluster.frontend.lint import WARNING, Finding, raise_errors
from segtrain.cluster.frontend.status import RunSummary, summarize_run
from segtrain.cluster.pbs.local.server import LocalServer, describe as describe_jobs
from segtrain.cluster.schedulers import LOCAL, get_scheduler, scheduler_named
from segtrain.cluster.site import JOB_NAME_MAX, SITE_VARIABLE, Site, check_size, get_site, job_name
from segtrain.cluster.submissions import append_log, log_path
from segtrain.cluster.variables import resolve_path
from segtrain.config import Config, load_config
from segtrain.errors import UserError
from segtrain.run.directory import RunDir, create_run_dir, now_iso, run_name, unique_path
from segtrain.search.spec import SearchSpec, is_search_file, load_search
from segtrain.search.study import init_study, is_study, load_study_spec


@dataclass(frozen=True)
class SubmitOptions:
    """What every job of one submission shares, training or predictions (the command line's options)."""
    site: Site
    script: Optional[str] = None  # default: the scheduler's (jobs/train.pbs, jobs/train.slurm; jobs/predict.*)
    resources: dict[str, str] = field(default_factory=dict)  # -l (sbatch) options, over the script's directives
    queue: Optional[str] = None
    name: Optional[str] = None
    max_resubmits: Optional[int] = None
    margin: Optional[str] = None
    env: Optional[str] = None
    account: Optional[str] = None  # Slurm's -A
    umask: Optional[str] = None  # octal: the training job sets it itself (UMASK), and passes it on
    script_kind = "script"  # the scheduler's attribute naming the default job script

    @property
    def scheduler(self):
        return scheduler_named(self.site.scheduler)

    @property
    def job_script(self) -> str:
        return self.script or getattr(self.scheduler, self.script_kind)


@dataclass(frozen=True)
class JobOptions(SubmitOptions):
    """A training submission's options."""
    data: Optional[str] = None
    runs: Optional[str] = None
    check_data: bool = True


@dataclass(frozen=True)
class PlannedRun:
    run_dir: Path  # absolute
    index: Optional[int] = None  # the grid point
    label: str = ""


@dataclass
class Submission:
    workdir: Path
    runs_root: Path
    runs: list[PlannedRun]
    jobs: list[list[str]]  # qsub commands; a job array is one command for every run
    array: bool = False
    grid: Optional[Grid] = None
    grid_dir: Optional[Path] = None
    config: Optional[str] = None  # as the jobs get it (relative to the submit folder where inside it)
    findings: list[Finding] = field(default_factory=list)
    scheduler: str = "pbs"
    # The folder a submission makes (a config's run directory, a grid's folder): named here as a preview,
    # created exclusively by ``execute`` under this name (or name-2, ...); ``replan`` makes the
    # submission for the folder really created, when another took the preview's name meanwhile.
    new_folder: Optional[str] = None
    replan: Optional[Callable[[Path], "Submission"]] = None
    search: Optional[SearchSpec] = None  # a hyperparameter search: its workers as jobs (or a job array)
    study_dir: Optional[Path] = None

    @property
    def manifest(self) -> Optional[Path]:
        return self.grid_dir / MANIFEST_NAME if self.grid_dir else None


# ---- planning (nothing written) -------------------------------------------------------------------
class Preflight:
    """Loads each point's config and checks its data set, each distinct data set once."""

    def __init__(self, workdir: Path, opts: JobOptions):
        self.workdir, self.opts = workdir, opts
        self._checked: set[tuple] = set()

    def __call__(self, config: Path, overrides: Sequence[str]) -> Config:
        cfg = load_config(config, overrides)
        if not self.opts.check_data:
            return cfg
        root = resolve_path(self.workdir, self.opts.data or cfg.data.root)
        key = (root, str(cfg.data.bands), cfg.model.in_channels)
        if key in self._checked or root.is_file():  # an archive is checked by the job, once unpacked
            return cfg
        if not root.exists():
            raise UserError(f"{'--data' if self.opts.data else 'data.root'}: data set {root} not found")
        from segtrain.preflight import check_dataset

        check_dataset(dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, root=str(root))))
        self._checked.add(key)
        return cfg


def resource_options(site: Site, walltime: Optional[str] = None, **changes: Optional[str | int]) -> dict[str, str]:
    """The ``-l`` options of a submission: only what differs from the job script's own directives.

    ``changes`` are the site's resource fields (``ngpus``, ``ncpus``, ``mem``, ``scratch``,
    ``gpu_mem``); None means "as the script asks".
    """
    for key in ("mem", "scratch", "gpu_mem"):
        if changes.get(key) is not None:
            changes[key] = check_size(str(changes[key]), f"--{key.replace('_', '-')}")
    changes = {key: value for key, value in changes.items() if value is not None}
    return scheduler_named(site.scheduler).resource_options(site, walltime, changes)


def choose_site(name: Optional[str], scheduler: Optional[str]) -> Site:
    """The named site (it must use ``scheduler`` when one is named), else the scheduler's default site."""
    if name or os.environ.get(SITE_VARIABLE):
        site = get_site(name)
        if scheduler and scheduler != site.scheduler:
            raise UserError(f"--site {site.name} is a {site.scheduler} site, not {scheduler}")
        return site
    return get_site(get_scheduler(scheduler).default_site)


def submit_site(site: Optional[str], scheduler: Optional[str], local: bool, account: Optional[str] = None) -> Site:
    """The site of a submission (:func:`choose_site`); ``local`` runs its jobs under :data:`LOCAL`'s stand-in here."""
    chosen = choose_site(site, scheduler or (LOCAL.name if local else None))
    title = scheduler_named(chosen.scheduler).title
    if local and chosen.scheduler != LOCAL.name:
        raise UserError(f"--local runs the {LOCAL.title} job here, not on the {title} site {chosen.name}; for {title}, "
                        f"run a {title} on this machine and submit to it")
    if account and not scheduler_named(chosen.scheduler).takes_account:
        raise UserError(f"--account: the {chosen.name} site is a {title} site, which takes no project account")
    return chosen


def plan_target(target: Path, overrides: Sequence[str], opts: JobOptions, workdir: Path, array: bool) -> Submission:
    """What ``scripts/submit TARGET`` means: continue a run directory, run a grid file, or run a config."""
    if target.is_dir() and is_study(target):
        if overrides:
            raise UserError(f"{target}: a study's trials take the values of its search file; overrides are not taken")
        return plan_search(load_study_spec(target), opts, workdir, study_dir=target)
    if target.is_dir():
        if not RunDir(target).config.is_file():
            raise UserError(f"{target}: a folder but not a run directory (no config.yaml)")
        if overrides:
            raise UserError(f"{target}: a run continues with its own config.yaml; overrides are not taken")
        return plan_continue(target, opts, workdir)
    if is_search_file(target):  # before grids: both have a base
        if overrides:
            raise UserError(f"{target}: a search file takes its overrides in its own 'overrides' list")
        return plan_search(load_search(target), opts, workdir)
    if is_grid_file(target):
        return plan_grid(target, overrides, opts, workdir, array)
    if array:
        raise UserError(f"--array: {target} is a config, not a grid file (see configs/grids/)")
    return plan_config(target, overrides, opts, workdir)


def plan_config(config: Path, overrides: Sequence[str], opts: JobOptions, workdir: Path) -> Submission:
    """One new run of ``config``; its run directory (``run.name``, else named as the trainer would) is made
    when the job is submitted and handed to it as ``RUN``."""
    cfg = Preflight(workdir, opts)(config, overrides)
    runs_root = resolve_path(workdir, opts.runs or cfg.run.root)
    name = run_name(config, overrides, cfg.run.name)
    job_config = _for_job(config, workdir)

    def planned(run_dir: Path) -> Submission:
        argv = _job_argv(opts, workdir, job_config, overrides, runs=opts.runs, run=_for_job(run_dir, workdir))
        return _linted(Submission(workdir, runs_root, [PlannedRun(run_dir.absolute())], [argv], config=job_config,
                                  new_folder=name, replan=planned), opts)

    return planned(unique_path(runs_root, name))


def plan_continue(run_dir: Path, opts: JobOptions, workdir: Path) -> Submission:
    """Another job for an existing run (its own config.yaml; its data set as run.json recorded it), with as
    many trainer processes, nodes and GPUs as wrote its checkpoint (unless resources are given)."""
    load_config(RunDir(run_dir).config)  # a config that no longer loads fails here, not in the queue
    run_dir = run_dir.absolute()
    in_grid = (run_dir.parent / MANIFEST_NAME).is_file()
    runs_root = run_dir.parent.parent if in_grid else run_dir.parent  # where the run's submissions are logged
    recorded = RunDir(run_dir).info.read().get("processes") or {}
    kept = ("select", "place", "nodes")  # where the processes ran: PBS's chunks, Slurm's nodes
    resources = {k: v for k, v in (recorded.get("resources") or {}).items() if k in kept}
    resources = {**resources, **opts.resources}
    nproc = recorded.get("per_node") if recorded.get("per_node", 1) > 1 and "select" not in opts.resources else None
    argv = _job_argv(dataclasses.replace(opts, resources=resources), workdir, None, [], runs=opts.runs,
                     run=_for_job(run_dir, workdir), nproc=nproc)
    return _linted(Submission(workdir, runs_root, [PlannedRun(run_dir)], [argv]), opts)


def plan_grid(path: Path, extra: Sequence[str], opts: JobOptions, workdir: Path, array: bool,
              now: Optional[_dt.datetime] = None) -> Submission:
    """Every point of a grid file checked; one job per point, or one job array for all."""
    grid = load_grid(path, extra)
    preflight = Preflight(workdir, opts)
    configs = []
    for point in grid.points:
        try:
            configs.append(preflight(grid.base, point.overrides))
        except UserError as exc:
            raise UserError(f"{grid.path}: point {point.index} ({point.label}): {exc}") from None
    refuse_repeats(grid, configs)
    runs_root = resolve_path(workdir, opts.runs or configs[0].run.root)
    stamp = (now or _dt.datetime.now()).strftime("%Y%m%d-%H%M%S")
    width = max(2, len(str(len(grid.points) - 1)))
    names = [f"{grid.name}-{p.index:0{width}d}" for p in grid.points]
    grid = dataclasses.replace(grid, points=[
        dataclasses.replace(p, overrides=[*p.overrides, format_override("run.name", name, "run.name")])
        for p, name in zip(grid.points, names)])
    array = array and len(grid.points) > 1  # qsub -J needs at least two subjobs

    def planned(grid_dir: Path) -> Submission:
        grid_dir = grid_dir.absolute()
        runs = [PlannedRun(grid_dir / name, p.index, p.label) for p, name in zip(grid.points, names)]
        config, runs_var = _for_job(grid.base, workdir), _for_job(grid_dir, workdir)
        if array:
            jobs = [_job_argv(opts, workdir, None, [], runs=runs_var, name=opts.name or job_name(grid.name),
                              manifest=_for_job(grid_dir / MANIFEST_NAME, workdir),
                              array=f"0-{len(grid.points) - 1}")]
        else:
            jobs = [_job_argv(opts, workdir, config, p.overrides, runs=runs_var,
                              name=opts.name or _point_job_name(grid, p.index)) for p in grid.points]
        return _linted(Submission(workdir, runs_root, runs, jobs, array, grid, grid_dir, config,
                                  new_folder=f"{grid.name}-{stamp}", replan=planned), opts)

    return planned(unique_path(runs_root, f"{grid.name}-{stamp}"))


def plan_search(spec: SearchSpec, opts: JobOptions, workdir: Path, study_dir: Optional[Path] = None,
                now: Optional[_dt.datetime] = None) -> Submission:
    """A study's workers as one job array (one job for one worker): a new study folder for a search file
    (made when submitted), or more workers for an existing study (``study_dir``)."""
    Preflight(workdir, opts)(spec.base, spec.overrides)
    runs_root = resolve_path(workdir, opts.runs or spec.config.run.root)
    name = opts.name or job_name(spec.name)
    array = f"0-{spec.workers - 1}" if spec.workers > 1 else None

    def planned(folder: Path) -> Submission:
        folder = folder.absolute()
        argv = _job_argv(opts, workdir, None, [], runs=None, name=name, array=array, study=_for_job(folder, workdir))
        return _linted(Submission(workdir, runs_root, [], [argv], array=array is not None, search=spec,
                                  study_dir=folder, new_folder=None if study_dir else folder.name,
                                  replan=None if study_dir else planned), opts)

    if study_dir is not None:
        return planned(study_dir)
    stamp = (now or _dt.datetime.now()).strftime("%Y%m%d-%H%M%S")
    return planned(unique_path(runs_root, f"{spec.name}-{stamp}"))


def _job_argv(opts: JobOptions, workdir: Path, config: Optional[str], overrides: Sequence[str], *,
              runs: Optional[str], run: Optional[str] = None, name: Optional[str] = None,
              manifest: Optional[str] = None, array: Optional[str] = None, nproc: Optional[int] = None,
              study: Optional[str] = None) -> list[str]:
    variables = job_vars.job_variables(config, overrides, data=opts.data, runs=runs, run=run,
                                   max_resubmits=opts.max_resubmits, margin=opts.margin, env=opts.env,
                                   manifest=manifest, scratch_base=site_scratch(opts.site, opts.account), nproc=nproc,
                                   umask=opts.umask, study=study)
    resources = {**opts.resources, **({"account": opts.account} if opts.account else {})}
    return opts.scheduler.submit_argv(opts.job_script, variables, name=name or opts.name or job_vars.default_job_name(
        config, run), resources=resources, queue=opts.queue, array=array)


def site_scratch(site: Site, account: Optional[str]) -> Optional[str]:
    """Where a Slurm site's jobs make their scratch folder (SCRATCH_BASE): the project's, so it needs the account."""
    return site.scratch_base.format(account=account.lower()) if site.scratch_base and account else None


def _point_job_name(grid: Grid, index: int) -> str:
    suffix = f"-{index}"
    return job_name(grid.name)[:JOB_NAME_MAX - len(suffix)] + suffix


def _linted(sub: Submission, opts: JobOptions) -> Submission:
    """The submission with lint findings on its script and its request; errors refuse it."""
    sub.scheduler = opts.scheduler.name
    sub.findings = request_findings(opts, sub.jobs[0], sub.workdir)
    raise_errors(sub.findings)
    return sub


def request_findings(opts: SubmitOptions, argv: Sequence[str], workdir: Path) -> list:
    """Lint findings on a submit command (training or predictions), against the site's profile."""
    options = {**opts.resources, **({"partition": opts.queue} if opts.queue else {})}
    return opts.scheduler.lint(argv, options, opts.site, opts.account, opts.job_script, workdir)


def _for_job(path: Path, workdir: Path) -> str:
    """A path as a job variable: relative to the submit folder (the job's $PBS_O_WORKDIR) when inside it."""
    path = resolve_path(workdir, path)
    normal = Path(os.path.normpath(path))
    return os.path.relpath(normal, workdir) if normal.is_relative_to(workdir.absolute()) else str(normal)


# ---- output ---------------------------------------------------------------------------------------
def describe(sub: Submission) -> str:
    """What will run, for people: the points and where their runs go."""
    if sub.search is not None:
        spec = sub.search
        how = f"{spec.workers} workers as one job array" if sub.array else "one worker job"
        return (f"search {spec.path.name}: {spec.n_trials} trials of {len(spec.space)} parameters ({spec.sampler.name} "
                f"sampler, {spec.pruner.name} pruner), {how}; study {_for_job(sub.study_dir, sub.workdir)}")
    if sub.grid is None:
        return f"run {_for_job(sub.runs[0].run_dir, sub.workdir)}"
    how = "as one job array" if sub.array else f"as {len(sub.jobs)} jobs"
    lines = [f"{len(sub.runs)} points of {sub.grid.path} {how}; runs in {_for_job(sub.grid_dir, sub.workdir)}"]
    lines += [f"  {run.index:>3}  {run.run_dir.name}  {run.label}" for run in sub.runs]
    return "\n".join(lines)


def dry_run_text(sub: Submission) -> str:
    """Every qsub command, and the directives the server would queue for each; nothing is run."""
    lines = ["# dry run: nothing is written or submitted", *("# " + line for line in describe(sub).splitlines())]
    if sub.manifest:
        lines.append(f"# first the manifest {_for_job(sub.manifest, sub.workdir)} would be written")
    if sub.new_folder is not None and sub.search is not None:
        lines.append(f"# first the study folder {_for_job(sub.study_dir, sub.workdir)} would be made")
    for argv in sub.jobs:
        lines += scheduler_named(sub.scheduler).dry_run_lines(argv, sub.workdir)
    lines += [f"# {finding}" for finding in sub.findings]
    return "\n".join(lines)


# ---- submitting -----------------------------------------------------------------------------------
def execute(sub: Submission, qsub: Callable[[list[str]], str]) -> list[str]:
    """Make the submission's folder, write the manifest, submit every command with ``qsub``, log each job;
    the job ids. ``sub`` is updated when its folder got another name than the preview's."""
    if sub.new_folder is not None:
        made = create_run_dir(sub.runs_root, sub.new_folder)
        if made != (sub.grid_dir or sub.study_dir or sub.runs[0].run_dir) and sub.replan is not None:
            vars(sub).update(vars(sub.replan(made)))
        sub.new_folder = None
        if sub.search is not None:
            init_study(sub.search, made)
    if sub.grid is not None:
        try:
            write_manifest(sub.manifest, sub.grid, sub.config, [r.run_dir.name for r in sub.runs], now_iso())
        except OSError as exc:
            raise UserError(f"{sub.grid_dir}: cannot write the grid's manifest: {exc}") from None
    ids: list[str] = []
    for number, argv in enumerate(sub.jobs):
        try:
            job_id = qsub(argv)
        except UserError as exc:
            done = f"; jobs {', '.join(ids)} were submitted (see {log_path(sub.runs_root)})" if ids else ""
            what = f"point {sub.runs[number].index}" if sub.grid is not None and not sub.array else "the job"
            raise UserError(f"{what}: {exc}{done}") from None
        ids.append(job_id)
        _log(sub, job_id, sub.runs if sub.array or sub.search else [sub.runs[number]])
    return ids


def _log(sub: Submission, job_id: str, runs: Sequence[PlannedRun]) -> None:
    """Record the job's runs; a log that cannot be written is a warning: the job is queued already."""
    entries = []
    for run in runs:
        entries.append({
            "at": now_iso(), "job_id": scheduler_named(sub.scheduler).subjob_id(job_id, run.index) if sub.array else job_id,
            "array_id": job_id if sub.array else None, "run": os.path.relpath(run.run_dir, sub.runs_root),
            "grid": os.path.relpath(sub.grid_dir, sub.runs_root) if sub.grid_dir else None, "index": run.index,
        })
    try:
        sub.runs_root.mkdir(parents=True, exist_ok=True)
        append_log(sub.runs_root, entries)
    except OSError as exc:
        print(f"warning: job {job_id} is queued but the submissions log could not be written: {exc}")


def lint_warnings(sub: Submission) -> list[str]:
    return [str(f) for f in sub.findings if f.level == WARNING]


def run_here(sub: Submission, site: Site, echo: Optional[IO[bytes]]) -> list[RunSummary]:
    """Submit to the local PBS-like runner and run every job with its chain; each run's summary."""
    server = LocalServer()
    for job_id in execute(sub, lambda argv: server.submit_here(argv, sub.workdir, site)):
        print("\n".join(describe_jobs(server.run_chain(server.get(job_id), echo))), flush=True)
    return [summarize_run(run.run_dir, index=run.index) for run in sub.runs]
