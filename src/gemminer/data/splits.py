"""A data set as training needs it: its splits (in memory or on disk) and their statistics,
and the seeded split of a validation set off the training set."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..errors import DataError
from .augment import check_augmentation
from .base import ImageArrays
from .stream import ImageFiles


@dataclass(frozen=True)
class DataSplits:
    """Everything training needs from a data set.

    ``val`` is a validation split when there is one, else ``None``: a held-out part of the
    training set asked for with ``val_size`` (Appendix A.1: 45k/5k for CIFAR-10), or the
    data set's own (Caltech-101's seeded 20 %, an image folder's ``val/``). ``mean``/``std``
    are per-channel statistics in [0, 1] pixel units used for normalization.
    ``augmentation`` names the training augmentation (one of
    :data:`~gemminer.data.augment.AUGMENTATIONS`). ``descriptions`` are human-readable class
    names aligned with ``train.classes`` where the data set ships them (TinyImageNet's
    ``words.txt``), else empty. ``skipped`` lists the image files left out as unreadable
    (only when a reader was told to skip them). Splits are
    :class:`~gemminer.data.base.ImageArrays` (decoded, in memory) or, for data too large for
    memory, :class:`~gemminer.data.stream.ImageFiles` (read from disk batch by batch); the
    batch loaders (:func:`~gemminer.data.loader.training_batches`) take either.
    """

    name: str
    train: ImageArrays | ImageFiles
    test: ImageArrays | ImageFiles
    mean: tuple[float, ...]
    std: tuple[float, ...]
    augmentation: str = "crop-flip"
    val: ImageArrays | ImageFiles | None = None
    descriptions: tuple[str, ...] = ()
    skipped: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        check_augmentation(self.augmentation)
        channels = self.train.images.shape[1]
        if len(self.mean) != channels or len(self.std) != channels:
            raise DataError(
                f"{self.name}: mean {self.mean} and std {self.std} must have one value per "
                f"image channel ({channels})"
            )
        for split in (self.test, self.val):
            if split is not None and split.classes != self.train.classes:
                raise DataError(f"{self.name}: the splits disagree on the classes")
        if self.descriptions and len(self.descriptions) != len(self.train.classes):
            raise DataError(
                f"{self.name}: {len(self.descriptions)} class descriptions "
                f"for {len(self.train.classes)} classes"
            )

    @property
    def num_classes(self) -> int:
        return len(self.train.classes)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        c, h, w = self.train.images.shape[1:]
        return int(c), int(h), int(w)


def split_validation(
    train: ImageArrays | ImageFiles, val_size: int, seed: int
) -> tuple[ImageArrays | ImageFiles, ImageArrays | ImageFiles]:
    """A seeded random split of ``train`` into (train minus ``val_size``, ``val_size``)."""
    if not 0 < val_size < len(train):
        raise DataError(f"validation size {val_size} must lie in (0, {len(train)})")
    order = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed))
    return train.subset(order[val_size:].sort().values), train.subset(
        order[:val_size].sort().values
    )
