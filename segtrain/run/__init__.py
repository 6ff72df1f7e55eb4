"""The run directory: the unit users copy, compare and resume, written by training and read by
inference and the cluster layer.

:mod:`.directory` (layout, naming), :mod:`.run_json` (run.json: its schema and its one writer),
:mod:`.checkpoint` (atomic checkpoints and their mirror), :mod:`.metrics_log` (metrics.jsonl),
:mod:`.wandb_log` and :mod:`.wandb_sync` (W&B offline runs and their upload), :mod:`.plots`
(curves and sample figures), :mod:`.console` (progress lines for terminals and batch logs),
:mod:`.report` and :mod:`.gpu_usage` (where a job's walltime went, and how busy its GPUs were).
"""
