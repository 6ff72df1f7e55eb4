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
TURN_BLOCK = 64  # side of the blocks a quarter turn is copied in on the host (64 x 64 x 2 bytes x bands stay in L1/L2)
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
        fused = False  # shift and validity applied tile by tile, on the host
        if not (raw.device.type != "cpu" if gather is None else gather):
            fused = not robust  # a robust normalization's tails come between the scale and the shift
            geometry = batch["geometry"] if permutations is not None else torch.zeros_like(batch["geometry"])
            image, valid, mask = _scale_and_turn_on_host(raw, valid, mask, geometry, factor, fused, shift)
        elif permutations is None:
            image = raw.to(torch.float32).mul_(factor[:, :, None, None])
        else:
            image = raw.to(torch.float32).mul_(factor[:, :, None, None])
            index = permutations.index_select(0, batch["geometry"].to(raw.device))
            image, mask, valid = (_permute(a, index) for a in (image, mask, valid))
        if robust:
            image = tails(image, **robust).mul_(scale[None, :, None, None])
        if shift is not None and not fused:
            image.sub_(shift[None, :, None, None])
        if not fused:
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
                            factor: torch.Tensor, fused: bool, shift: Optional[torch.Tensor]
                            ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The CPU's way to scale and :func:`_permute`, one tile at a time while it is in cache.

    The tile's flips and turns are numpy views (negative strides, which torch lacks), copied in
    the file's dtype into a buffer (quarter turns in blocks of TURN_BLOCK: a transposed copy of
    a whole tile misses the cache on every row), then converted, scaled in place, and
    when ``fused``, shifted (by ``shift`` unless None) and multiplied by the tile's validity:
    the same float32 operations in the same order as the batch-wide passes, so the same bits.
    Converting and scaling in one ufunc through the views, as before, cost 4x more: most of
    the CPU training path's time (issue 27).
    """
    image, turned_valid = batch_tensor(raw.shape, torch.float32), batch_tensor(valid.shape, torch.bool)
    turned_mask = batch_tensor(mask.shape, torch.float32)  # as the transform returns it
    arrays = [a.numpy() for a in (raw, valid, mask, image, turned_valid, turned_mask, factor)]  # numpy views: cheap to index
    valid_f32 = np.empty(raw.shape[-2:], dtype=np.float32)
    buffers = [np.empty(a.shape[1:], a.dtype) for a in (arrays[0], arrays[2], arrays[1])]  # raw, mask, valid
    shift_np = None if shift is None else shift.numpy()[:, None, None]
    for b, code in enumerate(geometry.tolist()):
        tile_raw, tile_valid, tile_mask, out, out_valid, out_mask, tile_factor = (a[b] for a in arrays)
        views = apply_augmentation(geometry_of(code), tile_raw, tile_mask, tile_valid)
        r, m, v = (_contiguous(*args) for args in zip(views, (tile_raw, tile_mask, tile_valid), buffers))
        np.copyto(out, r, casting="unsafe")
        np.multiply(out, tile_factor[:, None, None], out=out)
        np.copyto(out_valid, v)
        np.copyto(out_mask, m, casting="unsafe")
        if fused:
            if shift_np is not None:
                np.subtract(out, shift_np, out=out)
            np.copyto(valid_f32, out_valid)
            np.multiply(out, valid_f32, out=out)
    return image, turned_valid, turned_mask


def batch_tensor(shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
    """An uninitialized batch tensor; in a DataLoader worker, in shared memory (no copy when sent,
    as torch's own collation does)."""
    if torch.utils.data.get_worker_info() is None:
        return torch.empty(shape, dtype=dtype)
    like = torch.empty(0, dtype=dtype)
    return like.new(like._typed_storage()._new_shared(int(np.prod(shape)), device="cpu")).view(shape)


def _contiguous(view: np.ndarray, base: np.ndarray, buffer: np.ndarray) -> np.ndarray:
    """``view``, a flip or turn of ``base`` (..., T, T), as a contiguous array: ``base`` itself
    or ``buffer``; quarter turns are copied by blocks."""
    if abs(view.strides[-1]) > abs(view.strides[-2]):  # a quarter turn: rows became columns
        _copy_blocked(buffer, view)
        return buffer
    if view.strides[-1] > 0 and view.strides[-2] > 0:
        return base
    np.copyto(buffer, view)
    return buffer


def _copy_blocked(dst: np.ndarray, src: np.ndarray) -> None:
    """``dst[...] = src`` for a transposed view ``src`` (..., T, T), block by block."""
    rows, cols = src.shape[-2:]
    for y in range(0, rows, TURN_BLOCK):
        for x in range(0, cols, TURN_BLOCK):
            dst[..., y:y + TURN_BLOCK, x:x + TURN_BLOCK] = src[..., y:y + TURN_BLOCK, x:x + TURN_BLOCK]


def _permute(a: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``a`` (B,...,T,T) with each sample's pixels gathered by its row of ``index`` (B, T*T)."""
    shape = a.shape
    flat = a.reshape(shape[0], -1, shape[-2] * shape[-1])
    out = flat.gather(2, index[:, None, :].expand(-1, flat.shape[1], -1))
    return out.reshape(shape)
