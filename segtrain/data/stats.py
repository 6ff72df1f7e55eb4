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
from typing import Mapping, Optional

import numpy as np

from segtrain.config.schema import Config, DataConfig
from segtrain.data import memo
from segtrain.data.layout import SceneFiles, read_split
from segtrain.data.normalization import robust_statistics
from segtrain.data.reader import CorruptSegment, SceneReader
from segtrain.data.scene import SceneInfo, read_info
from segtrain.errors import UserError
from segtrain.fsutil import atomic_write_json

PERCENTILES = (1, 2, 50, 98, 99)
SAMPLE_PIXELS = 1_000_000  # over the whole split, for percentiles and histograms
MEMO_SECTION = "stats"
BLOCK_PIXELS = 1 << 22  # pixels per read while scanning a scene (64 MB of float32 for 4 bands)
VALID_BLOCK_PIXELS = 1 << 16  # pixels per read while looking for a first valid pixel


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
        raise UserError(_no_valid_pixels(root, split))
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


def _no_valid_pixels(root: str | Path, split: str) -> str:
    return f"{root}: the '{split}' split has no valid pixels (is data.nodata right?)"


def require_valid_pixels(data_cfg: DataConfig, split: str = "train") -> None:
    """Refuse a split without a single valid pixel (of the selected bands), whether or not statistics
    are computed: with a stats file made before the scenes changed, or with no statistics needed,
    training would otherwise run on nothing (loss 0). Reading stops at the first valid pixel, so a
    usable data set costs one small read."""
    for files in read_split(data_cfg.root, split):
        with SceneReader(files.scene, None, data_cfg.bands, data_cfg.nodata) as reader:
            rows = max(1, VALID_BLOCK_PIXELS // max(reader.width, 1))
            for y in range(0, reader.height, rows):
                if reader.read_valid(y, 0, min(rows, reader.height - y), reader.width).any():
                    return
    raise UserError(_no_valid_pixels(data_cfg.root, split))


def check_describes(stats: Stats, source: Path, data_cfg: DataConfig,
                    infos: Optional[Mapping[str, SceneInfo]] = None) -> None:
    """Refuse statistics of another data set: a stats file whose table of scenes (what ``segtrain stats``
    writes) names other scenes than the train split or other sizes, e.g. one left over from before the
    scenes changed. A stats file without that table (written by hand) cannot be compared and is used as is.
    ``infos``: the scenes' metadata by name when the caller has it (the preflight's summary)."""
    if not stats.scenes:
        return
    scenes = {f.name: f for f in read_split(data_cfg.root, "train")}
    described = {row.get("name"): row for row in stats.scenes if isinstance(row, dict)}
    fix = f"recompute them with `segtrain stats {data_cfg.root}`"
    for name in scenes:
        if name not in described:
            raise UserError(f"{source}: describes other scenes than the train split of {data_cfg.root} "
                            f"({name} is not among them); {fix}")
    for name in described:
        if name not in scenes:
            raise UserError(f"{source}: describes scene {name}, which is not in the train split of "
                            f"{data_cfg.root}; {fix}")
    for name, row in described.items():
        info = infos[name] if infos and name in infos else read_info(scenes[name].scene)
        if (row.get("height"), row.get("width")) != (info.height, info.width):
            raise UserError(f"{source}: describes {name} as {row.get('height')}x{row.get('width')} but it is "
                            f"{info.height}x{info.width} in {data_cfg.root}; {fix}")


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


def training_stats(cfg: Config, infos: Optional[Mapping[str, SceneInfo]] = None) -> Optional[Stats]:
    """The statistics training uses (normalization, ``pos_weight: auto``), or None when neither needs them;
    either way, a train split without a valid pixel is refused."""
    if cfg.data.normalize == "none" and cfg.loss.pos_weight != "auto":
        require_valid_pixels(cfg.data)
        return None
    return load_or_compute_stats(cfg.data, infos)


def load_or_compute_stats(data_cfg: DataConfig, infos: Optional[Mapping[str, SceneInfo]] = None) -> Stats:
    """The data set's statistics from its stats file (when it describes the data set), else computed
    from the train split.

    Computing never writes into the data root (it may be read-only shared storage): the
    result is remembered in the user's cache per version of the train files, so only the
    first run or job on a data set pays the scan.
    """
    path = stats_path(data_cfg)
    if path.is_file():
        stats = load_stats(path)
        check_describes(stats, path, data_cfg, infos)
        require_valid_pixels(data_cfg)  # computed statistics refuse a split without one; a file does not
        return stats
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
