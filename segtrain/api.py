"""segtrain from Python, for notebooks: a trained model on arrays and scenes, a run's metrics.

    from segtrain import api
    model = api.load("runs/NAME")                  # or api.load("model.onnx"); checkpoint="last"
    mask = model.predict(image)                    # (bands, H, W) array -> uint8 1 / 0 / 255 no-data
    prob = model.predict_proba(image)              # float32, NaN no-data
    model.predict_scene("scene.tif", "out/")       # what `segtrain predict` writes
    api.metrics("runs/NAME")                       # metrics.jsonl as a pandas DataFrame

Everything goes through the code `segtrain predict` runs (tiles, blending, threshold, the one
no-data rule), so an array gives the mask the command writes for the same pixels. pandas is
optional: :func:`metric_records` gives the same rows as dicts without it.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import numpy as np

from segtrain.data.reader import NodataRule
from segtrain.export import ModelMeta
from segtrain.predict import (MASK_NODATA, Backend, PredictOptions, ScenePrediction, check_tiling, load_backend,
                              predict_scene, predict_strips)
from segtrain.run.metrics_log import read_metrics

__all__ = ["Model", "load", "metrics", "metric_records"]


class _ArrayScene:
    """An in-memory (bands, H, W) scene read the way :class:`segtrain.data.reader.SceneReader` reads a file."""

    segment_rows = 1

    def __init__(self, image: np.ndarray, meta: ModelMeta, nodata: Optional[float]):
        if image.ndim != 3:
            raise ValueError(f"expected an array (bands, H, W), got shape {image.shape}")
        if max(meta.bands) >= image.shape[0]:
            raise ValueError(f"the array has {image.shape[0]} bands, but the model reads bands {meta.bands}")
        self._raw = image[meta.bands]
        if nodata is None:
            nodata = meta.nodata if meta.nodata is not None else (0.0 if image.dtype.kind in "iu" else None)
        self._rule = NodataRule(nodata, image.dtype)
        self.bands, self.height, self.width = self._raw.shape

    def read(self, y: int, x: int, h: int, w: int) -> tuple[np.ndarray, np.ndarray, None]:
        raw = self._raw[:, y:y + h, x:x + w]
        return raw.astype(np.float32), self._rule.valid(raw), None


class Model:
    """A trained model (a run's checkpoint in PyTorch, or an exported ``.onnx`` in onnxruntime)
    with the settings `segtrain predict` uses: ``meta`` (bands, tile size, overlap, threshold, no-data)."""

    def __init__(self, backend: Backend):
        self.backend = backend
        self.meta: ModelMeta = backend.meta

    @property
    def module(self):
        """The deployed ``torch.nn.Module`` (raw bands, NaN no-data -> probability) of a run; None for ONNX."""
        return getattr(self.backend, "model", None)

    def predict_proba(self, image: np.ndarray, nodata: Optional[float] = None, tile: Optional[int] = None,
                      overlap: Optional[int] = None, batch_size: int = 16) -> np.ndarray:
        """Positive-class probability (H, W) float32 of a scene given as an array of all its bands
        (bands, H, W), raw values; NaN where no-data. ``nodata`` is the scene's no-data value (the
        GDAL_NODATA a file would carry; default: the model's ``data.nodata``, else 0 for integer
        arrays, NaN only for float ones)."""
        scene = _ArrayScene(np.asarray(image), self.meta, nodata)
        tile = self.meta.tile_size if tile is None else tile
        overlap = self.meta.overlap if overlap is None else overlap
        check_tiling(tile, overlap, batch_size)
        out = np.empty((scene.height, scene.width), np.float32)
        for strip in predict_strips(scene, self.backend, tile, overlap, batch_size, read_ahead=False):
            out[strip.y:strip.y + len(strip.probs)] = np.where(strip.covered, strip.probs, np.float32(np.nan))
        return out

    def predict(self, image: np.ndarray, threshold: Optional[float] = None, **kwargs: Any) -> np.ndarray:
        """The mask (H, W) uint8 of :meth:`predict_proba`: 1 strictly above the threshold (default
        the model's), 0 otherwise, 255 no-data, as `segtrain predict` writes it."""
        prob = self.predict_proba(image, **kwargs)
        threshold = self.meta.threshold if threshold is None else threshold
        return np.where(np.isnan(prob), MASK_NODATA, prob > threshold).astype(np.uint8)

    def predict_scene(self, scene: str | Path, out_dir: str | Path, prob: bool = False, cog: bool = False,
                      batch_size: int = 16) -> ScenePrediction:
        """Write ``<stem>_mask.tif`` (and ``_prob.tif``) of a scene file into ``out_dir``, georeferenced,
        exactly as `segtrain predict` does (an existing output is replaced)."""
        options = PredictOptions(batch_size=batch_size, write_prob=prob, progress=False, overviews=cog)
        return predict_scene(scene, self.backend, out_dir, options)


def load(model: str | Path, checkpoint: str = "best", device: str = "cpu") -> Model:
    """A run directory (its ``best`` or ``last`` checkpoint, PyTorch) or an exported ``.onnx`` file."""
    return Model(load_backend(model, device, checkpoint))


def metric_records(run: str | Path) -> list[dict[str, Any]]:
    """Every record of a run's ``metrics.jsonl``: training steps (``split`` "train") and validations."""
    path = Path(run) / "metrics.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no metrics (is {run} a segtrain run directory?)")
    return list(read_metrics(path))


def metrics(run: str | Path):
    """A run's metrics as a pandas DataFrame, one row per record (needs pandas: ``pip install pandas``)."""
    try:
        import pandas
    except ImportError:
        raise ImportError("segtrain.api.metrics needs pandas (pip install pandas); "
                          "metric_records(run) gives the same rows as dicts") from None
    return pandas.DataFrame.from_records(metric_records(run))
