"""Predictions as a job array: scenes collected, checked against the folder's sidecars, sharded into subjobs.

Everything that can fail is done before the first qsub: the model is loaded (a file that is
not a segtrain model fails here, not in the queue), every scene named is found, two scenes
whose outputs would have the same name are refused, as is a scene whose outputs would
overwrite another scene's. Scenes already done (their sidecar matches the scene, the model and
the settings; sizes checked here, checksums by the job) are left out, so submitting the same
command again predicts only what is missing or failed. The rest is split into subjobs of at
most ``per_job`` scenes and ``per_job_bytes`` of input, in name order; the manifest maps each
subjob to its scenes, and one job array (or a single job) is submitted for them.
"""
from __future__ import annotations

import datetime as _dt
import glob
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Sequence

from segtrain.cluster import variables as qsub
from segtrain.cluster.frontend.lint import WARNING, Finding, raise_errors
from segtrain.cluster.frontend.plan import SubmitOptions, request_findings, site_scratch
from segtrain.cluster.schedulers import scheduler_named
from segtrain.cluster.site import job_name
from segtrain.cluster.submissions import append_log
from segtrain.cluster.job.predict_steps import MANIFEST, SHARD
from segtrain.cluster.job.stage import sha256_file
from segtrain.cluster.predictions import (DONE, FAILED, MANIFEST_PREFIX, Manifest, PredictSettings, model_file,
                                          output_names, read_sidecar, scene_state, state_dir)
from segtrain.errors import UserError
from segtrain.run.directory import now_iso

SCENE_SUFFIXES = (".tif", ".tiff")
LIST_SUFFIXES = (".txt", ".csv", ".lst", ".list")
DEFAULT_PER_JOB = 50


@dataclass(frozen=True)
class ArrayOptions(SubmitOptions):
    """The job side of a prediction submission (the command line's resource and job options)."""
    script_kind = "predict_script"  # jobs/predict.pbs, jobs/predict.slurm


@dataclass
class PredictSubmission:
    workdir: Path
    manifest: Manifest
    manifest_path: Path
    scenes: int  # named
    done: int  # already done, left out
    failed_before: int  # failed before: tried again
    argv: Optional[list[str]]  # None: nothing left to predict
    findings: list[Finding] = field(default_factory=list)
    scheduler: str = "pbs"
    model_description: str = ""


# ---- scenes -------------------------------------------------------------------------------------
def collect_scenes(items: Sequence[str], cwd: Path) -> list[Path]:
    """Scene files from files, folders (their .tif files), glob patterns and list files (one path a line,
    relative to the list's folder; ``#`` comments); absolute, in the order given, each once."""
    found: list[Path] = []
    for item in items:
        path = (cwd / item).absolute()
        if path.is_dir():
            found += sorted(p for p in path.iterdir() if p.suffix.lower() in SCENE_SUFFIXES and p.is_file())
        elif path.is_file() and path.suffix.lower() in LIST_SUFFIXES:
            found += _listed(path)
        elif path.is_file():
            found.append(path)
        elif glob.has_magic(item):
            matches = sorted(Path(p).absolute() for p in glob.glob(str(cwd / item)))
            if not matches:
                raise UserError(f"{item}: no file matches")
            found += [p for p in matches if p.is_file()]
        else:
            raise UserError(f"{item}: scene, folder or list file not found")
    scenes = list(dict.fromkeys(Path(os.path.normpath(p)) for p in found))
    if not scenes:
        raise UserError(f"no scenes in {' '.join(items)} (folders are searched for {'/'.join(SCENE_SUFFIXES)} files)")
    stems: dict[str, Path] = {}
    for scene in scenes:
        if scene.stem in stems:
            raise UserError(f"{scene}: same name as {stems[scene.stem]}; their outputs would overwrite each other")
        stems[scene.stem] = scene
    return scenes


def _listed(path: Path) -> list[Path]:
    scenes = []
    for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
        text = line.split("#", 1)[0].strip()
        if not text:
            continue
        scene = (path.parent / text).absolute()
        if not scene.is_file():
            raise UserError(f"{path}:{number}: {text}: scene not found")
        scenes.append(scene)
    return scenes


def shard_scenes(scenes: Sequence[Path], per_job: int, per_job_bytes: Optional[int] = None) -> list[list[Path]]:
    """Consecutive groups of at most ``per_job`` scenes and ``per_job_bytes`` of input (a larger scene alone)."""
    if per_job < 1:
        raise UserError(f"--per-job: must be at least 1, got {per_job}")
    shards: list[list[Path]] = []
    size = 0
    for scene in scenes:
        scene_size = scene.stat().st_size
        if not shards or len(shards[-1]) >= per_job or (per_job_bytes and size + scene_size > per_job_bytes and shards[-1]):
            shards.append([])
            size = 0
        shards[-1].append(scene)
        size += scene_size
    return shards


# ---- planning ------------------------------------------------------------------------------------
def plan_predictions(model: Path, scene_items: Sequence[str], out: Path, settings: PredictSettings, opts: ArrayOptions,
                     workdir: Path, per_job: int = DEFAULT_PER_JOB, per_job_bytes: Optional[int] = None,
                     now: Optional[_dt.datetime] = None) -> PredictSubmission:
    """Check the model and the scenes, leave out what is done, shard the rest; nothing is written."""
    from segtrain.predict import check_tiling, load_backend

    model, out = (Path(os.path.normpath((workdir / path).absolute())) for path in (model, out))
    backend = load_backend(model, "cpu", settings.checkpoint)  # a file that is no segtrain model fails here
    meta = backend.meta
    check_tiling(meta.tile_size if settings.tile is None else settings.tile,
                 meta.overlap if settings.overlap is None else settings.overlap, settings.batch_size)
    scenes = collect_scenes(scene_items, workdir)
    manifest = Manifest(model=str(model), model_sha256=sha256_file(model_file(model, settings.checkpoint)),
                        out=str(out), settings=settings, shards=[])
    _refuse_overwrites(scenes, out)
    states = [scene_state(manifest, scene)[0] for scene in scenes]
    todo = [scene for scene, state in zip(scenes, states) if state != DONE]
    manifest.shards = [[str(p) for p in shard] for shard in shard_scenes(todo, per_job, per_job_bytes)] if todo else []
    stamp = (now or _dt.datetime.now()).strftime("%Y%m%d-%H%M%S")
    path = state_dir(out) / f"{MANIFEST_PREFIX}{stamp}.json"
    n = 2
    while path.exists():
        path, n = state_dir(out) / f"{MANIFEST_PREFIX}{stamp}-{n}.json", n + 1
    manifest.path = path
    sub = PredictSubmission(workdir, manifest, path, len(scenes), states.count(DONE), states.count(FAILED), None,
                            model_description=f"{model} ({backend.name} here; tile {settings.tile or meta.tile_size}, "
                                              f"overlap {meta.overlap if settings.overlap is None else settings.overlap}"
                                              f", threshold {meta.threshold})")
    if manifest.shards:
        sub.argv = _array_argv(opts, workdir, path, len(manifest.shards), out)
        sub.scheduler = opts.scheduler.name
        sub.findings = request_findings(opts, sub.argv, workdir)
        raise_errors(sub.findings)
    return sub


def _refuse_overwrites(scenes: Sequence[Path], out: Path) -> None:
    """No output may replace an input scene, or the outputs of another scene already in ``out``."""
    inputs = {scene.resolve() for scene in scenes}
    for scene in scenes:
        for name in output_names(scene, prob=True):
            if (out / name).resolve() in inputs:
                raise UserError(f"{scene}: its output {out / name} would overwrite an input scene; choose another --out")
        record = read_sidecar(out, scene)
        if record is not None and record.get("scene") not in (None, str(scene)):
            raise UserError(f"{scene}: {out} holds the outputs of another scene of the same name "
                            f"({record.get('scene')}); choose another --out")


def _array_argv(opts: ArrayOptions, workdir: Path, manifest: Path, shards: int, out: Path) -> list[str]:
    variables = {MANIFEST: _for_job(manifest, workdir), SHARD: "0" if shards == 1 else "",
                 qsub.MAX_RESUBMITS: "" if opts.max_resubmits is None else str(opts.max_resubmits),
                 qsub.MARGIN: opts.margin or "", qsub.ENV_VARIABLE: opts.env or ""}
    if site_scratch(opts.site, opts.account):
        variables[qsub.SCRATCH_BASE] = site_scratch(opts.site, opts.account)
    if opts.env is not None and qsub.encode_value(opts.env) != opts.env:
        raise UserError(f"--env {opts.env!r}: the environment path may not contain commas, quotes, backslashes or %")
    resources = {**opts.resources, **({"account": opts.account} if opts.account else {})}
    return opts.scheduler.submit_argv(opts.job_script, variables, name=opts.name or job_name(f"predict-{out.name}"),
                                      resources=resources, queue=opts.queue,
                                      array=f"0-{shards - 1}" if shards > 1 else None)


def _for_job(path: Path, workdir: Path) -> str:
    """A path as the job gets it: relative to the submit folder when inside it."""
    return os.path.relpath(path, workdir) if path.is_relative_to(workdir) else str(path)


# ---- output ----------------------------------------------------------------------------------------
def describe(sub: PredictSubmission) -> str:
    """What will run, for people."""
    m = sub.manifest
    todo = sum(len(shard) for shard in m.shards)
    lines = [f"model {sub.model_description}",
             f"{sub.scenes} scenes: {sub.done} done already, {todo} to predict"
             + (f" ({sub.failed_before} failed before, tried again)" if sub.failed_before else "")
             + (f" in {len(m.shards)} subjob{'s' if len(m.shards) > 1 else ''}" if m.shards else "")
             + f"; outputs in {_for_job(Path(m.out), sub.workdir)}"]
    for index, shard in enumerate(m.shards):
        size = sum(Path(scene).stat().st_size for scene in shard)
        names = [Path(scene).name for scene in shard]
        shown = ", ".join(names) if len(names) <= 3 else f"{names[0]}, {names[1]} ... {names[-1]}"
        lines.append(f"  subjob {index:>3}: {len(shard)} scenes, {size / 1e6:.1f} MB: {shown}")
    return "\n".join(lines)


def dry_run_text(sub: PredictSubmission) -> str:
    lines = ["# dry run: nothing is written or submitted", *("# " + line for line in describe(sub).splitlines())]
    if sub.argv is None:
        return "\n".join(lines + ["# nothing to predict"])
    lines.append(f"# first the manifest {_for_job(sub.manifest_path, sub.workdir)} would be written")
    lines += scheduler_named(sub.scheduler).dry_run_lines(sub.argv, sub.workdir)
    return "\n".join(lines + [f"# {finding}" for finding in sub.findings])


def lint_warnings(sub: PredictSubmission) -> list[str]:
    return [str(f) for f in sub.findings if f.level == WARNING]


# ---- submitting -------------------------------------------------------------------------------------
def execute(sub: PredictSubmission, run_qsub: Callable[[list[str]], str]) -> Optional[str]:
    """Write the manifest, submit, log the job id; the job id (None when nothing is left to predict)."""
    if sub.argv is None:
        return None
    sub.manifest.created = now_iso()
    try:
        sub.manifest.save(sub.manifest_path)
    except OSError as exc:
        raise UserError(f"{sub.manifest_path}: cannot write the manifest: {exc}") from None
    job_id = run_qsub(sub.argv)
    try:
        append_log(state_dir(Path(sub.manifest.out)), [{"at": now_iso(), "job_id": job_id,
                                                        "manifest": sub.manifest_path.name,
                                                        "shards": list(range(len(sub.manifest.shards)))}])
    except OSError as exc:
        print(f"warning: job {job_id} is queued but the submissions log could not be written: {exc}")
    return job_id
