"""The staging cache: a drop-in data root of memory-mappable copies, built once."""
from __future__ import annotations

import os
import shutil

import numpy as np
import pytest
import tifffile
import torch

from segtrain.cli import main
from segtrain.config.schema import AugmentConfig, DataConfig
from segtrain.data.cache import build_cache, stage_file
from segtrain.data.dataset import TileDataset
from segtrain.data.layout import read_split
from segtrain.data.reader import SceneReader
from segtrain.data.scene import GDAL_NODATA_TAG, read_info
from segtrain.data.stats import compute_stats, write_stats
from segtrain.errors import UserError
from segtrain.preflight import passed_pairs
from tests.conftest import REPO, age, corrupt_segment, tree_state


def test_the_cache_reads_exactly_like_the_source_and_is_memory_mapped(small_data_ro, tmp_path):
    cached = build_cache(DataConfig(root=str(small_data_ro)), tmp_path / "cache")
    for split in ("train", "val", "test"):
        for src, dst in zip(read_split(small_data_ro, split), read_split(cached, split), strict=True):
            with SceneReader(src.scene, src.mask) as a, SceneReader(dst.scene, dst.mask) as b:
                assert b.memory_mapped
                for x, y in zip(a.read(0, 0, a.height, a.width), b.read(0, 0, b.height, b.width)):
                    np.testing.assert_array_equal(x, y)


def test_a_second_build_writes_nothing(small_data_ro, tmp_path):
    cfg = DataConfig(root=str(small_data_ro))
    build_cache(cfg, tmp_path / "cache")
    before = tree_state(tmp_path / "cache")
    build_cache(cfg, tmp_path / "cache")
    assert tree_state(tmp_path / "cache") == before


def test_a_changed_scene_is_staged_again(small_data, tmp_path):
    cfg = DataConfig(root=str(small_data))
    build_cache(cfg, tmp_path / "cache")
    files = read_split(small_data, "train")[0]
    info = read_info(files.scene)
    tifffile.imwrite(files.scene, np.full((info.height, info.width), 3, dtype=np.uint16), metadata=None)
    build_cache(cfg, tmp_path / "cache")
    with SceneReader(tmp_path / "cache" / "scenes" / files.name) as reader:
        assert reader.bands == 1 and (reader.read(0, 0, 2, 2)[0] == 3).all()
    labels = sorted(p.name for p in (tmp_path / "cache" / "labels").glob(f"{files.name}.*"))
    assert len(labels) == 1 and str(os.stat(files.scene).st_mtime_ns) in labels[0]  # the new version's only


def test_the_nodata_tag_and_the_stats_file_come_along(small_data, tmp_path):
    write_stats(compute_stats(small_data), small_data / "stats.json")
    cached = build_cache(DataConfig(root=str(small_data)), tmp_path / "cache")
    assert (cached / "stats.json").read_bytes() == (small_data / "stats.json").read_bytes()
    src = tmp_path / "float.tif"
    tifffile.imwrite(src, np.full((3, 5, 4), -9999.5, dtype=np.float32), photometric="minisblack",
                     planarconfig="separate", metadata=None, extratags=[(GDAL_NODATA_TAG, "s", 0, "-9999.5", True)])
    assert stage_file(src, tmp_path / "out" / "float.tif")
    assert read_info(tmp_path / "out" / "float.tif").nodata == -9999.5
    assert not stage_file(src, tmp_path / "out" / "float.tif")  # current: skipped
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["float.tif"]  # no temporary files left


def test_the_cache_must_not_replace_the_source(small_data_ro):
    with pytest.raises(UserError, match="must differ"):
        build_cache(DataConfig(root=str(small_data_ro)), small_data_ro)


def test_cache_command_prints_a_root_that_passes_the_check(small_data_ro, tmp_path, capsys):
    config = tmp_path / "c.yaml"
    config.write_text(f"extends: {REPO / 'configs' / 'demo.yaml'}\ndata: {{root: {small_data_ro}}}\n")
    assert main(["cache", str(config), str(tmp_path / "cache"), "data.tile_size=64"]) == 0
    root = capsys.readouterr().out.strip()
    assert os.path.samefile(root, tmp_path / "cache")
    assert main(["check", str(config), f"data.root={root}"]) == 0


def test_a_tile_that_does_not_decode_stops_the_cache_naming_it_and_leaves_no_partial_file(small_data, tmp_path, capsys):
    scene = small_data / "scenes" / "scene_000.tif"  # a train scene in 64 px deflate tiles
    corrupt_segment(scene, 1)  # as if the check's sample of a large file had missed it
    with pytest.raises(UserError, match=r"scene_000\.tif: corrupt TIFF: tile 1 \(rows 0-63, cols 64-127\) does not "
                                        r"decode .*the staging cache needs every tile"):
        build_cache(DataConfig(root=str(small_data)), tmp_path / "cache")
    assert not [p for p in (tmp_path / "cache").rglob("*") if "scene_000" in p.name]


def test_cache_files_are_as_readable_as_any_new_file_so_a_group_can_share_the_cache(small_data_ro, tmp_path):
    old = os.umask(0o022)
    try:
        cached = build_cache(DataConfig(root=str(small_data_ro)), tmp_path / "cache")
    finally:
        os.umask(old)
    files = [p for p in cached.rglob("*") if p.is_file()]
    assert files and {p.stat().st_mode & 0o777 for p in files} == {0o644}


def test_the_cache_of_a_checked_data_set_is_not_checked_again(small_data, tmp_path, capsys):
    age(small_data)
    config = tmp_path / "c.yaml"
    config.write_text(f"extends: {REPO / 'configs' / 'demo.yaml'}\ndata: {{root: {small_data}}}\n")
    assert main(["check", str(config)]) == 0
    cached = build_cache(DataConfig(root=str(small_data)), tmp_path / "cache")
    names = [f.name for split in ("train", "val", "test") for f in read_split(cached, split)]
    assert sorted(passed_pairs(cached)) == sorted(names)
    assert main(["check", str(config), f"data.root={cached}"]) == 0


def batches_of(root, split: str, **data) -> dict:
    """Raw batches of a split (training: random windows with redraws and augmentations)."""
    cfg = DataConfig(root=str(root), tile_size=64, tiles_per_epoch=12, min_valid_fraction=0.6, num_workers=0,
                     normalize="none", augment=AugmentConfig(brightness=0.2), **data)
    tiles = TileDataset(cfg, split, training=split == "train", seed=4, stats=None)
    tiles.set_epoch(2)
    return tiles.raw_batch(list(range(min(len(tiles), 12))))


def same_batches(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_tiles_from_the_cache_and_its_labels_are_those_of_the_source(small_data_ro, tmp_path):
    cached = build_cache(DataConfig(root=str(small_data_ro)), tmp_path / "cache")
    names = {f.name for split in ("train", "val", "test") for f in read_split(small_data_ro, split)}
    assert {p.name.split(".tif.")[0] + ".tif" for p in (cached / "labels").iterdir()} == names
    for split in ("train", "val"):
        assert same_batches(batches_of(cached, split), batches_of(small_data_ro, split))
        # labels mean all bands with the files' own no-data value: otherwise validity is computed
        for data in ({"bands": [2, 0]}, {"nodata": 3.0}):
            assert same_batches(batches_of(cached, split, **data), batches_of(small_data_ro, split, **data))
    for labels in (cached / "labels").iterdir():  # they are what is read: blank them, and nothing is valid
        np.lib.format.open_memmap(labels, mode="r+")[:] = 0
    assert not batches_of(cached, "train")["valid"].any()


def test_a_cache_built_without_labels_reads_the_same_and_gets_them_at_its_next_build(small_data_ro, tmp_path):
    cfg = DataConfig(root=str(small_data_ro))
    cached = build_cache(cfg, tmp_path / "cache")
    shutil.rmtree(cached / "labels")  # the layout of an older version
    assert same_batches(batches_of(cached, "train"), batches_of(small_data_ro, "train"))
    build_cache(cfg, cached)
    assert len(list((cached / "labels").iterdir())) == len(list((cached / "scenes").iterdir()))
