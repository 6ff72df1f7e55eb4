"""Quantize a run's exported model to int8 and measure what it costs and gains."""
from __future__ import annotations

import argparse
from pathlib import Path

from segtrain.commands.common import at_least

HELP = "int8-quantize a run's ONNX model (calibrated on training tiles); report IoU change and speed-up"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run", type=Path, help="run directory")
    parser.add_argument("--checkpoint", choices=("best", "last"), default="best", help="default best")
    parser.add_argument("--data", metavar="ROOT", help="data set root, when not where the run's data.root says")
    parser.add_argument("--calibration-tiles", type=at_least(1), default=64, help="training tiles to calibrate on (default 64)")
    parser.add_argument("--batch-size", type=at_least(1), default=16, help="tiles per model call (default 16)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from segtrain.quantize import QuantizeOptions, quantize_run

    report = quantize_run(args.run, QuantizeOptions(checkpoint=args.checkpoint, data_root=args.data,
                                                    calibration_tiles=args.calibration_tiles,
                                                    batch_size=args.batch_size, progress=not args.quiet))
    fp32, int8 = report["fp32"], report["int8"]
    print(f"written {int8['file']} (calibrated on {report['calibration_tiles']} training tiles)")
    print(f"validation ({report['scenes']} scenes): iou fp32 {fp32['iou']:.4f}, int8 {int8['iou']:.4f} "
          f"(change {report['iou_change']:+.4f})")
    print(f"speed ({report['speed']}): fp32 {fp32['megapixels_per_second']:.2f}, int8 "
          f"{int8['megapixels_per_second']:.2f} Mpx/s (speed-up x{report['speedup']:.2f})")
    return 0
