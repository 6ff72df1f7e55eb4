"""A PBS-like runner on this machine: the very job script, run as a PBS server would run it.

What it imitates (stock OpenPBS 23.06, plus MetaCentrum's additions for ``--site metacentrum``):

- qsub copies the script at submission and merges its ``#PBS`` directives under the command
  line; the job runs that copy (``$0`` is a spool file, not the repository's script), started
  in ``$HOME`` with a fresh environment: ``PBS_JOBID`` (``<n>.local``), ``PBS_JOBNAME``,
  ``PBS_O_WORKDIR`` and the other ``PBS_O_*``, ``PBS_NODEFILE``, ``PBS_QUEUE``,
  ``PBS_ENVIRONMENT=PBS_BATCH``, ``NCPUS``/``OMP_NUM_THREADS`` (capped at this machine's CPUs),
  ``TMPDIR`` (removed after the job), the ``-v`` variables, and on MetaCentrum ``SCRATCHDIR``,
  a fresh folder that stays behind if the job leaves anything in it;
- the walltime: SIGTERM to every process of the job, SIGKILL ``kill_delay`` (10 s) later, exit
  status -29; the SIGTERM may come late (``walltime_late_s``; a real server's came up to ~25 s
  after the limit); a job killed by a signal ends with 256 + signal, like PBS reports it;
- ``qdel`` (and an interrupted runner): the job's top shell is SIGKILLed at once (its traps never
  run), every other process gets SIGTERM, SIGKILL ``kill_delay`` later; exit status 271;
- jobs run with umask 077 unless ``-W umask=`` says otherwise; output files too; the script's
  ``#PBS -W umask=`` wins over ``qsub -W umask=`` (as on a real server); ``qsub -h`` holds a job,
  ``qalter -W umask=NNN ID`` changes a job's umask before it starts, ``qrls ID`` releases it (typed
  here, outside a job, it then runs the job and its chain);
- job history can be off (``job_history=False``, stock OpenPBS's default): ``qstat`` then forgets
  finished jobs (``Unknown Job Id``), ``-x`` too; settings live in ``server.json`` in the state folder
  (:meth:`LocalServer.configure`);
- output in ``$PBS_O_WORKDIR/<name>.o<n>`` (``-j oe`` merges stderr, else ``.e<n>``);
- job arrays (``-J X-Y[:Z]``): qsub answers ``<n>[].local``; subjob ``<n>[i].local`` gets
  ``PBS_ARRAY_INDEX`` and ``PBS_ARRAY_ID``, writes ``<name>.o<n>.<i>``; subjobs run one after
  another here (on a cluster they run side by side); the array ends when its last subjob does,
  with exit status 0 (all subjobs 0), 1 (one failed) or 2 (one was deleted), as PBS Pro reports;
- ``qsub``, ``qstat`` (``-f``, ``-x``), ``qdel`` and, on MetaCentrum, ``clean_scratch`` stand-ins on the
  job's PATH, so resubmission and cleanup run the code paths they run on the cluster;
  ``-W depend=afterany:ID`` / ``afterok:ID`` hold a job until ID has ended;
- several chunks (``select=2:...``): a nodefile line per chunk, each chunk on a loopback "host"
  of its own (127.0.0.1, 127.0.0.2, ...; all on 127.0.0.1 with ``place=pack``), each host with
  its own ``TMPDIR`` and scratch folder; a ``pbsdsh -n INDEX`` stand-in runs a task "on" the
  host of nodefile line INDEX, with that host's environment, and reports as OpenPBS's does.

The runner runs the submitted job (or its subjobs), then every job its chain submitted, until none is left.
State (job records, spool copies, scratch) lives in ``$SEGTRAIN_LOCAL_PBS``
(default ``~/.cache/segtrain/local-pbs``).

    python -m segtrain.cluster.pbs.local run [--site S] [--quiet] -- [qsub options] SCRIPT
"""
