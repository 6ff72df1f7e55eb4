"""The trainer's data: both splits' tiles, the epoch sampler and the loaders, built once per process.

Finding the validation tiles reads the validity of every one of them (seconds to minutes), so it
runs in a thread while training starts, and the validation loader is made when first needed.
"""
from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Optional

import torch
from torch.utils.data import DataLoader

from segtrain.config import Config
from segtrain.data.dataset import TileDataset, raw_loader
from segtrain.data.stats import Stats
from segtrain.errors import UserError
from segtrain.preflight import DatasetSummary
from segtrain.train.distributed import DistContext, EpochSampler


@dataclass
class TrainingData:
    """One process's share of the data: ``per_batch`` tiles of the global batch, ``n_batches`` per epoch."""
    ctx: DistContext
    per_batch: int
    train_set: TileDataset
    val_set: TileDataset
    sampler: EpochSampler
    n_batches: int
    train_loader: DataLoader
    loader_args: dict[str, Any]  # the validation loader's, as the training loader's
    val_grid: Future  # the validation tiles, being found
    _val_loader: Optional[DataLoader] = field(default=None, init=False)

    @property
    def val_loader(self) -> DataLoader:
        if self._val_loader is None:
            self.val_grid.result()
            # Validation tiles are split between ranks without padding, so no pixel is counted twice.
            val_indices = list(range(self.ctx.rank, len(self.val_set), self.ctx.world_size))
            self._val_loader = raw_loader(self.val_set, self.per_batch, sampler=val_indices, **self.loader_args)
        return self._val_loader


def build_training_data(cfg: Config, ctx: DistContext, device: torch.device, summary: DatasetSummary,
                        stats: Optional[dict]) -> TrainingData:
    """The data sets (normalized by ``stats``), the sampler and the training loader; a UserError when the
    global batch does not divide between the processes or is larger than an epoch."""
    if cfg.train.batch_size % ctx.world_size:
        raise UserError(f"train.batch_size: {cfg.train.batch_size} is not divisible by the {ctx.world_size} processes")
    per_batch = cfg.train.batch_size // ctx.world_size
    norm = Stats.from_dict(stats) if stats is not None else None
    train_set = TileDataset(cfg.data, "train", training=True, seed=cfg.train.seed, stats=norm, infos=summary.infos)
    val_set = TileDataset(cfg.data, "val", training=False, seed=cfg.train.seed, stats=norm, infos=summary.infos)
    train_set.set_epoch(0)
    sampler = EpochSampler(len(train_set), shuffle=True, seed=cfg.train.seed, ctx=ctx)
    n_batches = sampler.epoch_length // per_batch
    if n_batches == 0:
        raise UserError(f"train.batch_size: {cfg.train.batch_size} is larger than the {len(train_set)} tiles of an epoch")
    loader_args = dict(num_workers=cfg.data.num_workers, pin_memory=device.type == "cuda",
                       persistent_workers=False, finished=device.type == "cpu")  # CPU: the workers finish
    train_loader = raw_loader(train_set, per_batch, sampler=sampler, drop_last=True, generator=torch.Generator(),
                              **loader_args)
    pool = ThreadPoolExecutor(max_workers=1)
    val_grid = pool.submit(lambda: val_set.grid)
    pool.shutdown(wait=False)  # the thread ends with its task
    return TrainingData(ctx, per_batch, train_set, val_set, sampler, n_batches, train_loader, loader_args, val_grid)
