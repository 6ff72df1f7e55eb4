"""Running segtrain as batch jobs on PBS Pro or Slurm, split by where the code runs.

- :mod:`.frontend`: at submit time, on the cluster's frontend or a laptop: grids of configs
  (:mod:`.frontend.grid`), the plan of jobs to submit (:mod:`.frontend.plan`), lint of job
  resources, status of runs, fetching results.
- :mod:`.job`: inside a running job, called by ``jobs/train.sh`` (under ``jobs/train.pbs`` or ``jobs/train.slurm``) as
  ``python -m segtrain.cluster.job.steps STEP``: the job's plan, staging, the walltime, the
  nodes, and the decision to resubmit (:mod:`.job.steps`).
- :mod:`.local`: the PBS-like stand-in that runs the very same job script on this machine.
- Shared by all three: :mod:`.site` (a site's resource names and queues), :mod:`.directives`
  (``#PBS`` lines, ``qsub`` options, durations) and :mod:`.qsub` (the words of a ``qsub`` call
  and of the job's variables); :mod:`.scheduler` with :mod:`.pbs` and :mod:`.slurm`: everything
  that differs between the two workload managers.

The shell job script does only what shell is for (traps, ``wait``, scheduler commands); everything
that needs tests lives here.
"""
