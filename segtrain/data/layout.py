"""The on-disk layout of a data set: ``filelists/{split}.csv``, ``scenes/``, ``masks/``."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from segtrain.errors import UserError

SPLITS = ("train", "val", "test")
REQUIRED_SPLITS = ("train", "val")
_HEADERS = {"name", "filename", "file", "scene"}


@dataclass(frozen=True)
class SceneFiles:
    """One scene of a split: its name and the image and mask paths."""
    name: str
    scene: Path
    mask: Path


def filelist_path(root: str | Path, split: str) -> Path:
    return Path(root) / "filelists" / f"{split}.csv"


def read_text_file(path: Path) -> str:
    """A small text file as UTF-8 (a byte-order mark is dropped, not read as part of a name)."""
    try:
        return path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise UserError(f"{path}: not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at offset {exc.start}); "
                        "save it as UTF-8") from None
    except OSError as exc:
        raise UserError(f"{path}: cannot read: {exc.strerror}") from None


def read_split(root: str | Path, split: str) -> list[SceneFiles]:
    """The scenes listed in ``filelists/<split>.csv`` (one file name per line, optional header,
    lines starting with ``#`` are comments).

    A bad line is reported with its file and line number. File existence is not checked here:
    that is the preflight's job, which reports every problem with the file it concerns.
    """
    root = Path(root)
    listing = filelist_path(root, split)
    if not listing.is_file():
        raise UserError(f"{listing}: filelist for split '{split}' not found")
    scenes: list[SceneFiles] = []
    seen: dict[str, int] = {}
    for lineno, line in enumerate(read_text_file(listing).splitlines(), start=1):
        entry = line.split(",")[0].strip()
        if entry.startswith("#") or (lineno == 1 and entry.lower() in _HEADERS):
            continue  # a comment line (e.g. a scene left out on purpose) or the header
        if not entry:
            if line.strip(" ,\t"):
                raise UserError(f"{listing}:{lineno}: the first column is empty; expected a file name first: {line.strip()!r}")
            continue
        if "/" in entry or "\\" in entry:
            raise UserError(f"{listing}:{lineno}: expected a file name, not a path: {entry!r}")
        name = entry if entry.lower().endswith((".tif", ".tiff")) else f"{entry}.tif"
        if name in seen:
            raise UserError(f"{listing}:{lineno}: {name} is listed twice (first on line {seen[name]})")
        seen[name] = lineno
        scenes.append(SceneFiles(name=name, scene=root / "scenes" / name, mask=root / "masks" / name))
    if not scenes:
        raise UserError(f"{listing}: filelist is empty")
    return scenes
