"""The trainer's model and what steps it: network (DDP-wrapped, compiled), loss, optimizer, schedule, AMP.

Built from the config's seed, so every process starts from the same weights; a resume then loads
each part's state from the checkpoint.
"""
from __future__ import annotations

import random
from contextlib import nullcontext
from dataclasses import dataclass
from typing import ContextManager, Optional

import numpy as np
import torch
from torch.utils.data import DataLoader

from segtrain.config import Config
from segtrain.data.dataset import TileDataset
from segtrain.losses import build_criterion
from segtrain.models import build_model
from segtrain.train.distributed import DistContext
from segtrain.train.optim import build_optimizer
from segtrain.train.schedule import Schedule
from segtrain.train.prefetch import DeviceBatches


@dataclass
class ModelParts:
    """``raw_model`` holds the weights (checkpoints, the optimizer); ``model`` is what runs (DDP, compiled)."""
    device: torch.device
    in_channels: int
    raw_model: torch.nn.Module
    model: torch.nn.Module
    channels_last: bool  # inputs in channels-last memory format (CUDA, train.channels_last)
    criterion: torch.nn.Module
    optimizer: torch.optim.Optimizer
    schedule: Schedule
    amp_dtype: Optional[torch.dtype]  # None: full precision
    scaler: torch.amp.GradScaler  # enabled for fp16 only

    def inputs(self, loader: DataLoader, tiles: TileDataset) -> DeviceBatches:
        """``loader``'s raw batches of ``tiles`` as this model's input on its device (one batch ahead on CUDA)."""
        return DeviceBatches(loader, tiles.transform, self.device, self.channels_last)

    def autocast(self) -> ContextManager:
        if self.amp_dtype is None:
            return nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def build_model_parts(cfg: Config, ctx: DistContext, device: torch.device, in_channels: int, total_steps: int,
                      early_mode: str, stats: Optional[dict]) -> ModelParts:
    """The parts of a new run (seeded); ``stats`` give the loss its positive weight, ``early_mode`` ("min" or
    "max") the plateau schedule its direction."""
    seed_everything(cfg.train.seed)
    model = build_model(cfg.model, in_channels)
    if cfg.model.sync_batchnorm and ctx.distributed:
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    raw_model = model.to(device)
    cuda = device.type == "cuda"
    channels_last = cuda and cfg.train.channels_last
    if channels_last:
        raw_model = raw_model.to(memory_format=torch.channels_last)
    model = raw_model
    if ctx.distributed:
        model = torch.nn.parallel.DistributedDataParallel(raw_model, device_ids=[device.index] if cuda else None)
    if cfg.train.compile and cuda:
        model = torch.compile(model)
    pos_weight = stats.get("pos_weight") if stats else None
    criterion = build_criterion(cfg.loss, cfg.model.out_channels, pos_weight=pos_weight).to(device)
    optimizer = build_optimizer(cfg.optim, raw_model.parameters())
    schedule = Schedule(cfg.optim, optimizer, total_steps, early_mode)
    amp_dtype = _amp_dtype(cfg.train.amp, device)
    scaler = torch.amp.GradScaler("cuda", enabled=amp_dtype == torch.float16)
    return ModelParts(device, in_channels, raw_model, model, channels_last, criterion, optimizer, schedule, amp_dtype,
                      scaler)


def _amp_dtype(choice: str, device: torch.device) -> Optional[torch.dtype]:
    """bf16 where the GPU supports it, else fp16 (with a grad scaler); never on CPU."""
    if device.type != "cuda" or choice == "off":
        return None
    if choice == "fp16" or (choice == "auto" and not torch.cuda.is_bf16_supported()):
        return torch.float16
    return torch.bfloat16
