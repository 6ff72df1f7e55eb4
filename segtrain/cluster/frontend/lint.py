"""Lint a submission before qsub sees it: mistakes that cost a day in the queue, found in a second.

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

Site facts (queues, GPUs per node, resource names) come from :mod:`segtrain.cluster.site`.
"""
from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from segtrain.cluster.directives import JobRequest, parse_select
from segtrain.cluster.site import SITES, Site
from segtrain.cluster.directives import format_hms, parse_hms
from segtrain.cluster.job.walltime import default_margin
from segtrain.cluster.qsub import MARGIN
from segtrain.errors import UserError

ERROR, WARNING = "error", "warning"
_OLD_GPU_CAP = re.compile(r"^cuda(\d+)$")


@dataclass(frozen=True)
class Finding:
    level: str  # error: refused before submission; warning: shown, submitted anyway
    where: str
    message: str

    def __str__(self) -> str:
        return f"{self.level}: {self.where}: {self.message}"


def lint_script(script: Path) -> list[Finding]:
    """Problems of the script file itself (its directives are checked with the request)."""
    data = script.read_bytes()
    if b"\r\n" in data:
        line = data[:data.index(b"\r\n")].count(b"\n") + 1
        return [Finding(ERROR, f"{script}:{line}", "CRLF (Windows) line endings: the job would fail with "
                        "'bad interpreter' and PBS may skip its directives; convert with dos2unix")]
    return []


def lint_request(request: JobRequest, site: Site, where: str = "qsub") -> list[Finding]:
    """Problems of the resources a job asks for, against the site's profile."""
    findings: list[Finding] = []
    resources = dict(request.resources)
    chunks = parse_select(resources["select"], f"{where}: select") if resources.get("select") else []
    for name, value in list(resources.items()) + [item for _, chunk in chunks for item in chunk.items()]:
        findings += _check_resource(name, value, site, where)
    if site.scratch_resources and chunks and not any(set(site.scratch_resources) & set(c) for _, c in chunks):
        findings.append(Finding(ERROR, f"{where}: select", f"no scratch resource ({' or '.join(site.scratch_resources)}): "
                                f"{site.name} gives the job no ${site.scratch_variable} without one"))
    gpus = max((_number(chunk.get(site.gpu_resource or "", "")) for _, chunk in chunks), default=0)
    if site.gpus_per_node is not None and gpus > site.gpus_per_node:
        findings.append(Finding(ERROR, f"{where}: select", f"{site.gpu_resource}={gpus} in one chunk, but no "
                                f"{site.name} node has more than {site.gpus_per_node} GPUs; use several chunks"))
    if resources.get("walltime"):
        walltime_s = parse_hms(resources["walltime"], f"{where}: walltime")
        findings += _check_walltime(walltime_s, gpus, request.queue, site, where)
        findings += _check_margin(walltime_s, request.variables.get(MARGIN), where)
    return findings


def _check_margin(walltime_s: float, margin: Optional[str], where: str) -> list[Finding]:
    """A walltime no longer than the margin kept for the final checkpoint and copy-back trains nothing."""
    margin_s = parse_hms(margin, MARGIN) if margin else default_margin(walltime_s)
    if walltime_s > margin_s:
        return []
    source = f"{MARGIN}={margin}" if margin else "the default: 5 %, at least 1 minute"
    return [Finding(ERROR, f"{where}: walltime={format_hms(walltime_s)}", f"no longer than the {format_hms(margin_s)} "
                    f"kept at the end for the checkpoint and the copy-back ({source}): the trainer would get no time; "
                    "ask for a longer walltime, or a shorter --margin")]


def _number(text: str) -> int:
    return int(text) if text.isdigit() else 0


def _check_resource(name: str, value: str, site: Site, where: str) -> list[Finding]:
    old_form = _OLD_GPU_CAP.match(value) if name == "gpu_cap" else None
    if old_form:
        return [Finding(ERROR, f"{where}: gpu_cap={value}", f"the obsolete form {value} makes a job that never "
                        f"starts; write gpu_cap=compute_{old_form.group(1)}")]
    if not site.resource_names or site.knows(name):
        return []
    elsewhere = [other.name for other in SITES.values() if other.knows(name)]
    if elsewhere:
        return [Finding(ERROR, f"{where}: {name}={value}", f"unknown resource {name!r} on {site.name} (qsub: Unknown "
                        f"resource); it is {elsewhere[0]}'s: submit with --site {elsewhere[0]}, or leave it out")]
    close = difflib.get_close_matches(name, sorted(site.resource_names), n=1, cutoff=0.8)
    if close:
        return [Finding(ERROR, f"{where}: {name}={value}", f"unknown resource {name!r} on {site.name}; "
                        f"did you mean {close[0]!r}?")]
    return [Finding(WARNING, f"{where}: {name}={value}", f"{name!r} is not in the {site.name} profile's resources; "
                    "qsub refuses it if the server does not define it")]


def _check_walltime(walltime_s: float, gpus: int, queue: Optional[str], site: Site, where: str) -> list[Finding]:
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


def lint_sbatch(options: dict[str, str], site: Site, account: Optional[str], where: str = "sbatch") -> list[Finding]:
    """Problems of a Slurm submission against the site's profile: no account, too many GPUs, too long."""
    findings: list[Finding] = []
    if site.account_required and not account:
        findings.append(Finding(ERROR, f"{where}: --account", f"{site.name} accepts no job without a project "
                                "account: give --account (sbatch -A)"))
    gpus = _number(options.get("gpus-per-node", ""))
    if site.gpus_per_node is not None and gpus > site.gpus_per_node:
        findings.append(Finding(ERROR, f"{where}: GPUs", f"{gpus} GPUs on one node, but no {site.name} node has "
                                f"more than {site.gpus_per_node}"))
    if options.get("time"):
        findings += _check_walltime(parse_hms(options["time"], f"{where}: --time"), max(gpus, 1),
                                    options.get("partition"), site, where)
    return findings
