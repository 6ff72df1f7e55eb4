"""The one place that knows a PBS site: its resource names, what it adds, and default requests.

Resource names differ between servers: MetaCentrum defines ``ngpus``, ``scratch_local`` and
``gpu_mem``, a stock OpenPBS server refuses them ("qsub: Unknown resource"). The job script's
``#PBS`` lines are the MetaCentrum profile rendered (a test keeps them equal); for another site
``scripts/submit --site NAME`` passes that site's ``-l`` options, which override the
directives resource by resource. The profile also says what the site provides at run time
(a ``$SCRATCHDIR`` and ``clean_scratch``), which the local PBS-like runner imitates, and the
limits a submission is linted against (:mod:`segtrain.cluster.frontend.lint`): its queues with their
longest walltime, the most GPUs a node has, the resource names its server defines.

    python -m segtrain.cluster.site --site openpbs     # directives for a site
"""
from __future__ import annotations

import argparse
import os
import re
from dataclasses import dataclass
from typing import Optional, Sequence

from segtrain.cluster.walltime import format_hms, parse_hms
from segtrain.errors import UserError

SITE_VARIABLE = "SEGTRAIN_SITE"
DEFAULT_SITE = "metacentrum"
DEFAULT_JOB_NAME = "segtrain"
JOB_NAME_MAX = 15  # PBS Pro accepts longer names, but 15 is safe on every version


@dataclass(frozen=True)
class Resources:
    """What one training job asks for (one chunk: a node's share)."""
    ncpus: int = 8
    ngpus: int = 1
    mem: str = "32gb"
    scratch: Optional[str] = "100gb"  # node-local scratch, where the site can reserve it
    gpu_mem: Optional[str] = "10gb"  # minimum memory per GPU, where the site can select on it
    walltime: str = "24:00:00"
    nodes: int = 1  # Slurm's --nodes (on PBS: chunks of the select statement, qsub -l select=N:...)


@dataclass(frozen=True)
class Queue:
    """A queue of a site and the longest walltime it accepts."""
    name: str
    max_walltime_s: float
    gpu: bool  # GPU jobs are routed to GPU queues only, CPU jobs to the others


@dataclass(frozen=True)
class Site:
    """A PBS installation: resource names (None: the server does not define it) and additions."""
    name: str
    description: str
    gpu_resource: Optional[str]
    scratch_resource: Optional[str]
    gpu_mem_resource: Optional[str]
    scratch_variable: Optional[str]  # set by the site to the job's scratch folder
    clean_scratch: Optional[str]  # the site's command that empties it
    defaults: Resources
    qextend: bool = False  # users may extend a running job's walltime (MetaCentrum's walltime-extender)
    queues: tuple[Queue, ...] = ()  # in routing order: a job without -q goes to the first that takes it
    gpus_per_node: Optional[int] = None  # the most GPUs any node has (None: not known)
    resource_names: frozenset[str] = frozenset()  # what the server defines, chunk and job wide
    resource_prefixes: tuple[str, ...] = ()  # families of names, e.g. MetaCentrum's cl_<cluster>
    scratch_resources: tuple[str, ...] = ()  # any of them gives the job a scratch folder
    # Slurm sites (scheduler "slurm"): sbatch options instead of -l resources
    scheduler: str = "pbs"
    account_required: bool = False  # sbatch refuses a job without -A/--account
    scratch_base: Optional[str] = None  # where a job makes its scratch folder; {account} is the project

    def knows(self, resource: str) -> bool:
        return resource in self.resource_names or resource.startswith(self.resource_prefixes)

    def queue(self, name: str) -> Optional[Queue]:
        return next((q for q in self.queues if q.name == name), None)

    def route(self, walltime_s: float, gpus: int) -> Optional[Queue]:
        """The queue a job without ``-q`` lands in, by walltime and GPUs (None: no queue takes it)."""
        fitting = [q for q in self.queues if q.gpu == (gpus > 0) and walltime_s <= q.max_walltime_s]
        return fitting[0] if fitting else None

    def select(self, res: Resources) -> str:
        """The ``select`` statement for one chunk, with only the resources this server knows."""
        parts = ["1", f"ncpus={res.ncpus}"]
        if self.gpu_resource and res.ngpus:
            parts.append(f"{self.gpu_resource}={res.ngpus}")
        parts.append(f"mem={res.mem}")
        if self.scratch_resource and res.scratch:
            parts.append(f"{self.scratch_resource}={res.scratch}")
        if self.gpu_mem_resource and res.gpu_mem and res.ngpus:
            parts.append(f"{self.gpu_mem_resource}={res.gpu_mem}")
        return ":".join(parts)

    def resource_list(self, res: Optional[Resources] = None) -> dict[str, str]:
        res = res or self.defaults
        return {"select": self.select(res), "walltime": res.walltime}

    def qsub_options(self, res: Optional[Resources] = None) -> list[str]:
        """``-l`` options for qsub; on the command line they override the script's directives."""
        return [word for key, value in self.resource_list(res).items() for word in ("-l", f"{key}={value}")]

    def sbatch_options(self, res: Resources, only: Optional[set[str]] = None) -> dict[str, str]:
        """sbatch's long options for one node's share (``only``: just these Resources fields)."""
        def wanted(name: str) -> bool:
            return only is None or name in only

        options = {}
        if wanted("ngpus"):  # over the script's --gpus-per-node (0 too: a CPU job)
            options["gpus-per-node"] = str(res.ngpus or 0)
        if wanted("ncpus"):
            options["cpus-per-task"] = str(res.ncpus)
        if wanted("mem") and res.mem:
            options["mem"] = res.mem.upper().removesuffix("B")  # 32gb -> 32G
        if wanted("nodes") and res.nodes != 1:
            options["nodes"] = str(res.nodes)
        if wanted("walltime"):
            options["time"] = format_hms(parse_hms(res.walltime, "walltime"))
        return options

    def directives(self, res: Optional[Resources] = None) -> list[str]:
        return [f"#PBS -l {key}={value}" for key, value in self.resource_list(res).items()]


HOUR = 3600.0
# Resources every PBS Pro / OpenPBS server defines (chunk and job wide).
PBS_BUILTIN_RESOURCES = frozenset({
    "select", "place", "walltime", "ncpus", "mem", "vmem", "pmem", "pvmem", "mpiprocs", "ompthreads", "host",
    "vnode", "arch", "nchunk", "nodect", "cput", "pcput", "file", "nice", "software", "soft_walltime",
    "min_walltime", "max_walltime", "naccelerators", "accelerator", "accelerator_model", "accelerator_memory",
    "preempt_targets", "site", "start_time",
})
METACENTRUM = Site(
    name="metacentrum", description="MetaCentrum (PBS Pro): ngpus, scratch_local, gpu_mem, $SCRATCHDIR, clean_scratch",
    gpu_resource="ngpus", scratch_resource="scratch_local", gpu_mem_resource="gpu_mem",
    scratch_variable="SCRATCHDIR", clean_scratch="clean_scratch", defaults=Resources(), qextend=True,
    # GPU jobs are routed by walltime: gpu up to 24 h, gpu_long up to 336 h (MetaCentrum's GPU page)
    queues=(Queue("gpu", 24 * HOUR, gpu=True), Queue("gpu_long", 336 * HOUR, gpu=True)),
    gpus_per_node=8,  # the largest GPU nodes (8x A100 / H100 / RTX A4000)
    resource_names=PBS_BUILTIN_RESOURCES | {
        "ngpus", "gpu_mem", "gpu_cap", "cuda_version", "scratch_local", "scratch_ssd", "scratch_shared",
        "scratch_shm", "cluster", "os", "osfamily", "spec", "cpu_flag", "cpu_vendor", "singularity", "luna",
        "infiniband", "node_owner", "pbs_server"},
    resource_prefixes=("cl_",),  # cl_<cluster>=True
    scratch_resources=("scratch_local", "scratch_ssd", "scratch_shared", "scratch_shm"),
)
OPENPBS = Site(
    name="openpbs", description="stock OpenPBS / PBS Pro: ncpus and mem only; scratch is the job's $TMPDIR",
    gpu_resource=None, scratch_resource=None, gpu_mem_resource=None,
    scratch_variable=None, clean_scratch=None, defaults=Resources(ngpus=0, scratch=None, gpu_mem=None),
    resource_names=PBS_BUILTIN_RESOURCES,
)
# Slurm sites. What the profile knows is what a job needs beyond jobs/train.slurm's #SBATCH lines:
# the partitions with their longest time limit, GPUs per node, the project account sbatch requires,
# and where a job's scratch folder goes (no site gives one). Checked against the sites' documentation
# (2026-11): Karolina's qgpu "8x NVIDIA A100 ... per node", "you can allocate 1/8 of the node - 1 GPU and
# 16 cores", a project with remaining resources required, GPU node-hours = GPUs x time / 8
# (docs.it4i.cz: resources-allocation-policy, resource-accounting); its partitions' time limits were not
# found there. LUMI's partitions (lumi-userguide runjobs/scheduled-jobs/partitions.md): small-g 3 days,
# up to 4 nodes, allocated by resources; standard-g 2 days, whole nodes only; dev-g 3 hours; 63 of a
# LUMI-G node's 64 cores usable (lumig-job.md), 7 per GCD; --account=project_<id>.
KAROLINA = Site(
    name="karolina", description="IT4I Karolina (Slurm): qgpu partition, 8x A100 per node, -A PROJECT",
    gpu_resource=None, scratch_resource=None, gpu_mem_resource=None, scratch_variable=None, clean_scratch=None,
    defaults=Resources(ncpus=16, ngpus=1, mem=None, scratch=None, gpu_mem=None, walltime="24:00:00"),
    queues=(Queue("qgpu", 48 * HOUR, gpu=True), Queue("qgpu_exp", 1 * HOUR, gpu=True)),
    gpus_per_node=8, scheduler="slurm", account_required=True,
    scratch_base="/scratch/project/{account}",  # 16 cores per GPU; IT4I accounts memory with the cores
)
LUMI = Site(
    name="lumi", description="LUMI-G (Slurm): small-g/standard-g, 8 GCDs (MI250X) per node, -A project_N",
    gpu_resource=None, scratch_resource=None, gpu_mem_resource=None, scratch_variable=None, clean_scratch=None,
    defaults=Resources(ncpus=7, ngpus=1, mem="60gb", scratch=None, gpu_mem=None, walltime="24:00:00"),
    queues=(Queue("small-g", 72 * HOUR, gpu=True), Queue("standard-g", 48 * HOUR, gpu=True),
            Queue("dev-g", 3 * HOUR, gpu=True)),
    gpus_per_node=8, scheduler="slurm", account_required=True,
    scratch_base="/flash/{account}",  # the fast Lustre; 7 usable cores and ~60 GB per GCD
)
SLURM_GENERIC = Site(
    name="slurm", description="any Slurm: jobs/train.slurm's #SBATCH lines (1 GPU, 8 cores, 32G)",
    gpu_resource=None, scratch_resource=None, gpu_mem_resource=None, scratch_variable=None, clean_scratch=None,
    defaults=Resources(scratch=None, gpu_mem=None), scheduler="slurm",
)
SITES = {site.name: site for site in (METACENTRUM, OPENPBS, KAROLINA, LUMI, SLURM_GENERIC)}
SCRIPT_SITE = METACENTRUM  # the profile jobs/train.pbs's #PBS lines render


def get_site(name: Optional[str] = None) -> Site:
    """The named site, else ``$SEGTRAIN_SITE``, else MetaCentrum."""
    name = name or os.environ.get(SITE_VARIABLE) or DEFAULT_SITE
    if name not in SITES:
        raise UserError(f"site {name!r} is not known; choose one of {', '.join(SITES)} (or set ${SITE_VARIABLE})")
    return SITES[name]


def check_size(text: str, what: str) -> str:
    """A PBS size (``32gb``, ``512mb``, ``1.5tb``), else a UserError naming the option."""
    if not re.fullmatch(r"\d+(\.\d+)?[kmgtp]?[bw]", text.strip().lower()):
        raise UserError(f"{what} {text!r}: expected a size such as 32gb or 500mb")
    return text.strip().lower()


def job_name(text: str) -> str:
    """A PBS-safe job name from any text: letters, digits, ``_.-``, starting with a letter, <= 15; a longer
    name is cut at its last ``-``, ``_`` or ``.`` that fits (``tiny-e3b0c4-20261130-162826`` -> ``tiny-e3b0c4``),
    not mid-word."""
    name = re.sub(r"[^A-Za-z0-9_.-]", "_", text).lstrip("_.-0123456789") or DEFAULT_JOB_NAME
    if len(name) <= JOB_NAME_MAX:
        return name
    head = name[:JOB_NAME_MAX + 1]
    cut = max(head.rfind(sep) for sep in "-_.")
    return name[:cut] if cut > 0 else name[:JOB_NAME_MAX]


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m segtrain.cluster.site", description=__doc__.splitlines()[0])
    parser.add_argument("--site", choices=sorted(SITES), help=f"default: ${SITE_VARIABLE} or {DEFAULT_SITE}")
    site = get_site(parser.parse_args(argv).site)
    print(f"# {site.description}")
    print("\n".join(site.directives()))
    print("# or on the command line: qsub " + " ".join(site.qsub_options()) + " jobs/train.pbs")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
