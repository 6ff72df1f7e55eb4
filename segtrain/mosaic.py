"""One GeoTIFF from many georeferenced outputs of the same grid, without GDAL (what a VRT would show).

The inputs must be north-up GeoTIFFs (a pixel scale and a tie point; no rotation) in one CRS
(by meaning, however its GeoKeys are written: :mod:`segtrain.geokeys`), with the same pixel size, on one pixel grid (their origins differ by
whole pixels), and of one data type: the masks or the probabilities of one predictions folder,
for instance. Where inputs overlap, the later one's valid pixels win (as ``gdal_merge`` and a
VRT do); no-data (the inputs' GDAL_NODATA value, or NaN) never covers a valid pixel. The mosaic
is written strip by strip from windowed reads of the inputs, tiled and compressed with
overviews (:mod:`segtrain.overviews`), so memory holds one strip of the mosaic's width.
Scenes in different UTM zones need reprojection, which this does not do: they are refused.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import tifffile

from segtrain.data.reader import open_raster
from segtrain.data.scene import read_info
from segtrain.errors import UserError
from segtrain.geokeys import GEO_ASCII, GEO_DOUBLES, crs_meaning, geokeys
from segtrain.overviews import OverviewTiffWriter
from segtrain.tiff_writer import OUT_TILE

PIXEL_SCALE, TIEPOINT, TRANSFORMATION, GEOKEYS = 33550, 33922, 34264, 34735
GRID_TOLERANCE = 1e-6  # of a pixel


@dataclass(frozen=True)
class Placed:
    """An input and where it lies: its top-left corner in map units, its size in pixels."""
    path: Path
    x0: float
    y0: float
    height: int
    width: int
    dtype: np.dtype
    nodata: Optional[float]
    scale: tuple[float, float]
    crs: tuple


def placement(path: Path) -> Placed:
    info = read_info(path)
    if info.bands != 1:
        raise UserError(f"{path}: has {info.bands} bands; a mosaic is made of one-band outputs (masks or probabilities)")
    with tifffile.TiffFile(path) as tif:
        tags = tif.pages[0].tags
        if TRANSFORMATION in tags:
            raise UserError(f"{path}: rotated or sheared (ModelTransformation); only north-up grids are stitched")
        if PIXEL_SCALE not in tags or TIEPOINT not in tags or GEOKEYS not in tags:
            raise UserError(f"{path}: not georeferenced (no pixel scale, tie point or GeoKey directory)")
        sx, sy = tags[PIXEL_SCALE].value[:2]
        i, j, _, x, y, _ = tags[TIEPOINT].value[:6]
        crs = crs_meaning(geokeys(tags[GEOKEYS].value, tags[GEO_DOUBLES].value if GEO_DOUBLES in tags else (),
                                  tags[GEO_ASCII].value if GEO_ASCII in tags else ""))
    return Placed(path, x - i * sx, y + j * sy, info.height, info.width, np.dtype(info.dtype), info.nodata,
                  (float(sx), float(sy)), crs)


def _offset(value: float, scale: float, path: Path) -> int:
    pixels = value / scale
    if abs(pixels - round(pixels)) > GRID_TOLERANCE:
        raise UserError(f"{path}: not on the pixel grid of the first input ({pixels:.4f} pixels off); "
                        "resample it first")
    return int(round(pixels))


def mosaic(out: Path, inputs: Sequence[Path]) -> tuple[int, int]:
    """Write the mosaic of ``inputs`` to ``out`` (atomically); its (height, width)."""
    if not inputs:
        raise UserError("give at least one input")
    placed = [placement(Path(p)) for p in inputs]
    first = placed[0]
    for p in placed[1:]:
        if p.crs != first.crs:
            raise UserError(f"{p.path}: another CRS than {first.path} ({_crs_text(p.crs)} vs {_crs_text(first.crs)}); "
                            "reproject it first")
        if not np.allclose(p.scale, first.scale, rtol=1e-9, atol=0):
            raise UserError(f"{p.path}: pixel size {p.scale} differs from {first.path}'s {first.scale}")
        if p.dtype != first.dtype:
            raise UserError(f"{p.path}: {p.dtype} pixels, but {first.path} has {first.dtype}; mosaic masks and "
                            "probabilities separately")
    sx, sy = first.scale
    left, top = min(p.x0 for p in placed), max(p.y0 for p in placed)
    cols = [_offset(p.x0 - left, sx, p.path) for p in placed]
    rows = [_offset(top - p.y0, sy, p.path) for p in placed]
    height = max(r + p.height for r, p in zip(rows, placed))
    width = max(c + p.width for c, p in zip(cols, placed))
    nodata = first.nodata if first.nodata is not None else (math.nan if first.dtype.kind == "f" else 0)
    fill = first.dtype.type(nodata)
    with tifffile.TiffFile(first.path) as tif:
        tags = [(t.code, t.dtype, t.count, t.value, True) for t in tif.pages[0].tags
                if t.code in (PIXEL_SCALE, GEOKEYS, GEO_DOUBLES, GEO_ASCII)]
    tags.append((TIEPOINT, 12, 6, (0.0, 0.0, 0.0, left, top, 0.0), True))
    rasters = [open_raster(read_info(p.path), [0]) for p in placed]
    try:
        with OverviewTiffWriter(out, height, width, first.dtype, _nodata_text(nodata), tags) as writer:
            for y in range(0, height, OUT_TILE):
                h = min(OUT_TILE, height - y)
                strip = np.full((h, width), fill, first.dtype)
                for raster, p, r, c in zip(rasters, placed, rows, cols):
                    y0, y1 = max(y, r), min(y + h, r + p.height)
                    if y0 >= y1:
                        continue
                    window = raster.read(y0 - r, 0, y1 - y0, p.width)[0]
                    valid = ~np.isnan(window) if window.dtype.kind == "f" else np.ones(window.shape, bool)
                    if p.nodata is not None and not math.isnan(p.nodata):
                        valid &= window != p.nodata
                    target = strip[y0 - y:y1 - y, c:c + p.width]
                    target[valid] = window[valid]
                writer.write(strip)
    finally:
        for raster in rasters:
            raster.close()
    return height, width


def _crs_text(crs: tuple) -> str:
    if crs[0] != "EPSG":
        return "a CRS without EPSG code"
    return f"EPSG:{crs[1]}" + (", pixel is point" if crs[2] != 1 else "")


def _nodata_text(value: float) -> str:
    return "nan" if math.isnan(value) else str(int(value) if float(value).is_integer() else value)
