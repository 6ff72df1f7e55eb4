"""The deployable form of a trained model, and its ONNX export for any input size.

A deployed model takes the *raw* values of the scene bands it was trained on, (N, C, H, W)
float32 with no-data pixels set to NaN, and returns the positive-class probability (N, 1, H, W): the
data set's normalization, the zeroing of invalid pixels and the final sigmoid are inside the
graph, so a user of the ONNX file needs nothing from segtrain but the band order, which is
stored in the file with everything else prediction needs (:class:`ModelMeta`).

Exporter: the TorchScript-based exporter (``torch.onnx.export(..., dynamo=False)``), opset 17.
Measured with torch 2.14.1 on every architecture segtrain builds, dynamic batch, height and
width, compared with PyTorch on unseen non-square shapes:

- TorchScript: the segtrain U-Net and smp Unet, UnetPlusPlus, FPN, DeepLabV3(+), Linknet,
  MAnet, PAN and Segformer export and agree (max |logit diff| <= 7e-5); PSPNet and UPerNet
  (adaptive pooling of a dynamic size) *fail to export*, loudly. Under a second per model.
- dynamo (``dynamo=True``): PAN and UPerNet fail to export; PSPNet exports but fails at run
  time on other shapes; Segformer silently loses the dynamic batch. 5 to 50 s per model.

So the TorchScript exporter covers more models and fails only loudly; it also exists in every
torch the package supports (>= 2.4, where ``dynamo=True`` is not yet usable). It is deprecated
since torch 2.9 (a DeprecationWarning, silenced here); torch is pinned in envs/requirements.txt,
and every export is verified against PyTorch before it is written, so an exporter change
cannot produce a wrong file unnoticed. Opset 17: the exporter's default opset in torch 2.4 to
2.8 (so its most exercised one), within what every supported onnxruntime (>= 1.18) runs on CPU
and CUDA, and above the 13 that per-channel int8 quantization (QDQ) needs.
"""
from __future__ import annotations

import hashlib
import io
import json
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Mapping, Optional

import numpy as np
import torch
from torch import nn

from segtrain import __version__, calibration
from segtrain.config import to_dict, to_yaml
from segtrain.data.normalization import Normalization, normalization, tails
from segtrain.errors import UserError
from segtrain.fsutil import atomic_open
from segtrain.models import positive_probability
from segtrain.run.checkpoint import TrainedModel

OPSET = 17
INPUT, OUTPUT = "bands", "probability"
TOLERANCE = 1e-4  # max |probability difference| between onnxruntime and PyTorch, fp32 on CPU
EXPORT_DIR, MODEL_FILE = "export", "model.onnx"
NODATA_RULE = ("a pixel is no-data when every band in 'bands' equals the no-data value or any of them is NaN; the "
               "no-data value is 'nodata', or where that is null the scene's GDAL_NODATA tag, else 0 for an integer "
               "scene and none for a float scene (NaN only)")
# How `segtrain predict` turns the model's tiles into a scene's mask: stored in every export
# (metadata "prediction") so that a user of the ONNX file alone can reproduce it
# (examples/onnx_predict.py does, and a test checks it against `segtrain predict`).
PREDICTION = {
    "nodata": NODATA_RULE + "; give no-data pixels to the model as NaN in every band",
    "tiles": "tile x tile windows (default tile_size) at origins 0, s, 2s, ... along each axis, s = tile - overlap "
             "(default overlap), until a window reaches the far edge; the part of a window past the scene's edge "
             "is no-data (NaN); windows without a valid pixel are not run; the rest in row-major order, in batches",
    "blending": "per pixel, sum(w * p) / sum(w) in float32 over the windows covering it, added in row-major window "
                "order, with w = window(y, x) where the pixel is valid, else 0; window = outer(g, g) / max, "
                "g(i) = exp(-0.5 * ((i - (tile - 1) / 2) / (tile / 8)) ** 2), as float32; a pixel with sum(w) = 0 "
                "is no-data",
    "mask": "uint8: 1 where the blended probability is strictly above 'threshold', 0 where not, 255 no-data",
}


@dataclass(frozen=True)
class ModelMeta:
    """What prediction needs besides the weights; stored as metadata in every exported model."""
    bands: list[int]  # 0-based file bands the model reads, in input-channel order
    scene_bands: Optional[int]  # bands of the training scenes (None when unknown)
    tile_size: int  # training tile size: the default prediction tile
    overlap: int  # data.overlap: the default prediction overlap
    threshold: float  # a pixel is positive when its probability is above this: calibrated, else train.threshold
    nodata: Optional[float]  # data.nodata of the training config (None: each scene's own value)

    @classmethod
    def from_trained(cls, trained: TrainedModel) -> "ModelMeta":
        data = trained.config.data
        bands = list(range(trained.in_channels)) if data.bands is None else list(data.bands)
        if trained.stats is not None:
            scene_bands: Optional[int] = len(trained.stats["mean"])
        else:
            scene_bands = trained.in_channels if data.bands is None else None
        calibrated = calibration.stored_threshold(trained.path, trained.position["step"])
        return cls(bands=bands, scene_bands=scene_bands, tile_size=data.tile_size, overlap=data.overlap,
                   threshold=trained.config.train.threshold if calibrated is None else calibrated, nodata=data.nodata)

    def to_props(self) -> dict[str, str]:
        return {key: json.dumps(value) for key, value in asdict(self).items()}

    @classmethod
    def from_props(cls, props: Mapping[str, str], source: str) -> "ModelMeta":
        """Read back :meth:`to_props`; a model without segtrain metadata is a UserError naming ``source``."""
        try:
            return cls(**{name: json.loads(props[name]) for name in cls.__dataclass_fields__})
        except KeyError as exc:
            raise UserError(f"{source}: not a segtrain model (metadata {exc} missing); "
                            "export it with `segtrain export RUN`") from None
        except (ValueError, TypeError) as exc:
            raise UserError(f"{source}: unreadable segtrain metadata: {exc}") from None


class DeployedModel(nn.Module):
    """Raw bands (N, C, H, W), no-data as NaN -> positive-class probability (N, 1, H, W).

    The normalization is the data set's, operation for operation (robust: clip and log-scale;
    then ``x * (1/std) - mean/std`` in float32; invalid pixels set to 0,
    :mod:`segtrain.data.normalization`), so a tile gives the network exactly the input it saw
    in training. A pixel is invalid when any of its bands is NaN: segtrain's one no-data rule
    (:data:`NODATA_RULE`), whose value part the caller applies by setting such pixels to NaN;
    the probability returned there means nothing.
    """

    def __init__(self, net: nn.Module, norm: Normalization):
        super().__init__()
        self.net = net
        self.robust = norm.robust
        for name, value in norm.tensors().items():
            self.register_buffer(name, value)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        invalid = torch.isnan(x).any(dim=1, keepdim=True)
        if self.robust:
            x = tails(x, self.low, self.high, self.inv_spread, self.log)
        z = x * self.scale.reshape(1, -1, 1, 1) - self.shift.reshape(1, -1, 1, 1)
        z = torch.where(invalid, torch.zeros_like(z), z)
        return positive_probability(self.net(z))


def model_normalization(trained: TrainedModel, bands: list[int]) -> Normalization:
    """The training data set's :class:`Normalization` of ``bands``; (1, 0) for ``data.normalize: none``."""
    norm = None
    if trained.stats is not None:
        norm = normalization(trained.config.data.normalize, trained.stats, bands, source=str(trained.path))
    if norm is None:
        return Normalization(np.ones(len(bands), np.float32), np.zeros(len(bands), np.float32))
    return norm


def deploy(trained: TrainedModel) -> tuple[DeployedModel, ModelMeta]:
    """The raw-input model of a trained run (eval mode, CPU) and its metadata."""
    meta = ModelMeta.from_trained(trained)
    model = DeployedModel(trained.model, model_normalization(trained, meta.bands))
    return model.eval(), meta


def config_hash(trained: TrainedModel) -> str:
    """SHA-256 of the resolved config (canonical JSON): equal hashes, equal configs."""
    return hashlib.sha256(json.dumps(to_dict(trained.config), sort_keys=True).encode()).hexdigest()


@dataclass
class ExportResult:
    path: Path
    shapes: list[tuple[int, ...]]  # input shapes verified against PyTorch
    max_abs_diff: float  # largest |probability difference| seen on them


def verification_shapes(meta: ModelMeta) -> list[tuple[int, ...]]:
    """The export shape, and two non-square shapes of other batch sizes, neither seen at export."""
    t, c = meta.tile_size, len(meta.bands)
    return [(1, c, t, t), (2, c, t // 2 + 3, t + 21), (1, c, 2 * t + 5, t // 3 + 2)]


def export_onnx(trained: TrainedModel, path: str | Path) -> ExportResult:
    """Export, check, verify and then atomically write ``path``; nothing is written on failure."""
    import onnx

    model, meta = deploy(trained)
    proto = _to_onnx(model, meta, trained)
    _add_metadata(proto, meta, trained)
    onnx.checker.check_model(proto, full_check=True)
    data = proto.SerializeToString()
    shapes = verification_shapes(meta)
    diff = verify(model, data, shapes, trained.stats, meta.bands)
    if not diff <= TOLERANCE:
        raise UserError(f"{trained.path}: the ONNX export of model.arch {trained.config.model.arch} differs from "
                        f"PyTorch by {diff:.2e} (tolerance {TOLERANCE:.0e}); nothing written")
    with atomic_open(path, "wb") as f:
        f.write(data)
    return ExportResult(Path(path), shapes, diff)


def _to_onnx(model: DeployedModel, meta: ModelMeta, trained: TrainedModel):
    import onnx

    example = torch.zeros(1, len(meta.bands), meta.tile_size, meta.tile_size)
    axes = {0: "batch", 2: "height", 3: "width"}
    buffer = io.BytesIO()
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore", DeprecationWarning)  # the TorchScript exporter, see above
            warnings.simplefilter("ignore", torch.jit.TracerWarning)  # shape checks, verified below
            torch.onnx.export(model, (example,), buffer, dynamo=False, opset_version=OPSET,
                              input_names=[INPUT], output_names=[OUTPUT],
                              dynamic_axes={INPUT: axes, OUTPUT: axes}, do_constant_folding=True)
    except Exception as exc:  # the exporter's many error types all mean: this architecture cannot go
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(f"model.arch: {trained.config.model.arch} (from {trained.path}) cannot be exported to ONNX "
                        f"for any input size: {first}") from None
    return onnx.load_from_string(buffer.getvalue())


def _add_metadata(proto, meta: ModelMeta, trained: TrainedModel) -> None:
    stats = None if trained.stats is None else {k: v for k, v in trained.stats.items() if k != "scenes"}
    props = {
        **meta.to_props(),
        "input": f"{INPUT}: raw values of the file bands listed in 'bands', float32 (N, C, H, W), "
                 "any N, H, W; no-data pixels as NaN",
        "prediction": json.dumps(PREDICTION),
        "output": f"{OUTPUT}: positive-class probability, float32 (N, 1, H, W)",
        "normalize": trained.config.data.normalize,
        "stats": json.dumps(stats),
        "calibration": json.dumps(calibration.stored_entry(trained.path, trained.position["step"])),
        "config_hash": config_hash(trained),
        "config": to_yaml(trained.config),
        "checkpoint": json.dumps({"file": trained.path.name, **trained.position}),
        "segtrain_version": __version__,
        "exporter": f"torch {torch.__version__} TorchScript exporter, opset {OPSET}",
    }
    for key, value in props.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    proto.producer_name, proto.producer_version = "segtrain", __version__
    proto.doc_string = f"segtrain {trained.config.model.arch} model; {props['input']}"


def verify(model: DeployedModel, onnx_bytes: bytes, shapes: list[tuple[int, ...]],
           stats: Optional[dict], bands: list[int]) -> float:
    """Largest |probability difference| between onnxruntime (CPU) and PyTorch over ``shapes``.

    Inputs look like scenes: per-band values around the training mean and spread, with a
    no-data corner (NaN) in every sample, so the no-data path is compared too.
    """
    import onnxruntime as ort

    session = ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    mean = np.asarray(stats["mean"])[bands] if stats else np.zeros(len(bands))
    std = np.asarray(stats["std"])[bands] if stats else np.ones(len(bands))
    worst = 0.0
    for shape in shapes:
        x = (mean[:, None, None] + std[:, None, None] * rng.standard_normal(shape)).astype(np.float32)
        x[:, :, : shape[2] // 4, : shape[3] // 3] = np.nan
        with torch.no_grad():
            expected = model(torch.from_numpy(x)).numpy()
        got = session.run([OUTPUT], {INPUT: x})[0]
        if got.shape != expected.shape:
            return float("inf")
        worst = max(worst, float(np.abs(got - expected).max()))
    return worst
