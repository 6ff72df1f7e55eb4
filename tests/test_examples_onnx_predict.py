"""examples/onnx_predict.py: onnxruntime, numpy and tifffile alone, following the model's metadata,
give the mask `segtrain predict` gives, pixel for pixel, no-data included."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import tifffile

from segtrain.cli import main
from segtrain.data.layout import read_split
from segtrain.export import NODATA_RULE

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "onnx_predict.py"
# Runs the example as a user would, and fails if it imported segtrain or torch.
ISOLATED = ("import runpy, sys; sys.argv = sys.argv[1:]; runpy.run_path(sys.argv[0], run_name='__main__'); "
            "assert not [m for m in sys.modules if m.split('.')[0] in ('segtrain', 'torch')], 'imported segtrain/torch'")


def scenes(data: Path, tmp_path: Path) -> list[Path]:
    """The test split (uint16, no-data 0 in every band in one scene), and a float copy of one scene
    with NaN in a single band of some pixels and in every band of others."""
    paths = [f.scene for f in read_split(data, "test")]
    image = tifffile.imread(paths[0]).astype(np.float32)
    image = image if image.shape[0] == 4 else np.ascontiguousarray(image.transpose(2, 0, 1))
    image[1, 10:20, 10:30] = np.nan
    image[:, 40:50, :] = np.nan
    float_scene = tmp_path / "float.tif"
    tifffile.imwrite(float_scene, image, photometric="minisblack", planarconfig="separate", metadata=None)
    return paths + [float_scene]


def test_the_model_carries_how_segtrain_predict_uses_it(onnx_path):
    props = {p.key: p.value for p in onnx.load(onnx_path).metadata_props}
    prediction = json.loads(props["prediction"])
    assert prediction["nodata"].startswith(NODATA_RULE)
    assert "tile / 8" in prediction["blending"] and "strictly above 'threshold'" in prediction["mask"]
    assert "s = tile - overlap" in prediction["tiles"]


def test_the_onnxruntime_only_example_reproduces_segtrain_predicts_mask(capsys, onnx_path, small_data_ro, tmp_path):
    paths = scenes(small_data_ro, tmp_path)
    assert main(["predict", str(onnx_path), *map(str, paths), "--out", str(tmp_path / "segtrain"), "--quiet"]) == 0
    for scene in paths:
        out = tmp_path / f"{scene.stem}_example.tif"
        done = subprocess.run([sys.executable, "-c", ISOLATED, str(EXAMPLE), str(onnx_path), str(scene), str(out)],
                              capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        expected = tifffile.imread(tmp_path / "segtrain" / f"{scene.stem}_mask.tif")
        got = tifffile.imread(out)
        np.testing.assert_array_equal(got, expected, err_msg=scene.name)
        assert (got == 255).any() or scene.name != "float.tif"
    float_mask = tifffile.imread(tmp_path / "float_example.tif")
    assert (float_mask[10:20, 10:30] == 255).all() and (float_mask[40:50] == 255).all()  # one NaN band is no-data
