"""CIFAR-10 readers: the official python release, image folders, and the download."""

from __future__ import annotations

import hashlib
import importlib
import os
import pickle
import re
import secrets
import shutil
import tempfile
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import MappingProxyType

import numpy as np
import torch
from PIL import Image

from ..errors import DataError
from . import DATASETS
from .base import DataSplits, ImageArrays
from .download import download_file, extract_tar, file_digest

CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR10_MD5 = "c58f30108f718f92721af3b95e74349a"
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)

#: File suffixes (lower case) that :func:`read_image_folder` reads; other files are ignored.
IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".webp"})

_ARCHIVE_NAME = "cifar-10-python.tar.gz"
_BATCHES_DIR = "cifar-10-batches-py"
_TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
_TEST_BATCH = "test_batch"
_META = "batches.meta"
_CACHE_DIR = ".gemminer-cache"
_CACHE_VERSION = 1
_DECODE_TASK = 256  # images per thread-pool task
_THREADED_MIN_PIXELS = 48 * 48  # smaller images decode faster in a single thread
_BILINEAR = getattr(Image, "Resampling", Image).BILINEAR

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


def _read_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Rows (n, 3072) uint8 and labels (n,) int64 of one official batch file."""
    batch = _load_pickle(path)
    data = _entry(batch, "data", path)
    if not (isinstance(data, np.ndarray) and data.dtype == np.uint8 and data.ndim == 2):
        raise DataError(f"{path}: 'data' is not a 2-d uint8 array")
    if data.shape[1] != 3 * 32 * 32:
        raise DataError(f"{path}: rows have {data.shape[1]} values, expected 3072 (3x32x32)")
    try:
        labels = np.asarray(_entry(batch, "labels", path), dtype=np.int64)
    except (TypeError, ValueError) as exc:
        raise DataError(f"{path}: 'labels' is not a list of integers") from exc
    if labels.shape != (data.shape[0],):
        raise DataError(f"{path}: {labels.size} labels for {data.shape[0]} images")
    return data, labels


def _batches_folder(root: Path) -> Path:
    nested = root / _BATCHES_DIR
    return nested if nested.is_dir() else root


def _has_pickle_layout(root: Path) -> bool:
    folder = _batches_folder(root)
    return any((folder / name).is_file() for name in (*_TRAIN_BATCHES, _TEST_BATCH, _META))


def _as_arrays(
    rows: Sequence[np.ndarray], labels: Sequence[np.ndarray], classes: tuple[str, ...]
) -> ImageArrays:
    # Each row is the red plane, then green, then blue, each 32x32 in row-major order.
    images = np.concatenate(rows).reshape(-1, 3, 32, 32)
    return ImageArrays(torch.from_numpy(images), torch.from_numpy(np.concatenate(labels)), classes)


def read_cifar_pickle(root: Path) -> tuple[ImageArrays, ImageArrays]:
    """(train, test) from the official python release in ``root``.

    ``root`` is the ``cifar-10-batches-py`` folder or the folder that contains it.
    """
    folder = _batches_folder(Path(root))
    names = (*_TRAIN_BATCHES, _TEST_BATCH, _META)
    missing = [name for name in names if not (folder / name).is_file()]
    if missing:
        raise DataError(
            f"{folder} is not a complete CIFAR-10 python release: missing {', '.join(missing)}"
        )
    meta_path = folder / _META
    label_names = _entry(_load_pickle(meta_path), "label_names", meta_path)
    if not isinstance(label_names, list | tuple) or not label_names:
        raise DataError(f"{meta_path}: 'label_names' is not a list of names")
    try:
        classes = tuple(n.decode("utf-8") if isinstance(n, bytes) else str(n) for n in label_names)
    except UnicodeDecodeError as exc:
        raise DataError(f"{meta_path}: a label name is not UTF-8 text") from exc
    train = [_read_batch(folder / name) for name in _TRAIN_BATCHES]
    test = _read_batch(folder / _TEST_BATCH)
    return (
        _as_arrays([d for d, _ in train], [y for _, y in train], classes),
        _as_arrays([test[0]], [test[1]], classes),
    )


def _is_image(entry: os.DirEntry) -> bool:
    name = entry.name
    return (
        not name.startswith(".")
        and os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS
        and entry.is_file()
    )


def _scan_split(
    split_dir: Path, classes: tuple[str, ...] | None, size: tuple[int, int] | None
) -> tuple[tuple[str, ...], list[Path], list[int], str]:
    """Classes, sorted image files, their labels, and a fingerprint of names, sizes, times."""
    if not split_dir.is_dir():
        raise DataError(f"image folder {split_dir} does not exist")
    found = sorted(e.name for e in os.scandir(split_dir) if e.is_dir() and e.name[:1] != ".")
    if classes is None:
        classes = tuple(found)
        if not classes:
            raise DataError(f"{split_dir} holds no class folders (expected <class>/<image>)")
    else:
        classes = tuple(classes)
        if len(set(classes)) != len(classes):
            raise DataError(f"class names repeat: {list(classes)}")
        missing = [c for c in classes if c not in found]
        extra = [c for c in found if c not in classes]
        if missing or extra:
            raise DataError(
                f"class folders of {split_dir} differ from the expected classes: "
                f"missing {missing or 'none'}, unexpected {extra or 'none'}"
            )
    digest = hashlib.sha256(repr((_CACHE_VERSION, classes, size)).encode())
    files: list[Path] = []
    labels: list[int] = []
    for label, cls in enumerate(classes):
        entries = [e for e in os.scandir(split_dir / cls) if _is_image(e)]
        for e in sorted(entries, key=lambda e: e.name):
            st = e.stat()
            line = f"{cls}/{e.name}\0{st.st_size}\0{st.st_mtime_ns}\n"
            digest.update(line.encode("utf-8", "surrogateescape"))
            files.append(Path(e.path))
            labels.append(label)
    if not files:
        exts = " ".join(sorted(IMAGE_EXTENSIONS))
        raise DataError(f"{split_dir} holds no images ({exts}) in its class folders")
    return classes, files, labels, digest.hexdigest()[:24]


def _decode_image(path: Path, size: tuple[int, int] | None) -> np.ndarray:
    """The (H, W, 3) uint8 pixels of ``path``, resized to ``size`` = (H, W) when given."""
    try:
        with Image.open(path) as img:
            img.load()
            rgb = img if img.mode == "RGB" else img.convert("RGB")
            if size is not None and rgb.size != (size[1], size[0]):
                rgb = rgb.resize((size[1], size[0]), _BILINEAR)
            return np.asarray(rgb)
    except Exception as exc:  # Pillow raises many types for broken or truncated files
        raise DataError(f"cannot decode image {path}: {exc}") from exc


def _decode_all(files: Sequence[Path], size: tuple[int, int] | None) -> torch.Tensor:
    """All ``files`` decoded into one uint8 tensor (N, 3, H, W), in parallel threads."""
    if size is None:
        h, w = _decode_image(files[0], None).shape[:2]
    else:
        h, w = size
    out = torch.empty((len(files), 3, h, w), dtype=torch.uint8)
    buf = out.numpy()

    def decode_range(start: int) -> None:
        for i in range(start, min(start + _DECODE_TASK, len(files))):
            pixels = _decode_image(files[i], size)
            if pixels.shape != (h, w, 3):
                raise DataError(
                    f"image {files[i]} is {pixels.shape[1]}x{pixels.shape[0]} pixels but "
                    f"{files[0]} is {w}x{h}; images must share one size unless a size is given"
                )
            buf[i] = pixels.transpose(2, 0, 1)

    # Threads pay off where Pillow's decoding (which releases the GIL) dominates; for tiny
    # images the per-file Python work dominates and extra threads only contend for the GIL.
    workers = 1 if h * w < _THREADED_MIN_PIXELS else min(8, os.cpu_count() or 1)
    # Tasks are checked in file order, so an error names the first bad file.
    with ThreadPoolExecutor(max_workers=workers) as pool:
        futures = [pool.submit(decode_range, s) for s in range(0, len(files), _DECODE_TASK)]
        try:
            for future in futures:
                future.result()
        except BaseException:
            for future in futures:
                future.cancel()
            raise
    return out


def _load_cache(path: Path, classes: tuple[str, ...], labels: torch.Tensor) -> ImageArrays | None:
    """The cached split at ``path`` if it exists and matches the listing, else ``None``."""
    if not path.is_file():
        return None
    try:
        blob = torch.load(path, weights_only=True)
        arrays = ImageArrays(blob["images"], blob["labels"], tuple(blob["classes"]))
    except Exception:  # a damaged or foreign cache file is simply rebuilt
        return None
    if arrays.classes != classes or not torch.equal(arrays.labels, labels):
        return None
    return arrays if arrays.images.shape[1] == 3 else None


def _save_cache(path: Path, arrays: ImageArrays, stem: str) -> None:
    """Write ``arrays`` to ``path`` atomically and drop older caches of the same split.

    Any failure (a read-only data folder, a full disk) leaves the data uncached.
    """
    blob = {"images": arrays.images, "labels": arrays.labels, "classes": list(arrays.classes)}
    try:
        path.parent.mkdir(exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
        try:
            torch.save(blob, tmp)
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        pattern = re.compile(re.escape(stem) + r"-[0-9a-f]{24}\.pt")
        for old in path.parent.iterdir():
            if old != path and pattern.fullmatch(old.name):
                old.unlink(missing_ok=True)
    except (OSError, RuntimeError):
        return


def read_image_folder(
    root: Path,
    split: str,
    *,
    classes: tuple[str, ...] | None = None,
    size: tuple[int, int] | None = None,
    cache: bool = True,
) -> ImageArrays:
    """Read ``root/split/<class>/<image>`` into uint8 images (N, 3, H, W) and labels.

    Classes are the sorted sub-folder names, or ``classes`` (in that label order, and then
    the folders must match exactly). Images are decoded to RGB and resized to ``size``
    = (H, W) if given; otherwise they must all share one size. The decoded split is cached
    in ``root/.gemminer-cache`` and reused until any image file changes.
    """
    root = Path(root)
    if size is not None:
        if len(size) != 2 or min(size) < 1:
            raise DataError(f"image size must be (height, width) of positive ints, got {size}")
        size = (int(size[0]), int(size[1]))
    classes, files, label_list, fingerprint = _scan_split(root / split, classes, size)
    labels = torch.tensor(label_list, dtype=torch.int64)
    stem = re.sub(r"[^A-Za-z0-9_.-]", "_", split)
    cache_path = root / _CACHE_DIR / f"{stem}-{fingerprint}.pt"
    if cache:
        cached = _load_cache(cache_path, classes, labels)
        if cached is not None:
            return cached
    arrays = ImageArrays(_decode_all(files, size), labels, classes)
    if cache:
        _save_cache(cache_path, arrays, stem)
    return arrays


def _not_found(data_dir: Path) -> DataError:
    where = "" if data_dir.is_dir() else " (the folder does not exist)"
    return DataError(
        f"no CIFAR-10 data in {data_dir}{where}. Looked for: an image folder layout "
        f"({data_dir}/train/<class>/<image> and {data_dir}/test/<class>/<image>); the official "
        f"python release ({data_dir}/{_BATCHES_DIR}/ with data_batch_1..5, test_batch and "
        f"batches.meta, or those files directly in {data_dir}); its archive "
        f"{data_dir}/{_ARCHIVE_NAME}. Downloading is off: pass --data-dir pointing to a "
        "folder that holds one of these, or allow the download."
    )


def _unpack(archive: Path, data_dir: Path) -> None:
    """Extract the official archive and move its batches folder into ``data_dir``."""
    try:
        tmp = Path(tempfile.mkdtemp(dir=data_dir, prefix=".extract-"))
    except OSError as exc:
        raise DataError(f"cannot extract {archive} into {data_dir}: {exc}") from exc
    try:
        extract_tar(archive, tmp)
        batches = tmp / _BATCHES_DIR
        if not batches.is_dir():
            raise DataError(f"{archive} does not contain the folder {_BATCHES_DIR}/")
        os.replace(batches, data_dir / _BATCHES_DIR)
    except OSError as exc:
        raise DataError(f"cannot extract {archive} into {data_dir}: {exc}") from exc
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@DATASETS.register("cifar10")
def load_cifar10(
    data_dir: Path,
    *,
    download: bool = True,
    url: str = CIFAR10_URL,
    md5: str | None = CIFAR10_MD5,
) -> DataSplits:
    """CIFAR-10 from ``data_dir``, in the first layout found.

    In order: image folders ``train/<class>/`` and ``test/<class>/``; the official python
    release; its archive ``cifar-10-python.tar.gz`` (checked and extracted); otherwise,
    when ``download`` is allowed, the archive fetched from ``url`` and checked against ``md5``.
    """
    data_dir = Path(data_dir)
    if data_dir.exists() and not data_dir.is_dir():
        raise DataError(f"--data-dir {data_dir} is not a folder")
    if (data_dir / "train").is_dir() and (data_dir / "test").is_dir():
        train = read_image_folder(data_dir, "train")
        test = read_image_folder(data_dir, "test", classes=train.classes)
    elif _has_pickle_layout(data_dir):
        train, test = read_cifar_pickle(data_dir)
    else:
        archive = data_dir / _ARCHIVE_NAME
        if archive.is_file():
            actual = file_digest(archive, "md5") if md5 else None
            if md5 and actual != md5.lower():
                raise DataError(
                    f"checksum mismatch for {archive}: expected md5 {md5.lower()}, got {actual}; "
                    "delete the file to download it again"
                )
        elif download:
            download_file(url, archive, md5=md5)
        else:
            raise _not_found(data_dir)
        _unpack(archive, data_dir)
        train, test = read_cifar_pickle(data_dir)
    return DataSplits(name="cifar10", train=train, test=test, mean=CIFAR10_MEAN, std=CIFAR10_STD)
