"""The training loop, top to bottom: set-up, resume, epochs of steps, validation, checkpoints.

Exactness is the design constraint. Everything random comes from the config's seed: the
model's initial weights, the windows and augmentations of each epoch (drawn from
``(seed, epoch)`` by the data set), the order of the batches (from ``(seed, epoch)`` by the
sampler). A checkpoint records the position inside the epoch and every RNG state, so a run
stopped anywhere and resumed ends with the same weights as one never stopped.
"""
from __future__ import annotations

import errno
import math
import os
import random
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch
from torch.utils.data import DataLoader

from segtrain import calibration
from segtrain.config import Config, to_dict, to_yaml
from segtrain.config.load import load_raw
from segtrain.config.validate import build_config
from segtrain.device import select_device
from segtrain.errors import EXIT_FAILED, EXIT_OK, EXIT_RESUMABLE, EXIT_USER_ERROR, UserError
from segtrain.fsutil import atomic_write_text, remove_temporaries
from segtrain.losses import build_criterion
from segtrain.metrics import ConfusionCounts
from segtrain.models import build_model, positive_probability
from segtrain.preflight import DatasetSummary, check_dataset
from segtrain.run import checkpoint as ckpt
from segtrain.run.checkpoint_fit import check_fits
from segtrain.train.config_changes import check_resume_compatible
from segtrain.run.console import Console
from segtrain.train.distributed import (DistContext, EpochSampler, barrier, broadcast_from_main, init_distributed,
                                        max_across_ranks, shutdown, sum_across_ranks)
from segtrain.train.health import NonFiniteWatch
from segtrain.run.metrics_log import MetricsLog
from segtrain.train.optim import Schedule, build_optimizer
from segtrain.run.plots import plot_curves, plot_samples
from segtrain.train.prefetch import DeviceBatches
from segtrain.run import directory as rundir
from segtrain.run.directory import RunDir, create_run_dir, run_name
from segtrain.run.gpu_usage import GpuSampler
from segtrain.run.report import TrainerClock
from segtrain.train.stopping import EarlyStopping, StopSignals, TimeBudget
from segtrain.run.wandb_log import WandbLogger, check_login, new_wandb_id, wandb_values

WANDB_STOP_TIMEOUT_S = 3.0  # W&B's share of the 10 s between SIGTERM and SIGKILL
AGREE_EVERY_S = 1.0  # DDP ranks agree on stopping about this often (a SIGTERM is answered that fast)
MAX_AGREEMENT_STEPS = 200
# In commit order, as in the run directory: last.pt, which vouches for the others, is copied last.
MIRRORED = [rundir.CONFIG, rundir.INFO, rundir.METRICS, calibration.FILE, f"checkpoints/{ckpt.BEST}",
            f"checkpoints/{ckpt.LAST}"]
DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


class TrainingFailed(Exception):
    """The run cannot go on (a non-finite loss): reported as one line, status 'failed'."""


@dataclass
class TrainOptions:
    """What the command line adds to the config."""
    config_path: str
    overrides: list[str] = field(default_factory=list)
    run_dir: Optional[Path] = None
    mirror: Optional[Path] = None
    time_limit: Optional[float] = None  # seconds from start
    deadline_file: Optional[Path] = None  # a later deadline (epoch seconds) a PBS job writes after a qextend
    job_id: Optional[str] = None  # the scheduler's id of the job this runs in (None: none), kept in run.json


@dataclass
class Position:
    """Where the run stands: the unit of resumption."""
    epoch: int = 0
    batch: int = 0  # batches of this epoch already trained
    step: int = 0  # optimizer steps since the run began


def train(cfg: Config, opts: TrainOptions) -> int:
    """Train (or resume) one run; return the exit code (0 done, 3 stopped to resume)."""
    summary = check_dataset(cfg)
    check_login(cfg.logging.wandb)
    device = select_device(cfg.train.device, "train.device")
    ctx = init_distributed(device.type)
    if device.type == "cuda":
        device = torch.device("cuda", ctx.local_rank)
        torch.cuda.set_device(device)
    try:
        # Every rank must write into the same directory: the name (it has a time in it) is rank 0's.
        opts.run_dir = broadcast_from_main(opts.run_dir or (default_run_dir(cfg, opts) if ctx.is_main else None), ctx)
        return _Run(cfg, opts, ctx, device, summary).execute()
    finally:
        shutdown(ctx)


def default_run_dir(cfg: Config, opts: TrainOptions) -> Path:
    """A new run directory, created now: ``run.root/run.name``, or a readable name from the config and overrides
    (with a ``-2``, ``-3`` suffix when taken)."""
    return create_run_dir(Path(cfg.run.root), run_name(opts.config_path, opts.overrides, cfg.run.name))


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


class _Run:
    """One process's part of a run. Methods are the loop's steps, in the order they happen."""

    def __init__(self, cfg: Config, opts: TrainOptions, ctx: DistContext, device: torch.device, summary: DatasetSummary):
        self.cfg, self.opts, self.ctx, self.device = cfg, opts, ctx, device
        self.budget = TimeBudget(opts.time_limit, deadline_file=opts.deadline_file)
        self.clock = TrainerClock()  # for the job report: where this segment's time went
        self.gpu: Optional[dict] = None
        self.launcher_pid = os.getppid() if "TORCHELASTIC_RUN_ID" in os.environ else None
        self.rd = RunDir(opts.run_dir)
        # Everything that can refuse the run is checked before its folder gets a first byte.
        state, notes = self._inspect_run_dir()  # the checkpoint to resume from: local, so it is freed after set-up
        self.resumed = state is not None
        self.wandb_id: Optional[str] = state.get("wandb_id") if state else None
        self.metrics_records: Optional[int] = state.get("metrics_records") if state else None
        self.stats = state["stats"] if state else self._stats(summary)  # a resumed run keeps its own (no drift)
        self._build_data(summary)
        self._build_model(summary.in_channels)
        self.pos = Position()
        self.early = EarlyStopping(cfg.train.early_stopping.metric, cfg.train.early_stopping.patience,
                                   cfg.train.early_stopping.min_delta)
        if state is not None:
            notes.append(self._restore(state))
        notes += [f"removed {path}, left by a write that was killed" for path in self._create_run_dir()]
        self.console = Console(cfg.train.epochs * self.n_batches, enabled=ctx.is_main,
                               log_path=self.rd.logs / "train.log" if ctx.is_main else None)
        for note in notes:
            self.console.message(note)

    # ---- set-up ---------------------------------------------------------------------------
    def _inspect_run_dir(self) -> tuple[Optional[dict], list[str]]:
        """Read (never write) the run directory: refuse what is not a run, a corrupt run.json,
        unsafe config changes and unreadable checkpoints.

        Returns the checkpoint to resume from (None for a new run) and notes for the log.
        """
        for flag, path in (("--run-dir", self.rd.path), ("--mirror", self.opts.mirror)):
            if path is not None and path.exists() and not path.is_dir():
                raise UserError(f"{flag} {path}: is a file, not a folder")
            if path is not None and not RunDir(path).is_run_or_empty():
                raise UserError(f"{flag} {path}: folder is not empty and holds no segtrain run (no {rundir.INFO}); "
                                "not writing into it: choose a new or empty folder")
        if self.opts.mirror is not None and self.opts.mirror.resolve() == self.rd.path.resolve():
            raise UserError(f"--mirror {self.opts.mirror}: is the run directory itself")
        for flag, path in (("--run-dir", self.rd.path), ("--mirror", self.opts.mirror)):
            if path is not None and self.ctx.is_main:  # only the first process writes
                rundir.refuse_unwritable(path, flag)
        self.rd.read_info()
        notes: list[str] = []
        if self.rd.config.exists():
            old_raw, _ = load_raw(self.rd.config)
            notes += check_resume_compatible(build_config(old_raw), self.cfg, self.rd.config)
        found = ckpt.load_latest(self.rd.checkpoints, warn=notes.append) if self.rd.checkpoints.exists() else None
        state, self.resume_from = found if found is not None else (None, None)
        return state, notes

    def _create_run_dir(self) -> list[Path]:
        """Create the run directory (or reopen it): config.yaml, and no temporary file that a
        write killed mid-way left here or in the mirror (returned, for the log)."""
        removed = []
        if self.ctx.is_main:
            self.rd.create()
            for folder in (self.rd.path, self.opts.mirror):
                if folder is not None:
                    removed += remove_temporaries(folder, skip=("wandb",))
            atomic_write_text(self.rd.config, to_yaml(self.cfg))
        barrier(self.ctx)
        return removed

    def _stats(self, summary: DatasetSummary) -> Optional[dict]:
        """Normalization statistics of a new run (None when nothing needs them)."""
        from segtrain.data.stats import training_stats

        stats = training_stats(self.cfg, summary.infos)
        return stats.to_dict() if stats is not None else None

    def _build_data(self, summary: DatasetSummary) -> None:
        from segtrain.data.dataset import TileDataset, raw_loader
        from segtrain.data.stats import Stats

        cfg, ctx = self.cfg, self.ctx
        if cfg.train.batch_size % ctx.world_size:
            raise UserError(f"train.batch_size: {cfg.train.batch_size} is not divisible by the {ctx.world_size} processes")
        self.per_batch = cfg.train.batch_size // ctx.world_size
        stats = Stats.from_dict(self.stats) if self.stats is not None else None
        self.train_set = TileDataset(cfg.data, "train", training=True, seed=cfg.train.seed, stats=stats, infos=summary.infos)
        self.val_set = TileDataset(cfg.data, "val", training=False, seed=cfg.train.seed, stats=stats, infos=summary.infos)
        self.train_set.set_epoch(0)
        self.sampler = EpochSampler(len(self.train_set), shuffle=True, seed=cfg.train.seed, ctx=ctx)
        self.n_batches = self.sampler.epoch_length // self.per_batch
        if self.n_batches == 0:
            raise UserError(f"train.batch_size: {cfg.train.batch_size} is larger than the {len(self.train_set)} tiles of an epoch")
        loader_args = dict(num_workers=cfg.data.num_workers, pin_memory=self.device.type == "cuda",
                           persistent_workers=False, finished=self.device.type == "cpu")  # CPU: the workers finish
        self.train_loader = raw_loader(self.train_set, self.per_batch, sampler=self.sampler, drop_last=True,
                                       generator=torch.Generator(), **loader_args)
        # Finding the validation tiles reads the validity of every one of them (seconds to minutes):
        # it runs in a thread while training starts, and the loader is made when first needed.
        pool = ThreadPoolExecutor(max_workers=1)
        self._val_grid = pool.submit(lambda: self.val_set.grid)
        pool.shutdown(wait=False)  # the thread ends with its task
        self._val_loader: Optional[DataLoader] = None
        self._loader_args = loader_args

    @property
    def val_loader(self) -> DataLoader:
        if self._val_loader is None:
            from segtrain.data.dataset import raw_loader

            self._val_grid.result()
            # Validation tiles are split between ranks without padding, so no pixel is counted twice.
            val_indices = list(range(self.ctx.rank, len(self.val_set), self.ctx.world_size))
            self._val_loader = raw_loader(self.val_set, self.per_batch, sampler=val_indices, **self._loader_args)
        return self._val_loader

    def _build_model(self, in_channels: int) -> None:
        cfg = self.cfg
        seed_everything(cfg.train.seed)
        self.in_channels = in_channels
        model = build_model(cfg.model, in_channels)
        if cfg.model.sync_batchnorm and self.ctx.distributed:
            model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
        self.raw_model = model.to(self.device)
        self.cuda = self.device.type == "cuda"
        self.channels_last = self.cuda and cfg.train.channels_last
        if self.channels_last:
            self.raw_model = self.raw_model.to(memory_format=torch.channels_last)
        self.model = self.raw_model
        if self.ctx.distributed:
            ids = [self.device.index] if self.cuda else None
            self.model = torch.nn.parallel.DistributedDataParallel(self.raw_model, device_ids=ids)
        if cfg.train.compile and self.cuda:
            self.model = torch.compile(self.model)
        pos_weight = self.stats.get("pos_weight") if self.stats else None
        self.criterion = build_criterion(cfg.loss, cfg.model.out_channels, pos_weight=pos_weight).to(self.device)
        self.optimizer = build_optimizer(cfg.optim, self.raw_model.parameters())
        self.schedule = Schedule(cfg.optim, self.optimizer, cfg.train.epochs * self.n_batches, self.early_mode)
        self.amp_dtype = _amp_dtype(cfg.train.amp, self.device)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp_dtype == torch.float16)

    @property
    def early_mode(self) -> str:
        return "min" if self.cfg.train.early_stopping.metric == "loss" else "max"

    def _restore(self, state: dict) -> str:
        check_fits(state, self.resume_from, self.cfg, "the config", model=self.raw_model, in_channels=self.in_channels)
        self.raw_model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.schedule.load_state_dict(state["schedule"])
        self.scaler.load_state_dict(state["scaler"])
        self.early.load_state_dict(state["early_stopping"])
        self.pos = Position(**state["position"])
        if state.get("world_size", 1) != self.ctx.world_size:
            raise UserError(f"{self.rd.checkpoints}: checkpoint was written by {state.get('world_size', 1)} processes; "
                            f"resume it with the same number (now {self.ctx.world_size}) for an exact continuation")
        ckpt.restore_rng(state["rng"][self.ctx.rank] if isinstance(state["rng"], list) else state["rng"])
        return f"resuming {self.rd.path} at epoch {self.pos.epoch}, batch {self.pos.batch}, step {self.pos.step}"

    # ---- the loop -------------------------------------------------------------------------
    def execute(self) -> int:
        cfg, rd = self.cfg, self.rd
        info = rd.read_info()
        wandb_id = self.wandb_id or info.get("wandb_id") or new_wandb_id()
        self.log = MetricsLog(rd.metrics, self.pos.step if self.resumed else None,
                              self.metrics_records) if self.ctx.is_main else None
        if self.ctx.is_main:
            rd.start_segment(rd.path.name, wandb_id if cfg.logging.wandb.mode != "disabled" else None, self.opts.job_id)
            rd.update_segment(start_step=self.pos.step)
        self.wandb = WandbLogger(cfg.logging.wandb, rd.path, rd.path.name, wandb_id, to_dict(cfg), enabled=self.ctx.is_main)
        self.wandb_id = wandb_id
        status, code = "failed", EXIT_FAILED
        sampler = GpuSampler(self.device).start() if self.ctx.is_main else None
        # The signals are caught over the wrap-up too: PBS's walltime SIGTERM can land while a time-limit
        # stop is exiting, and must not kill the trainer between its checkpoint and its final record.
        with StopSignals() as self.signals:
            try:
                code = self._epochs()
                status = "done" if code == EXIT_OK else "stopped"
                return code
            except TrainingFailed as exc:
                self.console.message(f"error: {exc}")
                return EXIT_FAILED
            except UserError:
                code = EXIT_USER_ERROR
                raise
            except OSError as exc:
                if exc.errno not in DISK_FULL:
                    raise
                # Like a signal: every write is atomic, so the last checkpoint that completed is intact.
                self.console.message(f"stopping at step {self.pos.step}: disk full ({exc.filename or exc}); the last "
                                     f"complete checkpoint is kept in {rd.checkpoints}; free space and resume to continue")
                status, code = "stopped", EXIT_RESUMABLE
                return code
            finally:
                self.clock.stop()
                # After a SIGTERM, SIGKILL comes 10 s later: W&B gets a bounded time (metrics.jsonl is the record).
                self.wandb.finish(code, timeout_s=WANDB_STOP_TIMEOUT_S if self.signals.received else None)
                if self.ctx.is_main:
                    self.gpu = sampler.stop()
                    self.log.close()
                    self._finish_files(status, code)

    def _finish_files(self, status: str, code: int) -> None:
        """Record the segment's end and mirror the run; on a full disk, say so and keep going."""
        try:
            self.rd.end_segment(status, code, end_step=self.pos.step, timing=self._timing())
            if self.opts.mirror:
                ckpt.mirror_files(self.rd.path, self.opts.mirror, MIRRORED)
        except OSError as exc:
            if exc.errno not in DISK_FULL:
                raise
            self.console.message(f"warning: could not record the end of this segment: {exc}")

    def _timing(self) -> dict[str, Any]:
        """This segment's figures for the job report (run.json, with the segment)."""
        return {**self.clock.to_dict(), "gpu": self.gpu}

    def _epochs(self) -> int:
        cfg, pos = self.cfg, self.pos
        self.console.message(f"run {self.rd.path}: {self.n_batches} steps/epoch x {cfg.train.epochs} epochs, "
                             f"batch {cfg.train.batch_size} on {self.ctx.world_size} x {self.device.type}, "
                             f"{sum(p.numel() for p in self.raw_model.parameters()) / 1e6:.2f} M parameters")
        last_checkpoint = time.monotonic()
        self.watch, self._agreed, self._next_agreement = NonFiniteWatch(self.device), (last_checkpoint, pos.step), 0
        batches = self._to_device(self.train_loader, self.train_set)
        while pos.epoch < cfg.train.epochs:
            self.train_set.set_epoch(pos.epoch)
            self.sampler.set_epoch(pos.epoch, start=pos.batch * self.per_batch)
            self.train_loader.generator.manual_seed(cfg.train.seed * 100_003 + pos.epoch)
            self.model.train()
            waited = time.monotonic()
            self._logged, self._data_s = (waited, pos.step), 0.0
            for batch in batches:
                data_s = time.monotonic() - waited
                self.clock.step(data_s)
                step_start = time.monotonic()
                values = self._train_step(batch)
                pos.batch += 1
                pos.step += 1
                self.budget.record_step(time.monotonic() - step_start + data_s)
                self._data_s += data_s
                if pos.step % cfg.logging.every_steps == 0:
                    self._log_train(values)
                stop, checkpoint_due = self._decide(last_checkpoint, validation_next=pos.batch == self.n_batches)
                if stop or checkpoint_due:
                    self._check_finite()
                if stop:
                    self._checkpoint()
                    self.console.message(f"stopping at step {pos.step} ({stop}); checkpoint written, resume to continue")
                    return EXIT_RESUMABLE
                if checkpoint_due:
                    self._checkpoint()
                    last_checkpoint = time.monotonic()
                waited = time.monotonic()
            self._check_finite()
            with self.clock.phase("validation"):
                improved, should_stop = self._end_epoch()
            pos.epoch, pos.batch = pos.epoch + 1, 0
            self._checkpoint(best=improved)
            last_checkpoint = time.monotonic()
            if should_stop:
                self.console.message(f"early stopping: no {cfg.train.early_stopping.metric} improvement for "
                                     f"{self.early.bad_validations} validations (best {self.early.best:.4f})")
                break
            stop = self._decide(last_checkpoint, validation_next=False)[0] if pos.epoch < cfg.train.epochs else None
            if stop:
                self.console.message(f"stopping after epoch {pos.epoch} ({stop}); checkpoint written, resume to continue")
                return EXIT_RESUMABLE
        self._finish()
        return EXIT_OK

    def _train_step(self, batch: dict) -> dict[str, torch.Tensor]:
        """One optimizer step; its loss terms and gradient norm stay on the device (no host sync)."""
        image, target, valid = batch["image"], batch["mask"], batch["valid"]
        with self._autocast():
            logits = self.model(image)
        loss, parts = self.criterion(logits.float(), target, valid)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.unscale_(self.optimizer)
        clip = self.cfg.optim.grad_clip or math.inf
        grad_norm = torch.nn.utils.clip_grad_norm_(self.raw_model.parameters(), clip)
        if not self.scaler.is_enabled():  # the fp16 scaler skips steps with non-finite gradients itself
            self.watch.record(self.pos.step + 1, loss, grad_norm)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.schedule.step()
        return {"loss": loss.detach(), **{f"loss/{k}": v.detach() for k, v in parts.items()}, "grad_norm": grad_norm}

    def _check_finite(self) -> None:
        """Fail on a non-finite step since the last check, before anything is written from it.

        Checks come at least once per epoch, so the bad step lies in the current epoch.
        """
        step = self.watch.first_bad_step()
        if step is not None:
            noticed = f", noticed after step {self.pos.step}" if self.pos.step != step else ""
            raise TrainingFailed(f"non-finite loss or gradient at step {step} (epoch {self.pos.epoch}){noticed}; "
                                 f"the last good checkpoint is in {self.rd.checkpoints}")

    def _to_device(self, loader: DataLoader, tiles) -> DeviceBatches:
        """The loader's raw batches as network input on the training device (one batch ahead on CUDA)."""
        return DeviceBatches(loader, tiles.transform, self.device, self.channels_last)

    def _autocast(self):
        if self.amp_dtype is None:
            return nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def _decide(self, last_checkpoint: float, validation_next: bool) -> tuple[Optional[str], bool]:
        """After a step: the reason to stop now (or None) and whether a periodic checkpoint is due,
        the same on every rank (clocks and signals differ between ranks).

        Reasons to stop: a signal, the time budget, or a lost launcher. torch's elastic agent
        starts workers in their own sessions: a PBS that tracks jobs by session and SIGKILLs the
        launcher would leave them running unseen, so a worker whose parent changed stops too.
        A single process decides at every step. Ranks agree in one all-reduce, which waits for
        the GPU, so only where the loop waits anyway (a logged step, an epoch's ends) and about
        every AGREE_EVERY_S seconds in between: each agreement also fixes the step of the next
        one. Checkpoints every N steps need no agreement.
        """
        every_steps, every_min = self.cfg.train.checkpoint_every_steps, self.cfg.train.checkpoint_every_minutes
        due = bool(every_steps and self.pos.step % every_steps == 0)
        waits_anyway = self.pos.batch in (0, self.n_batches) or self.pos.step % self.cfg.logging.every_steps == 0
        if self.ctx.distributed and self.pos.step < self._next_agreement and not waits_anyway:
            return None, due
        steps = self._steps_to_next_agreement()
        # The time limit is rank 0's to judge: only its node has the deadline file a qextend rewrites.
        out_of_time = self.ctx.is_main and self.budget.exhausted(validation_next, steps)
        reason = self.signals.received or ("time limit" if out_of_time else None)
        if reason is None and self.launcher_pid is not None and os.getppid() != self.launcher_pid:
            reason = "launcher gone"
        due_by_time = bool(every_min and time.monotonic() - last_checkpoint >= every_min * 60)
        stop, due_by_time, fewest = max_across_ranks([reason is not None, due_by_time, -steps], self.ctx, self.device)
        self._next_agreement = self.pos.step - fewest
        return (reason or "stop on another rank") if stop else None, due or bool(due_by_time)

    def _steps_to_next_agreement(self) -> int:
        """About AGREE_EVERY_S seconds of steps at the pace since the last agreement (1 for one process)."""
        if not self.ctx.distributed:
            return 1
        now, (then, step) = time.monotonic(), self._agreed
        self._agreed = (now, self.pos.step)
        pace = (now - then) / max(1, self.pos.step - step)
        return max(1, min(MAX_AGREEMENT_STEPS, int(AGREE_EVERY_S / max(pace, 1e-6))))

    def _log_train(self, values: dict[str, torch.Tensor]) -> None:
        """Log the step's values (the one host sync of a logged step) and the pace since the last log."""
        self._check_finite()
        numbers = dict(zip(values, torch.stack([v.float() for v in values.values()]).tolist()))
        now, (then, step) = time.monotonic(), self._logged
        seconds = max(now - then, 1e-9)
        tiles_s = self.per_batch * self.ctx.world_size * (self.pos.step - step) / seconds
        lr = self.optimizer.param_groups[0]["lr"]
        record = {"step": self.pos.step, "epoch": self.pos.epoch, "split": "train", **numbers, "lr": lr,
                  "tiles_per_s": tiles_s, "data_wait": min(1.0, self._data_s / seconds), "time": now - self.budget.start}
        self._logged, self._data_s = (now, self.pos.step), 0.0
        if self.scaler.is_enabled():
            record["loss_scale"] = float(self.scaler.get_scale())
        self._record(record)
        self.console.progress(self.pos.step, self.pos.epoch, {"loss": numbers["loss"], "lr": lr,
                                                               "tiles/s": round(tiles_s, 1),
                                                               "data wait": f"{record['data_wait']:.0%}"})

    def _record(self, record: dict[str, Any]) -> None:
        if self.ctx.is_main:
            self.log.write(record)
            self.wandb.log(wandb_values(record), step=record["step"])

    # ---- epoch end: validation, early stopping, samples ----------------------------------------
    def _end_epoch(self) -> tuple[bool, bool]:
        cfg, epoch = self.cfg, self.pos.epoch
        last = epoch + 1 == cfg.train.epochs
        if (epoch + 1) % cfg.train.val_every_epochs and not last:
            return False, False
        start = time.monotonic()
        scores, samples, hist = self._validate(want_samples=(epoch + 1) % cfg.logging.samples_every_epochs == 0 or last)
        self.budget.record_validation(time.monotonic() - start)
        calibrated = calibration.calibrate(hist, self.pos.step, "val tiles (training)", scenes=len(self.val_set.files),
                                           default=cfg.train.threshold)
        if calibrated is not None:
            scores.update(calibrated_threshold=calibrated.threshold, calibrated_iou=calibrated.iou)
        self._record({"step": self.pos.step, "epoch": epoch, "split": "val", **scores})
        monitored = scores[cfg.train.early_stopping.metric]
        improved = self.early.update(monitored)
        if calibrated is not None and self.ctx.is_main:  # for the checkpoints written next, at this step
            for name in ("last", "best") if improved else ("last",):
                calibration.store(self.rd.path, name, calibrated)
        self.schedule.validated(monitored)
        self.console.message(f"epoch {epoch} validation: " + "  ".join(f"{k} {scores[k]:.4f}" for k in
                             ("loss", "iou", "dice", "precision", "recall")) + ("  (best)" if improved else "")
                             + (f"  | iou {calibrated.iou:.4f} at calibrated threshold {calibrated.threshold:g}"
                                if calibrated is not None else ""))
        if self.ctx.is_main:
            plot_curves(self.log.history, self.rd.path / "curves.png")
            if samples:
                plot_samples(samples, self.rd.samples / f"epoch_{epoch:04d}.png", f"{self.rd.path.name}, epoch {epoch}")
                self.wandb.log_samples(samples, self.pos.step, epoch)
        return improved, self.early.should_stop

    @torch.no_grad()
    def _validate(self, want_samples: bool) -> tuple[dict[str, float], list[dict[str, np.ndarray]],
                                                     calibration.ProbabilityHistogram]:
        """Loss and confusion counts over the whole validation split (summed over ranks), samples, and
        the histogram of probabilities that calibrates the threshold."""
        loader = self.val_loader  # waits for the tiles to be found; len(self.val_set) is safe after it
        self.model.eval()
        counts = ConfusionCounts(device=self.device)
        hist = calibration.ProbabilityHistogram(device=self.device)
        totals = torch.zeros(2, dtype=torch.float64, device=self.device)  # valid-pixel-weighted loss, valid pixels
        sample_ids = sample_tiles(self.val_set, self.cfg.logging.num_samples)
        samples = []
        seen = 0
        for batch in self._to_device(loader, self.val_set):
            image, target, valid = batch["image"], batch["mask"], batch["valid"]
            with self._autocast():
                logits = self.model(image)
            logits = logits.float()
            loss, _ = self.criterion(logits, target, valid)
            prob = positive_probability(logits)
            counts.update(prob, target, valid, threshold=self.cfg.train.threshold)
            hist.update(prob, target, valid)
            n_valid = valid.sum().double()
            totals += torch.stack([loss.double() * n_valid, n_valid])
            if want_samples and self.ctx.is_main:
                samples += self._pick_samples(batch, prob, sample_ids, seen)
            seen += len(image)
        sum_across_ranks(counts.state, self.ctx)
        sum_across_ranks(totals, self.ctx)
        sum_across_ranks(hist.state, self.ctx)
        self.model.train()
        scores = counts.compute()
        scores["loss"] = float(totals[0] / totals[1]) if totals[1] > 0 else float("nan")
        return scores, samples, hist

    def _pick_samples(self, batch: dict, prob: torch.Tensor, wanted: set, offset: int) -> list[dict[str, np.ndarray]]:
        out = []
        for i in range(len(prob)):
            if offset + i in wanted:
                valid = batch["valid"][i, 0].cpu().numpy()
                p = prob[i, 0].cpu().numpy()
                out.append({"image": batch["image"][i].cpu().numpy(), "truth": batch["mask"][i, 0].cpu().numpy(), "valid": valid,
                            "prob": p, "pred": (p >= self.cfg.train.threshold) & valid})
        return out

    # ---- checkpoints ----------------------------------------------------------------------
    def _checkpoint(self, best: bool = False) -> None:
        with self.clock.phase("checkpoints"):
            self._write_checkpoint(best)

    def _write_checkpoint(self, best: bool) -> None:
        rng = ckpt.capture_rng()
        rngs = [rng]
        if self.ctx.distributed:
            rngs = [None] * self.ctx.world_size
            torch.distributed.all_gather_object(rngs, rng)
        if self.ctx.is_main:
            state = {
                "model": self.raw_model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "schedule": self.schedule.state_dict(), "scaler": self.scaler.state_dict(),
                "early_stopping": self.early.state_dict(), "position": vars(self.pos).copy(),
                "rng": rngs if self.ctx.distributed else rng, "world_size": self.ctx.world_size,
                "wandb_id": self.wandb_id, "config": to_dict(self.cfg), "stats": self.stats,
                "in_channels": self.in_channels, "best_metric": self.early.best,
                "metrics_records": len(self.log.history),  # on resume, metrics.jsonl is cut back to these
            }
            self.log.sync()
            # last.pt is the commit point of an epoch end: everything it vouches for (metrics,
            # samples, best.pt) is on disk before it. Killed earlier, the resume redoes the epoch
            # end from the previous last.pt and writes the same files again.
            seconds = ckpt.save_checkpoint(state, self.rd.checkpoints / ckpt.BEST) if best else 0.0
            seconds += ckpt.save_checkpoint(state, self.rd.checkpoints / ckpt.LAST, keep_previous=True)
            self.rd.update_segment(end_step=self.pos.step, timing=self._timing())  # a job killed later still reports
            if self.opts.mirror:
                ckpt.mirror_files(self.rd.path, self.opts.mirror, MIRRORED)
            self.budget.record_checkpoint(seconds)
        barrier(self.ctx)

    def _finish(self) -> None:
        if self.ctx.is_main:
            best = self.rd.checkpoints / ckpt.BEST
            self.console.message(f"done: best validation {self.cfg.train.early_stopping.metric} "
                                 f"{self.early.best:.4f}; checkpoints in {self.rd.checkpoints}")
            if self.cfg.logging.wandb.log_model and best.exists():
                self.wandb.log_model(best, self.rd.path.name)


def sample_tiles(val_set, n: int) -> set[int]:
    """``n`` validation tiles spread evenly over the split for the sample figures: whole tiles,
    not the padded ones at scene borders (the last grid tile is always a padded corner), unless
    there are too few whole ones."""
    t = val_set.tile
    whole = [i for i, w in enumerate(val_set.grid)
             if w.y + t <= val_set.infos[w.scene].height and w.x + t <= val_set.infos[w.scene].width]
    pool = whole if len(whole) >= n else list(range(len(val_set)))
    return {pool[j] for j in np.linspace(0, len(pool) - 1, min(n, len(pool)), dtype=int)}


def _amp_dtype(choice: str, device: torch.device) -> Optional[torch.dtype]:
    """bf16 where the GPU supports it, else fp16 (with a grad scaler); never on CPU."""
    if device.type != "cuda" or choice == "off":
        return None
    if choice == "fp16" or (choice == "auto" and not torch.cuda.is_bf16_supported()):
        return torch.float16
    return torch.bfloat16
