"""Assemble tiled one-page TIFFs (a full-resolution image and its overviews) into one
cloud-optimized GeoTIFF, by copying their compressed tiles as they are.

A cloud-optimized GeoTIFF (COG) is laid out for readers that fetch byte ranges: the header and
every image file directory (IFD) first, full resolution then each overview, so one read of the
file's start gives the whole structure; then the tiles of the smallest overview, the next
larger, and the full resolution last, so a viewer zoomed out reads one short range. That is the
order GDAL's COG driver writes and rio-cogeo's ``cog_validate`` checks; tifffile writes each
image's IFD next to its own tiles, so the file is written here, entry by entry. Tags are copied
byte for byte from the inputs (their values do not depend on where they sit) except the tile
offsets, and ``NewSubfileType`` 1 marks the overviews (GDAL's internal overviews).
"""
from __future__ import annotations

import os
import struct
from pathlib import Path
from typing import BinaryIO, Sequence

import tifffile

NEW_SUBFILE_TYPE, TILE_OFFSETS, TILE_BYTE_COUNTS = 254, 324, 325
ITEM_SIZE = {1: 1, 2: 1, 3: 2, 4: 4, 5: 8, 6: 1, 7: 1, 8: 2, 9: 4, 10: 8, 11: 4, 12: 8, 16: 8, 17: 8, 18: 8}
LONG, LONG8 = 4, 16
COPY_CHUNK = 1 << 22


class _Layout:
    """Classic TIFF (offsets of 4 bytes) or BigTIFF (8 bytes), little-endian."""

    def __init__(self, big: bool):
        self.big = big
        self.offset_type, self.offset_format = (LONG8, "Q") if big else (LONG, "I")
        self.header_size, self.entry_size, self.inline = (16, 20, 8) if big else (8, 12, 4)
        self.count_format = "Q" if big else "H"

    def header(self, first_ifd: int) -> bytes:
        if self.big:
            return b"II" + struct.pack("<HHHQ", 43, 8, 0, first_ifd)
        return b"II" + struct.pack("<HI", 42, first_ifd)

    def ifd_size(self, entries: int) -> int:
        return struct.calcsize("<" + self.count_format) + entries * self.entry_size + self.inline


def _entries(source: tifffile.TiffFile, subfile_type: int, layout: _Layout) -> list[tuple[int, int, int, bytes]]:
    """(code, type, count, value bytes) of the source's first page; tile offsets zero-filled for now."""
    page = source.pages[0]
    fd = source.filehandle.fileno()
    entries = []
    for tag in sorted(page.tags.values(), key=lambda t: t.code):
        if tag.code in (TILE_OFFSETS, TILE_BYTE_COUNTS):
            values = [0] * len(page.dataoffsets) if tag.code == TILE_OFFSETS else page.databytecounts
            data = struct.pack(f"<{len(values)}{layout.offset_format}", *values)
            entries.append((tag.code, layout.offset_type, len(values), data))
        elif tag.code == NEW_SUBFILE_TYPE:
            entries.append((tag.code, LONG, 1, struct.pack("<I", subfile_type)))
        else:
            entries.append((tag.code, int(tag.dtype), tag.count, os.pread(fd, tag.count * ITEM_SIZE[int(tag.dtype)],
                                                                           tag.valueoffset)))
    if NEW_SUBFILE_TYPE not in page.tags:
        entries.insert(0, (NEW_SUBFILE_TYPE, LONG, 1, struct.pack("<I", subfile_type)))
    return entries


def _ifd_bytes(entries: list[tuple[int, int, int, bytes]], at: int, layout: _Layout, next_ifd: int) -> bytes:
    """One IFD at offset ``at`` followed by the values that do not fit inline (each at an even offset)."""
    head = struct.pack("<" + layout.count_format, len(entries))
    body, extra = b"", b""
    extra_at = at + layout.ifd_size(len(entries))
    for code, kind, count, data in entries:
        if len(data) <= layout.inline:
            value = data.ljust(layout.inline, b"\0")
        else:
            value = struct.pack("<" + layout.offset_format, extra_at + len(extra))
            extra += data + b"\0" * (len(data) % 2)
        body += struct.pack("<HH" + ("Q" if layout.big else "I"), code, kind, count) + value
    return head + body + struct.pack("<" + layout.offset_format, next_ifd) + extra


def write_cog(out: BinaryIO, levels: Sequence[Path], big: bool) -> None:
    """Write the images of ``levels`` (full resolution first, then overviews by decreasing size;
    one tiled page each) to ``out`` in COG order; BigTIFF when ``big``."""
    layout = _Layout(big)
    sources = [tifffile.TiffFile(path) for path in levels]
    try:
        entries = [_entries(src, 1 if i else 0, layout) for i, src in enumerate(sources)]
        # IFD sizes do not depend on the offsets they hold: place IFDs first, then data.
        sizes = [len(_ifd_bytes(e, 0, layout, 0)) for e in entries]
        ifd_at = [layout.header_size + sum(sizes[:i]) for i in range(len(sizes))]
        data_at = layout.header_size + sum(sizes)
        starts: list[list[int]] = [[] for _ in sources]
        for i in reversed(range(len(sources))):  # smallest overview's tiles first, full resolution last
            for count in sources[i].pages[0].databytecounts:
                starts[i].append(data_at)
                data_at += count
        out.write(layout.header(ifd_at[0]))
        for i, e in enumerate(entries):
            e = [(c, k, n, struct.pack(f"<{n}{layout.offset_format}", *starts[i]) if c == TILE_OFFSETS else d)
                 for c, k, n, d in e]
            out.write(_ifd_bytes(e, ifd_at[i], layout, ifd_at[i + 1] if i + 1 < len(entries) else 0))
        for src in reversed(sources):
            _copy_tiles(src, out)
    finally:
        for src in sources:
            src.close()


def _copy_tiles(source: tifffile.TiffFile, out: BinaryIO) -> None:
    page = source.pages[0]
    fd = source.filehandle.fileno()
    for offset, count in zip(page.dataoffsets, page.databytecounts):
        while count:
            chunk = os.pread(fd, min(count, COPY_CHUNK), offset)
            out.write(chunk)
            offset, count = offset + len(chunk), count - len(chunk)
