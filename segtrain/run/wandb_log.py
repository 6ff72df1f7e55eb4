"""Weights & Biases through the real ``wandb`` library, offline unless asked otherwise.

The W&B run id is kept in the checkpoint and reused on resume (``resume="allow"``); every
record carries ``global_step`` as its step metric so a resumed run never logs backwards. Each
job segment writes its own offline directory under ``<run>/wandb``; ``metrics.jsonl`` stays
the source of truth. No API key is passed, stored or printed here: online mode relies on the
user's own ``wandb login`` / ``WANDB_API_KEY`` environment.
"""
from __future__ import annotations

import netrc
import os
import sys
import threading
import uuid
from pathlib import Path
from typing import Any, Optional, Sequence
from urllib.parse import urlparse

import numpy as np

from segtrain.config.schema import WandbConfig
from segtrain.errors import UserError
from segtrain.fsutil import atomic_copy


def wandb_values(record: dict[str, Any]) -> dict[str, Any]:
    """A metrics.jsonl record as W&B values: ``train/loss``, ``val/iou``, ... and ``epoch``.

    The one mapping, shared by the trainer and by the replay of metrics.jsonl into W&B
    (:mod:`segtrain.run.wandb_sync`), so that both write the same keys.
    """
    return {key if key == "epoch" else f"{record['split']}/{key}": value for key, value in record.items()
            if key not in ("step", "split")}


def check_login(cfg: WandbConfig) -> None:
    """Online mode needs a key (``WANDB_API_KEY`` or ``wandb login``'s netrc entry): refuse before
    the run starts rather than fail inside ``wandb.init``. The key itself is never read out."""
    if cfg.mode != "online" or os.environ.get("WANDB_API_KEY"):
        return
    host = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).hostname
    path = Path(os.environ.get("NETRC", Path.home() / ".netrc"))
    try:
        if host and netrc.netrc(path).authenticators(host):
            return
    except (OSError, netrc.NetrcParseError):
        pass
    raise UserError(f"logging.wandb.mode: 'online' needs a W&B key (run `wandb login` or set WANDB_API_KEY), "
                    f"none found for {host}; or use 'offline' and sync later")


def new_wandb_id() -> str:
    """A W&B-style run id (8 lowercase alphanumerics), chosen here so it can be checkpointed first."""
    return uuid.uuid4().hex[:8]


_service: Optional[threading.Thread] = None  # importing W&B and starting its service, in the background


def prepare(cfg: WandbConfig) -> None:
    """Import W&B and start its service process in a background thread, so that they happen beside
    the data and model set-up rather than before the first step (with W&B offline they added
    about 35 % to the time to the first step of a small run; issue 27). A failure here is left
    for ``wandb.init`` in :class:`WandbLogger` to report."""
    global _service
    if cfg.mode == "disabled" or _service is not None:
        return
    _service = threading.Thread(target=_start_service, name="wandb-setup", daemon=True)
    _service.start()


def _start_service() -> None:
    try:
        import wandb

        wandb.setup()
    except Exception:  # noqa: BLE001: wandb.init raises it again, where it is reported
        pass


class WandbLogger:
    """A thin wrapper that is a no-op when W&B is disabled (or on ranks other than 0).

    ``wandb.init`` runs in a background thread (it mostly waits for W&B's service process), so
    the run starts training meanwhile; the first call that needs the W&B run waits for it and
    raises its error, if any.
    """

    def __init__(self, cfg: WandbConfig, run_dir: Path, name: str, run_id: str, config: dict, enabled: bool = True):
        self.run = None
        self.run_dir = Path(run_dir)
        self._starting: Optional[threading.Thread] = None
        self._error: Optional[BaseException] = None
        if cfg.mode == "disabled" or not enabled:
            return
        self._starting = threading.Thread(target=self._init, args=(cfg, name, run_id, config), name="wandb-init",
                                          daemon=True)
        self._starting.start()

    def _init(self, cfg: WandbConfig, name: str, run_id: str, config: dict) -> None:
        try:
            if _service is not None:
                _service.join()
            import wandb

            self._wandb = wandb
            run = wandb.init(
                project=cfg.project, entity=cfg.entity, name=name, id=run_id, resume="allow", mode=cfg.mode,
                dir=str(self.run_dir), config=config, tags=cfg.tags, group=cfg.group,
                reinit="finish_previous",
                settings=wandb.Settings(console="off", x_disable_stats=True, silent=True, disable_git=True,
                                        save_code=False, x_save_requirements=False),
            )
            run.define_metric("global_step")
            run.define_metric("*", step_metric="global_step")
            self.run = run
        except BaseException as exc:  # noqa: BLE001: raised in the trainer's thread by _ready
            self._error = exc

    def _ready(self, timeout_s: Optional[float] = None) -> bool:
        """Wait for ``wandb.init`` (at most ``timeout_s``); True when there is a W&B run to use."""
        starting, self._starting = self._starting, None
        if starting is not None:
            starting.join(timeout_s)
            if starting.is_alive():
                return False
        if self._error is not None:
            error, self._error = self._error, None
            raise error
        return self.run is not None

    def log(self, values: dict[str, Any], step: int) -> None:
        if self._ready():
            self.run.log({**values, "global_step": step})

    def log_samples(self, samples: Sequence[dict[str, np.ndarray]], step: int, epoch: int) -> None:
        """A table of image, ground truth and predicted mask per validation sample."""
        if not self._ready():
            return
        from segtrain.run.plots import rgb_composite

        wandb = self._wandb
        table = wandb.Table(columns=["epoch", "image", "truth", "prediction"])
        for s in samples:
            table.add_data(epoch, wandb.Image(rgb_composite(s["image"], s["valid"])),
                           wandb.Image((s["truth"] * 255).astype(np.uint8)), wandb.Image((s["pred"] * 255).astype(np.uint8)))
        self.run.log({"samples": table, "global_step": step})

    def log_model(self, path: Path, name: str) -> None:
        if not self._ready():
            return
        artifact = self._wandb.Artifact(f"model-{name}", type="model")
        artifact.add_file(str(path))
        self.run.log_artifact(artifact)

    def finish(self, exit_code: int, timeout_s: Optional[float] = None) -> None:
        """End the W&B run; with ``timeout_s``, wait no longer than that for W&B (a job after SIGTERM)."""
        if not self._ready(timeout_s):
            return
        run, self.run = self.run, None
        if timeout_s is None:
            run.finish(exit_code=exit_code)
        else:
            finishing = threading.Thread(target=run.finish, kwargs={"exit_code": exit_code}, daemon=True)
            finishing.start()
            finishing.join(timeout_s)
            if finishing.is_alive():
                print(f"warning: W&B did not finish within {timeout_s:.0f} s; metrics.jsonl has every value "
                      "(segtrain wandb-sync can replay it)", file=sys.stderr)
                return
        keep_links_inside(self.run_dir / "wandb", self.run_dir)


def keep_links_inside(folder: Path, root: Path) -> None:
    """Replace each symlink under ``folder`` that leaves ``root`` (W&B links its core debug log
    into ~/.cache) with a copy of its target, or drop it when the target is gone: a copied or
    fetched run then holds no link that dangles."""
    if not folder.is_dir():
        return
    root = root.resolve()
    for link in [p for p in folder.rglob("*") if p.is_symlink()]:
        target = link.resolve()
        if target.is_relative_to(root):
            continue
        if target.is_file():
            atomic_copy(target, link)  # the rename replaces the link itself
        else:
            link.unlink()
