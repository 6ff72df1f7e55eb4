#!/usr/bin/env python3
"""Trainer overhead and mixed-precision speed-up, measured in one run.

CPU (default): tiles/s of `segtrain train` (every step logged, stop checks, metrics.jsonl)
beside a bare PyTorch loop over the same model, data loader and batches. The ratio is the
trainer's overhead (goal: at most 5 %).
--gpu: the same on CUDA with a 256 px smp U-Net, then the trainer with AMP + channels_last
beside fp32; finishes in under three minutes on one GPU. On a machine with several GPUs it
also runs the trainer on all of them (DDP, same global batch) beside one.
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
from segtrain.train.trainer import TrainOptions, _Run, train  # noqa: E402
from segtrain.train.distributed import DistContext  # noqa: E402


def steady_throughput(records: list[dict], batch: int, skip: int) -> float:
    """Tiles per second between the ``skip``-th and the last logged training step."""
    train = [r for r in records if r["split"] == "train"][skip:]
    return (train[-1]["step"] - train[0]["step"]) * batch / (train[-1]["time"] - train[0]["time"])


def trainer_tiles_s(config: Path, overrides: list[str], work: Path, batch: int, skip: int) -> float:
    run_dir = work / f"run-{len(list(work.iterdir()))}"
    code = train(load_config(config, overrides), TrainOptions(str(config), overrides, run_dir=run_dir))
    assert code == 0, code
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return steady_throughput(records, batch, skip)


def launched_tiles_s(config: Path, overrides: list[str], work: Path, batch: int, skip: int, procs: int) -> float:
    """Tiles per second of `segtrain train --nproc-per-node procs` (global batch unchanged)."""
    run_dir = work / f"run-{len(list(work.iterdir()))}"
    subprocess.run([sys.executable, "-m", "segtrain", "train", str(config), *overrides, "--run-dir", str(run_dir),
                    "--nproc-per-node", str(procs)], check=True, stdout=subprocess.DEVNULL, cwd=REPO)
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return steady_throughput(records, batch, skip)


def bare_tiles_s(config: Path, overrides: list[str], work: Path, batch: int, skip: int, device: str) -> float:
    """The same model, optimizer, loss and loader, in the smallest loop that trains."""
    from segtrain.preflight import check_dataset

    cfg = load_config(config, overrides)
    run = _Run(cfg, TrainOptions(str(config), overrides, run_dir=work / "bare"), DistContext(), torch.device(device),
               check_dataset(cfg).in_channels)
    model, opt, crit, loader = run.model, run.optimizer, run.criterion, run.train_loader
    run.train_set.set_epoch(0)
    run.sampler.set_epoch(0)
    times = []
    for batch_data in loader:
        image = batch_data["image"].to(device)
        mask, valid = batch_data["mask"].to(device), batch_data["valid"].to(device)
        if run.channels_last:
            image = image.contiguous(memory_format=torch.channels_last)
        with run._autocast():
            logits = model(image)
        loss, _ = crit(logits.float(), mask, valid)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.monotonic())
    times = times[skip:]
    return (len(times) - 1) * batch / (times[-1] - times[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gpu", action="store_true")
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--repeat", type=int, default=3, help="alternate trainer/bare this many times, report the best")
    parser.add_argument("--procs", type=int, default=None,
                        help="also compare 1 process with this many (default with --gpu: every GPU, if more than one)")
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
                  f"data.tiles_per_epoch={batch * steps}", "logging.every_steps=1", "logging.wandb.mode=disabled",
                  "train.checkpoint_every_minutes=null", f"train.device={device}", "optim.warmup_steps=0",
                  "data.num_workers=" + ("6" if args.gpu else "0")]
        skip = 10 if args.gpu else 5
        fp32 = common + (["train.amp=off", "train.channels_last=false"] if args.gpu else [])
        trainer = bare = 0.0
        for _ in range(args.repeat):  # interleaved, so a noisy neighbour slows both alike; best of each
            trainer = max(trainer, trainer_tiles_s(config, fp32, work, batch, skip))
            bare = max(bare, bare_tiles_s(config, fp32, work, batch, skip, device))
        print(f"{device} fp32: trainer {trainer:.1f} tiles/s, bare loop {bare:.1f} tiles/s, "
              f"trainer/bare = {trainer / bare:.3f} (overhead {100 * (1 - trainer / bare):+.1f} %)")
        if args.gpu:
            amp = trainer_tiles_s(config, common + ["train.amp=auto", "train.channels_last=true"], work, batch, skip)
            print(f"cuda AMP ({'bf16' if torch.cuda.is_bf16_supported() else 'fp16'}) + channels_last: "
                  f"{amp:.1f} tiles/s vs fp32 {trainer:.1f} tiles/s: speed-up x{amp / trainer:.2f}")
        procs = args.procs if args.procs is not None else (torch.cuda.device_count() if args.gpu else 1)
        if procs > 1:
            mode = common + (["train.amp=auto", "train.channels_last=true"] if args.gpu else [])
            one = launched_tiles_s(config, mode, work, batch, skip, 1)
            many = launched_tiles_s(config, mode, work, batch, skip, procs)
            print(f"{device} DDP: {procs} processes {many:.1f} tiles/s vs 1 process {one:.1f} tiles/s: "
                  f"x{many / one:.2f} (scaling efficiency {100 * many / one / procs:.0f} %)")


if __name__ == "__main__":
    main()
