"""What a scene TIFF is, read from its metadata alone (no pixel data is decoded).

Band-axis detection, the no-data value and a truncation check live here so that both the
preflight and the readers agree on what a file holds.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import tifffile

from segtrain.errors import UserError

GDAL_NODATA_TAG = 42113


@dataclass(frozen=True)
class SceneInfo:
    """Shape and storage of one scene or mask file."""
    path: Path
    height: int
    width: int
    bands: int
    band_axis: Optional[int]  # 0 (bands, H, W), 2 (H, W, bands), None for a single 2-D band
    dtype: str
    nodata: Optional[float]  # from the GDAL_NODATA tag, when the file has one
    tiled: bool
    compression: str


def read_info(path: str | Path) -> SceneInfo:
    """Metadata of a TIFF; a missing, corrupt or truncated file is a :class:`UserError`."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: file not found")
    try:
        with tifffile.TiffFile(path) as tif:
            series = tif.series[0]
            page = series.pages[0]
            shape, axes = series.shape, series.axes
            if 0 in shape:  # before the data checks: an empty image's zero-byte data may point anywhere
                raise UserError(f"{path}: has no pixels (shape {'x'.join(map(str, shape))}); remove it from the "
                                "filelist or write it again")
            size = path.stat().st_size
            for p in series.pages:
                if not p.dataoffsets or len(p.dataoffsets) != len(p.databytecounts):
                    raise UserError(f"{path}: corrupt TIFF: the offsets of the image data are missing or damaged")
                if any(o + n > size for o, n in zip(p.dataoffsets, p.databytecounts)):
                    raise UserError(f"{path}: corrupt TIFF: image data runs past the end of the file (truncated?)")
            nodata_tag = page.tags.get(GDAL_NODATA_TAG)
            info = dict(dtype=str(series.dtype), tiled=bool(page.is_tiled), compression=page.compression.name)
    except UserError:
        raise
    except Exception as exc:  # tifffile raises many types for broken files; all mean the same here
        raise UserError(f"{path}: corrupt or unreadable TIFF: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None
    if len(shape) == 2:
        bands, band_axis, (height, width) = 1, None, shape
    elif len(shape) == 3:
        _refuse_pages_of_bands(path, shape, axes)
        band_axis = 2 if axes.endswith("S") else 0
        bands = shape[band_axis]
        height, width = (shape[0], shape[1]) if band_axis == 2 else (shape[1], shape[2])
    else:
        raise UserError(f"{path}: expected a 2-D or 3-D image, got shape {shape} (axes {axes})")
    return SceneInfo(path=path, height=int(height), width=int(width), bands=int(bands), band_axis=band_axis,
                     nodata=_parse_nodata(nodata_tag.value) if nodata_tag is not None else None, **info)


SCENE_KINDS = "uif"  # numpy kinds of scene pixels: unsigned and signed integers, floats


def check_scene_dtype(info: SceneInfo) -> None:
    """Refuse a scene whose pixels are not numbers the models read: complex values would lose their
    imaginary part on the way to float32 (numpy only warns), booleans and the rest mean nothing here."""
    if np.dtype(info.dtype).kind not in SCENE_KINDS:
        raise UserError(f"{info.path}: pixels of type {info.dtype} are not supported; scenes hold unsigned or "
                        "signed integers or floats")


def _refuse_pages_of_bands(path: Path, shape: tuple[int, ...], axes: str) -> None:
    """An (H, W, C) array written by ``tifffile.imwrite(path, array)`` without ``photometric=``
    (C not 3 or 4) is stored as H pages of W x C: read as it is, it would be a scene of H bands
    W pixels high and C pixels wide, and every later message would blame something else."""
    pages, height, width = shape
    if "S" not in axes and width <= 16 < pages:  # bands as pages (not samples), each page a thin strip
        raise UserError(
            f"{path}: stored as {pages} pages of {height} x {width}: this looks like an H x W x bands array "
            f"({pages} x {height} x {width}) written without photometric=; rewrite it with "
            "tifffile.imwrite(path, tifffile.imread(path), photometric='minisblack', planarconfig='contig')")


def select_bands(requested: Optional[list[int]], info: SceneInfo) -> list[int]:
    """The band indices a model sees (``data.bands``; all bands when None), checked against a scene."""
    selected = list(range(info.bands)) if requested is None else list(requested)
    if max(selected) >= info.bands:
        raise UserError(f"data.bands: selects band {max(selected)} but {info.path} has {info.bands} bands "
                        f"(0..{info.bands - 1})")
    return selected


def resolve_nodata(info: SceneInfo, override: Optional[float] = None) -> Optional[float]:
    """The value that marks a pixel invalid: ``data.nodata``, else the file's tag, else 0 for integers.

    Integer products without a tag almost always use 0 as fill; for float scenes NaN already
    marks no-data, so they get None (only NaN is invalid).
    """
    if override is not None:
        return float(override)
    if info.nodata is not None:
        return info.nodata
    return 0.0 if np.dtype(info.dtype).kind in "iu" else None


def _parse_nodata(value: object) -> Optional[float]:
    text = value.decode(errors="ignore") if isinstance(value, bytes) else str(value)
    text = text.strip("\x00 ").lower()
    try:
        return float(text)
    except ValueError:
        return None
