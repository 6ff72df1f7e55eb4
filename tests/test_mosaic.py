"""segtrain mosaic: georeferenced pieces of one grid give back the whole; anything else is refused."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile

from segtrain.cli import main
from segtrain.data.scene import GDAL_NODATA_TAG
from segtrain.mosaic import mosaic

UTM33 = (1, 1, 0, 3, 1024, 0, 1, 1, 1025, 0, 1, 1, 3072, 0, 1, 32633)
UTM34 = UTM33[:-1] + (32634,)


def piece(path: Path, data: np.ndarray, col: int, row: int, keys=UTM33, scale=10.0, shift=0.0) -> Path:
    """``data`` as a GeoTIFF whose top-left pixel is (row, col) of a grid of ``scale`` m pixels at 500000, 5500000."""
    x, y = 500000.0 + col * scale + shift, 5500000.0 - row * scale
    nodata = "nan" if data.dtype.kind == "f" else "255"
    tifffile.imwrite(path, data, metadata=None, photometric="minisblack", tile=(64, 64), compression="zlib",
                     extratags=[(33550, 12, 3, (scale, scale, 0.0), True), (33922, 12, 6, (0.0, 0.0, 0.0, x, y, 0.0), True),
                                (34735, 3, 16, keys, True), (GDAL_NODATA_TAG, "s", 0, nodata, True)])
    return path


@pytest.mark.parametrize("dtype", [np.uint8, np.float32])
def test_overlapping_pieces_give_back_the_whole_grid_with_its_georeferencing(tmp_path, dtype):
    rng = np.random.default_rng(1)
    whole = rng.integers(0, 2, (300, 420)).astype(dtype) if dtype == np.uint8 else rng.random((300, 420)).astype(dtype)
    nodata = dtype(255) if dtype == np.uint8 else dtype(np.nan)
    pieces = []
    for i, (r0, r1, c0, c1) in enumerate([(0, 180, 0, 250), (100, 300, 0, 200), (0, 300, 200, 420)]):
        data = whole[r0:r1, c0:c1].copy()
        data[:5, :5] = nodata  # no-data never covers a valid pixel of another piece
        pieces.append(piece(tmp_path / f"p{i}.tif", data, c0 + 7, r0 + 3))
    whole[:5, :5] = nodata  # ... but the grid's own corner is no piece's valid pixel
    assert mosaic(tmp_path / "m.tif", pieces) == (300, 420)
    with tifffile.TiffFile(tmp_path / "m.tif") as tif:
        np.testing.assert_array_equal(tif.asarray(), whole)
        page = tif.pages[0]
        assert page.tags[33922].value[3:5] == (500070.0, 5499970.0) and page.tags[34735].value == UTM33
        assert page.is_tiled and len(tif.series[0].levels) == 2


def test_a_gap_between_pieces_is_no_data(tmp_path):
    a = piece(tmp_path / "a.tif", np.ones((10, 10), np.uint8), 0, 0)
    b = piece(tmp_path / "b.tif", np.zeros((10, 10), np.uint8), 20, 5)
    mosaic(tmp_path / "m.tif", [a, b])
    out = tifffile.imread(tmp_path / "m.tif")
    assert out.shape == (15, 30) and (out[:10, :10] == 1).all() and (out[5:, 20:] == 0).all()
    assert (out[10:, :20] == 255).all() and (out[:5, 10:] == 255).all()


@pytest.mark.parametrize("kw, message", [({"keys": UTM34}, "another CRS"), ({"scale": 20.0}, "pixel size"),
                                         ({"shift": 3.0}, "not on the pixel grid")])
def test_pieces_of_another_crs_pixel_size_or_grid_are_refused_by_name(tmp_path, kw, message):
    a = piece(tmp_path / "a.tif", np.ones((10, 10), np.uint8), 0, 0)
    b = piece(tmp_path / "b.tif", np.ones((10, 10), np.uint8), 10, 0, **kw)
    with pytest.raises(Exception, match=message):
        mosaic(tmp_path / "m.tif", [a, b])
    assert not (tmp_path / "m.tif").exists()


def test_the_command_refuses_to_overwrite_and_needs_georeferenced_inputs(tmp_path, capsys):
    a = piece(tmp_path / "a.tif", np.ones((10, 10), np.uint8), 0, 0)
    (tmp_path / "m.tif").write_bytes(b"mine")
    assert main(["mosaic", str(tmp_path / "m.tif"), str(a)]) == 2
    assert "m.tif: exists; not replacing it" in capsys.readouterr().err and (tmp_path / "m.tif").read_bytes() == b"mine"
    tifffile.imwrite(tmp_path / "plain.tif", np.ones((10, 10), np.uint8))
    assert main(["mosaic", str(tmp_path / "n.tif"), str(tmp_path / "plain.tif")]) == 2
    assert "plain.tif: not georeferenced" in capsys.readouterr().err
    assert main(["mosaic", str(tmp_path / "n.tif"), str(a)]) == 0 and (tmp_path / "n.tif").is_file()


@pytest.mark.parametrize("crs", ["EPSG:32633", "EPSG:3035"])
def test_one_crs_written_three_ways_is_one_crs_and_the_mosaic_equals_rasterio_merge(tmp_path, crs):
    """GDAL writes a CRS as GeoTIFF 1.0 keys, as 1.1 keys, or ESRI-flavoured; GDAL and rasterio.merge
    take them as one CRS, and so does the mosaic."""
    rasterio = pytest.importorskip("rasterio")
    from rasterio.merge import merge
    from rasterio.transform import from_origin

    rng = np.random.default_rng(3)
    whole = rng.integers(0, 2, (300, 600)).astype(np.uint8)  # with overviews
    flavours = [{}, {"GEOTIFF_VERSION": "1.1"}, {"GEOTIFF_KEYS_FLAVOR": "ESRI_PE"}]
    pieces = []
    for i, options in enumerate(flavours):
        path = tmp_path / f"p{i}.tif"
        with rasterio.open(path, "w", driver="GTiff", height=300, width=200, count=1, dtype="uint8", nodata=255,
                           crs=crs, transform=from_origin(500000 + i * 2000, 5500000, 10, 10), **options) as dst:
            dst.write(whole[None, :, i * 200:(i + 1) * 200])
        pieces.append(path)
    assert len({tifffile.TiffFile(p).pages[0].tags[34735].value for p in pieces}) == 3  # three ways indeed
    mosaic(tmp_path / "m.tif", pieces)
    merged, transform = merge([str(p) for p in pieces])
    with rasterio.open(tmp_path / "m.tif") as out:
        assert out.crs == rasterio.crs.CRS.from_string(crs) and out.transform == transform
        np.testing.assert_array_equal(out.read(), merged)
        np.testing.assert_array_equal(out.read(1), whole)
    assert pytest.importorskip("rio_cogeo.cogeo").cog_validate(str(tmp_path / "m.tif"), quiet=True) == (True, [], [])


def test_pixel_is_point_is_another_grid_than_pixel_is_area(tmp_path):
    a = piece(tmp_path / "a.tif", np.ones((10, 10), np.uint8), 0, 0)
    b = piece(tmp_path / "b.tif", np.ones((10, 10), np.uint8), 10, 0, keys=UTM33[:8] + (1025, 0, 1, 2) + UTM33[12:])
    with pytest.raises(Exception, match="another CRS .*EPSG:32633, pixel is point vs EPSG:32633"):
        mosaic(tmp_path / "m.tif", [a, b])
