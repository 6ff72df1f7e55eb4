"""Subcommands of the ``segtrain`` CLI, one module each (see :mod:`segtrain.cli`)."""
