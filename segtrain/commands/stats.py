"""Statistics of a data set: per-band mean/std/percentiles, class balance, figures."""
from __future__ import annotations

import argparse
from pathlib import Path

from segtrain.commands.common import at_least

HELP = "per-band statistics, class balance and figures of a data set; writes stats.json for training"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("data", help="data set root (with filelists/, scenes/, masks/)")
    parser.add_argument("--split", default="train", help="split to describe (default: train, what training normalizes with)")
    parser.add_argument("--out", help="folder for stats.json and stats/*.png (default: the data set root)")
    parser.add_argument("--nodata", type=float, default=None, help="no-data value (default: the scenes' tag, else 0)")
    parser.add_argument("--rgb", default=None, help="bands shown as red,green,blue in the sample figure (default: 2,1,0)")
    parser.add_argument("--workers", type=at_least(1), default=4, help="scenes read in parallel")


def run(args: argparse.Namespace) -> int:
    from segtrain.data.layout import read_split
    from segtrain.data.stats import scan_split, write_stats
    from segtrain.data.stats_figures import write_figures

    stats, sample = scan_split(args.data, args.split, args.nodata, args.workers)
    rgb = _rgb(args.rgb, len(stats.mean))
    out = Path(args.out or args.data)
    write_stats(stats, out / "stats.json")
    figures = write_figures(stats, sample, read_split(args.data, args.split), out / "stats", rgb, args.nodata)
    print(f"{args.data} ({args.split}: {len(stats.scenes)} scenes, {stats.valid_pixels / 1e6:.2f} Mpx valid)")
    print(f"  {'band':>4s} {'mean':>10s} {'std':>10s} {'p1':>10s} {'p99':>10s}")
    for b, (mean, std) in enumerate(zip(stats.mean, stats.std)):
        print(f"  {b:4d} {mean:10.4g} {std:10.4g} {stats.percentiles['1'][b]:10.4g} {stats.percentiles['99'][b]:10.4g}")
    print(f"  positives {100 * stats.pos_fraction:.2f} % of valid pixels (pos_weight {stats.pos_weight:.3g}), "
          f"no-data {100 * stats.nodata_fraction:.2f} % of all pixels")
    print(f"wrote {out / 'stats.json'}, " + ", ".join(str(p) for p in figures))
    return 0


def _rgb(text: str | None, bands: int) -> list[int]:
    """The composite's bands: given, else 2,1,0 (blue-green-red order of most products), else band 0."""
    from segtrain.errors import UserError

    if text is None:
        return [2, 1, 0] if bands >= 3 else [0, 0, 0]
    try:
        rgb = [int(v) for v in text.split(",")]
    except ValueError:
        raise UserError(f"--rgb: expected three comma-separated band indices, got {text!r}") from None
    if len(rgb) != 3 or not all(0 <= b < bands for b in rgb):
        raise UserError(f"--rgb: expected three band indices in 0..{bands - 1}, got {text!r}")
    return rgb
