"""Tiles of a split as a torch Dataset: live windows of the scenes, padded and masked.

Opening a data set reads metadata only (scene sizes, bands), so a data set of 1,000 scenes is
ready in about a second; scenes are opened lazily by whichever process reads them, at most
MAX_OPEN_READERS at a time. Every random choice (which window, which augmentation) comes from
a generator seeded with (seed, epoch, item), so item ``i`` of an epoch is the same tile for
any number of DataLoader workers and after a resume; call ``set_epoch`` before creating the
epoch's iterator (workers that persist across epochs would keep the old epoch).

Workers deliver raw batches (:func:`raw_loader`): windows in the file's dtype with validity,
mask and each tile's augmentation, copied once into the batch; conversion, normalization,
flips and brightness happen batched on the training device (``transform``; on a CPU-only
training, in the workers: ``raw_loader(finished=True)``). Indexing the data
set (``tiles[i]``) gives a finished tile, through the same transform on the CPU.

- training, ``data.sampling: random``: ``data.tiles_per_epoch`` windows at uniform positions
  in scenes drawn by area; a window with less than ``data.min_valid_fraction`` valid pixels is
  redrawn (up to MAX_DRAWS times, then the most valid draw is kept).
- training, ``data.sampling: grid``: the grid tiles (``data.overlap``) passing that threshold.
- evaluation: grid tiles without overlap, every tile with a valid pixel, no augmentation, so
  each valid pixel is counted exactly once and tile-wise counts equal whole-split counts.

A window that touches a segment of a compressed file that does not decode (the check decodes
large files only in part, :mod:`segtrain.data.integrity`) is read as all invalid: a random draw
is redrawn, a grid tile trains nothing, and the segment is named in the next batch's
``corrupt`` list for the trainer to report. The job goes on, and draws stay what they were, so
a resumed run is the same run.
"""
from __future__ import annotations

import os
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

import numpy as np
import torch

from segtrain.config.schema import DataConfig
from segtrain.data.augment import Augmentation, draw_augmentation
from segtrain.data.batch_transform import TileTransform, batch_tensor, finish, geometry_code
from segtrain.data.item_random import ItemRandom, seed_words
from segtrain.data.labels import Labels
from segtrain.data.layout import read_split
from segtrain.data.reader import CorruptSegment, SceneReader
from segtrain.data.normalization import Normalization, normalization
from segtrain.data.scene import SceneInfo, read_info, resolve_nodata, select_bands
from segtrain.data.stats import Stats
from segtrain.data.tiling import pad_tile, tile_origins
from segtrain.errors import UserError

MAX_DRAWS = 20
PLACE = ("scene", "y", "x")
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
        augment = data_cfg.augment
        self.transform = TileTransform(_normalization(data_cfg, stats, self.band_indices, self.infos[0]), self.tile,
                                       augmented=training and (augment.hflip or augment.vflip or augment.rot90))
        self._dtype = torch.from_numpy(np.empty(0, np.dtype(self.infos[0].dtype))).dtype
        areas = np.array([i.height * i.width for i in self.infos], dtype=np.float64)
        cdf = (areas / areas.sum()).cumsum()
        self._scene_cdf = cdf / cdf[-1]  # as Generator.choice(p=...) makes it, so draws are unchanged
        self._epoch = 0
        self._seeds: Optional[tuple[int, np.ndarray]] = None  # (epoch, seed words of its items)
        self._grid: Optional[list[Window]] = None
        self._readers: OrderedDict[int, tuple[SceneReader, Optional[Labels]]] = OrderedDict()
        self._pid = os.getpid()
        self._corrupt: list[str] = []  # corrupt segments met since the last batch, reported with the next

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
                try:
                    valid = reader.read_valid(y, x, min(t, info.height - y), min(t, info.width - x))
                except CorruptSegment as exc:
                    self._met(exc)
                    continue
                if np.count_nonzero(valid) >= least:
                    kept.append(Window(scene, y, x))
        return kept

    def __getitem__(self, i: int) -> dict:
        """Tile ``i`` ready for the network: image (C,T,T) float32, mask (1,T,T) float32, valid
        (1,T,T) bool, and its place; :meth:`raw_batch` and :attr:`transform` on the CPU."""
        batch = self.raw_batch([i])
        tile = self.transform(batch)
        return {**{key: value[0] for key, value in tile.items()}, **{key: int(batch[key][0]) for key in PLACE}}

    def raw_batch(self, indices: Sequence[int]) -> dict[str, torch.Tensor]:
        """Tiles ``indices`` as read, for :attr:`transform` to finish on the training device.

        raw (B,C,T,T) in the file's dtype, valid (B,T,T) bool, mask (B,T,T) uint8, each tile's
        augmentation as geometry (B,) int64, gain (B,) float32 and, with band dropout, keep (B,C)
        float32 (0 for a dropped band), scene, y, x (B,) int64, and when any was met since the last
        batch, corrupt: the corrupt segments (``scenes/NAME: tile N (rows ..., cols ...)``).
        Each window is copied once, straight into its slot of the batch (in shared memory when
        this runs in a DataLoader worker, as torch's own collation does).
        """
        n, t = len(indices), self.tile
        raw = batch_tensor((n, len(self.band_indices), t, t), self._dtype)
        valid, mask = batch_tensor((n, t, t), torch.bool), batch_tensor((n, t, t), torch.uint8)
        for i in indices:
            if not 0 <= i < len(self):
                raise IndexError(f"tile {i} out of range (0..{len(self) - 1})")
        slots = zip(raw.numpy(), valid.numpy(), mask.numpy())  # numpy views: cheaper to index than tensors
        places, augs = [], []
        if self.training:
            for i, rng, slot in zip(indices, self._streams(indices), slots):
                places.append(self._draw(rng, *slot) if self.random_windows else self._read(self.grid[i], *slot))
                augs.append(draw_augmentation(rng, self.cfg.augment, len(self.band_indices)))
        else:
            places = [self._read(self.grid[i], *slot) for i, slot in zip(indices, slots)]
            augs = [Augmentation()] * n
        keep = {"keep": torch.tensor([[not d for d in a.dropped] for a in augs], dtype=torch.float32)
                } if self.training and self.cfg.augment.band_dropout > 0 else {}
        corrupt, self._corrupt = self._corrupt, []
        return {"raw": raw, "valid": valid, "mask": mask, **({"corrupt": corrupt} if corrupt else {}),
                "geometry": torch.tensor([geometry_code(a) for a in augs], dtype=torch.int64),
                "gain": torch.tensor([a.brightness for a in augs], dtype=torch.float32), **keep,
                **{key: torch.tensor([getattr(w, key) for w in places], dtype=torch.int64) for key in PLACE}}

    def _streams(self, indices: Sequence[int]) -> list[ItemRandom]:
        """Each item's random stream, ``np.random.default_rng([seed, epoch, item])``'s values; the
        seeds are made for the whole epoch at once (a microsecond a tile, against 20 for a Generator)."""
        if self._seeds is None or self._seeds[0] != self._epoch:
            self._seeds = self._epoch, seed_words(self.seed, self._epoch, np.arange(len(self)))
        return [ItemRandom.seeded(words) for words in self._seeds[1][list(indices)].tolist()]

    def _draw(self, rng: ItemRandom, raw: np.ndarray, valid: np.ndarray, mask: np.ndarray) -> Window:
        """Read a random window with enough valid pixels (or the most valid of MAX_DRAWS tries) into the slot."""
        least = self.cfg.min_valid_fraction * self.tile * self.tile
        best, best_count = None, -1
        for _ in range(MAX_DRAWS):
            scene = int(self._scene_cdf.searchsorted(rng.random(), side="right"))  # rng.choice(p=...), 10x faster
            info = self.infos[scene]
            y = int(rng.integers(0, max(0, info.height - self.tile) + 1))
            x = int(rng.integers(0, max(0, info.width - self.tile) + 1))
            window = self._read(Window(scene, y, x), raw, valid, mask)
            count = np.count_nonzero(valid)
            if count >= least:
                return window
            if count > best_count:
                best, best_count = window, count
        return best if best == window else self._read(best, raw, valid, mask)

    def _read(self, window: Window, raw: np.ndarray, valid: np.ndarray, mask: np.ndarray) -> Window:
        """Read ``window`` into a batch slot: raw (C,T,T), valid (T,T), mask (T,T), padded at scene
        edges; all invalid (and zero) when it touches a corrupt segment."""
        try:
            return self._read_window(window, raw, valid, mask)
        except CorruptSegment as exc:
            self._met(exc)
            for slot in (raw, valid, mask):
                slot.fill(0)
            return window

    def _met(self, exc: CorruptSegment) -> None:
        self._corrupt.append(f"{exc.path.parent.name}/{exc.path.name}: {exc.where}")

    def _read_window(self, window: Window, raw: np.ndarray, valid: np.ndarray, mask: np.ndarray) -> Window:
        info, t = self.infos[window.scene], self.tile
        h, w = min(t, info.height - window.y), min(t, info.width - window.x)
        reader, labels = self._reader(window.scene)
        if (h, w) == (t, t) and labels is not None:  # the staging cache's precomputed validity and mask
            reader.read_bands(window.y, window.x, t, t, out=raw)
            labels.read(window.y, window.x, valid, mask)
            return window
        if (h, w) == (t, t):
            _, window_valid, window_mask = reader.read_raw(window.y, window.x, t, t, out=raw, mask_out=mask)
        else:
            image, window_valid, window_mask = reader.read_raw(window.y, window.x, h, w)
            image, window_valid, window_mask = pad_tile(image, window_valid, t, window_mask)
            np.copyto(raw, image)
        np.copyto(valid, window_valid)
        if window_mask is not mask:
            np.copyto(mask, 0 if window_mask is None else window_mask)
        return window

    def _reader(self, scene: int) -> tuple[SceneReader, Optional[Labels]]:
        if self._pid != os.getpid():  # forked: never share the parent's open files
            self._readers, self._pid = OrderedDict(), os.getpid()
        entry = self._readers.pop(scene, None)
        if entry is None:
            files = self.files[scene]
            entry = SceneReader(files.scene, files.mask, self.band_indices, self.cfg.nodata), self._labels(scene)
            if len(self._readers) >= MAX_OPEN_READERS:
                self._readers.popitem(last=False)[1][0].close()
        self._readers[scene] = entry  # most recently used last
        return entry

    def _labels(self, scene: int) -> Optional[Labels]:
        """The staging cache's validity and mask of ``scene``, when made and when they mean what
        this data set would compute (all bands, the file's own no-data value)."""
        info, files = self.infos[scene], self.files[scene]
        if set(self.band_indices) != set(range(info.bands)) or \
                (self.cfg.nodata is not None and resolve_nodata(info, self.cfg.nodata) != resolve_nodata(info)):
            return None
        return Labels.find(Path(self.cfg.root), files.name, files.scene, files.mask)

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_readers"] = OrderedDict()  # open files stay in the process that opened them
        state["_corrupt"] = []  # reported by the process that met them
        return state


class _RawBatches(torch.utils.data.Dataset):
    """A data set's :meth:`TileDataset.raw_batch` batches, fetched a batch at a time by a DataLoader,
    optionally finished there by the data set's transform."""

    def __init__(self, tiles: TileDataset, finished: bool):
        self.tiles, self.finished = tiles, finished

    def __len__(self) -> int:
        return len(self.tiles)

    def __getitems__(self, indices: list[int]) -> dict[str, torch.Tensor]:
        batch = self.tiles.raw_batch(indices)
        return finish(batch, self.tiles.transform) if self.finished else batch


def _as_fetched(batch: dict) -> dict:
    return batch


def raw_loader(tiles: TileDataset, batch_size: int, finished: bool = False,
               **kwargs: Any) -> torch.utils.data.DataLoader:
    """A DataLoader (``kwargs`` as DataLoader's) of raw batches; finish them with ``tiles.transform``
    on the training device (:class:`segtrain.train.prefetch.DeviceBatches`).

    ``finished``: the workers run the transform themselves (training on the CPU, where it would
    otherwise cost the training process about 2.5 ms a 256 px tile); the same batches, bit for bit.
    """
    return torch.utils.data.DataLoader(_RawBatches(tiles, finished), batch_size=batch_size, collate_fn=_as_fetched,
                                       **kwargs)


def _normalization(data_cfg: DataConfig, stats: Optional[Stats], bands: list[int],
                   example: SceneInfo) -> Optional[Normalization]:
    """The selected bands' :class:`Normalization`, or None for ``data.normalize: none``."""
    if data_cfg.normalize != "none" and stats is not None and len(stats.mean) != example.bands:
        raise UserError(f"data.stats_file: the statistics describe {len(stats.mean)} bands but "
                        f"{example.path} has {example.bands}; recompute them with `segtrain stats`")
    return normalization(data_cfg.normalize, None if stats is None else stats.to_dict(), bands,
                         source=f"the statistics of {data_cfg.root}")
