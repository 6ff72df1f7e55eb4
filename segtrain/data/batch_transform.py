"""Raw windows to network input for a whole batch at once, on whichever device holds the batch.

Data set workers deliver what they read: the window in the file's dtype (a uint16 tile is half
the bytes of its float32 form), its validity and mask, and the tile's augmentation as a
geometry code and a brightness gain. :class:`TileTransform` turns such a batch into the
normalized, flipped and turned float32 images in a few tensor operations, after the
host-to-device copy, so the conversion costs the training process no CPU time on a GPU.

The result is bit-identical on every device, and to the per-tile numpy pipeline this replaced:
the per-pixel arithmetic is the same float32 sequence ``raw * (scale * gain) - shift``, times
validity (IEEE operations, one rounding each), and the geometry is a permutation of pixels,
which commutes with per-pixel arithmetic. On a GPU it is one gather with index tables made by
:func:`segtrain.data.augment.apply_augmentation` from a grid of pixel indices; on the CPU,
that function's views, read by the scaling pass itself.
"""
from __future__ import annotations

from typing import Optional

import numpy as np
import torch

from segtrain.data.augment import Augmentation, apply_augmentation
from segtrain.data.normalization import Normalization, tails

_TURNS, _FLIPS = 4, 4  # geometry code = 4 * rot90 + 2 * hflip + vflip
RAW_KEYS = ("raw", "valid", "mask", "geometry", "gain", "keep")  # what the transform reads (keep: with band dropout)


def geometry_code(aug: Augmentation) -> int:
    """A small integer naming the augmentation's flips and quarter turns (0: none)."""
    return _FLIPS * aug.rot90 + 2 * aug.hflip + aug.vflip


def geometry_of(code: int) -> Augmentation:
    """The flips and quarter turns that :func:`geometry_code` named ``code``."""
    return Augmentation(rot90=code // _FLIPS, hflip=bool(code & 2), vflip=bool(code & 1))


class TileTransform:
    """Normalize (``(gain * x - mean) / std`` per band, or ``gain * x``), zero invalid pixels,
    flip and turn a batch of raw tiles; returns ``image`` (B,C,T,T) float32, ``mask`` (B,1,T,T)
    float32 and ``valid`` (B,1,T,T) bool on the batch's device.

    ``norm`` is the selected bands' :class:`Normalization` or None; a robust one clips and
    log-scales ``gain * x`` (:func:`segtrain.data.normalization.tails`) before standardizing.
    A batch's ``keep`` (B,C) float32, when present, zeroes the input bands a tile drew to drop
    (``data.augment.band_dropout``). ``augmented`` False skips the geometry (evaluation tiles
    are never flipped).
    """

    def __init__(self, norm: Optional[Normalization], tile: int, augmented: bool):
        self.norm = norm
        self.tile = tile
        self.augmented = augmented
        self._constants: dict[torch.device, tuple[Optional[torch.Tensor], ...]] = {}
        self._tails: dict[torch.device, Optional[dict[str, torch.Tensor]]] = {}

    def __call__(self, batch: dict, gather: Optional[bool] = None) -> dict[str, torch.Tensor]:
        """The finished batch; ``gather`` flips and turns by a gather (the default on GPUs)
        rather than by numpy views (the default on the CPU, where a gather is 10x slower)."""
        raw, valid, mask, gain = batch["raw"], batch["valid"], batch["mask"], batch["gain"]
        scale, shift, permutations = self._on(raw.device)
        robust = self._robust_on(raw.device)
        factor = gain[:, None] if scale is None or robust else scale[None, :] * gain[:, None]  # float32, as numpy folds it
        if permutations is None:
            image = raw.to(torch.float32).mul_(factor[:, :, None, None])
        elif not (raw.device.type != "cpu" if gather is None else gather):
            image, valid, mask = _scale_and_turn_on_host(raw, valid, mask, batch["geometry"], factor)
        else:
            image = raw.to(torch.float32).mul_(factor[:, :, None, None])
            index = permutations.index_select(0, batch["geometry"].to(raw.device))
            image, mask, valid = (_permute(a, index) for a in (image, mask, valid))
        if robust:
            image = tails(image, **robust).mul_(scale[None, :, None, None])
        if shift is not None:
            image.sub_(shift[None, :, None, None])
        image.mul_(valid[:, None].to(torch.float32))
        if "keep" in batch:
            image.mul_(batch["keep"][:, :, None, None])
        if raw.is_floating_point():
            torch.nan_to_num_(image)  # NaN (always invalid) times 0 is still NaN
        return {"image": image, "mask": mask[:, None].to(torch.float32), "valid": valid[:, None]}

    def _on(self, device: torch.device) -> tuple[Optional[torch.Tensor], ...]:
        """(scale, shift, permutations) on ``device``, made once per device."""
        if device not in self._constants:
            norm = [None, None] if self.norm is None else [torch.from_numpy(a).to(device) for a in (self.norm.scale, self.norm.shift)]
            self._constants[device] = (*norm, _permutations(self.tile).to(device) if self.augmented else None)
        return self._constants[device]

    def _robust_on(self, device: torch.device) -> Optional[dict[str, torch.Tensor]]:
        """The clip and log parameters of a robust normalization on ``device``, else None."""
        if device not in self._tails:
            robust = self.norm is not None and self.norm.robust
            self._tails[device] = ({k: v for k, v in self.norm.tensors(device).items() if k not in ("scale", "shift")}
                                   if robust else None)
        return self._tails[device]


def finish(batch: dict, transform: TileTransform) -> dict:
    """A raw batch as network input: the transform's image, mask and valid on the batch's device,
    and the batch's other entries (tile places) as they are."""
    return {**{key: value for key, value in batch.items() if key not in RAW_KEYS}, **transform(batch)}


def _permutations(tile: int) -> torch.Tensor:
    """(16, T*T) int64: for each geometry code, the source pixel of every output pixel."""
    grid = np.arange(tile * tile, dtype=np.int64).reshape(tile, tile)
    rows = []
    for code in range(_TURNS * _FLIPS):
        rows.append(np.ascontiguousarray(apply_augmentation(geometry_of(code), grid, grid, grid)[0]).reshape(-1))
    return torch.from_numpy(np.stack(rows))


def _scale_and_turn_on_host(raw: torch.Tensor, valid: torch.Tensor, mask: torch.Tensor, geometry: torch.Tensor,
                            factor: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The CPU's way to scale and :func:`_permute`: numpy flips and turns as views (negative
    strides, which torch lacks), converted and scaled in one pass per tile."""
    image, turned_valid, turned_mask = torch.empty(raw.shape, dtype=torch.float32), torch.empty_like(valid), torch.empty_like(mask)
    for b, code in enumerate(geometry.tolist()):
        r, v, m = apply_augmentation(geometry_of(code), raw[b].numpy(), valid[b].numpy(), mask[b].numpy())
        np.multiply(r, factor[b].numpy()[:, None, None], out=image[b].numpy(), dtype=np.float32, casting="unsafe")
        np.copyto(turned_valid[b].numpy(), v)
        np.copyto(turned_mask[b].numpy(), m)
    return image, turned_valid, turned_mask


def _permute(a: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``a`` (B,...,T,T) with each sample's pixels gathered by its row of ``index`` (B, T*T)."""
    shape = a.shape
    flat = a.reshape(shape[0], -1, shape[-2] * shape[-1])
    out = flat.gather(2, index[:, None, :].expand(-1, flat.shape[1], -1))
    return out.reshape(shape)
