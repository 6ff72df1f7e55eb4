"""The batch transform: raw tiles to network input, bit-identical on every device and to the
per-tile numpy pipeline it replaced, and the same whatever delivers the raw batches."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from segtrain.config.schema import AugmentConfig, DataConfig
from segtrain.data.augment import apply_augmentation
from segtrain.data.batch_transform import TileTransform, geometry_of
from segtrain.data.dataset import TileDataset, raw_loader
from segtrain.data.normalization import Normalization
from segtrain.data.stats import Stats, compute_stats
from segtrain.train.prefetch import DeviceBatches

CODES = list(range(16))


@pytest.fixture(scope="module")
def stats(small_data_ro) -> Stats:
    return compute_stats(small_data_ro)


def random_batch(dtype: torch.dtype = torch.uint16, tile: int = 24, bands: int = 3) -> dict[str, torch.Tensor]:
    """Every geometry code once, random raw values, validity, mask and gains."""
    g = torch.Generator().manual_seed(0)
    n = len(CODES)
    raw = torch.randint(0, 40000, (n, bands, tile, tile), generator=g)
    raw = raw.to(torch.float32).sub_(20000).mul_(0.37) if dtype.is_floating_point else raw
    raw = raw.to(dtype)
    if dtype.is_floating_point:
        raw[0, :, :4] = float("nan")
    return {"raw": raw, "valid": torch.rand(n, tile, tile, generator=g) > 0.2,
            "mask": (torch.rand(n, tile, tile, generator=g) > 0.5).to(torch.uint8),
            "geometry": torch.tensor(CODES), "gain": 0.8 + 0.4 * torch.rand(n, generator=g)}


def numpy_reference(batch: dict, norm) -> dict[str, np.ndarray]:
    """The per-tile pipeline the transform replaced: flip and turn (views), then one float32 pass."""
    images, masks, valids = [], [], []
    for b, code in enumerate(batch["geometry"].tolist()):
        raw, mask, valid = apply_augmentation(geometry_of(code), batch["raw"][b].numpy(), batch["mask"][b].numpy(),
                                              batch["valid"][b].numpy())
        gain = np.float32(batch["gain"][b].item())
        scale = gain if norm is None else norm.scale[:, None, None] * gain
        out = np.multiply(raw, scale, dtype=np.float32, order="C", casting="unsafe")
        if norm is not None:
            out -= norm.shift[:, None, None]
        out *= valid.astype(np.float32)
        images.append(np.nan_to_num(out))
        masks.append(mask[None].astype(np.float32))
        valids.append(valid[None])
    return {"image": np.stack(images), "mask": np.stack(masks), "valid": np.stack(valids)}


def assert_same_bits(got: dict[str, torch.Tensor], expected: dict[str, np.ndarray]) -> None:
    for key, value in expected.items():
        assert got[key].dtype == torch.from_numpy(value).dtype, key
        # bytes, not values: -0.0 and 0.0 (or two NaNs) must match too
        assert got[key].cpu().contiguous().numpy().tobytes() == np.ascontiguousarray(value).tobytes(), key


NORMS = {"stats": Normalization(np.array([0.01, 0.02, 0.003], np.float32), np.array([1.5, -0.25, 3.0], np.float32)),
         "none": None}


@pytest.mark.parametrize("dtype", [torch.uint16, torch.int16, torch.uint8, torch.float32])
@pytest.mark.parametrize("norm", NORMS)
def test_the_transform_equals_the_per_tile_numpy_pipeline_bit_for_bit(dtype, norm):
    batch = random_batch(dtype)
    got = TileTransform(NORMS[norm], 24, augmented=True)(batch)
    assert_same_bits(got, numpy_reference(batch, NORMS[norm]))
    assert torch.isfinite(got["image"]).all()


def test_the_gpu_way_of_flipping_gives_the_cpu_way_s_bits():
    """The gather a GPU runs, here on the CPU (CI has no GPU)."""
    batch = random_batch()
    transform = TileTransform(NORMS["stats"], 24, augmented=True)
    assert_same_bits(transform(batch, gather=True), {k: v.numpy() for k, v in transform(batch).items()})


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_on_cuda_the_transform_gives_the_cpu_s_bits():
    for dtype in (torch.uint16, torch.float32):
        batch = random_batch(dtype)
        transform = TileTransform(NORMS["stats"], 24, augmented=True)
        expected = transform(batch)
        got = transform({k: v.cuda() for k, v in batch.items()})
        assert got["image"].is_cuda
        assert_same_bits(got, {k: v.numpy() for k, v in expected.items()})


def test_raw_batches_finished_by_the_transform_are_the_data_set_s_tiles_for_any_workers(small_data_ro, stats):
    cfg = DataConfig(root=str(small_data_ro), tile_size=64, overlap=16, tiles_per_epoch=12, num_workers=0,
                     augment=AugmentConfig(brightness=0.2))
    tiles = TileDataset(cfg, "train", training=True, seed=4, stats=stats)
    tiles.set_epoch(2)
    expected = [tiles[i] for i in range(len(tiles))]
    assert len({int(tiles.raw_batch([i])["geometry"]) for i in range(len(tiles))}) > 2, "several flips and turns"
    for workers in (0, 2):
        finished = []
        for batch in raw_loader(tiles, 4, num_workers=workers):
            assert batch["raw"].dtype == torch.uint16 and batch["valid"].dtype == torch.bool
            done = tiles.transform(batch)
            finished += [{**{k: v[b] for k, v in done.items()}, **{k: int(batch[k][b]) for k in ("scene", "y", "x")}}
                         for b in range(len(batch["raw"]))]
        for a, b in zip(finished, expected, strict=True):
            assert all(torch.equal(a[k], b[k]) if torch.is_tensor(a[k]) else a[k] == b[k] for k in b)


def test_batches_finished_in_the_workers_are_those_finished_on_the_training_device(small_data_ro, stats):
    cfg = DataConfig(root=str(small_data_ro), tile_size=64, tiles_per_epoch=12, num_workers=0,
                     augment=AugmentConfig(brightness=0.2))
    tiles = TileDataset(cfg, "train", training=True, seed=4, stats=stats)
    tiles.set_epoch(1)
    cpu = torch.device("cpu")
    on_device = list(DeviceBatches(raw_loader(tiles, 4), tiles.transform, cpu))
    for workers in (0, 2):
        in_workers = list(DeviceBatches(raw_loader(tiles, 4, finished=True, num_workers=workers), tiles.transform, cpu))
        for a, b in zip(in_workers, on_device, strict=True):
            assert a.keys() == b.keys() == {"image", "mask", "valid", "scene", "y", "x"}
            assert all(torch.equal(a[k], b[k]) for k in a)


def test_evaluation_tiles_are_never_turned(small_data_ro, stats):
    cfg = DataConfig(root=str(small_data_ro), tile_size=64, num_workers=0)
    tiles = TileDataset(cfg, "val", training=False, seed=0, stats=stats)
    assert not tiles.transform.augmented
    batch = tiles.raw_batch(range(len(tiles)))
    assert batch["geometry"].eq(0).all() and batch["gain"].eq(1).all()
    off = dataclasses.replace(cfg, augment=AugmentConfig(hflip=False, vflip=False, rot90=False))
    assert not TileDataset(off, "train", training=True, seed=0, stats=stats).transform.augmented


def test_band_dropout_zeroes_whole_bands_drawn_from_the_tile_s_seed(small_data_ro, stats):
    base = DataConfig(root=str(small_data_ro), tile_size=32, tiles_per_epoch=64, num_workers=0)
    plain = TileDataset(base, "train", training=True, seed=3, stats=stats)
    dropping = TileDataset(dataclasses.replace(base, augment=AugmentConfig(band_dropout=0.4)), "train", training=True,
                           seed=3, stats=stats)
    for tiles in (plain, dropping):
        tiles.set_epoch(1)
    batch = dropping.raw_batch(range(64))
    keep = batch["keep"]
    assert "keep" not in plain.raw_batch([0]), "no band dropout: batches as before"
    assert keep.shape == (64, 4)
    assert (keep.sum(dim=1) >= 1).all(), "never every band of a tile"
    assert 0.3 < 1 - keep.mean().item() < 0.5
    for i in range(64):
        with_drop, without = dropping[i], plain[i]
        assert torch.equal(with_drop["mask"], without["mask"]), "same window and flips: the draws come after them"
        for band in range(4):
            expected = without["image"][band] * keep[i, band]
            assert torch.equal(with_drop["image"][band], expected)
    again = TileDataset(dropping.cfg, "train", training=True, seed=3, stats=stats)
    again.set_epoch(1)
    assert torch.equal(again.raw_batch(range(64))["keep"], keep), "the same (seed, epoch, tile), the same bands"
    again.set_epoch(2)
    assert not torch.equal(again.raw_batch(range(64))["keep"], keep)
