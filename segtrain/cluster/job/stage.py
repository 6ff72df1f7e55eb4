"""Verified copies between shared storage and a job's scratch.

Shared storage is slow for many small reads and writes, so a data set is staged in one
sequential stream (a tar archive read once, or a folder walked once) and a run directory is
copied back file by file, small files first (logs and metrics reach storage even if the copy
is cut short by SIGKILL), each through a temporary name and a rename, so storage never holds
a half-written file. Every copy is verified before anyone may delete its source: sizes against
the source's listing, and the content of each copied file re-read and hashed.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import tarfile
import tempfile
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

from segtrain.errors import UserError
from segtrain.fsutil import fsync_dir

CHUNK = 8 << 20


@dataclass
class CopyReport:
    """What a copy did, and every file it could not copy or verify."""
    files: int = 0
    bytes: int = 0
    copied: int = 0
    seconds: float = 0.0
    failures: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failures

    def summary(self) -> str:
        rate = self.bytes / 1e6 / self.seconds if self.seconds > 0 else 0.0
        text = (f"{self.files} files, {self.bytes / 1e6:.1f} MB ({self.copied} copied) in {self.seconds:.1f} s "
                f"({rate:.0f} MB/s)")
        return text if self.ok else f"{text}; {len(self.failures)} FAILED: " + "; ".join(self.failures[:5])


def listing(root: Path) -> dict[str, int]:
    """Every regular file under ``root`` (relative path -> size); symlinks are not followed."""
    out = {}
    for folder, _, files in os.walk(root):
        for name in files:
            path = Path(folder, name)
            if path.is_file() and not path.is_symlink():
                out[str(path.relative_to(root))] = path.stat().st_size
    return out


def verify_sizes(expected: dict[str, int], root: Path) -> list[str]:
    """Files of ``expected`` missing under ``root`` or of another size."""
    problems = []
    for rel, size in expected.items():
        path = root / rel
        if not path.is_file():
            problems.append(f"{rel}: missing after the copy")
        elif path.stat().st_size != size:
            problems.append(f"{rel}: {path.stat().st_size} bytes after the copy, {size} in the source")
    return problems


def stage_dataset(src: Path, dst: Path, staged: Optional[Callable[[Path], None]] = None) -> CopyReport:
    """Copy a data set (a folder, or a tar archive, compressed or not) to ``dst`` and verify it;
    ``staged`` is told each file's path as soon as it is copied (the full decode starts there)."""
    start = time.monotonic()
    dst.mkdir(parents=True, exist_ok=True)
    if src.is_dir():
        expected = listing(src)
        _check_space(sum(expected.values()), dst, src)
        for rel in sorted(expected):
            target = dst / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src / rel, target)
            st = (src / rel).stat()
            os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns))  # the copy is the same version of the file
            if staged is not None:
                staged(target)
    else:
        expected = _extract(src, dst, staged)
    report = CopyReport(files=len(expected), bytes=sum(expected.values()), copied=len(expected),
                        failures=verify_sizes(expected, dst))
    report.seconds = time.monotonic() - start
    return report


def _extract(archive: Path, dst: Path, staged: Optional[Callable[[Path], None]] = None) -> dict[str, int]:
    """Extract ``archive`` in one sequential read; refuse members that would land outside ``dst``."""
    if not hasattr(tarfile, "data_filter"):
        raise UserError(f"{archive}: this Python cannot extract archives safely (needs 3.10.12+/3.11.4+)")
    _check_space(archive.stat().st_size, dst, archive)
    expected = {}
    try:
        with tarfile.open(archive, "r|*") as tar:
            for member in tar:
                tar.extract(member, dst, filter="data")
                if member.isfile():
                    rel = os.path.normpath(member.name.lstrip("/"))
                    expected[rel] = member.size
                    if staged is not None:
                        staged(dst / rel)
    except (tarfile.TarError, EOFError, zlib.error) as exc:
        raise UserError(f"{archive}: not a readable tar archive: {exc}") from None
    return expected


def _check_space(needed: int, dst: Path, src: Path) -> None:
    free = shutil.disk_usage(dst).free
    if needed > free:
        raise UserError(f"{src}: needs {needed / 1e9:.1f} GB but scratch {dst} has {free / 1e9:.1f} GB free; "
                        "ask for more scratch (scratch_local) or stage a smaller data set")


def sync_tree(src: Path, dst: Path) -> CopyReport:
    """Copy every file under ``src`` into ``dst`` (merging; nothing in ``dst`` is deleted), verified.

    Small files go first. A file already in ``dst`` with the same size and modification time is
    taken as copied (rsync's quick check); every other file is written to a temporary name,
    fsynced, given the source's time stamp, renamed into place, then read back and compared by
    SHA-256 with what was read from the source.
    """
    start = time.monotonic()
    report = CopyReport()
    if not src.is_dir():
        report.seconds = time.monotonic() - start
        return report
    files, links = [], []
    for folder, _, names in os.walk(src):
        for name in names:
            path = Path(folder, name)
            (links if path.is_symlink() else files).append(path)
    for path in sorted(files, key=lambda p: p.stat().st_size):
        rel = path.relative_to(src)
        try:
            size = path.stat().st_size
            report.files += 1
            report.bytes += size
            if copy_file(path, dst / rel):
                report.copied += 1
        except OSError as exc:
            report.failures.append(f"{rel}: {exc.strerror or exc}")
    for path in links:
        rel = path.relative_to(src)
        try:
            _copy_link(path, dst / rel)
        except OSError as exc:
            report.failures.append(f"{rel}: {exc.strerror or exc}")
    report.seconds = time.monotonic() - start
    return report


def copy_file(src: Path, dst: Path) -> bool:
    """Copy one file atomically and verify it (SHA-256 of what was read against the copy); False when ``dst`` was already the same file."""
    st = src.stat()
    if dst.is_file() and not dst.is_symlink():
        dst_st = dst.stat()
        if dst_st.st_size == st.st_size and dst_st.st_mtime_ns == st.st_mtime_ns:
            return False
    dst.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dst.name}.", suffix=".tmp", dir=dst.parent)
    digest = hashlib.sha256()
    try:
        with open(src, "rb") as fin, os.fdopen(fd, "wb") as fout:
            while chunk := fin.read(CHUNK):
                digest.update(chunk)
                fout.write(chunk)
            fout.flush()
            os.fsync(fout.fileno())
        os.utime(tmp, ns=(st.st_atime_ns, st.st_mtime_ns))
        os.chmod(tmp, st.st_mode & 0o777)
        if sha256_file(Path(tmp)) != digest.hexdigest():
            raise OSError(f"content differs after the copy (source changed or storage error): {dst}")
        os.replace(tmp, dst)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(dst.parent)
    return True


def _copy_link(src: Path, dst: Path) -> None:
    target = os.readlink(src)
    if dst.is_symlink() and os.readlink(dst) == target:
        return
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(f".{dst.name}.{os.getpid()}.link")
    tmp.unlink(missing_ok=True)
    os.symlink(target, tmp)
    os.replace(tmp, dst)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()
