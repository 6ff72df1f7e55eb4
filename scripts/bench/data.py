#!/usr/bin/env python3
"""Tiles per second of the training data set beside the naive way and the raw limit, in one run.

Full-size scenes (default 2 of 4 x 10980 x 10980 uint16, a demo scene tiled up, so they are
made in seconds) are written twice: deflate-compressed in 256 px tiles, pixel-interleaved (as
GDAL writes them) and plain (uncompressed strips, band-first); the compressed set is then
staged with the cache. Measured on the same random windows:

- naive: ``tifffile.imread`` of the whole scene for every tile, then slicing;
- raw limit: copying the window's bytes out of an ``np.memmap`` of the cached array (fresh
  maps each round, as the data set's readers are); for reference, the same copies into new
  batches of 16 (a loader's output cannot reuse one buffer that stays in the CPU's cache);
- TileDataset (random windows with validity, mask and augmentation draws): its raw batches of
  16, as DataLoader workers deliver them to the training device, in this process (0 workers)
  and through 2 workers, beside a DataLoader moving ready-made zero batches of the same shapes
  (its own ceiling on this machine); and, for the cache, the same batches finished by the batch
  transform (conversion, normalization, flips, brightness) on this CPU, as a CPU-only training
  does it in this process, or as it does in the workers ("finished by the workers"). "main CPU"
  is the CPU time of this (the training) process per tile. From the cache,
  validity and mask come precomputed (its ``labels/``), as in training.

Each row says which training path it measures: "GPU" (raw batches, finished by the transform
on the training device after the copy: what a GPU training's loader delivers), "CPU" (batches
finished on the host, in the workers or, with 0 workers, in the training process: what a CPU
training's loader delivers), or "-" (a reference, not a training path). With ``--baseline
REV`` (default: main) the training paths' rows of the cache are also measured with the old
code (that git revision, extracted and run in its own process, in each round right after
this code's), printed as "old" rows and as new/old ratios.

The measurements run in ``--repeat`` interleaved rounds and each row shows its fastest round
with the load average after it: on a shared machine the slowest rounds measure the neighbours.
The cache's raw batches are measured right after the raw limit in each round, and the goal's
ratio is also printed per round (median and each round's value).

Goals: the cache's raw batches at >= 70 % of the raw limit (printed in tiles/s and in CPU time
per tile, which load disturbs less), compressed TIFFs at >= 20x the naive way. Also timed:
opening a 1,000-scene data set (metadata only) and building the cache.

    .venv/bin/python scripts/bench/data.py [--scenes 2] [--size 10980] [--tiles 600] [--repeat 3] [--dir DIR] [--baseline REV]
"""
from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np
import tifffile
import torch

REPO = Path(__file__).resolve().parents[2]
if "--old-rows" not in sys.argv:  # as the old code's child process, its package comes from PYTHONPATH
    sys.path.insert(0, str(REPO))

from segtrain.config.schema import DataConfig  # noqa: E402
from segtrain.data.cache import build_cache  # noqa: E402
from segtrain.data.dataset import TileDataset, raw_loader  # noqa: E402
from segtrain.data.scene import GDAL_NODATA_TAG  # noqa: E402
from segtrain.data.stats import Stats  # noqa: E402
from segtrain.data.synthetic import make_scene  # noqa: E402

BLOCK = 732  # side of the generated demo scene that is tiled up to full size
NODATA_TAG = [(GDAL_NODATA_TAG, "s", 0, "0", True)]


def write_scenes(base: Path, scenes: int, size: int, bands: int, plain: bool = True) -> tuple[Path, Path, Stats]:
    """Two data roots (compressed, plain: unless ``plain`` is False) with the same scenes, and statistics of those scenes."""
    rng = np.random.default_rng(0)
    image, mask = make_scene(rng, BLOCK, BLOCK, bands)
    valid = image.any(axis=0)
    values = image[:, valid].astype(np.float64)
    stats = Stats(mean=values.mean(1).tolist(), std=values.std(1).tolist(), pos_fraction=float(mask[valid].mean()),
                  pos_weight=1.0, nodata_fraction=float(1 - valid.mean()))
    reps = -(-size // BLOCK)
    roots = base / "compressed", base / "plain"
    for root in roots[:2 if plain else 1]:
        for sub in ("scenes", "masks", "filelists"):
            (root / sub).mkdir(parents=True, exist_ok=True)
        (root / "filelists" / "train.csv").write_text("".join(f"scene_{i}.tif\n" for i in range(scenes)))
    for i in range(scenes):
        shift = rng.integers(0, BLOCK, size=2)
        big = np.tile(np.roll(image, shift, axis=(1, 2)), (1, reps, reps))[:, :size, :size]
        big_mask = np.tile(np.roll(mask, shift, axis=(0, 1)), (reps, reps))[:size, :size]
        name = f"scene_{i}.tif"
        tifffile.imwrite(roots[0] / "scenes" / name, big.transpose(1, 2, 0), photometric="minisblack",
                         planarconfig="contig", tile=(256, 256), compression="zlib", compressionargs={"level": 1},
                         maxworkers=2, metadata=None, extratags=NODATA_TAG)
        tifffile.imwrite(roots[0] / "masks" / name, big_mask, photometric="minisblack", tile=(256, 256),
                         compression="zlib", metadata=None)
        if not plain:
            continue
        tifffile.imwrite(roots[1] / "scenes" / name, big, photometric="minisblack", planarconfig="separate",
                         metadata=None, extratags=NODATA_TAG)
        tifffile.imwrite(roots[1] / "masks" / name, big_mask, photometric="minisblack", metadata=None)
    return roots[0], roots[1], stats


class EmptyBatches(torch.utils.data.Dataset):
    """Ready-made zero batches of the raw batches' shapes: what the DataLoader alone can move."""

    def __init__(self, bands: int, tile: int, tiles: int):
        self.bands, self.tile, self.tiles = bands, tile, tiles

    def __len__(self) -> int:
        return self.tiles

    def __getitems__(self, indices: list[int]) -> dict:
        n, t = len(indices), self.tile
        return {"raw": torch.zeros(n, self.bands, t, t, dtype=torch.uint16), "valid": torch.zeros(n, t, t, dtype=torch.bool),
                "mask": torch.zeros(n, t, t, dtype=torch.uint8), "geometry": torch.zeros(n, dtype=torch.int64),
                "gain": torch.ones(n), "scene": torch.zeros(n, dtype=torch.int64)}


def as_fetched(batch: dict) -> dict:
    return batch


def dataset_rate(cfg: DataConfig, stats: Stats, workers: int, transform: bool = False,
                 finished: bool = False) -> tuple[float, float]:
    """Steady tiles/s of a training TileDataset's raw batches (optionally finished on this CPU, or
    by the workers) and this process's CPU seconds per tile."""
    ds = TileDataset(cfg, "train", training=True, seed=0, stats=stats)
    ds.set_epoch(0)
    return loader_rate(raw_loader(ds, 16, num_workers=workers, finished=finished), ds.transform if transform else None)


def loader_rate(loader: torch.utils.data.DataLoader, transform=None) -> tuple[float, float]:
    """Steady tiles/s of a DataLoader and this process's CPU seconds per tile, batches dropped as they come."""
    batches = iter(loader)
    next(batches)  # worker start-up is not part of the steady rate
    start, cpu = time.perf_counter(), time.process_time()
    served = 0
    for batch in batches:
        if transform is not None:
            transform(batch)
        served += len(batch["scene"])
    return served / (time.perf_counter() - start), (time.process_time() - cpu) / served


PATHS = {"TileDataset raw batches": "GPU", "+ batch transform on CPU": "CPU", "finished by the workers": "CPU"}
TRAINING_ROWS = {  # reader -> (workers, transform, finished): the rows also measured with the old code
    "TileDataset raw batches": (0, False, False),
    "+ batch transform on CPU": (0, True, False),
    "finished by the workers": (2, False, True),
}


def old_rates(code: Path, cfg: DataConfig, stats: Stats) -> dict[str, tuple[float, float]]:
    """The training rows of the cache measured with the old code (``code``), in a process of its own."""
    from startup import environment

    spec = json.dumps({"cfg": dataclasses.asdict(cfg), "stats": stats.to_dict()})
    proc = subprocess.run([sys.executable, __file__, "--old-rows", spec], env=environment(code, Path(cfg.root) / ".memo"),
                          capture_output=True, text=True)
    if proc.returncode:
        raise RuntimeError(f"the old code failed:\n{proc.stderr[-2000:]}")
    return {name: tuple(rate) for name, rate in json.loads(proc.stdout.splitlines()[-1]).items()}


def old_rows_child(spec: str) -> None:
    """``--old-rows SPEC``: measure TRAINING_ROWS with whatever segtrain is on the path; print them as JSON."""
    given = json.loads(spec)
    cfg = DataConfig(**{k: v for k, v in given["cfg"].items() if k not in ("augment",)})
    stats = Stats.from_dict(given["stats"])
    rates = {name: dataset_rate(cfg, stats, workers, transform=transform, finished=finished)
             for name, (workers, transform, finished) in TRAINING_ROWS.items()}
    print(json.dumps(rates))


def epoch_windows(cfg: DataConfig, stats: Stats, tiles: int) -> list[tuple[int, int, int]]:
    """The (scene, y, x) windows of the data set's epoch 0: the same for every root."""
    ds = TileDataset(cfg, "train", training=True, seed=0, stats=stats)
    return [(item["scene"], item["y"], item["x"]) for item in (ds[i] for i in range(tiles))]


def naive_rate(root: Path, windows: list[tuple[int, int, int]], tile: int) -> float:
    start = time.perf_counter()
    for scene, y, x in windows:
        np.array(tifffile.imread(root / "scenes" / f"scene_{scene}.tif")[..., y:y + tile, x:x + tile])
    return len(windows) / (time.perf_counter() - start)


def raw_rate(root: Path, windows: list[tuple[int, int, int]], tile: int, scenes: int,
             batch: int = 0) -> tuple[float, float]:
    """Tiles/s and CPU seconds per tile of copying the windows out of fresh memory maps of the
    cached scenes: each into an array of its own (the raw limit), or with ``batch``, into a new
    batch of that many windows, as a loader must (for reference)."""
    maps = [tifffile.memmap(root / "scenes" / f"scene_{i}.tif", mode="r") for i in range(scenes)]
    start, cpu = time.perf_counter(), time.process_time()
    for b, (scene, y, x) in enumerate(windows):
        if not batch:
            np.array(maps[scene][:, y:y + tile, x:x + tile])
            continue
        if b % batch == 0:
            slots = np.empty((batch, *maps[scene].shape[:-2], tile, tile), maps[scene].dtype)
        np.copyto(slots[b % batch], maps[scene][:, y:y + tile, x:x + tile])
    return len(windows) / (time.perf_counter() - start), (time.process_time() - cpu) / len(windows)


def open_time(root: Path, scenes: int, count: int) -> float:
    """Seconds to open a data set listing ``count`` scenes (links to the full-size ones)."""
    many = root.parent / "many"
    shutil.rmtree(many, ignore_errors=True)
    for sub in ("scenes", "masks", "filelists"):
        (many / sub).mkdir(parents=True)
    for i in range(count):
        for sub in ("scenes", "masks"):
            (many / sub / f"s{i:04d}.tif").symlink_to(root / sub / f"scene_{i % scenes}.tif")
    (many / "filelists" / "train.csv").write_text("".join(f"s{i:04d}.tif\n" for i in range(count)))
    start = time.perf_counter()
    TileDataset(DataConfig(root=str(many), normalize="none"), "train", training=True, seed=0, stats=None)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenes", type=int, default=2)
    parser.add_argument("--size", type=int, default=10980)
    parser.add_argument("--bands", type=int, default=4)
    parser.add_argument("--tile", type=int, default=256)
    parser.add_argument("--tiles", type=int, default=600, help="tiles per data set measurement")
    parser.add_argument("--naive", type=int, default=3, help="tiles for the naive baseline")
    parser.add_argument("--repeat", type=int, default=3,
                        help="rounds of the measurements, interleaved; each figure is its round's best")
    parser.add_argument("--dir", help="work folder (default: a temporary one, removed at the end)")
    parser.add_argument("--baseline", default="main", help="git revision of the old code ('' to skip it)")
    parser.add_argument("--old-rows", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.old_rows:
        old_rows_child(args.old_rows)
        return
    base = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix="segtrain-bench-data-"))
    try:
        run(args, base)
    finally:
        if not args.dir:
            shutil.rmtree(base)


def run(args: argparse.Namespace, base: Path) -> None:
    t0 = time.perf_counter()
    params = json.dumps(dict(scenes=args.scenes, size=args.size, bands=args.bands))
    marker = base / "bench.json"
    if marker.is_file() and marker.read_text() == params:  # --dir of an earlier run: reuse its scenes
        compressed, plain = base / "compressed", base / "plain"
        stats = Stats.from_dict(json.loads((base / "stats.json").read_text()))
        print(f"reusing the scenes in {base}")
    else:
        for sub in ("compressed", "plain", "cache"):
            shutil.rmtree(base / sub, ignore_errors=True)
        compressed, plain, stats = write_scenes(base, args.scenes, args.size, args.bands)
        (base / "stats.json").write_text(json.dumps(stats.to_dict()))
        marker.write_text(params)
        print(f"{args.scenes} scenes of {args.bands} x {args.size} x {args.size} uint16 written in "
              f"{time.perf_counter() - t0:.1f} s")
    cfg = DataConfig(root=str(compressed), tile_size=args.tile, tiles_per_epoch=args.tiles, num_workers=0)
    t0 = time.perf_counter()
    cache = build_cache(cfg, base / "cache")
    print(f"staging cache built in {time.perf_counter() - t0:.1f} s")
    print(f"opening a 1000-scene data set (metadata only): {open_time(compressed, args.scenes, 1000):.2f} s")

    windows = epoch_windows(dataclasses.replace(cfg, root=str(cache)), stats, args.tiles)
    naive = {root.name: naive_rate(root, windows[:args.naive], args.tile) for root in (compressed, plain)}
    naive["cache"] = naive["plain"]  # the cache is a plain file too
    empty = EmptyBatches(args.bands, args.tile, args.tiles)
    measurements: dict[tuple[str, str, str], Callable[[], tuple[float, float]]] = {
        ("cache", "raw limit (np.memmap copy)", "-"): lambda: raw_rate(cache, windows, args.tile, args.scenes),
        ("cache", "TileDataset raw batches", "0"): functools.partial(  # right after the limit: a fair pair
            dataset_rate, dataclasses.replace(cfg, root=str(cache)), stats, 0),
        ("cache", "memmap copy into batches", "-"): lambda: raw_rate(cache, windows, args.tile, args.scenes, batch=16),
        ("-", "DataLoader, empty batches", "2"): lambda: loader_rate(
            torch.utils.data.DataLoader(empty, batch_size=16, num_workers=2, collate_fn=as_fetched))}
    for root in (compressed, plain, cache):
        for workers in (0, 2):
            measurements[root.name, "TileDataset raw batches", str(workers)] = functools.partial(
                dataset_rate, dataclasses.replace(cfg, root=str(root)), stats, workers)
    for workers in (0, 2):
        measurements["cache", "+ batch transform on CPU", str(workers)] = functools.partial(
            dataset_rate, dataclasses.replace(cfg, root=str(cache)), stats, workers, transform=True)
    measurements["cache", "finished by the workers", "2"] = functools.partial(
        dataset_rate, dataclasses.replace(cfg, root=str(cache)), stats, 2, finished=True)
    rounds: dict[tuple[str, str, str], list[tuple[float, float, float]]] = {key: [] for key in measurements}
    old_code = None
    if args.baseline:
        sys.path.insert(0, str(REPO / "scripts" / "bench"))
        from startup import baseline_code

        old_code = baseline_code(args.baseline, base)
        for reader, (workers, _, _) in TRAINING_ROWS.items():
            rounds["cache (old)", reader, str(workers)] = []
    for _ in range(args.repeat):  # interleaved, so a burst of load on the machine hits every row alike
        for key, measure in measurements.items():
            rounds[key].append((*measure(), os.getloadavg()[0]))
        if old_code is not None:  # right after this code's rows, in the same round
            for reader, rate in old_rates(old_code, dataclasses.replace(cfg, root=str(cache)), stats).items():
                rounds["cache (old)", reader, str(TRAINING_ROWS[reader][0])].append((*rate, os.getloadavg()[0]))
    best = {key: max(results) for key, results in rounds.items()}  # (tiles/s, CPU s/tile, load) of the fastest round
    raw = best["cache", "raw limit (np.memmap copy)", "-"]
    print(f"\nbest of {args.repeat} interleaved rounds; load: 1-minute load average after the round "
          f"({os.cpu_count()} CPUs)")
    print(f"{'source':11s} {'reader':27s} {'workers':>7s} {'path':>4s} {'tiles/s':>9s} {'x naive':>8s} {'% of raw':>8s} "
          f"{'main CPU us/tile':>17s} {'load':>5s}")
    for source, reader, workers in [("compressed", "naive (imread whole scene)", "-"), ("plain", "naive (imread whole scene)", "-")]:
        print(f"{source:11s} {reader:27s} {workers:>7s} {'-':>4s} {naive[source]:9.1f} {1:8.1f} "
              f"{100 * naive[source] / raw[0]:7.1f}% {'-':>17s} {'-':>5s}")
    for (source, reader, workers), (rate, cpu, load) in best.items():
        vs_naive = f"{rate / naive[source]:8.1f}" if source in naive else f"{'-':>8s}"
        path = PATHS.get(reader, "-")
        print(f"{source:11s} {reader:27s} {workers:>7s} {path:>4s} {rate:9.1f} {vs_naive} {100 * rate / raw[0]:7.1f}% "
              f"{cpu * 1e6:17.0f} {load:5.1f}")
    cached = best["cache", "TileDataset raw batches", "0"]
    print(f"\ngoal: cache >= 70 % of the raw limit: {100 * cached[0] / raw[0]:.0f} % in tiles/s, "
          f"{100 * raw[1] / cached[1]:.0f} % in CPU time per tile (0 workers, best rounds); "
          f"compressed >= 20x naive: {best['compressed', 'TileDataset raw batches', '0'][0] / naive['compressed']:.0f}x")
    finished = best["cache", "finished by the workers", "2"]
    print(f"goal: CPU training path (finished by 2 workers) >= 50 % of the raw limit: {100 * finished[0] / raw[0]:.0f} % "
          f"in tiles/s, {100 * raw[1] / finished[1]:.0f} % in the main process's CPU time per tile")
    if old_code is not None:
        print(f"old code ({args.baseline}) against this code, the same rows, best rounds:")
        for reader, (workers, _, _) in TRAINING_ROWS.items():
            path = PATHS[reader]
            new_row, old_row = best["cache", reader, str(workers)], best["cache (old)", reader, str(workers)]
            print(f"  {path} path, {reader} ({workers} workers): {100 * old_row[0] / raw[0]:.0f} % -> "
                  f"{100 * new_row[0] / raw[0]:.0f} % of the raw limit in tiles/s (new/old {new_row[0] / old_row[0]:.2f}); "
                  f"CPU time per tile of the main process new/old {new_row[1] / old_row[1]:.2f}")
    paired = [(c[0] / r[0], r[1] / c[1]) for r, c in zip(rounds[next(iter(rounds))], rounds["cache", "TileDataset raw batches", "0"])]
    for name, values in (("tiles/s", [p[0] for p in paired]), ("CPU time", [p[1] for p in paired])):
        print(f"  cache / raw limit in {name}, each round's pair measured back to back: median "
              f"{100 * float(np.median(values)):.0f} % (rounds: {', '.join(f'{100 * v:.0f}' for v in values)})")


if __name__ == "__main__":
    main()
