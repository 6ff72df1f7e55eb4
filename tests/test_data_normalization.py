"""Normalization: robust statistics from a data set, and the same network input in training,
validation, eval/predict (the deployed PyTorch model) and the exported ONNX model."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
from torch import nn

from segtrain.config import load_config, to_dict
from segtrain.config.schema import AugmentConfig
from segtrain.data.dataset import TileDataset
from segtrain.data.normalization import ROBUST_CLIP, normalization, robust_statistics, tails
from segtrain.data.reader import SceneReader
from segtrain.data.stats import Stats, compute_stats
from segtrain.data.synthetic import DemoSpec, make_demo_data
from segtrain.errors import UserError
from segtrain.export import deploy, export_onnx
from segtrain.models import build_model
from segtrain.run.checkpoint import load_trained, save_checkpoint
from trainutil import REPO

CLOUDS = DemoSpec(seed=5, n_train=2, n_val=1, n_test=1, max_size=160, kind="clouds")
TILE = 48


@pytest.fixture(scope="module")
def clouds(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("norm") / "clouds"
    make_demo_data(root, CLOUDS)
    return root


@pytest.fixture(scope="module")
def clouds_stats(clouds) -> Stats:
    return compute_stats(clouds)


def test_robust_statistics_clip_the_extreme_tails_and_log_scale_only_heavy_tailed_bands():
    rng = np.random.default_rng(0)
    heavy = np.exp(rng.normal(8, 0.8, 100_000))  # lognormal, like reflectances with glints
    plain = rng.normal(1000, 50, 100_000)
    robust = robust_statistics(np.stack([heavy, plain]))
    assert robust["log"] == [True, False]
    for band, values in enumerate((heavy, plain)):
        assert robust["low"][band] == pytest.approx(np.percentile(values, ROBUST_CLIP[0]))
        assert robust["high"][band] == pytest.approx(np.percentile(values, ROBUST_CLIP[1]))
    norm = normalization("robust", {"robust": robust}, [0, 1])
    x = torch.from_numpy(np.stack([heavy, plain]).astype(np.float32)).T.reshape(-1, 2, 1, 1)
    t = norm.tensors()
    z = (tails(x, t["low"], t["high"], t["inv_spread"], t["log"]) * t["scale"].reshape(1, -1, 1, 1)
         - t["shift"].reshape(1, -1, 1, 1))
    assert z.mean(dim=0).abs().max() < 1e-3 and (z.std(dim=0) - 1).abs().max() < 1e-3  # standardized after the tails
    assert z[:, 0].max() < 5  # the lognormal tail no longer dominates


def test_robust_without_robust_statistics_is_a_user_error_naming_the_key():
    with pytest.raises(UserError, match=r"data.normalize: .*stats.json has no robust statistics.*segtrain stats"):
        normalization("robust", {"mean": [0.0], "std": [1.0]}, [0], source="data/x/stats.json")


class Probe(nn.Module):
    """A 'network' that remembers its input and returns a fixed mix of its bands as the logit."""

    def __init__(self, bands: int):
        super().__init__()
        self.register_buffer("weights", torch.linspace(0.4, 0.1, bands).reshape(1, -1, 1, 1))
        self.seen: list[torch.Tensor] = []

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        self.seen.append(z.detach().clone())
        return (z * self.weights).sum(dim=1, keepdim=True)


def trained_run(tmp_path: Path, data: Path, stats: Stats, mode: str) -> Path:
    cfg = load_config(REPO / "configs" / "demo.yaml", [f"data.root={data}", f"data.tile_size={TILE}",
                                                       f"data.normalize={mode}"])
    save_checkpoint({"model": build_model(cfg.model, 4).state_dict(), "config": to_dict(cfg),
                     "stats": stats.to_dict(), "in_channels": 4, "position": {"epoch": 0, "batch": 0, "step": 0}},
                    tmp_path / "checkpoints" / "best.pt")
    return tmp_path


@pytest.mark.parametrize("mode", ["stats", "robust"])
def test_training_validation_deployed_and_onnx_models_see_the_same_normalized_input(tmp_path, clouds, clouds_stats,
                                                                                    mode):
    stats = Stats.from_dict({**clouds_stats.to_dict(), "robust": {**clouds_stats.robust, "log": [True, True, False, True]}})
    trained = load_trained(trained_run(tmp_path, clouds, stats, mode))  # both clipping ways, whatever the sample's skew
    cfg = trained.config.data
    val = TileDataset(cfg, "val", training=False, seed=0, stats=stats)
    still = AugmentConfig(hflip=False, vflip=False, rot90=False)
    grid = dataclasses.replace(cfg, augment=still, sampling="grid", overlap=0, min_valid_fraction=0.0)
    train = TileDataset(grid, "val", training=True, seed=0, stats=stats)  # the val tiles, as training makes them
    model, meta = deploy(trained)
    model.net = Probe(4)
    path = tmp_path / "probe.onnx"
    trained.model = model.net
    export_onnx(trained, path)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    with SceneReader(val.files[0].scene, None, meta.bands) as reader:
        for i in range(len(val)):
            tile = val[i]
            h, w = min(TILE, reader.height - tile["y"]), min(TILE, reader.width - tile["x"])
            image, valid, _ = reader.read(tile["y"], tile["x"], h, w)
            raw = np.where(valid, image.astype(np.float32), np.nan)[None]
            with torch.no_grad():
                prob = model(torch.from_numpy(raw))
            expected = tile["image"][:, :h, :w]
            assert torch.equal(model.net.seen[-1][0], expected), "deployed (eval, predict) == validation tiles"
            assert torch.equal(train[i]["image"][:, :h, :w], expected), "training tiles == validation tiles"
            onnx_prob = session.run(None, {session.get_inputs()[0].name: raw})[0]
            np.testing.assert_allclose(onnx_prob, prob.numpy(), atol=1e-6)
