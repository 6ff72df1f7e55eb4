"""`segtrain predict`: whole scenes of any size, tiled, batched and stitched, in bounded memory.

What stitching guarantees (docs/guide/predictions.md, "What stitching guarantees"): each pixel's probability is a weighted
mean of the predictions of the tiles covering it, so it lies within their range, and a model
without spatial context gives exactly what it gives on the whole scene at once. How far a real
model's stitched map is from its one-piece run depends on the model (its receptive field, how
well it is trained): the 0.01 mean / 0.1 99th-percentile check below is a regression check of
the test model only (48 px tiles, 8 px overlap), not a bound for other models.
"""
from __future__ import annotations

import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import tifffile

from conftest import bands_first, tree_state
from segtrain.cli import main
from segtrain.data.layout import read_split
from segtrain.data.reader import SceneReader
from segtrain.data.stitching import Stitcher
from segtrain.data.tiling import axis_origins, tile_origins
from segtrain.export import ModelMeta
from segtrain.predict import (MASK_NODATA, OnnxBackend, PredictOptions, StripReader, StripStitcher, Tile, TiledTiffWriter,
                              TorchBackend, open_scene, predict_scene, predict_strips)

GEO = [(33550, 12, 3, (10.0, 10.0, 0.0), True), (33922, 12, 6, (0.0, 0.0, 0.0, 500000.0, 5500000.0, 0.0), True),
       (34735, 3, 16, (1, 1, 0, 3, 1024, 0, 1, 1, 1025, 0, 1, 1, 3072, 0, 1, 32633), True)]


def split_scenes(data: Path) -> list[Path]:
    return [f.scene for f in read_split(data, "test")]


def stitched(reader: SceneReader, backend, tile: int, overlap: int, batch: int = 8) -> tuple[np.ndarray, np.ndarray]:
    strips = list(predict_strips(reader, backend, tile, overlap, batch))
    return np.concatenate([s.probs for s in strips]), np.concatenate([s.covered for s in strips])


def write_scene(path: Path, image: np.ndarray, **kwargs) -> Path:
    tifffile.imwrite(path, image, photometric="minisblack", planarconfig="separate", metadata=None, **kwargs)
    return path


def predict_cli(capsys, *args: str) -> tuple[int, str]:
    code = main(["predict", *map(str, args), "--quiet"])
    return code, capsys.readouterr().err


# ---- stitching strip by strip ------------------------------------------------------------------
@pytest.mark.parametrize("height, width, tile, overlap", [
    (200, 170, 48, 8), (131, 77, 32, 24), (30, 100, 48, 16), (97, 64, 64, 0), (257, 40, 40, 39)])
def test_strip_stitching_is_bit_identical_to_stitching_the_whole_scene(height, width, tile, overlap):
    rng = np.random.default_rng(height)
    valid = rng.random((height, width)) > 0.2
    whole = Stitcher(height, width, tile, overlap)
    rows: dict[int, list[Tile]] = {}
    for y, x in tile_origins(height, width, tile, overlap):
        prob = rng.random((tile, tile), dtype=np.float32)
        tile_valid = np.zeros((tile, tile), bool)
        tile_valid[:min(tile, height - y), :min(tile, width - x)] = valid[y:y + tile, x:x + tile]
        whole.add(prob, y, x, tile_valid)
        rows.setdefault(y, []).append(Tile(x, None, tile_valid, prob))
    strips = StripStitcher(height, width, tile, overlap)
    parts = [strips.add_row(rows[y]) for y in strips.ys]
    expected_probs, expected_covered = whole.result()
    assert [p.y for p in parts] == strips.ys
    np.testing.assert_array_equal(np.concatenate([p.probs for p in parts]), expected_probs)
    np.testing.assert_array_equal(np.concatenate([p.covered for p in parts]), expected_covered)


# ---- what the model does with a whole scene ------------------------------------------------------
def test_stitched_prediction_matches_the_model_run_on_the_whole_scene_in_one_piece(run_dir, small_data_ro):
    backend = TorchBackend(run_dir, device="cpu")
    for scene in split_scenes(small_data_ro):
        with open_scene(scene, backend.meta) as reader:
            probs, covered = stitched(reader, backend, backend.meta.tile_size, backend.meta.overlap)
            image, valid, _ = reader.read(0, 0, reader.height, reader.width)
        one_piece = backend(np.where(valid, image, np.float32(np.nan))[None])[0]
        diff = np.abs(probs - one_piece)[valid]
        assert np.array_equal(covered, valid)
        assert diff.mean() <= 0.01 and np.percentile(diff, 99) <= 0.1, (scene.name, diff.mean(), np.percentile(diff, 99))


class TileConstantModel:
    """Each tile gets one value of its own (remembered with the tile's first pixel), whatever its pixels."""
    meta = ModelMeta(bands=[0], scene_bands=1, tile_size=32, overlap=12, threshold=0.5, nodata=None)
    name = "tile constant"

    def __init__(self):
        self.rng, self.values = np.random.default_rng(0), []

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        values = self.rng.random(len(batch)).astype(np.float32)
        self.values += [(float(tile[0, 0, 0]), v) for tile, v in zip(batch, values)]
        return np.broadcast_to(values[:, None, None], (len(batch), 32, 32)).astype(np.float32)


def test_a_stitched_pixel_lies_within_the_predictions_of_the_tiles_covering_it(tmp_path):
    image = np.arange(100 * 90, dtype=np.float32).reshape(1, 100, 90) + 1  # a tile's first pixel names it
    scene = tmp_path / "s.tif"
    tifffile.imwrite(scene, image[0], photometric="minisblack", metadata=None)
    model = TileConstantModel()
    with open_scene(scene, model.meta) as reader:
        probs, covered = stitched(reader, model, 32, 12)
    value = dict(model.values)
    low, high = np.full((100, 90), np.inf), np.full((100, 90), -np.inf)
    for y, x in tile_origins(100, 90, 32, 12):
        v = value[float(image[0, y, x])]
        low[y:y + 32, x:x + 32] = np.minimum(low[y:y + 32, x:x + 32], v)
        high[y:y + 32, x:x + 32] = np.maximum(high[y:y + 32, x:x + 32], v)
    assert covered.all() and (probs >= low - 1e-6).all() and (probs <= high + 1e-6).all()


def test_a_model_without_spatial_context_gives_its_whole_scene_prediction_exactly(tmp_path):
    image = (np.random.default_rng(2).random((1, 150, 130)) * 1000).astype(np.float32)
    image[0, :20, :30] = np.nan  # no-data stays no-data
    scene = tmp_path / "s.tif"
    tifffile.imwrite(scene, image[0], photometric="minisblack", metadata=None)
    model = BrightnessModel()
    with open_scene(scene, model.meta) as reader:
        probs, covered = stitched(reader, model, 64, 16)
        raw, valid, _ = reader.read(0, 0, reader.height, reader.width)
    np.testing.assert_array_equal(covered, valid)
    np.testing.assert_allclose(probs[valid], model(raw[None])[0][valid], rtol=0, atol=1e-6)


def test_onnx_and_pytorch_backends_give_the_same_whole_scene_probabilities(run_dir, onnx_path, small_data_ro):
    torch_backend, onnx_backend = TorchBackend(run_dir, device="cpu"), OnnxBackend(onnx_path, device="cpu")
    assert onnx_backend.meta == torch_backend.meta
    for scene in split_scenes(small_data_ro):
        with open_scene(scene, torch_backend.meta) as reader:
            expected, _ = stitched(reader, torch_backend, 48, 8)
            got, _ = stitched(reader, onnx_backend, 48, 8, batch=5)
        np.testing.assert_allclose(got, expected, atol=1e-4)


def test_batch_size_does_not_change_the_prediction(onnx_path, small_data_ro):
    backend = OnnxBackend(onnx_path, device="cpu")
    scene = split_scenes(small_data_ro)[0]
    with open_scene(scene, backend.meta) as reader:
        one, _ = stitched(reader, backend, 48, 8, batch=1)
        many, _ = stitched(reader, backend, 48, 8, batch=7)
    np.testing.assert_allclose(one, many, atol=1e-6)


# ---- outputs -------------------------------------------------------------------------------------
def test_mask_is_uint8_with_255_exactly_on_the_scenes_nodata(capsys, onnx_path, small_data_ro, tmp_path):
    out = tmp_path / "out"
    scenes = split_scenes(small_data_ro)
    code, err = predict_cli(capsys, onnx_path, *scenes, "--out", out, "--prob")
    assert code == 0, err
    nodata_seen = False
    for scene in scenes:
        with SceneReader(scene) as reader:
            _, valid, _ = reader.read(0, 0, reader.height, reader.width)
        with tifffile.TiffFile(out / f"{scene.stem}_mask.tif") as tif:
            mask = tif.asarray()
            assert tif.pages[0].tags[42113].value == "255"
        prob = tifffile.imread(out / f"{scene.stem}_prob.tif")
        assert mask.dtype == np.uint8 and prob.dtype == np.float32 and mask.shape == valid.shape
        np.testing.assert_array_equal(mask == MASK_NODATA, ~valid)
        np.testing.assert_array_equal(np.isnan(prob), ~valid)
        threshold = OnnxBackend(onnx_path).meta.threshold  # the run's calibrated threshold
        np.testing.assert_array_equal(mask[valid], (prob[valid] > threshold).astype(np.uint8))
        nodata_seen |= bool((~valid).any())
    assert nodata_seen, "the test split should have a scene with a no-data area"


def test_run_directory_predicts_with_pytorch_like_the_onnx_model(capsys, run_dir, onnx_path, small_data_ro, tmp_path):
    scene = split_scenes(small_data_ro)[0]
    assert predict_cli(capsys, run_dir, scene, "--out", tmp_path / "torch", "--device", "cpu")[0] == 0
    assert predict_cli(capsys, onnx_path, scene, "--out", tmp_path / "onnx")[0] == 0
    torch_mask = tifffile.imread(tmp_path / "torch" / f"{scene.stem}_mask.tif")
    onnx_mask = tifffile.imread(tmp_path / "onnx" / f"{scene.stem}_mask.tif")
    assert np.mean(torch_mask != onnx_mask) < 1e-3


def test_scenes_smaller_than_a_tile_and_not_square_are_predicted_whole(onnx_path, small_data_ro, tmp_path):
    image = bands_first(split_scenes(small_data_ro)[0])
    small = write_scene(tmp_path / "small.tif", np.ascontiguousarray(image[:, 5:35, 10:81]))
    result = predict_scene(small, OnnxBackend(onnx_path), tmp_path / "out", PredictOptions(progress=False))
    mask = tifffile.imread(result.mask)
    assert mask.shape == (30, 71) and set(np.unique(mask)) <= {0, 1}


def test_outputs_carry_the_scenes_georeferencing(onnx_path, small_data_ro, tmp_path):
    scene = write_scene(tmp_path / "geo.tif", bands_first(split_scenes(small_data_ro)[0]), extratags=GEO)
    result = predict_scene(scene, OnnxBackend(onnx_path), tmp_path / "out", PredictOptions(write_prob=True, progress=False))
    for path in (result.mask, result.prob):
        with tifffile.TiffFile(path) as tif:
            tags = tif.pages[0].tags
            assert [tags[code].value for code, *_ in GEO] == [value for _, _, _, value, _ in GEO]


def test_cog_option_writes_cloud_optimized_outputs_with_overviews_that_gdal_reads(capsys, onnx_path, small_data_ro,
                                                                                  tmp_path):
    """Without --cog the outputs are tiled but have no overviews (rio-cogeo warns on a scene over 512 px)."""
    rasterio = pytest.importorskip("rasterio")
    cog_validate = pytest.importorskip("rio_cogeo.cogeo").cog_validate
    image = bands_first(split_scenes(small_data_ro)[0])
    scene = write_scene(tmp_path / "big.tif", np.ascontiguousarray(np.tile(image, (1, 4, 4))[:, :600, :530]),
                        extratags=GEO)
    assert predict_cli(capsys, onnx_path, scene, "--out", tmp_path / "plain", "--prob")[0] == 0
    code, err = predict_cli(capsys, onnx_path, scene, "--out", tmp_path / "cog", "--prob", "--cog")
    assert code == 0, err
    for name in ("big_mask.tif", "big_prob.tif"):
        assert cog_validate(str(tmp_path / "cog" / name), quiet=True) == (True, [], [])
        valid, errors, warnings = cog_validate(str(tmp_path / "plain" / name), quiet=True)
        assert not errors and warnings == ["The file is greater than 512xH or 512xW, it is recommended to include "
                                           "internal overviews"]
        with rasterio.open(tmp_path / "cog" / name) as cog, rasterio.open(tmp_path / "plain" / name) as plain:
            assert cog.overviews(1) == [2, 4] and plain.overviews(1) == []
            assert cog.crs == plain.crs and cog.crs.to_epsg() == 32633 and cog.transform == plain.transform
            np.testing.assert_array_equal(cog.read(), plain.read())


# ---- bounded memory ------------------------------------------------------------------------------
class BrightnessModel:
    """A model that needs no training: the probability rises with band 0 (no-data: 0)."""
    meta = ModelMeta(bands=[0], scene_bands=1, tile_size=64, overlap=16, threshold=0.5, nodata=None)
    name = "brightness"

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        return np.nan_to_num(1 / (1 + np.exp(-(batch[:, 0] - 500) / 100)), nan=0.0).astype(np.float32)


def test_memory_stays_below_one_scene_sized_array_however_tall_the_scene(tmp_path):
    height, width = 12000, 256
    scene = tmp_path / "tall.tif"
    rows = np.arange(height, dtype=np.uint16)[:, None] % 1000 + 1
    tifffile.imwrite(scene, np.broadcast_to(rows, (height, width)), photometric="minisblack", metadata=None,
                     tile=(64, 64), compression="zlib")
    tracemalloc.start()
    try:
        result = predict_scene(scene, BrightnessModel(), tmp_path / "out", PredictOptions(write_prob=True, progress=False))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < height * width * 4  # the whole-scene Stitcher alone would hold three of these
    mask = tifffile.imread(result.mask)
    np.testing.assert_array_equal(mask[:, 0], (rows[:, 0] > 500).astype(np.uint8))


# ---- writing is atomic --------------------------------------------------------------------------
def test_tiff_writer_assembles_blocks_of_any_height_into_the_image(tmp_path):
    image = np.random.default_rng(0).random((600, 300), dtype=np.float32)
    with TiledTiffWriter(tmp_path / "a.tif", 600, 300, np.float32, "nan") as writer:
        for y0, y1 in [(0, 1), (1, 250), (250, 256), (256, 599), (599, 600)]:
            writer.write(image[y0:y1])
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "a.tif"), image)


def test_tiff_writer_closes_an_image_of_whole_tiles_after_tifffile_has_finished(tmp_path):
    """tifffile stops reading tiles once it has them all: with a height of whole 256-row tiles the
    writer's thread ends before ``close`` (the pause makes sure), which is success, not a failure."""
    import time

    image = np.random.default_rng(0).integers(0, 2, (512, 300), dtype=np.uint8)
    with TiledTiffWriter(tmp_path / "a.tif", 512, 300, np.uint8, "255") as writer:
        writer.write(image[:256])
        writer.write(image[256:])
        time.sleep(0.5)
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "a.tif"), image)


def test_failed_prediction_leaves_the_previous_output_untouched(tmp_path):
    target = tmp_path / "scene_mask.tif"
    tifffile.imwrite(target, np.zeros((10, 10), np.uint8))
    before = tree_state(tmp_path)
    with pytest.raises(RuntimeError, match="model failed"):
        with TiledTiffWriter(target, 600, 300, np.uint8, "255") as writer:
            writer.write(np.ones((300, 300), np.uint8))
            raise RuntimeError("model failed")
    assert tree_state(tmp_path) == before


# ---- user errors --------------------------------------------------------------------------------
def test_scene_with_other_bands_than_the_training_scenes_is_a_user_error_naming_it(capsys, onnx_path, tmp_path):
    scene = write_scene(tmp_path / "three_bands.tif", np.ones((3, 60, 60), np.uint16))
    before = tree_state(tmp_path)
    code, err = predict_cli(capsys, onnx_path, scene, "--out", tmp_path / "out")
    assert code == 2 and str(scene) in err and "3 bands" in err and err.count("\n") == 1
    assert tree_state(tmp_path) == before


def test_missing_model_file_is_a_user_error_naming_it(capsys, small_data_ro, tmp_path):
    code, err = predict_cli(capsys, tmp_path / "nope.onnx", split_scenes(small_data_ro)[0], "--out", tmp_path / "out")
    assert code == 2 and "nope.onnx: model file not found" in err
    assert not (tmp_path / "out").exists()


def test_run_directory_without_checkpoint_is_a_user_error_naming_the_file(capsys, small_data_ro, tmp_path):
    code, err = predict_cli(capsys, tmp_path, split_scenes(small_data_ro)[0], "--out", tmp_path / "out")
    assert code == 2 and str(tmp_path / "checkpoints" / "best.pt") in err


def test_onnx_file_without_segtrain_metadata_is_a_user_error(capsys, small_data_ro, tmp_path):
    from onnx import TensorProto, checker, helper, save

    plain = tmp_path / "plain.onnx"
    io = [helper.make_tensor_value_info(name, TensorProto.FLOAT, ["n", 4, "h", "w"]) for name in ("x", "y")]
    model = helper.make_model(helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "plain", io[:1], io[1:]))
    checker.check_model(model)
    save(model, plain)
    code, err = predict_cli(capsys, plain, split_scenes(small_data_ro)[0], "--out", tmp_path / "out")
    assert code == 2 and "plain.onnx: not a segtrain model" in err


def test_a_bad_scene_among_several_stops_before_any_output_is_written(capsys, onnx_path, small_data_ro, tmp_path):
    good = split_scenes(small_data_ro)[0]
    code, err = predict_cli(capsys, onnx_path, good, tmp_path / "missing.tif", "--out", tmp_path / "out")
    assert code == 2 and "missing.tif" in err
    assert not (tmp_path / "out").exists()



def test_overlap_not_smaller_than_the_tile_is_a_user_error_naming_the_flag(capsys, onnx_path, small_data_ro, tmp_path):
    code, err = predict_cli(capsys, onnx_path, split_scenes(small_data_ro)[0], "--out", tmp_path / "out",
                            "--tile", "32", "--overlap", "32")
    assert code == 2 and "--overlap" in err
    assert not (tmp_path / "out").exists()


def test_two_scenes_with_the_same_name_are_refused_as_their_outputs_would_collide(capsys, onnx_path, small_data_ro,
                                                                                  tmp_path):
    scene = split_scenes(small_data_ro)[0]
    (tmp_path / "copy").mkdir()
    twin = tmp_path / "copy" / scene.name
    twin.write_bytes(scene.read_bytes())
    code, err = predict_cli(capsys, onnx_path, scene, twin, "--out", tmp_path / "out")
    assert code == 2 and str(twin) in err and "same name" in err
    assert not (tmp_path / "out").exists()


# ---- reading strips: each tile of the file decoded once ----------------------------------------------
class RecordingReader(SceneReader):
    """A real reader that notes the rows each read asks for."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.reads: list[tuple[int, int]] = []

    def read(self, y, x, h, w):
        self.reads.append((y, h))
        return super().read(y, x, h, w)


@pytest.mark.parametrize("tile, overlap", [(48, 8), (64, 0), (100, 60)])
def test_overlapping_strips_read_each_row_of_the_file_once_in_whole_tile_rows(tmp_path, tile, overlap):
    image = np.random.default_rng(3).integers(1, 1000, (4, 300, 200), dtype=np.uint16)
    image[:, 70, 5] = 0  # no-data: NaN in the strips
    path = write_scene(tmp_path / "s.tif", image, tile=(64, 64), compression="zlib")
    reader = RecordingReader(path)
    strips = StripReader(reader)
    for y in axis_origins(300, tile, tile - overlap):
        strip, valid = strips.read(y, tile)
        expected = image[:, y:y + tile].astype(np.float32)
        expected[:, ~(expected != 0).any(axis=0)] = np.nan
        np.testing.assert_array_equal(strip, expected)
        assert np.array_equal(valid, ~np.isnan(expected[0]))
    assert [row for y, h in reader.reads for row in range(y, y + h)] == list(range(300))
    assert all(y % 64 == 0 for y, _ in reader.reads)
