"""Data set statistics: exact moments over valid pixels, class balance, stats.json and figures."""
from __future__ import annotations

import dataclasses
import json
import os

import numpy as np
import pytest

from segtrain.cli import main
from segtrain.config.schema import DataConfig
from segtrain.data import stats as stats_module
from segtrain.data.layout import read_split
from segtrain.data.reader import SceneReader
from segtrain.data.stats import compute_stats, load_or_compute_stats, load_stats, scan_split, write_stats
from segtrain.errors import UserError
from tests.conftest import age, tree_state

PNG = b"\x89PNG\r\n\x1a\n"


def valid_values(root, split="train") -> tuple[np.ndarray, int, int]:
    """(bands, n) valid values, positives and all pixels of a split, read whole."""
    values, positives, pixels = [], 0, 0
    for files in read_split(root, split):
        with SceneReader(files.scene, files.mask) as reader:
            image, valid, mask = reader.read(0, 0, reader.height, reader.width)
        values.append(image[:, valid].astype(np.float64))
        positives += int(mask[valid].sum())
        pixels += valid.size
    return np.concatenate(values, axis=1), positives, pixels


def test_moments_and_class_balance_are_exact_over_valid_pixels(small_data_ro):
    stats = compute_stats(small_data_ro)
    values, positives, pixels = valid_values(small_data_ro)
    n = values.shape[1]
    np.testing.assert_allclose(stats.mean, values.mean(axis=1), rtol=1e-9)
    np.testing.assert_allclose(stats.std, values.std(axis=1), rtol=1e-6)
    assert stats.valid_pixels == n
    assert stats.pos_fraction == pytest.approx(positives / n)
    assert stats.pos_weight == pytest.approx((n - positives) / positives)
    assert stats.nodata_fraction == pytest.approx(1 - n / pixels)
    assert [s["name"] for s in stats.scenes] == [f.name for f in read_split(small_data_ro, "train")]


def test_percentiles_come_close_to_the_exact_ones(small_data_ro):
    stats, sample = scan_split(small_data_ro)
    values, _, _ = valid_values(small_data_ro)
    for q in ("1", "50", "99"):
        exact = np.percentile(values, float(q), axis=1)
        np.testing.assert_allclose(stats.percentiles[q], exact, rtol=0.02)
    assert sample.shape[0] == 4


def test_the_percentile_sample_stays_bounded_however_many_scenes(small_data_ro, monkeypatch):
    # With many scenes, a floor per scene made the sample (and memory, and the percentiles' time) grow with the split.
    monkeypatch.setattr(stats_module, "SAMPLE_PIXELS", 2_000)
    _, sample = scan_split(small_data_ro)
    assert sample.shape[1] <= 2 * 2_000  # each scene's share is rounded to a whole pixel step


def test_stats_survive_a_round_trip_through_json(tmp_path, small_data_ro):
    stats = compute_stats(small_data_ro)
    write_stats(stats, tmp_path / "stats.json")
    assert load_stats(tmp_path / "stats.json") == stats


@pytest.mark.parametrize("content", ['{"mean": [1.0]}', "[1, 2]", "not json",
                                    '{"mean": [1.0], "std": [-1.0], "pos_fraction": 0.1, "pos_weight": 9.0,'
                                    ' "nodata_fraction": 0.0}'])
def test_a_malformed_stats_file_is_a_user_error_naming_it(tmp_path, content):
    path = tmp_path / "stats.json"
    path.write_text(content)
    with pytest.raises(UserError, match="stats.json"):
        load_stats(path)


def test_training_reads_the_stats_file_when_there_is_one(small_data, small_data_ro):
    stats = dataclasses.replace(compute_stats(small_data_ro), pos_weight=123.0)
    write_stats(stats, small_data / "stats.json")
    assert load_or_compute_stats(DataConfig(root=str(small_data))).pos_weight == 123.0
    write_stats(stats, small_data / "elsewhere.json")
    cfg = DataConfig(root=str(small_data_ro), stats_file=str(small_data / "elsewhere.json"))
    assert load_or_compute_stats(cfg).pos_weight == 123.0


def test_without_a_stats_file_they_are_computed_and_nothing_is_written(small_data):
    before = tree_state(small_data)
    stats = load_or_compute_stats(DataConfig(root=str(small_data)))
    assert stats == compute_stats(small_data)
    assert tree_state(small_data) == before


def test_a_missing_configured_stats_file_is_a_user_error_naming_the_key(small_data_ro, tmp_path):
    with pytest.raises(UserError, match="data.stats_file"):
        load_or_compute_stats(DataConfig(root=str(small_data_ro), stats_file=str(tmp_path / "none.json")))


def test_stats_command_writes_stats_json_and_three_figures(small_data, capsys):
    assert main(["stats", str(small_data)]) == 0
    stats = load_stats(small_data / "stats.json")
    assert stats == compute_stats(small_data)
    for name in ("samples.png", "histograms.png", "class_balance.png"):
        assert (small_data / "stats" / name).read_bytes().startswith(PNG)
    out = capsys.readouterr().out
    assert "pos_weight" in out and "stats.json" in out


def test_stats_command_can_write_elsewhere_and_describe_another_split(small_data_ro, tmp_path):
    before = tree_state(small_data_ro)
    assert main(["stats", str(small_data_ro), "--split", "val", "--out", str(tmp_path / "out"), "--rgb", "3,2,1"]) == 0
    assert json.loads((tmp_path / "out" / "stats.json").read_text())["split"] == "val"
    assert tree_state(small_data_ro) == before


@pytest.mark.parametrize("args,message", [(["--rgb", "0,1"], "--rgb"), (["--rgb", "0,1,9"], "--rgb"),
                                          (["--split", "nope"], "nope.csv")])
def test_stats_command_bad_arguments_exit_2_with_one_line(small_data_ro, tmp_path, capsys, args, message):
    assert main(["stats", str(small_data_ro), "--out", str(tmp_path), *args]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err


def test_computed_statistics_are_remembered_until_a_train_file_changes(small_data):
    age(small_data)
    cfg = DataConfig(root=str(small_data))
    first = load_or_compute_stats(cfg)
    scene = read_split(small_data, "train")[0].scene
    st = scene.stat()
    scene.write_bytes(b"x" * st.st_size)  # unseen: same size and time, so the same version as far as stamps tell
    os.utime(scene, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert load_or_compute_stats(cfg) == first
    os.utime(scene)  # a new version: scanned again (and found unreadable)
    with pytest.raises(UserError, match=str(scene)):
        load_or_compute_stats(cfg)
