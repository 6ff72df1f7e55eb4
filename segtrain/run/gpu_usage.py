"""How busy the job's GPUs were: NVML sampled every few seconds by a thread of the trainer's main process.

NVML (``nvidia-ml-py``, imported as ``pynvml``) reads the driver's own counters: utilization (the
share of the last sample period in which a kernel ran) and memory in use, for every process on the
GPU. On a CPU, or where NVML cannot start (no driver, no library), nothing is sampled and the report
says why; training never depends on it.
"""
from __future__ import annotations

import os
import threading
from typing import Any, Optional, Sequence

import torch

INTERVAL_S = 2.0
GIB = 2**30


def summarize(utilization: Sequence[float], memory_used: Sequence[float], memory_total: float,
              gpus: int) -> dict[str, Any]:
    """The report's GPU figures from samples (utilization in %, memory in bytes; one per GPU per sample)."""
    if not utilization:
        return {"skipped": "no GPU sample (the trainer ended before the first)"}
    return {"gpus": gpus, "samples": len(utilization) // max(gpus, 1),
            "utilization_mean": sum(utilization) / len(utilization), "utilization_max": max(utilization),
            "memory_peak_gib": max(memory_used) / GIB, "memory_total_gib": memory_total / GIB}


class GpuSampler:
    """Samples the GPUs this process may use (``CUDA_VISIBLE_DEVICES``) until stopped."""

    def __init__(self, device: torch.device, interval_s: float = INTERVAL_S):
        self.interval_s = interval_s
        self.skipped: Optional[str] = None if device.type == "cuda" else "no GPU"
        self._handles: list = []
        self._utilization: list[float] = []
        self._memory: list[float] = []
        self._total = 0.0
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None

    def start(self) -> "GpuSampler":
        if self.skipped is None:
            self._open()
        if self.skipped is None:
            self._thread = threading.Thread(target=self._run, name="gpu-sampler", daemon=True)
            self._thread.start()
        return self

    def _open(self) -> None:
        try:
            import pynvml
        except ImportError:
            self.skipped = "no GPU figures (nvidia-ml-py is not installed)"
            return
        try:
            pynvml.nvmlInit()
            self._handles = [self._handle(pynvml, name) for name in _visible_devices(pynvml.nvmlDeviceGetCount())]
            self._total = sum(pynvml.nvmlDeviceGetMemoryInfo(h).total for h in self._handles) / max(len(self._handles), 1)
        except pynvml.NVMLError as exc:
            self.skipped = f"no GPU figures (NVML cannot start: {exc})"
        self._pynvml = pynvml

    @staticmethod
    def _handle(pynvml, name: str):
        return pynvml.nvmlDeviceGetHandleByIndex(int(name)) if name.isdigit() else pynvml.nvmlDeviceGetHandleByUUID(name)

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s) and self._sample():
            pass

    def _sample(self) -> bool:
        try:
            for handle in self._handles:
                self._utilization.append(float(self._pynvml.nvmlDeviceGetUtilizationRates(handle).gpu))
                self._memory.append(float(self._pynvml.nvmlDeviceGetMemoryInfo(handle).used))
        except self._pynvml.NVMLError as exc:  # a GPU fell off the bus: keep what was sampled
            self.skipped = f"GPU sampling stopped: {exc}"
            return False
        return True

    def stop(self) -> dict[str, Any]:
        """Stop sampling; the report's figures (or why there are none)."""
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self._thread = None
            if self.skipped is None:
                self._sample()  # a run shorter than the interval has one sample too
            try:
                self._pynvml.nvmlShutdown()
            except self._pynvml.NVMLError:
                pass
        if self.skipped is not None and not self._utilization:
            return {"skipped": self.skipped}
        return summarize(self._utilization, self._memory, self._total, len(self._handles))


def _visible_devices(count: int) -> list[str]:
    """NVML's names (index or UUID) of the GPUs CUDA shows this process, in CUDA's order."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is None:
        return [str(i) for i in range(count)]
    return [name.strip() for name in visible.split(",") if name.strip()]
