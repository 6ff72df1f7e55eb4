"""Where a job's walltime went: the job report, printed at the end of every training job and kept
in run.json with its job segment.

MetaCentrum asks its users to keep the GPUs they get busy; this is how they see whether they do.
The job's steps know their own marks (wall-clock seconds: job start, checks, staging, the trainer's
launch, the copy-back); the trainer adds its sums (:class:`TrainerClock`: steps, data wait,
validation, checkpoints) and what the GPU did. The phases are laid end to end from the job's
start to the end of the copy-back; what no phase accounts for is shown as "other", so the lines
always add up to the elapsed time.

The report ends with the run's quality verdict: the one its own evaluation recorded (``segtrain eval``,
``RUN/eval/metrics.json``: the model against per-pixel classifiers, same pixels, same calibration rule),
shown only when that evaluation is of the run as it is now and its per-pixel classifiers converged;
otherwise the report says why there is none and how to get it (:func:`run_quality`).
"""
from __future__ import annotations

import json
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Optional, Sequence

from segtrain.run.directory import EVAL, RunDir
from segtrain.run.run_json import trained_to

# The phases, in the order they happen; "other" is the rest of the elapsed time.
PHASES = ("environment", "checks", "staging", "start-up", "training", "validation", "checkpoints", "copy-back")
OTHER = "other"

# The job's marks (epoch seconds), each set by the step that reaches it.
JOB_START, CHECKS_START, CHECKS_END = "job_start", "checks_start", "checks_end"
STAGE_START, STAGE_END, LAUNCH = "stage_start", "stage_end", "launch"
COPY_START, COPY_END = "copy_start", "copy_end"  # the trainer has ended at COPY_START


class TrainerClock:
    """What the trainer spent its time on (one process's life: one job segment), as a stopwatch that
    runs for one phase at a time: training from the first batch in hand, validation and checkpoints
    while they run, training again after them.

    Wall time, not the steps' own time: on a GPU the steps only queue work and the host waits at the
    next synchronization (a logged value, a checkpoint), which still belongs to training. The first
    batch's wait belongs to start-up (the loader's workers are being started); later waits are
    summed as the data wait, a part of training.
    """
    TIMED = ("training", "validation", "checkpoints")

    def __init__(self, now: Callable[[], float] = time.monotonic, wall: Callable[[], float] = time.time) -> None:
        self._now, self._wall = now, wall
        self.first_step_at: Optional[float] = None  # epoch seconds
        self.steps = 0
        self.data_wait_s = 0.0
        self.seconds = dict.fromkeys(self.TIMED, 0.0)
        self._phase: Optional[str] = None
        self._since = 0.0

    def step(self, data_s: float) -> None:
        """A batch is in hand after waiting ``data_s`` for it."""
        if self.first_step_at is None:
            self.first_step_at = self._wall()
            self._switch("training")
        else:
            self.data_wait_s += data_s
        self.steps += 1

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        """Time the block as ``name``, then go on with the phase that ran before it."""
        previous = self._phase
        self._switch(name)
        try:
            yield
        finally:
            self._switch(previous)

    def stop(self) -> None:
        self._switch(None)

    def _switch(self, name: Optional[str]) -> None:
        now = self._now()
        if self._phase is not None:
            self.seconds[self._phase] += now - self._since
        self._phase, self._since = name, now

    def to_dict(self) -> dict[str, Any]:
        return {"first_step_at": self.first_step_at, "steps": self.steps, "data_wait_s": self.data_wait_s,
                "seconds": dict(self.seconds)}


def job_phases(marks: Mapping[str, float], trainer: Optional[Mapping[str, Any]]) -> dict[str, Optional[float]]:
    """Seconds of each phase (None: not reached, or not known) and of "other", from the job's marks and
    the trainer's figures; the values sum to the elapsed time (job start to the end of the copy-back)."""
    trainer = trainer or {}

    def between(start: str, end: str) -> Optional[float]:
        return marks[end] - marks[start] if start in marks and end in marks else None

    # Start-up runs from the launch to the first step; a trainer that took none spent its life starting.
    first_step = trainer.get("first_step_at") or marks.get(COPY_START)
    timed = trainer.get("seconds", {})
    phases: dict[str, Optional[float]] = {
        "environment": between(JOB_START, CHECKS_START),
        "checks": between(CHECKS_START, CHECKS_END),
        "staging": between(STAGE_START, STAGE_END),
        "start-up": first_step - marks[LAUNCH] if first_step is not None and LAUNCH in marks else None,
        "training": timed.get("training"),
        "validation": timed.get("validation"),
        "checkpoints": timed.get("checkpoints"),
        "copy-back": between(COPY_START, COPY_END),
    }
    phases = {name: None if value is None else max(float(value), 0.0) for name, value in phases.items()}
    elapsed = elapsed_s(marks)
    if elapsed is not None:
        phases[OTHER] = max(elapsed - sum(v for v in phases.values() if v is not None), 0.0)
    return phases


def elapsed_s(marks: Mapping[str, float]) -> Optional[float]:
    """From the job's start to the last mark it reached (the end of the copy-back, normally)."""
    if JOB_START not in marks:
        return None
    return max(marks.values()) - marks[JOB_START]


def _none(why: str, run: Optional[str | Path]) -> dict[str, str]:
    """No verdict: why, and how to get one (``run`` None: evaluating again would not help)."""
    found = {"none": why}
    if run is not None:
        found["how"] = f"`segtrain eval {run}` compares the model with per-pixel classifiers trained to convergence"
    return found


def run_quality(run_dir: str | Path) -> dict[str, Any]:
    """The verdict the run's own evaluation recorded (``RUN/eval/metrics.json``), as the job report shows it:
    ``{"verdict", "margin", "split", "checkpoint", "step", "threshold"}``; or ``{"none": why, "how": to get one}``
    when there is no evaluation, it skipped the baseline, a per-pixel classifier that could raise the floor
    stopped at its step budget (:func:`segtrain.baseline.unconverged_floor`: the floor may be understated, issue
    26), or the run has trained on since it was evaluated."""
    path = Path(run_dir) / EVAL / "metrics.json"
    if not path.is_file():
        return _none("not evaluated yet", run_dir)
    try:
        metrics = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        return _none(f"{path} cannot be read: {exc}", run_dir)
    baseline = metrics.get("baseline")
    if not isinstance(baseline, dict):
        return _none(f"{path} has no per-pixel baseline (eval --no-baseline)", run_dir)
    if "floor_not_converged" not in baseline:
        return _none(f"{path} predates per-pixel baselines trained to convergence", run_dir)
    if baseline["floor_not_converged"]:
        return _none(f"the per-pixel {' and '.join(baseline['floor_not_converged'])} of {path} stopped at its step "
                     "budget before converging: the gap eval states is only a bound", None)
    now = trained_to(RunDir(run_dir).info.read())
    if metrics.get("run_step") != now:
        return _none(f"{path} evaluated the run at step {metrics.get('run_step')}; it has trained to step {now} since",
                     run_dir)
    return {"verdict": baseline["verdict"], "margin": baseline["model_minus_best_iou"], "split": metrics["split"],
            "checkpoint": metrics["checkpoint"], "step": metrics["step"], "threshold": metrics["threshold"]}


def job_report(job_id: str, marks: Mapping[str, float], trainer: Optional[Mapping[str, Any]],
               queue_wait_s: Optional[float], quality: Optional[Mapping[str, Any]] = None) -> dict[str, Any]:
    """The report as run.json keeps it (one per job segment) and :func:`format_report` prints it; ``quality``:
    :func:`run_quality` of the run on storage, after the copy-back (None: not looked up)."""
    trainer = trainer or {}
    training, wait = trainer.get("seconds", {}).get("training"), trainer.get("data_wait_s")
    return {
        "job_id": job_id, "queue_wait_s": queue_wait_s, "elapsed_s": elapsed_s(marks),
        "phases_s": job_phases(marks, trainer), "steps": trainer.get("steps"),
        "data_wait_share": wait / training if training and wait is not None else None,
        "gpu": trainer.get("gpu"), "corrupt_tiles": trainer.get("corrupt_tiles") or [],
        "quality": dict(quality) if quality is not None else _none("not looked up by this job", "RUN"),
    }


def format_report(report: Mapping[str, Any]) -> str:
    """The block the job prints at its end: each phase's time and share of the elapsed time."""
    elapsed = report.get("elapsed_s")
    wait = report.get("queue_wait_s")
    lines = [f"---- job report {report.get('job_id', '')}: where the walltime went ----",
             f"queue wait    {_clock(wait) if wait is not None else 'unknown'}",
             f"elapsed       {_clock(elapsed) if elapsed is not None else 'unknown'}  (job start to copy-back done)"]
    for name, seconds in report.get("phases_s", {}).items():
        if seconds is None:  # not reached (the job ended before), or not reported (the trainer was killed)
            lines.append(f"  {name:<12}-")
            continue
        line = f"  {name:<12}{_clock(seconds)}  {_percent(seconds, elapsed):>6}"
        if name == "training":
            share = report.get("data_wait_share")
            steps = report.get("steps")
            line += f"  {steps} step{'' if steps == 1 else 's'}" if steps is not None else ""
            line += f", waiting for data {share:.0%} of it" if share is not None else ""
        lines.append(line)
    lines.append(f"GPU           {format_gpu(report.get('gpu'))}")
    corrupt = report.get("corrupt_tiles") or []
    if corrupt:
        lines.append(f"corrupt       {len(corrupt)} segment(s) did not decode; the tiles touching them were skipped:")
        lines += [f"  {name}" for name in corrupt]
    lines.append(f"quality       {format_quality(report['quality'])}")
    return "\n".join(lines)


def format_quality(quality: Mapping[str, Any]) -> str:
    """One line: the recorded verdict with what it was measured on, or why there is none."""
    if "verdict" not in quality:
        return f"no verdict ({quality['none']})" + (f"; {quality['how']}" if "how" in quality else "")
    return (f"{quality['split']} split, {quality['checkpoint']} checkpoint (step {quality['step']}), threshold "
            f"{quality['threshold']:g}: {quality['verdict']}")


def format_gpu(gpu: Optional[Mapping[str, Any]]) -> str:
    if not gpu:
        return "unknown (the trainer reported nothing)"
    if gpu.get("skipped"):
        return str(gpu["skipped"])
    return (f"{gpu['gpus']} GPU(s), utilization {gpu['utilization_mean']:.0f} % on average (max "
            f"{gpu['utilization_max']:.0f} %), peak memory {gpu['memory_peak_gib']:.1f} of "
            f"{gpu['memory_total_gib']:.1f} GiB, {gpu['samples']} samples while training")


def training_share(segments: Sequence[Mapping[str, Any]]) -> Optional[float]:
    """Training's share of the elapsed time of a run's jobs (those with a report; None: none has one)."""
    reports = [s["report"] for s in segments if isinstance(s.get("report"), dict) and s["report"].get("elapsed_s")]
    elapsed = sum(r["elapsed_s"] for r in reports)
    if not elapsed:
        return None
    return sum(r["phases_s"].get("training") or 0.0 for r in reports) / elapsed


def _clock(seconds: float) -> str:
    """``H:MM:SS.s``: a short job's phases are seconds, a long one's hours."""
    hours, tenths = divmod(round(max(seconds, 0.0) * 10), 36000)
    minutes, tenths = divmod(tenths, 600)
    return f"{hours}:{minutes:02d}:{tenths / 10:04.1f}"


def _percent(seconds: float, whole: Optional[float]) -> str:
    return f"{seconds / whole:.1%}" if whole else ""
