"""The plan of one training job: what its steps agree on, written by the first (``plan``) and read by the others.

It travels as a JSON file on scratch, and to another node as one command-line word.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional
from urllib.parse import quote, unquote

from segtrain.errors import UserError
from segtrain.fsutil import atomic_write_json


@dataclass
class Plan:
    """Everything the steps of one job agree on; written once by ``plan``, completed by ``stage``."""
    job_id: str
    job_name: str
    workdir: str
    config: str  # absolute path of the config file
    overrides: list[str]  # the user's, exactly as given
    run_dir: str  # on storage: the run's home, and the trainer's --mirror
    continuing: bool
    data: str  # on storage: a data set folder or a tar archive
    runs: str
    scratch: str
    job_start: float
    walltime_s: Optional[float]
    walltime_source: str
    margin_s: Optional[float]
    max_resubmits: int
    resubmits: int
    resources: dict[str, str] = field(default_factory=dict)  # what the job really got, as submit options
    passed_on: dict[str, str] = field(default_factory=dict)  # variables the next job inherits as they are
    data_root: Optional[str] = None  # on scratch, set by ``stage``
    hosts: list[str] = field(default_factory=list)  # the job's nodes; the first runs the job script
    host_indices: list[int] = field(default_factory=list)  # each node's first line in $PBS_NODEFILE (pbsdsh -n)
    nproc_per_node: int = 1  # trainer processes on each node, one per GPU
    nproc_source: str = ""
    rdzv_port: Optional[int] = None  # several nodes: node rank 0's rendezvous port
    node_rank: int = 0  # the node this copy of the plan is for
    first_scratch: Optional[str] = None  # another node's copy: the first node's scratch
    new_run_name: Optional[str] = None  # a new run: ``plan`` creates its directory under this name (or name-2...)
    logged: bool = True  # a new run is logged next to the runs (a grid's subjobs were, by scripts/submit)
    scheduler: str = "pbs"  # the workload manager running the job (segtrain.cluster.scheduler)
    queue_wait_s: Optional[float] = None  # submission to start, where the scheduler says
    marks: dict[str, float] = field(default_factory=dict)  # when each step began and ended (the job report)
    study: Optional[str] = None  # a search worker's job: the study folder (its run_dir is the worker's own folder)
    worker: Optional[str] = None  # the search worker's name

    @property
    def work_run(self) -> Path:
        return Path(self.scratch) / "runs" / Path(self.run_dir).name

    @property
    def trainer_run(self) -> Path:
        """The run directory of every rank: rank 0 broadcasts its own, on the first node's scratch."""
        return Path(self.first_scratch or self.scratch) / "runs" / Path(self.run_dir).name

    @property
    def work_data(self) -> Path:
        return Path(self.scratch) / "data"

    def save(self, path: Path) -> None:
        atomic_write_json(path, dataclasses.asdict(self))

    @classmethod
    def load(cls, path: Path) -> "Plan":
        try:
            return cls(**json.loads(Path(path).read_text()))
        except (OSError, ValueError, TypeError) as exc:
            raise UserError(f"{path}: unreadable job plan: {exc}") from None

    def to_word(self) -> str:
        """The plan as one command-line word of letters, digits and ``%_.-~`` (for pbsdsh to carry)."""
        return quote(json.dumps(dataclasses.asdict(self)), safe="")

    @classmethod
    def from_word(cls, word: str) -> "Plan":
        try:
            return cls(**json.loads(unquote(word)))
        except (ValueError, TypeError) as exc:
            raise UserError(f"the job plan given on the command line is unreadable: {exc}") from None
