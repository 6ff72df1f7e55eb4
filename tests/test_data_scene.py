"""Scene metadata: shapes of TIFF files that look like scenes but are not what they seem."""
from __future__ import annotations

import numpy as np
import tifffile

from segtrain.cli import main
from segtrain.data.layout import read_split


def test_band_last_array_written_without_photometric_is_named_with_its_fix(small_data, capsys):
    """tifffile stores such an (H, W, 6) array as H pages of W x 6; check says so instead of
    blaming the mask, and the rewrite it suggests makes the scene readable."""
    scene = read_split(small_data, "train")[0].scene
    image = tifffile.imread(scene)
    hwc = image if image.shape[-1] == 4 else image.transpose(1, 2, 0)
    hwc = np.concatenate([hwc, hwc[..., :2]], axis=-1)  # six bands, so tifffile does not take it for RGB(A)
    tifffile.imwrite(scene, hwc)
    assert main(["check", "configs/demo.yaml", f"data.root={small_data}"]) == 2
    err = capsys.readouterr().err
    assert f"{scene}: stored as {hwc.shape[0]} pages of {hwc.shape[1]} x 6" in err
    assert "photometric='minisblack', planarconfig='contig'" in err and err.count("\n") == 1
    tifffile.imwrite(scene, tifffile.imread(scene), photometric="minisblack", planarconfig="contig")
    assert main(["check", "configs/demo.yaml", f"data.root={small_data}"]) == 2  # now: 6 bands, not 4
    assert "bands" in capsys.readouterr().err
