"""CIFAR-10 and CIFAR-100: the official python releases, image folders, and the download."""

from __future__ import annotations

import importlib
import pickle
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

import numpy as np
import torch

from ..errors import DataError
from . import DATASETS
from .base import ImageArrays, check_data_dir, resize_arrays, square_size
from .download import missing_data, obtain_archive, unpack_folder
from .folder import IMAGE_EXTENSIONS, read_image_folder
from .splits import DataSplits

CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR10_MD5 = "c58f30108f718f92721af3b95e74349a"
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)

CIFAR100_URL = "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz"
CIFAR100_MD5 = "eb9058c3a382ffc7106e4002c42a8d85"
CIFAR100_MEAN = (0.5071, 0.4865, 0.4409)
CIFAR100_STD = (0.2673, 0.2564, 0.2762)

__all__ = [
    "CIFAR10",
    "CIFAR100",
    "IMAGE_EXTENSIONS",
    "CifarRelease",
    "load_cifar10",
    "load_cifar100",
    "read_cifar_pickle",
    "read_image_folder",
]


@dataclass(frozen=True)
class CifarRelease:
    """Where one official CIFAR python release keeps what, and its statistics."""

    title: str  # for messages
    archive: str  # the official archive's file name
    folder: str  # the folder the archive unpacks to
    train_files: tuple[str, ...]
    test_file: str
    meta_file: str
    label_key: str  # the labels entry of each batch
    names_key: str  # the class-name entry of the meta file
    mean: tuple[float, ...]
    std: tuple[float, ...]

    @property
    def files(self) -> tuple[str, ...]:
        return (*self.train_files, self.test_file, self.meta_file)


CIFAR10 = CifarRelease(
    title="CIFAR-10",
    archive="cifar-10-python.tar.gz",
    folder="cifar-10-batches-py",
    train_files=tuple(f"data_batch_{i}" for i in range(1, 6)),
    test_file="test_batch",
    meta_file="batches.meta",
    label_key="labels",
    names_key="label_names",
    mean=CIFAR10_MEAN,
    std=CIFAR10_STD,
)
# The 100 "fine" classes; the 20 coarse superclasses are not used.
CIFAR100 = CifarRelease(
    title="CIFAR-100",
    archive="cifar-100-python.tar.gz",
    folder="cifar-100-python",
    train_files=("train",),
    test_file="test",
    meta_file="meta",
    label_key="fine_labels",
    names_key="fine_label_names",
    mean=CIFAR100_MEAN,
    std=CIFAR100_STD,
)

# Everything a pickle of dicts, lists and numpy arrays needs, under the module names that
# Python 2, numpy 1 and numpy 2 write; nothing that can run code or touch the system.
_BUILTINS = ("list", "dict", "tuple", "bytes", "str", "int", "float", "bool", "set", "frozenset")
_PICKLE_ALLOWED = frozenset(
    {
        *((mod, "_reconstruct") for mod in ("numpy.core.multiarray", "numpy._core.multiarray")),
        *((mod, "_frombuffer") for mod in ("numpy.core.numeric", "numpy._core.numeric")),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("_codecs", "encode"),
        ("copyreg", "_reconstructor"),
        ("copy_reg", "_reconstructor"),
        *(("builtins", name) for name in _BUILTINS),
        *(("__builtin__", name) for name in _BUILTINS),
    }
)
_PY2_MODULES = MappingProxyType({"__builtin__": "builtins", "copy_reg": "copyreg"})


class _RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that only builds containers, strings, numbers and numpy arrays."""

    def find_class(self, module: str, name: str) -> object:
        if (module, name) not in _PICKLE_ALLOWED:
            raise DataError(
                f"refusing to unpickle {module}.{name}: CIFAR files hold only arrays and lists"
            )
        module = _PY2_MODULES.get(module, module)
        if module.startswith("numpy.core."):
            # numpy 2 renamed numpy.core to numpy._core; prefer the new name where it exists.
            try:
                return getattr(importlib.import_module("numpy._core" + module[10:]), name)
            except ImportError:
                pass
        return getattr(importlib.import_module(module), name)


def _load_pickle(path: Path) -> dict:
    """The dict stored in the pickle file ``path``, read with the restricted unpickler."""
    try:
        with open(path, "rb") as f:
            obj = _RestrictedUnpickler(f, encoding="bytes").load()
    except DataError as exc:
        raise DataError(f"{path}: {exc}") from None
    except Exception as exc:  # any failure to parse means a damaged or foreign file
        raise DataError(f"cannot read {path} as a CIFAR pickle: {exc!r}") from exc
    if not isinstance(obj, dict):
        raise DataError(f"{path} holds a {type(obj).__name__}, expected a dict")
    return obj


def _entry(batch: dict, key: str, path: Path) -> object:
    """``batch[key]`` under a bytes key (Python 2 pickles) or a str key (Python 3 ones)."""
    for k in (key.encode(), key):
        if k in batch:
            return batch[k]
    raise DataError(f"{path} has no {key!r} entry")


def _read_batch(path: Path, label_key: str) -> tuple[np.ndarray, np.ndarray]:
    """Rows (n, 3072) uint8 and labels (n,) int64 of one official batch file."""
    batch = _load_pickle(path)
    data = _entry(batch, "data", path)
    if not (isinstance(data, np.ndarray) and data.dtype == np.uint8 and data.ndim == 2):
        raise DataError(f"{path}: 'data' is not a 2-d uint8 array")
    if data.shape[1] != 3 * 32 * 32:
        raise DataError(f"{path}: rows have {data.shape[1]} values, expected 3072 (3x32x32)")
    try:
        labels = np.asarray(_entry(batch, label_key, path), dtype=np.int64)
    except (TypeError, ValueError) as exc:
        raise DataError(f"{path}: {label_key!r} is not a list of integers") from exc
    if labels.shape != (data.shape[0],):
        raise DataError(f"{path}: {labels.size} labels for {data.shape[0]} images")
    return data, labels


def _release_folder(root: Path, release: CifarRelease) -> Path:
    nested = root / release.folder
    return nested if nested.is_dir() else root


def _has_pickle_layout(root: Path, release: CifarRelease) -> bool:
    folder = _release_folder(root, release)
    return any((folder / name).is_file() for name in release.files)


def _as_arrays(
    rows: Sequence[np.ndarray], labels: Sequence[np.ndarray], classes: tuple[str, ...]
) -> ImageArrays:
    # Each row is the red plane, then green, then blue, each 32x32 in row-major order.
    images = np.concatenate(rows).reshape(-1, 3, 32, 32)
    return ImageArrays(torch.from_numpy(images), torch.from_numpy(np.concatenate(labels)), classes)


def _class_names(meta_path: Path, key: str) -> tuple[str, ...]:
    label_names = _entry(_load_pickle(meta_path), key, meta_path)
    if not isinstance(label_names, list | tuple) or not label_names:
        raise DataError(f"{meta_path}: {key!r} is not a list of names")
    try:
        return tuple(n.decode("utf-8") if isinstance(n, bytes) else str(n) for n in label_names)
    except UnicodeDecodeError as exc:
        raise DataError(f"{meta_path}: a label name is not UTF-8 text") from exc


def read_cifar_pickle(
    root: Path, release: CifarRelease = CIFAR10
) -> tuple[ImageArrays, ImageArrays]:
    """(train, test) from the official python release in ``root``.

    ``root`` is the release's folder (``cifar-10-batches-py``, ``cifar-100-python``) or the
    folder that contains it.
    """
    folder = _release_folder(Path(root), release)
    missing = [name for name in release.files if not (folder / name).is_file()]
    if missing:
        raise DataError(
            f"{folder} is not a complete {release.title} python release: "
            f"missing {', '.join(missing)}"
        )
    classes = _class_names(folder / release.meta_file, release.names_key)
    train = [_read_batch(folder / name, release.label_key) for name in release.train_files]
    test = _read_batch(folder / release.test_file, release.label_key)
    return (
        _as_arrays([d for d, _ in train], [y for _, y in train], classes),
        _as_arrays([test[0]], [test[1]], classes),
    )


def _looked_for(data_dir: Path, release: CifarRelease) -> str:
    return (
        f"an image folder layout ({data_dir}/train/<class>/<image> and "
        f"{data_dir}/test/<class>/<image>); the official python release "
        f"({data_dir}/{release.folder}/ with {', '.join(release.files)}, or those files "
        f"directly in {data_dir}); its archive {data_dir}/{release.archive}"
    )


def load_cifar(
    release: CifarRelease,
    data_dir: Path,
    *,
    name: str,
    download: bool,
    url: str,
    md5: str | None,
    image_size: int,
) -> DataSplits:
    """A CIFAR data set from ``data_dir``, in the first layout found.

    In order: image folders ``train/<class>/`` and ``test/<class>/``; the official python
    release; its archive (checked against ``md5`` and extracted); otherwise, when
    ``download`` is allowed, the archive fetched from ``url`` and checked. ``image_size``
    0 keeps the native 32×32; another size resizes every image to that square (antialiased
    bilinear), e.g. for ImageNet-style models.
    """
    data_dir = Path(data_dir)
    size = square_size(image_size, name)
    check_data_dir(data_dir)
    if (data_dir / "train").is_dir() and (data_dir / "test").is_dir():
        train = read_image_folder(data_dir, "train", size=size)
        test = read_image_folder(data_dir, "test", classes=train.classes, size=size)
    else:
        if not _has_pickle_layout(data_dir, release):
            missing = missing_data(release.title, data_dir, _looked_for(data_dir, release))
            archive = obtain_archive(data_dir / release.archive, url, md5, download, missing)
            unpack_folder(archive, data_dir, release.folder)
        train, test = read_cifar_pickle(data_dir, release)
        train, test = resize_arrays(train, size), resize_arrays(test, size)
    return DataSplits(
        name=name,
        train=train,
        test=test,
        mean=release.mean,
        std=release.std,
        augmentation="crop-flip",
    )


@DATASETS.register("cifar10")
def load_cifar10(
    data_dir: Path,
    *,
    download: bool = True,
    image_size: int = 0,
    url: str = CIFAR10_URL,
    md5: str | None = CIFAR10_MD5,
) -> DataSplits:
    """CIFAR-10 (10 classes, 50k/10k 32×32 images) from ``data_dir``; see :func:`load_cifar`.

    Augmentation: 4-pixel zero-padded random crops and horizontal flips (Appendix A.1).
    """
    return load_cifar(
        CIFAR10,
        data_dir,
        name="cifar10",
        download=download,
        url=url,
        md5=md5,
        image_size=image_size,
    )


@DATASETS.register("cifar100")
def load_cifar100(
    data_dir: Path,
    *,
    download: bool = True,
    image_size: int = 0,
    url: str = CIFAR100_URL,
    md5: str | None = CIFAR100_MD5,
) -> DataSplits:
    """CIFAR-100 (100 fine classes, 50k/10k 32×32 images) from ``data_dir``.

    The official python release (``cifar-100-python/`` with ``train``, ``test``, ``meta``;
    labels ``fine_labels``, names ``fine_label_names``), its archive, or image folders;
    see :func:`load_cifar`. Augmentation as CIFAR-10: random crops and flips.
    """
    return load_cifar(
        CIFAR100,
        data_dir,
        name="cifar100",
        download=download,
        url=url,
        md5=md5,
        image_size=image_size,
    )
