"""Stitching tile predictions back into a scene: exact without a model, seam-free with one."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from segtrain.data.stitching import Stitcher, blend_window
from segtrain.data.tiling import cut_tile, tile_origins


def stitch(image: np.ndarray, valid: np.ndarray, tile: int, overlap: int, window: str = "gaussian",
           model=lambda tile: tile[0]) -> tuple[np.ndarray, np.ndarray]:
    """Cut (C,H,W) into tiles, map each tile with ``model`` to (tile, tile) and stitch the results."""
    _, height, width = image.shape
    stitcher = Stitcher(height, width, tile, overlap, window)
    for y, x in tile_origins(height, width, tile, overlap):
        tile_image, tile_valid = cut_tile(image, valid, y, x, tile)
        stitcher.add(model(tile_image), y, x, tile_valid)
    return stitcher.result()


@settings(max_examples=150, deadline=None)
@given(st.integers(1, 150), st.integers(1, 150), st.integers(2, 48), st.data())
def test_stitching_the_tiles_of_a_scene_returns_the_scene(height, width, tile, data):
    overlap = data.draw(st.integers(0, tile - 1))
    window = data.draw(st.sampled_from(["gaussian", "pyramid"]))
    rng = np.random.default_rng(data.draw(st.integers(0, 2 ** 32 - 1)))
    probs = rng.random((1, height, width)).astype(np.float32)
    valid = rng.random((height, width)) > 0.1
    stitched, covered = stitch(probs, valid, tile, overlap, window)
    np.testing.assert_array_equal(covered, valid)
    # float32 rounding only: it grows with the number of tiles summed into a pixel (up to 47 x 47
    # when the overlap is one pixel short of the tile)
    per_pixel = math.ceil(tile / (tile - overlap)) ** 2
    rtol = max(1e-5, 2 * per_pixel * float(np.finfo(np.float32).eps))
    np.testing.assert_allclose(stitched[valid], probs[0][valid], rtol=rtol, atol=1e-6)
    assert (stitched[~valid] == 0).all()


def test_values_at_invalid_pixels_do_not_reach_the_result():
    probs = np.full((1, 40, 50), 0.25, dtype=np.float32)
    valid = np.ones((40, 50), dtype=bool)
    valid[10:20, 10:20] = False
    garbage = probs.copy()
    garbage[0][~valid] = 1e6
    stitched, covered = stitch(garbage, valid, 16, 6)
    np.testing.assert_allclose(stitched[covered], 0.25, rtol=1e-6)
    assert not covered[10:20, 10:20].any()


def test_tiled_prediction_matches_whole_scene_prediction_except_near_the_scene_border():
    """A fully convolutional model on overlapping tiles equals the model on the whole scene,
    because the blending weight of the tile edges, where context is missing, is tiny."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(2, 4, 3, padding=1), torch.nn.Tanh(),
                                torch.nn.Conv2d(4, 4, 3, padding=1), torch.nn.Tanh(),
                                torch.nn.Conv2d(4, 1, 3, padding=1), torch.nn.Sigmoid())
    radius = 3  # three 3x3 convolutions

    def predict(image: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return model(torch.from_numpy(np.ascontiguousarray(image))[None])[0, 0].numpy()

    rng = np.random.default_rng(1)
    scene = rng.normal(size=(2, 157, 131)).astype(np.float32)
    whole = predict(scene)
    tiled, covered = stitch(scene, np.ones(scene.shape[1:], dtype=bool), 64, 32, model=predict)
    assert covered.all()
    inner = (slice(radius, -radius), slice(radius, -radius))
    np.testing.assert_allclose(tiled[inner], whole[inner], atol=1e-3)
    assert np.abs(tiled - whole).max() > 1e-2  # the border band itself differs (reflect vs zero padding)


@pytest.mark.parametrize("kind", ["gaussian", "pyramid"])
def test_blend_window_is_highest_at_the_centre_and_positive_at_the_edges(kind):
    window = blend_window(32, kind)
    assert window.shape == (32, 32) and window.min() > 0
    assert window[16, 16] == window.max() > window[16, 8] > window[16, 0]
    np.testing.assert_array_equal(window, window.T)


def test_a_tile_of_the_wrong_size_or_outside_the_scene_is_refused():
    stitcher = Stitcher(50, 50, 16, 4)
    with pytest.raises(ValueError, match="tile"):
        stitcher.add(np.zeros((8, 8), dtype=np.float32), 0, 0)
    with pytest.raises(ValueError, match="outside"):
        stitcher.add(np.zeros((16, 16), dtype=np.float32), 50, 0)
