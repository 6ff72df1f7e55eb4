"""Running segtrain as PBS batch jobs: the job environment, walltime, staging, submission.

The shell job script ``jobs/train.pbs`` does only what shell is for (traps, ``wait``, PBS
commands); everything that needs tests lives here and is called as
``python -m segtrain.cluster.job STEP``. The local PBS-like runner (:mod:`.local`) runs that
very script on this machine, with stand-ins for ``qsub``, ``qstat`` and ``clean_scratch``.
"""
