#!/usr/bin/env python3
"""Whole-scene prediction speed: PyTorch eager, onnxruntime fp32 and onnxruntime int8, one run;
with ``--scenes N``, a prediction job's throughput in scenes per hour.

One large synthetic scene (default 3000 x 3000, 4 bands, tiled + deflate like the demo data)
is predicted end to end by ``segtrain.predict.predict_scene`` (read, tile, batch, stitch,
write the mask TIFF) with each backend on this machine's CPU. Printed per backend: megapixels
per second end to end and inside the model alone, the ratio to PyTorch eager measured in the
same run, the IoU of its water mask against PyTorch's (agreement, not accuracy) and the
stitching overhead: the time end to end beyond the model's own, as a share of the model's
(reading, tiling, batching, blending and writing that did not overlap with inference). Each
backend predicts the scene ``--rounds`` times, taking turns, and its fastest round counts.
The same scene and models are also predicted, in the same turns, by the old code
(``--baseline``, a git revision extracted to a temporary folder and run in its own process:
each strip read on its own, every file tile decoded about four times, no reader thread), whose
stitching overhead is printed beside (``--baseline ''`` skips it).

``--scenes N`` predicts N such scenes (``--size`` pixels square) the way a subjob of
``jobs/predict.pbs`` does (``segtrain.cluster.job.predict_steps.run_shard``: each scene staged
to a scratch folder while the one before is predicted, strips read ahead of the model,
outputs with overviews, each copied back verified with its sidecar) and, as the baseline in
the same run, the way ``segtrain predict`` did before (one scene after another, each strip read
when the model needs it, no staging, no overviews). For each it prints scenes per hour and the
share of the wall time the model was busy (the rest is the GPU's or CPU's idle share).

Without ``--run`` a short demo run is trained first (configs/demo.yaml, 2 epochs of 128
tiles). On an idle two-core machine the whole script takes under a minute at the default
size; figures move by a factor of two or more when other processes load the machine.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import tifffile

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from segtrain.config import load_config  # noqa: E402
from segtrain.data.scene import GDAL_NODATA_TAG  # noqa: E402
from segtrain.data.synthetic import DemoSpec, make_demo_data, make_scene  # noqa: E402
from segtrain.export import export_onnx  # noqa: E402
from segtrain.predict import OnnxBackend, PredictOptions, TorchBackend, predict_scene  # noqa: E402
from segtrain.quantize import calibration_tiles, quantize_onnx  # noqa: E402
from segtrain.run.checkpoint import load_trained  # noqa: E402
from segtrain.train.trainer import TrainOptions, train  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from startup import baseline_code, environment  # noqa: E402

BASELINE = "bc42291"  # main before issue 15's prediction work (strip per tile row, no reader thread)
# Run with the old code's package first on the path: one scene through one backend, timed like
# predict_scene times it, after an untimed first batch (as for the new code).
# The old code only times the stitching: config keys its schema does not know (e.g.
# data.augment.band_dropout, which prediction never reads) are dropped from the checkpoint's config.
OLD_PREDICT = """
import dataclasses, json, sys, typing
import numpy as np
import segtrain.config
from segtrain.config import schema
from segtrain.predict import PredictOptions, load_backend, predict_scene

def known(values, cls):
    hints = typing.get_type_hints(cls)
    out = {}
    for key, value in values.items():
        if key in hints:
            kind = hints[key]
            out[key] = known(value, kind) if dataclasses.is_dataclass(kind) and isinstance(value, dict) else value
    return out

build_config = segtrain.config.build_config
segtrain.config.build_config = lambda values, *args, **kwargs: build_config(known(values, schema.Config), *args, **kwargs)
scene, model, out, batch, warmup = sys.argv[1:]
backend = load_backend(model, device="cpu")
backend(np.load(warmup))
timing = predict_scene(scene, backend, out, PredictOptions(batch_size=int(batch), progress=False)).timing
print(json.dumps({"seconds": timing.seconds, "model_seconds": timing.model_seconds}))
"""


def demo_run(work: Path) -> Path:
    config = REPO / "configs" / "demo.yaml"
    overrides = [f"data.root={work / 'data'}", "train.epochs=2", "data.tiles_per_epoch=128", "logging.wandb.mode=disabled"]
    make_demo_data(work / "data", DemoSpec())
    code = train(load_config(config, overrides), TrainOptions(str(config), overrides, run_dir=work / "run"))
    assert code == 0, code
    return work / "run"


def large_scene(path: Path, size: int) -> Path:
    image, _ = make_scene(np.random.default_rng(1), size, size, 4)
    tifffile.imwrite(path, image, photometric="minisblack", planarconfig="separate", metadata=None, tile=(256, 256),
                     compression="zlib", extratags=[(GDAL_NODATA_TAG, "s", 0, "0", True)])
    return path


def iou(a: np.ndarray, b: np.ndarray) -> float:
    valid = (a != 255) & (b != 255)
    inter = np.count_nonzero((a == 1) & (b == 1) & valid)
    union = np.count_nonzero(((a == 1) | (b == 1)) & valid)
    return inter / union if union else 1.0


def scenes_per_hour(args: argparse.Namespace) -> None:
    """The job's way against one scene after another, on the same scenes, same model, this run."""
    from segtrain.cluster.job.predict_steps import JobContext, backend_for, run_shard
    from segtrain.cluster.job.stage import sha256_file
    from segtrain.cluster.predictions import Manifest, PredictSettings, model_file

    with tempfile.TemporaryDirectory(prefix="segtrain-bench-") as tmp:
        work = Path(tmp)
        run = args.run or demo_run(work)
        storage = work / "storage"
        storage.mkdir()
        scenes = [large_scene(storage / f"scene_{i:03d}.tif", args.size) for i in range(args.scenes)]
        settings = PredictSettings(batch_size=args.batch_size, device=args.device)
        print(f"{args.scenes} scenes {args.size}x{args.size}x4, model {backend_for(run, settings).name}, "
              f"batch {args.batch_size}; model loading counted in both, best of {args.rounds} rounds")

        def plain() -> tuple[float, float]:
            start, model_s = time.perf_counter(), 0.0
            backend = backend_for(run, settings)
            for scene in scenes:
                out = predict_scene(scene, backend, work / "plain", PredictOptions(batch_size=args.batch_size,
                                                                                    progress=False, read_ahead=False))
                model_s += out.timing.model_seconds
            return time.perf_counter() - start, model_s

        def job(round_: int) -> tuple[float, float]:
            manifest = Manifest(model=str(run), model_sha256=sha256_file(model_file(run)),
                                out=str(storage / f"preds{round_}"), settings=settings,
                                shards=[[str(p) for p in scenes]], path=storage / "manifest.json")
            scratch = work / f"scratch{round_}"
            scratch.mkdir()
            ctx = JobContext(manifest=manifest, shard=0, job_id="bench", job_name="bench", workdir=REPO,
                             scratch=scratch, deadline=None, resources={}, passed_on={}, resubmits=0, max_resubmits=0)
            report = run_shard(ctx, backend_for, say=lambda line: None)
            assert report.done == args.scenes, report.summary()
            return report.seconds, report.model_seconds

        timings: dict[str, list] = {"plain": [], "job": []}
        for round_ in range(args.rounds):  # taking turns, so that load from other processes hits both alike
            timings["plain"].append(plain())
            timings["job"].append(job(round_))
        plain_best, job_best = min(timings["plain"]), min(timings["job"])
        print(f"{'way':42s} {'scenes/h':>9s} {'x plain':>8s} {'model busy':>11s}")
        for name, (seconds, model_seconds) in (("one after another (segtrain predict)", plain_best),
                                               ("job: staged, read ahead, overviews, verified", job_best)):
            rate = args.scenes / seconds * 3600
            print(f"{name:42s} {rate:9.0f} {rate / (args.scenes / plain_best[0] * 3600):8.2f} "
                  f"{100 * model_seconds / seconds:10.0f}%")


def old_overhead(code: Path, work: Path, scene: Path, model: Path, batch: int, warmup: Path) -> float:
    """Stitching overhead of the old code (``code``) predicting ``scene`` with ``model``, in a new process."""
    out = work / f"old-{model.name}"
    proc = subprocess.run([sys.executable, "-c", OLD_PREDICT, str(scene), str(model), str(out), str(batch), str(warmup)],
                          cwd=work, env=environment(code, work / "cache"), capture_output=True, text=True)
    if proc.returncode:
        raise RuntimeError(f"the old code failed on {model}:\n{proc.stderr[-2000:]}")
    timing = json.loads(proc.stdout.splitlines()[-1])
    return (timing["seconds"] - timing["model_seconds"]) / timing["model_seconds"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, help="a run directory (default: train a short demo run first)")
    parser.add_argument("--size", type=int, default=3000, help="scene side in pixels (default 3000)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=2, help="predictions per backend; the fastest counts (default 2)")
    parser.add_argument("--scenes", type=int, help="scenes per hour of a prediction job over this many scenes")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="with --scenes (default auto)")
    parser.add_argument("--baseline", default=BASELINE, help="git revision of the old code ('' to skip it)")
    args = parser.parse_args()
    if args.scenes:
        scenes_per_hour(args)
        return
    with tempfile.TemporaryDirectory(prefix="segtrain-bench-") as tmp:
        work = Path(tmp)
        start = time.perf_counter()
        run = args.run or demo_run(work)
        trained_s = time.perf_counter() - start
        trained = load_trained(run)
        fp32, int8 = work / "model.onnx", work / "model.int8.onnx"
        export_onnx(trained, fp32)
        tiles = calibration_tiles(trained.config, 64, seed=0)
        quantize_onnx(fp32, int8, tiles)
        scene = large_scene(work / "large.tif", args.size)
        print(f"scene {args.size}x{args.size}x4, tile {trained.config.data.tile_size}, overlap "
              f"{trained.config.data.overlap}, batch {args.batch_size}, model {trained.config.model.arch} "
              f"(run {'given' if args.run else f'trained here in {trained_s:.0f} s'})")
        backends = [("pytorch eager fp32", TorchBackend(run, device="cpu"), run),
                    ("onnxruntime fp32", OnnxBackend(fp32, device="cpu"), fp32),
                    ("onnxruntime int8", OnnxBackend(int8, device="cpu"), int8)]
        warmup = work / "warmup.npy"
        np.save(warmup, tiles[:args.batch_size])
        for _, backend, _ in backends:
            backend(tiles[:args.batch_size])  # the first full batch sets up kernels and memory: not timed
        old_code = baseline_code(args.baseline, work) if args.baseline else None
        best: dict[str, tuple] = {}
        old: dict[str, list[float]] = {}
        for _ in range(args.rounds):  # backends take turns, so that load from other processes hits all alike
            for name, backend, model in backends:
                out = predict_scene(scene, backend, work / name.replace(" ", "_"),
                                    PredictOptions(batch_size=args.batch_size, progress=False))
                if name not in best or out.timing.seconds < best[name][1].seconds:
                    best[name] = (name, out.timing, tifffile.imread(out.mask))
                if old_code is not None:
                    old.setdefault(name, []).append(old_overhead(old_code, work, scene, model, args.batch_size, warmup))
        results = list(best.values())
        base_timing, base_mask = results[0][1], results[0][2]
        print(f"{'backend':20s} {'Mpx/s':>7s} {'x eager':>8s} {'model Mpx/s':>12s} {'x eager':>8s} {'IoU vs eager':>13s} "
              f"{'stitching overhead':>19s}" + (f" {'old code':>9s}" if old else ""))
        for name, timing, mask in results:
            model_rate = timing.pixels / 1e6 / timing.model_seconds
            base_model_rate = base_timing.pixels / 1e6 / base_timing.model_seconds
            overhead = (timing.seconds - timing.model_seconds) / timing.model_seconds  # beyond the model's own time
            print(f"{name:20s} {timing.megapixels_per_second:7.2f} "
                  f"{timing.megapixels_per_second / base_timing.megapixels_per_second:8.2f} "
                  f"{model_rate:12.2f} {model_rate / base_model_rate:8.2f} {iou(mask, base_mask):13.4f} {overhead:18.1%}"
                  + (f" {min(old[name]):9.1%}" if old else ""))
        if old:
            print(f"old code: {args.baseline} in its own process; its lowest overhead of the rounds")
        print(f"total {time.perf_counter() - start:.0f} s; load average {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
