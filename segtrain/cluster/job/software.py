"""The python command of a job's steps and trainer: a virtualenv's, or one inside an NGC image (envs/README.md).

The runner itself runs outside any container (the scheduler's commands are the host's): with the
virtualenv's python, or the host's ``python3`` beside an image; jobs/common.sh chooses which.
"""
from __future__ import annotations

import os
import shutil
import socket
from pathlib import Path
from typing import Mapping, Sequence

from segtrain.errors import UserError

IMAGE_FILE = "image"  # in an environment made by envs/build_ngc.sh: the image's path
STORAGE = Path("/storage")  # MetaCentrum's storage, bound into the image where it exists


def python_command(env_dir: Path, workdir: Path, binds: Sequence[Path],
                   environ: Mapping[str, str]) -> tuple[list[str], dict[str, str]]:
    """The python command in the environment ``env_dir`` (``binds``: the folders an image must see besides the
    submit folder ``workdir``), and the variables it needs besides ``environ`` (jobs/common.sh has put the
    submit folder first on PYTHONPATH already: the runner needs it too)."""
    variables: dict[str, str] = {}
    image_file = env_dir / IMAGE_FILE
    if image_file.is_file():
        lines = image_file.read_text().splitlines()
        image = lines[0].strip() if lines else ""
        if not image or not Path(image).exists():
            raise UserError(f"image {image} (named in {image_file}) not found")
        if shutil.which("singularity") is None:
            raise UserError(f"singularity not found on {socket.gethostname()}")
        variables["PYTHONUSERBASE"] = str(env_dir)  # the packages the image lacks, installed by envs/build_ngc.sh
        bound = [*binds, workdir] + ([STORAGE] if STORAGE.is_dir() else [])
        return ["singularity", "exec", "--nv", *(w for path in bound for w in ("--bind", str(path))), image,
                "python"], variables
    if os.access(env_dir / "bin" / "python", os.X_OK):
        variables.update(VIRTUAL_ENV=str(env_dir), PATH=f"{env_dir / 'bin'}:{environ.get('PATH', '')}")
        return [str(env_dir / "bin" / "python")], variables
    raise UserError(f"no software environment at {env_dir}: build one (envs/README.md) or pass SEGTRAIN_ENV")
