"""The ``segtrain`` command line: one subcommand per module in :mod:`segtrain.commands`.

Each command module defines ``HELP``, ``add_arguments(parser)`` and ``run(args) -> int`` and
imports its heavy dependencies (torch) inside ``run``, so ``segtrain --help`` and argument
errors answer instantly. User errors become one line and exit code 2 here, in one place.
"""
from __future__ import annotations

import argparse
import errno
import importlib
import logging
import sys
from typing import NoReturn, Optional, Sequence

from segtrain import __version__
from segtrain.errors import EXIT_USER_ERROR, UserError

COMMANDS = {
    "make-demo-data": "segtrain.commands.make_demo_data",
    "check": "segtrain.commands.check",
    "stats": "segtrain.commands.stats",
    "cache": "segtrain.commands.cache",
    "train": "segtrain.commands.train",
    "lr-find": "segtrain.commands.lr_find",
    "search": "segtrain.commands.search",
    "submit": "segtrain.commands.submit",
    "runs": "segtrain.commands.runs",
    "fetch": "segtrain.commands.fetch",
    "wandb-sync": "segtrain.commands.wandb_sync",
    "baseline": "segtrain.commands.baseline",
    "eval": "segtrain.commands.eval",
    "export": "segtrain.commands.export",
    "predict": "segtrain.commands.predict",
    "mosaic": "segtrain.commands.mosaic",
    "quantize": "segtrain.commands.quantize",
}


# Errors of the environment that the user fixes (a full disk, a read-only folder, a file where a
# folder belongs): one line like any bad input, not a traceback.
USER_OS_ERRORS = (errno.EACCES, errno.EPERM, errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.ENOTDIR, errno.EISDIR,
                  errno.EEXIST, errno.ENOENT, errno.ENAMETOOLONG, errno.ELOOP)


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (the usage is one ``--help`` away)."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USER_ERROR, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="segtrain", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"segtrain {__version__}")
    parser.add_argument("--debug", action="store_true", help="show the traceback of user errors")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, module_name in COMMANDS.items():
        module = importlib.import_module(module_name)
        p = sub.add_parser(name, help=module.HELP, description=module.HELP)
        p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    # tifffile logs what it finds odd in a file to stderr before it raises: the error line, made
    # from the exception, is the one that names the file, so its warnings stay out of the way.
    logging.getLogger("tifffile").setLevel(logging.ERROR)
    args = build_parser().parse_args(argv)
    try:
        return int(args._run(args) or 0)
    except (UserError, OSError) as exc:
        if args.debug or (isinstance(exc, OSError) and exc.errno not in USER_OS_ERRORS):
            raise
        print(f"segtrain {args.command}: error: {one_line(exc)}", file=sys.stderr)
        return EXIT_USER_ERROR


def one_line(exc: BaseException) -> str:
    """The message of a user error on one line; an OSError names its file first."""
    if isinstance(exc, OSError) and not isinstance(exc, UserError):
        where = " -> ".join(str(f) for f in (exc.filename, exc.filename2) if f is not None)
        text = f"{where}: {exc.strerror}" if where else (exc.strerror or str(exc))
    else:
        text = str(exc)
    return " ".join(text.split()) if "\n" in text or "\r" in text else text
