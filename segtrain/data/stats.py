"""Per-band statistics and class balance of a split, over valid pixels only.

Training normalizes with these means and standard deviations and derives ``pos_weight: auto``
from the class balance; ``segtrain stats`` writes them to ``stats.json`` together with the
figures. Scenes are streamed in row blocks, so memory stays bounded for any scene size; means
and variances are merged block by block in float64 (Chan et al.), so they are exact, while
percentiles and the robust normalization's statistics (:mod:`segtrain.data.normalization`)
come from a deterministic subsample of at most SAMPLE_PIXELS valid pixels.
"""
from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np

from segtrain.config.schema import Config, DataConfig
from segtrain.data import memo
from segtrain.data.layout import SceneFiles, read_split
from segtrain.data.normalization import robust_statistics
from segtrain.data.reader import CorruptSegment, SceneReader
from segtrain.errors import UserError
from segtrain.fsutil import atomic_write_json

PERCENTILES = (1, 2, 50, 98, 99)
SAMPLE_PIXELS = 1_000_000  # over the whole split, for percentiles and histograms
MEMO_SECTION = "stats"
BLOCK_PIXELS = 1 << 22  # pixels per read while scanning a scene (64 MB of float32 for 4 bands)


@dataclass
class Stats:
    """What training needs from a data set's statistics, plus what a person checks first."""
    mean: list[float]  # per band of the file (all bands, whatever data.bands selects)
    std: list[float]
    pos_fraction: float  # positives among valid pixels
    pos_weight: float  # negatives / positives: the BCE weight that balances the classes
    nodata_fraction: float  # invalid pixels among all pixels
    percentiles: dict[str, list[float]] = field(default_factory=dict)  # "1", "50", ... -> per band
    scenes: list[dict] = field(default_factory=list)  # name, height, width, nodata_fraction, pos_fraction[, corrupt]
    split: str = "train"
    valid_pixels: int = 0
    robust: dict = field(default_factory=dict)  # per band: data.normalize: robust (segtrain.data.normalization)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict, source: str = "stats") -> "Stats":
        """Build from a dict (a parsed stats.json); a missing or malformed entry is a UserError naming ``source``."""
        try:
            stats = cls(**data)
            ok = (len(stats.mean) == len(stats.std) > 0 and all(s >= 0 for s in stats.std)
                  and 0 <= stats.pos_fraction <= 1 and stats.pos_weight > 0)
        except TypeError as exc:
            raise UserError(f"{source}: not a segtrain stats file: {exc}") from None
        if not ok:
            raise UserError(f"{source}: inconsistent statistics (mean/std lengths, negative std or fractions out of range)")
        return stats


@dataclass
class _Moments:
    """Count, mean and sum of squared deviations per band; merged with Chan's formula."""
    n: int
    mean: np.ndarray
    m2: np.ndarray

    @classmethod
    def of(cls, values: np.ndarray) -> "_Moments":
        mean = values.mean(axis=1, dtype=np.float64)
        dev = values - mean.astype(values.dtype)[:, None]
        return cls(values.shape[1], mean, np.square(dev).sum(axis=1, dtype=np.float64))

    def __add__(self, other: "_Moments") -> "_Moments":
        n = self.n + other.n
        if not other.n or not self.n:
            return self if other.n == 0 else other
        delta = other.mean - self.mean
        return _Moments(n, self.mean + delta * other.n / n, self.m2 + other.m2 + delta ** 2 * self.n * other.n / n)


@dataclass
class _SceneScan:
    height: int
    width: int
    moments: _Moments
    positives: int
    sample: np.ndarray  # (bands, n) valid pixel values
    corrupt: list[str]  # segments that did not decode: their rows are left out

    @property
    def pixels(self) -> int:
        return self.height * self.width


def scan_split(root: str | Path, split: str = "train", nodata: Optional[float] = None,
               workers: int = 4) -> tuple[Stats, np.ndarray]:
    """Statistics of a split and a subsample (bands, n) of its valid pixel values (for histograms)."""
    scenes = read_split(root, split)
    per_scene = max(1, SAMPLE_PIXELS // len(scenes))  # the split's sample stays bounded for any number of scenes
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        scans = list(pool.map(lambda s: _scan_scene(s, nodata, per_scene), scenes))
    moments = scans[0].moments
    for scan in scans[1:]:
        moments = moments + scan.moments
    if moments.n == 0:
        raise UserError(f"{root}: the '{split}' split has no valid pixels (is data.nodata right?)")
    pixels = sum(s.pixels for s in scans)
    positives = sum(s.positives for s in scans)
    sample = np.concatenate([s.sample for s in scans], axis=1)
    table = [dict(name=f.name, height=s.height, width=s.width, nodata_fraction=round(1 - s.moments.n / s.pixels, 6),
                  pos_fraction=round(s.positives / max(s.moments.n, 1), 6), **({"corrupt": s.corrupt} if s.corrupt else {}))
             for f, s in zip(scenes, scans)]
    stats = Stats(
        mean=moments.mean.tolist(), std=np.sqrt(moments.m2 / moments.n).tolist(),
        pos_fraction=positives / moments.n, pos_weight=(moments.n - positives) / max(positives, 1),
        nodata_fraction=1 - moments.n / pixels,
        percentiles={str(q): np.percentile(sample, q, axis=1).tolist() for q in PERCENTILES},
        scenes=table, split=split, valid_pixels=int(moments.n), robust=robust_statistics(sample))
    return stats, sample


def _scan_scene(files: SceneFiles, nodata: Optional[float], sample_size: int) -> _SceneScan:
    with SceneReader(files.scene, files.mask, nodata=nodata) as reader:
        rows = max(1, BLOCK_PIXELS // reader.width)
        step = max(1, reader.height * reader.width // sample_size)
        moments = _Moments(0, np.zeros(reader.bands), np.zeros(reader.bands))
        positives, samples, corrupt = 0, [], []
        for y in range(0, reader.height, rows):
            try:
                image, valid, mask = reader.read(y, 0, min(rows, reader.height - y), reader.width)
            except CorruptSegment as exc:  # training skips it too (segtrain.data.dataset)
                corrupt.append(exc.where)
                continue
            values = image[:, valid]
            moments = moments + _Moments.of(values) if values.size else moments
            positives += int(np.count_nonzero(mask[valid]))
            samples.append(values[:, ::step])
        return _SceneScan(reader.height, reader.width, moments, positives,
                          np.concatenate(samples or [np.empty((reader.bands, 0))], axis=1), corrupt)


def compute_stats(root: str | Path, split: str = "train", nodata: Optional[float] = None, workers: int = 4) -> Stats:
    """Statistics of a split's valid pixels (all bands of the files), computed in memory."""
    return scan_split(root, split, nodata, workers)[0]


def write_stats(stats: Stats, path: str | Path) -> None:
    atomic_write_json(path, stats.to_dict())


def load_stats(path: str | Path) -> Stats:
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise UserError(f"{path}: cannot read statistics: {exc}") from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: not a segtrain stats file (expected a JSON object)")
    return Stats.from_dict(data, source=str(path))


def stats_path(data_cfg: DataConfig) -> Path:
    """Where a data set's statistics live: ``data.stats_file``, else ``<data.root>/stats.json``."""
    return Path(data_cfg.stats_file) if data_cfg.stats_file else Path(data_cfg.root) / "stats.json"


def training_stats(cfg: Config) -> Optional[Stats]:
    """The statistics training uses (normalization, ``pos_weight: auto``), or None when neither needs them."""
    if cfg.data.normalize == "none" and cfg.loss.pos_weight != "auto":
        return None
    return load_or_compute_stats(cfg.data)


def load_or_compute_stats(data_cfg: DataConfig) -> Stats:
    """The data set's statistics from its stats file, else computed from the train split.

    Computing never writes into the data root (it may be read-only shared storage): the
    result is remembered in the user's cache per version of the train files, so only the
    first run or job on a data set pays the scan.
    """
    path = stats_path(data_cfg)
    if path.is_file():
        return load_stats(path)
    if data_cfg.stats_file:
        raise UserError(f"data.stats_file: {path} not found (create it with `segtrain stats {data_cfg.root}`)")
    return remembered_stats(data_cfg.root, "train", data_cfg.nodata)


def remembered_stats(root: str | Path, split: str, nodata: Optional[float]) -> Stats:
    """The statistics of a split, computed once per version of its files and remembered outside
    the data set (:mod:`segtrain.data.memo`), so every later job and grid point skips the scan."""
    key = f"{split}:{nodata}"
    files = {f.name: [memo.stamp(f.scene), memo.stamp(f.mask)] for f in read_split(root, split)}
    record = memo.load_section(root, MEMO_SECTION).get(key) or {}
    if record.get("files") == files and all(all(pair) for pair in files.values()):
        try:
            stats = Stats.from_dict(record["stats"])
            if stats.robust:
                return stats
        except (UserError, KeyError):
            pass  # written by another version (e.g. before robust statistics): computed again
    stats = compute_stats(root, split, nodata)
    if all(all(pair) for pair in files.values()):
        section = memo.load_section(root, MEMO_SECTION)
        memo.save_section(root, MEMO_SECTION, {**section, key: {"files": files, "stats": stats.to_dict()}})
    return stats
