"""How much of a pair the check decodes: small files whole, large ones by structure and a sample;
the full decode (in the job's staging) names every corrupt segment and refuses a mask that is not binary."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile

from segtrain.data import integrity
from segtrain.data.integrity import check_pair, verify_pair
from segtrain.data.layout import SceneFiles
from segtrain.errors import UserError
from conftest import corrupt_segment

SIDE, TILE = 256, 64  # 16 tiles per band


def write_pair(root: Path, mask: np.ndarray | None = None) -> SceneFiles:
    """A deflate-tiled 4-band scene whose tile 0 (top left) holds the most bytes, and a tiled mask."""
    rng = np.random.default_rng(0)
    scene = rng.integers(0, 16, (SIDE, SIDE, 4), dtype=np.uint16)
    scene[:TILE, :TILE] = rng.integers(0, 60000, (TILE, TILE, 4), dtype=np.uint16)  # incompressible: the largest
    if mask is None:
        mask = (rng.random((SIDE, SIDE)) < 0.5).astype(np.uint8)
    files = SceneFiles("a.tif", root / "scenes" / "a.tif", root / "masks" / "a.tif")
    for path, array, planes in ((files.scene, scene, "contig"), (files.mask, mask, None)):
        path.parent.mkdir(parents=True, exist_ok=True)
        tifffile.imwrite(path, array, photometric="minisblack", planarconfig=planes, tile=(TILE, TILE),
                         compression="zlib", metadata=None)
    return files


@pytest.fixture
def large(monkeypatch):
    """Files of this test's size count as large: checked by structure and a sample."""
    monkeypatch.setattr(integrity, "FULL_DECODE_VALUES", SIDE * SIDE // 2)
    monkeypatch.setattr(integrity, "SAMPLE_MASK", 2)


def test_a_small_pair_is_decoded_whole_and_any_corrupt_tile_refused(tmp_path):
    files = write_pair(tmp_path)
    assert check_pair(files)[1] is True
    corrupt_segment(files.scene, 5)
    with pytest.raises(UserError, match=r"a\.tif: corrupt TIFF: tile 5 \(rows 64-127, cols 64-127\) does not decode"):
        check_pair(files)


def test_a_large_pair_passes_on_its_structure_and_sample_and_is_not_remembered_as_decoded(tmp_path, large):
    files = write_pair(tmp_path)
    corrupt_segment(files.scene, 5)  # neither the first, the last nor the largest tile
    info, decoded = check_pair(files)
    assert (info.height, info.width, info.bands, decoded) == (SIDE, SIDE, 4, False)
    found = verify_pair(files)  # the job's full decode finds it
    assert [(c.path, c.index) for c in found] == [(files.scene, 5)]
    assert "tile 5 (rows 64-127, cols 64-127)" in str(found[0])


def test_the_largest_segment_of_a_large_scene_is_decoded_at_the_check(tmp_path, large):
    files = write_pair(tmp_path)
    corrupt_segment(files.scene, 0)
    with pytest.raises(UserError, match="tile 0 .* does not decode"):
        check_pair(files)


def test_a_large_mask_is_refused_when_its_largest_tiles_are_not_binary(tmp_path, large):
    mask = np.zeros((SIDE, SIDE), np.uint8)
    mask[TILE:2 * TILE, :TILE] = np.arange(TILE * TILE).reshape(TILE, TILE) % 3  # values 0, 1, 2 in one busy tile
    files = write_pair(tmp_path, mask)
    with pytest.raises(UserError, match=r"masks/a\.tif: mask is not binary: values 0, 1, 2"):
        check_pair(files)


def test_the_full_decode_refuses_a_mask_that_mixes_0_1_and_0_255_tiles(tmp_path, large):
    rng = np.random.default_rng(1)
    mask = (rng.random((SIDE, SIDE)) < 0.5).astype(np.uint8)
    mask[-TILE:, -TILE:] *= 255  # the last tile 0/255, the others 0/1: each tile binary, the mask not
    files = write_pair(tmp_path, mask)
    with pytest.raises(UserError, match="mask is not binary: values 0, 1, 255"):
        verify_pair(files, workers=2)


def test_an_uncompressed_scene_has_nothing_to_decode_and_its_mask_is_read_whole(tmp_path):
    files = write_pair(tmp_path)
    tifffile.imwrite(files.scene, np.ones((4, SIDE, SIDE), np.uint16), photometric="minisblack", metadata=None)
    assert check_pair(files)[1] is True
    tifffile.imwrite(files.mask, np.full((SIDE, SIDE), 3, np.uint8), photometric="minisblack", metadata=None)
    with pytest.raises(UserError, match="values 0, 3|values 3"):
        verify_pair(files)


def test_staging_decodes_each_pair_beside_the_copy_and_names_its_corrupt_tiles(tmp_path, large):
    from segtrain.cluster.job.stage import stage_dataset
    from segtrain.data.staged_decode import StagedDecode

    files = write_pair(tmp_path / "storage")
    corrupt_segment(files.scene, 5)
    check_pair(files)  # the frontend's check passes: tile 5 is not in its sample
    with StagedDecode(workers=2) as decode:
        report = stage_dataset(tmp_path / "storage", tmp_path / "scratch", staged=decode.staged)
        found = decode.corrupt()
    assert report.ok and decode.pairs == 1
    assert [(c.path, c.index) for c in found] == [(tmp_path / "scratch" / "scenes" / "a.tif", 5)]
    with StagedDecode(skip={"a.tif"}) as decode:  # decoded whole by the check: not again
        stage_dataset(tmp_path / "storage", tmp_path / "scratch2", staged=decode.staged)
        assert decode.pairs == 0 and decode.corrupt() == []


def test_staging_stops_on_a_mask_that_is_not_binary(tmp_path, large):
    from segtrain.cluster.job.stage import stage_dataset
    from segtrain.data.staged_decode import StagedDecode

    mask = np.zeros((SIDE, SIDE), np.uint8)
    mask[0, 0] = 7  # in a tile with few bytes: outside the check's sample
    mask[TILE:, TILE:] = np.random.default_rng(2).random((SIDE - TILE, SIDE - TILE)) < 0.5
    check_pair(write_pair(tmp_path / "storage", mask))  # passes: the busiest tiles are binary
    with StagedDecode() as decode:
        stage_dataset(tmp_path / "storage", tmp_path / "scratch", staged=decode.staged)
        with pytest.raises(UserError, match="mask is not binary: values 0, 1, 7"):
            decode.corrupt()
