"""`segtrain check`: every data set problem is one line naming the culprit, exit 2, nothing written."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile

from segtrain.cli import main
from segtrain.data import memo
from segtrain.data.memo import memo_path
from segtrain.data.integrity import is_binary
from conftest import REPO, age, tree_state


def write_config(tmp_path: Path, root: Path, extra: str = "") -> Path:
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(f"extends: {REPO / 'configs' / 'demo.yaml'}\ndata:\n  root: {root}\n{extra}")
    return cfg


def run_check(capsys, cfg: Path, *overrides: str) -> tuple[int, str, str]:
    code = main(["check", str(cfg), *overrides])
    out, err = capsys.readouterr()
    return code, out, err


def assert_refused(capsys, tmp_path, data: Path, culprit: str, *overrides: str, extra: str = "") -> str:
    cfg = write_config(tmp_path, data, extra)
    before = tree_state(tmp_path)
    code, out, err = run_check(capsys, cfg, *overrides)
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("segtrain check: error: ")
    assert culprit in err
    assert tree_state(tmp_path) == before
    return err


def first_train_scene(data: Path) -> str:
    return (data / "filelists" / "train.csv").read_text().split()[0]


def test_valid_data_set_passes_with_a_summary(capsys, tmp_path, small_data_ro):
    code, out, err = run_check(capsys, write_config(tmp_path, small_data_ro))
    assert code == 0, err
    assert "4 bands per scene" in out and "train    3 scenes" in out


def test_config_typo(capsys, tmp_path, small_data_ro):
    err = assert_refused(capsys, tmp_path, small_data_ro, "train.epochz", extra="train:\n  epochz: 3\n")
    assert str(tmp_path / "cfg.yaml") in err and "did you mean 'epochs'" in err


def test_wrong_type(capsys, tmp_path, small_data_ro):
    assert_refused(capsys, tmp_path, small_data_ro, "train.batch_size: expected an integer", extra="train:\n  batch_size: big\n")


def test_bad_override(capsys, tmp_path, small_data_ro):
    assert_refused(capsys, tmp_path, small_data_ro, "override 'optim.lr=-1': optim.lr: must be > 0.0", "optim.lr=-1")


def test_missing_scene_file(capsys, tmp_path, small_data):
    name = first_train_scene(small_data)
    (small_data / "scenes" / name).unlink()
    assert_refused(capsys, tmp_path, small_data, f"{small_data / 'scenes' / name}: file not found")


def test_missing_filelist(capsys, tmp_path, small_data):
    (small_data / "filelists" / "val.csv").unlink()
    assert_refused(capsys, tmp_path, small_data, "val.csv: filelist for split 'val' not found")


def test_scene_mask_size_mismatch(capsys, tmp_path, small_data):
    name = first_train_scene(small_data)
    mask = tifffile.imread(small_data / "masks" / name)
    tifffile.imwrite(small_data / "masks" / name, mask[:-3])
    assert_refused(capsys, tmp_path, small_data, f"{small_data / 'masks' / name}: mask is")


def test_band_selection_beyond_the_scene(capsys, tmp_path, small_data_ro):
    assert_refused(capsys, tmp_path, small_data_ro, "data.bands: selects band 4 but", "data.bands=[0, 4]")


def test_model_input_not_matching_bands(capsys, tmp_path, small_data_ro):
    assert_refused(capsys, tmp_path, small_data_ro, "model.in_channels: is 3 but data.bands selects 4", "model.in_channels=3")


def test_scene_with_other_band_count(capsys, tmp_path, small_data):
    name = first_train_scene(small_data)
    tifffile.imwrite(small_data / "scenes" / name, np.ones((3, 40, 50), np.uint16), photometric="minisblack",
                     planarconfig="separate")
    tifffile.imwrite(small_data / "masks" / name, np.zeros((40, 50), np.uint8))
    assert_refused(capsys, tmp_path, small_data, f"{small_data / 'scenes' / name}: has 3 bands")


def test_non_binary_mask(capsys, tmp_path, small_data):
    name = first_train_scene(small_data)
    mask = tifffile.imread(small_data / "masks" / name)
    mask[0, 0] = 7
    tifffile.imwrite(small_data / "masks" / name, mask)
    assert_refused(capsys, tmp_path, small_data, f"{small_data / 'masks' / name}: mask is not binary: values 0, 1, 7")


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_corrupt_tiff(capsys, tmp_path, small_data, damage):
    name = first_train_scene(small_data)
    path = small_data / "scenes" / name
    data = path.read_bytes()
    path.write_bytes(b"this is not a tiff" if damage == "garbage" else data[: len(data) // 2])
    assert_refused(capsys, tmp_path, small_data, f"{path}: corrupt")


def test_scene_in_two_splits(capsys, tmp_path, small_data):
    name = first_train_scene(small_data)
    with open(small_data / "filelists" / "val.csv", "a") as f:
        f.write(name + "\n")
    assert_refused(capsys, tmp_path, small_data, f"{name} is also in the 'train' split")


def test_missing_data_root(capsys, tmp_path):
    assert_refused(capsys, tmp_path, tmp_path / "nowhere", "data.root: data set folder")


def test_console_script_prints_no_traceback(tmp_path, small_data):
    (small_data / "masks" / first_train_scene(small_data)).unlink()
    cfg = write_config(tmp_path, small_data)
    proc = subprocess.run([sys.executable, "-m", "segtrain", "check", str(cfg)], capture_output=True, text=True)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and proc.stderr.count("\n") == 1
    debug = subprocess.run([sys.executable, "-m", "segtrain", "--debug", "check", str(cfg)], capture_output=True, text=True)
    assert "Traceback" in debug.stderr


# ---- each file is read once per version -----------------------------------------------------------
def same_size_garbage(path: Path) -> None:
    """Replace a file's bytes by garbage of the same length, keeping its modification time."""
    st = path.stat()
    path.write_bytes(b"x" * st.st_size)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


def test_a_file_that_passed_is_not_read_again_until_its_size_or_time_changes(capsys, tmp_path, small_data):
    age(small_data)
    cfg = write_config(tmp_path, small_data)
    before = tree_state(small_data)
    assert run_check(capsys, cfg)[0] == 0
    assert tree_state(small_data) == before and memo_path(small_data).is_file()  # remembered outside the data set
    mask = small_data / "masks" / first_train_scene(small_data)
    same_size_garbage(mask)  # unseen: the same version of the file as far as size and time can tell
    code, out, err = run_check(capsys, cfg)
    assert code == 0, err and "4 bands per scene" in out
    os.utime(mask)  # now it is a new version, and read
    assert_refused(capsys, tmp_path, small_data, f"{mask}: corrupt")


def test_files_modified_within_the_last_seconds_are_not_remembered(capsys, tmp_path, small_data):
    age(small_data)
    mask = small_data / "masks" / first_train_scene(small_data)
    os.utime(mask)  # just written: a same-size rewrite in the same time stamp tick would go unnoticed
    cfg = write_config(tmp_path, small_data)
    assert run_check(capsys, cfg)[0] == 0
    same_size_garbage(mask)
    assert_refused(capsys, tmp_path, small_data, f"{mask}: corrupt")


def test_a_failing_check_remembers_nothing(capsys, tmp_path, small_data):
    tifffile.imwrite(small_data / "masks" / first_train_scene(small_data), np.full((3, 3), 1, np.uint8))
    age(small_data)
    assert run_check(capsys, write_config(tmp_path, small_data))[0] == 2
    assert not memo_path(small_data).exists()


def test_a_copy_with_the_same_sizes_and_times_inherits_what_passed(capsys, tmp_path, small_data):
    age(small_data)
    assert run_check(capsys, write_config(tmp_path, small_data))[0] == 0
    copy = tmp_path / "staged"
    shutil.copytree(small_data, copy)  # copy2: times kept, as the job's staging keeps them
    same_size_garbage(copy / "masks" / first_train_scene(copy))
    (tmp_path / "copy").mkdir()
    copy_cfg = write_config(tmp_path / "copy", copy)
    assert run_check(capsys, copy_cfg)[0] == 2  # not inherited yet: read, and found corrupt
    memo.carry(small_data, copy)
    code, _, err = run_check(capsys, copy_cfg)
    assert code == 0, err


@pytest.mark.parametrize("values,dtype,binary", [
    ([0, 1], np.uint8, True), ([0, 255], np.uint8, True), ([0, 0], np.uint8, True), ([1, 1], np.uint8, True),
    ([0, 255], np.uint16, True), ([0.0, 1.0], np.float32, True), ([0, 0], np.int16, True), ([255, 255], np.uint8, True),
    ([0, 1, 255], np.uint8, False), ([0, 7], np.uint8, False), ([0, 2], np.uint8, False), ([0, 256], np.uint16, False),
    ([0, 0.5, 1], np.float32, False), ([0, np.nan, 1], np.float32, False), ([-1, 0, 1], np.int16, False),
    ([-1, 0], np.int16, False), ([1, 255], np.uint8, False),
])
def test_a_mask_is_binary_when_its_values_are_0_1_or_0_255(values, dtype, binary):
    mask = np.zeros((3, 700_000), dtype=dtype)  # more than one chunk, the odd values at the end
    mask[-1, -len(values):] = values
    assert is_binary(mask) == binary


def test_pairs_checked_by_a_sample_are_remembered_as_not_yet_decoded(capsys, tmp_path, small_data, monkeypatch):
    from segtrain.data import integrity
    from segtrain.preflight import decoded_pairs, passed_pairs

    age(small_data)
    names = {line.split()[0] for split in ("train", "val", "test")
             for line in (small_data / "filelists" / f"{split}.csv").read_text().splitlines()}
    large = tmp_path / "large-data"
    shutil.copytree(small_data, large)  # times kept: remembered like the original
    (tmp_path / "large").mkdir()
    with monkeypatch.context() as patch:
        patch.setattr(integrity, "FULL_DECODE_VALUES", 0)  # every file counts as large
        assert run_check(capsys, write_config(tmp_path / "large", large))[0] == 0
    assert set(passed_pairs(large)) == names and decoded_pairs(large) == set()
    assert run_check(capsys, write_config(tmp_path, small_data))[0] == 0
    assert decoded_pairs(small_data) == names  # small files are decoded whole by the check
