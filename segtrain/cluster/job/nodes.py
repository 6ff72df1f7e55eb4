"""A job's nodes: how many trainer processes each runs, and the launcher's flags that make them one job.

The job's hosts come from its node file (:meth:`segtrain.cluster.scheduler.JobEnvironment.nodes`);
the first is where the job script runs: node rank 0, which hosts the rendezvous and writes the run.
How the first node starts work on the others is the scheduler's (``node_argv``).
"""
from __future__ import annotations

import socket
from typing import Callable, Mapping, Optional, Sequence

from segtrain.cluster.pbs.directives import parse_select
from segtrain.cluster.variables import NPROC  # job variable: processes per node, whatever the GPUs (tests on CPU)
from segtrain.device import visible_devices
from segtrain.errors import UserError

# The rendezvous port follows from the job id, so every node knows it from the plan. The band lies
# below Linux's ephemeral range (32768-60999): no outgoing connection on the node is given it.
RDZV_PORT_BASE = 29500
RDZV_PORT_SPAN = 1000


def select_gpus(select: str) -> int:
    """All GPUs a ``select`` statement asks for: ``2:ncpus=8:ngpus=2+1:ngpus=1`` -> 5."""
    chunks = parse_select(select) if select else []
    return sum(count * int(res["ngpus"]) for count, res in chunks if res.get("ngpus", "").isdigit())


def processes_per_node(environ: Mapping[str, str], select: Optional[str], n_nodes: int,
                       cuda_devices: Callable[[], int]) -> tuple[int, str]:
    """One trainer process per GPU the job has on a node, and where that number came from.

    An explicit ``NPROC`` wins. Then ``CUDA_VISIBLE_DEVICES`` (on AMD GPUs ``HIP_VISIBLE_DEVICES`` or
    ``ROCR_VISIBLE_DEVICES``, which LUMI's Slurm sets), which a site that confines jobs to their GPUs
    sets to exactly this job's devices. Then the ``ngpus`` of the select statement,
    shared evenly among the nodes and capped at the devices this node shows (without confinement
    a process sees every GPU of the node, other jobs' too). Without GPUs, one.
    """
    text = environ.get(NPROC, "").strip()
    if text:
        if not text.isdigit() or int(text) < 1:
            raise UserError(f"{NPROC}={text}: expected a whole number >= 1")
        return int(text), f"{NPROC}={text}"
    visible = visible_devices(environ)
    if visible is not None:
        name, devices = visible
        return max(len(devices), 1), f"{name}={environ[name]}"
    gpus = select_gpus(select or "")
    if gpus % n_nodes:
        raise UserError(f"select={select}: {gpus} GPUs cannot be shared evenly by {n_nodes} nodes; "
                        "ask every chunk for the same ngpus")
    wanted = gpus // n_nodes
    if wanted <= 1:
        return 1, f"select={select}" if select else "no select statement"
    return max(min(wanted, cuda_devices()), 1), f"ngpus in select={select}, capped at the visible GPUs"


def cuda_device_count() -> int:
    """The GPUs this process sees (all of the node's where no one confines it)."""
    import torch

    return torch.cuda.device_count()


def rendezvous_port(job_id: str) -> int:
    """Node rank 0's rendezvous port: the job's sequence number folded into the band."""
    digits = "".join(ch for ch in job_id.split(".", 1)[0] if ch.isdigit())  # 13[2] (array subjob) -> 132
    return RDZV_PORT_BASE + int(digits or 0) % RDZV_PORT_SPAN


def check_port_free(host: str, port: int) -> None:
    """A UserError when ``port`` cannot be listened on here (another job on this node has it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the rendezvous store sets it
        try:
            sock.bind(("", port))
        except OSError as exc:
            raise UserError(f"rendezvous port {port} on {host} is taken ({exc.strerror}); submit again: "
                            "the port follows from the job id") from None


def launch_flags(nproc_per_node: int, hosts: Sequence[str], node_rank: int, port: Optional[int],
                 rdzv_id: str) -> list[str]:
    """``segtrain train`` options that start this node's share of the processes (none for one process)."""
    words = ["--nproc-per-node", str(nproc_per_node)] if nproc_per_node > 1 or len(hosts) > 1 else []
    if len(hosts) > 1:
        words += ["--nnodes", str(len(hosts)), "--node-rank", str(node_rank),
                  "--rdzv-endpoint", f"{hosts[0]}:{port}", "--rdzv-id", rdzv_id]
    return words
