"""Does the learning-rate schedule fit the run? One-line warnings for ``segtrain check``, and for
``segtrain train`` as a new run starts (rank 0, with the steps per epoch the trainer counted).

A config copied from a long GPU run and shortened on the command line keeps its warm-up:
``configs/default.yaml`` with ``train.epochs=2 data.tiles_per_epoch=64`` passed check and ran
4 steps against ``warmup_steps: 200``, so the learning rate peaked near 2e-5 and the run learnt
nothing (test IoU 0.06; issue 26). The run's steps are known before it starts (tiles per epoch
/ batch size x epochs; with grid sampling at most the tiles of the grid), so check says so.
"""
from __future__ import annotations

from segtrain.config import Config
from segtrain.data.scene import SceneInfo
from segtrain.data.tiling import tile_origins

WARMUP_SHARE = 0.25  # a warm-up longer than this share of the run leaves little time at the peak


def steps_per_epoch(cfg: Config, train_scenes: list[SceneInfo]) -> tuple[int, bool]:
    """Optimizer steps per epoch on one process, and whether that is exact (grid sampling: an upper
    bound, as tiles with too few valid pixels are dropped when training starts)."""
    if cfg.data.sampling == "random":
        return cfg.data.tiles_per_epoch // cfg.train.batch_size, True
    tiles = sum(len(tile_origins(s.height, s.width, cfg.data.tile_size, cfg.data.overlap)) for s in train_scenes)
    return tiles // cfg.train.batch_size, False


def schedule_warnings(cfg: Config, per_epoch: int, exact: bool = True) -> list[str]:
    """One line per problem: a warm-up that is not well below the run's steps, a peak barely reached."""
    optim, total = cfg.optim, per_epoch * cfg.train.epochs
    warmup = optim.warmup_steps
    if optim.schedule == "plateau" or not warmup or total <= 0:
        return []
    run = (f"the run's {'' if exact else 'at most '}{total} steps (train.epochs {cfg.train.epochs} x {per_epoch} "
           f"steps/epoch)")
    if warmup >= total:
        peak = optim.lr * total / warmup if optim.schedule != "onecycle" else optim.lr * (1 / 25 + (1 - 1 / 25) * total / warmup)
        return [f"warning: optim.warmup_steps: {warmup} is not below {run}: the lr never reaches its peak "
                f"optim.lr {optim.lr:g} (at most {peak:.2g}); set optim.warmup_steps to at most "
                f"{int(WARMUP_SHARE * total)}"]
    if warmup > WARMUP_SHARE * total:
        return [f"warning: optim.warmup_steps: {warmup} is {warmup / total:.0%} of {run}: the lr barely reaches "
                f"its peak optim.lr {optim.lr:g} before it decays; set optim.warmup_steps to at most "
                f"{int(WARMUP_SHARE * total)}"]
    return []
