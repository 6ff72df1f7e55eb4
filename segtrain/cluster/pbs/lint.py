"""Lint of a PBS submission: the job script file, and the request the server would queue (see
:mod:`segtrain.cluster.frontend.lint`)."""
from __future__ import annotations

import difflib
import re
from pathlib import Path

from segtrain.cluster.frontend.lint import ERROR, WARNING, Finding, check_margin, check_walltime, number
from segtrain.cluster.pbs.directives import JobRequest, parse_select
from segtrain.cluster.site import SITES, Site
from segtrain.cluster.variables import MARGIN
from segtrain.cluster.walltime import parse_hms

_OLD_GPU_CAP = re.compile(r"^cuda(\d+)$")


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
    gpus = max((number(chunk.get(site.gpu_resource or "", "")) for _, chunk in chunks), default=0)
    if site.gpus_per_node is not None and gpus > site.gpus_per_node:
        findings.append(Finding(ERROR, f"{where}: select", f"{site.gpu_resource}={gpus} in one chunk, but no "
                                f"{site.name} node has more than {site.gpus_per_node} GPUs; use several chunks"))
    if resources.get("walltime"):
        walltime_s = parse_hms(resources["walltime"], f"{where}: walltime")
        findings += check_walltime(walltime_s, gpus, request.queue, site, where)
        findings += check_margin(walltime_s, request.variables.get(MARGIN), where)
    return findings


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
