"""``python -m segtrain`` is the same as the ``segtrain`` console script, except that ``train`` ends
without Python's teardown once its output is flushed.

With torch loaded, the interpreter's finalization took 3-5 s per process (measured on a loaded
2-core machine: a DDP worker and its launcher one after the other), time a PBS job does not
have after a SIGTERM (SIGKILL follows 10 s later). Everything the trainer keeps is written,
fsynced and renamed before it returns, so skipping the teardown loses nothing. The job script and
the DDP launcher start the trainer this way.
"""
import logging
import os
import sys

from segtrain.cli import main

code = main()
if sys.argv[1:2] == ["train"]:
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
sys.exit(code)
