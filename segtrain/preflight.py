"""Validate a config's data set before any expensive work: layout, files, sizes, bands, masks.

Every command that trains, evaluates or submits calls :func:`check_dataset` first, so a job
fails on the frontend in seconds instead of on a GPU node after hours in the queue.
"""
from __future__ import annotations

from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import tifffile

from segtrain.config import Config
from segtrain.data.layout import REQUIRED_SPLITS, SPLITS, SceneFiles, filelist_path, read_split
from segtrain.data.scene import SceneInfo, read_info, select_bands
from segtrain.errors import UserError


@dataclass
class DatasetSummary:
    """What the preflight found, for the one-screen summary and for later steps."""
    root: Path
    splits: dict[str, list[SceneFiles]] = field(default_factory=dict)
    infos: dict[str, SceneInfo] = field(default_factory=dict)  # by scene name
    bands: int = 0  # bands in each scene file
    in_channels: int = 0  # bands the model sees

    def lines(self) -> list[str]:
        out = [f"data set {self.root}: {self.bands} bands per scene, model input {self.in_channels} bands"]
        for split, scenes in self.splits.items():
            infos = [self.infos[s.name] for s in scenes]
            pixels = sum(i.height * i.width for i in infos)
            sizes = sorted((i.height, i.width) for i in infos)
            out.append(f"  {split:5s} {len(scenes):4d} scenes, {pixels / 1e6:8.2f} Mpx, sizes {sizes[0][0]}x{sizes[0][1]}"
                       f" .. {sizes[-1][0]}x{sizes[-1][1]}")
        return out


def check_dataset(cfg: Config, workers: int = 8) -> DatasetSummary:
    """Check the data set ``cfg.data`` points at; raise :class:`UserError` on the first problem."""
    root = Path(cfg.data.root)
    if not root.is_dir():
        raise UserError(f"data.root: data set folder {root} not found")
    summary = DatasetSummary(root=root)
    for split in SPLITS:
        if split in REQUIRED_SPLITS or filelist_path(root, split).is_file():
            summary.splits[split] = read_split(root, split)
    _check_no_leak(summary.splits, root)
    scenes = [s for scenes in summary.splits.values() for s in scenes]
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for scene_files, info in zip(scenes, pool.map(_check_pair, scenes)):
            summary.infos[scene_files.name] = info
    counts = Counter(info.bands for info in summary.infos.values())
    summary.bands = counts.most_common(1)[0][0]
    for odd in (i for i in summary.infos.values() if i.bands != summary.bands):
        raise UserError(f"{odd.path}: has {odd.bands} bands but {counts[summary.bands]} other scenes have "
                        f"{summary.bands}; all scenes need the same bands")
    summary.in_channels = _check_bands(cfg, next(iter(summary.infos.values())))
    return summary


def _check_no_leak(splits: dict[str, list[SceneFiles]], root: Path) -> None:
    owner: dict[str, str] = {}
    for split, scenes in splits.items():
        for s in scenes:
            if s.name in owner:
                raise UserError(f"{filelist_path(root, split)}: {s.name} is also in the '{owner[s.name]}' split")
            owner[s.name] = split


def _check_pair(files: SceneFiles) -> SceneInfo:
    scene = read_info(files.scene)
    mask = read_info(files.mask)
    if mask.bands != 1:
        raise UserError(f"{files.mask}: a mask needs one band, found {mask.bands}")
    if (scene.height, scene.width) != (mask.height, mask.width):
        raise UserError(f"{files.mask}: mask is {mask.height}x{mask.width} but scene {files.scene.name} is "
                        f"{scene.height}x{scene.width}")
    try:
        values = np.unique(tifffile.imread(files.mask))
    except Exception as exc:  # a file whose header reads but whose data does not
        raise UserError(f"{files.mask}: corrupt TIFF: {exc}") from None
    if not (set(values.tolist()) <= {0, 1} or set(values.tolist()) <= {0, 255}):
        shown = ", ".join(str(v) for v in values[:6]) + (", ..." if len(values) > 6 else "")
        raise UserError(f"{files.mask}: mask is not binary: values {shown} (expected 0/1 or 0/255)")
    return scene


def _check_bands(cfg: Config, example: SceneInfo) -> int:
    selected = select_bands(cfg.data.bands, example)
    if cfg.model.in_channels is not None and cfg.model.in_channels != len(selected):
        raise UserError(f"model.in_channels: is {cfg.model.in_channels} but data.bands selects {len(selected)} bands")
    return len(selected)
