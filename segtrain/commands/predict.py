"""Predict masks for whole scenes of any size with an exported model or a run."""
from __future__ import annotations

import argparse
from pathlib import Path

from segtrain.commands.common import add_overwrite_argument, at_least, refuse_existing

HELP = "predict masks of whole scenes with an .onnx model or a run directory"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", type=Path, help="an exported .onnx file (onnxruntime) or a run directory (PyTorch)")
    parser.add_argument("scenes", type=Path, nargs="+", metavar="SCENE", help="scene TIFFs, any size")
    parser.add_argument("--out", type=Path, required=True, help="folder for <scene>_mask.tif (and _prob.tif)")
    parser.add_argument("--prob", action="store_true", help="also write the probability map (float32, NaN no-data)")
    parser.add_argument("--tile", type=at_least(16), help="tile size (default: the training tile size)")
    parser.add_argument("--overlap", type=at_least(0), help="tile overlap (default: the training data.overlap)")
    parser.add_argument("--batch-size", type=at_least(1), default=16, help="tiles per model call (default 16)")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="default: CUDA if available")
    parser.add_argument("--checkpoint", choices=("best", "last"), default="best", help="for a run directory (default best)")
    parser.add_argument("--threshold", type=float, help="probability above which a pixel is positive "
                        "(default: the model's, i.e. its calibrated threshold, else train.threshold)")
    parser.add_argument("--cog", action="store_true",
                        help="cloud-optimized GeoTIFFs with internal overviews (as prediction jobs and mosaic write them)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    add_overwrite_argument(parser)


def run(args: argparse.Namespace) -> int:
    import dataclasses

    from segtrain.errors import UserError
    from segtrain.calibration import check_threshold
    from segtrain.predict import PredictOptions, check_tiling, load_backend, open_scene, output_paths, predict_scene

    check_threshold(args.threshold)
    backend = load_backend(args.model, args.device, args.checkpoint)
    if args.threshold is not None:
        backend.meta = dataclasses.replace(backend.meta, threshold=args.threshold)
    meta = backend.meta
    options = PredictOptions(tile=args.tile, overlap=args.overlap, batch_size=args.batch_size, write_prob=args.prob,
                             progress=not args.quiet, overviews=args.cog)
    tile = meta.tile_size if args.tile is None else args.tile
    overlap = meta.overlap if args.overlap is None else args.overlap
    check_tiling(tile, overlap, args.batch_size)
    # Every scene is checked before the first is predicted, so a bad one costs no partial output.
    inputs = {scene.resolve() for scene in args.scenes}
    stems: dict[str, Path] = {}
    for scene in args.scenes:
        open_scene(scene, meta).close()
        if scene.stem in stems:
            raise UserError(f"{scene}: same name as {stems[scene.stem]}; their outputs would overwrite each other")
        stems[scene.stem] = scene
        outputs = output_paths(scene, args.out)[:2 if args.prob else 1]
        if any(path.resolve() in inputs for path in outputs):
            raise UserError(f"{scene}: its output would overwrite an input scene; choose another --out")
        refuse_existing(outputs, args.overwrite)
    print(f"model {args.model} ({backend.name}); tile {tile}, overlap {overlap}, threshold {meta.threshold}")
    for scene in args.scenes:
        result = predict_scene(scene, backend, args.out, options)
        t = result.timing
        print(f"{result.mask}  ({t.pixels / 1e6:.2f} Mpx in {t.seconds:.1f} s, {t.megapixels_per_second:.2f} Mpx/s)")
    return 0
