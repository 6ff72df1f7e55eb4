"""`segtrain quantize`: an int8 model calibrated on real tiles, with its IoU change and speed-up measured."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import tifffile

from conftest import tree_state
from segtrain.cli import main
from segtrain.data.layout import read_split
from segtrain.export import INPUT, OUTPUT
from segtrain.quantize import calibration_tiles
from segtrain.run.checkpoint import load_trained


@pytest.fixture(scope="module")
def quantized(run_dir) -> Path:
    assert main(["quantize", str(run_dir), "--calibration-tiles", "16", "--quiet"]) == 0
    return run_dir / "export"


def session(path: Path) -> ort.InferenceSession:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def test_quantize_reports_measured_iou_of_both_models_and_the_speedup(quantized):
    report = json.loads((quantized / "quantize.json").read_text())
    assert report["calibration_tiles"] == 16 and report["split"] == "val"
    for name in ("fp32", "int8"):
        assert 0 <= report[name]["iou"] <= 1 and report[name]["megapixels_per_second"] > 0
    assert report["iou_change"] == pytest.approx(report["int8"]["iou"] - report["fp32"]["iou"])
    speedup = report["int8"]["megapixels_per_second"] / report["fp32"]["megapixels_per_second"]
    assert report["speedup"] == pytest.approx(speedup)


def test_int8_model_quantizes_the_network_per_channel_and_keeps_input_and_output_float(quantized):
    graph = onnx.load(str(quantized / "model.int8.onnx")).graph
    inits = {i.name: i for i in graph.initializer}
    dequant = [n for n in graph.node if n.op_type == "DequantizeLinear"]
    per_channel = [n for n in dequant if n.input[1] in inits and len(inits[n.input[1]].dims) == 1
                   and inits[n.input[1]].dims[0] > 1]
    assert per_channel, "weights should have one scale per output channel"
    readers = {n.op_type for n in graph.node if INPUT in n.input}
    assert readers == {"IsNaN", "Mul"}  # no-data test and normalization run in float on the raw input
    assert graph.node[-1].op_type == "Sigmoid" and graph.node[-1].output[0] == OUTPUT


def test_int8_model_takes_raw_bands_and_stays_close_to_the_fp32_model(run_dir, quantized):
    tiles = calibration_tiles(load_trained(run_dir).config, 8, seed=1)
    fp32 = session(quantized / "model.onnx").run([OUTPUT], {INPUT: tiles})[0]
    int8 = session(quantized / "model.int8.onnx").run([OUTPUT], {INPUT: tiles})[0]
    assert int8.shape == fp32.shape and np.isfinite(int8).all()
    assert np.abs(int8 - fp32).mean() < 0.02


def test_int8_model_keeps_the_segtrain_metadata(quantized):
    props = {p.key: p.value for p in onnx.load(str(quantized / "model.int8.onnx")).metadata_props}
    fp32 = {p.key: p.value for p in onnx.load(str(quantized / "model.onnx")).metadata_props}
    assert {k: props[k] for k in fp32} == fp32
    assert "int8" in props["quantization"]


def test_calibration_tiles_are_raw_training_tiles_with_nodata_as_nan(run_dir):
    cfg = load_trained(run_dir).config
    tiles = calibration_tiles(cfg, 12)
    assert tiles.shape == (12, 4, 48, 48) and tiles.dtype == np.float32
    valid = ~np.isnan(tiles).any(axis=1)
    assert np.isnan(tiles).any(axis=1).sum() == np.isnan(tiles).all(axis=1).sum()  # all bands or none
    assert valid.mean(axis=(1, 2)).min() >= cfg.data.min_valid_fraction
    assert np.nanmin(tiles) >= 1 and np.nanmax(tiles) > 1000  # digital numbers, not normalized values


def test_quantize_without_the_data_set_is_a_user_error_and_writes_nothing(run_dir, tmp_path, capsys):
    before = tree_state(run_dir)
    assert main(["quantize", str(run_dir), "--data", str(tmp_path / "gone")]) == 2
    assert str(tmp_path / "gone") in capsys.readouterr().err
    assert tree_state(run_dir) == before


def test_predict_with_the_int8_model_writes_masks_that_agree_with_the_fp32_models(run_dir, quantized, small_data_ro,
                                                                                  tmp_path):
    scenes = [str(f.scene) for f in read_split(small_data_ro, "test")]
    for name in ("model.onnx", "model.int8.onnx"):
        assert main(["predict", str(quantized / name), *scenes, "--out", str(tmp_path / name), "--quiet"]) == 0
    for scene in scenes:
        mask = f"{Path(scene).stem}_mask.tif"
        fp32, int8 = (tifffile.imread(tmp_path / name / mask) for name in ("model.onnx", "model.int8.onnx"))
        assert int8.shape == fp32.shape and set(np.unique(int8)) <= {0, 1, 255}
        assert np.array_equal(int8 == 255, fp32 == 255)  # the same no-data
        assert (int8 == fp32).mean() > 0.97
