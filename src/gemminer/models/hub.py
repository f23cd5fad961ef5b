"""Where pretrained weights come from: a local file, or torchvision's published files.

``torchvision:<arch>`` names the ImageNet weights torchvision publishes (IMAGENET1K_V1,
the ones the paper loads for its Caltech-101 transfer task). They are downloaded once
into the cache folder (``$GEMMINER_CACHE``, else ``~/.cache/gemminer``) and checked
against the SHA-256 prefix in their file name, as torchvision does. Offline, pass the
path of a copy instead.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from ..data.download import download_file
from ..errors import ConfigError, DataError

_BASE = "https://download.pytorch.org/models/"
#: torchvision's ImageNet weight files; the 8 hex digits are the start of their SHA-256.
TORCHVISION_WEIGHTS = {
    "resnet18": "resnet18-f37072fd.pth",
    "resnet50": "resnet50-0676ba61.pth",
}


def cache_dir() -> Path:
    return Path(os.environ.get("GEMMINER_CACHE") or Path.home() / ".cache" / "gemminer")


def _sha256_prefix_ok(path: Path, prefix: str) -> bool:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest().startswith(prefix)


def resolve_weights(spec: str, *, download: bool = True) -> Path:
    """The local file holding the weights named by ``spec`` (a path or ``torchvision:<arch>``)."""
    if not spec.startswith("torchvision:"):
        path = Path(spec).expanduser()
        if not path.is_file():
            raise DataError(f"pretrained weights file {path} does not exist")
        return path
    arch = spec.partition(":")[2]
    if arch not in TORCHVISION_WEIGHTS:
        valid = ", ".join(f"torchvision:{a}" for a in TORCHVISION_WEIGHTS)
        raise ConfigError(f"unknown pretrained weights {spec!r}; valid: {valid} or a file path")
    name = TORCHVISION_WEIGHTS[arch]
    prefix = name.rsplit("-", 1)[1].removesuffix(".pth")
    path = cache_dir() / name
    if path.is_file():
        if _sha256_prefix_ok(path, prefix):
            return path
        raise DataError(f"{path} does not match its SHA-256 prefix {prefix}; delete it to re-fetch")
    if not download:
        raise DataError(
            f"the {arch} ImageNet weights are not in {cache_dir()} and downloading is off: "
            f"fetch {_BASE}{name} elsewhere and pass --pretrained /path/to/{name}"
        )
    download_file(_BASE + name, path)
    if not _sha256_prefix_ok(path, prefix):
        path.unlink(missing_ok=True)
        raise DataError(f"{_BASE}{name} does not match its SHA-256 prefix {prefix}; discarded")
    return path
