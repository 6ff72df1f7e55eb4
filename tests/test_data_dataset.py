"""The tile data set: reproducible windows and augmentations, validity, normalization, eval grid."""
from __future__ import annotations

import dataclasses
import itertools

import numpy as np
import pytest
import tifffile
import torch

from segtrain.config.schema import AugmentConfig, DataConfig
from segtrain.data.augment import Augmentation, apply_augmentation, draw_augmentation
from segtrain.data.batch_transform import geometry_code
from segtrain.data.dataset import TileDataset
from segtrain.data.layout import read_split
from segtrain.data.reader import SceneReader
from segtrain.data.stats import Stats, compute_stats
from segtrain.errors import UserError


@pytest.fixture(scope="module")
def stats(small_data_ro) -> Stats:
    return compute_stats(small_data_ro)


def config(root, **kwargs) -> DataConfig:
    return DataConfig(root=str(root), tile_size=64, overlap=16, tiles_per_epoch=12, num_workers=0, **kwargs)


def same_items(a: dict, b: dict) -> bool:
    return all(torch.equal(a[k], b[k]) if torch.is_tensor(a[k]) else a[k] == b[k] for k in a)


def coded_tile(size: int = 6) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A tile whose mask and validity are functions of the image's pixel codes."""
    code = np.arange(size * size).reshape(size, size)
    return np.stack([code, code + 1000]).astype(np.float32), (code % 2).astype(np.uint8), code % 3 != 0


@pytest.mark.parametrize("rot90,hflip,vflip", list(itertools.product(range(4), [False, True], [False, True])))
def test_augmentation_moves_image_mask_and_validity_together(rot90, hflip, vflip):
    image, mask, valid = apply_augmentation(Augmentation(rot90, hflip, vflip), *coded_tile())
    code = image[0].astype(int)
    np.testing.assert_array_equal(image[1], image[0] + 1000)
    np.testing.assert_array_equal(mask, code % 2)
    np.testing.assert_array_equal(valid, code % 3 != 0)


def test_augmentation_draws_cover_the_eight_flips_and_turns_and_respect_the_switches():
    image = coded_tile()[0]
    rng = np.random.default_rng(0)
    results = {apply_augmentation(draw_augmentation(rng, AugmentConfig(), 3), image, image[0], image[0])[0].tobytes()
               for _ in range(200)}
    assert len(results) == 8
    off = AugmentConfig(hflip=False, vflip=False, rot90=False, brightness=0.0)
    assert {draw_augmentation(rng, off, 3) for _ in range(50)} == {Augmentation()}
    gains = [draw_augmentation(rng, AugmentConfig(brightness=0.2), 3).brightness for _ in range(200)]
    assert 0.8 <= min(gains) < 0.9 and 1.1 < max(gains) <= 1.2


def test_items_are_normalized_tiles_with_mask_validity_and_place(small_data_ro, stats):
    item = TileDataset(config(small_data_ro), "train", training=True, seed=0, stats=stats)[0]
    assert item["image"].shape == (4, 64, 64) and item["image"].dtype == torch.float32
    assert item["mask"].shape == (1, 64, 64) and item["mask"].dtype == torch.float32
    assert item["valid"].shape == (1, 64, 64) and item["valid"].dtype == torch.bool
    assert set(item["mask"].unique().tolist()) <= {0.0, 1.0}
    assert (item["image"][:, ~item["valid"][0]] == 0).all()
    assert {"scene", "y", "x"} <= set(item)


def test_the_same_seed_and_epoch_give_the_same_tiles_and_another_epoch_other_tiles(small_data_ro, stats):
    a = TileDataset(config(small_data_ro), "train", training=True, seed=3, stats=stats)
    b = TileDataset(config(small_data_ro), "train", training=True, seed=3, stats=stats)
    assert all(same_items(a[i], b[i]) for i in range(len(a)))
    places = [(a[i]["scene"], a[i]["y"], a[i]["x"]) for i in range(len(a))]
    a.set_epoch(1)
    assert places != [(a[i]["scene"], a[i]["y"], a[i]["x"]) for i in range(len(a))]


def test_windows_and_augmentations_are_drawn_by_numpys_generator_seeded_with_seed_epoch_and_item(small_data_ro):
    cfg = config(small_data_ro, min_valid_fraction=0.0, normalize="none", augment=AugmentConfig(brightness=0.3))
    tiles = TileDataset(cfg, "train", training=True, seed=9, stats=None)
    tiles.set_epoch(3)
    batch = tiles.raw_batch(list(range(len(tiles))))
    areas = np.array([info.height * info.width for info in tiles.infos], dtype=np.float64)
    for i in range(len(tiles)):
        rng = np.random.default_rng([9, 3, i])
        scene = int(rng.choice(len(areas), p=areas / areas.sum()))
        info = tiles.infos[scene]
        y, x = (int(rng.integers(0, max(0, size - 64) + 1)) for size in (info.height, info.width))
        aug = draw_augmentation(rng, cfg.augment, len(tiles.band_indices))
        assert [int(batch[k][i]) for k in ("scene", "y", "x", "geometry")] == [scene, y, x, geometry_code(aug)]
        assert float(batch["gain"][i]) == np.float32(aug.brightness)


def test_a_resumed_run_gets_the_tiles_of_the_epoch_it_resumes_in(small_data_ro, stats):
    continuous = TileDataset(config(small_data_ro), "train", training=True, seed=5, stats=stats)
    for epoch in range(3):
        continuous.set_epoch(epoch)
        continuous[0]
    resumed = TileDataset(config(small_data_ro), "train", training=True, seed=5, stats=stats)
    resumed.set_epoch(2)
    assert all(same_items(continuous[i], resumed[i]) for i in (0, 7, 11))


def test_batches_are_identical_for_any_number_of_workers(small_data_ro, stats):
    ds = TileDataset(config(small_data_ro), "train", training=True, seed=1, stats=stats)
    ds.set_epoch(4)
    ds[0]  # open a reader in this process: workers must not share it

    def batches(workers: int) -> list[dict]:
        return list(torch.utils.data.DataLoader(ds, batch_size=4, num_workers=workers))

    for a, b in zip(batches(0), batches(2)):
        assert all(torch.equal(a[k], b[k]) for k in ("image", "mask", "valid", "scene", "y", "x"))


def test_random_training_tiles_have_at_least_the_minimum_valid_fraction(small_data_ro, stats):
    ds = TileDataset(config(small_data_ro, min_valid_fraction=0.6), "train", training=True, seed=0, stats=stats)
    assert min(ds[i]["valid"].float().mean().item() for i in range(len(ds))) >= 0.6


def test_grid_training_keeps_exactly_the_grid_tiles_passing_the_threshold(small_data_ro, stats):
    cfg = config(small_data_ro, sampling="grid", min_valid_fraction=0.5)
    ds = TileDataset(cfg, "train", training=True, seed=0, stats=stats)
    fractions = [ds[i]["valid"].float().mean().item() for i in range(len(ds))]
    assert min(fractions) >= 0.5
    kept = {(w.scene, w.y, w.x) for w in ds.grid}
    assert len(kept) == len(ds) < len(TileDataset(dataclasses.replace(cfg, min_valid_fraction=0.0), "train",
                                                  training=True, seed=0, stats=stats))


def test_evaluation_tiles_count_every_valid_pixel_exactly_once(small_data_ro, stats):
    ds = TileDataset(config(small_data_ro), "val", training=False, seed=0, stats=stats)
    counted = {}
    for i in range(len(ds)):
        item = ds[i]
        counted[item["scene"]] = counted.get(item["scene"], 0) + int(item["valid"].sum())
    for s, files in enumerate(read_split(small_data_ro, "val")):
        with SceneReader(files.scene) as reader:
            assert counted[s] == reader.read_valid(0, 0, reader.height, reader.width).sum()


def test_evaluation_is_not_augmented_and_set_epoch_changes_nothing(small_data_ro):
    ds = TileDataset(config(small_data_ro, normalize="none"), "val", training=False, seed=0, stats=None)
    first = ds[0]
    ds.set_epoch(7)
    assert same_items(first, ds[0])
    files = read_split(small_data_ro, "val")[first["scene"]]
    with SceneReader(files.scene) as reader:
        h, w = min(64, reader.height - first["y"]), min(64, reader.width - first["x"])
        image, valid, _ = reader.read(first["y"], first["x"], h, w)
    np.testing.assert_array_equal(first["image"][:, :h, :w].numpy(), image * valid)


def test_normalized_valid_pixels_have_zero_mean_and_unit_std_per_band(small_data_ro, stats):
    ds = TileDataset(config(small_data_ro, bands=[3, 1]), "train", training=False, seed=0, stats=stats)
    items = [ds[i] for i in range(len(ds))]
    values = torch.cat([it["image"][:, it["valid"][0]] for it in items], dim=1).double()
    np.testing.assert_allclose(values.mean(1).numpy(), [0, 0], atol=1e-3)
    np.testing.assert_allclose(values.std(1).numpy(), [1, 1], atol=1e-3)


def test_brightness_jitter_scales_the_raw_values_of_the_image_only(small_data_ro):
    still = AugmentConfig(hflip=False, vflip=False, rot90=False, brightness=0.0)
    base = config(small_data_ro, normalize="none", augment=still)
    plain = TileDataset(base, "train", training=True, seed=2, stats=None)[0]
    jittered = TileDataset(dataclasses.replace(base, augment=dataclasses.replace(still, brightness=0.3)), "train",
                           training=True, seed=2, stats=None)[0]
    assert torch.equal(plain["mask"], jittered["mask"]) and torch.equal(plain["valid"], jittered["valid"])
    valid = plain["valid"][0]
    ratio = (jittered["image"][:, valid] / plain["image"][:, valid]).numpy()
    assert ratio.std() < 1e-5 and 0.7 <= ratio.mean() <= 1.3 and abs(ratio.mean() - 1) > 1e-4


def test_float_scenes_with_nan_give_finite_images(tmp_path):
    for sub in ("scenes", "masks", "filelists"):
        (tmp_path / sub).mkdir()
    scene = np.random.default_rng(0).random((2, 40, 40)).astype(np.float32)
    scene[:, :10] = np.nan
    tifffile.imwrite(tmp_path / "scenes" / "a.tif", scene, photometric="minisblack", planarconfig="separate", metadata=None)
    tifffile.imwrite(tmp_path / "masks" / "a.tif", np.zeros((40, 40), dtype=np.uint8), metadata=None)
    (tmp_path / "filelists" / "val.csv").write_text("a.tif\n")
    item = TileDataset(DataConfig(root=str(tmp_path), tile_size=32, normalize="none"), "val", training=False,
                       seed=0, stats=None)[0]
    assert torch.isfinite(item["image"]).all() and not item["valid"][0, :10].any()


def test_stats_normalization_without_statistics_is_a_user_error_naming_the_key(small_data_ro):
    with pytest.raises(UserError, match="data.normalize"):
        TileDataset(config(small_data_ro), "train", training=True, seed=0, stats=None)


def test_statistics_of_another_band_count_are_refused(small_data_ro, stats):
    three = dataclasses.replace(stats, mean=stats.mean[:3], std=stats.std[:3])
    with pytest.raises(UserError, match="describe 3 bands"):
        TileDataset(config(small_data_ro), "train", training=True, seed=0, stats=three)
