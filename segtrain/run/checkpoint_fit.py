"""Whether a checkpoint fits a config: the one check before any command loads weights into a model.

Train (resuming from ``last.pt``), eval, predict, export and quantize all load a checkpoint into a
model that a config describes. A checkpoint of another run (README advises copying a good
``last.pt`` from the mirror; a ``best.pt`` copied from elsewhere) would otherwise fail deep inside
``load_state_dict`` with an 80-line traceback, or, where the model is built from the checkpoint's
own config, evaluate a model that is not the run's. The refusal names the file and what differs:
the architecture, a width, the bands, else the first tensor whose shape differs.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

from torch import nn

from segtrain.config import Config, to_dict
from segtrain.errors import UserError
from segtrain.train.config_changes import flatten

# The config keys that decide the shapes of a model's weights: for every model, for the U-Net written
# here, and for the smp architectures (whose depth and widths follow the encoder).
SHAPING_KEYS = ("model.arch", "model.out_channels", "data.bands")
UNET_KEYS = ("model.depth", "model.base_width", "model.norm")
SMP_KEYS = ("model.encoder", "model.encoder_depth")


def check_fits(state: dict, path: Path, cfg: Config, where: str, model: Optional[nn.Module] = None,
               in_channels: Optional[int] = None) -> None:
    """Refuse (:class:`UserError`: ``path``, then what differs from ``where``) a checkpoint whose weights
    do not fit ``cfg``; ``model`` (built for ``cfg``) and ``in_channels`` (the bands the data give) are
    compared too when the caller has them."""
    problem = difference(state, cfg, where, model, in_channels)
    if problem is not None:
        raise UserError(f"{path}: does not fit: {problem}; use a checkpoint of this run (or start a new one)")


def difference(state: dict, cfg: Config, where: str, model: Optional[nn.Module] = None,
               in_channels: Optional[int] = None) -> Optional[str]:
    """The first difference between a checkpoint and a config that its weights cannot bridge, in words."""
    saved, wanted = flatten(state.get("config") or {}), flatten(to_dict(cfg))
    keys = SHAPING_KEYS + (UNET_KEYS if cfg.model.arch == "unet" else SMP_KEYS)
    for key in keys:
        if saved.get(key) != wanted.get(key):
            return f"{key} is {saved.get(key)!r} in the checkpoint but {wanted.get(key)!r} in {where}"
    if in_channels is not None and state.get("in_channels") != in_channels:
        return f"the checkpoint's model takes {state.get('in_channels')} bands, the data set gives {in_channels}"
    if model is not None:
        return _tensor_difference(state.get("model") or {}, model.state_dict())
    return None


def _tensor_difference(saved: dict[str, Any], expected: dict[str, Any]) -> Optional[str]:
    for key, tensor in expected.items():
        if key not in saved:
            return f"the checkpoint has no tensor {key}"
        if tuple(saved[key].shape) != tuple(tensor.shape):
            return f"tensor {key} is {tuple(saved[key].shape)} in the checkpoint, the model needs {tuple(tensor.shape)}"
    extra = next((key for key in saved if key not in expected), None)
    return None if extra is None else f"the checkpoint has a tensor {extra} that the model does not"

