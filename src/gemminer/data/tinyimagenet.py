"""TinyImageNet (200 classes of 64×64 images): the official archive layout and its download.

The official release has train (500 images per class), val (50 per class, labelled in
``val/val_annotations.txt``) and test (unlabelled). As in the paper, the labelled official
val set serves as the test split; the unlabelled test images are not read.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import DataError
from . import DATASETS
from .base import ImageArrays, check_data_dir, square_size
from .download import missing_data, obtain_archive, unpack_folder
from .folder import class_folders, list_images, read_image_list
from .splits import DataSplits

TINYIMAGENET_URL = "http://cs231n.stanford.edu/tiny-imagenet-200.zip"
#: md5 of tiny-imagenet-200.zip as published by torchvision-style loaders (248,100,043 bytes).
TINYIMAGENET_MD5 = "90528d7ca1a48142e341f4ef8d21d0de"
TINYIMAGENET_MEAN = (0.4802, 0.4481, 0.3975)
TINYIMAGENET_STD = (0.2302, 0.2265, 0.2262)

_FOLDER = "tiny-imagenet-200"
_ARCHIVE = "tiny-imagenet-200.zip"


def _read_lines(path: Path) -> list[str]:
    try:
        return path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"cannot read {path}: {exc}") from exc


def _wnids(root: Path) -> tuple[str, ...]:
    path = root / "wnids.txt"
    wnids = [line.strip() for line in _read_lines(path) if line.strip()]
    if not wnids:
        raise DataError(f"{path} lists no classes")
    if len(set(wnids)) != len(wnids):
        raise DataError(f"{path} lists a class twice")
    return tuple(sorted(wnids))


def _descriptions(root: Path, wnids: tuple[str, ...]) -> tuple[str, ...]:
    """Each class's words from the optional ``words.txt`` (``wnid<TAB>words``), else ()."""
    path = root / "words.txt"
    if not path.is_file():
        return ()
    words = {}
    for line in _read_lines(path):
        wnid, _, text = line.partition("\t")
        if wnid.strip():
            words[wnid.strip()] = text.strip()
    return tuple(words.get(w) or w for w in wnids)


def _val_listing(root: Path, classes: tuple[str, ...]) -> tuple[list[Path], list[int]]:
    """The val images and labels in annotation order, checked against the images folder."""
    folder = root / "val" / "images"
    notes = root / "val" / "val_annotations.txt"
    if not folder.is_dir():
        raise DataError(f"{root} has no val/images/ folder")
    label_of = {wnid: i for i, wnid in enumerate(classes)}
    files: list[Path] = []
    labels: list[int] = []
    seen: set[str] = set()
    for number, line in enumerate(_read_lines(notes), 1):
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) < 2:
            raise DataError(f"{notes}:{number}: expected <file>\\t<wnid>\\t..., got {line!r}")
        name, wnid = fields[0].strip(), fields[1].strip()
        if Path(name).name != name or name in ("", ".", ".."):
            raise DataError(f"{notes}:{number}: {name!r} is not a plain file name")
        if wnid not in label_of:
            raise DataError(f"{notes}:{number}: class {wnid!r} is not in wnids.txt")
        if name in seen:
            raise DataError(f"{notes}:{number}: {name} is annotated twice")
        if not (folder / name).is_file():
            raise DataError(f"{notes}:{number}: {folder / name} does not exist")
        seen.add(name)
        files.append(folder / name)
        labels.append(label_of[wnid])
    unlabelled = sorted(p.name for p in list_images(folder) if p.name not in seen)
    if unlabelled:
        raise DataError(
            f"{len(unlabelled)} image(s) in {folder} have no line in {notes}, e.g. {unlabelled[0]}"
        )
    if not files:
        raise DataError(f"{notes} annotates no images")
    return files, labels


def read_tinyimagenet(
    root: Path, *, size: tuple[int, int] | None = None, skip_bad: bool = False
) -> tuple[ImageArrays, ImageArrays, tuple[str, ...], list[str]]:
    """(train, official val, class descriptions, skipped files) of ``tiny-imagenet-200/``.

    Classes are the wnids of ``wnids.txt``, sorted (as an image-folder reader of ``train/``
    orders them); ``train/<wnid>/images/*.JPEG`` must exist for each and no other.
    """
    root = Path(root)
    classes = _wnids(root)
    class_folders(root / "train", classes)  # exactly the listed classes
    files: list[Path] = []
    labels: list[int] = []
    for label, wnid in enumerate(classes):
        images = root / "train" / wnid / "images"
        if not images.is_dir():
            raise DataError(f"{images} does not exist")
        found = list_images(images)
        if not found:
            raise DataError(f"{images} holds no images")
        files += found
        labels += [label] * len(found)
    train, skipped = read_image_list(
        files, labels, classes, root=root, stem="train", size=size, skip_bad=skip_bad
    )
    val_files, val_labels = _val_listing(root, classes)
    test, more = read_image_list(
        val_files, val_labels, classes, root=root, stem="val", size=size, skip_bad=skip_bad
    )
    if train.images.shape[1:] != test.images.shape[1:]:
        raise DataError(
            f"{root}: train images are {tuple(train.images.shape[2:])} but val images "
            f"{tuple(test.images.shape[2:])}; give an image size to resize them to"
        )
    return train, test, _descriptions(root, classes), skipped + more


def _release_root(data_dir: Path) -> Path | None:
    for root in (data_dir / _FOLDER, data_dir):
        if (root / "wnids.txt").is_file():
            return root
    return None


@DATASETS.register("tinyimagenet")
def load_tinyimagenet(
    data_dir: Path,
    *,
    download: bool = True,
    image_size: int = 0,
    skip_bad: bool = False,
    url: str = TINYIMAGENET_URL,
    md5: str | None = TINYIMAGENET_MD5,
) -> DataSplits:
    """TinyImageNet-200 from ``data_dir`` (Appendix A.1: 100k train images, 64×64).

    Looks for ``tiny-imagenet-200/`` (``wnids.txt``, optional ``words.txt``,
    ``train/<wnid>/images/*.JPEG``, ``val/images/*.JPEG`` with ``val/val_annotations.txt``)
    in ``data_dir`` or as ``data_dir`` itself, then for ``tiny-imagenet-200.zip`` (checked
    against ``md5`` and safely extracted), then downloads it from ``url`` when allowed.

    The test split is the official val set (10k images, 50 per class): the official test
    labels are not public. ``image_size`` 0 keeps 64×64. Augmentation (as the paper's code):
    random rotation by up to ±20° and horizontal flips. ``skip_bad`` leaves out undecodable
    images, listed in ``DataSplits.skipped``. Class names are wnids; ``words.txt`` gives
    ``DataSplits.descriptions``.
    """
    data_dir = Path(data_dir)
    size = square_size(image_size, "tinyimagenet")
    check_data_dir(data_dir)
    root = _release_root(data_dir)
    if root is None:
        looked_for = (
            f"the official folder {data_dir}/{_FOLDER}/ (with wnids.txt, train/, val/), or its "
            f"contents directly in {data_dir}; its archive {data_dir}/{_ARCHIVE}"
        )
        missing = missing_data("TinyImageNet", data_dir, looked_for)
        archive = obtain_archive(data_dir / _ARCHIVE, url, md5, download, missing)
        root = unpack_folder(archive, data_dir, _FOLDER)
    train, test, descriptions, skipped = read_tinyimagenet(root, size=size, skip_bad=skip_bad)
    return DataSplits(
        name="tinyimagenet",
        train=train,
        test=test,
        mean=TINYIMAGENET_MEAN,
        std=TINYIMAGENET_STD,
        augmentation="rotate-flip",
        descriptions=descriptions,
        skipped=tuple(skipped),
    )


__all__ = ["load_tinyimagenet", "read_tinyimagenet"]
