#!/usr/bin/env python3
"""Trainer overhead and mixed-precision speed-up, measured in one run.

CPU (default): tiles/s of `segtrain train` (every step logged, stop checks, metrics.jsonl)
beside a bare PyTorch loop over the same model, data loader and device-side pipeline (raw
batches finished by the batch transform on the device). The ratio is the trainer's overhead
(goal: trainer/bare >= 0.97).
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
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from segtrain.config import load_config  # noqa: E402
from segtrain.data.synthetic import DemoSpec, make_demo_data  # noqa: E402
from segtrain.train.distributed import DistContext  # noqa: E402
from segtrain.train.prefetch import DeviceBatches  # noqa: E402
from segtrain.train.trainer import TrainOptions, _Run, train  # noqa: E402


def steady_throughput(records: list[dict], batch: int, skip: int) -> float:
    """Tiles per second between the ``skip``-th and the last logged training step."""
    train = [r for r in records if r["split"] == "train"][skip:]
    return (train[-1]["step"] - train[0]["step"]) * batch / (train[-1]["time"] - train[0]["time"])


def trainer_tiles_s(config: Path, overrides: list[str], work: Path, batch: int, skip: int) -> tuple[float, float]:
    """Steady tiles/s of the trainer and the mean share of time it waited for data."""
    run_dir = work / f"run-{len(list(work.iterdir()))}"
    code = train(load_config(config, overrides), TrainOptions(str(config), overrides, run_dir=run_dir))
    assert code == 0, code
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    waits = [r["data_wait"] for r in records if r["split"] == "train"][skip + 1:]
    return steady_throughput(records, batch, skip), sum(waits) / max(1, len(waits))


def launched_tiles_s(config: Path, overrides: list[str], work: Path, batch: int, skip: int, procs: int) -> float:
    """Tiles per second of `segtrain train --nproc-per-node procs` (global batch unchanged)."""
    run_dir = work / f"run-{len(list(work.iterdir()))}"
    subprocess.run([sys.executable, "-m", "segtrain", "train", str(config), *overrides, "--run-dir", str(run_dir),
                    "--nproc-per-node", str(procs)], check=True, stdout=subprocess.DEVNULL, cwd=REPO)
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return steady_throughput(records, batch, skip)


def bare_tiles_s(config: Path, overrides: list[str], work: Path, batch: int, start: int, device: str) -> float:
    """The same model, optimizer, loss, loader and device-side pipeline in the smallest loop that
    trains; timed from step ``start`` to the last, the GPU waited for at both ends only."""
    from segtrain.preflight import check_dataset

    cfg = load_config(config, overrides)
    run = _Run(cfg, TrainOptions(str(config), overrides, run_dir=work / "bare"), DistContext(), torch.device(device),
               check_dataset(cfg))
    model, opt, crit = run.model, run.optimizer, run.criterion
    run.train_set.set_epoch(0)
    run.sampler.set_epoch(0)
    steps, began = 0, 0.0
    for data in DeviceBatches(run.train_loader, run.train_set.transform, run.device, run.channels_last):
        with run._autocast():
            logits = model(data["image"])
        loss, _ = crit(logits.float(), data["mask"], data["valid"])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        steps += 1
        if steps == start:
            float(loss.detach())  # wait for the GPU
            began = time.monotonic()
    float(loss.detach())
    return (steps - start) * batch / (time.monotonic() - began)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gpu", action="store_true")
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--repeat", type=int, default=3, help="alternate trainer/bare this many times, report the best")
    parser.add_argument("--procs", type=int, default=None,
                        help="also compare 1 process with this many (default with --gpu: every GPU, if more than one)")
    parser.add_argument("--override", nargs="*", default=[], help="more config overrides for every run (e.g. the model)")
    args = parser.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
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
            trainer = bare = 0.0
            for _ in range(args.repeat):  # interleaved, so a noisy neighbour slows both alike; best of each
                trainer = max(trainer, trainer_tiles_s(config, common + ["logging.every_steps=1"], work, batch, skip)[0])
                bare = max(bare, bare_tiles_s(config, common, work, batch, skip + 1, device))
            print(f"cpu fp32: trainer {trainer:.1f} tiles/s, bare loop {bare:.1f} tiles/s, "
                  f"trainer/bare = {trainer / bare:.3f} (overhead {100 * (1 - trainer / bare):+.1f} %)")
        else:
            every, skip = 50, 0  # measured from the 50th step on, like the bare loop
            amp = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
            modes = {"fp32": ["train.amp=off", "train.channels_last=false"],
                     amp: [f"train.amp={amp}", "train.channels_last=false"],
                     f"{amp} + channels_last": [f"train.amp={amp}", "train.channels_last=true"]}
            print(f"{'mode':22s} {'bare':>8s} {'trainer':>8s} {'tr/bare':>8s} {'wait':>6s} {'syncs on':>9s} {'on/off':>7s}")
            fastest = {}
            for name, mode in modes.items():
                bare = bare_tiles_s(config, common + mode, work, batch, every, device)
                off, wait = trainer_tiles_s(config, common + mode + [f"logging.every_steps={every}"], work, batch, skip)
                on = trainer_tiles_s(config, common + mode + ["logging.every_steps=1"], work, batch, every)[0]
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
