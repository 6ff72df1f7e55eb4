"""`segtrain export`: an ONNX model that takes raw scene bands of any size and gives probabilities."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from conftest import tree_state
from segtrain.cli import main
from segtrain.config import load_config, to_dict
from segtrain.data.dataset import TileDataset
from segtrain.data.reader import SceneReader
from segtrain.data.stats import Stats
from segtrain.data.tiling import pad_tile
from segtrain.export import INPUT, OUTPUT, TOLERANCE, ModelMeta, deploy
from segtrain.models import build_model
from segtrain.run.checkpoint import LAST, load_trained, save_checkpoint
from trainutil import REPO


@pytest.fixture(scope="module")
def exported(run_dir) -> Path:
    assert main(["export", str(run_dir)]) == 0
    return run_dir / "export" / "model.onnx"


def untrained_run(tmp_path: Path, *overrides: str) -> Path:
    """A run directory holding a freshly initialized model: enough for export, no training needed."""
    cfg = load_config(REPO / "configs" / "demo.yaml", ["data.tile_size=64", *overrides])
    model = build_model(cfg.model, 4)
    save_checkpoint({"model": model.state_dict(), "config": to_dict(cfg), "stats": None, "in_channels": 4,
                     "position": {"epoch": 0, "batch": 0, "step": 0}}, tmp_path / "checkpoints" / "best.pt")
    return tmp_path


def session(path: Path) -> ort.InferenceSession:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def test_export_writes_a_model_that_passes_the_onnx_checker(exported):
    onnx.checker.check_model(onnx.load(str(exported)), full_check=True)
    assert not list(exported.parent.glob(".*"))  # no temporary file left behind


def test_batch_height_and_width_are_dynamic(exported):
    graph = onnx.load(str(exported)).graph
    for value in (graph.input[0], graph.output[0]):
        dims = value.type.tensor_type.shape.dim
        assert [d.dim_param for d in dims] == ["batch", "", "height", "width"]
        assert dims[1].dim_value == (4 if value is graph.input[0] else 1)


@pytest.mark.parametrize("shape", [(1, 4, 48, 48), (2, 4, 37, 101), (3, 4, 130, 21), (1, 4, 5, 9)])
def test_onnx_model_matches_pytorch_on_shapes_not_seen_at_export(run_dir, exported, shape):
    model, _ = deploy(load_trained(run_dir))
    x = np.random.default_rng(sum(shape)).normal(2000, 400, shape).astype(np.float32)
    x[:, :, : shape[2] // 3, : shape[3] // 4] = np.nan  # a no-data corner
    with torch.no_grad():
        expected = model(torch.from_numpy(x)).numpy()
    got = session(exported).run([OUTPUT], {INPUT: x})[0]
    assert got.shape == (shape[0], 1, *shape[2:])
    np.testing.assert_allclose(got, expected, atol=TOLERANCE, rtol=0)


def test_onnx_model_on_raw_bands_equals_the_network_on_the_training_pipelines_tiles(run_dir, exported, small_data_ro):
    trained = load_trained(run_dir)
    tiles = TileDataset(trained.config.data, "val", training=False, seed=0, stats=Stats.from_dict(trained.stats))
    sess = session(exported)
    for i in range(0, len(tiles), 3):
        item = tiles[i]
        files = tiles.files[item["scene"]]
        with SceneReader(files.scene, bands=None) as reader:
            t = trained.config.data.tile_size
            h, w = min(t, reader.height - item["y"]), min(t, reader.width - item["x"])
            image, valid, _ = reader.read(item["y"], item["x"], h, w)
        image, valid, _ = pad_tile(image, valid, t)
        raw = np.where(valid, image, np.float32(np.nan))[None]
        with torch.no_grad():
            expected = torch.sigmoid(trained.model(item["image"][None])).numpy()
        np.testing.assert_allclose(sess.run([OUTPUT], {INPUT: raw})[0], expected, atol=TOLERANCE, rtol=0)


def test_metadata_holds_bands_tile_threshold_statistics_and_config_hash(run_dir, exported):
    trained = load_trained(run_dir)
    props = {p.key: p.value for p in onnx.load(str(exported)).metadata_props}
    meta = ModelMeta.from_props(props, str(exported))
    calibrated = json.loads((run_dir / "calibration.json").read_text())["best"]
    assert json.loads(props["calibration"]) == calibrated
    assert meta == ModelMeta(bands=[0, 1, 2, 3], scene_bands=4, tile_size=48, overlap=8,
                             threshold=calibrated["threshold"], nodata=None)
    assert json.loads(props["stats"])["mean"] == trained.stats["mean"]
    assert json.loads(props["stats"])["std"] == trained.stats["std"]
    canonical = json.dumps(to_dict(trained.config), sort_keys=True).encode()
    assert props["config_hash"] == hashlib.sha256(canonical).hexdigest()
    assert "NaN" in props["input"] and props["normalize"] == "stats"


@pytest.mark.parametrize("overrides", [
    ("model.arch=Unet", "model.encoder=resnet18", "model.encoder_depth=3"),  # an smp model
    ("model.out_channels=2", "model.depth=2", "model.base_width=8"),  # a two-class softmax head
])
def test_other_models_export_for_any_size_too(tmp_path, capsys, overrides):
    run = untrained_run(tmp_path, *overrides)
    assert main(["export", str(run)]) == 0
    out = capsys.readouterr().out
    assert "2x4x35x85" in out and "1x4x133x23" in out  # the non-square shapes it was verified on


def test_an_architecture_that_cannot_take_any_size_is_refused_and_nothing_written(tmp_path, capsys):
    run = untrained_run(tmp_path, "model.arch=PSPNet", "model.encoder=resnet18")
    before = tree_state(run)
    assert main(["export", str(run)]) == 2
    err = capsys.readouterr().err
    assert "model.arch: PSPNet" in err and err.count("\n") == 1
    assert tree_state(run) == before


def test_export_of_a_run_without_checkpoint_is_a_user_error_naming_the_file(tmp_path, capsys):
    assert main(["export", str(tmp_path), "--checkpoint", "last"]) == 2
    assert str(tmp_path / "checkpoints" / LAST) in capsys.readouterr().err
    assert not (tmp_path / "export").exists()


def test_deployed_model_zeroes_nodata_pixels_like_the_training_data_set(run_dir):
    model, meta = deploy(load_trained(run_dir))
    x = torch.full((1, len(meta.bands), 16, 16), 1500.0)
    x[0, :, :4, :4] = float("nan")
    x[0, 2, 8, 8] = float("nan")  # one NaN band makes the pixel invalid, as in SceneReader
    scale, shift = model.scale.reshape(1, -1, 1, 1), model.shift.reshape(1, -1, 1, 1)
    zeroed = torch.where(torch.isnan(x).any(1, keepdim=True), 0.0, x * scale - shift)
    with torch.no_grad():
        assert torch.equal(model(x), torch.sigmoid(model.net(zeroed)))
