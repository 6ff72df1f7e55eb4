#!/usr/bin/env python3
"""Trainer overhead and mixed-precision speed-up, measured in one run.

CPU (default): tiles/s of `segtrain train` (every step logged, stop checks, metrics.jsonl)
beside a bare PyTorch loop over the same model, optimizer, loss, data loader and device-side
pipeline (raw batches finished by the batch transform on the device). The ratio is the
trainer's overhead (goal: trainer/bare >= 0.97). Other processes on a shared machine move
each run's speed by more than the overhead, so the two take turns (``--repeat`` pairs, the
order swapped every pair) and each pair gives ratios of wall time per step (mean: tiles/s,
and median: robust to a burst of load within a run) and of CPU time per step (this process,
all threads; the one that other processes' load hardly moves; with ``--threads 1`` no idle
thread spins either). Printed: each pair with the load average, then the median over the
pairs and the spread (lowest..highest).
--gpu: on CUDA with a 256 px smp U-Net, for fp32, AMP and AMP + channels_last: the bare loop,
the trainer as configured (values read every 50 steps: "syncs off") and the trainer logging
every step (a host sync per step: "syncs on"); finishes in about three minutes on one GPU. On
a machine with several GPUs it also runs the trainer on all of them (DDP, same global batch)
beside one. Throughput is measured between two points where the host waits for the GPU.
--procs N: the DDP comparison with N processes (on CPU: gloo processes stand for GPUs).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import torch

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from segtrain.config import load_config  # noqa: E402
from segtrain.data.synthetic import DemoSpec, make_demo_data  # noqa: E402
from segtrain.train.distributed import DistContext  # noqa: E402
from segtrain.train.prefetch import DeviceBatches  # noqa: E402
from segtrain.train import trainer as trainer_module  # noqa: E402
from segtrain.train.trainer import TrainOptions, _Run, train  # noqa: E402

Marks = list[tuple[int, float]]  # (step, seconds on some clock) after steps


def train_marks(records: list[dict]) -> Marks:
    """(step, seconds) of each logged training step in metrics.jsonl."""
    return [(r["step"], r["time"]) for r in records if r["split"] == "train"]


def steady_throughput(marks: Marks, batch: int, skip: int) -> float:
    """Tiles per second between the ``skip``-th and the last mark."""
    (first, began), (last, ended) = marks[skip], marks[-1]
    return (last - first) * batch / (ended - began)


def step_seconds(marks: Marks, skip: int) -> list[float]:
    """Seconds per step between consecutive marks from the ``skip``-th on (one mark per step)."""
    marks = marks[skip:]
    return [(t1 - t0) / (s1 - s0) for (s0, t0), (s1, t1) in zip(marks, marks[1:])]


@contextmanager
def cpu_stamps() -> Iterator[Marks]:
    """(step, process CPU seconds) as the trainer writes each training record: metrics.jsonl
    holds wall times only, and on a shared machine only CPU time is free of other processes' load."""
    stamps: Marks = []
    plain = trainer_module.MetricsLog

    class Stamped(plain):
        def write(self, record: dict) -> None:
            if record["split"] == "train":
                stamps.append((record["step"], time.process_time()))
            super().write(record)

    trainer_module.MetricsLog = Stamped
    try:
        yield stamps
    finally:
        trainer_module.MetricsLog = plain


def trainer_marks(config: Path, overrides: list[str], work: Path) -> tuple[Marks, Marks, float]:
    """The trainer's logged steps as (step, wall seconds) and (step, CPU seconds), and the mean
    share of time it waited for data."""
    run_dir = work / f"run-{len(list(work.iterdir()))}"
    with cpu_stamps() as cpu:
        code = train(load_config(config, overrides), TrainOptions(str(config), overrides, run_dir=run_dir))
    assert code == 0, code
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    waits = [r["data_wait"] for r in records if r["split"] == "train"][1:]
    return train_marks(records), cpu, sum(waits) / max(1, len(waits))


def launched_tiles_s(config: Path, overrides: list[str], work: Path, batch: int, skip: int, procs: int) -> float:
    """Tiles per second of `segtrain train --nproc-per-node procs` (global batch unchanged)."""
    run_dir = work / f"run-{len(list(work.iterdir()))}"
    subprocess.run([sys.executable, "-m", "segtrain", "train", str(config), *overrides, "--run-dir", str(run_dir),
                    "--nproc-per-node", str(procs)], check=True, stdout=subprocess.DEVNULL, cwd=REPO)
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return steady_throughput(train_marks(records), batch, skip)


def bare_marks(config: Path, overrides: list[str], work: Path, device: str, every: int) -> tuple[Marks, Marks]:
    """The same model, optimizer, loss, loader and device-side pipeline in the smallest loop that
    trains: (step, wall seconds) and (step, CPU seconds) after every ``every``-th step, where it
    waits for the device (on a CPU nothing runs ahead, so ``every=1`` times each step at no cost)."""
    from segtrain.preflight import check_dataset

    cfg = load_config(config, overrides)
    run = _Run(cfg, TrainOptions(str(config), overrides, run_dir=work / "bare"), DistContext(), torch.device(device),
               check_dataset(cfg))
    model, opt, crit = run.parts.model, run.parts.optimizer, run.parts.criterion
    run.data.train_set.set_epoch(0)
    run.data.sampler.set_epoch(0)
    steps, marks, cpu = 0, [], []
    for data in DeviceBatches(run.data.train_loader, run.data.train_set.transform, run.device, run.parts.channels_last):
        with run.parts.autocast():
            logits = model(data["image"])
        loss, _ = crit(logits.float(), data["mask"], data["valid"])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        steps += 1
        if steps % every == 0:
            float(loss.detach())  # wait for the device
            marks.append((steps, time.monotonic()))
            cpu.append((steps, time.process_time()))
    return marks, cpu


def cpu_overhead(config: Path, common: list[str], work: Path, batch: int, repeat: int) -> None:
    """Trainer vs bare loop on CPU in ``repeat`` interleaved pairs; ratios per pair, their median and spread."""
    skip = 5  # start-up, first allocations
    ratios: dict[str, list[float]] = {"wall time (tiles/s)": [], "median wall step": [], "CPU time per step": []}
    for pair in range(repeat):
        wall: dict[str, list[float]] = {}
        cpu: dict[str, list[float]] = {}
        for name in ("trainer", "bare") if pair % 2 == 0 else ("bare", "trainer"):
            marks, cpu_marks = (trainer_marks(config, common + ["logging.every_steps=1"], work)[:2] if name == "trainer"
                                else bare_marks(config, common, work, "cpu", every=1))
            wall[name], cpu[name] = step_seconds(marks, skip), step_seconds(cpu_marks, skip)
        for key, (bare, trainer) in zip(ratios, ((sum(wall["bare"]), sum(wall["trainer"])),
                                                  (statistics.median(wall["bare"]), statistics.median(wall["trainer"])),
                                                  (sum(cpu["bare"]), sum(cpu["trainer"])))):
            ratios[key].append(bare / trainer)
        print(f"pair {pair + 1}: tiles/s trainer {batch * len(wall['trainer']) / sum(wall['trainer']):.1f}, bare "
              f"{batch * len(wall['bare']) / sum(wall['bare']):.1f}: {ratios['wall time (tiles/s)'][-1]:.3f}; median "
              f"step {statistics.median(wall['trainer']):.3f} s vs {statistics.median(wall['bare']):.3f} s: "
              f"{ratios['median wall step'][-1]:.3f}; CPU per step {statistics.mean(cpu['trainer']):.3f} s vs "
              f"{statistics.mean(cpu['bare']):.3f} s: {ratios['CPU time per step'][-1]:.3f}; "
              f"load {os.getloadavg()[0]:.1f}", flush=True)
    for name, values in ratios.items():
        print(f"cpu fp32, trainer/bare by {name} over {repeat} pairs: median {statistics.median(values):.3f} "
              f"(spread {min(values):.3f}..{max(values):.3f})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gpu", action="store_true")
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--repeat", type=int, default=3, help="CPU: pairs of trainer and bare runs, taking turns")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's, one per core)")
    parser.add_argument("--procs", type=int, default=None,
                        help="also compare 1 process with this many (default with --gpu: every GPU, if more than one)")
    parser.add_argument("--override", nargs="*", default=[], help="more config overrides for every run (e.g. the model)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        data = work / "data"
        make_demo_data(data, DemoSpec(n_train=6, n_val=2, n_test=0, max_size=400))
        config = REPO / "configs" / ("default.yaml" if args.gpu else "demo.yaml")
        batch = 32 if args.gpu else 16
        steps = args.steps or (300 if args.gpu else 40)
        device = "cuda" if args.gpu else "cpu"
        common = [f"data.root={data}", "train.epochs=1", f"train.batch_size={batch}",
                  f"data.tiles_per_epoch={batch * steps}", "logging.wandb.mode=disabled",
                  "train.checkpoint_every_minutes=null", f"train.device={device}", "optim.warmup_steps=0",
                  "data.num_workers=" + ("12" if args.gpu else "0"), *args.override]
        if not args.gpu:
            every, skip = 1, 5
            cpu_overhead(config, common, work, batch, args.repeat)
        else:
            every, skip = 50, 0  # measured from the 50th step on, like the bare loop
            amp = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
            modes = {"fp32": ["train.amp=off", "train.channels_last=false"],
                     amp: [f"train.amp={amp}", "train.channels_last=false"],
                     f"{amp} + channels_last": [f"train.amp={amp}", "train.channels_last=true"]}
            print(f"{'mode':22s} {'bare':>8s} {'trainer':>8s} {'tr/bare':>8s} {'wait':>6s} {'syncs on':>9s} {'on/off':>7s}")
            fastest = {}
            for name, mode in modes.items():
                bare = steady_throughput(bare_marks(config, common + mode, work, device, every)[0], batch, 0)
                marks, _, wait = trainer_marks(config, common + mode + [f"logging.every_steps={every}"], work)
                off = steady_throughput(marks, batch, skip)
                on = steady_throughput(trainer_marks(config, common + mode + ["logging.every_steps=1"], work)[0],
                                       batch, every - 1)
                fastest[name] = off
                print(f"{name:22s} {bare:8.1f} {off:8.1f} {off / bare:8.3f} {wait:6.1%} {on:9.1f} {on / off:7.3f}",
                      flush=True)
            print("tiles/s; trainer: values read every 50 steps; syncs on: every step; wait: data-wait share")
            for name in list(modes)[1:]:
                print(f"{name} vs fp32 (trainer): speed-up x{fastest[name] / fastest['fp32']:.2f}")
        procs = args.procs if args.procs is not None else (torch.cuda.device_count() if args.gpu else 1)
        if procs > 1:
            mode = common + [f"logging.every_steps={every}"]
            mode += ["train.amp=auto", "train.channels_last=true"] if args.gpu else []
            one = launched_tiles_s(config, mode, work, batch, skip, 1)
            many = launched_tiles_s(config, mode, work, batch, skip, procs)
            print(f"{device} DDP: {procs} processes {many:.1f} tiles/s vs 1 process {one:.1f} tiles/s: "
                  f"x{many / one:.2f} (scaling efficiency {100 * many / one / procs:.0f} %)")


if __name__ == "__main__":
    main()
