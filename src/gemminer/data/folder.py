"""Image folders: ``<root>/<split>/<class>/<image>`` decoded into one uint8 tensor, cached.

Also the ``folder`` data set: any image-classification data laid out that way.
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
from collections.abc import Collection, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch
from PIL import Image

from ..errors import DataError
from ..notices import notice
from . import DATASETS
from .augment import check_augmentation
from .base import ImageArrays, channel_stats, check_data_dir, square_size, stratified_split
from .splits import DataSplits

T = TypeVar("T", bound=Any)  # a split: ImageArrays, or stream.ImageFiles

#: File suffixes (lower case) that :func:`read_image_folder` reads; other files are ignored.
IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".webp"})

CACHE_DIR = ".gemminer-cache"
_CACHE_VERSION = 2
_DECODE_TASK = 256  # images per thread-pool task
_THREADED_MIN_PIXELS = 48 * 48  # smaller images decode faster in a single thread
_BILINEAR = getattr(Image, "Resampling", Image).BILINEAR
_SHOW_SKIPPED = 5  # file names quoted in the notice about skipped images
#: A ``folder`` data set whose decoded images (N × 3 × H × W bytes, all splits) would
#: exceed this is streamed from disk (:mod:`gemminer.data.stream`) instead of decoded
#: into memory (and onto the device) once: 8 GiB, e.g. 57,000 images at 224×224.
STREAM_ABOVE_BYTES = 8 * 2**30


def is_image_file(name: str) -> bool:
    """Whether a file called ``name`` is read as an image (by suffix; hidden files are not)."""
    return not name.startswith(".") and os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def list_images(folder: Path) -> list[Path]:
    """The image files directly in ``folder``, sorted by name."""
    try:
        entries = [e for e in os.scandir(folder) if is_image_file(e.name) and e.is_file()]
    except OSError as exc:
        raise DataError(f"cannot list {folder}: {exc}") from exc
    return [Path(e.path) for e in sorted(entries, key=lambda e: e.name)]


def class_folders(
    split_dir: Path, classes: Sequence[str] | None = None, exclude: Collection[str] = ()
) -> tuple[str, ...]:
    """The class sub-folders of ``split_dir``: sorted names (minus ``exclude``), or checked
    to equal ``classes`` exactly (then in that label order)."""
    if not split_dir.is_dir():
        raise DataError(f"image folder {split_dir} does not exist")
    found = sorted(
        e.name
        for e in os.scandir(split_dir)
        if e.is_dir() and e.name[:1] != "." and e.name not in exclude
    )
    if classes is None:
        if not found:
            raise DataError(f"{split_dir} holds no class folders (expected <class>/<image>)")
        return tuple(found)
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
    return classes


def scan_split(
    split_dir: Path, classes: Sequence[str] | None, exclude: Collection[str] = ()
) -> tuple[tuple[str, ...], list[Path], list[int]]:
    """Classes, the sorted image files of each class folder in turn, and their labels."""
    classes = class_folders(split_dir, classes, exclude)
    files: list[Path] = []
    labels: list[int] = []
    for label, cls in enumerate(classes):
        found = list_images(split_dir / cls)
        files += found
        labels += [label] * len(found)
    if not files:
        exts = " ".join(sorted(IMAGE_EXTENSIONS))
        raise DataError(f"{split_dir} holds no images ({exts}) in its class folders")
    return classes, files, labels


def _fingerprint(
    root: Path,
    files: Sequence[Path],
    labels: Sequence[int],
    classes: tuple[str, ...],
    size: tuple[int, int] | None,
    skip_bad: bool,
) -> str:
    """A digest of the classes, the size, and every file's label, name, length and time."""
    digest = hashlib.sha256(repr((_CACHE_VERSION, classes, size, skip_bad)).encode())
    for path, label in zip(files, labels):
        try:
            st = os.stat(path)
        except OSError as exc:
            raise DataError(f"cannot read {path}: {exc}") from exc
        line = f"{label}\0{os.path.relpath(path, root)}\0{st.st_size}\0{st.st_mtime_ns}\n"
        digest.update(line.encode("utf-8", "surrogateescape"))
    return digest.hexdigest()[:24]


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


def _decode_all(
    files: Sequence[Path], size: tuple[int, int] | None, skip_bad: bool = False
) -> tuple[torch.Tensor, list[int]]:
    """All ``files`` decoded into one uint8 tensor (N, 3, H, W), in parallel threads.

    With ``skip_bad`` files that cannot be decoded are left out and their indices returned
    second; otherwise the first of them (in file order) raises a :class:`DataError`.
    """
    if size is None:
        for path in files:
            try:
                h, w = _decode_image(path, None).shape[:2]
                first = path
                break
            except DataError:
                if not skip_bad:
                    raise
        else:
            raise DataError(f"none of the {len(files)} images could be decoded")
    else:
        h, w = size
        first = None
    out = torch.empty((len(files), 3, h, w), dtype=torch.uint8)
    buf = out.numpy()
    bad = np.zeros(len(files), dtype=bool)

    def decode_range(start: int) -> None:
        for i in range(start, min(start + _DECODE_TASK, len(files))):
            try:
                pixels = _decode_image(files[i], size)
            except DataError:
                if not skip_bad:
                    raise
                bad[i] = True
                continue
            if pixels.shape != (h, w, 3):
                raise DataError(
                    f"image {files[i]} is {pixels.shape[1]}x{pixels.shape[0]} pixels but "
                    f"{first} is {w}x{h}; images must share one size unless an image size "
                    "is given to resize them to"
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
    skipped = np.flatnonzero(bad).tolist()
    if skipped:
        if len(skipped) == len(files):
            raise DataError(f"none of the {len(files)} images could be decoded")
        out = out[torch.from_numpy(~bad)]
    return out, skipped


def _load_cache(
    path: Path, classes: tuple[str, ...], labels: torch.Tensor
) -> tuple[ImageArrays, list[int]] | None:
    """The cached split at ``path`` and its skipped indices if it matches the listing."""
    if not path.is_file():
        return None
    try:
        blob = torch.load(path, weights_only=True)
        arrays = ImageArrays(blob["images"], blob["labels"], tuple(blob["classes"]))
        skipped = [int(i) for i in blob.get("skipped", [])]
        keep = torch.ones(len(labels), dtype=torch.bool)
        keep[skipped] = False
    except Exception:  # a damaged or foreign cache file is simply rebuilt
        return None
    if arrays.classes != classes or not torch.equal(arrays.labels, labels[keep]):
        return None
    return (arrays, skipped) if arrays.images.shape[1] == 3 else None


def _save_cache(path: Path, arrays: ImageArrays, skipped: list[int], stem: str) -> None:
    """Write ``arrays`` to ``path`` atomically and drop older caches of the same split.

    Any failure (a read-only data folder, a full disk) leaves the data uncached.
    """
    blob = {
        "images": arrays.images,
        "labels": arrays.labels,
        "classes": list(arrays.classes),
        "skipped": skipped,
    }
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


def _check_size(size: tuple[int, int] | None) -> tuple[int, int] | None:
    if size is None:
        return None
    if len(size) != 2 or min(size) < 1:
        raise DataError(f"image size must be (height, width) of positive ints, got {size}")
    return int(size[0]), int(size[1])


def read_image_list(
    files: Sequence[Path],
    labels: Sequence[int],
    classes: tuple[str, ...],
    *,
    root: Path,
    stem: str,
    size: tuple[int, int] | None = None,
    cache: bool = True,
    skip_bad: bool = False,
) -> tuple[ImageArrays, list[str]]:
    """Decode ``files`` (with their ``labels``) and the names of any skipped as unreadable.

    Images become RGB, resized to ``size`` = (H, W) if given (otherwise they must share one
    size). The result is cached as ``root/.gemminer-cache/<stem>-<fingerprint>.pt`` and
    reused until a file is added, removed or changed. With ``skip_bad`` files that cannot be
    decoded (broken, truncated, not images) are left out with a notice that counts them
    (:func:`~gemminer.notices.notice`);
    otherwise the first one raises a :class:`DataError` naming it. Skipped files are
    returned relative to ``root``.
    """
    root = Path(root)
    size = _check_size(size)
    if not files:
        raise DataError(f"no images to read under {root}")
    label_t = torch.tensor(list(labels), dtype=torch.int64)
    stem = re.sub(r"[^A-Za-z0-9_.-]", "_", stem)
    loaded = None
    if cache:
        fingerprint = _fingerprint(root, files, labels, classes, size, skip_bad)
        cache_path = root / CACHE_DIR / f"{stem}-{fingerprint}.pt"
        loaded = _load_cache(cache_path, classes, label_t)
    if loaded is None:
        images, skipped = _decode_all(files, size, skip_bad)
        keep = torch.ones(len(files), dtype=torch.bool)
        keep[skipped] = False
        arrays = ImageArrays(images, label_t[keep], classes)
        if cache:
            _save_cache(cache_path, arrays, skipped, stem)
    else:
        arrays, skipped = loaded
    names = [os.path.relpath(files[i], root) for i in skipped]
    if names:
        shown = ", ".join(names[:_SHOW_SKIPPED]) + (", ..." if len(names) > _SHOW_SKIPPED else "")
        notice(f"skipped {len(names)} unreadable image(s) of {len(files)} under {root}: {shown}")
    return arrays, names


def read_image_folder(
    root: Path,
    split: str,
    *,
    classes: tuple[str, ...] | None = None,
    size: tuple[int, int] | None = None,
    cache: bool = True,
    exclude: Collection[str] = (),
    skip_bad: bool = False,
) -> ImageArrays:
    """Read ``root/split/<class>/<image>`` into uint8 images (N, 3, H, W) and labels.

    Classes are the sorted sub-folder names not in ``exclude``, or ``classes`` (in that
    label order, and then the folders must match exactly). Images are decoded to RGB and
    resized to ``size`` = (H, W) if given; otherwise they must all share one size. The
    decoded split is cached in ``root/.gemminer-cache`` and reused until any image file
    changes. ``skip_bad`` leaves out undecodable files with a notice that counts them
    (see :func:`read_image_list`); by default the first one raises an error naming it.
    """
    return _read_folder(root, split, classes, size, cache, exclude, skip_bad)[0]


def _read_folder(
    root: Path,
    split: str,
    classes: Sequence[str] | None,
    size: tuple[int, int] | None,
    cache: bool,
    exclude: Collection[str],
    skip_bad: bool,
) -> tuple[ImageArrays, list[str]]:
    root = Path(root)
    size = _check_size(size)
    classes, files, labels = scan_split(root / split, classes, exclude)
    return read_image_list(
        files, labels, classes, root=root, stem=split, size=size, cache=cache, skip_bad=skip_bad
    )


@DATASETS.register("folder")
def load_folder(
    data_dir: Path,
    *,
    download: bool = True,
    image_size: int = 0,
    skip_bad: bool = False,
    test_fraction: float = 0.0,
    split_seed: int = 0,
    augmentation: str = "flip",
    stream: bool | None = None,
) -> DataSplits:
    """Any image-classification data laid out as ``data_dir/{train,test}/<class>/<image>``.

    Any number of classes (the sorted ``train/`` sub-folder names; ``test/`` must have the
    same ones), any image format Pillow reads (``IMAGE_EXTENSIONS``), grayscale or colour
    (all decoded to 3-channel RGB). Images are resized to ``image_size`` × ``image_size``
    (aspect ratio not kept), or with ``image_size=0`` kept at their size, which they must
    then share. A ``val/<class>/`` folder, if present, becomes the validation split.

    A missing ``test/`` folder is an error unless ``test_fraction`` > 0: then that fraction
    of each class of ``train/`` becomes the test split, drawn with ``split_seed`` (never
    silently, so reported test accuracy is always on images the user chose to hold out).

    Normalization uses the per-channel mean/std of the training images. ``augmentation``
    (default horizontal flips, safe for most photos) is one of ``AUGMENTATIONS``.
    ``skip_bad`` leaves out undecodable images, listed in ``DataSplits.skipped``; by default
    the first one is an error naming it. ``download`` is accepted and ignored (there is
    nothing to download).

    ``stream``: read the images from disk batch by batch in worker processes
    (:mod:`gemminer.data.stream`) instead of decoding them into memory once. The default
    (None) streams when the decoded images would exceed :data:`STREAM_ABOVE_BYTES`
    (8 GiB); True/False force either path. Streamed, every image is resized to
    ``image_size`` (or to the first training image's size), normalization uses the
    statistics of 512 sampled training images, ``augmentation`` may also be
    ``random-resized-crop``, and ``skip_bad`` is not available.
    """
    del download
    data_dir = Path(data_dir)
    check_augmentation(augmentation)
    size = square_size(image_size, "folder")
    check_data_dir(data_dir)
    if not (data_dir / "train").is_dir():
        where = "" if data_dir.is_dir() else " (the folder does not exist)"
        raise DataError(
            f"no image folder data set in {data_dir}{where}: expected {data_dir}/train/<class>/"
            f"<image> and {data_dir}/test/<class>/<image> (optional {data_dir}/val/<class>/)"
        )
    if stream is not False:
        listing = _list_folder(data_dir)
        first = size or _first_size(listing["train"][1], skip_bad)
        pixels = first[0] * first[1]
        total = sum(len(files) for _, files, _ in listing.values()) * 3 * pixels
        if stream or total > STREAM_ABOVE_BYTES:
            if skip_bad:
                raise DataError(
                    f"{data_dir} is streamed from disk ({total / 2**30:.1f} GiB decoded), "
                    "which cannot skip unreadable images: remove them, or pass stream=False "
                    "to decode everything into memory"
                )
            return _streamed_folder(
                data_dir, listing, first, test_fraction, split_seed, augmentation
            )
    if augmentation == "random-resized-crop":
        raise DataError(
            f"augmentation 'random-resized-crop' of {data_dir} needs the full-size images: "
            "pass stream=True to read them from disk batch by batch"
        )
    train, skipped = _read_folder(data_dir, "train", None, size, True, (), skip_bad)
    if (data_dir / "test").is_dir():
        test, more = _read_folder(data_dir, "test", train.classes, size, True, (), skip_bad)
        skipped += more
    else:
        train, test = _hold_out_test(train, data_dir, test_fraction, split_seed)
    val = None
    if (data_dir / "val").is_dir():
        val, more = _read_folder(data_dir, "val", train.classes, size, True, (), skip_bad)
        skipped += more
    if size is None:
        shapes = {tuple(s.images.shape[1:]) for s in (train, test, val) if s is not None}
        if len(shapes) > 1:
            raise DataError(
                f"the splits of {data_dir} have different image sizes {sorted(shapes)}; "
                "give an image size to resize them to"
            )
    mean, std = channel_stats(train.images)
    return DataSplits(
        name="folder",
        train=train,
        test=test,
        mean=mean,
        std=std,
        augmentation=augmentation,
        val=val,
        skipped=tuple(skipped),
    )


def _hold_out_test(train: T, data_dir: Path, test_fraction: float, split_seed: int) -> tuple[T, T]:
    """(train, test) for a folder without test/ (in-memory or streamed splits alike): a
    seeded, stratified ``test_fraction`` of train/ held out; an error saying what to do
    when there is none."""
    if test_fraction <= 0:
        raise DataError(
            f"{data_dir} has train/ but no test/ folder. Add {data_dir}/test/<class>/<image>, "
            "or hold out part of train/ as the test split with "
            "load_dataset('folder', ..., test_fraction=0.2)"
        )
    rest, held = stratified_split(
        train.labels, test_fraction, torch.Generator().manual_seed(split_seed)
    )
    if not len(held):
        raise DataError(f"test fraction {test_fraction} of {data_dir}/train holds no images")
    return train.subset(rest), train.subset(held)


def _list_folder(data_dir: Path) -> dict[str, tuple[tuple[str, ...], list[Path], list[int]]]:
    """Classes, files and labels of ``train/`` and of ``test/``, ``val/`` where present."""
    listing = {"train": scan_split(data_dir / "train", None)}
    classes = listing["train"][0]
    for split in ("test", "val"):
        if (data_dir / split).is_dir():
            listing[split] = scan_split(data_dir / split, classes)
    return listing


def _image_size(path: Path) -> tuple[int, int]:
    """(H, W) of the image at ``path``, from its header."""
    try:
        with Image.open(path) as img:
            return img.height, img.width
    except Exception as exc:  # Pillow raises many types for broken files
        raise DataError(f"cannot decode image {path}: {exc}") from exc


def _first_size(files: Sequence[Path], skip_bad: bool) -> tuple[int, int]:
    """(H, W) of the first training image (of the first readable one with ``skip_bad``)."""
    for path in files if skip_bad else files[:1]:
        try:
            return _image_size(path)
        except DataError:
            if not skip_bad:
                raise
    raise DataError(f"none of the {len(files)} training images can be decoded")


def _streamed_folder(
    data_dir: Path,
    listing: dict[str, tuple[tuple[str, ...], list[Path], list[int]]],
    size: tuple[int, int],
    test_fraction: float,
    split_seed: int,
    augmentation: str,
) -> DataSplits:
    """The ``folder`` data set as :class:`~gemminer.data.stream.ImageFiles` splits."""
    from .stream import ImageFiles, sample_stats

    splits = {
        name: ImageFiles.from_paths(data_dir, files, labels, classes, size, "squash")
        for name, (classes, files, labels) in listing.items()
    }
    train = splits["train"]
    if "test" in splits:
        test = splits["test"]
    else:
        train, test = _hold_out_test(train, data_dir, test_fraction, split_seed)
    mean, std = sample_stats(train)
    return DataSplits(
        name="folder",
        train=train,
        test=test,
        mean=mean,
        std=std,
        augmentation=augmentation,
        val=splits.get("val"),
    )
