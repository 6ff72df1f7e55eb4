#!/usr/bin/env python3
"""Start-up to the first training step, and ``segtrain check``, against the old code in one run.

Two measurements, each run as the user runs it (``python -m segtrain ...`` in a new process,
wall time from the start of the process):

- **start-up**: from the start of ``segtrain train`` until its first step is logged, on data
  sets of N tiny scenes (default 1,000; ``--scenes 1000 10000`` for the issue's sizes). Timed
  for the first job of a chain (nothing remembered about the data set yet) and for a later job
  (what the first one learnt, remembered in the user's cache, is reused), each with this
  checkout and with the old code (``--baseline``, a git revision extracted to a temporary
  folder), which knows nothing to remember, so its later job pays everything again.
- **check**: ``segtrain check`` on N scenes with large masks (default 200 of 1024 px;
  ``--check-scenes 1000 --mask-size 2048`` for the issue's size), first and repeated, with
  this checkout and the old code.
- **W&B** (``--wandb-rounds R``, 0 skips it): time to the first step of ``segtrain train`` with
  ``logging.wandb.mode`` offline and disabled, with this checkout and the old code, beside a
  plain one-step PyTorch script (PLAIN_STEP: import torch, read one batch of tiles of the same
  data set with tifffile, a small conv net, one Adam step), on 50 tiny scenes whose check is
  remembered; each as a ratio to the plain script of the same round.
- **check of Sentinel-2-size scenes** (``--s2-scenes K``, 0 skips it): the first ``segtrain
  check`` of 4 x 10980^2 uint16 scenes (deflate, 256 px tiles, as scripts/bench/data.py writes
  them) with 0/1 masks, in CPU seconds of the check's process (one thread, ``--workers`` 1
  in each). K real scenes are written and hard-linked under many names; the check is timed on
  two data sets of N and 2N names, so the CPU per scene is their difference over N and the
  rest is the command's fixed cost; 1,000 scenes are extrapolated from the two. Beside them,
  decoding one mask whole (tifffile.imread), the old check's mask cost, for reference.

The data sets are generated in a temporary folder and dated back a minute (files modified in
the last seconds are never remembered, see segtrain/data/memo.py). Each job gets a new run
directory and a fresh or the shared cache folder (``XDG_CACHE_HOME``). The machine's load
moves absolute figures; the ratios compare runs made minutes apart in the same process.
"""
from __future__ import annotations

import argparse
import os
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import numpy as np
import tifffile

REPO = Path(__file__).resolve().parents[2]
BASELINE = "fce34c2"  # main before issue 15's start-up and check work
TRAIN_OVERRIDES = ["data.tile_size=32", "data.overlap=4", "data.tiles_per_epoch=16", "train.batch_size=8",
                   "train.epochs=1", "model.base_width=8", "model.depth=2", "logging.every_steps=1",
                   "logging.wandb.mode=disabled", "data.num_workers=1"]


PLAIN_STEP = """
import sys
from pathlib import Path
import numpy as np, tifffile, torch
root = Path(sys.argv[1])
names = (root / "filelists" / "train.csv").read_text().split()[:8]
tiles = np.stack([tifffile.imread(root / "scenes" / n)[:, :32, :32] for n in names]).astype(np.float32)
masks = np.stack([tifffile.imread(root / "masks" / n)[:32, :32] > 0 for n in names]).astype(np.float32)
net = torch.nn.Sequential(torch.nn.Conv2d(tiles.shape[1], 8, 3, padding=1), torch.nn.ReLU(),
                          torch.nn.Conv2d(8, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(8, 1, 1))
opt = torch.optim.Adam(net.parameters(), 1e-3)
loss = torch.nn.functional.binary_cross_entropy_with_logits(net(torch.from_numpy(tiles)), torch.from_numpy(masks)[:, None])
loss.backward()
opt.step()
print(f"step 1/1 loss {loss.item():.3f}", flush=True)
"""


def time_plain_step(root: Path) -> float:
    """Seconds from starting PLAIN_STEP until it prints its step."""
    start = time.monotonic()
    proc = subprocess.run([sys.executable, "-c", PLAIN_STEP, str(root)], capture_output=True, text=True)
    if proc.returncode or " step 1/" not in f" {proc.stdout}":
        raise RuntimeError(f"the plain script failed:\n{proc.stderr[-2000:]}")
    return time.monotonic() - start


def bench_wandb(work: Path, old: Path, new: Path, rounds: int) -> None:
    root = write_dataset(work / "wandb-data", 50, 48)
    config = write_config(work, root)
    cache = work / "cache-wandb"
    time_check(new, cache, config)  # the check is remembered: start-up without it
    time_check(old, cache, config)
    (work / "runs").mkdir(exist_ok=True)
    times: dict[tuple[str, str], list[float]] = {}
    for r in range(rounds):
        times.setdefault(("plain", "-"), []).append(time_plain_step(root))
        for mode in ("offline", "disabled"):
            for label, code in (("old", old), ("new", new)):
                run = work / "runs" / f"wandb-{label}-{mode}-{r}"
                overrides = [o for o in TRAIN_OVERRIDES if not o.startswith("logging.wandb.mode=")]
                times.setdefault((label, mode), []).append(
                    time_to_first_step(code, cache, config, run, [*overrides, f"logging.wandb.mode={mode}"]))
    plain = min(times["plain", "-"])
    print(f"time to the first step, 50 scenes of 48 px, check remembered (best of {rounds}; load "
          f"{os.getloadavg()[0]:.1f}): plain one-step PyTorch script {plain:.2f} s")
    for mode in ("offline", "disabled"):
        old_s, new_s = min(times["old", mode]), min(times["new", mode])
        ratios = {label: [t / p for t, p in zip(times[label, mode], times["plain", "-"])] for label in ("old", "new")}
        print(f"  W&B {mode:8s}: old {old_s:6.2f} s ({old_s / plain:.2f} of plain)   new {new_s:6.2f} s "
              f"({new_s / plain:.2f} of plain); each round's ratio to its plain script, median: old "
              f"{statistics.median(ratios['old']):.2f}, new {statistics.median(ratios['new']):.2f}")


def write_dataset(root: Path, n: int, size: int, mask_size: int | None = None) -> Path:
    """N scenes (4 bands uint16, deflate) and 0/255 masks; 80 % train, 20 % val."""
    rng = np.random.default_rng(0)
    for folder in ("scenes", "masks", "filelists"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    side = mask_size or size
    yy, xx = np.mgrid[0:side, 0:side]
    names = []
    for i in range(n):
        name = f"s{i:05d}.tif"
        cy, cx, r = rng.integers(0, side, 3)
        mask = (((yy - cy) ** 2 + (xx - cx) ** 2) < (r // 2) ** 2).astype(np.uint8) * 255
        bands = 4 if mask_size is None else 1
        image = (rng.integers(1, 1000, (bands, side, side), dtype=np.uint16) if mask_size is None
                 else np.full((side, side), 500, np.uint16) + (mask // 255))
        tifffile.imwrite(root / "scenes" / name, image, photometric="minisblack",
                         planarconfig="separate" if image.ndim == 3 else None,
                         compression="zlib", tile=(256, 256) if side >= 256 else None, metadata=None)
        tifffile.imwrite(root / "masks" / name, mask, compression="zlib",
                         tile=(256, 256) if side >= 256 else None, metadata=None)
        names.append(name)
    cut = max(1, int(n * 0.8))
    (root / "filelists" / "train.csv").write_text("\n".join(names[:cut]) + "\n")
    (root / "filelists" / "val.csv").write_text("\n".join(names[cut:] or names[:1]) + "\n")
    when = time.time_ns() - 60 * 10**9  # "written earlier": fresh files are never remembered
    for path in root.rglob("*"):
        os.utime(path, ns=(when, when))
    return root


def baseline_code(rev: str, dest: Path) -> Path:
    """The ``segtrain`` package at git revision ``rev``, extracted under ``dest``."""
    archive = dest / "baseline.tar"
    with open(archive, "wb") as f:
        subprocess.run(["git", "-C", str(REPO), "archive", rev, "segtrain"], stdout=f, check=True)
    with tarfile.open(archive) as tar:
        tar.extractall(dest / "baseline", filter="data")
    return dest / "baseline"


def environment(code: Path, cache: Path) -> dict[str, str]:
    """Run ``code``'s segtrain (commands run outside the checkout, whose package would shadow it)."""
    return {**os.environ, "PYTHONPATH": str(code), "XDG_CACHE_HOME": str(cache), "PYTHONUNBUFFERED": "1",
            "WANDB_SILENT": "true"}


def time_to_first_step(code: Path, cache: Path, config: Path, run_dir: Path,
                       overrides: list[str] = TRAIN_OVERRIDES) -> float:
    """Seconds from starting ``segtrain train`` until it logs step 1; the trainer is then killed."""
    start = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-m", "segtrain", "train", str(config), *overrides,
                             "--run-dir", str(run_dir)], cwd=run_dir.parent, env=environment(code, cache),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    lines = []
    try:
        for line in proc.stdout:
            lines.append(line)
            if " step 1/" in line:
                return time.monotonic() - start
        raise RuntimeError("the trainer ended before its first step:\n" + "".join(lines[-20:]))
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def time_check(code: Path, cache: Path, config: Path) -> float:
    start = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "segtrain", "check", str(config)], cwd=config.parent,
                          env=environment(code, cache), capture_output=True, text=True)
    if proc.returncode:
        raise RuntimeError(f"segtrain check failed:\n{proc.stdout}{proc.stderr}")
    return time.monotonic() - start


def write_config(work: Path, root: Path) -> Path:
    config = work / f"{root.name}.yaml"
    config.write_text(f"extends: {REPO / 'configs' / 'demo.yaml'}\ndata:\n  root: {root}\n")
    return config


def bench_startup(work: Path, n: int, size: int, old: Path, new: Path, rounds: int) -> None:
    root = write_dataset(work / f"startup{n}", n, size)
    config = write_config(work, root)
    (work / "runs").mkdir(exist_ok=True)
    times: dict[tuple[str, str], list[float]] = {}
    for r in range(rounds):  # old and new take turns, so that the machine's load hits both alike
        for job in ("first", "later"):
            for label, code in (("old", old), ("new", new)):
                cache = work / f"cache-{label}-{n}-{r}"  # empty for the first job, what it learnt for the later one
                run = work / "runs" / f"{label}-{n}-{job}-{r}"
                times.setdefault((label, job), []).append(time_to_first_step(code, cache, config, run))
    print(f"start-up to the first step, {n} scenes of {size} px (best of {rounds}; load {os.getloadavg()[0]:.1f}):")
    for job in ("first", "later"):
        old_s, new_s = min(times["old", job]), min(times["new", job])
        print(f"  {job:5s} job of a chain: old {old_s:6.1f} s   new {new_s:6.1f} s   new/old {new_s / old_s:.2f}")


def bench_check(work: Path, n: int, mask_size: int, old: Path, new: Path, rounds: int) -> None:
    root = write_dataset(work / f"check{n}", n, 0, mask_size=mask_size)
    config = write_config(work, root)
    times: dict[str, list[float]] = {}
    for r in range(rounds):
        times.setdefault("old", []).append(time_check(old, work / "cache-check-old", config))
        times.setdefault("first", []).append(time_check(new, work / f"cache-check-new-{r}", config))
        times.setdefault("repeated", []).append(time_check(new, work / f"cache-check-new-{r}", config))
    old_s, first, repeated = (min(times[k]) for k in ("old", "first", "repeated"))
    print(f"segtrain check, {n} scenes with {mask_size} x {mask_size} masks (best of {rounds}; "
          f"load {os.getloadavg()[0]:.1f}):")
    print(f"  old {old_s:6.1f} s   new first {first:6.1f} s ({first / old_s:.2f} of old)   "
          f"new repeated {repeated:6.1f} s ({repeated / old_s:.3f} of old)")


def s2_dataset(work: Path, scenes: Path, real: int, n: int) -> Path:
    """A data set of ``n`` names hard-linked to the ``real`` scenes and masks under ``scenes``."""
    root = work / f"s2-{n}"
    for sub in ("scenes", "masks", "filelists"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    names = [f"s{i:05d}.tif" for i in range(n)]
    for i, name in enumerate(names):
        for sub in ("scenes", "masks"):
            os.link(scenes / sub / f"scene_{i % real}.tif", root / sub / name)
    cut = max(1, n - max(1, n // 5))
    (root / "filelists" / "train.csv").write_text("\n".join(names[:cut]) + "\n")
    (root / "filelists" / "val.csv").write_text("\n".join(names[cut:]) + "\n")
    return root


def check_cpu(code: Path, cache: Path, config: Path) -> float:
    """CPU seconds (user + system) of one first ``segtrain check`` process, with an empty memo."""
    shutil.rmtree(cache, ignore_errors=True)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    time_check(code, cache, config)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def bench_check_s2(work: Path, real: int, sizes: dict[str, int], old: Path, new: Path, rounds: int) -> None:
    sys.path.insert(0, str(REPO / "scripts" / "bench"))
    from data import write_scenes  # noqa: E402: the data benchmark's full-size scenes

    base = work / "s2"
    write_scenes(base, real, 10980, 4, plain=False)
    when = time.time_ns() - 60 * 10**9
    for path in (base / "compressed").rglob("*.tif"):
        os.utime(path, ns=(when, when))
    configs = {}
    for label, n in sizes.items():
        for count in (n, 2 * n):
            configs[label, count] = write_config(work, s2_dataset(work, base / "compressed", real, count))
    cpu: dict[tuple[str, int], list[float]] = {key: [] for key in configs}
    mask = base / "compressed" / "masks" / "scene_0.tif"
    masks = []
    for _ in range(rounds):  # old and new take turns
        for (label, count), config in configs.items():
            cpu[label, count].append(check_cpu(old if label == "old" else new, work / "cache-s2", config))
        start = time.process_time()
        tifffile.imread(mask, maxworkers=1)
        masks.append(time.process_time() - start)
    print(f"first segtrain check of Sentinel-2-size scenes (4 x 10980^2 uint16, deflate 256 px tiles; {real} real "
          f"scenes hard-linked; CPU s of the check process, best of {rounds}; load {os.getloadavg()[0]:.1f}):")
    per_1000 = {}
    for label, n in sizes.items():
        small, large = min(cpu[label, n]), min(cpu[label, 2 * n])
        per_scene = max(large - small, 0.0) / n
        fixed = small - n * per_scene
        per_1000[label] = fixed + 1000 * per_scene
        print(f"  {label}: {n} scenes {small:7.2f} CPU-s, {2 * n} scenes {large:7.2f} CPU-s -> {per_scene * 1e3:8.1f} "
              f"CPU-ms per scene + {fixed:.2f} CPU-s fixed; 1,000 scenes {per_1000[label]:8.1f} CPU-s")
    print(f"  new/old for 1,000 scenes {per_1000['new'] / per_1000['old']:.4f}; decoding one mask whole "
          f"{min(masks) * 1e3:.0f} CPU-ms (1,000 masks {min(masks) * 1000:.0f} CPU-s)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scenes", type=int, nargs="*", default=[1000], help="data set sizes for start-up (tiny scenes)")
    parser.add_argument("--scene-size", type=int, default=48, help="side of each tiny scene in pixels")
    parser.add_argument("--check-scenes", type=int, default=200, help="scenes for the check timing (0: skip)")
    parser.add_argument("--mask-size", type=int, default=1024, help="side of each check scene and mask in pixels")
    parser.add_argument("--wandb-rounds", type=int, default=0, help="rounds of the W&B start-up timing (0: skip)")
    parser.add_argument("--s2-scenes", type=int, default=0, help="real Sentinel-2-size scenes for the check timing (0: skip)")
    parser.add_argument("--s2-names", type=int, nargs=2, default=[4, 100], metavar=("OLD", "NEW"),
                        help="names N for the old and the new code's S2 check (timed at N and 2N)")
    parser.add_argument("--baseline", default=BASELINE, help="git revision of the old code")
    parser.add_argument("--rounds", type=int, default=2, help="turns of old and new; the fastest counts")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-startup-") as tmp:
        work = Path(tmp)
        old = baseline_code(args.baseline, work)
        print(f"old code: {args.baseline}; new code: this checkout ({REPO})")
        for n in args.scenes:
            bench_startup(work, n, args.scene_size, old, REPO, args.rounds)
        if args.check_scenes:
            bench_check(work, args.check_scenes, args.mask_size, old, REPO, args.rounds)
        if args.wandb_rounds:
            bench_wandb(work, old, REPO, args.wandb_rounds)
        if args.s2_scenes:
            bench_check_s2(work, args.s2_scenes, dict(zip(("old", "new"), args.s2_names)), old, REPO, args.rounds)


if __name__ == "__main__":
    main()
