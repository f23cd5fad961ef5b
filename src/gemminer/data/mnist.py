"""MNIST: the four official idx files (plain or gzipped), strictly parsed, and the download."""

from __future__ import annotations

import gzip
import math
import struct
import zlib
from pathlib import Path

import numpy as np
import torch

from ..errors import DataError
from . import DATASETS
from .base import ImageArrays, check_data_dir, resize_arrays, square_size
from .download import download_file, missing_data
from .splits import DataSplits

#: The mirror torchvision downloads from (the original yann.lecun.com site is gone).
MNIST_URL = "https://ossci-datasets.s3.amazonaws.com/mnist/"
#: md5 of each gzipped file, as published with torchvision's MNIST.
MNIST_MD5 = {
    "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
    "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
    "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
}
MNIST_MEAN = (0.1307,)
MNIST_STD = (0.3081,)
MNIST_CLASSES = tuple(str(d) for d in range(10))

_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
_UBYTE = 0x08  # the idx type code of unsigned bytes, the only type MNIST uses


def read_idx(path: Path, ndim: int) -> np.ndarray:
    """The uint8 array of ``ndim`` dimensions in idx file ``path`` (gzipped if ``.gz``).

    The header is checked strictly: magic ``00 00 08 <ndim>``, then ``ndim`` big-endian
    uint32 sizes, then exactly as many bytes as they multiply to (a shorter file is
    truncated, a longer one is not an idx file of that shape).
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
        if path.suffix == ".gz":
            raw = gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as exc:  # gzip.BadGzipFile is an OSError
        raise DataError(f"cannot read {path}: {exc}") from exc
    if len(raw) < 4:
        raise DataError(f"{path} is truncated: {len(raw)} bytes, shorter than an idx header")
    if raw[:2] != b"\0\0" or raw[2] != _UBYTE or raw[3] != ndim:
        raise DataError(
            f"{path} is not an idx file of {ndim}-d unsigned bytes: magic number "
            f"{raw[:4].hex()}, expected 000008{ndim:02x}"
        )
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{path} is truncated inside its header ({len(raw)} bytes)")
    dims = struct.unpack(f">{ndim}I", raw[4:header])
    expected = math.prod(dims)
    if len(raw) - header != expected:
        what = "truncated" if len(raw) - header < expected else "longer than its header says"
        raise DataError(
            f"{path} is {what}: its header gives shape {dims} ({expected} bytes of data), "
            f"but it holds {len(raw) - header}"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)


def _read_pair(images_path: Path, labels_path: Path) -> ImageArrays:
    images = read_idx(images_path, 3)
    labels = read_idx(labels_path, 1)
    if images.shape[0] != labels.shape[0]:
        raise DataError(
            f"{images_path} holds {images.shape[0]} images but {labels_path} holds "
            f"{labels.shape[0]} labels"
        )
    if labels.size and labels.max() >= len(MNIST_CLASSES):
        raise DataError(f"{labels_path} holds label {labels.max()}, outside 0..9")
    return ImageArrays(
        torch.from_numpy(images.copy()).unsqueeze(1),
        torch.from_numpy(labels.astype(np.int64)),
        MNIST_CLASSES,
    )


def _find(data_dir: Path, name: str) -> Path | None:
    """``name`` or ``name.gz`` in ``data_dir`` or torchvision's ``data_dir/MNIST/raw``."""
    for folder in (data_dir, data_dir / "MNIST" / "raw"):
        for candidate in (folder / name, folder / f"{name}.gz"):
            if candidate.is_file():
                return candidate
    return None


@DATASETS.register("mnist")
def load_mnist(
    data_dir: Path,
    *,
    download: bool = True,
    image_size: int = 0,
    url: str = MNIST_URL,
    md5: dict[str, str] | None = None,
) -> DataSplits:
    """MNIST (10 digits, 60k/10k 28×28 grayscale images: (N, 1, 28, 28) uint8).

    Reads ``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``, ``t10k-images-idx3-ubyte``
    and ``t10k-labels-idx1-ubyte`` (each plain or ``.gz``) from ``data_dir`` or
    ``data_dir/MNIST/raw``. Missing files are downloaded as ``.gz`` from ``url`` when allowed
    and checked against ``md5`` (default :data:`MNIST_MD5`); files already present are not
    checksummed (a re-compressed copy is fine) but parsed strictly. ``image_size`` 0 keeps
    28×28; another size resizes to that square. No augmentation.
    """
    data_dir = Path(data_dir)
    size = square_size(image_size, "mnist")
    check_data_dir(data_dir)
    checksums = MNIST_MD5 if md5 is None else md5
    paths = {name: _find(data_dir, name) for name in _FILES}
    missing = [name for name, path in paths.items() if path is None]
    if missing and not download:
        looked_for = (
            f"{', '.join(missing)} (each plain or .gz) in {data_dir} or {data_dir}/MNIST/raw"
        )
        raise missing_data("MNIST", data_dir, looked_for)
    for name in missing:
        gz = f"{name}.gz"
        paths[name] = download_file(
            url.rstrip("/") + "/" + gz, data_dir / gz, md5=checksums.get(gz)
        )
    train = _read_pair(paths[_FILES[0]], paths[_FILES[1]])
    test = _read_pair(paths[_FILES[2]], paths[_FILES[3]])
    if train.images.shape[2:] != test.images.shape[2:]:
        raise DataError(
            f"MNIST train images are {tuple(train.images.shape[2:])} but test images "
            f"{tuple(test.images.shape[2:])}"
        )
    return DataSplits(
        name="mnist",
        train=resize_arrays(train, size),
        test=resize_arrays(test, size),
        mean=MNIST_MEAN,
        std=MNIST_STD,
        augmentation="none",
    )
