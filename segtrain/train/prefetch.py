"""Batches on the training device, finished there, the next one copied while this one trains.

The loader's batches hold raw tiles in pinned host memory (on CUDA); each is copied to the
device and turned into network input by the data set's batch transform
(:class:`segtrain.data.batch_transform.TileTransform`). On CUDA the copy and the transform of
batch i+1 run on a side stream while the default stream computes step i, so the GPU neither
waits for a copy nor for the host: nothing here synchronizes with it.
When the training device is the CPU, the loader's workers finish the batches themselves
(:func:`segtrain.data.dataset.raw_loader` with ``finished=True``) and they pass through as they are.
"""
from __future__ import annotations

from typing import Callable, Iterable, Iterator, Optional

import torch

from segtrain.data.batch_transform import RAW_KEYS, finish



class DeviceBatches:
    """Iterate ``loader`` as dicts of device tensors (``transform``'s image, mask, valid) plus
    the batch's other entries as they came (tile places, on the host)."""

    def __init__(self, loader: Iterable[dict], transform: Callable[[dict], dict], device: torch.device,
                 channels_last: bool = False):
        self.loader, self.transform, self.device, self.channels_last = loader, transform, device, channels_last

    def __iter__(self) -> Iterator[dict]:
        batches = iter(self.loader)
        if self.device.type != "cuda":
            yield from (self._finish(batch) for batch in batches)
            return
        side = torch.cuda.Stream(self.device)
        main = torch.cuda.current_stream(self.device)
        ahead = self._start(batches, side)
        while ahead is not None:
            main.wait_stream(side)
            for value in ahead.values():
                if isinstance(value, torch.Tensor) and value.is_cuda:
                    value.record_stream(main)  # made on the side stream, used on the main one
            batch, ahead = ahead, self._start(batches, side)
            yield batch

    def _start(self, batches: Iterator[dict], stream: "torch.cuda.Stream") -> Optional[dict]:
        batch = next(batches, None)
        if batch is None:
            return None
        with torch.cuda.stream(stream):
            return self._finish(batch)

    def _finish(self, batch: dict) -> dict:
        if "image" in batch:  # finished by the loader's workers (training on the CPU)
            return batch
        tile = finish({key: batch[key].to(self.device, non_blocking=True) if key in RAW_KEYS else batch[key]
                       for key in batch}, self.transform)
        if self.channels_last:
            tile["image"] = tile["image"].contiguous(memory_format=torch.channels_last)
        return tile
