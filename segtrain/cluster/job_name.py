"""Job names that PBS and Slurm both accept, checked before anything is submitted or run.

PBS Pro / OpenPBS check ``qsub -N`` in ``check_job_name`` (``src/lib/Libcmds/ck_job_name.c``): at most
``PBS_MAXJOBNAME`` characters (236 in PBS Pro 19's ``pbs_ifl.h``, 230 in current OpenPBS), the first
one alphabetic, every one a letter or digit (C locale: ASCII) or one of ``- _ + .`` (``.`` since
OpenPBS 20). Slurm's ``--job-name`` takes any such name. A job name is a file name too: PBS, and the
local mode, write the job's output to ``<name>.o<seq>`` in the submit folder, which a ``/`` would leave.
"""
from __future__ import annotations

import re

from segtrain.errors import UserError

MAX_LENGTH = 230  # the lower of the PBS limits above
PATTERN = re.compile(r"[A-Za-z][A-Za-z0-9_.+-]*")


def check_job_name(name: str, flag: str = "--name") -> str:
    """``name``, or a :class:`UserError` saying which rule it breaks (as qsub would refuse it)."""
    if len(name) > MAX_LENGTH:
        raise UserError(f"{flag} {name[:20]!r}...: a job name has at most {MAX_LENGTH} characters, this one {len(name)}")
    if not PATTERN.fullmatch(name):
        raise UserError(f"{flag} {name!r}: a job name starts with a letter (A-Z, a-z) and holds only letters, "
                        "digits and - _ + . (PBS refuses others)")
    return name
