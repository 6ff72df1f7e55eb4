"""How a PBS job's first node starts work on its other nodes: ``pbsdsh``.

PBS lists a job's hosts in ``$PBS_NODEFILE``, one line per MPI rank of each chunk (one line per
chunk without ``mpiprocs``), so a host that holds two chunks appears twice: nodes are told apart
by host name, in file order.

OpenPBS / PBS Pro's ``pbsdsh -n INDEX -- PROGRAM ARGS`` starts PROGRAM on the job's INDEX-th vnode,
the INDEX-th line of the nodefile (``-h HOST`` is Torque's pbsdsh, not PBS Pro's). The task
belongs to the job: PBS accounts it, sends it the job's signals (SIGTERM at the walltime or on
qdel, on every node) and kills it when the job ends, all of which a process started by ssh
escapes. Its arguments arrive word for word, with no shell in between; it starts in ``$HOME``
with PBS's small task environment. pbsdsh itself exits 0 whatever its task did; with ``-v`` it
prints the task's exit status, which is how the first node learns whether another node staged.
"""
from __future__ import annotations

import re
from typing import Optional, Sequence

_EXIT_STATUS = re.compile(r"^\S*pbsdsh: task 0x[0-9A-Fa-f]+ exit status (-?\d+)\s*$", re.MULTILINE)


def pbsdsh_argv(index: int, program: Sequence[str]) -> list[str]:
    """Run ``program`` on the job's vnode ``index``, reporting its exit status (``-v``)."""
    return ["pbsdsh", "-v", "-n", str(index), "--", *program]


def task_exit_status(pbsdsh_output: str) -> Optional[int]:
    """The exit status ``pbsdsh -v`` reported for its task; None when it reported none (spawn failed)."""
    found = _EXIT_STATUS.findall(pbsdsh_output)
    return int(found[-1]) if found else None
