"""Export a run's model to ONNX: raw bands in, probability out, any batch, height and width."""
from __future__ import annotations

import argparse
from pathlib import Path

HELP = "export a run's model to ONNX (RUN/export/model.onnx), verified against PyTorch"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run", type=Path, help="run directory")
    parser.add_argument("--checkpoint", choices=("best", "last"), default="best", help="which checkpoint (default best)")
    parser.add_argument("--out", type=Path, help="the .onnx file to write (default RUN/export/model.onnx)")


def run(args: argparse.Namespace) -> int:
    from segtrain.export import EXPORT_DIR, MODEL_FILE, OPSET, TOLERANCE, export_onnx
    from segtrain.run.checkpoint import load_trained

    trained = load_trained(args.run, args.checkpoint)
    result = export_onnx(trained, args.out or args.run / EXPORT_DIR / MODEL_FILE)
    shapes = ", ".join("x".join(map(str, s)) for s in result.shapes)
    print(f"exported {result.path} (opset {OPSET}); onnxruntime vs PyTorch on {shapes}: "
          f"max |probability difference| {result.max_abs_diff:.1e} (tolerance {TOLERANCE:.0e})")
    return 0
