"""``python -m segtrain.cluster.pbs.local run -- [qsub options] SCRIPT``, and the stand-ins jobs call."""
from __future__ import annotations

import argparse
import sys
from typing import Optional, Sequence

from segtrain.cluster.pbs.local import __doc__ as LOCAL_DOC
from segtrain.cluster.pbs.local.server import STANDINS, describe, submit_and_run
from segtrain.cluster.pbs.local.standins import (standin_clean_scratch, standin_pbsdsh, standin_qalter, standin_qdel,
                                                  standin_qextend, standin_qrerun, standin_qrls, standin_qstat, standin_qsub)
from segtrain.cluster.site import get_site
from segtrain.errors import EXIT_USER_ERROR, UserError


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        if argv and argv[0] in STANDINS:
            return {"qsub": standin_qsub, "qstat": standin_qstat, "qdel": standin_qdel, "qrerun": standin_qrerun,
                    "qextend": standin_qextend, "qalter": standin_qalter, "qrls": standin_qrls,
                    "clean_scratch": standin_clean_scratch, "pbsdsh": standin_pbsdsh}[argv[0]](argv[1:])
        parser = argparse.ArgumentParser(prog="python -m segtrain.cluster.pbs.local", description=LOCAL_DOC.splitlines()[0])
        sub = parser.add_subparsers(dest="command", required=True)
        run = sub.add_parser("run", help="qsub a job here and run it with its chain")
        run.add_argument("--site", help="metacentrum (default) or openpbs")
        run.add_argument("--quiet", action="store_true", help="do not echo the job output")
        run.add_argument("qsub_args", nargs=argparse.REMAINDER, help="-- [qsub options] SCRIPT")
        args = parser.parse_args(argv)
        qsub_args = args.qsub_args[1:] if args.qsub_args[:1] == ["--"] else args.qsub_args
        jobs = submit_and_run(qsub_args, get_site(args.site), None if args.quiet else sys.stdout.buffer)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    print("\n".join(describe(jobs)))
    last = jobs[-1].exit_status if jobs else None
    return last if last is not None and 0 <= last < 256 else 1


if __name__ == "__main__":
    raise SystemExit(main())
