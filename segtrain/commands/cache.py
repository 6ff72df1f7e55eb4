"""Stage a config's data set as uncompressed, memory-mappable TIFFs (for job scripts)."""
from __future__ import annotations

import argparse

HELP = "convert a config's data set once to uncompressed TIFFs (e.g. on $SCRATCHDIR); prints the cached root"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", help="YAML config file")
    parser.add_argument("dest", help="cache folder; train with data.root=DEST afterwards")
    parser.add_argument("overrides", nargs="*", metavar="section.key=value",
                        help="override config values; values are parsed as YAML")


def run(args: argparse.Namespace) -> int:
    from segtrain.commands.common import config_from_args
    from segtrain.data.cache import build_cache
    from segtrain.preflight import check_dataset

    cfg = config_from_args(args)
    check_dataset(cfg)
    print(build_cache(cfg.data, args.dest))
    return 0
