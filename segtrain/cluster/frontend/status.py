"""Where each submitted run stands: the submissions log, run directories and the scheduler.

The submissions log (:mod:`segtrain.cluster.submissions`) maps job ids to run directories. A run's
own ``run.json`` says the rest: its status, its job segments and the resubmissions between them;
the scheduler (where it answers) says whether a job that has not written anything yet is queued,
and whether a job whose run still reads "running" has in fact ended (killed: no one wrote the
final status).
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping, Optional, Sequence

import yaml

from segtrain.cluster.frontend.grid import MANIFEST_NAME, is_grid_file, load_grid, read_manifest
from segtrain.cluster.scheduler import ENDED_STATES, QUEUED_STATES, JobState
from segtrain.cluster.submissions import read_log
from segtrain.config import load_config
from segtrain.run.metrics_log import read_metrics
from segtrain.errors import UserError
from segtrain.run.directory import INFO, RunDir
from segtrain.run.report import training_share

States = Callable[[Sequence[str]], Mapping[str, JobState]]  # where jobs stand, by id (a scheduler's states)


@dataclass(frozen=True)
class RunSummary:
    """One row of a status table."""
    name: str
    path: Path
    status: str  # not started, queued, starting (staging), running, resubmitted, stopped, done, failed
    job_id: Optional[str]  # the latest job of the run
    epoch: Optional[int]
    step: Optional[int]
    metric: str  # the monitored validation metric
    last: Optional[float]
    best: Optional[float]
    index: Optional[int] = None  # the grid point
    training_share: Optional[float] = None  # of its jobs' elapsed time (their job reports)


# ---- runs -----------------------------------------------------------------------------------------
def summarize_run(run_dir: Path, jobs: Optional[Mapping[str, JobState]] = None, submitted_as: Optional[str] = None,
                  index: Optional[int] = None) -> RunSummary:
    """A run's status and metrics from its directory, with the scheduler's word (``jobs``) on its latest job."""
    run_dir, jobs = Path(run_dir), jobs or {}
    info = _info(run_dir)
    job_id, pending = latest_job(info, submitted_as)
    metric, records = _monitored_metric(run_dir), list(read_metrics(RunDir(run_dir).metrics))
    val = [r[metric] for r in records if r.get("split") == "val" and isinstance(r.get(metric), (int, float))]
    best = (min(val) if metric == "loss" else max(val)) if val else None
    return RunSummary(
        name=run_dir.name, path=run_dir, status=_status(info, pending, jobs.get(job_id or "")), job_id=job_id,
        epoch=records[-1].get("epoch") if records else None, step=records[-1].get("step") if records else None,
        metric=metric, last=val[-1] if val else None, best=best, index=index,
        training_share=training_share(info.get("segments", [])),
    )


def _info(run_dir: Path) -> dict:
    info = RunDir(run_dir).info
    return info.read() if info.exists() else {}


def latest_job(info: dict, submitted_as: Optional[str] = None) -> tuple[Optional[str], bool]:
    """A run's latest job (its run.json's, else the one it was submitted as), and whether that job is a
    resubmission that has not started yet."""
    started = [j.get("id") for j in info.get("jobs", [])] or [s.get("job_id") for s in info.get("segments", [])]
    resubmissions = info.get("resubmissions", [])
    if resubmissions and resubmissions[-1]["to"] not in started:
        return resubmissions[-1]["to"], True
    return (started[-1] if started else submitted_as), False


def _status(info: dict, pending: bool, job: Optional[JobState]) -> str:
    if not info:  # nothing written yet: only the scheduler knows
        if job is None:
            return "not started"
        if job.state in QUEUED_STATES:
            return "queued"
        return "failed" if job.state in ENDED_STATES else "running"
    status = info.get("status", "?")
    if status == "stopped" and pending:
        return "resubmitted"
    if status in ("starting", "running") and job is not None and job.state in ENDED_STATES:
        return "failed"  # its job ended without the trainer writing a final status: killed
    return status


def _monitored_metric(run_dir: Path) -> str:
    try:
        config = yaml.safe_load(RunDir(run_dir).config.read_text())
        return config["train"]["early_stopping"]["metric"]
    except (OSError, yaml.YAMLError, KeyError, TypeError):
        return "iou"


def run_dirs_under(root: Path) -> list[Path]:
    """Run directories (holding a run.json) in ``root`` and in its grid folders, by path."""
    return sorted(p.parent for p in list(root.glob(f"*/{INFO}")) + list(root.glob(f"*/*/{INFO}")))


def grid_runs(grid_dir: Path) -> list[tuple[Optional[int], Path]]:
    """(point index, run directory) of every point in a grid folder's manifest."""
    manifest = read_manifest(grid_dir / MANIFEST_NAME)
    return [(point["index"], grid_dir / point["run_name"]) for point in manifest["points"]]


def status_rows(runs_root: Path, grid_dir: Optional[Path] = None, states: Optional[States] = None) -> list[RunSummary]:
    """One summary per run: a grid's points (by its manifest), else every logged or found run.

    Job states come from ``states`` (a scheduler's; None: not asked).
    """
    runs_root = Path(runs_root)
    submitted = {}  # run directory -> (job id, point index), the last submission of each run
    for entry in read_log(runs_root):
        if entry.get("run"):
            submitted[(runs_root / entry["run"]).absolute()] = (entry.get("job_id"), entry.get("index"))
    if grid_dir is not None:
        runs = [(index, path.absolute()) for index, path in grid_runs(grid_dir)]
    else:
        found = [p.absolute() for p in run_dirs_under(runs_root)]
        runs = [(index, path) for path, (_, index) in submitted.items()]
        runs += [(None, path) for path in found if path not in submitted]
    latest = (latest_job(_info(path), submitted.get(path, (None, None))[0])[0] for _, path in runs)
    job_ids = sorted({job for job in latest if job})
    jobs = states(job_ids) if states else {}
    return [summarize_run(path, jobs, submitted.get(path, (None, None))[0], index) for index, path in runs]


# ---- tables ---------------------------------------------------------------------------------------
def format_table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """Columns aligned to their widest cell; None shows as '-'."""
    cells = [list(header)] + [["-" if v is None else str(v) for v in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in cells)


def summary_table(summaries: Sequence[RunSummary], with_jobs: bool = True) -> str:
    """The status table people read: run, (grid point, job,) status, epoch, step, last and best metric, and
    the share of its jobs' time spent training."""
    metric = summaries[0].metric if summaries and len({s.metric for s in summaries}) == 1 else "metric"
    columns = {"RUN": lambda s: s.name}
    if any(s.index is not None for s in summaries):
        columns["POINT"] = lambda s: s.index
    if with_jobs:
        columns["JOB"] = lambda s: s.job_id
    columns.update({"STATUS": lambda s: s.status, "EPOCH": lambda s: s.epoch, "STEP": lambda s: s.step,
                    f"LAST {metric}": lambda s: _number(s.last), f"BEST {metric}": lambda s: _number(s.best),
                    "TRAINING": lambda s: None if s.training_share is None else f"{s.training_share:.0%}"})
    return format_table(list(columns), [[cell(s) for cell in columns.values()] for s in summaries])


def _number(value: Optional[float]) -> Optional[str]:
    return None if value is None else f"{value:.4f}"


# ---- the report of ``segtrain runs`` and ``scripts/submit --status`` ---------------------------------
def status_report(target: Optional[Path], runs: Optional[str], states: Optional[States], status_command: str) -> str:
    """The status table of a grid file, a grid folder or a runs folder, with a count by status.

    Job states come from ``states`` (:func:`segtrain.cluster.schedulers.job_states`; None where
    ``status_command`` is not installed).
    """
    runs_root, grid_dir = locate(target, runs)
    summaries = status_rows(runs_root, grid_dir, states)
    if not summaries:
        return f"no runs in {grid_dir or runs_root}"
    counts = Counter(summary.status for summary in summaries)
    return (summary_table(summaries) + f"\n{len(summaries)} runs: "
            + ", ".join(f"{n} {status}" for status, n in counts.most_common())
            + ("" if states else f" (no {status_command} here: runs not started yet show as 'not started')"))


def locate(target: Optional[Path], runs: Optional[str]) -> tuple[Path, Optional[Path]]:
    """(runs folder, grid folder or None) for a grid file, a grid folder or a runs folder."""
    if target is None:
        return Path(runs or "runs"), None
    if target.is_dir():
        return (target.parent, target) if (target / MANIFEST_NAME).is_file() else (target, None)
    if not is_grid_file(target):
        raise UserError(f"{target}: neither a grid file, a grid folder nor a runs folder")
    grid = load_grid(target)
    root = Path(runs or load_config(grid.base, grid.overrides).run.root)
    folders = sorted(m.parent for m in root.glob(f"{grid.name}-*/{MANIFEST_NAME}")
                     if read_manifest(m).get("name") == grid.name)
    if not folders:
        raise UserError(f"{target}: no submission of this grid in {root} (give --runs if it went elsewhere)")
    return root, folders[-1]
