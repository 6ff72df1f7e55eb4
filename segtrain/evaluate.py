"""Evaluation of a run on whole scenes, predicted the way deployment predicts them.

Training validates on tiles; a user's question is what the model does with a whole scene.
So each scene of the split goes through :func:`segtrain.predict.predict_strips` (tiles with
overlap, batched, blended), and the stitched strips are compared with the mask as they come:
confusion counts per scene, summed over the split before any ratio is taken, and
small previews of the scenes that end up worst and best. Memory stays bounded by a few strips
plus 2 x OVERLAYS previews, whatever the number and size of the scenes.

Outputs in ``<run>/eval/`` (or ``--out``): ``metrics.json`` (split-level scores, counts, the
unweighted mean over scenes), ``scenes.csv`` (one row per scene), ``worst.png`` and
``best.png`` (image, truth, probability, errors).
"""
from __future__ import annotations

import csv
import dataclasses
import io
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from segtrain import calibration
from segtrain.calibration import ProbabilityHistogram
from segtrain.data.layout import SceneFiles, filelist_path
from segtrain.errors import UserError
from segtrain.run.directory import EVAL, RunDir, locate_data
from segtrain.run.run_json import trained_to
from segtrain.fsutil import atomic_write_json, atomic_write_text
from segtrain.metrics import SCORES, ConfusionCounts, Counts, per_scene_scores, scores_from_counts
from segtrain.predict import Backend, Progress, Timing, TorchBackend, check_tiling, open_scene, predict_strips

OVERLAYS = 3  # scenes shown in each of worst.png and best.png
PREVIEW_SIZE = 512  # longest side of a scene in the overlays, pixels


@dataclass
class Preview:
    """A scene subsampled for display, in the form segtrain.run.plots.plot_samples takes."""
    image: np.ndarray
    truth: np.ndarray
    valid: np.ndarray
    prob: np.ndarray
    pred: np.ndarray

    def as_sample(self) -> dict[str, np.ndarray]:
        return dataclasses.asdict(self)


@dataclass
class SceneScore:
    name: str
    height: int
    width: int
    counts: Counts

    @property
    def scores(self) -> dict[str, float]:
        return scores_from_counts(*self.counts)

    @property
    def rank_key(self) -> tuple[float, int, str]:
        """Worst first: lowest IoU, then most wrong pixels (an empty truth with false positives
        has IoU 0 like a missed lake), then by name for a stable order."""
        iou = self.scores["iou"]
        return (iou if not math.isnan(iou) else math.inf, -(self.counts.fp + self.counts.fn), self.name)


class ExtremeScenes:
    """The previews of the OVERLAYS worst and best scenes seen so far; the rest are dropped."""

    def __init__(self, k: int):
        self.k = k
        self.kept: list[tuple[SceneScore, Preview]] = []

    def offer(self, score: SceneScore, preview: Preview) -> None:
        if math.isnan(score.scores["iou"]):
            return  # no valid pixel: nothing to show
        self.kept = sorted(self.kept + [(score, preview)], key=lambda item: item[0].rank_key)
        if len(self.kept) > 2 * self.k:
            del self.kept[self.k:-self.k]

    def worst_and_best(self) -> tuple[list, list]:
        """Disjoint: with fewer than 2k scenes, the worse half are 'worst', the better half 'best'."""
        n_worst = min(self.k, math.ceil(len(self.kept) / 2))
        return self.kept[:n_worst], self.kept[n_worst:][::-1][:self.k]


def score_scenes(backend: Backend, files: list[SceneFiles], tile: int, overlap: int, batch_size: int,
                 threshold: float, timing: Optional[Timing] = None, progress: bool = True,
                 overlays: int = 0, label: str = "eval",
                 hist: Optional[ProbabilityHistogram] = None) -> tuple[list[SceneScore], list, list]:
    """Confusion counts of every scene against its mask, and previews of the ``overlays`` worst
    and best scenes: (scores, worst, best), the last two as lists of (SceneScore, Preview).
    ``hist`` collects the probabilities of the same pixels, for scores at other thresholds."""
    timing = timing if timing is not None else Timing()
    bar = Progress(f"{label}: {len(files)} scenes", len(files), enabled=progress)
    extremes = ExtremeScenes(overlays)
    results = []
    for i, files_i in enumerate(files):
        score, preview = _score_scene(backend, files_i, tile, overlap, batch_size, threshold, timing, overlays > 0,
                                      hist)
        results.append(score)
        if preview is not None:
            extremes.offer(score, preview)
        bar.update(i + 1, timing.pixels)
    worst, best = extremes.worst_and_best()
    return results, worst, best


def _score_scene(backend: Backend, files: SceneFiles, tile: int, overlap: int, batch_size: int, threshold: float,
                 timing: Timing, want_preview: bool,
                 hist: Optional[ProbabilityHistogram]) -> tuple[SceneScore, Optional[Preview]]:
    counts = ConfusionCounts()
    parts: list[tuple[np.ndarray, ...]] = []
    with open_scene(files.scene, backend.meta, files.mask) as reader:
        step = max(1, math.ceil(max(reader.height, reader.width) / PREVIEW_SIZE))
        for strip in predict_strips(reader, backend, tile, overlap, batch_size, timing):
            h = len(strip.probs)
            image, _, truth = reader.read(strip.y, 0, h, reader.width)
            counts.update(torch.from_numpy(strip.probs), torch.from_numpy(truth), torch.from_numpy(strip.covered),
                          threshold)
            if hist is not None:
                hist.add_numpy(strip.probs, truth, strip.covered)
            if want_preview:
                rows = np.arange((-strip.y) % step, h, step)
                pred = (strip.probs > threshold) & strip.covered
                parts.append((image[:, rows, ::step], truth[rows, ::step], strip.covered[rows, ::step],
                              strip.probs[rows, ::step], pred[rows, ::step]))
        score = SceneScore(files.name, reader.height, reader.width, counts.counts())
    preview = None
    if want_preview:
        image, truth, valid, prob, pred = (np.concatenate(p, axis=-2) for p in zip(*parts))
        preview = Preview(image, truth.astype(np.float32), valid, prob, pred)
    return score, preview


def summarize(scores: list[SceneScore]) -> dict:
    """Split-level scores from summed counts, plus the unweighted mean over non-empty scenes."""
    total = Counts(*(sum(getattr(s.counts, f) for s in scores) for f in Counts._fields))
    per_scene = per_scene_scores({s.name: s.counts for s in scores})
    return {**scores_from_counts(*total), **total._asdict(), "scene_mean": per_scene["mean"],
            "scenes_in_mean": per_scene["n_scenes"], "empty_scenes": per_scene["n_empty"]}


def scenes_csv(scores: list[SceneScore]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["scene", "height", "width", "valid_pixels", *Counts._fields, *SCORES])
    for s in scores:
        values = s.scores
        writer.writerow([s.name, s.height, s.width, sum(s.counts), *s.counts,
                         *(f"{values[k]:.6f}" if not math.isnan(values[k]) else "" for k in SCORES)])
    return out.getvalue()


def plot_extremes(items: list[tuple[SceneScore, Preview]], path: Path, title: str) -> None:
    from segtrain.run.plots import plot_samples

    names = ", ".join(f"{s.name} (IoU {s.scores['iou']:.3f})" for s, _ in items)
    plot_samples([p.as_sample() for _, p in items], path, f"{title}: {names}")


OUTPUTS = ("metrics.json", "scenes.csv", "worst.png", "best.png")  # what evaluate_run writes into its folder


@dataclass
class EvalOptions:
    split: str = "test"
    checkpoint: str = "best"
    out: Optional[Path] = None  # default <run>/eval
    data_root: Optional[str] = None  # default: the run's data.root, else its recorded data_source
    batch_size: int = 16
    device: str = "auto"
    wandb: bool = True
    progress: bool = True
    threshold: Optional[float] = None  # default: the checkpoint's calibrated threshold, else train.threshold
    calibrate: bool = False  # calibrate the threshold on the whole val scenes first, and store it
    baseline: bool = True  # fit and score the per-pixel classifiers of segtrain.baseline too


def evaluate_run(run_dir: str | Path, options: EvalOptions = EvalOptions()) -> dict:
    """Evaluate a run's checkpoint on whole scenes of a split; write and return the metrics."""
    from segtrain.preflight import check_dataset

    calibration.check_threshold(options.threshold)
    if options.threshold is not None and options.calibrate:
        raise UserError("--threshold: give either --threshold or --calibrate, not both")
    run_dir = Path(run_dir)
    backend = TorchBackend(run_dir, options.checkpoint, options.device)
    cfg = backend.trained.config
    cfg.data.root = locate_data(run_dir, cfg.data.root, options.data_root)
    files = check_dataset(cfg).splits.get(options.split)
    if files is None:
        raise UserError(f"{filelist_path(cfg.data.root, options.split)}: filelist for split '{options.split}' not found")
    out = options.out or run_dir / EVAL
    check_tiling(backend.meta.tile_size, backend.meta.overlap, options.batch_size)
    default = cfg.train.threshold
    source = _choose_threshold(backend, options, cfg, run_dir)
    meta = backend.meta
    timing, hist = Timing(), ProbabilityHistogram()
    scores, worst, best = score_scenes(backend, files, meta.tile_size, meta.overlap, options.batch_size,
                                       meta.threshold, timing, options.progress, OVERLAYS, f"eval {options.split}", hist)
    metrics = {"split": options.split, "checkpoint": options.checkpoint, "step": backend.trained.position["step"],
               "run_step": trained_to(RunDir(run_dir).info.read()),
               "threshold": meta.threshold, "threshold_source": source, "tile_size": meta.tile_size,
               "overlap": meta.overlap, "scenes": len(scores), **summarize(scores),
               "at_default_threshold": {"threshold": default, **calibration.scores_at(hist, default)},
               "megapixels_per_second": timing.megapixels_per_second}
    if options.baseline:
        metrics["baseline"] = _baseline(cfg, meta, options.split, metrics["iou"])
    shown = {name: items for name, items in (("worst", worst), ("best", best)) if items}  # one scene: no best.png
    figures = {name: out / f"{name}.png" for name in shown}
    metrics["overlays"] = [path.name for path in figures.values()]
    atomic_write_json(out / "metrics.json", metrics)
    atomic_write_text(out / "scenes.csv", scenes_csv(scores))
    for name, items in shown.items():
        plot_extremes(items, figures[name], f"{run_dir.name} {options.split}, {name}")
    if options.wandb:
        _log_wandb(run_dir, backend, metrics, scores, figures, options.split)
    return metrics


def _choose_threshold(backend: TorchBackend, options: EvalOptions, cfg, run_dir: Path) -> str:
    """Set the backend's threshold (``--threshold``, a calibration made now on the val scenes, the
    checkpoint's stored calibration, or train.threshold) and say where it came from."""
    from segtrain.preflight import check_dataset

    if options.threshold is not None:
        backend.meta = dataclasses.replace(backend.meta, threshold=options.threshold)
        return "--threshold"
    step = backend.trained.position["step"]
    if options.calibrate:
        val = check_dataset(cfg).splits.get("val")
        if val is None:
            raise UserError(f"{filelist_path(cfg.data.root, 'val')}: --calibrate needs the val split")
        meta, hist = backend.meta, ProbabilityHistogram()
        score_scenes(backend, val, meta.tile_size, meta.overlap, options.batch_size, meta.threshold,
                     progress=options.progress, label="calibrate on val", hist=hist)
        found = calibration.calibrate(hist, step, "val scenes (eval --calibrate)", scenes=len(val),
                                      default=cfg.train.threshold)
        if found is None:
            raise UserError(f"{filelist_path(cfg.data.root, 'val')}: the val split has no positive pixel; "
                            "nothing to calibrate the threshold on")
        calibration.store(run_dir, options.checkpoint, found)
        backend.meta = dataclasses.replace(meta, threshold=found.threshold)
    entry = calibration.stored_entry(backend.trained.path, step)
    if entry is None:
        return "train.threshold"
    shrinkage = (f"; optimum {entry['optimum']:g} there, shrunk toward {entry['default_threshold']:g} for "
                 f"{entry['scenes']} val scenes" if "optimum" in entry else "")
    return f"calibrated on {entry['source']}{shrinkage}"


def _baseline(cfg, meta, split: str, model_iou: float) -> dict:
    """The per-pixel classifiers on the same split and bands, and how the model compares."""
    from segtrain.baseline import evaluate_baselines, unconverged_floor, verdict

    results = evaluate_baselines(cfg.data, meta.bands, split, cfg.train.threshold, cfg.train.seed)
    sentence, margin = verdict(model_iou, results)
    return {**results, "model_minus_best_iou": margin, "verdict": sentence, "floor_not_converged": unconverged_floor(results)}


def _log_wandb(run_dir: Path, backend: TorchBackend, metrics: dict, scores: list[SceneScore],
               figures: dict[str, Path], split: str) -> None:
    """The same figures into the run's W&B run (resumed by its id), at the checkpoint's step."""
    from segtrain.config import to_dict
    from segtrain.run.directory import RunDir
    from segtrain.run.wandb_log import WandbLogger, new_wandb_id

    cfg = backend.trained.config
    if cfg.logging.wandb.mode == "disabled":
        return
    run_id = RunDir(run_dir).info.read().get("wandb_id") or new_wandb_id()
    logger = WandbLogger(cfg.logging.wandb, run_dir, run_dir.name, run_id, to_dict(cfg))
    try:
        import wandb

        values: dict = {f"eval/{split}/{k}": metrics[k] for k in (*SCORES, "tp", "fp", "fn", "tn")}
        values[f"eval/{split}/scenes"] = wandb.Table(
            columns=["scene", *SCORES], data=[[s.name, *(s.scores[k] for k in SCORES)] for s in scores])
        for name, path in figures.items():
            values[f"eval/{split}/{name}"] = wandb.Image(str(path))
        logger.log(values, step=metrics["step"])
        logger.finish(0)
    except BaseException:
        logger.finish(1)
        raise
