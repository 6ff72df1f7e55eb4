"""A seeded generator of realistic demo data sets in the segtrain layout.

The scenes imitate a 4-band (blue, green, red, near-infrared) surface-reflectance product
with water bodies as the positive class: several land covers whose spectra overlap the water
spectrum in every single band (dark soil and shadow are dark in NIR, wet meadows bright in
green), so the mask cannot be recovered by thresholding one band; a network has to combine
bands and use shape. Scenes have odd sizes (some smaller than a tile), rotated no-data
footprints filled with 0, haze gradients and sensor noise, and they are stored the way real
data sets arrive: band axis first or last, tiled + deflate-compressed or plain strips.
``kind: clouds`` makes cloud masks on top-of-atmosphere-like scenes instead
(:mod:`segtrain.data.clouds`), ``kind: speckled`` masks made per pixel by a spectral rule, as
QA bands are (:mod:`segtrain.data.speckled`), in the same layout and storage variants.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import tifffile

from segtrain.data.clouds import make_cloud_scene
from segtrain.data.fields import NODATA, blur, footprint, more_bands, smooth_noise
from segtrain.data.speckled import make_speckled_scene
from segtrain.errors import UserError
from segtrain.fsutil import UMASK

DEFAULT_DIR = "data/demo"
MARKER = ".segtrain-demo.json"  # parameters of a generated data set, to make re-runs idempotent
GDAL_NODATA_TAG = 42113
KINDS = ("water", "clouds", "speckled")

# Surface reflectance (blue, green, red, nir) of each land cover. Water is index 0.
WATER = np.array([0.07, 0.09, 0.05, 0.02])
TURBID = np.array([0.01, 0.03, 0.04, 0.025])  # added to water by sediment, up to this much
LAND_COVERS = np.array([
    [0.04, 0.08, 0.05, 0.35],  # forest: dark visible, bright NIR
    [0.06, 0.12, 0.07, 0.30],  # wet meadow: green as bright as water, NIR high
    [0.10, 0.12, 0.16, 0.035],  # dark wet soil: NIR as low as turbid water, red high
    [0.04, 0.05, 0.04, 0.025],  # terrain shadow: dark in every band, but flat visible spectrum
    [0.15, 0.17, 0.19, 0.25],  # built-up / bare ground
])


@dataclass(frozen=True)
class DemoSpec:
    """What to generate. The same spec and seed always produce byte-identical files."""
    seed: int = 0
    n_train: int = 8
    n_val: int = 3
    n_test: int = 3
    bands: int = 4
    min_size: int = 90
    max_size: int = 620
    kind: str = "water"  # or "clouds" (segtrain.data.clouds), "speckled" (segtrain.data.speckled)

    def marker(self) -> dict:
        """What the marker file records; a water data set's has no ``kind`` (as before kinds
        existed), so its bytes, and data sets generated earlier, stay the same."""
        return {k: v for k, v in asdict(self).items() if k != "kind" or v != "water"}


def make_demo_data(root: str | Path = DEFAULT_DIR, spec: DemoSpec = DemoSpec(), force: bool = False) -> bool:
    """Write a demo data set to ``root``; return False when the same one is already there.

    The data set is written to a temporary sibling folder and renamed into place, so an
    interrupted run never leaves a half-written data set behind, and an existing folder is
    only replaced with ``force``.
    """
    root = Path(root)
    if root.exists() and not root.is_dir():
        raise UserError(f"{root}: is a file, not a folder; not overwriting it")
    if root.exists() and any(root.iterdir()):
        marker = root / MARKER
        if marker.is_file() and json.loads(marker.read_text()) == spec.marker() and not force:
            return False
        if not force:
            raise UserError(f"{root}: folder exists and is not this demo data set; not overwriting (use --force)")
    if spec.kind not in KINDS:
        raise UserError(f"--kind: must be one of {', '.join(KINDS)}, got {spec.kind!r}")
    if spec.bands > len(WATER) + 9 or spec.bands < 1:
        raise UserError(f"--bands: must be between 1 and {len(WATER) + 9}, got {spec.bands}")
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}.", dir=root.parent))
    tmp.chmod(0o777 & ~UMASK)  # mkdtemp makes 0700; the data set should look like any folder
    try:
        _write_dataset(tmp, spec)
        if root.exists():
            shutil.rmtree(root)
        os.replace(tmp, root)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return True


def _write_dataset(root: Path, spec: DemoSpec) -> None:
    generate = {"water": make_scene, "clouds": make_cloud_scene, "speckled": make_speckled_scene}[spec.kind]
    rng = np.random.default_rng(spec.seed)
    (root / "scenes").mkdir()
    (root / "masks").mkdir()
    (root / "filelists").mkdir()
    n = spec.n_train + spec.n_val + spec.n_test
    names = [f"scene_{i:03d}.tif" for i in range(n)]
    for i, name in enumerate(names):
        scene_rng = np.random.default_rng([spec.seed, i])
        h, w = (_odd_size(scene_rng, spec) for _ in range(2))
        image, mask = generate(scene_rng, h, w, spec.bands)
        _write_scene(root / "scenes" / name, image, band_first=i % 2 == 0, tiled=i % 3 != 1)
        _write_mask(root / "masks" / name, mask, scale255=i % 4 == 3, compressed=i % 2 == 1)
    order = rng.permutation(n)
    splits = {"train": order[:spec.n_train], "val": order[spec.n_train:spec.n_train + spec.n_val],
              "test": order[spec.n_train + spec.n_val:]}
    for split, idx in splits.items():
        if not len(idx):
            continue  # an empty filelist is an error; an absent optional split is not
        (root / "filelists" / f"{split}.csv").write_text("".join(f"{names[j]}\n" for j in sorted(idx)))
    (root / MARKER).write_text(json.dumps(spec.marker(), indent=1) + "\n")


def _odd_size(rng: np.random.Generator, spec: DemoSpec) -> int:
    """A size that is no multiple of 8, so every padding and cropping path gets exercised."""
    size = int(rng.integers(spec.min_size, spec.max_size))
    return size + 1 if size % 8 == 0 else size


def make_scene(rng: np.random.Generator, h: int, w: int, bands: int) -> tuple[np.ndarray, np.ndarray]:
    """One scene (bands, h, w) uint16 and its 0/1 water mask (h, w) uint8."""
    # Land covers: the argmax of smooth random fields gives blobby, natural-looking patches.
    fields = np.stack([smooth_noise(rng, h, w, sigma=rng.uniform(8, 20)) for _ in LAND_COVERS])
    cover = np.argmax(fields, axis=0)
    reflectance = LAND_COVERS[cover].transpose(2, 0, 1)  # (4, h, w)
    # Water: lakes from a thresholded smooth field plus one meandering river.
    target = rng.uniform(0.06, 0.26)
    lakes = smooth_noise(rng, h, w, sigma=rng.uniform(6, 14))
    water = lakes > np.quantile(lakes, 1 - target * 0.8)
    water |= _river(rng, h, w)
    # Mixed pixels at shores: blend with a softened copy of the mask.
    soft = np.clip(blur(water.astype(np.float64), 1.0) * 1.2 - 0.1, 0, 1)
    turbidity = np.clip(smooth_noise(rng, h, w, sigma=10.0) * 0.5 + 0.5, 0, 1)
    water_refl = WATER[:, None, None] + TURBID[:, None, None] * turbidity[None]
    reflectance = reflectance * (1 - soft) + water_refl * soft
    reflectance = more_bands(rng, reflectance, bands)
    # Texture within covers, a haze gradient (strongest in blue), sensor noise.
    reflectance = reflectance * (1 + 0.2 * smooth_noise(rng, h, w, sigma=2.0))
    haze = 0.03 * (np.linspace(0, 1, w)[None, :] * rng.uniform(0.2, 1) + rng.uniform(0, 0.5))
    reflectance = reflectance + haze[None] * np.linspace(1, 0.2, bands)[:, None, None]
    reflectance = reflectance + rng.normal(0, 0.006, reflectance.shape)
    image = np.clip(reflectance * 10000 + 1000, 1, 65535).astype(np.uint16)  # L2A-style DN, never 0
    valid = footprint(rng, h, w)
    image[:, ~valid] = NODATA
    mask = (water & valid).astype(np.uint8)
    return image, mask


def _river(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w]
    phase = rng.uniform(0, 2 * np.pi)
    centre = h * rng.uniform(0.2, 0.8) + h * 0.12 * np.sin(xx / w * rng.uniform(2, 6) + phase)
    width = rng.uniform(2, 6)
    return np.abs(yy - centre) < width


def _write_scene(path: Path, image: np.ndarray, band_first: bool, tiled: bool) -> None:
    data = image if band_first else np.ascontiguousarray(image.transpose(1, 2, 0))
    tiling = dict(tile=(64, 64), compression="zlib") if tiled else {}
    tifffile.imwrite(path, data, photometric="minisblack", planarconfig="separate" if band_first else "contig",
                     metadata=None, extratags=[(GDAL_NODATA_TAG, "s", 0, str(NODATA), True)], **tiling)


def _write_mask(path: Path, mask: np.ndarray, scale255: bool, compressed: bool) -> None:
    data = mask * np.uint8(255) if scale255 else mask
    tifffile.imwrite(path, data, photometric="minisblack", metadata=None,
                     compression="zlib" if compressed else None)
