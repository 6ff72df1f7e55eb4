"""The staging cache: a data set converted once to uncompressed, memory-mappable TIFFs.

Random windows of compressed scenes cost a decode of every tile they touch; on a node's local
scratch the same windows become strided copies out of the page cache. The cache is itself a
data root in the usual layout (``filelists/``, ``scenes/<name>.tif``, ``masks/<name>.tif``,
``stats.json`` when the source has one), so it is used by pointing ``data.root`` at it, and the
preflight, the readers and every command work on it unchanged. Beside them, ``labels/`` holds each
scene's validity and mask precomputed in blocks (:mod:`segtrain.data.labels`), which training
reads instead of computing them per tile; a cache without them (built by an older version)
still works and gets them at its next build. Uncompressed band-first TIFFs
rather than ``.npy`` files keep the GDAL_NODATA tag and the file names the filelists refer to.

Each file is written to a temporary name, fsynced and renamed, and then carries its source's
modification time: a later run skips files whose stamp and shape still match, and a run
killed midway leaves only complete files behind.
"""
from __future__ import annotations

import os
from pathlib import Path

import tifffile

from segtrain.config.schema import DataConfig
from segtrain.data.labels import labels_path, remove_other_labels, write_labels
from segtrain.data.layout import SPLITS, filelist_path, read_split
from segtrain.data.reader import CorruptSegment, open_raster
from segtrain.data.scene import GDAL_NODATA_TAG, SceneInfo, read_info
from segtrain.data.stats import stats_path
from segtrain.errors import UserError
from segtrain.fsutil import atomic_copy, atomic_path
from segtrain.preflight import carry_passed

BLOCK_PIXELS = 1 << 24  # pixels per band converted per step (bounded memory for any scene size)


def build_cache(data_cfg: DataConfig, dest: str | Path) -> Path:
    """Stage every scene and mask of ``data.root``'s splits under ``dest``; return the cached root."""
    src, dest = Path(data_cfg.root), Path(dest)
    if dest.resolve() == src.resolve():
        raise UserError(f"{dest}: the cache folder must differ from data.root")
    splits = [s for s in SPLITS if filelist_path(src, s).is_file()] or ["train"]  # read_split names a missing one
    scenes = {f.name: f for split in splits for f in read_split(src, split)}
    labels = set()
    for files in scenes.values():
        scene, mask = dest / "scenes" / files.name, dest / "masks" / files.name
        stage_file(files.scene, scene)
        stage_file(files.mask, mask)
        out = labels_path(dest, files.name, scene, mask)
        write_labels(scene, mask, out)
        labels.add(out)
    remove_other_labels(dest, labels)
    for split in splits:
        _copy_if_changed(filelist_path(src, split), filelist_path(dest, split))
    carry_passed(src, dest, list(scenes.values()))
    stats = stats_path(data_cfg)
    if not data_cfg.stats_file and stats.is_file():
        _copy_if_changed(stats, dest / "stats.json")
    return dest


def _copy_if_changed(src: Path, dst: Path) -> None:
    if not dst.is_file() or dst.read_bytes() != src.read_bytes():
        atomic_copy(src, dst)


def stage_file(src: Path, out: Path) -> bool:
    """Write ``src`` as an uncompressed band-first TIFF at ``out``; False when it is already there."""
    info = read_info(src)
    stamp = src.stat().st_mtime_ns
    if _is_current(info, out, stamp):
        return False
    raster = open_raster(info, range(info.bands))
    try:
        with atomic_path(out) as tmp:
            shape = (info.height, info.width) if info.bands == 1 else (info.bands, info.height, info.width)
            tags = [] if info.nodata is None else [(GDAL_NODATA_TAG, "s", 0, _nodata_text(info.nodata), True)]
            target = tifffile.memmap(tmp, shape=shape, dtype=info.dtype, photometric="minisblack",
                                     planarconfig="separate" if info.bands > 1 else None, metadata=None, extratags=tags)
            rows = max(1, BLOCK_PIXELS // info.width)
            try:
                for y in range(0, info.height, rows):
                    h = min(rows, info.height - y)
                    target[..., y:y + h, :] = raster.read(y, 0, h, info.width).reshape(target[..., y:y + h, :].shape)
            except CorruptSegment as exc:  # the check decodes large files only in part
                raise UserError(f"{exc}; the staging cache needs every tile: replace the file or leave the scene "
                                "out of the filelists") from None
            target.flush()
            del target
            os.utime(tmp, ns=(stamp, stamp))
    finally:
        raster.close()
    return True


def _is_current(info: SceneInfo, out: Path, stamp: int) -> bool:
    if not out.is_file() or out.stat().st_mtime_ns != stamp:
        return False
    try:
        cached = read_info(out)
    except UserError:
        return False
    return (cached.height, cached.width, cached.bands, cached.dtype, cached.compression) == \
        (info.height, info.width, info.bands, info.dtype, "NONE")


def _nodata_text(value: float) -> str:
    return str(int(value)) if value.is_integer() else repr(value)
