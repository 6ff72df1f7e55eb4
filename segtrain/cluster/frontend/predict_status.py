"""Where the predictions of a folder stand: per submission and subjob, scenes done, failed and pending.

The sidecars say what is done or failed (sizes checked; the jobs check checksums); the
submissions log says which job (or resubmitted job) has each subjob, and the scheduler (where it
answers) whether that job is queued, running or has ended.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from segtrain.cluster.frontend.status import States, format_table
from segtrain.cluster.predictions import DONE, FAILED, PENDING, Manifest, manifests, scene_state, state_dir
from segtrain.cluster.scheduler import Scheduler
from segtrain.cluster.submissions import read_log
from segtrain.errors import UserError


@dataclass(frozen=True)
class SubjobStatus:
    manifest: str
    shard: int
    job_id: Optional[str]
    job_state: str
    counts: dict[str, int]


def is_predictions_folder(path: Path) -> bool:
    return bool(manifests(Path(path)))


def subjob_jobs(out: Path, scheduler: Scheduler) -> dict[tuple[str, int], str]:
    """(manifest name, subjob) -> the latest job that has it, from the submissions log."""
    jobs = {}
    for entry in read_log(state_dir(out)):
        shards = entry.get("shards") or []
        array = len(shards) > 1 and not entry.get("resubmitted_from")
        for shard in shards:
            job = entry["job_id"]
            if array:
                job = scheduler.subjob_id(job, shard)
            jobs[(entry.get("manifest"), shard)] = job
    return jobs


@dataclass(frozen=True)
class FolderStatus:
    subjobs: list[SubjobStatus]
    scenes: dict[str, tuple[str, str]]  # scene -> (state under its latest manifest, why it failed)

    @property
    def complete(self) -> bool:
        return all(state == DONE for state, _ in self.scenes.values())

    def text(self) -> str:
        table = format_table(["MANIFEST", "SUBJOB", "JOB", "JOB STATE", "DONE", "FAILED", "PENDING"],
                             [[r.manifest, r.shard, r.job_id, r.job_state, r.counts[DONE], r.counts[FAILED],
                               r.counts[PENDING]] for r in self.subjobs])
        words = [state for state, _ in self.scenes.values()]
        lines = [table, f"{len(words)} scenes: {words.count(DONE)} done, {words.count(FAILED)} failed, "
                        f"{words.count(PENDING)} pending"]
        lines += [f"  failed {Path(scene).name}: {error}" for scene, (state, error) in self.scenes.items()
                  if state == FAILED]
        if not self.complete:
            lines.append("submit the same command again to predict the pending and failed scenes (done ones are skipped)")
        return "\n".join(lines)


def folder_status(out: Path, scheduler: Scheduler, states: Optional[States] = None) -> FolderStatus:
    """Each subjob's counts, and every scene's state under its latest manifest (job states from ``states``,
    a scheduler's; None: not asked)."""
    out = Path(out)
    paths = manifests(out)
    if not paths:
        raise UserError(f"{out}: no prediction manifests in {state_dir(out)} (not a predictions folder)")
    jobs = subjob_jobs(out, scheduler)
    asked = states is not None
    known = states(sorted(set(jobs.values()))) if states else {}
    rows, scenes = [], {}
    for path in paths:
        manifest = Manifest.load(path)
        for index in range(len(manifest.shards)):
            counts = {DONE: 0, FAILED: 0, PENDING: 0}
            for scene in manifest.shard(index):
                state, error = scene_state(manifest, scene)
                counts[state] += 1
                scenes[str(scene)] = (state, error)
            job = jobs.get((path.name, index))
            rows.append(SubjobStatus(path.name, index, job, _word(known.get(job)) if job and asked else "-", counts))
    return FolderStatus(rows, scenes)


def _word(state) -> str:
    if state is None:
        return "?"
    if state.state in "FX":
        return f"ended ({state.exit_status})"
    return {"Q": "queued", "H": "held", "W": "waiting", "R": "running", "E": "exiting", "B": "running"}.get(
        state.state, state.state)
