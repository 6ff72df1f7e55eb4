"""Lint a submission before the scheduler sees it: mistakes that cost a day in the queue, found in a second.

What is checked, on the request the server would queue (the job script's ``#PBS`` lines with
the command line's options over them) and on the script file itself:

- CRLF line endings (``/bin/bash^M: bad interpreter``, or directives that never match);
- ``gpu_cap=cudaNN``: MetaCentrum's obsolete form, which makes a job that never starts
  (the current form is ``gpu_cap=compute_NN``);
- no scratch resource on a site whose jobs get ``$SCRATCHDIR`` only when they ask for one;
- a walltime over the queue's maximum (the named queue, or the one routing would pick), or no
  longer than the margin the job keeps for its final checkpoint and copy-back;
- more GPUs in a chunk than any node of the site has;
- resource names the site does not define ("qsub: Unknown resource"): an error when it looks
  like a typo of a known name, a warning otherwise (the site may define more than its profile).

Site facts (queues, GPUs per node, resource names) come from :mod:`segtrain.cluster.site`. What is
shared lives here; each scheduler lints its own request (:mod:`segtrain.cluster.pbs.lint`, and
``lint_sbatch`` in :mod:`segtrain.cluster.slurm`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from segtrain.cluster.site import Site
from segtrain.cluster.variables import MARGIN
from segtrain.cluster import walltime
from segtrain.cluster.walltime import format_hms, parse_hms
from segtrain.errors import UserError

ERROR, WARNING = "error", "warning"


@dataclass(frozen=True)
class Finding:
    level: str  # error: refused before submission; warning: shown, submitted anyway
    where: str
    message: str

    def __str__(self) -> str:
        return f"{self.level}: {self.where}: {self.message}"


def check_margin(walltime_s: float, margin: Optional[str], where: str) -> list[Finding]:
    """A walltime no longer than the margin kept for the final checkpoint and copy-back trains nothing."""
    margin_s = walltime.margin(walltime_s, parse_hms(margin, MARGIN) if margin else None)
    if walltime_s > margin_s:
        return []
    source = f"{MARGIN}={margin}" if margin else "the default: 5 %, at least 1 minute"
    return [Finding(ERROR, f"{where}: walltime={format_hms(walltime_s)}", f"no longer than the {format_hms(margin_s)} "
                    f"kept at the end for the checkpoint and the copy-back ({source}): the trainer would get no time; "
                    "ask for a longer walltime, or a shorter --margin")]


def number(text: str) -> int:
    return int(text) if text.isdigit() else 0


def check_walltime(walltime_s: float, gpus: int, queue: Optional[str], site: Site, where: str) -> list[Finding]:
    wanted = format_hms(walltime_s)
    if queue:
        known = site.queue(queue)
        if known is not None and walltime_s > known.max_walltime_s:
            return [Finding(ERROR, f"{where}: walltime={wanted}", f"queue {queue} takes at most "
                            f"{format_hms(known.max_walltime_s)}")]
        return []
    kind = [q for q in site.queues if q.gpu == (gpus > 0)]
    if kind and site.route(walltime_s, gpus) is None:
        longest = max(kind, key=lambda q: q.max_walltime_s)
        return [Finding(ERROR, f"{where}: walltime={wanted}", f"longer than any {site.name} queue takes "
                        f"({longest.name}: at most {format_hms(longest.max_walltime_s)}); resubmission "
                        "continues a run across jobs, so a shorter walltime loses nothing")]
    return []


def raise_errors(findings: list[Finding]) -> None:
    """One UserError line with every error (warnings are the caller's to print)."""
    errors = [f for f in findings if f.level == ERROR]
    if errors:
        more = f" (and {len(errors) - 1} more: " + "; ".join(map(str, errors[1:])) + ")" if len(errors) > 1 else ""
        raise UserError(f"lint: {errors[0].where}: {errors[0].message}{more}")
