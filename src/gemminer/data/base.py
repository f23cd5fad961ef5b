"""Data set types shared by every reader: decoded images as one uint8 tensor."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..errors import DataError


@dataclass(frozen=True)
class ImageArrays:
    """A decoded split: ``images`` uint8 of shape (N, C, H, W), ``labels`` int64 of shape (N,)."""

    images: torch.Tensor
    labels: torch.Tensor
    classes: tuple[str, ...]

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.dim() != 4:
            shape = tuple(self.images.shape)
            raise DataError(f"images must be uint8 (N, C, H, W), got {self.images.dtype} {shape}")
        if self.labels.dtype != torch.int64 or self.labels.shape != (self.images.shape[0],):
            raise DataError(
                f"labels must be int64 of shape ({self.images.shape[0]},), "
                f"got {self.labels.dtype} {tuple(self.labels.shape)}"
            )
        if len(self.labels) and (self.labels.min() < 0 or self.labels.max() >= len(self.classes)):
            raise DataError(f"labels fall outside the {len(self.classes)} classes")

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def subset(self, index: torch.Tensor) -> ImageArrays:
        return ImageArrays(self.images[index], self.labels[index], self.classes)


@dataclass(frozen=True)
class DataSplits:
    """Everything training needs from a data set.

    ``val`` is a held-out part of the training set (Appendix A.1: 45k/5k for CIFAR-10)
    when one was asked for, else ``None``. ``mean``/``std`` are per-channel statistics in
    [0, 1] pixel units used for normalization.
    """

    name: str
    train: ImageArrays
    test: ImageArrays
    mean: tuple[float, ...]
    std: tuple[float, ...]
    augment: bool = True
    val: ImageArrays | None = None

    @property
    def num_classes(self) -> int:
        return len(self.train.classes)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        c, h, w = self.train.images.shape[1:]
        return int(c), int(h), int(w)


def split_validation(
    train: ImageArrays, val_size: int, seed: int
) -> tuple[ImageArrays, ImageArrays]:
    """A seeded random split of ``train`` into (train minus ``val_size``, ``val_size``)."""
    if not 0 < val_size < len(train):
        raise DataError(f"validation size {val_size} must lie in (0, {len(train)})")
    order = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed))
    return train.subset(order[val_size:].sort().values), train.subset(
        order[:val_size].sort().values
    )
