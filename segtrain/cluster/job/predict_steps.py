"""The prediction job (``jobs/predict.pbs``, ``jobs/predict.slurm``): one subjob's scenes, staged, predicted, copied back.

    python -m segtrain.cluster.job.predict_steps run --scratch DIR [--job-start T] [--job-info FILE] [--resubmit FILE]
    python -m segtrain.cluster.job.predict_steps record JOB_ID

``run`` reads the job's variables: ``MANIFEST`` (a prediction manifest, see
:mod:`segtrain.cluster.predictions`) and the subjob, ``SHARD`` or else the array index
(``$PBS_ARRAY_INDEX``, ``$SLURM_ARRAY_TASK_ID``); the scheduler's facts come from
:mod:`segtrain.cluster.scheduler`.
It skips the scenes that are done (sidecar, sizes and checksums verified), removes what a
killed job left half-copied, stages the model to scratch (verified against the manifest's
checksum), and then, scene after scene: stages the scene (verified; the next one is staged
while this one is predicted), predicts it into scratch (outputs tiled, compressed, with
overviews and the scene's georeferencing), copies each output to the predictions folder
(temporary name, verified, renamed), and writes the scene's sidecar last. A scene that cannot
be read or predicted is recorded as failed and the job goes on. Before each scene it checks
that the scene fits into the walltime left (measured speed, a margin kept); when it does not
it stops and writes the submit command (qsub, sbatch) of a job for the rest (``--resubmit``).
SIGTERM (walltime, qdel, scancel) abandons the scene in progress: its temporaries are removed, finished scenes stay.

Exit codes: 0 every scene done; 1 some scene failed or could not be copied back (the others
are done); 2 a user error (manifest, model); 3 stopped early with scenes left (resubmit).
"""
from __future__ import annotations

import argparse
import os
import queue
import signal
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping, Optional, Sequence

from segtrain.cluster import variables as qsub
from segtrain.cluster.job.stage import copy_file, sha256_file
from segtrain.cluster.job.steps import _count
from segtrain.cluster.schedulers import current_job_scheduler, scheduler_named
from segtrain.cluster.submissions import append_log
from segtrain.cluster import walltime
from segtrain.cluster.walltime import format_hms, parse_hms
from segtrain.cluster.predictions import (DONE, Manifest, PredictSettings, model_file, remove_temporaries,
                                          scene_identity, scene_state, state_dir, write_done, write_failed)
from segtrain.run.directory import now_iso
from segtrain.errors import EXIT_FAILED, EXIT_OK, EXIT_RESUMABLE, EXIT_USER_ERROR, UserError

MANIFEST, SHARD = "MANIFEST", "SHARD"
DEFAULT_MAX_RESUBMITS = 10
SAFETY = 1.5  # a scene may take this much longer than the speed measured so far predicts


class Terminated(BaseException):
    """SIGTERM arrived (walltime or qdel): abandon the scene in progress."""


@dataclass
class JobContext:
    """What one subjob knows about itself."""
    manifest: Manifest
    shard: int
    job_id: str
    job_name: str
    workdir: Path
    scratch: Path
    deadline: Optional[float]  # time.time() by which the last scene must be copied back
    resources: dict[str, str]
    passed_on: dict[str, str]  # variables the resubmitted job inherits
    resubmits: int
    max_resubmits: int
    scheduler: str = "pbs"  # the workload manager running the job (segtrain.cluster.scheduler)


@dataclass
class ShardReport:
    scenes: int = 0
    skipped: int = 0  # done before this job
    done: int = 0
    failed: int = 0
    not_copied: int = 0
    left: int = 0  # not attempted: stopped early
    seconds: float = 0.0
    model_seconds: float = 0.0

    def summary(self) -> str:
        rate = self.done / self.seconds * 3600 if self.seconds else 0.0
        busy = self.model_seconds / self.seconds if self.seconds else 0.0
        return (f"{self.scenes} scenes: {self.skipped} already done, {self.done} predicted, {self.failed} failed, "
                f"{self.not_copied} not copied back, {self.left} left; {rate:.0f} scenes/hour, model busy "
                f"{100 * busy:.0f} % of {format_hms(self.seconds)}")


# ---- the job's context ----------------------------------------------------------------------------
def job_context(environ: Mapping[str, str], scratch: Path, job_start: float, job_info: Optional[str]) -> JobContext:
    """The subjob's manifest and scenes, its deadline and resources; ``job_info``: the scheduler's
    description of the job (``qstat -f``, ``scontrol show job``)."""
    scheduler = current_job_scheduler(environ)
    env = scheduler.require_job(environ)
    workdir = env.workdir.resolve()
    var = {name: qsub.decode_value(environ.get(name, "")) for name in
           (MANIFEST, SHARD, qsub.MARGIN, qsub.MAX_RESUBMITS, qsub.RESUBMITS)}
    if not var[MANIFEST]:
        raise UserError(f"{MANIFEST} is not set: submit predictions with scripts/submit --predict MODEL SCENES...")
    manifest = Manifest.load(workdir / var[MANIFEST])
    shard = _count(var, SHARD, env.array_index)
    manifest.shard(shard)  # an index outside the manifest fails here
    walltime_s, source = scheduler.walltime(job_info, env.job_id, [workdir / scheduler.predict_script])
    deadline = None
    if walltime_s is not None:
        margin_s = walltime.margin(walltime_s, parse_hms(var[qsub.MARGIN], qsub.MARGIN) if var[qsub.MARGIN] else None)
        deadline = walltime.deadline(job_start, walltime_s, margin_s)
        print(f"walltime {format_hms(walltime_s)} from {source}; scenes end by "
              f"{format_hms(deadline - job_start)}, {format_hms(margin_s)} kept for the copy-back")
    return JobContext(
        manifest=manifest, shard=shard, job_id=env.job_id, job_name=env.job_name or "predict", workdir=workdir,
        scratch=scratch, deadline=deadline, resources=scheduler.granted(job_info, env.job_id),
        scheduler=scheduler.name,
        passed_on={name: environ[name] for name in (qsub.ENV_VARIABLE, qsub.MARGIN, qsub.SCRATCH_BASE)
                   if environ.get(name)},
        resubmits=_count(var, qsub.RESUBMITS, 0), max_resubmits=_count(var, qsub.MAX_RESUBMITS, DEFAULT_MAX_RESUBMITS),
    )


# ---- staging ------------------------------------------------------------------------------------
def stage_model(manifest: Manifest, scratch: Path) -> Path:
    """The model on scratch, as the backend loads it; refused when it is not the model submitted."""
    source = Path(manifest.model)
    file = model_file(source, manifest.settings.checkpoint)
    if not file.is_file():
        raise UserError(f"{file}: the model of {manifest.path} is gone")
    staged_root = scratch / "model" / source.name
    staged = staged_root / file.relative_to(source) if source.is_dir() else staged_root
    copy_file(file, staged)
    if sha256_file(staged) != manifest.model_sha256:
        raise UserError(f"{source}: changed since it was submitted ({manifest.path}); submit the predictions again")
    return staged_root


class Stager:
    """Copies the scenes to scratch in a thread, one ahead of the one being predicted (verified copies)."""

    def __init__(self, scenes: Sequence[Path], folder: Path):
        self._ready: queue.Queue = queue.Queue(maxsize=1)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(list(scenes), folder), name="stage", daemon=True)
        self._thread.start()

    def _run(self, scenes: list[Path], folder: Path) -> None:
        for scene in scenes:
            target = folder / scene.name
            try:
                copy_file(scene, target)
                item = (scene, target, None)
            except OSError as exc:
                item = (scene, None, f"cannot stage it: {exc.strerror or exc}")
            while not self._stop.is_set():
                try:
                    self._ready.put(item, timeout=0.2)
                    break
                except queue.Full:
                    continue
            if self._stop.is_set():
                target.unlink(missing_ok=True)
                return

    def next(self) -> tuple[Path, Optional[Path], Optional[str]]:
        """(scene, its copy on scratch or None, why not)."""
        return self._ready.get()

    def close(self) -> None:
        self._stop.set()
        self._thread.join()


# ---- one subjob ---------------------------------------------------------------------------------
def run_shard(ctx: JobContext, load_backend: Callable, say: Callable[[str], None] = print) -> ShardReport:
    """Predict every scene of the subjob that is not done; the report says what happened."""
    from segtrain.predict import PredictOptions, predict_scene

    manifest, settings, out = ctx.manifest, ctx.manifest.settings, Path(ctx.manifest.out)
    scenes = manifest.shard(ctx.shard)
    report = ShardReport(scenes=len(scenes))
    for tmp in remove_temporaries(out, scenes):
        say(f"removed {tmp}, left by a job that was killed")
    todo = []
    for scene in scenes:
        state, _ = scene_state(manifest, scene, checksums=True)
        if state == DONE:
            report.skipped += 1
        else:
            todo.append(scene)
    say(f"subjob {ctx.shard} of {manifest.path.name}: {len(scenes)} scenes, {report.skipped} done and verified, "
        f"{len(todo)} to predict into {out}")
    if not todo:
        return report
    start = time.monotonic()
    backend = load_backend(stage_model(manifest, ctx.scratch), settings)
    say(f"model {manifest.model} ({backend.name})")
    options = PredictOptions(tile=settings.tile, overlap=settings.overlap, batch_size=settings.batch_size,
                             write_prob=settings.prob, progress=False, overviews=True)
    work_out = ctx.scratch / "out"
    stager = Stager(todo, ctx.scratch / "scenes")
    seconds_per_byte: Optional[float] = None
    try:
        for number, _ in enumerate(todo, 1):
            scene, staged, problem = stager.next()
            if report.done and not _fits(ctx.deadline, seconds_per_byte, scene):
                report.left = len(todo) - number + 1
                say(f"stopping before {scene.name}: it would not end before the walltime; {report.left} scenes left")
                break
            began = time.monotonic()
            try:
                if problem:
                    raise UserError(f"{scene}: {problem}")
                result = predict_scene(staged, backend, work_out, options)
            except (Terminated, KeyboardInterrupt):
                report.left = len(todo) - number + 1
                raise
            except Exception as exc:  # a corrupt or unusual scene: recorded, reported, skipped
                message = _one_line(exc, scene)
                write_failed(manifest, scene, message, job_id=ctx.job_id)
                report.failed += 1
                say(f"[{number}/{len(todo)}] FAILED {scene.name}: {message}")
                continue
            finally:
                if staged is not None:
                    staged.unlink(missing_ok=True)
            timing = result.timing
            outputs = [result.mask] + ([result.prob] if result.prob else [])
            try:
                copied = _copy_back(outputs, out)
                write_done(manifest, scene_identity(scene), copied, job_id=ctx.job_id, seconds=round(timing.seconds, 3),
                           model_seconds=round(timing.model_seconds, 3))
            except OSError as exc:
                report.not_copied += 1
                say(f"[{number}/{len(todo)}] NOT COPIED {scene.name}: {exc}; it stays pending")
                continue
            finally:
                for path in outputs:
                    path.unlink(missing_ok=True)
            report.done += 1
            report.model_seconds += timing.model_seconds
            elapsed = time.monotonic() - began
            size = max(scene.stat().st_size, 1)
            seconds_per_byte = max(seconds_per_byte or 0.0, elapsed / size)
            say(f"[{number}/{len(todo)}] {scene.name}: {timing.pixels / 1e6:.2f} Mpx in {elapsed:.1f} s, model busy "
                f"{100 * timing.model_seconds / max(elapsed, 1e-9):.0f} %; {', '.join(copied)} copied back, verified")
    finally:
        stager.close()
        report.seconds = time.monotonic() - start
    return report


def _fits(deadline: Optional[float], seconds_per_byte: Optional[float], scene: Path) -> bool:
    """Whether the scene, at the slowest speed seen so far, ends before the deadline."""
    if deadline is None or seconds_per_byte is None:
        return True
    try:
        size = scene.stat().st_size
    except OSError:
        return True  # it fails fast
    return time.time() + SAFETY * seconds_per_byte * size <= deadline


def _copy_back(outputs: list[Path], out: Path) -> dict[str, dict]:
    """Each output to the predictions folder (temporary name, verified, renamed): name -> size, checksum."""
    copied = {}
    for path in outputs:
        digest = sha256_file(path)
        copy_file(path, out / path.name)
        copied[path.name] = {"size": path.stat().st_size, "sha256": digest}
    return copied


def _one_line(exc: BaseException, scene: Path) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    text = text or type(exc).__name__
    return text if str(scene) in text else f"{type(exc).__name__}: {text}"


def resubmission(ctx: JobContext) -> tuple[Optional[list[str]], str]:
    """The submit command of a job for the subjob's remaining scenes (None: not allowed any more)."""
    scheduler = scheduler_named(ctx.scheduler)
    manifest = os.path.relpath(ctx.manifest.path, ctx.workdir) if ctx.manifest.path.is_relative_to(ctx.workdir) \
        else str(ctx.manifest.path)
    variables = {MANIFEST: manifest, SHARD: str(ctx.shard), qsub.MAX_RESUBMITS: str(ctx.max_resubmits),
                 qsub.RESUBMITS: str(ctx.resubmits + 1), **ctx.passed_on}
    manual = qsub.display(scheduler.submit_argv(scheduler.predict_script, {MANIFEST: manifest, SHARD: str(ctx.shard)}))
    if ctx.resubmits >= ctx.max_resubmits:
        return None, f"not resubmitting: MAX_RESUBMITS={ctx.max_resubmits} reached; to continue: {manual}"
    argv = scheduler.submit_argv(ctx.workdir / scheduler.predict_script, variables, name=ctx.job_name,
                                 resources=ctx.resources)
    return argv, f"resubmission {ctx.resubmits + 1} of at most {ctx.max_resubmits}: {qsub.display(argv)}"


def backend_for(model: Path, settings: PredictSettings):
    """The model, on the GPU where the node has one (``settings.device`` auto), else the CPU."""
    from segtrain.predict import load_backend

    return load_backend(model, settings.device, settings.checkpoint)


# ---- command line ---------------------------------------------------------------------------------
def step_run(args: argparse.Namespace) -> int:
    info = args.job_info.read_text(errors="replace") if args.job_info and args.job_info.is_file() else None
    ctx = job_context(os.environ, args.scratch, args.job_start or time.time(), info)

    def on_term(signum, frame):
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # one is enough: the copy-back of done scenes is over
        raise Terminated()

    signal.signal(signal.SIGTERM, on_term)
    try:
        report = run_shard(ctx, backend_for, say=lambda line: print(line, flush=True))
    except Terminated:
        print("SIGTERM: the scene in progress is abandoned (its temporaries removed); finished scenes are kept; "
              "submit again to predict the rest", flush=True)
        return EXIT_RESUMABLE
    print(f"subjob {ctx.shard}: {report.summary()}", flush=True)
    if report.left:
        argv, message = resubmission(ctx)
        print(message, flush=True)
        if argv is not None and args.resubmit:
            args.resubmit.write_bytes(b"".join(word.encode() + b"\0" for word in argv))
        return EXIT_RESUMABLE
    return EXIT_FAILED if report.failed or report.not_copied else EXIT_OK


def step_record(args: argparse.Namespace) -> int:
    """Log a resubmission's job id in the predictions folder's submissions log."""
    scheduler = current_job_scheduler(os.environ)
    env = scheduler.require_job(os.environ)
    ctx_manifest = Manifest.load(env.workdir / qsub.decode_value(os.environ.get(MANIFEST, "")))
    shard = _count({SHARD: qsub.decode_value(os.environ.get(SHARD, ""))}, SHARD, env.array_index)
    append_log(state_dir(Path(ctx_manifest.out)), [{"at": now_iso(), "job_id": scheduler.job_id(args.job_id),
                                                    "manifest": ctx_manifest.path.name, "shards": [shard],
                                                    "resubmitted_from": env.job_id}])
    return EXIT_OK


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m segtrain.cluster.job.predict_steps",
                                     description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="step", required=True)
    p = sub.add_parser("run")
    p.add_argument("--scratch", type=Path, required=True, help="the job's scratch folder")
    p.add_argument("--job-start", type=float, help="when the job started (epoch seconds)")
    p.add_argument("--job-info", type=Path, help="a file holding the scheduler's description of the job "
                   "(its walltime and resources; the job script writes it)")
    p.add_argument("--resubmit", type=Path, help="where to write the submit words (NUL-separated) of a job for the rest")
    p.set_defaults(run=step_run)
    p = sub.add_parser("record")
    p.add_argument("job_id")
    p.set_defaults(run=step_record)
    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR


if __name__ == "__main__":
    raise SystemExit(main())
