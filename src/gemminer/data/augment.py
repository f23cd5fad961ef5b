"""Training augmentations: their names, and the batched tensor augmentations.

A batched augmentation transforms a whole batch (B, C, H, W) on its device as one index
gather (random crop with zero padding, as torchvision pads the raw image, and/or random
rotation, and horizontal flips), with no per-image Python. Each comes as a ``draw_*``
function (the random part, drawn on the CPU from a generator) and one that applies the
draws, so a loader can draw for a global batch and apply a rank's slice; ``random_*``
does both. The in-memory :class:`~gemminer.data.loader.BatchLoader` and the
:class:`~gemminer.data.stream.StreamingLoader` both use them.
"""

from __future__ import annotations

import torch

from ..errors import ConfigError

#: Training augmentations the batch loaders implement (see :mod:`gemminer.data.loader`):
#: ``crop-flip`` (4-pixel zero-padded random crop and horizontal flip, CIFAR),
#: ``rotate-flip`` (random rotation and horizontal flip, TinyImageNet),
#: ``flip`` (horizontal flip only), ``none``, and ``random-resized-crop`` (Inception-style
#: random-resized crop and horizontal flip, ImageNet: streamed data sets only, as it needs
#: the full-size image, see :mod:`gemminer.data.stream`).
AUGMENTATIONS = ("crop-flip", "rotate-flip", "flip", "none", "random-resized-crop")

#: Largest rotation (degrees, either way) of ``rotate-flip``: the paper's code uses
#: torchvision's ``RandomRotation(20)`` for TinyImageNet.
ROTATION_DEGREES = 20.0


def check_augmentation(name: str) -> str:
    """``name`` if it is one of :data:`AUGMENTATIONS`; a :class:`ConfigError` otherwise."""
    if name not in AUGMENTATIONS:
        raise ConfigError(
            f"unknown augmentation {name!r}; valid augmentations: {', '.join(AUGMENTATIONS)}"
        )
    return name


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
