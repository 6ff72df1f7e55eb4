"""Static int8 quantization of an exported model, calibrated on real training tiles, measured.

onnxruntime's ``quantize_static`` with QDQ nodes and per-channel weight scales (int8 weights,
uint8 activations, MinMax calibration). Only the network is quantized: the normalization in
front of it (which sees NaN for no-data, and raw values in the thousands) and the final
sigmoid stay float, so the int8 model takes the same raw input and gives the same kind of
probability as the fp32 one. Calibration tiles are drawn from the training split the way
training draws them (:class:`segtrain.data.dataset.TileDataset`, random windows with enough
valid pixels), raw, no-data as NaN. Before calibration the model goes through onnxruntime's
pre-processing (graph optimization and ONNX shape inference; its symbolic shape inference
cannot follow the dynamic padding to a size multiple, and is not needed for static
quantization).

What int8 costs and gains is measured, not assumed: the IoU of the fp32 and the int8 model on
the whole validation split (whole scenes, stitched as ``segtrain predict`` does), and their
speed in onnxruntime on the CPU, on the same tiles, best of several interleaved rounds. int8
pays off on CPUs with 8-bit dot-product instructions (AVX512-VNNI, AVX-VNNI, ARM dot
product); elsewhere it can be slower than fp32, which the report then shows.
"""
from __future__ import annotations

import dataclasses
import math
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import onnx
from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType, quantize_static
from onnxruntime.quantization.shape_inference import quant_pre_process

from segtrain.config import Config
from segtrain.config.schema import AugmentConfig
from segtrain.errors import UserError
from segtrain.run.directory import locate_data
from segtrain.export import EXPORT_DIR, INPUT, MODEL_FILE, export_onnx
from segtrain.fsutil import atomic_open, atomic_write_json
from segtrain.predict import Backend, OnnxBackend, check_tiling

INT8_FILE, REPORT_FILE = "model.int8.onnx", "quantize.json"
SPEED_ROUNDS = 3
NETWORK_SCOPE = "/net/"  # ONNX node names of the wrapped network (DeployedModel.net)


def calibration_tiles(cfg: Config, count: int, seed: int = 0) -> np.ndarray:
    """``count`` raw training tiles (count, C, t, t) float32, no-data and padding NaN.

    The training data set without normalization and augmentation gives raw values with
    invalid pixels zeroed; they are set back to NaN, as prediction feeds them.
    """
    from segtrain.data.dataset import TileDataset

    data = dataclasses.replace(cfg.data, normalize="none", sampling="random", tiles_per_epoch=count,
                               augment=AugmentConfig(hflip=False, vflip=False, rot90=False, brightness=0.0))
    tiles = TileDataset(data, "train", training=True, seed=seed, stats=None)
    out = []
    for i in range(count):
        item = tiles[i]
        out.append(np.where(item["valid"].numpy(), item["image"].numpy(), np.float32(np.nan)))
    return np.stack(out)


class TileCalibration(CalibrationDataReader):
    """Calibration batches for onnxruntime, from in-memory tiles."""

    def __init__(self, tiles: np.ndarray, batch_size: int):
        self._batches = iter([tiles[i:i + batch_size] for i in range(0, len(tiles), batch_size)])

    def get_next(self) -> Optional[dict[str, np.ndarray]]:
        batch = next(self._batches, None)
        return None if batch is None else {INPUT: batch}


def quantize_onnx(fp32: Path, out: Path, tiles: np.ndarray, batch_size: int = 8) -> None:
    """Write the int8 (QDQ, per-channel) form of the exported model ``fp32`` to ``out`` atomically,
    with the fp32 model's metadata plus a note of how it was quantized."""
    reader = TileCalibration(tiles, batch_size)
    with tempfile.TemporaryDirectory(prefix=".quantize-", dir=out.parent) as tmp:
        pre, int8 = Path(tmp) / "pre.onnx", Path(tmp) / "int8.onnx"
        quant_pre_process(str(fp32), str(pre), skip_symbolic_shape=True)
        graph = onnx.load(str(pre)).graph
        outside = [node.name for node in graph.node if not node.name.startswith(NETWORK_SCOPE)]
        quantize_static(str(pre), str(int8), reader, quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        calibrate_method=CalibrationMethod.MinMax, nodes_to_exclude=outside)
        model = onnx.load(str(int8))
    del model.metadata_props[:]
    fp32_props = onnx.load(str(fp32), load_external_data=False).metadata_props
    model.metadata_props.extend(fp32_props)
    note = model.metadata_props.add()
    note.key, note.value = "quantization", (f"int8 static, QDQ, per-channel weights (s8), u8 activations, MinMax "
                                            f"calibration on {len(tiles)} training tiles")
    with atomic_open(out, "wb") as f:
        f.write(model.SerializeToString())


@dataclass
class QuantizeOptions:
    checkpoint: str = "best"
    data_root: Optional[str] = None
    calibration_tiles: int = 64
    batch_size: int = 16
    progress: bool = True


def tile_throughput(backends: dict[str, Backend], tiles: np.ndarray, batch_size: int,
                    rounds: int = SPEED_ROUNDS) -> dict[str, float]:
    """Megapixels per second of each backend on the same tiles: the best of ``rounds`` rounds in
    which the backends take turns, so that load from other processes on a shared node hits all
    of them alike. A first full batch of each sets up kernels and memory and is not timed."""
    batches = [tiles[i:i + batch_size] for i in range(0, len(tiles), batch_size)]
    for backend in backends.values():
        backend(batches[0])
    best = {name: math.inf for name in backends}
    for _ in range(rounds):
        for name, backend in backends.items():
            start = time.perf_counter()
            for batch in batches:
                backend(batch)
            best[name] = min(best[name], time.perf_counter() - start)
    pixels = tiles.shape[0] * tiles.shape[2] * tiles.shape[3]
    return {name: pixels / 1e6 / seconds for name, seconds in best.items()}


def quantize_run(run_dir: str | Path, options: QuantizeOptions = QuantizeOptions()) -> dict:
    """Export the run (fp32), quantize it to ``export/model.int8.onnx``, measure both; write and
    return the report (``export/quantize.json``).

    IoU: whole scenes of the validation split against their masks. Speed: onnxruntime on CPU
    (where int8 kernels exist), on the calibration tiles (see :func:`tile_throughput`).
    """
    from segtrain.evaluate import score_scenes, summarize
    from segtrain.preflight import check_dataset
    from segtrain.run.checkpoint import load_trained

    if options.calibration_tiles < 1:
        raise UserError(f"--calibration-tiles: must be at least 1, got {options.calibration_tiles}")
    run_dir = Path(run_dir)
    trained = load_trained(run_dir, options.checkpoint)
    cfg = trained.config
    check_tiling(cfg.data.tile_size, cfg.data.overlap, options.batch_size)
    cfg.data.root = locate_data(run_dir, cfg.data.root, options.data_root)
    val = check_dataset(cfg).splits["val"]
    folder = run_dir / EXPORT_DIR
    fp32, int8 = folder / MODEL_FILE, folder / INT8_FILE
    export_onnx(trained, fp32)
    tiles = calibration_tiles(cfg, options.calibration_tiles, seed=cfg.train.seed)
    quantize_onnx(fp32, int8, tiles)
    backends = {"fp32": OnnxBackend(fp32, device="cpu"), "int8": OnnxBackend(int8, device="cpu")}
    speed = tile_throughput(backends, tiles, options.batch_size)
    report: dict = {"calibration_tiles": len(tiles), "split": "val", "scenes": len(val),
                    "speed": f"onnxruntime CPU, {len(tiles)} calibration tiles, batch {options.batch_size}, "
                             f"best of {SPEED_ROUNDS} rounds"}
    for name, backend in backends.items():
        meta = backend.meta
        scores, _, _ = score_scenes(backend, val, meta.tile_size, meta.overlap, options.batch_size, meta.threshold,
                                    progress=options.progress, label=f"val {name}")
        report[name] = {"file": str(backend.path), "iou": summarize(scores)["iou"], "megapixels_per_second": speed[name]}
    report["iou_change"] = report["int8"]["iou"] - report["fp32"]["iou"]
    report["speedup"] = speed["int8"] / speed["fp32"]
    atomic_write_json(folder / REPORT_FILE, report)
    return report
