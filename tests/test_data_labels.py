"""The staging cache's precomputed validity and mask: the same windows as computing them per tile."""
from __future__ import annotations

import os

import numpy as np
import pytest
import tifffile

from segtrain.data.labels import BLOCK, Labels, labels_path, remove_other_labels, write_labels
from segtrain.data.reader import SceneReader
from segtrain.data.scene import GDAL_NODATA_TAG


def write_pair(root, dtype, nodata: str) -> tuple:
    """A 3-band scene (not a multiple of the block size) with no-data patches and a 0/1/255 mask."""
    rng = np.random.default_rng(0)
    h, w = BLOCK + 90, 2 * BLOCK + 17
    image = rng.integers(1, 50, size=(3, h, w)).astype(dtype)
    image[:, 10:60, 20:300] = float(nodata)  # every band at no-data: invalid
    image[1, 100:140, :] = float(nodata)  # one band only: still valid
    if np.dtype(dtype).kind == "f":
        image[2, 200:210, 400:450] = np.nan  # any NaN band: invalid
    mask = rng.choice(np.array([0, 1, 255], np.uint8), size=(h, w))
    (root / "scenes").mkdir(parents=True)
    (root / "masks").mkdir()
    scene, mask_path = root / "scenes" / "a.tif", root / "masks" / "a.tif"
    tifffile.imwrite(scene, image, photometric="minisblack", planarconfig="separate", metadata=None,
                     extratags=[(GDAL_NODATA_TAG, "s", 0, nodata, True)])
    tifffile.imwrite(mask_path, mask, photometric="minisblack", metadata=None)
    return scene, mask_path


@pytest.mark.parametrize("dtype,nodata", [(np.uint16, "0"), (np.uint16, "7"), (np.float32, "-9999.5")])
def test_windows_of_the_labels_are_the_validity_and_mask_a_reader_computes(tmp_path, dtype, nodata):
    scene, mask = write_pair(tmp_path, dtype, nodata)
    out = labels_path(tmp_path, "a.tif", scene, mask)
    assert write_labels(scene, mask, out)
    assert not write_labels(scene, mask, out)  # already made
    labels = Labels.find(tmp_path, "a.tif", scene, mask)
    invalid = 0
    with SceneReader(scene, mask) as reader:
        # inside one block, across two and four blocks, at the far edges, larger than a block
        for y, x, size in [(0, 0, 64), (30, 240, 64), (200, 250, 100), (reader.height - 64, reader.width - 64, 64),
                           (5, 3, BLOCK + 40), (0, 0, 1)]:
            valid, window_mask = np.empty((size, size), bool), np.empty((size, size), np.uint8)
            labels.read(y, x, valid, window_mask)
            _, expected_valid, expected_mask = reader.read_raw(y, x, size, size)
            np.testing.assert_array_equal(valid, expected_valid)
            np.testing.assert_array_equal(window_mask, expected_mask)
            invalid += np.count_nonzero(~valid)
    assert invalid  # the no-data patches were among the windows


def test_labels_of_other_versions_of_a_scene_are_not_found_and_are_removed(tmp_path):
    scene, mask = write_pair(tmp_path, np.uint16, "0")
    old = labels_path(tmp_path, "a.tif", scene, mask)
    write_labels(scene, mask, old)
    tifffile.imwrite(mask, np.zeros((BLOCK + 90, 2 * BLOCK + 17), np.uint8), photometric="minisblack", metadata=None)
    os.utime(mask, ns=(10**18, 10**18))  # another version, whatever the clock's resolution
    assert Labels.find(tmp_path, "a.tif", scene, mask) is None  # made from the old mask
    new = labels_path(tmp_path, "a.tif", scene, mask)
    write_labels(scene, mask, new)
    remove_other_labels(tmp_path, {new})
    assert [p.name for p in (tmp_path / "labels").iterdir()] == [new.name]
