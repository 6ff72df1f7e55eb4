"""Shared fixtures: a small generated data set, made once per session and copied when mutated."""
from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest
import tifffile

from segtrain.data.synthetic import DemoSpec, make_demo_data

REPO = Path(__file__).resolve().parents[1]
SMALL = DemoSpec(seed=7, n_train=3, n_val=2, n_test=2, max_size=200)

os.environ.setdefault("WANDB_SILENT", "true")


def pytest_xdist_make_scheduler(config, log):
    """``make test`` runs the tests in two processes (pytest-xdist), a file's tests in one of them (its
    module fixtures are made once), and every file that submits to the real Slurm in the same one: they
    share one small cluster, and a job of one would wait in the queue behind another's."""
    from xdist.scheduler import LoadScopeScheduling

    class ByFileSlurmTogether(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            path = nodeid.split("::", 1)[0]
            return "slurm jobs" if Path(path).name.startswith("test_jobs_") and "slurm" in path else path

    return ByFileSlurmTogether(config, log)


@pytest.fixture(scope="session", autouse=True)
def user_cache(tmp_path_factory) -> Path:
    """What commands remember about data sets goes to this session's folder, not the user's ~/.cache.

    HOME moves too: a PBS job gets the submitter's HOME (and not XDG_CACHE_HOME), so the jobs that
    the tests run in local mode remember their data sets under it.
    """
    home = tmp_path_factory.mktemp("user-home")
    os.environ["HOME"] = str(home)
    os.environ["XDG_CACHE_HOME"] = str(home / ".cache")
    return home / ".cache"


def age(root: Path, seconds: float = 60.0) -> None:
    """Date every file under ``root`` back: files modified just now are too fresh to be remembered."""
    when = time.time_ns() - int(seconds * 1e9)
    for path in root.rglob("*"):
        if path.is_file():
            os.utime(path, ns=(when, when))


@pytest.fixture(scope="session")
def small_data_ro(tmp_path_factory) -> Path:
    """A small demo data set shared by all tests; never modify it (use ``small_data``)."""
    root = tmp_path_factory.mktemp("data") / "small"
    make_demo_data(root, SMALL)
    return root


@pytest.fixture
def small_data(small_data_ro, tmp_path) -> Path:
    """A private copy of the small data set that a test may break."""
    root = tmp_path / "data"
    shutil.copytree(small_data_ro, root)
    return root


def corrupt_segment(path: Path, index: int = 1) -> None:
    """Scramble the bytes of compressed tile/strip ``index`` (the last when there are fewer):
    the header still reads, the segment does not decode."""
    with tifffile.TiffFile(path) as tif:
        page = tif.series[0].pages[0]
        index = min(index, len(page.dataoffsets) - 1)
        offset, size = page.dataoffsets[index], page.databytecounts[index]
    data = bytearray(path.read_bytes())
    for i in range(offset + 4, offset + size - 4):
        data[i] ^= 0x5A
    path.write_bytes(bytes(data))


def tree_state(root: Path) -> dict[str, tuple[int, int]]:
    """Every file under ``root`` with its size and mtime: equal states mean nothing was written."""
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="session")
def trained_run_ro(small_data_ro, tmp_path_factory) -> Path:
    """A tiny finished run (W&B offline) shared by the inference tests; never modify it."""
    from trainutil import train_run

    run = tmp_path_factory.mktemp("trained") / "run"
    code, out = train_run(run, small_data_ro, "logging.wandb.mode=offline")
    assert code == 0, out
    return run


@pytest.fixture(scope="module")
def run_dir(trained_run_ro, tmp_path_factory) -> Path:
    """A private copy of the shared trained run, for a test module that writes into it."""
    run = tmp_path_factory.mktemp("run") / "run"
    shutil.copytree(trained_run_ro, run)
    return run


@pytest.fixture(scope="module")
def onnx_path(run_dir) -> Path:
    """The module's copy of the shared trained run, exported to ONNX."""
    from segtrain.export import export_onnx
    from segtrain.run.checkpoint import load_trained

    path = run_dir / "export" / "model.onnx"
    export_onnx(load_trained(run_dir), path)
    return path


def bands_first(path: Path):
    """A test scene's pixels as (bands, H, W), whichever way the file stores them."""
    import numpy as np
    import tifffile

    image = tifffile.imread(path)
    return image if image.shape[0] == 4 else np.ascontiguousarray(image.transpose(2, 0, 1))

