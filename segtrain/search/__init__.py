"""Hyperparameter search on Optuna: trials are ordinary segtrain runs, pruned early, resumable.

    spec.py     the search file: base config, space, objective, sampler, pruner (validated)
    journal.py  Optuna's journal file (no database server), kept readable after a kill mid-write
    study.py    the study folder, its journal and the sampler and pruner the spec names
    claims.py   which trial a worker takes: its own paused one, a paused or stale one, else a new one
    reuse.py    what a new trial is: a promoted pruned run (asha) or the sampler's draw, continuing the
                run of an earlier trial with its parameters
    worker.py   asks, trains (reporting each validation to the pruner), tells, asks again
    status.py   where a study stands; report.py its figures and best.yaml

This package imports the trainer and the config layer; the trainer knows only its small
validation hook (``TrainOptions.on_validation``).
"""
