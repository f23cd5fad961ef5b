"""Decoded images as one uint8 tensor, and the helpers that readers and loaders share.

:class:`ImageArrays` is a split held in memory; the helpers check a data folder and a
loader's batching, resize images, compute channel statistics and hold out part of a split.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import ConfigError, DataError


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


def check_data_dir(data_dir: Path) -> None:
    """A :class:`DataError` if ``data_dir`` exists but is not a folder (a missing folder is
    each reader's to explain: it may be downloaded into)."""
    if data_dir.exists() and not data_dir.is_dir():
        what = "a file, not a folder" if data_dir.is_file() else "not a folder"
        raise DataError(
            f"--data-dir {data_dir} is {what}: pass the folder that holds the data set "
            "(or an empty folder to download it into)"
        )


def check_batching(batch_size: int, shard: tuple[int, int], train: bool) -> None:
    """A loader's batch size and its shard ``(rank, world)`` of every global batch."""
    if batch_size < 1:
        raise ValueError(f"batch size must be >= 1, got {batch_size}")
    rank, world = shard
    if not 0 <= rank < world:
        raise ValueError(f"shard {rank} of {world} does not exist")
    if train and batch_size % world:
        raise ConfigError(
            f"the batch size {batch_size} must be a multiple of the {world} processes"
        )


def square_size(image_size: int | None, name: str) -> tuple[int, int] | None:
    """(image_size, image_size), or ``None`` for 0/``None`` (the data set's own size)."""
    if not image_size:
        return None
    if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 1:
        raise DataError(f"{name}: image size must be a positive int (or 0), got {image_size!r}")
    return image_size, image_size


def resize_images(
    images: torch.Tensor, size: tuple[int, int] | None, chunk: int = 256
) -> torch.Tensor:
    """uint8 ``images`` (N, C, H, W) resized to ``size`` = (H, W) with antialiased bilinear
    interpolation (like Pillow's), in chunks; unchanged when ``size`` is ``None`` or equal."""
    if size is None or tuple(images.shape[2:]) == tuple(size):
        return images
    out = torch.empty((images.shape[0], images.shape[1], *size), dtype=torch.uint8)
    for start in range(0, images.shape[0], chunk):
        part = images[start : start + chunk].float()
        part = torch.nn.functional.interpolate(
            part, size=size, mode="bilinear", align_corners=False, antialias=True
        )
        out[start : start + chunk] = part.round_().clamp_(0, 255).to(torch.uint8)
    return out


def resize_arrays(arrays: ImageArrays, size: tuple[int, int] | None) -> ImageArrays:
    """``arrays`` with its images passed through :func:`resize_images`."""
    if size is None or tuple(arrays.images.shape[2:]) == tuple(size):
        return arrays
    return ImageArrays(resize_images(arrays.images, size), arrays.labels, arrays.classes)


def channel_stats(
    images: torch.Tensor, chunk_values: int = 1 << 22
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and (population) standard deviation of uint8 ``images`` in [0, 1].

    Exact: counts each channel's 256 pixel values in chunks (no float copy of the data).
    """
    n, c = images.shape[:2]
    if n == 0:
        raise DataError("cannot compute channel statistics of an empty split")
    counts = torch.zeros(c, 256, dtype=torch.float64)
    per_image = max(1, images[0, 0].numel())
    step = max(1, chunk_values // per_image)
    for start in range(0, n, step):
        part = images[start : start + step]
        for ch in range(c):
            values = part[:, ch].reshape(-1).to(torch.int64)
            counts[ch] += torch.bincount(values, minlength=256).to(torch.float64)
    levels = torch.arange(256, dtype=torch.float64) / 255.0
    total = counts.sum(1)
    mean = (counts * levels).sum(1) / total
    var = (counts * (levels - mean[:, None]) ** 2).sum(1) / total
    return tuple(mean.tolist()), tuple(var.sqrt().tolist())


def stratified_split(
    labels: torch.Tensor, fraction: float, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices (rest, held out) with ``fraction`` of each class held out, drawn from
    ``generator``: round(fraction × class size) per class, rounding halves up; both
    index tensors come back sorted."""
    if not 0 <= fraction < 1:
        raise DataError(f"hold-out fraction {fraction} must lie in [0, 1)")
    rest, held = [], []
    for label in torch.unique(labels).tolist():
        members = torch.nonzero(labels == label).flatten()
        order = members[torch.randperm(len(members), generator=generator)]
        k = int(fraction * len(members) + 0.5)
        held.append(order[:k])
        rest.append(order[k:])
    empty = torch.empty(0, dtype=torch.int64)
    return (
        torch.cat(rest or [empty]).sort().values,
        torch.cat(held or [empty]).sort().values,
    )
