"""Data sets: readers registered by name, and the device-side batch loader."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from ..registry import Registry
from .base import DataSplits, ImageArrays, split_validation

#: A dataset factory takes the data folder and whether it may download, and returns splits.
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
) -> DataSplits:
    """Read data set ``name`` from ``data_dir`` (downloading it when allowed and missing).

    With ``val_size > 0`` a seeded random part of the training set becomes ``val``; with
    ``train_size > 0`` training uses a seeded random subset of that size of the rest.
    """
    splits = DATASETS.get(name)(Path(data_dir), download=download)
    if val_size:
        train, val = split_validation(splits.train, val_size, seed)
        splits = replace(splits, train=train, val=val)
    if train_size and train_size < len(splits.train):
        _, subset = split_validation(splits.train, train_size, seed + 1)
        splits = replace(splits, train=subset)
    return splits


# Registration happens on import of the reader modules.
from . import cifar as _cifar  # noqa: E402,F401

__all__ = ["DATASETS", "DataSplits", "ImageArrays", "load_dataset", "split_validation"]
