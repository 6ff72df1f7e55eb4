"""Whole-scene prediction of any size, with PyTorch or onnxruntime, in bounded memory.

A scene is processed one row of tiles at a time: the row's strip of the scene is read, cut
into overlapping tiles (the data pipeline's grid and padding), tiles are run in batches (also
across rows) and blended (the data pipeline's Stitcher and window). Rows of the result are
final as soon as no later tile reaches them; they are written out at once. So memory holds
a few tile rows, never the scene: measured on a 10980 x 10980 4-band scene with 256 px tiles,
writing mask and probabilities, the process grew by 340 MB (input strip, its tiles, blending
accumulators of two tile rows, output tiles being compressed), where whole-scene accumulators
and result alone would take 1.5 GB. Reading, tiling and stitching ran at 17 Mpx/s there, so
the model, not this pipeline, sets the speed.

No-data pixels (the reader's validity: the no-data value in every band, or NaN) reach the
model as NaN, which the deployed model turns into the zeros it saw in training (see
:mod:`segtrain.export`), and stay no-data in the output.
"""
from __future__ import annotations

import queue
import threading
import time
from collections import deque
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Optional, Protocol

import numpy as np
import tifffile
import torch

from segtrain.data.reader import SceneReader
from segtrain.data.scene import check_scene_dtype, read_info
from segtrain.data.stitching import blend_window
from segtrain.data.tiling import axis_origins, cut_tile
from segtrain.device import select_device
from segtrain.errors import UserError
from segtrain.export import INPUT, OUTPUT, ModelMeta, deploy
from segtrain.overviews import OverviewTiffWriter
from segtrain.run.checkpoint import load_trained
from segtrain.run.console import Progress
from segtrain.tiff_writer import TiledTiffWriter

MASK_NODATA = 255
# GeoTIFF tags copied from a scene to its outputs, so they overlay it in any GIS:
# ModelPixelScale, ModelTiepoint, ModelTransformation, GeoKeyDirectory, GeoDoubleParams, GeoAsciiParams.
GEO_TAGS = (33550, 33922, 34264, 34735, 34736, 34737)


# ---- backends ---------------------------------------------------------------------------------
class Backend(Protocol):
    """A model that maps raw tiles (N, C, t, t) float32, no-data NaN, to probabilities (N, t, t)."""
    meta: ModelMeta
    name: str

    def __call__(self, batch: np.ndarray) -> np.ndarray: ...


class TorchBackend:
    """A run's checkpoint, in PyTorch (eager), on CPU or CUDA."""

    def __init__(self, run_dir: str | Path, checkpoint: str = "best", device: str = "auto"):
        self.trained = load_trained(run_dir, checkpoint)
        model, self.meta = deploy(self.trained)
        self.device = select_device(device, "--device")
        self.model = model.to(self.device)
        self.name = f"pytorch ({self.device.type})"

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return self.model(torch.from_numpy(batch).to(self.device))[:, 0].float().cpu().numpy()


class OnnxBackend:
    """An exported ``.onnx`` model in onnxruntime, with the CUDA provider where there is one."""

    def __init__(self, path: str | Path, device: str = "auto"):
        import onnxruntime as ort

        path = Path(path)
        if not path.is_file():
            raise UserError(f"{path}: model file not found")
        available = ort.get_available_providers()
        if device == "cuda" and "CUDAExecutionProvider" not in available:
            raise UserError(f"--device: cuda requested but this onnxruntime has no CUDA provider ({', '.join(available)})")
        use_cuda = device != "cpu" and "CUDAExecutionProvider" in available
        providers = ["CUDAExecutionProvider", "CPUExecutionProvider"] if use_cuda else ["CPUExecutionProvider"]
        try:
            self.session = ort.InferenceSession(str(path), providers=providers)
        except Exception as exc:  # onnxruntime raises its own exception types for unreadable models
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise UserError(f"{path}: not a usable ONNX model: {first}") from None
        self.meta = ModelMeta.from_props(self.session.get_modelmeta().custom_metadata_map, str(path))
        self.path = path
        self.name = f"onnxruntime ({self.session.get_providers()[0]})"

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        return self.session.run([OUTPUT], {INPUT: batch})[0][:, 0]


def load_backend(model: str | Path, device: str = "auto", checkpoint: str = "best") -> Backend:
    """``model`` is an ``.onnx`` file (onnxruntime) or a run directory (PyTorch, its checkpoint)."""
    model = Path(model)
    if model.suffix.lower() == ".onnx":
        return OnnxBackend(model, device)
    if model.is_dir():
        return TorchBackend(model, checkpoint, device)
    raise UserError(f"{model}: not found, or neither an .onnx file nor a run directory")


# ---- opening scenes ---------------------------------------------------------------------------
def open_scene(scene: str | Path, meta: ModelMeta, mask: str | Path | None = None) -> SceneReader:
    """A reader of the bands the model needs; a scene with other bands than the training scenes
    is a UserError naming it (a 3-band scene for a 4-band model would give plausible nonsense)."""
    info = read_info(scene)
    check_scene_dtype(info)
    if meta.scene_bands is not None and info.bands != meta.scene_bands:
        raise UserError(f"{scene}: has {info.bands} bands, but the model was trained on {meta.scene_bands}-band "
                        f"scenes (it reads bands {meta.bands})")
    if max(meta.bands) >= info.bands:
        raise UserError(f"{scene}: has {info.bands} bands, but the model reads bands {meta.bands}")
    return SceneReader(scene, mask, bands=meta.bands, nodata=meta.nodata)


# ---- tiling, inference, stitching -------------------------------------------------------------
@dataclass
class Strip:
    """Final rows ``[y, y + len(probs))`` of a scene's prediction."""
    y: int
    probs: np.ndarray  # float32 (h, W); 0 where not covered
    covered: np.ndarray  # bool (h, W): a valid pixel that some tile predicted


@dataclass
class Tile:
    """One tile of a row: its column, its input until predicted, its validity, then its probabilities."""
    x: int
    image: Optional[np.ndarray]  # (C, t, t) raw, NaN where invalid; dropped once predicted
    valid: np.ndarray
    prob: Optional[np.ndarray] = None


class StripStitcher:
    """Blends tile rows into final strips in place, keeping only the rows tiles still reach.

    Tile row ``r`` (origin ``y_r``) completes the rows ``[y_r, y_{r+1})``: every tile covering
    them is in rows ``<= r``. Each tile is added once to accumulators that start at the first
    row not yet final and reach as far as the tiles added so far; the final rows are divided
    out and dropped. Every pixel receives the same additions in the same order as in a
    whole-scene :class:`Stitcher`, so the result is bit-identical to it.
    """

    def __init__(self, height: int, width: int, tile: int, overlap: int, window: str = "gaussian"):
        if not 0 <= overlap < tile:
            raise ValueError(f"overlap must be in [0, tile), got overlap={overlap} tile={tile}")
        self.height, self.width, self.tile = height, width, tile
        self.ys = axis_origins(height, tile, tile - overlap)
        self._window = blend_window(tile, window)
        self._top = 0  # scene row of the accumulators' first row
        self._sum = np.zeros((0, width), np.float32)
        self._weight = np.zeros((0, width), np.float32)
        self._next = 0

    def add_row(self, tiles: list[Tile]) -> Strip:
        """Add the next tile row's predicted tiles (any that were skipped just absent); return its strip."""
        r = self._next
        y = self.ys[r]
        end = self.ys[r + 1] if r + 1 < len(self.ys) else self.height
        self._reach(min(y + self.tile, self.height))
        for t in tiles:
            self._add(t.prob, y - self._top, t.x, t.valid)
        n = end - self._top
        covered = self._weight[:n] > 0
        probs = np.divide(self._sum[:n], self._weight[:n], out=np.zeros((n, self.width), np.float32), where=covered)
        self._sum, self._weight, self._top = self._sum[n:], self._weight[n:], end
        self._next += 1
        return Strip(y, probs, covered)

    def _reach(self, bottom: int) -> None:
        """Grow the accumulators (zeros) down to scene row ``bottom``."""
        extra = bottom - self._top - len(self._sum)
        if extra > 0:
            zeros = np.zeros((extra, self.width), np.float32)
            self._sum = np.concatenate([self._sum, zeros])
            self._weight = np.concatenate([self._weight, zeros])

    def _add(self, prob: np.ndarray, y: int, x: int, valid: np.ndarray) -> None:
        h, w = min(self.tile, len(self._sum) - y), min(self.tile, self.width - x)
        weight = self._window[:h, :w] * valid[:h, :w]
        self._sum[y:y + h, x:x + w] += prob[:h, :w] * weight
        self._weight[y:y + h, x:x + w] += weight


class StripReader:
    """Full-width strips of a scene, top to bottom, overlapping: each segment of the file
    (a TIFF tile row) is decoded once.

    Strips of tile rows overlap (by the tile overlap) and rarely align with the file's tiles,
    so reading each strip on its own decoded every file tile about twice (four times with
    the overlaps of 256 px tiles); here reads are extended to the end of the file's tile row,
    and the rows a later strip needs are kept, already converted and with no-data as NaN.
    """

    def __init__(self, reader: SceneReader):
        self.reader = reader
        self._top = 0  # scene row of the buffer's first row
        self._image = np.zeros((reader.bands, 0, reader.width), np.float32)
        self._valid = np.zeros((0, reader.width), bool)

    def read(self, y: int, h: int) -> tuple[np.ndarray, np.ndarray]:
        """Rows ``[y, y + h)`` (clipped to the scene): image float32 (C, h, W), NaN where invalid, and validity."""
        if y < self._top:
            raise ValueError(f"strips are read top to bottom: row {y} is above row {self._top}")
        end = min(y + h, self.reader.height)
        have = self._top + self._valid.shape[0]
        if have < end:
            block = self.reader.segment_rows
            stop = min(self.reader.height, -(-end // block) * block)
            start = max(have, y)
            image, valid, _ = self.reader.read(start, 0, stop - start, self.reader.width)
            image[:, ~valid] = np.nan
            keep = slice(y - self._top, None) if have > y else slice(0, 0)
            self._image = np.concatenate([self._image[:, keep], image], axis=1)
            self._valid = np.concatenate([self._valid[keep], valid])
            self._top = y if have > y else start
        else:
            self._image, self._valid = self._image[:, y - self._top:], self._valid[y - self._top:]
            self._top = y
        return self._image[:, :end - y], self._valid[:end - y]


@dataclass
class Timing:
    """Where the time of a prediction went; ``model_seconds`` is inside the backend only."""
    pixels: int = 0  # of the scenes
    seconds: float = 0.0
    model_seconds: float = 0.0

    @property
    def megapixels_per_second(self) -> float:
        return self.pixels / 1e6 / self.seconds if self.seconds else float("nan")


def check_tiling(tile: int, overlap: int, batch_size: int) -> None:
    """Prediction settings a user may give on the command line, named by their flags."""
    if tile < 1:
        raise UserError(f"--tile: must be at least 1, got {tile}")
    if not 0 <= overlap < tile:
        raise UserError(f"--overlap: must be in [0, tile size {tile}), got {overlap}")
    if batch_size < 1:
        raise UserError(f"--batch-size: must be at least 1, got {batch_size}")


def predict_strips(reader: SceneReader, backend: Backend, tile: int, overlap: int, batch_size: int,
                   timing: Optional[Timing] = None, read_ahead: bool = True) -> Iterator[Strip]:
    """The scene's stitched probabilities, top to bottom, one final strip per tile row.

    Tiles without a valid pixel are skipped (their area stays not covered); the others are
    batched in order, across row boundaries, so every batch but the last is full. With
    ``read_ahead`` a thread reads and cuts the next tile rows while the model runs (decoding
    and inference release the GIL); batches are gathered in one preallocated buffer.
    """
    check_tiling(tile, overlap, batch_size)
    timing = timing if timing is not None else Timing()
    start = time.perf_counter()
    stitcher = StripStitcher(reader.height, reader.width, tile, overlap)
    xs = axis_origins(reader.width, tile, tile - overlap)
    buffer = np.empty((batch_size, reader.bands, tile, tile), np.float32)
    rows: deque[list[Tile]] = deque()
    pending: list[Tile] = []
    strips = StripReader(reader)
    with _RowCutter(strips, stitcher.ys, xs, tile) if read_ahead else \
            nullcontext(_cut_row(strips, y, xs, tile) for y in stitcher.ys) as cut_rows:
        for row in cut_rows:
            rows.append(row)
            pending += row
            while len(pending) >= batch_size:
                _infer(backend, pending[:batch_size], buffer, timing)
                del pending[:batch_size]
            while rows and all(t.prob is not None for t in rows[0]):
                yield stitcher.add_row(rows.popleft())
    if pending:
        _infer(backend, pending, buffer, timing)
    while rows:
        yield stitcher.add_row(rows.popleft())
    timing.pixels += reader.height * reader.width
    timing.seconds += time.perf_counter() - start


class _RowCutter:
    """The tile rows of a scene, read and cut by a thread up to AHEAD rows ahead of their use."""

    AHEAD = 2

    def __init__(self, strips: StripReader, ys: list[int], xs: list[int], tile: int):
        self._rows: queue.Queue = queue.Queue(maxsize=self.AHEAD)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(strips, ys, xs, tile), name="read tiles", daemon=True)

    def __enter__(self) -> Iterator[list[Tile]]:
        self._thread.start()
        return self._iterate()

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        while self._thread.is_alive():  # unblock a thread waiting for room in the queue
            try:
                self._rows.get(timeout=0.05)
            except queue.Empty:
                pass
        self._thread.join()

    def _iterate(self) -> Iterator[list[Tile]]:
        while (item := self._rows.get()) is not _END:
            if isinstance(item, BaseException):
                raise item
            yield item

    def _run(self, strips: StripReader, ys: list[int], xs: list[int], tile: int) -> None:
        try:
            for y in ys:
                if self._stop.is_set():
                    return
                self._rows.put(_cut_row(strips, y, xs, tile))
            self._rows.put(_END)
        except BaseException as exc:  # raised in the consuming thread
            self._rows.put(exc)


def _cut_row(strips: StripReader, y: int, xs: list[int], tile: int) -> list[Tile]:
    """The tiles of the row at ``y`` that hold a valid pixel; invalid pixels and padding NaN."""
    image, valid = strips.read(y, tile)
    row = []
    for x in xs:
        patch, patch_valid = cut_tile(image, valid, 0, x, tile)
        if patch_valid.any():
            if patch_valid.all():
                row.append(Tile(x, patch, patch_valid))  # NaN already where invalid
            else:  # padding is a reflection of valid pixels: NaN it
                row.append(Tile(x, np.where(patch_valid, patch, np.float32(np.nan)), patch_valid))
    return row


def _infer(backend: Backend, tiles: list[Tile], buffer: np.ndarray, timing: Timing) -> None:
    batch = buffer[:len(tiles)]
    for i, t in enumerate(tiles):
        batch[i] = t.image
    start = time.perf_counter()
    probs = backend(batch)
    timing.model_seconds += time.perf_counter() - start
    for t, prob in zip(tiles, probs):
        t.prob, t.image = prob, None


# ---- writing ---------------------------------------------------------------------------------
_END = object()  # the last row of a scene


def georeference(scene: str | Path) -> list[tuple]:
    """The scene's GeoTIFF tags as tifffile ``extratags`` (empty for a plain TIFF)."""
    with tifffile.TiffFile(scene) as tif:
        return [(tag.code, tag.dtype, tag.count, tag.value, True) for tag in tif.pages[0].tags if tag.code in GEO_TAGS]


# ---- one scene, end to end ----------------------------------------------------------------------
@dataclass
class PredictOptions:
    tile: Optional[int] = None  # default: the model's training tile size
    overlap: Optional[int] = None  # default: the model's data.overlap
    batch_size: int = 16
    write_prob: bool = False
    progress: bool = True
    overviews: bool = False  # cloud-optimized GeoTIFFs with internal overviews (segtrain.overviews)
    read_ahead: bool = True  # read, decode and cut the next tile rows while the model runs


@dataclass
class ScenePrediction:
    scene: Path
    mask: Path
    prob: Optional[Path]
    timing: Timing = field(default_factory=Timing)


def output_paths(scene: Path, out_dir: Path) -> tuple[Path, Path]:
    return out_dir / f"{scene.stem}_mask.tif", out_dir / f"{scene.stem}_prob.tif"


def predict_scene(scene: str | Path, backend: Backend, out_dir: str | Path,
                  options: PredictOptions = PredictOptions()) -> ScenePrediction:
    """Write ``<stem>_mask.tif`` (uint8: 1 positive, 0 negative, 255 no-data) and optionally
    ``<stem>_prob.tif`` (float32, NaN no-data), georeferenced like the scene."""
    scene, out_dir = Path(scene), Path(out_dir)
    meta = backend.meta
    tile = meta.tile_size if options.tile is None else options.tile
    overlap = meta.overlap if options.overlap is None else options.overlap
    mask_path, prob_path = output_paths(scene, out_dir)
    result = ScenePrediction(scene, mask_path, prob_path if options.write_prob else None)
    writer = _writer_class(options)
    with open_scene(scene, meta) as reader:
        h, w = reader.height, reader.width
        tags = georeference(scene)
        progress = Progress(scene.name, h, enabled=options.progress)
        with writer(mask_path, h, w, np.uint8, str(MASK_NODATA), tags) as mask_out, \
                (nullcontext() if result.prob is None else writer(result.prob, h, w, np.float32, "nan", tags)) as prob_out:
            for strip in predict_strips(reader, backend, tile, overlap, options.batch_size, result.timing,
                                        options.read_ahead):
                mask_out.write(np.where(strip.covered, strip.probs > meta.threshold, MASK_NODATA).astype(np.uint8))
                if prob_out is not None:
                    prob_out.write(np.where(strip.covered, strip.probs, np.float32(np.nan)))
                done = strip.y + len(strip.probs)
                progress.update(done, done * w)
    return result


def _writer_class(options: PredictOptions) -> type:
    return OverviewTiffWriter if options.overviews else TiledTiffWriter
