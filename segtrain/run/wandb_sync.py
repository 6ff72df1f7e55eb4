"""Upload a run's W&B data after the fact: every job segment, in order, into one W&B run.

Jobs on the cluster log W&B offline: each job segment of a resumed run writes its own folder
``<run>/wandb/offline-run-<time>-<id>`` with the same run id. Two ways up:

- ``segments``: ``wandb sync --id ID`` of those folders, which W&B appends in order into one
  run. Only right when they continue each other exactly: each segment starts at the step where
  the one before ended, and every segment but the last ended cleanly (exit 0 or 3: it logged
  nothing after its last checkpoint, so no step is logged twice);
- ``replay``: otherwise (a job killed mid-way logged steps that the next job logged again, a
  segment ran without W&B, or the run is still running) ``metrics.jsonl``, the source of truth
  in which a resumed run already dropped a killed segment's extra lines, is logged record by
  record at its ``global_step`` into the W&B run (``resume="allow"``), with the sample figures.

What was uploaded is recorded in ``<run>/wandb/synced.json`` (the method, the segments, the
last step and the sample figures), so a second sync uploads only what is new, and nothing when
nothing is. The upload itself (``wandb sync``, or ``wandb.init`` and ``log``) is a function
given to :func:`sync_run`; everything before it runs without the network.
"""
from __future__ import annotations

import json
import netrc
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Optional
from urllib.parse import urlparse

import yaml

from segtrain.errors import UserError
from segtrain.fsutil import atomic_write_json
from segtrain.run.metrics_log import read_metrics
from segtrain.run.directory import RunDir, now_iso
from segtrain.run.wandb_log import new_wandb_id, wandb_values

MARKER = "synced.json"
METHODS = ("auto", "segments", "replay")
CLEAN_EXITS = (0, 3)  # finished, or stopped with a checkpoint and nothing logged after it
DEFAULT_HOST = "https://api.wandb.ai"
SAMPLES_KEY = "val/samples"  # the replay's sample figures (the trainer's own tables are "samples")


@dataclass
class SyncPlan:
    """What one sync of one run uploads; ``marker`` is synced.json once it has been uploaded."""
    run_dir: Path
    wandb_id: str
    project: str
    entity: Optional[str]
    method: str  # segments, replay, or none (nothing new)
    reason: str
    segments: list[Path] = field(default_factory=list)  # offline folders, in order
    rows: list[tuple[int, dict[str, Any]]] = field(default_factory=list)  # (global_step, W&B values)
    samples: list[tuple[int, Path]] = field(default_factory=list)  # (global_step, figure)
    config: dict = field(default_factory=dict)
    marker: dict = field(default_factory=dict)

    def summary(self) -> str:
        if self.method == "none":
            return f"{self.run_dir}: nothing new to upload ({self.reason})"
        what = (f"{len(self.segments)} offline segment(s)" if self.method == "segments"
                else f"{len(self.rows)} metrics records and {len(self.samples)} sample figure(s) (replay)")
        where = f"{self.entity + '/' if self.entity else ''}{self.project}/{self.wandb_id}"
        return f"{self.run_dir}: {what} -> W&B run {where}; {self.reason}"


# ---- credentials ----------------------------------------------------------------------------------
def require_login(environ: Optional[Mapping[str, str]] = None) -> None:
    """A UserError unless W&B credentials are there (WANDB_API_KEY, or ~/.netrc for the W&B host)."""
    env = os.environ if environ is None else environ
    if env.get("WANDB_API_KEY"):
        return
    host = urlparse(env.get("WANDB_BASE_URL") or DEFAULT_HOST).hostname
    path = Path(env.get("NETRC") or Path(env.get("HOME") or Path.home()) / ".netrc")
    try:
        entry = netrc.netrc(str(path)).authenticators(host) if path.is_file() else None
    except (netrc.NetrcParseError, OSError) as exc:
        raise UserError(f"{path}: unreadable netrc ({exc}); run `wandb login` again") from None
    if not entry or not entry[2]:
        raise UserError(f"not logged in to W&B ({host}): run `wandb login` or set WANDB_API_KEY, then sync "
                        "again; nothing was uploaded")


# ---- planning (no network) ------------------------------------------------------------------------
def offline_dirs(run_dir: Path, wandb_id: str) -> list[Path]:
    """The run's offline W&B folders, one per job segment, oldest first (their names carry the time)."""
    return sorted(p for p in (run_dir / "wandb").glob(f"offline-run-*-{wandb_id}") if p.is_dir())


def continuous(info: dict, folders: list[Path]) -> tuple[bool, str]:
    """Whether the offline segments can be appended into one W&B run as they are, and why (not)."""
    segments = info.get("segments", [])
    if info.get("status") == "running":
        return False, "the run is still running, or its job died before it could say otherwise"
    if len(folders) != len(segments):
        return False, (f"{len(folders)} offline W&B folder(s) for {len(segments)} job segment(s) (W&B was off, or "
                       "a job died before W&B started)")
    for number, (before, after) in enumerate(zip(segments, segments[1:]), 1):
        if before.get("exit_code") not in CLEAN_EXITS:
            return False, (f"segment {number} (job {before.get('job_id')}) ended with exit {before.get('exit_code')}: "
                           "steps it logged after its last checkpoint were logged again by the next one")
        if after.get("start_step") != before.get("end_step"):
            return False, (f"segment {number + 1} starts at step {after.get('start_step')} but segment {number} "
                           f"ended at step {before.get('end_step')}")
    return True, f"{len(segments)} job segment(s) continue each other exactly"


def plan_sync(run_dir: Path, method: str = "auto", project: Optional[str] = None,
              entity: Optional[str] = None) -> SyncPlan:
    """What a sync of ``run_dir`` uploads now, by the method chosen (or forced) and synced.json."""
    run_dir = Path(run_dir)
    if method not in METHODS:
        raise UserError(f"--method {method!r}: choose one of {', '.join(METHODS)}")
    info = RunDir(run_dir).info.read()
    if not info:
        raise UserError(f"{run_dir}: not a run directory (no run.json)")
    marker = _read_marker(run_dir)
    config = _config(run_dir)
    wandb_cfg = (config.get("logging") or {}).get("wandb") or {}
    wandb_id = marker.get("wandb_id") or info.get("wandb_id") or new_wandb_id()
    plan = SyncPlan(run_dir, wandb_id, project or marker.get("project") or wandb_cfg.get("project") or "segtrain",
                    entity or marker.get("entity") or wandb_cfg.get("entity"), method, "", config=config)
    online = sorted((run_dir / "wandb").glob(f"run-*-{wandb_id}"))
    if online:
        raise UserError(f"{online[0]}: this run logged to W&B online; there is nothing to sync")
    folders = offline_dirs(run_dir, wandb_id)
    ok, why = continuous(info, folders)
    done = marker.get("method")
    if method == "auto":
        method = done or ("segments" if ok else "replay")
    if done and method != done:
        raise UserError(f"{run_dir}: uploaded before by {done} (see {run_dir / 'wandb' / MARKER}); a sync by "
                        f"{method} now would log steps twice")
    if method == "segments" and not ok:
        raise UserError(f"{run_dir}: the offline segments cannot be appended as they are: {why}; "
                        "use --method replay (from metrics.jsonl)")
    plan.method = method
    plan.reason = why if method == "segments" else "replaying metrics.jsonl" + ("" if ok else f": {why}")
    if method == "segments":
        _segments(plan, folders, marker)
    else:
        _replay(plan, marker)
    return plan


def _segments(plan: SyncPlan, folders: list[Path], marker: dict) -> None:
    synced = marker.get("segments", [])
    if [p.name for p in folders[:len(synced)]] != synced:
        raise UserError(f"{plan.run_dir}: the offline folders no longer begin with the ones uploaded before "
                        f"({', '.join(synced)})")
    plan.segments = folders[len(synced):]
    if not plan.segments:
        plan.method, plan.reason = "none", f"all {len(folders)} segment(s) uploaded before"
    plan.marker = {"wandb_id": plan.wandb_id, "project": plan.project, "entity": plan.entity, "method": "segments",
                   "segments": [p.name for p in folders]}


def _replay(plan: SyncPlan, marker: dict) -> None:
    last = marker.get("last") or {"step": -1, "splits": []}
    records = [r for r in read_metrics(RunDir(plan.run_dir).metrics) if "step" in r and "split" in r]
    new = [r for r in records if r["step"] > last["step"] or (r["step"] == last["step"]
                                                             and r["split"] not in last["splits"])]
    plan.rows = [(r["step"], wandb_values(r)) for r in new]
    val_steps = {r["epoch"]: r["step"] for r in records if r["split"] == "val" and "epoch" in r}
    uploaded = set(marker.get("samples", []))
    for figure in sorted(RunDir(plan.run_dir).samples.glob("epoch_*.png")):
        epoch = figure.stem.removeprefix("epoch_")
        if figure.name not in uploaded and epoch.isdigit() and int(epoch) in val_steps:
            plan.samples.append((val_steps[int(epoch)], figure))
    if not plan.rows and not plan.samples:
        plan.method, plan.reason = "none", "every record of metrics.jsonl was uploaded before"
    top = max((r["step"] for r in records), default=last["step"])
    splits = {r["split"] for r in records if r["step"] == top}
    if top == last["step"]:
        splits |= set(last["splits"])
    plan.marker = {"wandb_id": plan.wandb_id, "project": plan.project, "entity": plan.entity, "method": "replay",
                   "last": {"step": top, "splits": sorted(splits)},
                   "samples": sorted(uploaded | {figure.name for _, figure in plan.samples})}


def _read_marker(run_dir: Path) -> dict:
    path = run_dir / "wandb" / MARKER
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise UserError(f"{path}: unreadable ({exc}); remove it only if nothing of this run is on W&B yet") from None


def _config(run_dir: Path) -> dict:
    path = RunDir(run_dir).config
    try:
        return yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise UserError(f"{path}: unreadable config: {exc}") from None


# ---- uploading ------------------------------------------------------------------------------------
Uploader = Callable[[SyncPlan], None]


def sync_run(plan: SyncPlan, upload_segments: Optional[Uploader] = None, upload_replay: Optional[Uploader] = None,
             environ: Optional[Mapping[str, str]] = None) -> bool:
    """Upload what ``plan`` says, then record it in synced.json; False when there was nothing to upload."""
    if plan.method == "none":
        return False
    require_login(environ)
    upload = (upload_segments or wandb_sync_cli) if plan.method == "segments" else (upload_replay or replay_online)
    upload(plan)
    atomic_write_json(plan.run_dir / "wandb" / MARKER, {**plan.marker, "synced": now_iso()})
    return True


def wandb_sync_cli(plan: SyncPlan) -> None:
    """``wandb sync --id ID`` of the new segment folders (W&B appends them in order of start time)."""
    argv = [sys.executable, "-m", "wandb", "sync", "--id", plan.wandb_id, "--project", plan.project,
            *(["--entity", plan.entity] if plan.entity else []), *map(str, plan.segments)]
    out = subprocess.run(argv, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    if out.returncode != 0:
        lines = (out.stderr or out.stdout).strip().splitlines()
        raise UserError(f"wandb sync failed (exit {out.returncode}): {lines[-1] if lines else 'no message'}")


def replay_online(plan: SyncPlan) -> None:
    """Log the plan's rows and figures into the W&B run, online, resuming it when it exists."""
    import wandb

    with tempfile.TemporaryDirectory(prefix="segtrain-wandb-") as scratch:  # wandb's own files: not in the run
        run = wandb.init(project=plan.project, entity=plan.entity, id=plan.wandb_id, name=plan.run_dir.name,
                         resume="allow", mode="online", dir=scratch, config=plan.config,
                         settings=wandb.Settings(console="off", x_disable_stats=True, silent=True, disable_git=True,
                                                 save_code=False))
        run.define_metric("global_step")
        run.define_metric("*", step_metric="global_step")
        for step, values in plan.rows:
            run.log({**values, "global_step": step})
        for step, figure in plan.samples:
            run.log({SAMPLES_KEY: wandb.Image(str(figure)), "global_step": step})
        run.finish()
