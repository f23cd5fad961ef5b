"""Files written atomically and torch files read safely: the leaf of every module that
keeps files (run folders, masks, checkpoints), with no other gemminer import than errors."""

from __future__ import annotations

import os
import tempfile
import warnings
from pathlib import Path
from typing import Any

import torch

from ..errors import RunError


def _umask() -> int:
    """This process's file-creation mask (read by setting it, and set back at once)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _atomic_write(path: Path, write: Any) -> None:
    """Write through a temporary file renamed over ``path``, with the permissions a plain
    ``open`` would give (0666 less the umask: the temporary file is private until then, so
    that run files on shared file systems stay readable by other users and jobs)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.chmod(tmp, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: Path, data: bytes) -> None:
    _atomic_write(path, lambda f: f.write(data))


def atomic_write_text(path: Path, text: str) -> None:
    _atomic_write(path, lambda f: f.write(text.encode()))


def atomic_torch_save(obj: Any, path: Path) -> None:
    _atomic_write(path, lambda f: torch.save(obj, f))


#: The first bytes of a torch file (a zip archive); older torch files are a bare pickle.
_ZIP_MAGIC = b"PK\x03\x04"
_PICKLE_MAGIC = 0x80


def safe_torch_load(path: Path) -> Any:
    """Load tensors without executing pickled code; a :class:`RunError` naming ``path`` and
    what is wrong with it otherwise (missing, empty, truncated, not a torch file, unsafe)."""
    if not path.is_file():
        raise RunError(f"{path} does not exist")
    with open(path, "rb") as f:
        head = f.read(len(_ZIP_MAGIC))
    if not head:
        raise RunError(f"{path} is empty")
    if head != _ZIP_MAGIC and head[0] != _PICKLE_MAGIC:
        raise RunError(f"{path} is not a torch file (damaged, or some other file)")
    try:
        with warnings.catch_warnings():  # torch warns about foreign pickles before failing
            warnings.simplefilter("ignore", UserWarning)
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # unpickling errors come in many types
        gist = _first_line(exc)
        if "GLOBAL" in gist or "weights_only" in str(exc):
            raise RunError(f"cannot load {path} safely: {gist}") from exc
        raise RunError(
            f"{path} is truncated or damaged (not a complete torch file: {gist})"
        ) from exc


def _first_line(exc: Exception) -> str:
    """The gist of a loading error in one line (torch's weights_only errors span many)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    gist = next((line for line in lines if "GLOBAL" in line or "Unsupported" in line), None)
    text = gist or (lines[0] if lines else type(exc).__name__)
    text = text.split(". This is an internal")[0]  # torch's long advice on damaged zips
    return text if len(text) <= 300 else text[:297] + "..."
