"""Exit codes and the one exception type for problems the user can fix.

Every command turns a :class:`UserError` into one line on stderr and exit code 2, so that a
typo in a config costs seconds on the frontend instead of a crashed GPU job hours later.
"""
from __future__ import annotations

EXIT_OK = 0
EXIT_FAILED = 1  # a crash or a run that cannot go on (e.g. a non-finite loss)
EXIT_USER_ERROR = 2
EXIT_RESUMABLE = 3  # stopped early (walltime, signal) with a checkpoint written; resume it
EXIT_NO_RESUBMIT = 10  # the finish step's answer "copied back, no next job is due" (the job runner reads it)


class UserError(Exception):
    """Bad input the user can fix: printed as one line naming the file or key, exit code 2."""
