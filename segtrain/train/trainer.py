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
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import torch

from segtrain import calibration
from segtrain.config import Config, to_dict, to_yaml
from segtrain.config.load import load_raw
from segtrain.config.validate import build_config
from segtrain.device import select_device
from segtrain.errors import EXIT_FAILED, EXIT_OK, EXIT_RESUMABLE, EXIT_USER_ERROR, UserError
from segtrain.fsutil import atomic_write_text, remove_temporaries
from segtrain.preflight import DatasetSummary, check_dataset
from segtrain.run import checkpoint as ckpt
from segtrain.run.checkpoint_fit import check_fits
from segtrain.train.config_changes import check_resume_compatible
from segtrain.run.console import Console
from segtrain.train.distributed import (DistContext, barrier, broadcast_from_main, init_distributed, max_across_ranks,
                                        shutdown)
from segtrain.train.health import NonFiniteWatch
from segtrain.train.loaders import TrainingData, build_training_data
from segtrain.train.model_parts import ModelParts, build_model_parts
from segtrain.run.metrics_log import MetricsLog
from segtrain.run.plots import plot_curves, plot_samples
from segtrain.run import directory as rundir
from segtrain.run.directory import RunDir, create_run_dir, run_name
from segtrain.run.gpu_usage import GpuSampler
from segtrain.run.report import TrainerClock
from segtrain.run.wandb_log import WandbLogger, check_login, new_wandb_id, wandb_values
from segtrain.train.budget import schedule_warnings
from segtrain.train.stopping import EarlyStopping, StopSignals, TimeBudget
from segtrain.train.validation import validate

WANDB_STOP_TIMEOUT_S = 3.0  # W&B's share of the 10 s between SIGTERM and SIGKILL
AGREE_EVERY_S = 1.0  # DDP ranks agree on stopping about this often (a SIGTERM is answered that fast)
MAX_AGREEMENT_STEPS = 200
# In commit order, as in the run directory: last.pt, which vouches for the others, is copied last.
MIRRORED = [rundir.CONFIG, rundir.INFO, rundir.METRICS, calibration.FILE, f"{rundir.CHECKPOINTS}/{ckpt.BEST}",
            f"{rundir.CHECKPOINTS}/{ckpt.LAST}"]
DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


# Called with the run's validation records (metrics.jsonl's, in order) once each is safe in a checkpoint:
# after every validation's checkpoint, and once when a run resumes. A returned reason stops the run
# there (exit 3, resumable); None lets it go on. The hyperparameter search reports to its pruner here.
ValidationHook = Callable[[list[dict[str, Any]]], Optional[str]]


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
    on_validation: Optional[ValidationHook] = None


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


@dataclass
class _Pace:
    """The loop's wall-clock bookkeeping, per process (never checkpointed: a resumed loop starts it afresh)."""
    logged: tuple[float, int]  # time and step of the last logged training record, or of the epoch's start
    agreed: tuple[float, int]  # time and step of the ranks' last agreement on stopping
    data_s: float = 0.0  # time spent waiting for data since ``logged``
    next_agreement: int = 0  # the step of the ranks' next agreement


class _Run:
    """One process's part of a run: ``__init__`` sets it up (everything that can refuse the run is
    checked before the run directory gets a first byte) and opens this segment's outputs;
    :meth:`execute` trains. Its whole state is declared here; methods follow in the order they run."""

    # what to train, where, on what
    cfg: Config
    opts: TrainOptions
    ctx: DistContext
    device: torch.device
    rd: RunDir
    # built at set-up (the same on a resume), then stepped by the loop
    stats: Optional[dict]  # normalization statistics: a resumed run keeps its own (no drift)
    data: TrainingData
    parts: ModelParts
    # where the run stands: checkpointed with the parts' states and the RNGs
    pos: Position
    early: EarlyStopping
    resume_from: Optional[Path]  # the checkpoint this segment resumed from (None: a new run)
    # when to stop
    budget: TimeBudget
    signals: StopSignals  # caught while execute() runs
    launcher_pid: Optional[int]  # torchrun's agent: a worker whose parent changed stops
    watch: NonFiniteWatch
    pace: _Pace
    # this segment's outputs
    console: Console
    log: Optional[MetricsLog]  # metrics.jsonl (rank 0)
    wandb_id: str  # checkpointed: every segment logs to the same W&B run
    wandb: WandbLogger
    clock: TrainerClock  # for the job report: where this segment's time went
    gpu: Optional[dict]  # what the GPU did in this segment (rank 0, once it has ended)

    def __init__(self, cfg: Config, opts: TrainOptions, ctx: DistContext, device: torch.device, summary: DatasetSummary):
        self.cfg, self.opts, self.ctx, self.device = cfg, opts, ctx, device
        self.budget = TimeBudget(opts.time_limit, deadline_file=opts.deadline_file)
        self.clock = TrainerClock()
        self.gpu = None
        self.corrupt: list[str] = []  # corrupt segments the loader met this segment (scene and tile)
        self.launcher_pid = os.getppid() if "TORCHELASTIC_RUN_ID" in os.environ else None
        self.rd = RunDir(opts.run_dir)
        state, self.resume_from, notes = self._inspect_run_dir()  # state: local, so it is freed after set-up
        self.stats = state["stats"] if state else self._stats(summary)  # a resumed run keeps its own (no drift)
        self.data = build_training_data(cfg, ctx, device, summary, self.stats)
        self.parts = build_model_parts(cfg, ctx, device, summary.in_channels, cfg.train.epochs * self.data.n_batches,
                                       self.early_mode, self.stats)
        self.pos = Position(**state["position"]) if state is not None else Position()
        self.early = EarlyStopping(cfg.train.early_stopping.metric, cfg.train.early_stopping.patience,
                                   cfg.train.early_stopping.min_delta)
        if state is not None:
            notes += self._restore(state)
        else:  # the schedule a new run plans is the config's: what check says of it, said where it is read
            notes += schedule_warnings(cfg, self.data.n_batches)
        notes += [f"removed {path}, left by a write that was killed" for path in self._create_run_dir()]
        self.console = Console(cfg.train.epochs * self.data.n_batches, enabled=ctx.is_main,
                               log_path=self.rd.logs / "train.log" if ctx.is_main else None)
        for note in notes:
            self.console.message(note)
        # This segment's outputs: metrics.jsonl cut back to the checkpoint, run.json's new segment, W&B.
        self.wandb_id = (state.get("wandb_id") if state else None) or self.rd.info.read().get("wandb_id") or new_wandb_id()
        self.log = MetricsLog(self.rd.metrics, self.pos.step if state else None,
                              state.get("metrics_records") if state else None) if ctx.is_main else None
        if ctx.is_main:
            self.rd.info.start_segment(self.rd.path.name, self.wandb_id if cfg.logging.wandb.mode != "disabled" else None,
                                       opts.job_id, self.pos.step)
        self.wandb = WandbLogger(cfg.logging.wandb, self.rd.path, self.rd.path.name, self.wandb_id, to_dict(cfg),
                                 enabled=ctx.is_main)
        self.signals = StopSignals()
        self.watch = NonFiniteWatch(device)
        now = time.monotonic()
        self.pace = _Pace(logged=(now, self.pos.step), agreed=(now, self.pos.step))

    # ---- set-up ---------------------------------------------------------------------------
    def _inspect_run_dir(self) -> tuple[Optional[dict], Optional[Path], list[str]]:
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
        self.rd.info.read()
        notes: list[str] = []
        if self.rd.config.exists():
            old_raw, _ = load_raw(self.rd.config)
            notes += check_resume_compatible(build_config(old_raw), self.cfg, self.rd.config)
        found = ckpt.load_latest(self.rd.checkpoints, warn=notes.append) if self.rd.checkpoints.exists() else None
        state, path = found if found is not None else (None, None)
        return state, path, notes

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

    @property
    def early_mode(self) -> str:
        return "min" if self.cfg.train.early_stopping.metric == "loss" else "max"

    def _restore(self, state: dict) -> list[str]:
        """Load the parts' states and this rank's RNGs from the checkpoint (the position is read with it)."""
        check_fits(state, self.resume_from, self.cfg, "the config", model=self.parts.raw_model,
                   in_channels=self.parts.in_channels)
        self.parts.raw_model.load_state_dict(state["model"])
        self.parts.optimizer.load_state_dict(state["optimizer"])
        planned = state["config"]["train"]["epochs"] * self.data.n_batches  # for checkpoints without a stored plan
        schedule_note = self.parts.schedule.load_state_dict(state["schedule"], planned)
        self.parts.scaler.load_state_dict(state["scaler"])
        self.early.load_state_dict(state["early_stopping"])
        if state.get("world_size", 1) != self.ctx.world_size:
            raise UserError(f"{self.rd.checkpoints}: checkpoint was written by {state.get('world_size', 1)} processes; "
                            f"resume it with the same number (now {self.ctx.world_size}) for an exact continuation")
        ckpt.restore_rng(state["rng"][self.ctx.rank] if isinstance(state["rng"], list) else state["rng"])
        return [f"resuming {self.rd.path} at epoch {self.pos.epoch}, batch {self.pos.batch}, step {self.pos.step}",
                *([schedule_note] if schedule_note else [])]

    # ---- the loop -------------------------------------------------------------------------
    def execute(self) -> int:
        """Train to the end, or until a reason to stop; record how the segment ended. The exit code."""
        status, code = "failed", EXIT_FAILED
        sampler = GpuSampler(self.device).start() if self.ctx.is_main else None
        # The signals are caught over the wrap-up too: PBS's walltime SIGTERM can land while a time-limit
        # stop is exiting, and must not kill the trainer between its checkpoint and its final record.
        with self.signals:
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
                                     f"complete checkpoint is kept in {self.rd.checkpoints}; free space and resume to continue")
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

    def _epochs(self) -> int:
        cfg, pos = self.cfg, self.pos
        self.console.message(f"run {self.rd.path}: {self.data.n_batches} steps/epoch x {cfg.train.epochs} epochs, "
                             f"batch {cfg.train.batch_size} on {self.ctx.world_size} x {self.device.type}, "
                             f"{sum(p.numel() for p in self.parts.raw_model.parameters()) / 1e6:.2f} M parameters")
        data, pace = self.data, self.pace
        last_checkpoint = time.monotonic()
        pace.agreed, pace.next_agreement = (last_checkpoint, pos.step), 0
        batches = self.parts.inputs(data.train_loader, data.train_set)
        stop = self._hook_says_stop() if pos.step else None  # a resumed run: its validations so far
        if stop:
            self.console.message(f"not resuming at epoch {pos.epoch} ({stop})")
            return EXIT_RESUMABLE
        while pos.epoch < cfg.train.epochs:
            data.train_set.set_epoch(pos.epoch)
            data.sampler.set_epoch(pos.epoch, start=pos.batch * data.per_batch)
            data.train_loader.generator.manual_seed(cfg.train.seed * 100_003 + pos.epoch)
            self.parts.model.train()
            waited = time.monotonic()
            pace.logged, pace.data_s = (waited, pos.step), 0.0
            for batch in batches:
                self._note_corrupt(batch)
                data_s = time.monotonic() - waited
                self.clock.step(data_s)
                step_start = time.monotonic()
                values = self._train_step(batch)
                pos.batch += 1
                pos.step += 1
                self.budget.record_step(time.monotonic() - step_start + data_s)
                pace.data_s += data_s
                if pos.step % cfg.logging.every_steps == 0:
                    self._log_train(values)
                stop, checkpoint_due = self._decide(last_checkpoint, validation_next=pos.batch == data.n_batches)
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
            stop = self._hook_says_stop()
            if stop:
                self.console.message(f"stopping after epoch {pos.epoch} ({stop}); checkpoint written, resume to continue")
                return EXIT_RESUMABLE
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

    def _hook_says_stop(self) -> Optional[str]:
        """Rank 0 asks ``on_validation`` (if given) whether to stop; every rank gets its answer."""
        if self.opts.on_validation is None:
            return None
        reason = self.opts.on_validation([r for r in self.log.history if r.get("split") == "val"]) \
            if self.ctx.is_main else None
        return broadcast_from_main(reason, self.ctx)

    def _train_step(self, batch: dict) -> dict[str, torch.Tensor]:
        """One optimizer step; its loss terms and gradient norm stay on the device (no host sync)."""
        image, target, valid = batch["image"], batch["mask"], batch["valid"]
        parts = self.parts
        with parts.autocast():
            logits = parts.model(image)
        loss, terms = parts.criterion(logits.float(), target, valid)
        parts.optimizer.zero_grad(set_to_none=True)
        parts.scaler.scale(loss).backward()
        parts.scaler.unscale_(parts.optimizer)
        clip = self.cfg.optim.grad_clip or math.inf
        grad_norm = torch.nn.utils.clip_grad_norm_(parts.raw_model.parameters(), clip)
        if not parts.scaler.is_enabled():  # the fp16 scaler skips steps with non-finite gradients itself
            self.watch.record(self.pos.step + 1, loss, grad_norm)
        parts.scaler.step(parts.optimizer)
        parts.scaler.update()
        parts.schedule.step()
        return {"loss": loss.detach(), **{f"loss/{k}": v.detach() for k, v in terms.items()}, "grad_norm": grad_norm}

    def _check_finite(self) -> None:
        """Fail on a non-finite step since the last check, before anything is written from it.

        Checks come at least once per epoch, so the bad step lies in the current epoch.
        """
        step = self.watch.first_bad_step()
        if step is not None:
            noticed = f", noticed after step {self.pos.step}" if self.pos.step != step else ""
            raise TrainingFailed(f"non-finite loss or gradient at step {step} (epoch {self.pos.epoch}){noticed}; "
                                 f"the last good checkpoint is in {self.rd.checkpoints}")

    def _note_corrupt(self, batch: dict) -> None:
        """Say once which corrupt segments the loader met (and skipped); the segment's record keeps them."""
        for name in batch.get("corrupt", ()):
            if name not in self.corrupt:
                self.corrupt.append(name)
                self.console.message(f"warning: skipping the tiles that touch a corrupt segment: {name}")

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
        waits_anyway = self.pos.batch in (0, self.data.n_batches) or self.pos.step % self.cfg.logging.every_steps == 0
        if self.ctx.distributed and self.pos.step < self.pace.next_agreement and not waits_anyway:
            return None, due
        steps = self._steps_to_next_agreement()
        # The time limit is rank 0's to judge: only its node has the deadline file a qextend rewrites.
        out_of_time = self.ctx.is_main and self.budget.exhausted(validation_next, steps)
        reason = self.signals.received or ("time limit" if out_of_time else None)
        if reason is None and self.launcher_pid is not None and os.getppid() != self.launcher_pid:
            reason = "launcher gone"
        due_by_time = bool(every_min and time.monotonic() - last_checkpoint >= every_min * 60)
        stop, due_by_time, fewest = max_across_ranks([reason is not None, due_by_time, -steps], self.ctx, self.device)
        self.pace.next_agreement = self.pos.step - fewest
        return (reason or "stop on another rank") if stop else None, due or bool(due_by_time)

    def _steps_to_next_agreement(self) -> int:
        """About AGREE_EVERY_S seconds of steps at the pace since the last agreement (1 for one process)."""
        if not self.ctx.distributed:
            return 1
        now, (then, step) = time.monotonic(), self.pace.agreed
        self.pace.agreed = (now, self.pos.step)
        pace = (now - then) / max(1, self.pos.step - step)
        return max(1, min(MAX_AGREEMENT_STEPS, int(AGREE_EVERY_S / max(pace, 1e-6))))

    def _log_train(self, values: dict[str, torch.Tensor]) -> None:
        """Log the step's values (the one host sync of a logged step) and the pace since the last log."""
        self._check_finite()
        numbers = dict(zip(values, torch.stack([v.float() for v in values.values()]).tolist()))
        now, (then, step) = time.monotonic(), self.pace.logged
        seconds = max(now - then, 1e-9)
        tiles_s = self.data.per_batch * self.ctx.world_size * (self.pos.step - step) / seconds
        lr = self.parts.optimizer.param_groups[0]["lr"]
        record = {"step": self.pos.step, "epoch": self.pos.epoch, "split": "train", **numbers, "lr": lr,
                  "tiles_per_s": tiles_s, "data_wait": min(1.0, self.pace.data_s / seconds), "time": now - self.budget.start}
        self.pace.logged, self.pace.data_s = (now, self.pos.step), 0.0
        if self.parts.scaler.is_enabled():
            record["loss_scale"] = float(self.parts.scaler.get_scale())
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
        scores, samples, hist = validate(self.parts, self.data, cfg, self.ctx,
                                         want_samples=(epoch + 1) % cfg.logging.samples_every_epochs == 0 or last)
        self.budget.record_validation(time.monotonic() - start)
        calibrated = calibration.calibrate(hist, self.pos.step, "val tiles (training)", scenes=len(self.data.val_set.files),
                                           default=cfg.train.threshold)
        if calibrated is not None:
            scores.update(calibrated_threshold=calibrated.threshold, calibrated_iou=calibrated.iou)
        self._record({"step": self.pos.step, "epoch": epoch, "split": "val", **scores})
        monitored = scores[cfg.train.early_stopping.metric]
        improved = self.early.update(monitored)
        if calibrated is not None and self.ctx.is_main:  # for the checkpoints written next, at this step
            for name in ("last", "best") if improved else ("last",):
                calibration.store(self.rd.path, name, calibrated)
        self.parts.schedule.validated(monitored)
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
            parts = self.parts
            state = {
                "model": parts.raw_model.state_dict(), "optimizer": parts.optimizer.state_dict(),
                "schedule": parts.schedule.state_dict(), "scaler": parts.scaler.state_dict(),
                "early_stopping": self.early.state_dict(), "position": vars(self.pos).copy(),
                "rng": rngs if self.ctx.distributed else rng, "world_size": self.ctx.world_size,
                "wandb_id": self.wandb_id, "config": to_dict(self.cfg), "stats": self.stats,
                "in_channels": parts.in_channels, "best_metric": self.early.best,
                "metrics_records": len(self.log.history),  # on resume, metrics.jsonl is cut back to these
            }
            self.log.sync()
            # last.pt is the commit point of an epoch end: everything it vouches for (metrics,
            # samples, best.pt) is on disk before it. Killed earlier, the resume redoes the epoch
            # end from the previous last.pt and writes the same files again.
            seconds = ckpt.save_checkpoint(state, self.rd.checkpoints / ckpt.BEST) if best else 0.0
            seconds += ckpt.save_checkpoint(state, self.rd.checkpoints / ckpt.LAST, keep_previous=True)
            self.rd.info.update_segment(end_step=self.pos.step, timing=self._timing())  # a job killed later still reports
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

    def _finish_files(self, status: str, code: int) -> None:
        """Record the segment's end and mirror the run; on a full disk, say so and keep going."""
        try:
            self.rd.info.end_segment(status, code, end_step=self.pos.step, timing=self._timing())
            if self.opts.mirror:
                ckpt.mirror_files(self.rd.path, self.opts.mirror, MIRRORED)
        except OSError as exc:
            if exc.errno not in DISK_FULL:
                raise
            self.console.message(f"warning: could not record the end of this segment: {exc}")

    def _timing(self) -> dict[str, Any]:
        """This segment's figures for the job report (run.json, with the segment)."""
        return {**self.clock.to_dict(), "gpu": self.gpu, "corrupt_tiles": self.corrupt}
