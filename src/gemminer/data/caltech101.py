"""Caltech-101: ``101_ObjectCategories/<class>/*.jpg``, the paper's seeded 60/20/20 split.

Appendix A.1: images resized to 224×224 and normalized per channel; 20 % of the data is the
test set and 25 % of the rest the validation set, i.e. train/val/test = 60/20/20 %.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import zipfile
from pathlib import Path, PurePosixPath

import torch

from ..errors import DataError
from . import DATASETS
from .base import check_data_dir, square_size, stratified_split
from .download import (
    check_md5,
    extract_zip,
    file_digest,
    missing_data,
    obtain_archive,
    unpack_folder,
)
from .folder import list_images, read_image_list, scan_split
from .splits import DataSplits

CALTECH101_URL = "https://data.caltech.edu/records/mzrjq-6wc02/files/caltech-101.zip"
#: md5 of caltech-101.zip (CaltechDATA record mzrjq-6wc02, about 137 MB).
CALTECH101_MD5 = "3138e1922a9193bfa496528edbbc45d0"
#: md5 of the 101_ObjectCategories.tar.gz inside it (the long-standing torchvision checksum).
CATEGORIES_MD5 = "b224c7392d521a49829488ab0f1120d9"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
DEFAULT_SIZE = 224
TEST_FRACTION = 0.2  # of each class
VAL_FRACTION = 0.25  # of each class's remaining images

_FOLDER = "101_ObjectCategories"
_TARBALL = f"{_FOLDER}.tar.gz"
_ARCHIVE = "caltech-101.zip"
#: Clutter images, not an object class: left out, leaving 101 classes.
BACKGROUND = "BACKGROUND_Google"


def _categories_folder(data_dir: Path) -> Path | None:
    """``101_ObjectCategories`` in ``data_dir`` or ``data_dir/caltech-101``, or ``data_dir``
    itself when it directly holds class folders of images."""
    for folder in (data_dir / _FOLDER, data_dir / "caltech-101" / _FOLDER):
        if folder.is_dir():
            return folder
    if not data_dir.is_dir():
        return None
    for entry in os.scandir(data_dir):
        if entry.is_dir() and entry.name[:1] != "." and list_images(Path(entry.path)):
            return data_dir
    return None


def _inner_tarball(archive: Path) -> str:
    """The name of ``101_ObjectCategories.tar.gz`` inside the official zip."""
    try:
        with zipfile.ZipFile(archive) as zf:
            names = zf.namelist()
    except (zipfile.BadZipFile, OSError) as exc:
        raise DataError(f"cannot read {archive} as a zip archive: {exc}") from exc
    found = [
        n for n in names if PurePosixPath(n).name == _TARBALL and not n.startswith("__MACOSX/")
    ]
    if len(found) != 1:
        raise DataError(f"{archive} does not hold exactly one {_TARBALL} (found {found})")
    return found[0]


def _unpack_zip(archive: Path, data_dir: Path, categories_md5: str | None) -> Path:
    """Extract the inner tarball of the official zip, check it, and unpack its folder."""
    member = _inner_tarball(archive)
    try:
        tmp = Path(tempfile.mkdtemp(dir=data_dir, prefix=".extract-"))
    except OSError as exc:
        raise DataError(f"cannot extract {archive} into {data_dir}: {exc}") from exc
    try:
        extract_zip(archive, tmp, members=[member])
        tarball = tmp.joinpath(*PurePosixPath(member).parts)
        if categories_md5:
            actual = file_digest(tarball, "md5")
            if actual != categories_md5.lower():
                raise DataError(
                    f"{member} inside {archive} has md5 {actual}, expected "
                    f"{categories_md5.lower()}; delete {archive} to download it again"
                )
        return unpack_folder(tarball, data_dir, _FOLDER)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@DATASETS.register("caltech101")
def load_caltech101(
    data_dir: Path,
    *,
    download: bool = True,
    image_size: int = 0,
    skip_bad: bool = False,
    split_seed: int = 0,
    url: str = CALTECH101_URL,
    md5: str | None = CALTECH101_MD5,
    categories_md5: str | None = CATEGORIES_MD5,
) -> DataSplits:
    """Caltech-101 (101 object classes, about 9k images of roughly 300×200) from ``data_dir``.

    Looks for ``101_ObjectCategories/`` in ``data_dir`` (or ``data_dir/caltech-101/``),
    or takes ``data_dir`` itself as that folder when it directly holds class folders; then
    for ``101_ObjectCategories.tar.gz`` (there or in ``caltech-101/``) or the official
    ``caltech-101.zip`` (which holds the tarball), checked by md5 and extracted; then
    downloads the zip from ``url`` when allowed. ``BACKGROUND_Google`` is left out. Images
    are decoded to RGB and resized to ``image_size`` × ``image_size`` (0: 224, as the
    paper), aspect ratio not kept.

    Splits (Appendix A.1): per class, a seeded 20 % is the test set and 25 % of the rest the
    validation set, so train/val/test ≈ 60/20/20 %. The split is stratified per class in both
    steps and drawn from ``split_seed`` alone (not the run's seed), so every run sees the
    same test images. ``DataSplits.val`` is therefore always set; asking ``load_dataset``
    for ``val_size`` as well is an error. ImageNet mean/std (for pretrained models);
    augmentation: horizontal flips (the paper's code uses none).
    """
    data_dir = Path(data_dir)
    size = square_size(image_size or DEFAULT_SIZE, "caltech101")
    check_data_dir(data_dir)
    folder = _categories_folder(data_dir)
    tarballs = [
        p for p in (data_dir / _TARBALL, data_dir / "caltech-101" / _TARBALL) if p.is_file()
    ]
    if folder is None:
        if tarballs:
            check_md5(tarballs[0], categories_md5)
            folder = unpack_folder(tarballs[0], data_dir, _FOLDER)
        else:
            looked_for = (
                f"{data_dir}/{_FOLDER}/<class>/<image> (or {data_dir}/caltech-101/{_FOLDER}/, "
                f"or class folders directly in {data_dir}); {_TARBALL} in {data_dir} or "
                f"{data_dir}/caltech-101/; the official archive {data_dir}/{_ARCHIVE}"
            )
            missing = missing_data("Caltech-101", data_dir, looked_for)
            archive = obtain_archive(data_dir / _ARCHIVE, url, md5, download, missing)
            folder = _unpack_zip(archive, data_dir, categories_md5)
    classes, files, labels = scan_split(folder, None, exclude={BACKGROUND})
    everything, skipped = read_image_list(
        files, labels, classes, root=folder, stem="caltech101", size=size, skip_bad=skip_bad
    )
    generator = torch.Generator().manual_seed(split_seed)
    rest, test = stratified_split(everything.labels, TEST_FRACTION, generator)
    train, val = stratified_split(everything.labels[rest], VAL_FRACTION, generator)
    return DataSplits(
        name="caltech101",
        train=everything.subset(rest[train]),
        test=everything.subset(test),
        val=everything.subset(rest[val]),
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        augmentation="flip",
        skipped=tuple(skipped),
    )
