"""jobs/predict.pbs end to end, in local PBS-like mode: a trained tiny run predicts generated scenes.

The repository is copied to a temporary folder (the user's clone on storage); the scenes are
georeferenced, tiled and compressed like real products, small (90-200 px) except one of
600 x 520 px that has overviews and takes long enough to be killed in the middle of.
"""
from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import numpy as np
import pytest
import tifffile

from conftest import tree_state
from segtrain.cluster.job.stage import sha256_file
from segtrain.cluster.pbs.local.server import process_tree
from segtrain.data.scene import GDAL_NODATA_TAG
from segtrain.data.synthetic import make_scene
from segtrain.predict import GEO_TAGS
from test_jobs_train_pbs import make_repo, server_of, submit
from test_jobs_train_pbs_edges import qdel

pytestmark = pytest.mark.slow

GEO = [(33550, 12, 3, (10.0, 10.0, 0.0), True), (33922, 12, 6, (0.0, 0.0, 0.0, 500000.0, 5500000.0, 0.0), True),
       (34735, 3, 16, (1, 1, 0, 3, 1024, 0, 1, 1, 1025, 0, 1, 1, 3072, 0, 1, 32633), True)]
BIG = "scene_05.tif"  # the second scene of subjob 1 (four scenes a subjob)


def write_scenes(folder: Path, n: int = 12) -> list[Path]:
    folder.mkdir(parents=True)
    paths = []
    for i in range(n):
        rng = np.random.default_rng([11, i])
        h, w = (600, 520) if f"scene_{i:02d}.tif" == BIG else tuple(rng.integers(90, 200, 2))
        paths.append(write_scene(folder / f"scene_{i:02d}.tif", rng, int(h), int(w)))
    return paths


def write_scene(path: Path, rng: np.random.Generator, h: int, w: int) -> Path:
    image, _ = make_scene(rng, h, w, 4)
    tifffile.imwrite(path, image, photometric="minisblack", planarconfig="separate", metadata=None, tile=(64, 64),
                     compression="zlib", extratags=[(GDAL_NODATA_TAG, "s", 0, "0", True), *GEO])
    return path


@pytest.fixture
def repo(tmp_path, small_data_ro) -> Path:
    """A copy of the repository as cloned on storage, with the scenes in scenes/."""
    repo = make_repo(tmp_path / "segtrain", small_data_ro)
    write_scenes(repo / "scenes")
    return repo


def predict(repo: Path, model: Path, *args: str, wait: bool = True):
    return submit(repo, "--predict", str(model), "scenes", "--out", "preds", "--per-job", "4", *args, wait=wait)


def sidecars(out: Path) -> dict[str, dict]:
    return {p.stem: json.loads(p.read_text()) for p in sorted(out.glob("scene_*.json"))}


def assert_verified(out: Path, names: list[str]) -> None:
    records = sidecars(out)
    assert sorted(records) == sorted(names)
    for name in names:
        record = records[name]
        assert record["status"] == "done", record
        [(output, expected)] = record["outputs"].items()
        assert output == f"{name}_mask.tif"
        assert (out / output).stat().st_size == expected["size"] and sha256_file(out / output) == expected["sha256"]


def partial_files(*roots: Path) -> list[Path]:
    return [p for root in roots if root.exists() for p in root.rglob("*") if p.name.endswith(".tmp") or ".tmp" in p.parts[-1]]


def test_twelve_scenes_over_three_subjobs_give_twelve_verified_georeferenced_outputs(repo, trained_run_ro):
    result = predict(repo, trained_run_ro)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "12 scenes: 12 done, 0 failed, 0 pending" in result.stdout
    server = server_of(repo)
    array = server.get("1[].local")
    assert [job.exit_status for job in server.subjobs(array)] == [0, 0, 0]
    out = repo / "preds"
    assert_verified(out, [f"scene_{i:02d}" for i in range(12)])
    with tifffile.TiffFile(out / "scene_05_mask.tif") as tif, tifffile.TiffFile(repo / "scenes" / BIG) as scene:
        page = tif.pages[0]
        assert page.is_tiled and page.compression.name == "ADOBE_DEFLATE"
        assert [level.shape for level in tif.series[0].levels] == [(600, 520), (300, 260), (150, 130)]
        assert all(p.is_tiled and p.compression.name == "ADOBE_DEFLATE" for p in tif.pages[1:])
        for code in GEO_TAGS:
            if code in scene.pages[0].tags:
                assert page.tags[code].value == scene.pages[0].tags[code].value, code
        mask = tif.asarray()
    assert set(np.unique(mask)) <= {0, 1, 255} and (mask != 255).any()
    assert partial_files(out, repo.parent / "state" / "scratch") == []
    status = submit(repo, "--status", "preds")
    assert status.returncode == 0 and "12 scenes: 12 done, 0 failed, 0 pending" in status.stdout
    assert [line.split()[1:2] + line.split()[-3:] for line in status.stdout.splitlines()[1:4]] == \
        [[str(i), "4", "0", "0"] for i in range(3)]
    # the same command again: every scene verified, nothing submitted, nothing written
    before = tree_state(out)
    again = predict(repo, trained_run_ro)
    assert again.returncode == 0 and "nothing to predict" in again.stdout, again.stdout + again.stderr
    assert tree_state(out) == before


def test_a_corrupt_scene_is_reported_and_the_other_eleven_succeed(repo, trained_run_ro):
    corrupt = repo / "scenes" / "scene_06.tif"
    data = bytearray(corrupt.read_bytes())
    with tifffile.TiffFile(corrupt) as tif:  # garbage in the middle of the compressed data of band 0
        page = tif.pages[0]
        middle = len(page.dataoffsets) // 2
        offset, count = page.dataoffsets[middle], page.databytecounts[middle]
    data[offset + 2:offset + count - 2] = bytes(range(256)) * ((count - 4) // 256) + bytes((count - 4) % 256)
    corrupt.write_bytes(bytes(data))
    result = predict(repo, trained_run_ro, "--per-job", "6")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "12 scenes: 11 done, 1 failed, 0 pending" in result.stdout
    assert "failed scene_06.tif: " in result.stdout
    assert "FAILED scene_06.tif" in (repo / "predict-preds.o1.1").read_text()
    out = repo / "preds"
    failed = sidecars(out)["scene_06"]
    assert failed["status"] == "failed" and failed["error"]
    (out / "scene_06.json").unlink()
    assert_verified(out, [f"scene_{i:02d}" for i in range(12) if i != 6])
    assert not (out / "scene_06_mask.tif").exists()
    assert partial_files(out) == []


def step_processes(root: int) -> list[int]:
    """The job's python step among ``root``'s descendants."""
    found = []
    for pid in process_tree(root):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"segtrain.cluster.job.predict_steps" in cmdline and b"run" in cmdline:
            found.append(pid)
    return found


def test_a_subjob_killed_mid_scene_is_completed_by_submitting_again_without_redoing_finished_scenes(
        repo, trained_run_ro):
    proc = predict(repo, trained_run_ro, wait=False)
    scratch = repo.parent / "state" / "scratch" / "1[1].local" / "out"
    deadline = time.monotonic() + 240
    while not list(scratch.glob(".scene_05_mask.tif.*")):  # subjob 1 is writing its second scene
        assert proc.poll() is None and time.monotonic() < deadline, proc.stdout.read()
        time.sleep(0.01)
    [step] = step_processes(proc.pid)
    os.kill(step, signal.SIGKILL)  # as a node failure would: no handler runs
    out_text, _ = proc.communicate(timeout=300)
    assert proc.returncode == 1, out_text
    assert "12 scenes: 9 done, 0 failed, 3 pending" in out_text
    out = repo / "preds"
    finished = tree_state(out)
    assert partial_files(out, repo.parent / "state" / "scratch") == []
    (out / ".scene_06_mask.tif.x1y2.tmp").write_bytes(b"half a file")  # as a copy killed mid-way leaves it
    again = predict(repo, trained_run_ro)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "12 scenes: 9 done already, 3 to predict in 1 subjob" in again.stdout
    assert "12 scenes: 12 done, 0 failed, 0 pending" in again.stdout
    now = tree_state(out)
    for name, state in finished.items():
        if name.endswith("_mask.tif") or (name.startswith("scene_") and name.endswith(".json")):
            assert now[name] == state, f"{name} was written again"
    assert_verified(out, [f"scene_{i:02d}" for i in range(12)])
    assert partial_files(out, repo.parent / "state" / "scratch") == []


def test_qdel_mid_scene_keeps_the_finished_scenes_and_empties_scratch(repo, trained_run_ro):
    """qdel kills the job's top shell at once: the stop path runs in the job's runner, which outlives it. The scene
    in progress is made big enough (seconds to predict) that the qdel surely comes while it is."""
    write_scene(repo / "scenes" / BIG, np.random.default_rng([11, 5]), 2400, 2080)
    proc = predict(repo, trained_run_ro, wait=False)
    scratch = repo.parent / "state" / "scratch" / "1[1].local"
    deadline = time.monotonic() + 240
    while not list((scratch / "out").glob(".scene_05_mask.tif.*")):  # subjob 1 is writing its second scene
        assert proc.poll() is None and time.monotonic() < deadline, proc.stdout.read()
        time.sleep(0.01)
    qdel(repo, "1[1].local")
    out_text, _ = proc.communicate(timeout=300)
    assert "12 scenes: 9 done, 0 failed, 3 pending" in out_text
    assert "the scene in progress is abandoned" in (repo / "predict-preds.o1.1").read_text()
    assert not scratch.exists(), sorted(scratch.rglob("*"))
    assert_verified(repo / "preds", [f"scene_{i:02d}" for i in (0, 1, 2, 3, 4, 8, 9, 10, 11)])
    assert partial_files(repo / "preds") == []


def test_a_walltime_stop_resubmits_the_rest(repo, trained_run_ro):
    """A margin of 59 s of a 60 s walltime: each job has time for its first scene only."""
    for extra in sorted((repo / "scenes").glob("*.tif"))[3:]:
        extra.unlink()
    result = predict(repo, trained_run_ro, "--walltime", "00:01:00", "--margin", "00:00:59")
    assert result.returncode == 0, result.stdout + result.stderr
    jobs = server_of(repo)
    assert [jobs.get(f"{n}.local").exit_status for n in (1, 2, 3)] == [3, 3, 0]
    assert "3 scenes: 3 done, 0 failed, 0 pending" in result.stdout
    assert_verified(repo / "preds", ["scene_00", "scene_01", "scene_02"])
    log = [json.loads(line) for line in (repo / "preds" / ".segtrain" / "submissions.jsonl").read_text().splitlines()]
    assert [entry["job_id"] for entry in log] == ["1.local", "2.local", "3.local"]
