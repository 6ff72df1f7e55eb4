"""Tiles of a split as a torch Dataset: live windows of the scenes, padded, masked, normalized.

Opening a data set reads metadata only (scene sizes, bands), so a data set of 1,000 scenes is
ready in about a second; scenes are opened lazily by whichever process reads them, at most
MAX_OPEN_READERS at a time. Every random choice (which window, which augmentation) comes from
a generator seeded with (seed, epoch, item), so item ``i`` of an epoch is the same tile for
any number of DataLoader workers and after a resume; call ``set_epoch`` before creating the
epoch's iterator (workers that persist across epochs would keep the old epoch).

- training, ``data.sampling: random``: ``data.tiles_per_epoch`` windows at uniform positions
  in scenes drawn by area; a window with less than ``data.min_valid_fraction`` valid pixels is
  redrawn (up to MAX_DRAWS times, then the most valid draw is kept).
- training, ``data.sampling: grid``: the grid tiles (``data.overlap``) passing that threshold.
- evaluation: grid tiles without overlap, every tile with a valid pixel, no augmentation, so
  each valid pixel is counted exactly once and tile-wise counts equal whole-split counts.
"""
from __future__ import annotations

import os
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Mapping, Optional

import numpy as np
import torch

from segtrain.config.schema import DataConfig
from segtrain.data.augment import Augmentation, apply_augmentation, draw_augmentation
from segtrain.data.layout import read_split
from segtrain.data.reader import SceneReader
from segtrain.data.scene import SceneInfo, read_info, select_bands
from segtrain.data.stats import Stats, scale_shift
from segtrain.data.tiling import pad_tile, tile_origins
from segtrain.errors import UserError

MAX_DRAWS = 20
MAX_OPEN_READERS = 64  # per process; each open scene holds a few file descriptors
SCAN_THREADS = 8


@dataclass(frozen=True)
class Window:
    """A tile's scene (index into ``TileDataset.files``) and top-left corner."""
    scene: int
    y: int
    x: int


class TileDataset(torch.utils.data.Dataset):
    """Tiles of one split; items are dicts of image, mask, valid tensors and the tile's place."""

    def __init__(self, data_cfg: DataConfig, split: str, *, training: bool, seed: int, stats: Optional[Stats],
                 infos: Optional[Mapping[str, SceneInfo]] = None):
        """``infos``: the scenes' metadata by name when the caller has it (the preflight's summary),
        which saves opening every file again."""
        self.cfg = data_cfg
        self.training = training
        self.seed = seed % 2 ** 64  # SeedSequence entropy must be non-negative
        self.tile = data_cfg.tile_size
        self.files = read_split(data_cfg.root, split)
        if infos is not None and all(f.name in infos for f in self.files):
            self.infos: list[SceneInfo] = [infos[f.name] for f in self.files]
        else:
            with ThreadPoolExecutor(max_workers=SCAN_THREADS) as pool:
                self.infos = list(pool.map(lambda f: read_info(f.scene), self.files))
        self.band_indices = select_bands(data_cfg.bands, self.infos[0])
        self._norm = _normalization(data_cfg, stats, self.band_indices, self.infos[0])
        areas = np.array([i.height * i.width for i in self.infos], dtype=np.float64)
        self._scene_p = areas / areas.sum()
        self._epoch = 0
        self._grid: Optional[list[Window]] = None
        self._readers: OrderedDict[int, SceneReader] = OrderedDict()
        self._pid = os.getpid()

    @property
    def random_windows(self) -> bool:
        return self.training and self.cfg.sampling == "random"

    def set_epoch(self, epoch: int) -> None:
        """Select epoch ``epoch``'s windows and augmentations (a no-op for evaluation)."""
        if self.training:
            self._epoch = epoch

    def __len__(self) -> int:
        return self.cfg.tiles_per_epoch if self.random_windows else len(self.grid)

    @property
    def grid(self) -> list[Window]:
        """The kept grid tiles; found once, by reading the validity of every tile (threads over scenes)."""
        if self._grid is None:
            with ThreadPoolExecutor(max_workers=SCAN_THREADS) as pool:
                self._grid = [w for scene in pool.map(self._scan_scene, range(len(self.files))) for w in scene]
        return self._grid

    def _scan_scene(self, scene: int) -> list[Window]:
        info, files, t = self.infos[scene], self.files[scene], self.tile
        overlap = self.cfg.overlap if self.training else 0
        least = max(1, int(np.ceil(self.cfg.min_valid_fraction * t * t))) if self.training else 1
        kept = []
        with SceneReader(files.scene, None, self.band_indices, self.cfg.nodata) as reader:
            for y, x in tile_origins(info.height, info.width, t, overlap):
                valid = reader.read_valid(y, x, min(t, info.height - y), min(t, info.width - x))
                if np.count_nonzero(valid) >= least:
                    kept.append(Window(scene, y, x))
        return kept

    def __getitem__(self, i: int) -> dict:
        if not 0 <= i < len(self):
            raise IndexError(f"tile {i} out of range (0..{len(self) - 1})")
        rng = np.random.default_rng([self.seed, self._epoch, i]) if self.training else None
        if self.random_windows:
            window, (raw, valid, mask) = self._draw(rng)
        else:
            window = self.grid[i]
            raw, valid, mask = self._read(window)
        aug = draw_augmentation(rng, self.cfg.augment) if rng is not None else Augmentation()
        raw, mask, valid = apply_augmentation(aug, raw, mask, valid)
        valid = np.ascontiguousarray(valid)
        return {
            "image": torch.from_numpy(self._normalize(raw, valid, aug.brightness)),
            "mask": torch.from_numpy(mask.astype(np.float32, order="C")[None]),
            "valid": torch.from_numpy(valid[None]),
            "scene": window.scene, "y": window.y, "x": window.x,
        }

    def _draw(self, rng: np.random.Generator) -> tuple[Window, tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """A random window with enough valid pixels (or the most valid of MAX_DRAWS tries)."""
        least = self.cfg.min_valid_fraction * self.tile * self.tile
        best, best_count = None, -1
        for _ in range(MAX_DRAWS):
            scene = int(rng.choice(len(self.files), p=self._scene_p))
            info = self.infos[scene]
            y = int(rng.integers(0, max(0, info.height - self.tile) + 1))
            x = int(rng.integers(0, max(0, info.width - self.tile) + 1))
            tile = self._read(Window(scene, y, x))
            count = np.count_nonzero(tile[1])
            if count > best_count:
                best, best_count = (Window(scene, y, x), tile), count
            if count >= least:
                break
        return best

    def _read(self, window: Window) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        info, t = self.infos[window.scene], self.tile
        h, w = min(t, info.height - window.y), min(t, info.width - window.x)
        raw, valid, mask = self._reader(window.scene).read_raw(window.y, window.x, h, w)
        return pad_tile(raw, valid, t, mask)

    def _reader(self, scene: int) -> SceneReader:
        if self._pid != os.getpid():  # forked: never share the parent's open files
            self._readers, self._pid = OrderedDict(), os.getpid()
        reader = self._readers.pop(scene, None)
        if reader is None:
            files = self.files[scene]
            reader = SceneReader(files.scene, files.mask, self.band_indices, self.cfg.nodata)
            if len(self._readers) >= MAX_OPEN_READERS:
                self._readers.popitem(last=False)[1].close()
        self._readers[scene] = reader  # most recently used last
        return reader

    def _normalize(self, raw: np.ndarray, valid: np.ndarray, gain: float) -> np.ndarray:
        """(gain * x - mean) / std per selected band (or gain * x), invalid pixels 0, as float32.

        One pass converts the raw values (a possibly flipped and turned view), applies the
        brightness gain and the scale, and writes a new contiguous array; the transposing copy
        of a quarter turn costs no more than a plain one this way.
        """
        scale = np.float32(gain) if self._norm is None else self._norm[0] * np.float32(gain)
        out = np.multiply(raw, scale, dtype=np.float32, order="C", casting="unsafe")
        if self._norm is not None:
            out -= self._norm[1]
        out *= valid.astype(np.float32)
        if raw.dtype.kind == "f":
            np.nan_to_num(out, copy=False)  # NaN (always invalid) times 0 is still NaN
        return out

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_readers"] = OrderedDict()  # open files stay in the process that opened them
        return state


def _normalization(data_cfg: DataConfig, stats: Optional[Stats], bands: list[int],
                   example: SceneInfo) -> Optional[tuple[np.ndarray, np.ndarray]]:
    """Per-band (1/std, mean/std) as (C,1,1) float32, or None for ``data.normalize: none``."""
    if data_cfg.normalize == "none":
        return None
    if stats is None:
        raise UserError("data.normalize: is 'stats' but no statistics were given "
                        "(run `segtrain stats DATA` or set data.normalize: none)")
    if len(stats.mean) != example.bands:
        raise UserError(f"data.stats_file: the statistics describe {len(stats.mean)} bands but "
                        f"{example.path} has {example.bands}; recompute them with `segtrain stats`")
    scale, shift = scale_shift(stats.mean, stats.std, bands)
    return scale[:, None, None], shift[:, None, None]
