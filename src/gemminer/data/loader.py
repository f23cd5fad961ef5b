"""Batches straight from a uint8 tensor on the training device.

The decoded split lives on the device once; every batch is an index gather, a batched
augmentation done as one more gather (random crop with zero padding, as torchvision pads
the raw image, and/or random rotation, and horizontal flips), then per-channel
normalization. No per-image Python and no worker processes.

Data sets too large for memory are :class:`~gemminer.data.stream.ImageFiles` splits;
:func:`training_batches` and :func:`eval_batches` give them a
:class:`~gemminer.data.stream.StreamingLoader` (worker processes decoding from disk) with
the same batch contract.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch

from ..errors import ConfigError
from .base import ImageArrays, check_augmentation
from .stream import ImageFiles, StreamingLoader

#: Largest rotation (degrees, either way) of ``rotate-flip``: the paper's code uses
#: torchvision's ``RandomRotation(20)`` for TinyImageNet.
ROTATION_DEGREES = 20.0


def draw_crop_flip(
    batch: int, padding: int, generator: torch.Generator, flip: bool = True
) -> tuple[torch.Tensor, ...]:
    """The random part of :func:`random_crop_flip` for ``batch`` images (CPU tensors):
    row and column offsets of shape (batch, 1) in [0, 2·padding], and flips (batch, 1)."""
    dy = torch.randint(0, 2 * padding + 1, (batch, 1), generator=generator)
    dx = torch.randint(0, 2 * padding + 1, (batch, 1), generator=generator)
    if flip:
        flipped = torch.rand(batch, 1, generator=generator) < 0.5
    else:
        flipped = torch.zeros(batch, 1, dtype=torch.bool)
    return dy, dx, flipped


def crop_flip(
    images: torch.Tensor, padding: int, dy: torch.Tensor, dx: torch.Tensor, flipped: torch.Tensor
) -> torch.Tensor:
    """Crops of the zero-padded ``images`` (B, C, H, W) at offsets ``dy``, ``dx`` (B, 1)
    into the padded image, mirrored left-right where ``flipped``; one index gather."""
    b, c, h, w = images.shape
    device = images.device
    padded = torch.nn.functional.pad(images, (padding, padding, padding, padding))
    rows = dy + torch.arange(h)
    cols = dx + torch.arange(w)
    cols = torch.where(flipped, cols.flip(1), cols)
    rows, cols = _to(rows, device), _to(cols, device)
    return padded[
        torch.arange(b, device=device)[:, None, None, None],
        torch.arange(c, device=device)[None, :, None, None],
        rows[:, None, :, None],
        cols[:, None, None, :],
    ]


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


def _to(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A small CPU tensor on ``device``; staged in pinned memory for a non-blocking copy
    to a GPU, so the host never waits for the device."""
    if device.type == "cuda" and t.device.type == "cpu":
        return t.pin_memory().to(device, non_blocking=True)
    return t.to(device)


def random_crop_flip(
    images: torch.Tensor, padding: int, generator: torch.Generator, flip: bool = True
) -> torch.Tensor:
    """Random ``padding``-pixel-padded crops (same size as the input) and flips of a batch.

    ``images`` has shape (B, C, H, W) and any dtype; the padding is filled with 0. Offsets
    are drawn uniformly from [−padding, padding] per image and axis, flips with probability
    1/2, from the CPU ``generator``.
    """
    return crop_flip(images, padding, *draw_crop_flip(len(images), padding, generator, flip))


def draw_flip(batch: int, generator: torch.Generator) -> torch.Tensor:
    """Which of ``batch`` images to mirror (probability 1/2 each), on the CPU."""
    return torch.rand(batch, generator=generator) < 0.5


def flip_where(images: torch.Tensor, flipped: torch.Tensor) -> torch.Tensor:
    """The images (B, C, H, W) mirrored left-right where ``flipped`` (B,) is true."""
    flipped = _to(flipped, images.device).view(-1, 1, 1, 1)
    return torch.where(flipped, images.flip(3), images)


def random_flip(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Each image of the batch (B, C, H, W) mirrored left-right with probability 1/2."""
    return flip_where(images, draw_flip(images.shape[0], generator))


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
    cos = _to(theta.cos().float(), device).view(b, 1, 1)
    sin = _to(theta.sin().float(), device).view(b, 1, 1)
    cy, cx = (h - 1) / 2, (w - 1) / 2
    y = (torch.arange(h, device=device, dtype=torch.float32) - cy).view(1, h, 1)
    x = (torch.arange(w, device=device, dtype=torch.float32) - cx).view(1, 1, w)
    # Flipping the output is reading its mirrored column; the source pixel of each output
    # pixel is the output position rotated back by the angle.
    x = torch.where(_to(flips, device).view(b, 1, 1), -x, x)
    src_x = torch.round(x * cos - y * sin + cx).long()
    src_y = torch.round(x * sin + y * cos + cy).long()
    inside = (src_x >= 0) & (src_x < w) & (src_y >= 0) & (src_y < h)
    index = (src_y.clamp(0, h - 1) * w + src_x.clamp(0, w - 1)).view(b, 1, h * w)
    out = images.reshape(b, c, h * w).gather(2, index.expand(b, c, h * w)).view(b, c, h, w)
    return out.masked_fill(~inside.view(b, 1, h, w), 0)


def draw_rotate_flip(
    batch: int, degrees: float, generator: torch.Generator, flip: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """Angles uniform in [−``degrees``, ``degrees``] (float64) and flips for ``batch`` images."""
    angles = (torch.rand(batch, generator=generator, dtype=torch.float64) * 2 - 1) * degrees
    if flip:
        return angles, draw_flip(batch, generator)
    return angles, torch.zeros(batch, dtype=torch.bool)


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
    return rotate_flip(images, *draw_rotate_flip(images.shape[0], degrees, generator, flip))


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
