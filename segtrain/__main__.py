"""``python -m segtrain`` is the same as the ``segtrain`` console script."""
import sys

from segtrain.cli import main

sys.exit(main())
