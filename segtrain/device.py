"""Where the model runs: the one place that turns ``auto | cpu | cuda`` into a torch device."""
from __future__ import annotations

import torch

from segtrain.errors import UserError

CHOICES = ("auto", "cpu", "cuda")


def select_device(choice: str, what: str) -> torch.device:
    """CUDA when asked for or when ``auto`` finds a GPU, else the CPU.

    Asking for ``cuda`` where there is none is the user's error (``what`` names the key or
    option): silently falling back to the CPU would turn a GPU job into one a hundred times slower.
    """
    if choice == "cuda" and not torch.cuda.is_available():
        raise UserError(f"{what}: 'cuda' requested but no CUDA device is available (use 'auto' or 'cpu')")
    return torch.device("cuda" if choice != "cpu" and torch.cuda.is_available() else "cpu")
