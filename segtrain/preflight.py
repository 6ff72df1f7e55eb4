"""Validate a config's data set before any expensive work: layout, files, sizes, bands, masks.

Every command that trains, evaluates or submits calls :func:`check_dataset` first, so a job
fails on the frontend in seconds instead of on a GPU node after hours in the queue.

Reading every file is the expensive part (a mask of a Sentinel-2 scene is 120 Mpx), so a pair
is checked by its structure and decoded whole only when small (:mod:`segtrain.data.integrity`;
large files are decoded in the job while staging), and each pair is checked once per version:
what passed is remembered in the data set's memo (:mod:`segtrain.data.memo`, keyed by name,
size and modification time, with whether every segment was decoded), and a job's staged copy
inherits it, so a GPU node does not repeat what the frontend already checked. Pairs not yet
remembered are checked in parallel threads (decoding and numpy release the GIL).
"""
from __future__ import annotations

import dataclasses
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from segtrain.config import Config
from segtrain.data import memo
from segtrain.data.layout import REQUIRED_SPLITS, SPLITS, SceneFiles, filelist_path, read_split
from segtrain.data.integrity import check_pair
from segtrain.data.scene import SceneInfo, read_info, select_bands
from segtrain.errors import UserError

MEMO_SECTION = "checked"
CHECK_VERSION = 3  # 3: large files checked by structure and a sample. Raise when the checks of a pair change: what passed before is checked again


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
    summary.infos = check_pairs(root, scenes, workers)
    counts = Counter(info.bands for info in summary.infos.values())
    summary.bands = counts.most_common(1)[0][0]
    for odd in (i for i in summary.infos.values() if i.bands != summary.bands):
        raise UserError(f"{odd.path}: has {odd.bands} bands but {counts[summary.bands]} other scenes have "
                        f"{summary.bands}; all scenes need the same bands")
    summary.in_channels = _check_bands(cfg, next(iter(summary.infos.values())))
    _check_tile_size(cfg, [summary.infos[s.name] for s in summary.splits["train"]])
    return summary


def _check_tile_size(cfg: Config, train: list[SceneInfo]) -> None:
    """A tile far larger than every scene is mostly padding: minutes and gigabytes per step for
    nothing (tile_size 1024 on scenes of 160 px took 6 minutes and 7 GB for one step)."""
    largest = max(max(info.height, info.width) for info in train)
    if cfg.data.tile_size > 2 * largest:
        raise UserError(f"data.tile_size: {cfg.data.tile_size} is more than twice the largest train scene ({largest} px); "
                        f"tiles would be mostly padding (use at most {2 * largest})")


def _check_no_leak(splits: dict[str, list[SceneFiles]], root: Path) -> None:
    owner: dict[str, str] = {}
    for split, scenes in splits.items():
        for s in scenes:
            if s.name in owner:
                raise UserError(f"{filelist_path(root, split)}: {s.name} is also in the '{owner[s.name]}' split")
            owner[s.name] = split


def check_pairs(root: Path, scenes: list[SceneFiles], workers: int = 8) -> dict[str, SceneInfo]:
    """Each pair's scene metadata, by name, after checking the pairs not remembered as passed.

    What passed is remembered only when every pair passed: a failing check writes nothing.
    """
    passed = passed_pairs(root)
    infos: dict[str, SceneInfo] = {}
    todo: list[tuple[SceneFiles, Optional[memo.Stamp], Optional[memo.Stamp]]] = []
    for files in scenes:
        scene_stamp, mask_stamp = memo.stamp(files.scene), memo.stamp(files.mask)
        info = _remembered(passed.get(files.name), files, scene_stamp, mask_stamp)
        if info is None:
            todo.append((files, scene_stamp, mask_stamp))
        else:
            infos[files.name] = info
    if not todo:
        return infos
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for (files, scene_stamp, mask_stamp), (info, decoded) in zip(todo, pool.map(check_pair, [t[0] for t in todo])):
            infos[files.name] = info
            if scene_stamp and mask_stamp:
                passed[files.name] = _record(scene_stamp, mask_stamp, info, decoded)
    names = {files.name for files in scenes}  # scenes no longer listed are forgotten
    memo.save_section(root, MEMO_SECTION, {"version": CHECK_VERSION,
                                           "pairs": {n: r for n, r in passed.items() if n in names}})
    return infos


def passed_pairs(root: Path) -> dict[str, dict]:
    """The pairs of the data set at ``root`` remembered as passed (by name), for this version of the checks."""
    section = memo.load_section(root, MEMO_SECTION)
    return dict(section.get("pairs") or {}) if section.get("version") == CHECK_VERSION else {}


def decoded_pairs(root: Path) -> set[str]:
    """Names of the pairs of the data set at ``root`` remembered as passed with every segment decoded."""
    return {name for name, record in passed_pairs(root).items() if record.get("decoded")}


def carry_passed(src_root: Path, dst_root: Path, scenes: list[SceneFiles]) -> None:
    """Remember as passed the pairs under ``dst_root`` converted from pairs of ``src_root`` that
    passed (the staging cache: same pixels, other storage), so they are not read again."""
    passed, records = passed_pairs(src_root), {}
    for files in scenes:
        if _remembered(passed.get(files.name), files, memo.stamp(files.scene), memo.stamp(files.mask)) is None:
            continue
        copy = SceneFiles(files.name, dst_root / "scenes" / files.name, dst_root / "masks" / files.name)
        scene_stamp, mask_stamp = memo.stamp(copy.scene), memo.stamp(copy.mask)
        if scene_stamp and mask_stamp:
            records[files.name] = _record(scene_stamp, mask_stamp, read_info(copy.scene), decoded=True)  # the copy read it all
    if records:
        memo.save_section(dst_root, MEMO_SECTION, {"version": CHECK_VERSION, "pairs": {**passed_pairs(dst_root), **records}})


def _record(scene_stamp: memo.Stamp, mask_stamp: memo.Stamp, info: SceneInfo, decoded: bool) -> dict:
    """What is remembered of a pair that passed; ``decoded``: every segment of both files was decoded."""
    return {"scene": scene_stamp, "mask": mask_stamp, "decoded": decoded,
            "info": {k: v for k, v in dataclasses.asdict(info).items() if k != "path"}}


def _remembered(record: Optional[dict], files: SceneFiles, scene_stamp: Optional[memo.Stamp],
                mask_stamp: Optional[memo.Stamp]) -> Optional[SceneInfo]:
    if not record or not scene_stamp or record.get("scene") != scene_stamp or record.get("mask") != mask_stamp:
        return None
    try:
        return SceneInfo(path=files.scene, **record["info"])
    except (TypeError, KeyError):  # written by another version of SceneInfo
        return None


def _check_bands(cfg: Config, example: SceneInfo) -> int:
    selected = select_bands(cfg.data.bands, example)
    if cfg.model.in_channels is not None and cfg.model.in_channels != len(selected):
        raise UserError(f"model.in_channels: is {cfg.model.in_channels} but data.bands selects {len(selected)} bands")
    return len(selected)
