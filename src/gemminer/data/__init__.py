"""Data sets: readers registered by name, and the device-side batch loader."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from ..errors import ConfigError, DataError
from ..notices import notice
from ..registry import Registry
from .augment import AUGMENTATIONS
from .base import ImageArrays, check_data_dir
from .splits import DataSplits, split_validation
from .stream import ImageFiles

#: A dataset factory takes the data folder, whether it may download and an image size
#: (0: the data set's own), plus options of its own, and returns splits.
DatasetFactory = Callable[..., DataSplits]
DATASETS: Registry[DatasetFactory] = Registry("dataset")


def load_dataset(
    name: str,
    data_dir: str | Path,
    *,
    download: bool = True,
    val_size: int = 0,
    train_size: int = 0,
    seed: int = 0,
    image_size: int = 0,
    **options: object,
) -> DataSplits:
    """Read data set ``name`` from ``data_dir`` (downloading it when allowed and missing).

    ``image_size`` > 0 resizes every image to that square; 0 keeps the data set's default
    (native for CIFAR, MNIST, TinyImageNet; 224 for Caltech-101). With ``val_size > 0`` a
    seeded random part of the training set becomes ``val`` (an error for data sets that
    come with their own validation split); with ``train_size > 0`` training uses a seeded
    random subset of that size of the rest. ``options`` go to the data set's factory
    (e.g. ``skip_bad=True`` for ``folder``).
    """
    factory = DATASETS.get(name)
    check_data_dir(Path(data_dir))
    params = inspect.signature(factory).parameters
    if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        unknown = sorted(set(options) - set(params))
        if unknown:
            valid = sorted(set(params) - {"data_dir", "download", "image_size"})
            raise ConfigError(
                f"data set {name!r} has no option {', '.join(unknown)}; "
                f"its options: {', '.join(valid) or '(none)'}"
            )
    splits = factory(Path(data_dir), download=download, image_size=image_size, **options)
    if val_size:
        if splits.val is not None:
            raise DataError(
                f"data set {name!r} comes with its own validation split "
                f"({len(splits.val)} images); do not ask for --val-size {val_size} as well"
            )
        train, val = split_validation(splits.train, val_size, seed)
        splits = replace(splits, train=train, val=val)
    if train_size and train_size < len(splits.train):
        _, subset = split_validation(splits.train, train_size, seed + 1)
        splits = replace(splits, train=subset)
    elif train_size > len(splits.train):
        left = " left after the validation split" if val_size else ""
        notice(
            f"--train-size {train_size} is more than the {len(splits.train)} training "
            f"images{left}: training uses all {len(splits.train)}"
        )
    return splits


# Registration happens on import of the reader modules.
from . import caltech101 as _caltech101  # noqa: E402,F401
from . import cifar as _cifar  # noqa: E402,F401
from . import folder as _folder  # noqa: E402,F401
from . import imagenet as _imagenet  # noqa: E402,F401
from . import mnist as _mnist  # noqa: E402,F401
from . import tinyimagenet as _tinyimagenet  # noqa: E402,F401

__all__ = [
    "AUGMENTATIONS",
    "DATASETS",
    "DataSplits",
    "ImageArrays",
    "ImageFiles",
    "load_dataset",
    "split_validation",
]
