"""ImageNet (ILSVRC-2012): the standard folder layout, streamed from disk.

``data_dir/train/<wnid>/*.JPEG`` (1,000 classes, 1.28 M images) and ``data_dir/val/``
(50,000 images), either in the same class folders (``val/<wnid>/*.JPEG``, as the usual
``valprep.sh`` leaves them) or flat (``val/*.JPEG``) with a labels file: Kaggle's
``LOC_val_solution.csv`` (``ImageId,PredictionString`` whose first word is the wnid) or a
``val_labels.txt`` of ``<file> <wnid>`` lines, in ``data_dir`` or ``data_dir/val``. As in
the paper (and the literature), the labelled validation set is the test split.

Images are never held in memory: the splits are :class:`~gemminer.data.stream.ImageFiles`
and batches are decoded by worker processes (:class:`~gemminer.data.stream.StreamingLoader`):
``RandomResizedCrop(224)`` and flips for training, resize to 256 and centre crop 224 for
evaluation (``image_size`` sets the 224), normalized with ImageNet's mean and std.
"""

from __future__ import annotations

import csv
from pathlib import Path

from ..errors import DataError
from . import DATASETS
from .base import check_data_dir, square_size
from .caltech101 import IMAGENET_MEAN, IMAGENET_STD
from .folder import class_folders, is_image_file, list_images, scan_split
from .splits import DataSplits
from .stream import ImageFiles

DEFAULT_SIZE = 224
#: Names of a flat ``val/`` folder's labels file, looked for in ``data_dir`` and ``val/``.
VAL_LABEL_FILES = ("LOC_val_solution.csv", "val_labels.txt")


def _labels_file(data_dir: Path) -> Path | None:
    for folder in (data_dir, data_dir / "val"):
        for name in VAL_LABEL_FILES:
            if (folder / name).is_file():
                return folder / name
    return None


def _read_val_labels(path: Path) -> dict[str, str]:
    """File name -> wnid from ``LOC_val_solution.csv`` or ``<file> <wnid>`` lines."""
    found: dict[str, str] = {}
    try:
        with path.open(encoding="utf-8", newline="") as fh:
            if path.suffix == ".csv":
                rows = [(r[0], (r[1].split() or [""])[0]) for r in csv.reader(fh) if len(r) >= 2]
                rows = [r for r in rows if r[0] != "ImageId"]
                rows = [(f"{name}.JPEG" if "." not in name else name, w) for name, w in rows]
            else:
                rows = []
                for number, line in enumerate(fh, 1):
                    fields = line.replace(",", " ").split()
                    if not fields:
                        continue
                    if len(fields) < 2:
                        raise DataError(f"{path}:{number}: expected <file> <wnid>, got {line!r}")
                    rows.append((fields[0], fields[1]))
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"cannot read {path}: {exc}") from exc
    for name, wnid in rows:
        name = Path(name).name
        if found.get(name, wnid) != wnid:
            raise DataError(f"{path}: {name} is labelled twice ({found[name]}, {wnid})")
        found[name] = wnid
    return found


def _flat_val(data_dir: Path, classes: tuple[str, ...]) -> tuple[list[Path], list[int]]:
    """A flat ``val/`` folder's images (sorted) and labels from its labels file."""
    folder = data_dir / "val"
    notes = _labels_file(data_dir)
    if notes is None:
        raise DataError(
            f"{folder} holds images but no class folders, and no labels file "
            f"({' or '.join(VAL_LABEL_FILES)}) was found in {data_dir} or {folder}: add one, "
            "or sort the images into val/<wnid>/ folders"
        )
    label_of = {wnid: i for i, wnid in enumerate(classes)}
    wnid_of = _read_val_labels(notes)
    files = list_images(folder)
    labels = []
    for path in files:
        wnid = wnid_of.get(path.name)
        if wnid is None:
            raise DataError(f"{notes} has no label for {path.name}")
        if wnid not in label_of:
            raise DataError(f"{notes}: class {wnid!r} of {path.name} is not a train/ class folder")
        labels.append(label_of[wnid])
    return files, labels


@DATASETS.register("imagenet")
def load_imagenet(data_dir: Path, *, download: bool = True, image_size: int = 0) -> DataSplits:
    """ILSVRC-2012 from ``data_dir`` (see the module docstring), streamed from disk.

    ``image_size`` (default 224) is the side of the training crop and of the evaluation
    centre crop (taken after resizing the short side to ``image_size`` × 256/224).
    ``download`` is accepted and ignored: ImageNet must be obtained from image-net.org
    under its terms.
    """
    del download
    data_dir = Path(data_dir)
    size = square_size(image_size, "imagenet") or (DEFAULT_SIZE, DEFAULT_SIZE)
    check_data_dir(data_dir)
    train_dir, val_dir = data_dir / "train", data_dir / "val"
    if not train_dir.is_dir() or not val_dir.is_dir():
        where = "" if data_dir.is_dir() else " (the folder does not exist)"
        raise DataError(
            f"no ImageNet in {data_dir}{where}: expected {data_dir}/train/<wnid>/*.JPEG and "
            f"{data_dir}/val/ (class folders, or flat with LOC_val_solution.csv); ImageNet "
            "is not downloaded automatically (get it from image-net.org)"
        )
    classes, files, labels = scan_split(train_dir, None)
    train = ImageFiles.from_paths(data_dir, files, labels, classes, size, "crop")
    has_folders = bool(_val_classes(val_dir))
    if has_folders:
        _, vfiles, vlabels = scan_split(val_dir, classes)
    else:
        vfiles, vlabels = _flat_val(data_dir, classes)
        if not vfiles:
            raise DataError(f"{val_dir} holds no images")
    test = ImageFiles.from_paths(data_dir, vfiles, vlabels, classes, size, "crop")
    return DataSplits(
        name="imagenet",
        train=train,
        test=test,
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        augmentation="random-resized-crop",
    )


def _val_classes(split_dir: Path) -> tuple[str, ...]:
    """The class sub-folders of ``split_dir``, or () when it holds images directly."""
    if any(is_image_file(p.name) and p.is_file() for p in split_dir.iterdir()):
        return ()
    try:
        return class_folders(split_dir)
    except DataError:
        return ()
