"""A job's scratch folder on each of its nodes: which one it is, and emptying it once the results are safe.

Which folder a job gets on its first node is a scheduler's fact (``enter_job`` of :mod:`.pbs` and
:mod:`.slurm`); what is shared is here: the job's own folders in it, another node's choice, and the
cleaning, which never touches anything but the job's files.
"""
from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Optional

JOB_FOLDER = ".segtrain-job"  # on the first node: the job's plan and exchange files; its presence marks that node
NODE_FOLDER = ".segtrain-node"  # on another node: its copy of the plan
SITE_SCRATCH = "SCRATCHDIR"  # a site's per-job scratch (MetaCentrum), the same path on every node of the job
SITE_CLEANER = "clean_scratch"  # the site's command that empties $SCRATCHDIR


@dataclass(frozen=True)
class Scratch:
    """A job's scratch folder on one node."""
    path: Path
    owned: bool = False  # the job made the folder (removed once emptied); a site's own one stays

    def usable(self) -> bool:
        return self.path.is_dir() and os.access(self.path, os.W_OK)


def other_node_scratch(environ: Mapping[str, str], first: Path, rank: int, job_makes_it: bool) -> Optional[Scratch]:
    """Another node's scratch (None: none usable): the site's ``$SCRATCHDIR`` where it has one; where this node
    sees the first node's folder itself (it holds :data:`JOB_FOLDER`: a scratch shared between nodes, or the
    local runner's "nodes" on one machine), a folder of its own beside it; else the first node's path, which a
    PBS site makes on every node of a job and the job makes itself where no one does (``job_makes_it``)."""
    if environ.get(SITE_SCRATCH):
        scratch = Scratch(Path(environ[SITE_SCRATCH]))
    elif (first / JOB_FOLDER).exists():
        scratch = Scratch(Path(f"{first}.node{rank}"), owned=True)
    elif job_makes_it or first.is_dir():
        scratch = Scratch(first, owned=job_makes_it)
    else:
        return None
    if scratch.owned:
        try:
            scratch.path.mkdir(parents=True, exist_ok=True)
        except OSError:
            return None
    return scratch if scratch.usable() else None


def empty(scratch: Scratch, environ: Mapping[str, str]) -> bool:
    """Empty a node's scratch (False: something stayed): with the site's ``clean_scratch`` where it has one, else
    entry by entry; the folder itself goes only when the job made it."""
    if environ.get(SITE_SCRATCH) and shutil.which(SITE_CLEANER):
        return subprocess.run([SITE_CLEANER], stdin=subprocess.DEVNULL).returncode == 0
    try:
        for entry in scratch.path.iterdir():
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
        if scratch.owned:
            scratch.path.rmdir()
    except OSError:
        return False
    return True
