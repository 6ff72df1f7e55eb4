"""Where the model runs: the one place that turns ``auto | cpu | cuda`` into a torch device."""
from __future__ import annotations

from typing import TYPE_CHECKING, Mapping, Optional

from segtrain.errors import UserError

if TYPE_CHECKING:
    import torch

CHOICES = ("auto", "cpu", "cuda")
# The variables that confine a process to some of a node's GPUs, innermost first: CUDA's (which
# ROCm's HIP reads too), HIP's, and the ROCm runtime's, which LUMI's Slurm sets (ROCR_VISIBLE_DEVICES,
# with HIP_VISIBLE_DEVICES numbering within it). torch counts and numbers the GPUs (cuda:0, cuda:1, ...)
# through them on either vendor, so a rank's cuda:LOCAL_RANK is its own GPU.
VISIBLE_DEVICES = ("CUDA_VISIBLE_DEVICES", "HIP_VISIBLE_DEVICES", "ROCR_VISIBLE_DEVICES")


def visible_devices(environ: Mapping[str, str]) -> Optional[tuple[str, list[str]]]:
    """The innermost variable that confines this process to some GPUs, and the devices it names (None: none set)."""
    for name in VISIBLE_DEVICES:
        if name in environ:
            return name, [device.strip() for device in environ[name].split(",") if device.strip()]
    return None


def select_device(choice: str, what: str) -> "torch.device":
    """CUDA when asked for or when ``auto`` finds a GPU, else the CPU.

    Asking for ``cuda`` where there is none is the user's error (``what`` names the key or
    option): silently falling back to the CPU would turn a GPU job into one a hundred times slower.
    """
    import torch  # here: the job steps read visible_devices without loading torch

    if choice == "cuda" and not torch.cuda.is_available():
        raise UserError(f"{what}: 'cuda' requested but no CUDA device is available (use 'auto' or 'cpu')")
    return torch.device("cuda" if choice != "cpu" and torch.cuda.is_available() else "cpu")
