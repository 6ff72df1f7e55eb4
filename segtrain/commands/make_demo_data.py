"""Generate the seeded synthetic demo data set (scenes, masks, filelists)."""
from __future__ import annotations

import argparse

from segtrain.commands.common import at_least
from segtrain.data.synthetic import DEFAULT_DIR, KINDS, DemoSpec, make_demo_data

HELP = "generate a realistic synthetic data set (deterministic for a seed)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    defaults = DemoSpec()
    parser.add_argument("dir", nargs="?", default=DEFAULT_DIR, help=f"output folder (default: {DEFAULT_DIR})")
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--kind", choices=KINDS, default=defaults.kind,
                        help="water bodies on surface reflectances (default), clouds on heavy-tailed TOA reflectances, "
                        "or speckled masks of a per-pixel spectral rule (as QA bands make them)")
    parser.add_argument("--bands", type=int, default=defaults.bands, help="bands per scene (1-13)")
    parser.add_argument("--train", type=at_least(1), default=defaults.n_train, help="scenes in the train split")
    parser.add_argument("--val", type=at_least(1), default=defaults.n_val, help="scenes in the val split")
    parser.add_argument("--test", type=at_least(1), default=defaults.n_test, help="scenes in the test split")
    parser.add_argument("--max-size", type=at_least(1), default=defaults.max_size, help="largest scene side in pixels")
    parser.add_argument("--force", action="store_true", help="replace an existing folder")


def run(args: argparse.Namespace) -> int:
    spec = DemoSpec(seed=args.seed, bands=args.bands, n_train=args.train, n_val=args.val, n_test=args.test,
                    max_size=max(args.max_size, DemoSpec.min_size + 1), kind=args.kind)
    if make_demo_data(args.dir, spec, force=args.force):
        print(f"wrote {spec.kind} demo data set to {args.dir} (seed {spec.seed})")
    else:
        print(f"{args.dir} already holds this demo data set (seed {spec.seed}); nothing to do")
    return 0
