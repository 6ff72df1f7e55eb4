"""A predictions folder: what the submitting side and the jobs agree on about scenes and outputs.

    OUT/<scene>_mask.tif (and <scene>_prob.tif)   the outputs, renamed into place when complete
    OUT/<scene>.json                              the scene's sidecar, written after its outputs:
                                                  done (each output's size and SHA-256) or failed (why)
    OUT/.segtrain/predict-<time>.json             a submission's manifest: model, options, subjob -> scenes
    OUT/.segtrain/submissions.jsonl               job ids of each manifest and subjob (and resubmissions)

A scene is done when its sidecar says so for the same scene file (path, size, modification
time), the same model (SHA-256 of the file) and options, and every output is there with the
recorded size (and, where the job checks before skipping, the recorded checksum). Anything
else is redone: a repeated or resubmitted job never trusts an output it cannot verify, and a
sidecar that is missing means its outputs, even if complete, are not yet vouched for.
"""
from __future__ import annotations

import dataclasses
import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from segtrain.cluster.job.stage import sha256_file
from segtrain.errors import UserError
from segtrain.fsutil import atomic_write_json

STATE_DIR = ".segtrain"
MANIFEST_PREFIX = "predict-"
DONE, FAILED, PENDING = "done", "failed", "pending"


@dataclass(frozen=True)
class PredictSettings:
    """How every scene of a submission is predicted (the sidecar records them: a change means redo)."""
    prob: bool = False
    tile: Optional[int] = None
    overlap: Optional[int] = None
    batch_size: int = 16
    device: str = "auto"
    checkpoint: str = "best"


@dataclass
class Manifest:
    """One submission: the model, the settings, and the scenes of each subjob (absolute paths)."""
    model: str  # an .onnx file or a run directory, on storage
    model_sha256: str
    out: str
    settings: PredictSettings
    shards: list[list[str]]
    created: str = ""
    path: Optional[Path] = field(default=None, compare=False)

    def save(self, path: Path) -> None:
        data = dataclasses.asdict(self)
        data.pop("path")
        atomic_write_json(path, data)

    @classmethod
    def load(cls, path: str | Path) -> "Manifest":
        path = Path(path)
        try:
            data = json.loads(path.read_text())
            data["settings"] = PredictSettings(**data["settings"])
            return cls(**data, path=path)
        except (OSError, ValueError, TypeError, KeyError) as exc:
            raise UserError(f"{path}: unreadable prediction manifest: {exc}") from None

    def shard(self, index: Optional[int]) -> list[Path]:
        if index is None or not 0 <= index < len(self.shards):
            raise UserError(f"{self.path}: no subjob {index} (the manifest has {len(self.shards)}: 0-{len(self.shards) - 1})")
        return [Path(scene) for scene in self.shards[index]]


def state_dir(out: Path) -> Path:
    return Path(out) / STATE_DIR


def manifests(out: Path) -> list[Path]:
    """The folder's manifests, oldest first."""
    return sorted(state_dir(out).glob(f"{MANIFEST_PREFIX}*.json"))


def output_names(scene: Path, prob: bool) -> list[str]:
    names = [f"{scene.stem}_mask.tif"]
    return names + [f"{scene.stem}_prob.tif"] if prob else names


def sidecar_path(out: Path, scene: Path) -> Path:
    return Path(out) / f"{scene.stem}.json"


def model_file(model: Path, checkpoint: str = "best") -> Path:
    """The file whose bytes are the model: the .onnx file, or a run's checkpoint."""
    from segtrain.run.checkpoint import BEST, LAST
    from segtrain.run.directory import RunDir

    return RunDir(model).checkpoints / (BEST if checkpoint == "best" else LAST) if model.is_dir() else model


def scene_identity(scene: Path) -> dict:
    st = scene.stat()
    return {"scene": str(scene), "scene_size": st.st_size, "scene_mtime_ns": st.st_mtime_ns}


def read_sidecar(out: Path, scene: Path) -> Optional[dict]:
    try:
        data = json.loads(sidecar_path(out, scene).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def scene_state(manifest: Manifest, scene: Path, checksums: bool = False) -> tuple[str, str]:
    """(done | failed | pending, the failure's message) of a scene under this manifest's model and settings."""
    out = Path(manifest.out)
    record = read_sidecar(out, scene)
    if record is None or record.get("scene") != str(scene) or record.get("model_sha256") != manifest.model_sha256 \
            or record.get("settings") != dataclasses.asdict(manifest.settings):
        return PENDING, ""
    if record.get("status") == FAILED:
        return FAILED, str(record.get("error", ""))
    try:
        identity = scene_identity(scene)
        if identity != {key: record.get(key) for key in identity}:
            return PENDING, ""  # the scene changed since
    except OSError:
        return PENDING, ""
    outputs = record.get("outputs", {})
    if record.get("status") != DONE or sorted(outputs) != output_names(scene, manifest.settings.prob):
        return PENDING, ""
    for name, expected in outputs.items():
        path = out / name
        if not path.is_file() or path.stat().st_size != expected.get("size"):
            return PENDING, ""
        if checksums and sha256_file(path) != expected.get("sha256"):
            return PENDING, ""
    return DONE, ""


def write_done(manifest: Manifest, scene_record: dict, outputs: dict[str, dict], **extra) -> None:
    """The scene's sidecar, once its outputs are in place: each output's size and SHA-256."""
    _write(manifest, scene_record, status=DONE, outputs=outputs, **extra)


def write_failed(manifest: Manifest, scene: Path, error: str, **extra) -> None:
    try:
        identity = scene_identity(scene)
    except OSError:
        identity = {"scene": str(scene)}
    _write(manifest, identity, status=FAILED, error=error, **extra)


def _write(manifest: Manifest, identity: dict, **fields) -> None:
    atomic_write_json(sidecar_path(Path(manifest.out), Path(identity["scene"])),
                      {**identity, "model": manifest.model, "model_sha256": manifest.model_sha256,
                       "settings": dataclasses.asdict(manifest.settings), **fields})


def remove_temporaries(out: Path, scenes: list[Path]) -> list[Path]:
    """Temporaries that a killed job left in ``out`` for these scenes (``.NAME.XXXX.tmp``, files of an
    atomic copy or folders of an overview writer); removed."""
    removed = []
    for scene in scenes:
        for name in output_names(scene, prob=True) + [sidecar_path(out, scene).name]:
            for tmp in Path(out).glob(f".{name}.*.tmp"):
                shutil.rmtree(tmp) if tmp.is_dir() and not tmp.is_symlink() else tmp.unlink(missing_ok=True)
                removed.append(tmp)
    return removed
