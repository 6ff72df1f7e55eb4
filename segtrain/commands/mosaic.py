"""Stitch georeferenced outputs of one pixel grid and CRS into one GeoTIFF (no GDAL needed)."""
from __future__ import annotations

import argparse
from pathlib import Path

from segtrain.commands.common import add_overwrite_argument, refuse_existing

HELP = "stitch georeferenced masks (or probabilities) of one grid and CRS into one tiled GeoTIFF with overviews"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("out", type=Path, help="the mosaic to write (a .tif)")
    parser.add_argument("inputs", type=Path, nargs="+", metavar="MASK", help="outputs of segtrain predict; where "
                        "they overlap, a later one's valid pixels win")
    add_overwrite_argument(parser)


def run(args: argparse.Namespace) -> int:
    from segtrain.errors import UserError
    from segtrain.mosaic import mosaic

    refuse_existing([args.out], args.overwrite)
    if args.out.resolve() in {path.resolve() for path in args.inputs}:
        raise UserError(f"{args.out}: is one of the inputs")
    height, width = mosaic(args.out, args.inputs)
    print(f"{args.out}: {height} x {width} pixels from {len(args.inputs)} inputs")
    return 0
