"""Batches straight from a uint8 tensor on the training device.

The decoded split lives on the device once; every batch is an index gather, a batched
augmentation done as one more gather (random crop with zero padding, as torchvision pads
the raw image, and/or random rotation, and horizontal flips; see
:mod:`gemminer.data.augment`), then per-channel normalization. No per-image Python and no
worker processes.

Data sets too large for memory are :class:`~gemminer.data.stream.ImageFiles` splits;
:func:`training_batches` and :func:`eval_batches` give them a
:class:`~gemminer.data.stream.StreamingLoader` (worker processes decoding from disk) with
the same batch contract.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch

from ..errors import ConfigError
from .augment import (
    ROTATION_DEGREES,
    check_augmentation,
    crop_flip,
    draw_crop_flip,
    draw_flip,
    draw_rotate_flip,
    flip_where,
    rotate_flip,
)
from .base import ImageArrays, check_batching
from .stream import ImageFiles, StreamingLoader


class BatchLoader:
    """Iterate (inputs, labels) batches of ``data`` on ``device``.

    With ``train=True`` the order is reshuffled each epoch and ``augmentation`` is applied:
    ``crop-flip`` (``padding``-pixel zero-padded random crops and flips), ``rotate-flip``
    (rotations up to ±``degrees`` and flips), ``flip`` or ``none``. Otherwise batches come
    in order without augmentation. All randomness comes from a generator seeded with
    ``seed``, so two loaders with the same seed give the same batches.

    ``shard=(rank, world)`` splits the data across torchrun processes. Training: every
    rank draws the same order and augmentation for each global batch of ``batch_size``
    (which ``world`` must divide) and keeps its contiguous slice of it, so the ranks
    together see exactly the batches of one process; a last incomplete global batch is
    dropped. Evaluation: rank r reads every world-th image starting at r.
    """

    def __init__(
        self,
        data: ImageArrays,
        *,
        batch_size: int,
        mean: Sequence[float],
        std: Sequence[float],
        device: torch.device | str = "cpu",
        train: bool = False,
        augmentation: str = "crop-flip",
        padding: int = 4,
        degrees: float = ROTATION_DEGREES,
        seed: int = 0,
        drop_last: bool = False,
        channels_last: bool = True,
        shard: tuple[int, int] = (0, 1),
    ) -> None:
        check_batching(batch_size, shard, train)
        rank, world = shard
        self.device = torch.device(device)
        images, labels = data.images, data.labels
        if world > 1 and not train:
            images, labels = images[rank::world], labels[rank::world]
        self.images = images.to(self.device)
        self.labels = labels.to(self.device)
        self.batch_size = batch_size
        self.train = train
        self.shard = (rank, world)
        check_augmentation(augmentation)
        if train and augmentation == "random-resized-crop":
            raise ConfigError(
                "the random-resized-crop augmentation needs the full-size images: it works "
                "on streamed data sets only (e.g. load_dataset('folder', ..., stream=True))"
            )
        self.augmentation = augmentation if train else "none"
        self.padding = padding
        self.degrees = degrees
        self.drop_last = drop_last or (train and world > 1)
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        # x_normalized = x_uint8 * scale + shift, per channel
        std_t = torch.tensor(std, dtype=torch.float32, device=self.device).view(1, -1, 1, 1)
        mean_t = torch.tensor(mean, dtype=torch.float32, device=self.device).view(1, -1, 1, 1)
        self.scale = 1.0 / (255.0 * std_t)
        self.shift = -mean_t / std_t
        self.generator = torch.Generator().manual_seed(seed)

    def __len__(self) -> int:
        n = len(self.labels)
        # A training batch of one image cannot train BatchNorm (one value per channel at
        # 1×1 resolution), so a last batch of one is dropped when training.
        if self.drop_last or (self.train and n > 1 and n % self.batch_size == 1):
            return n // self.batch_size
        return -(-n // self.batch_size)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.generator.set_state(state["generator"])

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        n = len(self.labels)
        order = torch.randperm(n, generator=self.generator) if self.train else torch.arange(n)
        order = order.to(self.device)
        rank, world = self.shard
        local = self.batch_size // world
        for start in range(0, len(self) * self.batch_size, self.batch_size):
            index = order[start : start + self.batch_size]
            params = self._draw(len(index))
            if self.train and world > 1:
                part = slice(rank * local, (rank + 1) * local)
                index, params = index[part], tuple(p[part] for p in params)
            x = self._apply(self.images[index], params)
            x = (x.float() * self.scale + self.shift).contiguous(memory_format=self.memory_format)
            yield x, self.labels[index]

    def _draw(self, batch: int) -> tuple[torch.Tensor, ...]:
        """The augmentation's random draws for a (global) batch, from the generator."""
        if self.augmentation == "crop-flip":
            return draw_crop_flip(batch, self.padding, self.generator)
        if self.augmentation == "rotate-flip":
            return draw_rotate_flip(batch, self.degrees, self.generator)
        if self.augmentation == "flip":
            return (draw_flip(batch, self.generator),)
        return ()

    def _apply(self, x: torch.Tensor, params: tuple[torch.Tensor, ...]) -> torch.Tensor:
        if self.augmentation == "crop-flip":
            return crop_flip(x, self.padding, *params)
        if self.augmentation == "rotate-flip":
            return rotate_flip(x, *params)
        if self.augmentation == "flip":
            return flip_where(x, *params)
        return x


def training_batches(
    data: ImageArrays | ImageFiles,
    *,
    batch_size: int,
    mean: Sequence[float],
    std: Sequence[float],
    device: torch.device | str,
    seed: int,
    augmentation: str = "crop-flip",
    calibration: bool = False,
    shard: tuple[int, int] = (0, 1),
) -> BatchLoader | StreamingLoader:
    """Shuffled training batches of ``data``, as every stage and the Python API build them.

    ``calibration=True``: the batches that re-estimate BatchNorm statistics, unaugmented
    and whole on every torchrun rank (so every rank's statistics agree); otherwise
    ``augmentation`` is applied and each rank reads its ``shard`` of every batch. ``seed``
    is one stream of :func:`gemminer.seeds.derive_seed`. ``data`` on disk
    (:class:`~gemminer.data.stream.ImageFiles`) gets a streaming loader.
    """
    loader = StreamingLoader if isinstance(data, ImageFiles) else BatchLoader
    return loader(
        data,
        batch_size=batch_size,
        mean=mean,
        std=std,
        device=device,
        train=True,
        augmentation="none" if calibration else augmentation,
        seed=seed,
        shard=(0, 1) if calibration else shard,
    )


def eval_batches(
    data: ImageArrays | ImageFiles,
    *,
    batch_size: int,
    mean: Sequence[float],
    std: Sequence[float],
    device: torch.device | str,
    shard: tuple[int, int] = (0, 1),
) -> BatchLoader | StreamingLoader:
    """In-order, unaugmented batches of ``data`` for evaluation, as every stage and the
    Python API build them; under torchrun each rank reads its ``shard`` of the images."""
    loader = StreamingLoader if isinstance(data, ImageFiles) else BatchLoader
    return loader(data, batch_size=batch_size, mean=mean, std=std, device=device, shard=shard)
