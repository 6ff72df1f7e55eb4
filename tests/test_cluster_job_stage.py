"""Verified staging to scratch and copy-back to storage."""
import io
import os
import tarfile
from pathlib import Path

import pytest

from segtrain.cluster.job.stage import listing, stage_dataset, sync_tree
from segtrain.errors import UserError


def make_tree(root: Path, files: dict) -> Path:
    for rel, data in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return root


FILES = {"filelists/train.csv": b"a.tif\n", "scenes/a.tif": b"x" * 5000, "masks/a.tif": b"m" * 300}


def test_folder_is_staged_complete_and_verified(tmp_path):
    src = make_tree(tmp_path / "data", FILES)
    report = stage_dataset(src, tmp_path / "scratch" / "data")
    assert report.ok and report.files == 3 and report.bytes == 5306
    assert listing(tmp_path / "scratch" / "data") == listing(src)


def test_a_staged_folder_keeps_modification_times_so_it_is_the_same_version_of_each_file(tmp_path):
    src = make_tree(tmp_path / "data", FILES)
    os.utime(src / "scenes" / "a.tif", ns=(1_000_000_000, 1_600_000_000_123_456_789))
    stage_dataset(src, tmp_path / "scratch" / "data")
    for rel in FILES:
        assert (tmp_path / "scratch" / "data" / rel).stat().st_mtime_ns == (src / rel).stat().st_mtime_ns


@pytest.mark.parametrize("mode", ["w", "w:gz"])
def test_archive_is_unpacked_in_one_stream_and_verified_against_its_members(tmp_path, mode):
    src = make_tree(tmp_path / "data", FILES)
    archive = tmp_path / ("data.tar" if mode == "w" else "data.tar.gz")
    with tarfile.open(archive, mode) as tar:
        tar.add(src, arcname="demo")
    report = stage_dataset(archive, tmp_path / "scratch")
    assert report.ok and report.files == 3
    assert listing(tmp_path / "scratch" / "demo") == listing(src)


def test_archive_members_that_escape_the_destination_are_refused(tmp_path):
    archive = tmp_path / "evil.tar"
    with tarfile.open(archive, "w") as tar:
        info = tarfile.TarInfo("../outside.txt")
        info.size = 3
        tar.addfile(info, io.BytesIO(b"bad"))
    with pytest.raises(UserError, match="evil.tar"):
        stage_dataset(archive, tmp_path / "scratch")
    assert not (tmp_path / "outside.txt").exists()


def test_truncated_archive_is_a_user_error_naming_it(tmp_path):
    src = make_tree(tmp_path / "data", FILES)
    archive = tmp_path / "data.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(src, arcname="demo")
    archive.write_bytes(archive.read_bytes()[:200])
    with pytest.raises(UserError, match="data.tar.gz"):
        stage_dataset(archive, tmp_path / "scratch")


def test_sync_copies_everything_and_keeps_what_only_the_destination_has(tmp_path):
    src = make_tree(tmp_path / "run", {"run.json": b"{}", "logs/train.log": b"log", "checkpoints/last.pt": b"w" * 100})
    dst = make_tree(tmp_path / "storage", {"samples/old.png": b"png"})
    report = sync_tree(src, dst)
    assert report.ok and report.copied == 3
    assert (dst / "samples/old.png").read_bytes() == b"png"
    assert {k: v for k, v in listing(dst).items() if k in listing(src)} == listing(src)


def test_sync_preserves_times_so_a_second_sync_copies_nothing(tmp_path):
    src = make_tree(tmp_path / "run", {"a": b"1", "b/c": b"22"})
    sync_tree(src, tmp_path / "storage")
    again = sync_tree(src, tmp_path / "storage")
    assert again.ok and again.files == 2 and again.copied == 0


def test_sync_replaces_a_changed_file_and_recreates_symlinks(tmp_path):
    src = make_tree(tmp_path / "run", {"metrics.jsonl": b"1\n"})
    os.symlink("run-1", src / "latest-run")
    dst = tmp_path / "storage"
    sync_tree(src, dst)
    (src / "metrics.jsonl").write_bytes(b"1\n2\n")
    assert sync_tree(src, dst).copied == 1
    assert (dst / "metrics.jsonl").read_bytes() == b"1\n2\n"
    assert os.readlink(dst / "latest-run") == "run-1"


def test_sync_reports_files_it_cannot_write_and_copies_the_rest(tmp_path):
    src = make_tree(tmp_path / "run", {"logs/train.log": b"log", "run.json": b"{}"})
    dst = make_tree(tmp_path / "storage", {"logs": b"a file where a folder should be"})
    report = sync_tree(src, dst)
    assert not report.ok and "logs/train.log" in report.failures[0]
    assert (dst / "run.json").read_bytes() == b"{}"


def test_sync_leaves_no_temporary_files(tmp_path):
    src = make_tree(tmp_path / "run", {"checkpoints/last.pt": b"w" * 1000})
    dst = tmp_path / "storage"
    sync_tree(src, dst)
    assert sorted(p.name for p in (dst / "checkpoints").iterdir()) == ["last.pt"]


def test_missing_source_run_copies_nothing_and_is_fine(tmp_path):
    report = sync_tree(tmp_path / "never-created", tmp_path / "storage")
    assert report.ok and report.files == 0
