"""The demo data generator: deterministic, realistic in the ways that matter to the pipeline."""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import tifffile

from segtrain.data.layout import read_split
from segtrain.data.scene import read_info
from segtrain.data.synthetic import DemoSpec, make_demo_data
from segtrain.errors import UserError
from conftest import SMALL


def generated(tmp_path_factory, spec: DemoSpec) -> Path:
    """A data set of ``spec`` in a fresh temporary folder (for a module-scoped fixture)."""
    root = tmp_path_factory.mktemp(spec.kind) / spec.kind
    make_demo_data(root, spec)
    return root


def dataset_digest(root: Path) -> str:
    """SHA-256 over every file's relative path and bytes: equal digests, identical data sets."""
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def test_same_seed_gives_identical_files(tmp_path, small_data_ro):
    make_demo_data(tmp_path / "again", SMALL)
    assert dataset_digest(tmp_path / "again") == dataset_digest(small_data_ro)


def test_other_seed_gives_other_data(tmp_path, small_data_ro):
    make_demo_data(tmp_path / "other", DemoSpec(seed=SMALL.seed + 1, n_train=3, n_val=2, n_test=2, max_size=200))
    assert dataset_digest(tmp_path / "other") != dataset_digest(small_data_ro)


def test_rerun_is_idempotent_and_never_overwrites_foreign_folders(tmp_path):
    root = tmp_path / "demo"
    spec = DemoSpec(n_train=1, n_val=1, n_test=0, max_size=120)
    assert make_demo_data(root, spec) is True
    assert make_demo_data(root, spec) is False
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "thesis.tex").write_text("precious")
    with pytest.raises(UserError, match="not overwriting"):
        make_demo_data(tmp_path / "mine", spec)
    assert (tmp_path / "mine" / "thesis.tex").read_text() == "precious"


def test_scenes_are_varied_like_real_data(small_data_ro):
    names = [s.name for split in ("train", "val", "test") for s in read_split(small_data_ro, split)]
    infos = [read_info(small_data_ro / "scenes" / n) for n in names]
    assert {i.band_axis for i in infos} == {0, 2}
    assert {i.tiled for i in infos} == {True, False}
    assert all(i.dtype == "uint16" and i.nodata == 0 for i in infos)
    assert all(i.height % 8 and i.width % 8 for i in infos)  # no round sizes
    assert min(min(i.height, i.width) for i in infos) < 96  # some smaller than the demo tile


def test_masks_have_5_to_30_percent_positives_and_nodata_borders(small_data_ro):
    nodata_seen = False
    for s in read_split(small_data_ro, "train") + read_split(small_data_ro, "val"):
        mask = tifffile.imread(s.mask) > 0
        image = tifffile.imread(s.scene)
        bands_first = image if image.shape[0] == 4 else image.transpose(2, 0, 1)
        valid = (bands_first != 0).all(axis=0)
        assert 0.05 <= mask[valid].mean() <= 0.30
        assert not mask[~valid].any()
        nodata_seen |= not valid.all()
    assert nodata_seen


def test_no_single_band_threshold_recovers_the_mask(small_data_ro):
    """The task needs band combinations: the best one-band threshold stays far from the mask."""
    s = read_split(small_data_ro, "train")[0]
    image = tifffile.imread(s.scene)
    image = image if image.shape[0] == 4 else image.transpose(2, 0, 1)
    mask = tifffile.imread(s.mask) > 0
    valid = (image != 0).all(axis=0)
    best = 0.0
    for band in image:
        values = band[valid].astype(float)
        for t in np.quantile(values, np.linspace(0.02, 0.98, 49)):
            for pred in (values < t, values > t):
                inter = (pred & mask[valid]).sum()
                best = max(best, inter / (pred | mask[valid]).sum())
    assert best < 0.6
