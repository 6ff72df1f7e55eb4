"""The clouds kind of demo data: small bright fractal targets on heavy-tailed TOA-like bands."""
from __future__ import annotations

import json

import numpy as np
import pytest

from segtrain.data.layout import read_split
from segtrain.data.reader import SceneReader
from segtrain.data.synthetic import MARKER, DemoSpec, make_demo_data
from test_data_synthetic import dataset_digest, generated
from segtrain.errors import UserError

CLOUDS = DemoSpec(seed=3, n_train=3, n_val=1, n_test=1, max_size=260, kind="clouds")


@pytest.fixture(scope="module")
def clouds(tmp_path_factory):
    return generated(tmp_path_factory, CLOUDS)


def _pixels(root, split="train"):
    images, masks = [], []
    for files in read_split(root, split):
        with SceneReader(files.scene, files.mask) as reader:
            image, valid, mask = reader.read(0, 0, reader.height, reader.width)
        images.append(image[:, valid])
        masks.append(mask[valid] > 0)
    return images, masks


def test_clouds_cover_1_to_15_percent_and_are_brighter_than_the_ground(clouds):
    images, masks = _pixels(clouds)
    for image, mask in zip(images, masks):
        assert 0.005 <= mask.mean() <= 0.2
        assert (image[:, mask].mean(axis=1) > image[:, ~mask].mean(axis=1)).all()


def test_bands_are_heavy_tailed_like_toa_reflectances(clouds):
    """The top percent lies far above the bulk: mean and std are poor normalizers of such bands."""
    values = np.concatenate(_pixels(clouds)[0], axis=1).astype(np.float64)
    p1, p50, p99, top = np.percentile(values, [1, 50, 99, 99.99], axis=1)
    assert ((p99 - p50) > 2 * (p50 - p1))[:3].all()  # the visible bands, where clouds stand out most
    assert (top > 3 * p50).any()


def test_clouds_are_reproducible_and_recorded_as_such(clouds, tmp_path):
    make_demo_data(tmp_path / "again", CLOUDS)
    assert dataset_digest(tmp_path / "again") == dataset_digest(clouds)
    assert json.loads((clouds / MARKER).read_text())["kind"] == "clouds"
    assert make_demo_data(clouds, CLOUDS) is False
    with pytest.raises(UserError, match="not this demo data set"):
        make_demo_data(clouds, DemoSpec(seed=3, n_train=3, n_val=1, n_test=1, max_size=260))
    with pytest.raises(UserError, match="--kind"):
        make_demo_data(tmp_path / "x", DemoSpec(kind="snow"))


def test_water_data_sets_keep_their_marker_without_a_kind(small_data_ro):
    assert "kind" not in json.loads((small_data_ro / MARKER).read_text())
