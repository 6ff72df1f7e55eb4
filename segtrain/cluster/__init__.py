"""Running segtrain as batch jobs on PBS Pro or Slurm: one interface, one package per scheduler.

- :mod:`.scheduler`: what the rest asks of a workload manager (the interface), and the facts shared by
  both (a running job's identity, job states); :mod:`.schedulers` picks one (named, installed, running
  this job, or :data:`~.schedulers.LOCAL` for ``--local``).
- :mod:`.pbs` and :mod:`.slurm`: everything that differs between the two (submit words, job variables,
  status, other nodes, scratch, lint); :mod:`.pbs.local` is PBS's stand-in that runs the very same job
  script on this machine.
- :mod:`.frontend`: at submit time, on the cluster's frontend or a laptop: grids of configs, the plan of
  jobs to submit, lint of job resources, status of runs, fetching results.
- :mod:`.job`: inside a running job: the one runner the job scripts start (:mod:`.job.runner`), and the
  steps it runs in the software environment: the job's plan, staging, the nodes, the decision to resubmit.
- Shared by all: :mod:`.walltime` (durations, the margin, the trainer's time limit), :mod:`.scratch` (a job's
  scratch on each node, and emptying it), :mod:`.variables`
  (the job scripts' variables and their encoding), :mod:`.submissions` (the submissions log),
  :mod:`.site` (a site's resource names and queues), :mod:`.predictions` (prediction manifests).

The shell job scripts do only what must be shell (the preamble, the environment's module, the runner as a
child of the top shell); everything that needs tests lives here.
"""
