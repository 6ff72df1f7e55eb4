"""Run directories from the cluster to a laptop with rsync: resumable, safe to repeat, no checkpoints by default.

One ``rsync`` does it, run with an argument list (never a shell string), ``-s`` so that the
remote side does not split or expand paths either. ``--partial-dir`` keeps a cut transfer's
pieces aside, so a repeat resumes them and no half-written file ever carries a real name; no
``--delete``: files on the laptop are never removed. Checkpoints (``checkpoints/``) are the bulk
of a run and are left out unless asked for (``best``: only ``best.pt``; ``all``).
"""
from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

from segtrain.errors import UserError
from segtrain.run.directory import RunDir

CHECKPOINTS = ("none", "best", "all")
PARTIAL_DIR = ".rsync-partial"
_REMOTE = re.compile(r"^(?:[A-Za-z0-9._-]+@)?[A-Za-z0-9._-]+:")  # [USER@]HOST:path


@dataclass(frozen=True)
class Location:
    text: str  # as rsync gets it: HOST:path, or an absolute local path
    remote: bool

    def join(self, name: str) -> "Location":
        return Location(f"{self.text.rstrip('/')}/{name}", self.remote)


def location(text: str) -> Location:
    """``USER@HOST:/path`` (remote) or a local path, made absolute: rsync reads ``a:b`` as a host."""
    if text.startswith("-"):
        raise UserError(f"{text!r}: a location cannot start with '-'")
    if _REMOTE.match(text) and not Path(text).exists():
        return Location(text, remote=True)
    return Location(str(Path(text).expanduser().absolute()), remote=False)


def rsync_argv(src: Location, dst: Path, checkpoints: str = "none", dry_run: bool = False) -> list[str]:
    """The rsync command copying the contents of ``src`` into ``dst``."""
    if checkpoints not in CHECKPOINTS:
        raise UserError(f"--checkpoints {checkpoints!r}: choose one of {', '.join(CHECKPOINTS)}")
    filters = {"none": ["--exclude=checkpoints/"],
               "best": ["--include=checkpoints/", "--include=checkpoints/best.pt", "--exclude=checkpoints/*"],
               "all": []}[checkpoints]
    return ["rsync", "-a", "-s", f"--partial-dir={PARTIAL_DIR}", "--out-format=%n", *filters,
            *(["--dry-run"] if dry_run else []), "--", src.text.rstrip("/") + "/", str(dst) + "/"]


def fetch(src: Location, dst: Path, checkpoints: str = "none", dry_run: bool = False,
          timeout_s: Optional[float] = None) -> list[str]:
    """Copy ``src`` into ``dst``; the paths rsync transferred (relative to ``dst``)."""
    if shutil.which("rsync") is None:
        raise UserError("rsync is not installed here: install it (apt install rsync, brew install rsync) and "
                        "run this again; the cluster's frontends have it")
    if not src.remote and not Path(src.text).is_dir():
        raise UserError(f"{src.text}: no such folder")
    dst.mkdir(parents=True, exist_ok=True)
    try:
        out = subprocess.run(rsync_argv(src, dst, checkpoints, dry_run), capture_output=True, text=True,
                             stdin=subprocess.DEVNULL, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        raise UserError(f"rsync from {src.text}: no end within {timeout_s:.0f} s; run it again to resume") from None
    if out.returncode != 0:
        message = (out.stderr or out.stdout).strip().splitlines()
        raise UserError(f"rsync from {src.text} failed (exit {out.returncode}): "
                        f"{message[-1] if message else 'no message'}; run it again to resume")
    return [line for line in out.stdout.splitlines() if line and not line.endswith("/")]


def runs_brought(dst: Path, files: Sequence[str]) -> list[Path]:
    """The run directories (holding a run.json) that the transferred files belong to."""
    runs = set()
    for rel in files:
        for folder in (dst / rel).parents:
            if folder == dst or dst not in folder.parents:
                break
            if RunDir(folder).info.exists():
                runs.add(folder)
                break
    return sorted(runs)
