"""The tile grid covers any scene, and border tiles are padded and marked invalid."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from segtrain.data.tiling import cut_tile, pad_tile, tile_origins


@st.composite
def grids(draw):
    """A scene size (also smaller than a tile, or no multiple of the stride), a tile and an overlap."""
    tile = draw(st.integers(2, 64))
    return draw(st.integers(1, 300)), draw(st.integers(1, 300)), tile, draw(st.integers(0, tile - 1))


def coverage(height: int, width: int, tile: int, overlap: int) -> np.ndarray:
    counts = np.zeros((height, width), dtype=int)
    for y, x in tile_origins(height, width, tile, overlap):
        counts[y:y + tile, x:x + tile] += 1
    return counts


@settings(max_examples=200, deadline=None)
@given(grids())
def test_every_pixel_is_covered_and_every_origin_lies_inside_the_scene(grid):
    height, width, tile, overlap = grid
    origins = tile_origins(height, width, tile, overlap)
    assert coverage(height, width, tile, overlap).min() >= 1
    assert all(0 <= y < height and 0 <= x < width for y, x in origins)


@settings(max_examples=200, deadline=None)
@given(grids())
def test_without_overlap_every_pixel_is_covered_exactly_once(grid):
    height, width, tile, _ = grid
    assert (coverage(height, width, tile, 0) == 1).all()


@settings(max_examples=200, deadline=None)
@given(grids())
def test_origins_step_by_the_stride_and_stop_at_the_first_window_reaching_the_edge(grid):
    height, width, tile, overlap = grid
    ys = sorted({y for y, _ in tile_origins(height, width, tile, overlap)})
    assert ys[0] == 0 and all(b - a == tile - overlap for a, b in zip(ys, ys[1:]))
    assert ys[-1] + tile >= height
    assert len(ys) == 1 or ys[-2] + tile < height


def test_overlap_of_a_whole_tile_is_refused():
    with pytest.raises(ValueError, match="overlap"):
        tile_origins(100, 100, 32, 32)


@settings(max_examples=200, deadline=None)
@given(grids(), st.data())
def test_a_cut_tile_holds_the_scene_pixels_and_its_padding_is_invalid(grid, data):
    height, width, tile, overlap = grid
    rng = np.random.default_rng(data.draw(st.integers(0, 2 ** 32 - 1)))
    image = rng.random((2, height, width)).astype(np.float32)
    valid = rng.random((height, width)) > 0.2
    y, x = data.draw(st.sampled_from(tile_origins(height, width, tile, overlap)))
    window, window_valid = cut_tile(image, valid, y, x, tile)
    h, w = min(tile, height - y), min(tile, width - x)
    assert window.shape == (2, tile, tile) and window_valid.shape == (tile, tile)
    np.testing.assert_array_equal(window[:, :h, :w], image[:, y:y + h, x:x + w])
    np.testing.assert_array_equal(window_valid[:h, :w], valid[y:y + h, x:x + w])
    assert not window_valid[h:].any() and not window_valid[:, w:].any()


def test_padding_reflects_the_image_across_the_scene_edge():
    image = np.arange(3 * 4, dtype=np.float32).reshape(1, 3, 4)
    padded, valid = cut_tile(image, np.ones((3, 4), dtype=bool), 0, 0, 6)
    np.testing.assert_array_equal(padded[0, :, 0], [0, 4, 8, 4, 0, 4])  # rows reflect about the last row
    np.testing.assert_array_equal(padded[0, 0, :], [0, 1, 2, 3, 2, 1])  # columns about the last column
    assert valid[:3, :4].all() and not valid[3:].any() and not valid[:, 4:].any()


def test_a_window_one_pixel_wide_is_padded_with_its_edge_value():
    image = np.array([[[5.0], [7.0]]], dtype=np.float32)  # (1, 2, 1)
    padded, valid, mask = pad_tile(image, np.ones((2, 1), dtype=bool), 4, np.ones((2, 1), dtype=np.uint8))
    np.testing.assert_array_equal(padded[0, 0], [5, 5, 5, 5])
    assert mask[:2, 1:].sum() == 0 and mask[:2, 0].tolist() == [1, 1]
    assert valid.sum() == 2


def test_a_full_window_is_returned_without_copying():
    image, valid = np.zeros((1, 8, 8), dtype=np.float32), np.ones((8, 8), dtype=bool)
    padded, padded_valid, _ = pad_tile(image, valid, 8)
    assert padded is image and padded_valid is valid
