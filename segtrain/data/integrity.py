"""How much of a scene and mask pair is decoded to trust it, and where that is done.

Decoding every tile of a Sentinel-2-size scene (4 x 10980^2 uint16, deflate tiles) costs about
3 CPU-s, so a first frontend check of 1,000 such scenes that decoded everything took an hour
of a shared machine. The frontend check (:func:`check_pair`) therefore reads the structure of
both files (offsets and byte counts within the file, sizes, bands, dtypes: :func:`read_info`)
and decodes whole only files of at most FULL_DECODE_VALUES values, which cost milliseconds. Of
a larger file it decodes a sample: a scene's first, last and largest segments (an unknown codec
or a broken predictor fails on any of them), a mask's SAMPLE_MASK largest segments (those with
the most edges, where values other than 0/1 or 0/255 show). A pair checked so is remembered as
not yet *decoded*.

The full decode of large files happens where their bytes are read anyway and cores are idle:
in the job while it stages the data set (:func:`verify_pair`), and in ``segtrain cache``, which
converts every segment. A corrupt segment found there is reported and training goes on: the
data loader skips the windows that touch it (:class:`segtrain.data.reader.CorruptSegment`), so
a job never dies on one. A mask that is not binary is a user error wherever it is found.
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np
import tifffile

from segtrain.data.layout import SceneFiles
from segtrain.data.reader import CorruptSegment, decode_segment
from segtrain.data.scene import SceneInfo, check_scene_dtype, read_info
from segtrain.errors import UserError

FULL_DECODE_VALUES = 1 << 22  # a file of at most this many values (2048^2 x 1 band) is decoded whole at the check
SAMPLE_MASK = 16  # segments of a larger mask decoded at the check (the largest: the most edges)
MASK_CHUNK = 1 << 20  # mask values tested per step (keeps the temporaries in cache)


@dataclass(frozen=True)
class Scan:
    """What decoding some segments of a file found."""
    corrupt: list[CorruptSegment]
    odd_values: Optional[np.ndarray] = None  # with ``binary``: the values of a mask that is not binary


def check_pair(files: SceneFiles) -> tuple[SceneInfo, bool]:
    """The frontend's check of a pair: the scene's metadata, and whether both files were decoded whole.

    Raises :class:`UserError` on a broken structure, a mask of other bands or size, a decoded
    segment that does not decode, or a decoded mask value that is not binary.
    """
    scene, mask = _infos(files)
    check_scene_dtype(scene)
    decoded = True
    for info, sample in ((scene, _scene_sample), (mask, _mask_sample)):
        whole = info.height * info.width * info.bands <= FULL_DECODE_VALUES
        found = _scan_pair_file(files, info, None if whole else sample, workers=1)
        if found:
            raise UserError(str(found[0]))
        decoded = decoded and whole
    return scene, decoded


def verify_pair(files: SceneFiles, workers: int = 1) -> list[CorruptSegment]:
    """Decode every segment of both files (``workers`` threads); return the corrupt ones.

    A mask that is not binary is a :class:`UserError`: unlike a corrupt segment it is not
    something to skip but a data set to fix.
    """
    scene, mask = _infos(files)
    return _scan_pair_file(files, scene, None, workers) + _scan_pair_file(files, mask, None, workers)


def _scan_pair_file(files: SceneFiles, info: SceneInfo, pick: Optional[Callable[[list], list]],
                    workers: int) -> list[CorruptSegment]:
    if info.path == files.scene:
        # an uncompressed scene has nothing to decode: read_info found any truncation
        return [] if info.compression == "NONE" else scan(info, pick, workers).corrupt
    found = scan(info, pick, workers, binary=True)
    if found.odd_values is not None:
        shown = ", ".join(str(v) for v in found.odd_values[:6]) + (", ..." if len(found.odd_values) > 6 else "")
        raise UserError(f"{files.mask}: mask is not binary: values {shown} (expected 0/1 or 0/255)")
    return found.corrupt


def scan(info: SceneInfo, pick: Optional[Callable[[list], list]] = None, workers: int = 1,
         binary: bool = False) -> Scan:
    """Decode the segments ``pick(segments)`` chooses (all when None) of ``info``'s file, in
    ``workers`` threads (the codecs release the GIL); ``binary``: also test that the decoded
    values are 0/1 or 0/255 across all of them."""
    with tifffile.TiffFile(info.path) as tif:
        fd = tif.filehandle.fileno()
        segments = [(page, i) for page in tif.series[0].pages for i, count in enumerate(page.databytecounts) if count]
        chosen = segments if pick is None else pick(segments)

        def decode(segment: tuple) -> tuple[Optional[CorruptSegment], Optional[np.ndarray]]:
            try:
                values = decode_segment(fd, *segment)
            except CorruptSegment as exc:
                return exc, None
            if not binary:
                return None, None
            return None, np.unique(values) if not is_binary(values) else np.array([values.min(), values.max()])

        if workers > 1:
            with ThreadPoolExecutor(max_workers=workers) as pool:
                results = list(pool.map(decode, chosen))
        else:
            results = [decode(s) for s in chosen]
    corrupt = [c for c, _ in results if c is not None]
    if not binary:
        return Scan(corrupt)
    values = np.unique(np.concatenate([v for _, v in results if v is not None] or [np.zeros(1)]))
    return Scan(corrupt, None if is_binary(values) else values)  # e.g. 1 in one segment and 255 in another is not


def is_binary(mask: np.ndarray) -> bool:
    """True when every value is in {0, 1} or every value is in {0, 255}.

    The largest value says which of the two it can be; then one pass counts the values that
    are neither 0 nor that value, in chunks that stay in cache. About 7x cheaper than
    ``np.unique``, which sorts the whole mask; an unsigned mask with largest value 0 or 1
    needs no second pass.
    """
    flat = mask.reshape(-1)
    if flat.size == 0:
        return True
    top = flat.max()
    if not (top == 0 or top == 1 or top == 255):  # NaN fails here too
        return False
    if flat.dtype.kind == "u" and top <= 1:
        return True
    if top == 0:
        return not np.count_nonzero(flat)
    for start in range(0, flat.size, MASK_CHUNK):
        chunk = flat[start:start + MASK_CHUNK]
        if np.count_nonzero(chunk) != np.count_nonzero(chunk == top):
            return False
    return True


def _infos(files: SceneFiles) -> tuple[SceneInfo, SceneInfo]:
    scene, mask = read_info(files.scene), read_info(files.mask)
    if mask.bands != 1:
        raise UserError(f"{files.mask}: a mask needs one band, found {mask.bands}")
    if (scene.height, scene.width) != (mask.height, mask.width):
        raise UserError(f"{files.mask}: mask is {mask.height}x{mask.width} but scene {files.scene.name} is "
                        f"{scene.height}x{scene.width}")
    return scene, mask


def _scene_sample(segments: list) -> list:
    largest = max(range(len(segments)), key=lambda i: segments[i][0].databytecounts[segments[i][1]])
    return [segments[i] for i in sorted({0, largest, len(segments) - 1})]


def _mask_sample(segments: list) -> list:
    by_size = sorted(range(len(segments)), key=lambda i: -segments[i][0].databytecounts[segments[i][1]])
    return [segments[i] for i in sorted(by_size[:SAMPLE_MASK])]
