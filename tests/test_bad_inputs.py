"""Every bad input, one table: exit 2, one line on stderr naming the culprit, no traceback, and
not one byte on disk changed (every file under the test's folder hashed before and after, so a
half-made run folder, a replaced output or a rewritten config fails the case).

A case is a command line plus, where needed, a few files to break first. Commands run in this
process through ``segtrain.cli.main`` (an argparse error is a ``SystemExit(2)``).
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import struct
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import pytest
import tifffile

from conftest import REPO, corrupt_segment
from segtrain.cli import main
from trainutil import TINY

DEMO = REPO / "configs" / "demo.yaml"


@dataclass
class Ctx:
    """The test's folder: a data set, a trained run, a config and a work folder."""
    tmp: Path
    data: Path
    run: Path
    undo: list[Callable[[], object]] = field(default_factory=list)  # run after the case (a folder made read-only)

    @property
    def cfg(self) -> Path:
        return self.tmp / "cfg.yaml"

    def train(self, *extra: str, run: Optional[Path] = None) -> list[str]:
        return ["train", str(self.cfg), *TINY, *extra, "--run-dir", str(run or self.tmp / "runs" / "r")]

    def check(self, *extra: str) -> list[str]:
        return ["check", str(self.cfg), *extra]

    def scene(self, split: str = "train", i: int = 0) -> Path:
        return self.data / "scenes" / (self.data / "filelists" / f"{split}.csv").read_text().split()[i]

    def mask(self, split: str = "train", i: int = 0) -> Path:
        return self.data / "masks" / self.scene(split, i).name

    def filelist(self, split: str = "train") -> Path:
        return self.data / "filelists" / f"{split}.csv"

    def write(self, rel: str, text: str | bytes) -> Path:
        path = self.tmp / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(text if isinstance(text, bytes) else text.encode())
        return path


@dataclass
class Case:
    id: str
    argv: Callable[[Ctx], list[str]]
    culprit: str  # text the one line must contain: the file, key or value to fix
    setup: Callable[[Ctx], object] = lambda ctx: None
    env: dict = field(default_factory=dict)


def C(id, argv, culprit, setup=lambda ctx: None, **env) -> Case:
    return Case(id, argv, culprit, setup, env)


# ---- ways to break files ----------------------------------------------------------------------
def break_tag(path: Path, code: int) -> None:
    """Point one tag of the first IFD (classic little-endian TIFF) far past the end of the file."""
    data = bytearray(path.read_bytes())
    assert data[:4] == b"II*\x00"
    ifd = struct.unpack_from("<I", data, 4)[0]
    for i in range(struct.unpack_from("<H", data, ifd)[0]):
        entry = ifd + 2 + 12 * i
        if struct.unpack_from("<H", data, entry)[0] == code:
            struct.pack_into("<I", data, entry + 8, 0xFFFFFF0)
    path.write_bytes(bytes(data))


def replace_scene(path: Path, array: np.ndarray) -> None:
    tifffile.imwrite(path, array, photometric="minisblack")


def stripped_scene(ctx: Ctx) -> Path:
    for path in sorted((ctx.data / "scenes").iterdir()):
        with tifffile.TiffFile(path) as tif:
            if not tif.pages[0].is_tiled:
                return path
    raise AssertionError("the demo data set has no scene in strips")


def compressed_mask(ctx: Ctx) -> Path:
    for path in sorted((ctx.data / "masks").iterdir()):
        with tifffile.TiffFile(path) as tif:
            if tif.pages[0].compression != 1:
                return path
    raise AssertionError("the demo data set has no compressed mask")


def all_nan(ctx: Ctx) -> None:
    """Every scene float and all NaN: no valid pixel anywhere."""
    for scene in (ctx.data / "scenes").iterdir():
        replace_scene(scene, np.full((4,) + tifffile.imread(ctx.data / "masks" / scene.name).shape, np.nan, np.float32))


def all_zero(ctx: Ctx) -> None:
    """Every scene all 0, the no-data value of integer scenes: no valid pixel anywhere."""
    for scene in (ctx.data / "scenes").iterdir():
        replace_scene(scene, np.zeros((4,) + tifffile.imread(ctx.data / "masks" / scene.name).shape, np.uint16))


def stats_file(ctx: Ctx, split: str = "train") -> None:
    """``stats.json`` as `segtrain stats` writes it, of the data set as it is now."""
    from segtrain.data.stats import compute_stats, write_stats

    write_stats(compute_stats(ctx.data, split), ctx.tmp / "stats.json")


def stats_then_zeroed(ctx: Ctx) -> None:
    stats_file(ctx)
    all_zero(ctx)


def stats_then_cropped(ctx: Ctx) -> None:
    """A stats file, then the first train scene and its mask cut smaller (the scenes were re-made)."""
    stats_file(ctx)
    height, width = tifffile.imread(ctx.mask()).shape
    replace_scene(ctx.scene(), np.full((4, height - 8, width), 100, np.uint16))
    replace_scene(ctx.mask(), np.zeros((height - 8, width), np.uint8))


FS_IOC_GETFLAGS, FS_IOC_SETFLAGS, FS_IMMUTABLE_FL = 0x80086601, 0x40086602, 0x10  # linux/fs.h, 64-bit


def set_immutable(path: Path, on: bool) -> None:
    """What ``chattr +i`` / ``-i`` does, through the ioctl itself (no tool on PATH needed)."""
    import array
    import fcntl

    fd = os.open(path, os.O_RDONLY)
    try:
        flags = array.array("l", [0])
        fcntl.ioctl(fd, FS_IOC_GETFLAGS, flags, True)
        flags[0] = flags[0] | FS_IMMUTABLE_FL if on else flags[0] & ~FS_IMMUTABLE_FL
        fcntl.ioctl(fd, FS_IOC_SETFLAGS, flags)
    finally:
        os.close(fd)


def read_only_folder(ctx: Ctx) -> Path:
    """A folder nobody may write into, the test's user included. Permission bits (0o555) do that for a
    user; root bypasses them, so as root the folder is made immutable (FS_IMMUTABLE_FL, as ``chattr +i``:
    the kernel then refuses root's writes with EPERM). Skipped where neither works."""
    folder = ctx.tmp / "read-only"
    folder.mkdir()
    folder.chmod(0o555)
    ctx.undo.append(lambda: folder.chmod(0o755))
    if os.access(folder, os.W_OK):
        try:
            set_immutable(folder, True)
        except OSError as exc:
            pytest.skip(f"cannot make a read-only folder here as root (immutable flag: {exc.strerror})")
        ctx.undo.insert(0, lambda: set_immutable(folder, False))
    return folder


def empty_scene(ctx: Ctx) -> None:
    """The first train scene and its mask with 0 rows, their zero-byte data inside the file (as writers that
    put the data before their tags lay it out; tifffile points it past the end)."""
    width = tifffile.imread(ctx.mask()).shape[1]
    for path, array in ((ctx.scene(), np.zeros((4, 0, width), np.uint16)), (ctx.mask(), np.zeros((0, width), np.uint8))):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tifffile: "writing zero-size array to nonconformant TIFF"
            replace_scene(path, array)
        with path.open("ab") as f:
            f.write(bytes(64))


def run_with_checkpoints(ctx: Ctx, run: Path, *names: str, corrupt: tuple[str, ...] = ()) -> None:
    """A copy of the trained run, its checkpoints reduced to ``names``, those in ``corrupt`` truncated."""
    shutil.copytree(ctx.run, run)
    for ckpt in (run / "checkpoints").iterdir():
        if ckpt.name not in names:
            ckpt.unlink()
    for name in corrupt:
        path = run / "checkpoints" / name
        path.write_bytes(path.read_bytes()[:1000])


def other_models_checkpoint(ctx: Ctx, name: str, relabel: bool = True, **changes: object) -> None:
    """A copy of the trained run whose checkpoint ``name`` holds the model of another config (``section__key``:
    value), as when a checkpoint of another run was copied in; ``relabel=False`` keeps the run's config in
    it (weights that do not match their own checkpoint's config)."""
    import copy

    from segtrain.config import build_config
    from segtrain.models import build_model
    from segtrain.run.checkpoint import load_checkpoint, save_checkpoint

    run_with_checkpoints(ctx, trained(ctx), "last.pt", "last.prev.pt", "best.pt")
    path = trained(ctx) / "checkpoints" / name
    state = load_checkpoint(path)
    config = copy.deepcopy(state["config"])
    for key, value in changes.items():
        section, option = key.split("__")
        config[section][option] = value
    cfg = build_config(config)
    in_channels = len(cfg.data.bands) if cfg.data.bands else state["in_channels"]
    model = build_model(cfg.model, in_channels)
    del state["format"]
    save_checkpoint({**state, **({"config": config, "in_channels": in_channels} if relabel else {}),
                     "model": model.state_dict()}, path)


def old_stats_file(ctx: Ctx) -> None:
    """Statistics as segtrain wrote them before robust normalization existed."""
    from segtrain.data.stats import compute_stats

    stats = compute_stats(ctx.data).to_dict()
    del stats["robust"]
    ctx.write("old.json", json.dumps(stats))


def thesis(ctx: Ctx) -> Path:
    folder = ctx.tmp / "thesis"
    ctx.write("thesis/metrics.jsonl", '{"my": "results"}\n')
    ctx.write("thesis/chapter1.tex", "\\chapter{Water}\n")
    return folder


def grid(ctx: Ctx, body: str) -> list[str]:
    ctx.write("grid.yaml", f"base: {DEMO}\n{body}")
    return ["submit", str(ctx.tmp / "grid.yaml"), "--dry-run", "--no-check"]


def submit(ctx: Ctx, *flags: str) -> list[str]:
    return ["submit", str(ctx.cfg), "--no-check", *(() if "--local" in flags else ("--dry-run",)), *flags]


def trained(ctx: Ctx) -> Path:
    return ctx.tmp / "run"


def first_line(path: Path) -> str:
    return path.read_text().split()[0]


BIG = "1" + "0" * 400

CASES = [
    # ---- config values -------------------------------------------------------------------------
    C("epochs-400-digits", lambda c: c.check(f"train.epochs={BIG}"), "train.epochs"),
    C("epochs-5000-digits", lambda c: c.check("train.epochs=1" + "0" * 5000), "invalid YAML"),
    C("epochs-float", lambda c: c.check("train.epochs=1.5"), "train.epochs"),
    C("epochs-zero", lambda c: c.check("train.epochs=0"), "train.epochs"),
    C("seed-2^62", lambda c: c.check("train.seed=4611686018427387904"), "train.seed"),
    C("seed-2^64", lambda c: c.check("train.seed=18446744073709551616"), "train.seed"),
    C("seed-negative", lambda c: c.check("train.seed=-1"), "train.seed"),
    C("loss-list-key", lambda c: c.check("loss.terms={[bce]: 1}"), "loss.terms"),
    C("loss-mapping-key", lambda c: c.check("loss.terms={{bce: 1}: 1}"), "loss.terms"),
    C("loss-all-zero", lambda c: c.check("loss.terms={bce: 0, dice: 0}"), "loss.terms"),
    C("loss-nan-weight", lambda c: c.check("loss.terms={bce: .nan}"), "loss.terms.bce"),
    C("loss-inf-weight", lambda c: c.check("loss.terms={dice: .inf}"), "loss.terms.dice"),
    C("loss-negative-weight", lambda c: c.check("loss.terms={bce: -1}"), "loss.terms.bce"),
    C("loss-bool-weight", lambda c: c.check("loss.terms={bce: true}"), "loss.terms.bce"),
    C("loss-unknown-term", lambda c: c.check("loss.terms={'1': 1}"), "loss.terms.1"),
    C("pos-weight-inf", lambda c: c.check("loss.pos_weight=.inf"), "loss.pos_weight"),
    C("pos-weight-nan", lambda c: c.check("loss.pos_weight=.nan"), "loss.pos_weight"),
    C("pos-weight-zero", lambda c: c.check("loss.pos_weight=0"), "loss.pos_weight"),
    C("lr-nan", lambda c: c.check("optim.lr=.nan"), "optim.lr"),
    C("lr-overflow", lambda c: c.check("optim.lr=1e400"), "optim.lr"),
    C("minutes-inf", lambda c: c.check("train.checkpoint_every_minutes=.inf"), "train.checkpoint_every_minutes"),
    C("unknown-key", lambda c: c.check("train.epoch=3"), "did you mean 'epochs'"),
    C("unknown-section", lambda c: c.check("trian.epochs=3"), "trian"),
    C("bad-yaml-override", lambda c: c.check("train.epochs=[1"), "invalid YAML"),
    C("override-without-equals", lambda c: c.check("train.epochs"), "expected section.key=value"),
    C("arch-unknown", lambda c: c.check("model.arch=unet2"), "model.arch"),
    C("amp-yes", lambda c: c.check("train.amp=yes"), "train.amp"),
    C("batch-zero", lambda c: c.check("train.batch_size=0"), "train.batch_size"),
    C("overlap-too-big", lambda c: c.check("data.overlap=96"), "data.overlap"),
    C("tags-not-list", lambda c: c.check("logging.wandb.tags=lr3e4"), "logging.wandb.tags"),
    C("normalize-unknown", lambda c: c.check("data.normalize=robst"), "data.normalize"),
    C("band-dropout-one", lambda c: c.check("data.augment.band_dropout=1"), "data.augment.band_dropout"),
    C("band-dropout-negative", lambda c: c.check("data.augment.band_dropout=-0.1"), "data.augment.band_dropout"),
    C("robust-without-robust-stats", lambda c: c.train("data.normalize=robust", f"data.stats_file={c.tmp / 'old.json'}"),
      "data.normalize", setup=old_stats_file),
    C("config-missing", lambda c: ["check", str(c.tmp / "nope.yaml")], "nope.yaml"),
    C("config-latin1", lambda c: ["check", str(c.write("l1.yaml", "run:\n  name: caf\xe9\n".encode("latin-1")))],
      "l1.yaml"),
    C("config-duplicate-key", lambda c: ["check", str(c.write("dup.yaml", "train:\n  epochs: 1\n  epochs: 2\n"))],
      "duplicate key"),
    C("config-a-list", lambda c: ["check", str(c.write("list.yaml", "- 1\n- 2\n"))], "list.yaml"),
    C("config-extends-cycle", lambda c: ["check", str(c.write("a.yaml", "extends: a.yaml\n"))], "cycle"),
    C("config-extends-missing", lambda c: ["check", str(c.write("b.yaml", "extends: gone.yaml\n"))], "gone.yaml"),
    C("wandb-online-without-key", lambda c: c.check("logging.wandb.mode=online"), "logging.wandb.mode",
      WANDB_API_KEY=None, NETRC="/nonexistent/netrc"),
    # ---- the data set ----------------------------------------------------------------------------
    C("data-root-missing", lambda c: c.check("data.root=/nonexistent/data"), "data.root"),
    C("filelist-latin1", lambda c: c.check(), "train.csv",
      setup=lambda c: c.filelist().write_bytes("sc\xe8ne.tif\n".encode("latin-1"))),
    C("filelist-empty-first-column", lambda c: c.check(), "train.csv:2",
      setup=lambda c: c.filelist().write_text(f"{first_line(c.filelist())}\n,{c.scene(i=1).name}\n")),
    C("filelist-empty", lambda c: c.check(), "train.csv", setup=lambda c: c.filelist().write_text("# nothing\n")),
    C("filelist-path", lambda c: c.check(), "train.csv:1", setup=lambda c: c.filelist().write_text("a/b.tif\n")),
    C("filelist-twice", lambda c: c.check(), "listed twice",
      setup=lambda c: c.filelist().write_text(f"{first_line(c.filelist())}\n{first_line(c.filelist())}\n")),
    C("filelist-val-missing", lambda c: c.check(), "val.csv", setup=lambda c: c.filelist("val").unlink()),
    C("scene-in-two-splits", lambda c: c.check(), "also in",
      setup=lambda c: c.filelist("val").write_text(first_line(c.filelist()) + "\n")),
    C("scene-missing", lambda c: c.check(), "not found", setup=lambda c: c.scene().unlink()),
    C("mask-missing", lambda c: c.check(), "not found", setup=lambda c: c.mask().unlink()),
    C("mask-not-binary", lambda c: c.check(), "not binary",
      setup=lambda c: replace_scene(c.mask(), np.full(tifffile.imread(c.mask()).shape, 7, np.uint8))),
    C("mask-wrong-size", lambda c: c.check(), "mask is", setup=lambda c: replace_scene(c.mask(), np.zeros((20, 20), np.uint8))),
    C("scene-truncated", lambda c: c.check(), "truncated",
      setup=lambda c: c.scene().write_bytes(c.scene().read_bytes()[:-500])),
    C("scene-corrupt-tile", lambda c: c.check(), "does not decode",
      setup=lambda c: corrupt_segment(c.scene())),
    C("scene-tile-offsets-broken", lambda c: c.check(), "offsets", setup=lambda c: break_tag(c.scene(), 324)),
    C("scene-strip-offsets-broken", lambda c: c.check(), "corrupt TIFF", setup=lambda c: break_tag(stripped_scene(c), 273)),
    C("mask-corrupt-tile", lambda c: c.check(), "masks", setup=lambda c: corrupt_segment(compressed_mask(c))),
    C("scene-not-tiff", lambda c: c.check(), "corrupt", setup=lambda c: c.scene().write_text("hello")),
    C("scene-other-bands", lambda c: c.check(), "bands",
      setup=lambda c: replace_scene(c.scene(), np.ones((2,) + tifffile.imread(c.mask()).shape, np.uint16))),
    C("scene-complex", lambda c: c.check(), "complex64",
      setup=lambda c: replace_scene(c.scene(), np.ones((4,) + tifffile.imread(c.mask()).shape, np.complex64))),
    C("scene-no-rows", lambda c: c.check(), "has no pixels", setup=empty_scene),
    C("predict-complex-scene", lambda c: ["predict", str(trained(c)), str(c.scene("test")), "--out", str(c.tmp / "o"),
                                          "--device", "cpu", "--quiet"], "complex64",
      setup=lambda c: (shutil.copytree(c.run, trained(c)),
                       replace_scene(c.scene("test"), np.ones((4,) + tifffile.imread(c.mask("test")).shape, np.complex64)))),
    C("bands-out-of-range", lambda c: c.check("data.bands=[9]"), "data.bands"),
    C("in-channels-mismatch", lambda c: c.check("model.in_channels=2"), "model.in_channels"),
    C("tile-much-larger-than-scenes", lambda c: c.check("data.tile_size=1024", "data.overlap=8"), "data.tile_size"),
    # ---- train: nothing of a run is written before everything is validated ----------------------
    C("train-batch-larger-than-tiles", lambda c: c.train("data.tiles_per_epoch=4"), "train.batch_size"),
    C("train-stats-file-missing", lambda c: c.train(f"data.stats_file={c.tmp}/gone.json"), "data.stats_file"),
    C("train-encoder-weights-missing", lambda c: c.train("model.arch=Unet", "model.encoder=resnet18",
                                                         f"model.encoder_weights={c.tmp}/gone.pth"), "model.encoder_weights"),
    C("train-stats-for-other-bands", lambda c: c.train(f"data.stats_file={c.tmp}/stats.json"), "data.stats_file",
      setup=lambda c: c.write("stats.json", json.dumps({"mean": [1.0, 2.0], "std": [1.0, 1.0], "pos_fraction": 0.5,
                                                        "pos_weight": 1.0, "nodata_fraction": 0.0}))),
    C("train-stats-not-stats", lambda c: c.train(f"data.stats_file={c.tmp}/stats.json"), "stats.json",
      setup=lambda c: c.write("stats.json", '{"mean": "x"}')),
    C("train-nan-scenes", lambda c: c.train(), "no valid pixels", setup=all_nan),
    C("train-stats-file-of-scenes-now-all-nodata", lambda c: c.train(f"data.stats_file={c.tmp}/stats.json"),
      "no valid pixels", setup=stats_then_zeroed),
    C("train-no-stats-needed-all-nodata", lambda c: c.train("data.normalize=none"), "no valid pixels", setup=all_zero),
    C("train-stats-file-of-other-scenes", lambda c: c.train(f"data.stats_file={c.tmp}/stats.json"),
      "stats.json: describes other scenes", setup=lambda c: stats_file(c, "val")),
    C("train-stats-file-of-other-sizes", lambda c: c.train(f"data.stats_file={c.tmp}/stats.json"),
      "stats.json: describes scene_", setup=stats_then_cropped),
    C("train-run-dir-is-file", lambda c: c.train(run=c.write("afile", "x")), "afile"),
    C("train-runs-folder-not-writable", lambda c: c.train(run=Path("/sys/segtrain-test/run")), "/sys/segtrain-test"),
    C("train-mirror-is-file", lambda c: c.train("--mirror", str(c.write("mfile", "x"))), "mfile"),
    C("train-mirror-in-a-read-only-folder", lambda c: c.train("--mirror", str(c.tmp / "read-only" / "mirror")),
      "read-only/mirror: ", setup=read_only_folder),
    C("train-mirror-is-a-read-only-folder", lambda c: c.train("--mirror", str(c.tmp / "read-only")),
      "read-only is not writable", setup=read_only_folder),
    C("train-run-dir-not-a-run", lambda c: c.train(run=thesis(c)), "thesis"),
    C("train-mirror-not-a-run", lambda c: c.train("--mirror", str(thesis(c))), "thesis"),
    C("train-corrupt-run-json", lambda c: c.train(run=trained(c)), "run.json",
      setup=lambda c: (run_with_checkpoints(c, trained(c), "last.pt", "last.prev.pt", "best.pt"),
                       (trained(c) / "run.json").write_text("{not json"))),
    C("train-both-checkpoints-unreadable", lambda c: c.train(run=trained(c)), "last.pt and last.prev.pt unreadable",
      setup=lambda c: run_with_checkpoints(c, trained(c), "last.pt", "last.prev.pt", "best.pt",
                                           corrupt=("last.pt", "last.prev.pt"))),
    C("train-mirror-last-unreadable", lambda c: c.train(run=trained(c)), "last.pt unreadable",
      setup=lambda c: run_with_checkpoints(c, trained(c), "last.pt", "best.pt", corrupt=("last.pt",))),
    C("train-only-best", lambda c: c.train(run=trained(c)), "only best.pt",
      setup=lambda c: run_with_checkpoints(c, trained(c), "best.pt")),
    C("train-resume-changed-model", lambda c: c.train("model.base_width=16", run=trained(c)), "model.base_width",
      setup=lambda c: run_with_checkpoints(c, trained(c), "last.pt", "last.prev.pt", "best.pt")),
    C("train-resume-last-of-another-width", lambda c: c.train(run=trained(c)),
      "last.pt: does not fit: model.base_width is 4 in the checkpoint but 8 in the config",
      setup=lambda c: other_models_checkpoint(c, "last.pt", model__base_width=4)),
    C("train-resume-last-of-other-bands", lambda c: c.train(run=trained(c)),
      "last.pt: does not fit: data.bands is [0, 1, 2] in the checkpoint but None in the config",
      setup=lambda c: other_models_checkpoint(c, "last.pt", data__bands=[0, 1, 2])),
    C("train-time-limit-negative", lambda c: c.train("--time-limit", "-5"), "--time-limit"),
    C("train-time-limit-nan", lambda c: c.train("--time-limit", "nan"), "--time-limit"),
    C("train-nproc-zero", lambda c: c.train("--nproc-per-node", "0"), "--nproc-per-node"),
    # ---- the command line ------------------------------------------------------------------------
    C("cli-unknown-command", lambda c: ["trian"], "invalid choice"),
    C("cli-missing-config", lambda c: ["train"], "required"),
    C("cli-unknown-flag", lambda c: ["check", str(c.cfg), "--fast"], "--fast"),
    C("cli-batch-size-zero", lambda c: ["eval", str(trained(c)), "--batch-size", "0"], "--batch-size"),
    C("cli-tile-not-a-number", lambda c: ["predict", "m.onnx", "s.tif", "--out", "o", "--tile", "big"], "--tile"),
    C("make-demo-data-onto-file", lambda c: ["make-demo-data", str(c.write("demo", "x"))], "demo"),
    C("make-demo-data-zero-scenes", lambda c: ["make-demo-data", str(c.tmp / "d"), "--train", "0"], "--train"),
    C("stats-root-missing", lambda c: ["stats", str(c.tmp / "gone")], "gone"),
    # ---- predict and eval never replace what they did not write ------------------------------
    C("predict-over-ground-truth", lambda c: ["predict", str(trained(c)), str(c.scene("test")), "--out",
                                              str(c.tmp / "gt"), "--device", "cpu", "--quiet"], "_mask.tif",
      setup=lambda c: (shutil.copytree(c.run, trained(c)),
                       c.write(f"gt/{c.scene('test').stem}_mask.tif", c.mask("test").read_bytes()))),
    C("predict-over-prob", lambda c: ["predict", str(trained(c)), str(c.scene("test")), "--out", str(c.tmp / "o"),
                                      "--prob", "--device", "cpu", "--quiet"], "_prob.tif",
      setup=lambda c: (shutil.copytree(c.run, trained(c)), c.write(f"o/{c.scene('test').stem}_prob.tif", "mine"))),
    C("eval-over-data-metrics", lambda c: ["eval", str(trained(c)), "--out", str(c.data), "--device", "cpu", "--quiet",
                                           "--no-wandb"], "metrics.json",
      setup=lambda c: (shutil.copytree(c.run, trained(c)), (c.data / "metrics.json").write_text('{"theirs": 1}'))),
    C("eval-not-a-run", lambda c: ["eval", str(c.data), "--device", "cpu", "--quiet"], "checkpoint not found"),
    C("eval-corrupt-best", lambda c: ["eval", str(trained(c)), "--device", "cpu", "--quiet"], "best.pt",
      setup=lambda c: run_with_checkpoints(c, trained(c), "last.pt", "best.pt", corrupt=("best.pt",))),
    C("eval-best-of-another-architecture", lambda c: ["eval", str(trained(c)), "--device", "cpu", "--quiet", "--no-wandb"],
      "model.arch is 'Unet' in the checkpoint but 'unet'", setup=lambda c: other_models_checkpoint(c, "best.pt", model__arch="Unet",
                                                                         model__encoder="resnet18")),
    C("predict-best-of-another-depth", lambda c: ["predict", str(trained(c)), str(c.scene("test")), "--out",
                                                  str(c.tmp / "o"), "--device", "cpu", "--quiet"],
      "model.depth is 3 in the checkpoint but 2", setup=lambda c: other_models_checkpoint(c, "best.pt", model__depth=3)),
    C("export-best-of-another-width", lambda c: ["export", str(trained(c))], "model.base_width is 16",
      setup=lambda c: other_models_checkpoint(c, "best.pt", model__base_width=16)),
    C("quantize-last-of-another-norm", lambda c: ["quantize", str(trained(c)), "--checkpoint", "last", "--quiet"],
      "model.norm is 'group' in the checkpoint", setup=lambda c: other_models_checkpoint(c, "last.pt", model__norm="group")),
    C("eval-best-whose-weights-are-not-its-configs", lambda c: ["eval", str(trained(c)), "--device", "cpu", "--quiet"],
      "best.pt: does not fit: tensor ", setup=lambda c: other_models_checkpoint(c, "best.pt", False, model__base_width=4)),
    C("predict-scene-missing", lambda c: ["predict", str(trained(c)), str(c.tmp / "gone.tif"), "--out", str(c.tmp / "o"),
                                          "--device", "cpu"], "gone.tif", setup=lambda c: shutil.copytree(c.run, trained(c))),
    C("predict-model-missing", lambda c: ["predict", str(c.tmp / "m.onnx"), str(c.scene("test")), "--out",
                                          str(c.tmp / "o")], "m.onnx"),
    # ---- grids ------------------------------------------------------------------------------------
    # ---- scripts/submit --name: what qsub -N (PBS) would refuse, refused before submitting -------------
    C("submit-name-leaves-the-folder", lambda c: submit(c, "--name", "../x/y"), "--name '../x/y'"),
    C("submit-local-name-leaves-the-folder", lambda c: submit(c, "--local", "--name", "../x/y"), "--name '../x/y'"),
    C("submit-name-starts-with-a-digit", lambda c: submit(c, "--name", "1st-try"), "--name '1st-try'"),
    C("submit-name-with-a-space", lambda c: submit(c, "--name", "my run"), "--name 'my run'"),
    C("submit-name-non-ascii", lambda c: submit(c, "--name", "cafe\u0301"), "starts with a letter"),
    C("submit-name-too-long", lambda c: submit(c, "--name", "a" * 231), "at most 230 characters"),
    C("submit-predict-name-with-a-slash", lambda c: ["submit", "--predict", str(c.run), str(c.scene("test")), "--out",
                                                     str(c.tmp / "p"), "--name", "a/b", "--dry-run"], "--name 'a/b'"),
    C("grid-set-value", lambda c: grid(c, "product:\n  optim.lr: [!!set {0.1, 0.2}]\n"), "optim.lr"),
    C("grid-date-for-a-number", lambda c: grid(c, "product:\n  optim.lr: [2024-01-01]\n"), "optim.lr"),
    C("grid-nan-value", lambda c: grid(c, "product:\n  optim.lr: [.nan]\n"), "optim.lr"),
    C("grid-empty-axis", lambda c: grid(c, "product:\n  optim.lr: []\n"), "optim.lr"),
    C("grid-not-a-key", lambda c: grid(c, "product:\n  lr: [1, 2]\n"), "lr"),
    C("grid-both-product-and-zip", lambda c: grid(c, "product:\n  optim.lr: [1]\nzip:\n  optim.lr: [2]\n"), "optim.lr"),
    C("grid-unknown-top-key", lambda c: grid(c, "prodcut:\n  optim.lr: [1]\n"), "prodcut"),
    C("grid-same-point-twice", lambda c: grid(c, "points: [{optim.lr: 0.1}, {optim.lr: 0.1}]\n"), "repeats point 0"),
    C("grid-point-repeats-the-shared-overrides", lambda c: grid(c, "overrides: [train.epochs=2]\npoints: [{}, {train.epochs: 2}]\n"),
      "point 1 (train.epochs=2) repeats point 0"),
    C("grid-point-sets-the-base-value", lambda c: grid(c, "points: [{}, {optim.lr: 0.01}]\n"),
      "point 1 (optim.lr=0.01) repeats point 0"),
    C("grid-unknown-config-key", lambda c: grid(c, "product:\n  optim.rl: [0.1, 0.2]\n"), "optim.rl"),
]


def tree_hashes(root: Path) -> dict[str, str]:
    """Every file under ``root`` by its content: equal before and after means nothing was written."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
            for p in sorted(root.rglob("*"))}


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_is_one_line_exit_2_and_changes_nothing(case, tmp_path, small_data_ro, trained_run_ro, capsys,
                                                         monkeypatch):
    ctx = Ctx(tmp=tmp_path, data=tmp_path / "data", run=trained_run_ro)
    shutil.copytree(small_data_ro, ctx.data)
    ctx.cfg.write_text(f"extends: {DEMO}\ndata:\n  root: {ctx.data}\n")
    case.setup(ctx)
    for name, value in case.env.items():
        monkeypatch.delenv(name, raising=False) if value is None else monkeypatch.setenv(name, value)
    monkeypatch.chdir(tmp_path)
    argv = case.argv(ctx)
    before = tree_hashes(tmp_path)
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse
        code = exc.code
    finally:
        for undo in ctx.undo:
            undo()
    out, err = capsys.readouterr()
    assert code == 2, f"exit {code}\n{out}\n{err}"
    assert err.endswith("\n") and err.count("\n") == 1, f"not one line:\n{err}"
    assert "Traceback" not in err and "error:" in err
    assert case.culprit in err, err
    assert tree_hashes(tmp_path) == before


def test_the_table_covers_every_kind_of_input():
    assert len(CASES) >= 60
    assert len({c.id for c in CASES}) == len(CASES)


# ---- inputs that are fine, and must work rather than fail in an odd way ------------------------
def test_a_filelist_with_a_byte_order_mark_and_comments_is_read(small_data, capsys):
    listing = small_data / "filelists" / "train.csv"
    names = listing.read_text().split()
    listing.write_text("\ufeffname\n# left out on purpose: " + names[0] + "\n" + "\n".join(names[1:]) + "\n",
                       encoding="utf-8")
    from segtrain.data.layout import read_split

    assert [s.name for s in read_split(small_data, "train")] == names[1:]


def test_eval_of_scenes_with_dollar_signs_in_their_names(small_data, run_dir, tmp_path, capsys):
    for split in ("train", "val", "test"):
        listing = small_data / "filelists" / f"{split}.csv"
        renamed = []
        for name in listing.read_text().split():
            new = f"${name[:-4]}$_x.tif"
            for folder in ("scenes", "masks"):
                (small_data / folder / name).rename(small_data / folder / new)
            renamed.append(new)
        listing.write_text("\n".join(renamed) + "\n")
    out = tmp_path / "eval"
    assert main(["eval", str(run_dir), "--data", str(small_data), "--out", str(out), "--device", "cpu", "--quiet",
                 "--no-wandb"]) == 0, capsys.readouterr().err
    assert (out / "worst.png").is_file()


def test_a_run_holds_no_link_that_leaves_it(trained_run_ro):
    """W&B links its core debug log into ~/.cache; a copied or fetched run must not dangle."""
    root = trained_run_ro.resolve()
    links = [p for p in trained_run_ro.rglob("*") if p.is_symlink()]
    assert all(p.resolve().is_relative_to(root) and p.resolve().exists() for p in links), links
