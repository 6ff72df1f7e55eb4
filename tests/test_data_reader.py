"""Window reads of scenes and masks, for every storage layout, with the no-data rule."""
from __future__ import annotations

import numpy as np
import pytest
import tifffile

from segtrain.data.layout import read_split
from segtrain.data.reader import SceneReader
from segtrain.data.scene import GDAL_NODATA_TAG
from segtrain.errors import UserError


def write_tif(path, data: np.ndarray, nodata: str | None = None, **kwargs) -> str:
    tags = [] if nodata is None else [(GDAL_NODATA_TAG, "s", 0, nodata, True)]
    tifffile.imwrite(path, data, photometric="minisblack", metadata=None, extratags=tags, **kwargs)
    return str(path)


def band_first(path) -> np.ndarray:
    data = tifffile.imread(path)
    return data.transpose(2, 0, 1) if data.ndim == 3 and data.shape[-1] < data.shape[0] else data


def random_windows(rng: np.random.Generator, height: int, width: int, count: int):
    for _ in range(count):
        h, w = int(rng.integers(1, height + 1)), int(rng.integers(1, width + 1))
        yield int(rng.integers(0, height - h + 1)), int(rng.integers(0, width - w + 1)), h, w


def all_scenes(root):
    return [s for split in ("train", "val", "test") for s in read_split(root, split)]


def test_windows_equal_the_decoded_file_for_every_layout_of_the_demo_data(small_data_ro):
    """Band axis first or last, tiled + compressed or plain strips, masks 0/1 or 0/255."""
    rng = np.random.default_rng(0)
    layouts = set()
    for files in all_scenes(small_data_ro):
        scene, mask = band_first(files.scene), tifffile.imread(files.mask)
        with SceneReader(files.scene, files.mask, bands=[3, 0]) as reader:
            layouts.add(reader.memory_mapped)
            for y, x, h, w in random_windows(rng, reader.height, reader.width, 8):
                image, valid, window_mask = reader.read(y, x, h, w)
                expected = scene[[3, 0], y:y + h, x:x + w]
                assert image.dtype == np.float32 and image.shape == (2, h, w)
                np.testing.assert_array_equal(image, expected)
                np.testing.assert_array_equal(valid, (expected != 0).any(axis=0))
                np.testing.assert_array_equal(window_mask, mask[y:y + h, x:x + w] > 0)
                assert window_mask.dtype == np.uint8
    assert layouts == {True, False}  # both the memory-mapped and the segment path were exercised


@pytest.mark.parametrize("layout", [
    dict(tile=(16, 16), compression="zlib", planarconfig="separate"),
    dict(tile=(16, 16), compression="zlib", planarconfig="contig", predictor=True),
    dict(rowsperstrip=7, compression="zlib", planarconfig="separate"),
    dict(rowsperstrip=7, planarconfig="contig"),
    dict(planarconfig="separate", byteorder=">"),
])
def test_windows_across_segment_boundaries_match(tmp_path, layout):
    rng = np.random.default_rng(1)
    data = rng.integers(1, 1000, size=(3, 45, 38), dtype=np.uint16)
    stored = data if layout["planarconfig"] == "separate" else data.transpose(1, 2, 0)
    path = write_tif(tmp_path / "s.tif", np.ascontiguousarray(stored), **layout)
    with SceneReader(path, bands=[2, 1]) as reader:
        for y, x, h, w in random_windows(rng, 45, 38, 20):
            np.testing.assert_array_equal(reader.read(y, x, h, w)[0], data[[2, 1], y:y + h, x:x + w])


def test_a_scene_stored_as_one_page_per_band_is_read_by_band(tmp_path):
    data = np.arange(3 * 20 * 30, dtype=np.uint16).reshape(3, 20, 30) + 1
    path = tmp_path / "pages.tif"
    with tifffile.TiffWriter(path) as tif:
        for band in data:
            tif.write(band, photometric="minisblack", compression="zlib", metadata=None)
    with SceneReader(path, bands=[2, 0]) as reader:
        assert reader.bands == 2
        np.testing.assert_array_equal(reader.read(3, 4, 10, 12)[0], data[[2, 0], 3:13, 4:16])


def test_plain_scenes_are_memory_mapped_and_compressed_ones_are_not(tmp_path):
    data = np.ones((2, 20, 20), dtype=np.uint16)
    with SceneReader(write_tif(tmp_path / "plain.tif", data, planarconfig="separate")) as reader:
        assert reader.memory_mapped
    with SceneReader(write_tif(tmp_path / "zip.tif", data, planarconfig="separate", compression="zlib")) as reader:
        assert not reader.memory_mapped


def test_read_raw_keeps_the_file_dtype(small_data_ro):
    files = read_split(small_data_ro, "train")[0]
    with SceneReader(files.scene, files.mask) as reader:
        raw, valid, mask = reader.read_raw(0, 0, 10, 10)
        assert raw.dtype == np.uint16
        np.testing.assert_array_equal(raw, reader.read(0, 0, 10, 10)[0])


def test_a_pixel_is_invalid_only_when_every_selected_band_is_nodata(tmp_path):
    data = np.full((2, 4, 4), 7, dtype=np.uint16)
    data[:, 0, 0] = 0  # all bands no-data: invalid
    data[0, 1, 1] = 0  # one band zero: a valid dark pixel
    path = write_tif(tmp_path / "s.tif", data, planarconfig="separate")
    with SceneReader(path) as reader:
        valid = reader.read(0, 0, 4, 4)[1]
    assert not valid[0, 0] and valid[1, 1] and valid.sum() == 15
    with SceneReader(path, bands=[0]) as reader:  # the rule applies to the selected bands
        assert not reader.read(0, 0, 4, 4)[1][1, 1]


def test_nodata_comes_from_the_config_then_the_file_tag_then_zero_for_integers(tmp_path):
    data = np.array([[[0, 5, 9]]], dtype=np.int16).repeat(2, axis=0)
    untagged = write_tif(tmp_path / "untagged.tif", data, planarconfig="separate")
    tagged = write_tif(tmp_path / "tagged.tif", data, nodata="9", planarconfig="separate")
    cases = [(untagged, None, [False, True, True]), (tagged, None, [True, True, False]),
             (tagged, 5.0, [True, False, True]), (untagged, -40000.0, [True, True, True])]
    for path, override, expected in cases:
        with SceneReader(path, nodata=override) as reader:
            assert reader.read(0, 0, 1, 3)[1][0].tolist() == expected, (path, override)


def test_float_scenes_mark_nan_invalid_and_have_no_default_nodata(tmp_path):
    data = np.zeros((2, 1, 3), dtype=np.float32)
    data[1, 0, 1] = np.nan
    with SceneReader(write_tif(tmp_path / "f.tif", data, planarconfig="separate")) as reader:
        assert reader.nodata is None
        assert reader.read(0, 0, 1, 3)[1][0].tolist() == [True, False, True]


def test_masks_stored_as_0_255_are_read_as_0_1(tmp_path):
    scene = write_tif(tmp_path / "s.tif", np.ones((5, 6), dtype=np.uint8))
    mask = write_tif(tmp_path / "m.tif", np.array([[0, 255] * 3] * 5, dtype=np.uint8), compression="zlib")
    with SceneReader(scene, mask) as reader:
        assert reader.read(0, 0, 5, 6)[2].tolist() == [[0, 1] * 3] * 5


def test_a_window_outside_the_scene_is_refused(small_data_ro):
    files = read_split(small_data_ro, "train")[0]
    with SceneReader(files.scene) as reader:
        with pytest.raises(ValueError, match="not inside"):
            reader.read(reader.height - 5, 0, 10, 10)


def test_bad_inputs_are_user_errors_naming_the_file_or_key(tmp_path, small_data_ro):
    files = read_split(small_data_ro, "train")[0]
    with pytest.raises(UserError, match="data.bands: selects band 9"):
        SceneReader(files.scene, bands=[9])
    with pytest.raises(UserError, match="not found"):
        SceneReader(tmp_path / "missing.tif")
    small = write_tif(tmp_path / "small.tif", np.zeros((3, 3), dtype=np.uint8))
    with pytest.raises(UserError, match="small.tif: mask is 3x3"):
        SceneReader(files.scene, small)
