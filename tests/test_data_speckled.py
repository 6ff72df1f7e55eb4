"""The speckled kind of demo data: masks of a per-pixel spectral rule, as QA bands make them."""
from __future__ import annotations

import json

import numpy as np
import pytest

from segtrain.data.clouds import DN_OFFSET, DN_SCALE
from segtrain.data.layout import read_split
from segtrain.data.reader import SceneReader
from segtrain.data.speckled import HOT_RED, HOT_THRESHOLD, component_sizes
from segtrain.data.synthetic import MARKER, DemoSpec, make_demo_data
from test_data_synthetic import dataset_digest, generated

SPECKLED = DemoSpec(seed=5, n_train=4, n_val=1, n_test=1, max_size=300, kind="speckled")


@pytest.fixture(scope="module")
def speckled(tmp_path_factory):
    return generated(tmp_path_factory, SPECKLED)


def _scenes(root):
    for split in ("train", "val", "test"):
        for files in read_split(root, split):
            with SceneReader(files.scene, files.mask) as reader:
                yield reader.read(0, 0, reader.height, reader.width)


def test_a_fifth_or_more_of_the_positives_lie_in_objects_of_1_to_4_pixels(speckled):
    """As on the Landsat-8 scene of issue 26 (23 % of its clouds), the speckle a QA mask has."""
    masks = [mask for _, _, mask in _scenes(speckled)]
    sizes = np.concatenate([component_sizes(m > 0) for m in masks])
    cover = sum(int((m > 0).sum()) for m in masks) / sum(m.size for m in masks)
    assert 0.02 <= cover <= 0.25
    assert (sizes <= 4).mean() >= 0.2


def test_the_rule_on_a_single_pixel_predicts_most_of_the_mask(speckled):
    """The label is a pixel's own spectral test (plus noise in the test and in the image): the same
    test on the image's noisy pixel agrees with it far better than chance."""
    hits = union = 0
    for image, valid, mask in _scenes(speckled):
        reflectance = image[:, valid].astype(np.float64) * DN_SCALE + DN_OFFSET
        predicted = reflectance[0] - HOT_RED * reflectance[2] > HOT_THRESHOLD
        truth = mask[valid] > 0
        hits += int((predicted & truth).sum())
        union += int((predicted | truth).sum())
    assert hits / union > 0.5


def test_component_sizes_count_8_connected_objects():
    mask = np.zeros((6, 7), dtype=np.uint8)
    mask[0, 0] = 1  # a single pixel
    mask[2, 2] = mask[3, 3] = 1  # diagonal neighbours: one object of 2
    mask[1:4, 5:7] = 1  # a 3 x 2 block
    sizes = component_sizes(mask)
    assert sorted(sizes.tolist()) == [1, 2, 2, 6, 6, 6, 6, 6, 6]
    assert component_sizes(np.zeros((3, 3))).size == 0


def test_speckled_data_sets_are_reproducible_and_recorded_as_such(speckled, tmp_path):
    make_demo_data(tmp_path / "again", SPECKLED)
    assert dataset_digest(tmp_path / "again") == dataset_digest(speckled)
    assert json.loads((speckled / MARKER).read_text())["kind"] == "speckled"
