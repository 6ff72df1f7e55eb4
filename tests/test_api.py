"""segtrain.api, and the documented plain-PyTorch way: the same masks as `segtrain predict`."""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import tifffile

from conftest import REPO, bands_first
from segtrain import api
from segtrain.cli import main
from segtrain.data.layout import read_split
from trainutil import train_run


def scenes(data: Path) -> list[Path]:
    return [f.scene for f in read_split(data, "test")]


def predicted(tmp_path: Path, model: Path, scene: Path, *flags: str) -> tuple[np.ndarray, np.ndarray]:
    out = tmp_path / f"cli-{model.name}-{'-'.join(flags)}"
    assert main(["predict", str(model), str(scene), "--out", str(out), "--prob", "--quiet", "--device", "cpu",
                 *flags]) == 0
    return tifffile.imread(out / f"{scene.stem}_mask.tif"), tifffile.imread(out / f"{scene.stem}_prob.tif")


@pytest.mark.parametrize("which", ["run", "onnx"])
def test_an_array_gives_the_mask_and_probabilities_segtrain_predict_writes(run_dir, onnx_path, small_data_ro, tmp_path,
                                                                           which):
    path = run_dir if which == "run" else onnx_path
    model = api.load(path)
    assert model.meta.tile_size == 48 and (model.module is None) == (which == "onnx")
    nodata_seen = False
    for scene in scenes(small_data_ro):
        mask, prob = predicted(tmp_path, path, scene)
        image = bands_first(scene)  # uint16, no-data 0 in every band: the scene's own rule applies
        np.testing.assert_array_equal(model.predict(image), mask)
        np.testing.assert_array_equal(model.predict_proba(image), prob)
        nodata_seen |= bool((mask == 255).any())
    assert nodata_seen


def test_a_scene_file_is_written_as_segtrain_predict_writes_it(onnx_path, small_data_ro, tmp_path):
    scene = scenes(small_data_ro)[0]
    mask, prob = predicted(tmp_path, onnx_path, scene)
    result = api.load(onnx_path).predict_scene(scene, tmp_path / "api", prob=True)
    np.testing.assert_array_equal(tifffile.imread(result.mask), mask)
    np.testing.assert_array_equal(tifffile.imread(result.prob), prob)


def test_a_runs_metrics_are_a_dataframe_of_every_record(run_dir):
    pandas = pytest.importorskip("pandas")
    frame = api.metrics(run_dir)
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    assert isinstance(frame, pandas.DataFrame) and len(frame) == len(lines) == len(api.metric_records(run_dir))
    train = frame[frame["split"] == "train"]
    assert train["step"].is_monotonic_increasing and train["loss"].notna().all()
    assert (frame["split"] == "val").any()


def documented_plain_pytorch() -> str:
    """The plain-PyTorch block of the user docs (wherever the docs put it)."""
    for doc in [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]:
        if doc.is_file():
            found = re.search(r"```python\n(# A segtrain run's smp model in plain PyTorch.*?)```", doc.read_text(), re.S)
            if found:
                return found.group(1)
    raise AssertionError("the plain-PyTorch snippet is not in the docs")


def test_the_documented_plain_pytorch_way_gives_segtrain_predicts_mask_on_one_tile(small_data_ro, tmp_path):
    """A barely trained smp U-Net with encoder_depth 3 (the case that needs matching decoder_channels),
    loaded by the docs' block with smp alone; a scene of one tile, where predict has nothing to blend."""
    run = tmp_path / "smp"
    code, out = train_run(run, small_data_ro, "model.arch=Unet", "model.encoder=resnet18", "model.encoder_depth=3",
                          "model.pixel_branch=0", "train.epochs=1", "data.tiles_per_epoch=16")
    assert code == 0, out
    image = bands_first(scenes(small_data_ro)[0])
    scene = tmp_path / "tile.tif"
    tifffile.imwrite(scene, np.ascontiguousarray(image[:, :48, :48]), photometric="minisblack",
                     planarconfig="separate", metadata=None)
    mask, prob = predicted(tmp_path, run, scene, "--tile", "48")
    code = documented_plain_pytorch().replace('Path("runs/NAME"), "scene.tif"', f'Path({str(run)!r}), {str(scene)!r}')
    namespace: dict = {}
    exec(compile(code, "plain-pytorch snippet", "exec"), namespace)
    valid = mask != 255
    np.testing.assert_allclose(namespace["prob"][valid], prob[valid], atol=1e-5)
    np.testing.assert_array_equal(namespace["mask"], mask)
