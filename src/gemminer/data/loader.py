"""Batches straight from a uint8 tensor on the training device.

The decoded split lives on the device once; every batch is an index gather, a batched
random crop (zero padding, as torchvision pads the raw image) and horizontal flip done in
one gather, then per-channel normalization. No per-image Python and no worker processes.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch

from .base import ImageArrays


def random_crop_flip(
    images: torch.Tensor, padding: int, generator: torch.Generator, flip: bool = True
) -> torch.Tensor:
    """Random ``padding``-pixel-padded crops (same size as the input) and flips of a batch.

    ``images`` has shape (B, C, H, W) and any dtype; the padding is filled with 0. Offsets
    are drawn uniformly from [−padding, padding] per image and axis, flips with probability
    1/2, from the CPU ``generator``.
    """
    b, c, h, w = images.shape
    device = images.device
    padded = torch.nn.functional.pad(images, (padding, padding, padding, padding))
    dy = torch.randint(0, 2 * padding + 1, (b, 1), generator=generator)
    dx = torch.randint(0, 2 * padding + 1, (b, 1), generator=generator)
    rows = dy + torch.arange(h)
    cols = dx + torch.arange(w)
    if flip:
        flipped = torch.rand(b, 1, generator=generator) < 0.5
        cols = torch.where(flipped, cols.flip(1), cols)
    rows, cols = rows.to(device), cols.to(device)
    return padded[
        torch.arange(b, device=device)[:, None, None, None],
        torch.arange(c, device=device)[None, :, None, None],
        rows[:, None, :, None],
        cols[:, None, None, :],
    ]


class BatchLoader:
    """Iterate (inputs, labels) batches of ``data`` on ``device``.

    With ``train=True`` the order is reshuffled each epoch and crops/flips are applied;
    otherwise batches come in order without augmentation. All randomness comes from a
    generator seeded with ``seed``, so two loaders with the same seed give the same batches.
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
        augment: bool = True,
        padding: int = 4,
        seed: int = 0,
        drop_last: bool = False,
        channels_last: bool = True,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch size must be >= 1, got {batch_size}")
        self.device = torch.device(device)
        self.images = data.images.to(self.device)
        self.labels = data.labels.to(self.device)
        self.batch_size = batch_size
        self.train = train
        self.augment = train and augment
        self.padding = padding
        self.drop_last = drop_last
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        # x_normalized = x_uint8 * scale + shift, per channel
        std_t = torch.tensor(std, dtype=torch.float32, device=self.device).view(1, -1, 1, 1)
        mean_t = torch.tensor(mean, dtype=torch.float32, device=self.device).view(1, -1, 1, 1)
        self.scale = 1.0 / (255.0 * std_t)
        self.shift = -mean_t / std_t
        self.generator = torch.Generator().manual_seed(seed)

    def __len__(self) -> int:
        n = len(self.labels)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    @property
    def num_samples(self) -> int:
        return len(self.labels)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.generator.set_state(state["generator"])

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        n = len(self.labels)
        order = torch.randperm(n, generator=self.generator) if self.train else torch.arange(n)
        order = order.to(self.device)
        for start in range(0, len(self) * self.batch_size, self.batch_size):
            index = order[start : start + self.batch_size]
            x = self.images[index]
            if self.augment:
                x = random_crop_flip(x, self.padding, self.generator)
            x = (x.float() * self.scale + self.shift).contiguous(memory_format=self.memory_format)
            yield x, self.labels[index]
