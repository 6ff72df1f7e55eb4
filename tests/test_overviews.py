"""Overviews written as the rows come: every level equals the full image reduced at once."""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import tifffile

from segtrain.cog import write_cog
from segtrain.overviews import OverviewTiffWriter, halve, overview_shapes

UTM33 = [(33550, 12, 3, (10.0, 10.0, 0.0), True), (33922, 12, 6, (0.0, 0.0, 0.0, 500000.0, 5500000.0, 0.0), True),
         (34735, 3, 16, (1, 1, 0, 3, 1024, 0, 1, 1, 1025, 0, 1, 1, 3072, 0, 1, 32633), True)]


def reduce_at_once(image: np.ndarray) -> np.ndarray:
    if image.dtype.kind != "f":
        return image[::2, ::2]
    h, w = image.shape
    padded = np.full((h + h % 2, w + w % 2), np.nan, image.dtype)
    padded[:h, :w] = image
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(padded.reshape(padded.shape[0] // 2, 2, -1, 2), axis=(1, 3)).astype(image.dtype)


def write_in_blocks(path: Path, image: np.ndarray, blocks=(7, 33, 1, 100, 256)) -> None:
    with OverviewTiffWriter(path, *image.shape, image.dtype, "255" if image.dtype == np.uint8 else "nan",
                            [(33550, 12, 3, (10.0, 10.0, 0.0), True)]) as writer:
        y = 0
        for n in blocks * 10:
            writer.write(image[y:y + n])
            y += n
            if y >= len(image):
                break


def test_levels_halve_until_one_tile_holds_the_image():
    assert overview_shapes(10980, 10980)[-1] == (172, 172) and len(overview_shapes(10980, 10980)) == 6
    assert overview_shapes(257, 100) == [(129, 50)] and overview_shapes(256, 256) == []


@pytest.mark.parametrize("dtype, shape", [(np.uint8, (1001, 777)), (np.float32, (513, 1025)), (np.float32, (300, 90))])
def test_every_level_written_from_row_blocks_equals_the_image_reduced_at_once(tmp_path, dtype, shape):
    rng = np.random.default_rng(0)
    image = rng.integers(0, 3, shape).astype(dtype) if dtype == np.uint8 else rng.random(shape).astype(dtype)
    if dtype == np.float32:
        image[:40, :40] = np.nan  # a no-data corner stays no-data in the overviews
    write_in_blocks(tmp_path / "out.tif", image)
    with tifffile.TiffFile(tmp_path / "out.tif") as tif:
        levels = tif.series[0].levels
        assert [level.shape for level in levels] == [shape] + overview_shapes(*shape)
        assert all(page.is_tiled and page.compression.name == "ADOBE_DEFLATE" for page in tif.pages)
        assert [page.is_reduced for page in tif.pages] == [False] + [True] * (len(levels) - 1)
        assert tif.pages[0].tags[33550].value == (10.0, 10.0, 0.0)
        expected = image
        for level in levels:
            np.testing.assert_array_equal(level.asarray(), expected)
            expected = reduce_at_once(expected)
    assert [p.name for p in tmp_path.iterdir()] == ["out.tif"]


def test_an_aborted_writer_leaves_nothing_and_keeps_an_existing_file(tmp_path):
    path = tmp_path / "out.tif"
    path.write_bytes(b"previous")
    with pytest.raises(RuntimeError):
        with OverviewTiffWriter(path, 600, 600, np.uint8, "255") as writer:
            writer.write(np.zeros((300, 600), np.uint8))
            raise RuntimeError("stopped")
    assert path.read_bytes() == b"previous" and [p.name for p in tmp_path.iterdir()] == ["out.tif"]


def test_halving_a_float_block_averages_its_valid_pixels():
    rows = np.array([[1.0, 3.0, np.nan], [np.nan, 5.0, np.nan]], np.float32)
    np.testing.assert_array_equal(halve(rows), [[3.0, np.nan]])


def test_memory_does_not_grow_with_the_image_height(tmp_path):
    import tracemalloc

    strip = np.random.default_rng(0).random((256, 1024)).astype(np.float32)
    peaks = []
    for height in (1024, 4096):
        tracemalloc.start()
        with OverviewTiffWriter(tmp_path / f"{height}.tif", height, 1024, np.float32, "nan") as writer:
            for _ in range(0, height, 256):
                writer.write(strip)
        peaks.append(tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()
    assert peaks[1] < 1.25 * peaks[0] and peaks[1] < 4 * 1024 * 1024 * 4  # the 4096-row image is 16 MB


def cog_check(path: Path) -> tuple[bool, list[str], list[str]]:
    """rio-cogeo's validator (GDAL underneath): (valid, errors, warnings). Its CLI exits 0 even for
    an invalid file, so the Python function is what is asked."""
    cog_validate = pytest.importorskip("rio_cogeo.cogeo").cog_validate
    return cog_validate(str(path), quiet=True)


@pytest.mark.parametrize("dtype, shape", [(np.uint8, (1001, 777)), (np.float32, (513, 1025)), (np.uint8, (90, 300))])
def test_the_output_is_a_cloud_optimized_geotiff_with_no_warning(tmp_path, dtype, shape):
    rasterio = pytest.importorskip("rasterio")
    image = np.random.default_rng(0).integers(0, 3, shape).astype(dtype)
    with OverviewTiffWriter(tmp_path / "out.tif", *shape, dtype, "255" if dtype == np.uint8 else "nan", UTM33) as writer:
        writer.write(image)
    assert cog_check(tmp_path / "out.tif") == (True, [], [])
    with rasterio.open(tmp_path / "out.tif") as src:
        assert src.crs.to_epsg() == 32633 and src.transform.c == 500000.0
        assert src.overviews(1) == [2 ** (i + 1) for i in range(len(overview_shapes(*shape)))]
        np.testing.assert_array_equal(src.read(1), image)


def test_a_bigtiff_cog_is_laid_out_alike(tmp_path):
    """Outputs over 2 GB are BigTIFF (8-byte offsets): the same layout, checked on a small one."""
    image = np.random.default_rng(1).random((700, 600)).astype(np.float32)
    write_in_blocks(tmp_path / "levels.tif", image)
    levels = []
    with tifffile.TiffFile(tmp_path / "levels.tif") as tif:
        for i, level in enumerate(tif.series[0].levels):
            levels.append(tmp_path / f"level{i}.tif")
            tifffile.imwrite(levels[-1], level.asarray(), tile=(256, 256), compression="zlib", metadata=None,
                             extratags=UTM33 if i == 0 else [])
    with open(tmp_path / "big.tif", "wb") as f:
        write_cog(f, levels, big=True)
    with tifffile.TiffFile(tmp_path / "big.tif") as tif:
        assert tif.is_bigtiff
        np.testing.assert_array_equal(tif.asarray(), image)
    assert cog_check(tmp_path / "big.tif") == (True, [], [])
