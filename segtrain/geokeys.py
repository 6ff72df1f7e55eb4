"""What a GeoTIFF's CRS means, read from its GeoKey directory without GDAL.

The same CRS can be written in several ways: GDAL writes EPSG:32633 with citations and unit
keys under GeoTIFF 1.0, with three keys under ``GEOTIFF_VERSION=1.1``, and with an ESRI PE
string and a user-defined model type under ``GEOTIFF_KEYS_FLAVOR=ESRI_PE``; GDAL and
``rasterio.merge`` take them as one CRS. So two files are in the same CRS when they name the
same EPSG projected (else geographic) CRS and raster type; only a CRS without an EPSG code is
compared key by key, citations (free text) left out.
"""
from __future__ import annotations

from typing import Mapping, Optional

GT_MODEL_TYPE, GT_RASTER_TYPE, GT_CITATION = 1024, 1025, 1026
GEOGRAPHIC_TYPE, GEOG_CITATION, PROJECTED_CS_TYPE, PCS_CITATION, VERTICAL_CS_TYPE = 2048, 2049, 3072, 3073, 4096
CITATIONS = {GT_CITATION, GEOG_CITATION, PCS_CITATION}
PIXEL_IS_AREA = 1
USER_DEFINED = 32767
GEO_DOUBLES, GEO_ASCII = 34736, 34737


def geokeys(directory: tuple, doubles: tuple = (), ascii: str = "") -> dict[int, object]:
    """The keys of a GeoKeyDirectory tag's value as {key id: value}, values taken from the
    GeoDoubleParams and GeoAsciiParams tags where the directory points there."""
    keys: dict[int, object] = {}
    for i in range(4, 4 + 4 * int(directory[3]), 4):
        key, location, count, offset = directory[i:i + 4]
        if location == 0:
            keys[key] = offset
        elif location == GEO_DOUBLES:
            keys[key] = tuple(doubles[offset:offset + count])
        elif location == GEO_ASCII:
            keys[key] = ascii[offset:offset + count].rstrip("|")
        else:
            keys[key] = (location, count, offset)
    return keys


def _epsg(keys: Mapping[int, object], key: int) -> Optional[int]:
    value = keys.get(key)
    return value if isinstance(value, int) and 0 < value < USER_DEFINED else None


def crs_meaning(keys: Mapping[int, object]) -> tuple:
    """A value equal for equal CRSs however their keys were written (see the module's doc)."""
    raster_type = keys.get(GT_RASTER_TYPE, PIXEL_IS_AREA)
    vertical = keys.get(VERTICAL_CS_TYPE)
    projected = _epsg(keys, PROJECTED_CS_TYPE)
    if projected is not None:
        return ("EPSG", projected, raster_type, vertical)
    geographic = _epsg(keys, GEOGRAPHIC_TYPE)
    if geographic is not None and not any(3074 <= key < 4096 for key in keys):
        return ("EPSG", geographic, raster_type, vertical)
    return ("keys",) + tuple(sorted((k, v) for k, v in keys.items() if k not in CITATIONS))
