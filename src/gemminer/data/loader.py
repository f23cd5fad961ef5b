"""Batches straight from a uint8 tensor on the training device.

The decoded split lives on the device once; every batch is an index gather, a batched
augmentation done as one more gather (random crop with zero padding, as torchvision pads
the raw image, and/or random rotation, and horizontal flips), then per-channel
normalization. No per-image Python and no worker processes.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch

from .base import ImageArrays, check_augmentation

#: Largest rotation (degrees, either way) of ``rotate-flip``: the paper's code uses
#: torchvision's ``RandomRotation(20)`` for TinyImageNet.
ROTATION_DEGREES = 20.0


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


def random_flip(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Each image of the batch (B, C, H, W) mirrored left-right with probability 1/2."""
    flipped = (torch.rand(images.shape[0], generator=generator) < 0.5).to(images.device)
    return torch.where(flipped.view(-1, 1, 1, 1), images.flip(3), images)


def rotate_flip(images: torch.Tensor, angles: torch.Tensor, flips: torch.Tensor) -> torch.Tensor:
    """Each image rotated by ``angles`` (degrees, counter-clockwise, about its centre), then
    mirrored left-right where ``flips`` is true; pixels from outside the image are 0.

    Nearest-neighbour sampling (torchvision's default for rotation) done as one index
    gather, so any dtype works and values are never blended; an angle of 0 without a flip
    returns the image unchanged.
    """
    b, c, h, w = images.shape
    device = images.device
    theta = torch.deg2rad(angles.to(device="cpu", dtype=torch.float64))  # exact for 0
    cos = theta.cos().float().to(device).view(b, 1, 1)
    sin = theta.sin().float().to(device).view(b, 1, 1)
    cy, cx = (h - 1) / 2, (w - 1) / 2
    y = (torch.arange(h, device=device, dtype=torch.float32) - cy).view(1, h, 1)
    x = (torch.arange(w, device=device, dtype=torch.float32) - cx).view(1, 1, w)
    # Flipping the output is reading its mirrored column; the source pixel of each output
    # pixel is the output position rotated back by the angle.
    x = torch.where(flips.to(device).view(b, 1, 1), -x, x)
    src_x = torch.round(x * cos - y * sin + cx).long()
    src_y = torch.round(x * sin + y * cos + cy).long()
    inside = (src_x >= 0) & (src_x < w) & (src_y >= 0) & (src_y < h)
    index = (src_y.clamp(0, h - 1) * w + src_x.clamp(0, w - 1)).view(b, 1, h * w)
    out = images.reshape(b, c, h * w).gather(2, index.expand(b, c, h * w)).view(b, c, h, w)
    return out.masked_fill(~inside.view(b, 1, h, w), 0)


def random_rotate_flip(
    images: torch.Tensor,
    degrees: float,
    generator: torch.Generator,
    flip: bool = True,
) -> torch.Tensor:
    """Random rotations by an angle uniform in [−``degrees``, ``degrees``] and flips (each
    with probability 1/2) of a batch (B, C, H, W), drawn from the CPU ``generator``; the
    corners rotated in are filled with 0 (before normalization, like torchvision's
    ``RandomRotation`` with ``fill=0``). See :func:`rotate_flip`."""
    b = images.shape[0]
    angles = (torch.rand(b, generator=generator, dtype=torch.float64) * 2 - 1) * degrees
    flips = torch.rand(b, generator=generator) < 0.5 if flip else torch.zeros(b, dtype=torch.bool)
    return rotate_flip(images, angles, flips)


class BatchLoader:
    """Iterate (inputs, labels) batches of ``data`` on ``device``.

    With ``train=True`` the order is reshuffled each epoch and ``augmentation`` is applied:
    ``crop-flip`` (``padding``-pixel zero-padded random crops and flips), ``rotate-flip``
    (rotations up to ±``degrees`` and flips), ``flip`` or ``none``. Otherwise batches come
    in order without augmentation. All randomness comes from a generator seeded with
    ``seed``, so two loaders with the same seed give the same batches.
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
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch size must be >= 1, got {batch_size}")
        self.device = torch.device(device)
        self.images = data.images.to(self.device)
        self.labels = data.labels.to(self.device)
        self.batch_size = batch_size
        self.train = train
        check_augmentation(augmentation)
        self.augmentation = augmentation if train else "none"
        self.padding = padding
        self.degrees = degrees
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
        # A training batch of one image cannot train BatchNorm (one value per channel at
        # 1×1 resolution), so a last batch of one is dropped when training.
        if self.drop_last or (self.train and n > 1 and n % self.batch_size == 1):
            return n // self.batch_size
        return -(-n // self.batch_size)

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
            x = self._augment(x)
            x = (x.float() * self.scale + self.shift).contiguous(memory_format=self.memory_format)
            yield x, self.labels[index]

    def _augment(self, x: torch.Tensor) -> torch.Tensor:
        if self.augmentation == "crop-flip":
            return random_crop_flip(x, self.padding, self.generator)
        if self.augmentation == "rotate-flip":
            return random_rotate_flip(x, self.degrees, self.generator)
        if self.augmentation == "flip":
            return random_flip(x, self.generator)
        return x
