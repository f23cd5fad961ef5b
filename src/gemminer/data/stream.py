"""Data sets read from disk batch by batch: listed image files decoded in worker processes.

For data too large to hold as one uint8 tensor (ImageNet's 1.28 M images are about 190 GB
at 224×224): an :class:`ImageFiles` split lists files and labels only, and a
:class:`StreamingLoader` decodes each batch in ``torch.utils.data.DataLoader`` worker
processes. Batches keep the contract of :class:`~gemminer.data.loader.BatchLoader`: float
inputs on the device, normalized per channel, channels-last, with int64 labels.

Geometry (Pillow, bilinear with antialiasing, as torchvision on PIL images):

* evaluation, ``crop`` (ImageNet): the short side resized to ``size × 256/224``, then the
  centre ``size × size`` crop; ``squash`` (an image folder): resized to ``size``.
* training with ``random-resized-crop``: torchvision's ``RandomResizedCrop(size,
  scale=(0.08, 1), ratio=(3/4, 4/3))`` and a horizontal flip with probability 1/2.
  ``flip``: the evaluation geometry and a flip; ``crop-flip`` and ``rotate-flip``: the
  evaluation geometry, then the batched tensor augmentations of the in-memory loader
  (:mod:`gemminer.data.augment`).

Determinism: each epoch draws one seed from the loader's generator (so
:meth:`StreamingLoader.state_dict` is the generator state, as for ``BatchLoader``); the
order is a permutation seeded by it, and every image's crop and flip come from a
generator seeded by (epoch seed, position in the epoch). The batches are therefore the
same for any number of workers, and :meth:`StreamingLoader.resume_at` can start an epoch
at any batch without decoding the ones before it.

Sharding under torchrun (``shard=(rank, world)``) follows ``BatchLoader``: every rank
draws the same order; training ranks read disjoint contiguous slices of each global batch
(the batch size must be a multiple of ``world``; a last incomplete global batch is
dropped, so every rank runs the same number of steps); evaluation rank r reads every
world-th image from r.
"""

from __future__ import annotations

import math
import os
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..errors import ConfigError, DataError
from .augment import (
    ROTATION_DEGREES,
    check_augmentation,
    crop_flip,
    draw_crop_flip,
    draw_rotate_flip,
    rotate_flip,
)
from .base import channel_stats, check_batching

#: ImageNet's evaluation resize: the short side to size × 256/224 before the centre crop.
RESIZE_RATIO = 256 / 224
#: RandomResizedCrop's area fraction and aspect-ratio ranges (torchvision's defaults).
CROP_SCALE = (0.08, 1.0)
CROP_RATIO = (3 / 4, 4 / 3)
GEOMETRIES = ("crop", "squash")
#: Environment variable that sets the number of decoding worker processes per rank.
WORKERS_ENV = "GEMMINER_DATA_WORKERS"
_BILINEAR = getattr(Image, "Resampling", Image).BILINEAR
_FLIP = getattr(Image, "Transpose", Image).FLIP_LEFT_RIGHT
_GOLDEN = 0x9E3779B97F4A7C15


def default_workers() -> int:
    """Decoding processes per rank: ``$GEMMINER_DATA_WORKERS`` if set, else
    min(8, CPU cores / processes on this node)."""
    text = os.environ.get(WORKERS_ENV, "").strip()
    if text:
        try:
            value = int(text)
        except ValueError:
            value = -1
        if value < 0:
            raise ConfigError(f"{WORKERS_ENV}={text!r}: give a number of processes >= 0")
        return value
    local = max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1") or 1))
    return max(1, min(8, (os.cpu_count() or 1) // local))


# -------------------------------------------------------------------------- decoding


def open_rgb(path: str | Path) -> Image.Image:
    """The image at ``path`` decoded as RGB; a :class:`DataError` naming it otherwise."""
    try:
        with Image.open(path) as img:
            img.load()
            return img if img.mode == "RGB" else img.convert("RGB")
    except Exception as exc:  # Pillow raises many types for broken or truncated files
        raise DataError(f"cannot decode image {path}: {exc}") from exc


def eval_view(img: Image.Image, size: tuple[int, int], geometry: str) -> Image.Image:
    """The evaluation geometry: ``crop`` (short side to size × 256/224, centre crop) or
    ``squash`` (resized to ``size`` = (H, W))."""
    h, w = size
    if geometry == "squash":
        return img if img.size == (w, h) else img.resize((w, h), _BILINEAR)
    short = round(min(h, w) * RESIZE_RATIO)
    iw, ih = img.size
    if iw <= ih:
        nw, nh = short, max(1, int(short * ih / iw))
    else:
        nw, nh = max(1, int(short * iw / ih)), short
    if (nw, nh) != (iw, ih):
        img = img.resize((nw, nh), _BILINEAR)
    if nw < w or nh < h:  # tiny images: no room for the crop
        return img.resize((w, h), _BILINEAR)
    top = int(round((nh - h) / 2.0))
    left = int(round((nw - w) / 2.0))
    return img.crop((left, top, left + w, top + h))


def crop_box(width: int, height: int, rng: random.Random) -> tuple[int, int, int, int]:
    """torchvision's ``RandomResizedCrop.get_params``: (left, top, crop width, height)."""
    area = width * height
    log_ratio = (math.log(CROP_RATIO[0]), math.log(CROP_RATIO[1]))
    for _ in range(10):
        target = area * rng.uniform(*CROP_SCALE)
        aspect = math.exp(rng.uniform(*log_ratio))
        w = int(round(math.sqrt(target * aspect)))
        h = int(round(math.sqrt(target / aspect)))
        if 0 < w <= width and 0 < h <= height:
            return rng.randint(0, width - w), rng.randint(0, height - h), w, h
    ratio = width / height
    if ratio < CROP_RATIO[0]:
        w, h = width, int(round(width / CROP_RATIO[0]))
    elif ratio > CROP_RATIO[1]:
        h, w = height, int(round(height * CROP_RATIO[1]))
    else:
        w, h = width, height
    return (width - w) // 2, (height - h) // 2, w, h


def to_tensor(img: Image.Image) -> torch.Tensor:
    """(3, H, W) uint8."""
    return torch.from_numpy(np.asarray(img, dtype=np.uint8).copy()).permute(2, 0, 1)


@dataclass(frozen=True, eq=False)
class ImageFiles:
    """A split on disk: image files (relative to ``root``), int64 ``labels``, ``classes``,
    and how every image becomes ``size`` = (H, W) pixels (``geometry``, see the module).

    Duck-types :class:`~gemminer.data.ImageArrays` where data sets are handled whole
    (``len``, ``labels``, ``classes``, ``subset``, ``images.shape``/``dtype``); indexing
    :attr:`images` decodes just those images with the evaluation geometry.
    """

    root: str
    names: np.ndarray  # fixed-width bytes (no per-file Python objects in the workers)
    labels: torch.Tensor
    classes: tuple[str, ...]
    size: tuple[int, int]
    geometry: str = "crop"
    images: LazyImages = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.geometry not in GEOMETRIES:
            raise DataError(f"unknown geometry {self.geometry!r}; valid: {', '.join(GEOMETRIES)}")
        if self.labels.dtype != torch.int64 or self.labels.shape != (len(self.names),):
            raise DataError(f"labels must be int64 of shape ({len(self.names)},)")
        if len(self.labels) and (self.labels.min() < 0 or self.labels.max() >= len(self.classes)):
            raise DataError(f"labels fall outside the {len(self.classes)} classes")
        object.__setattr__(self, "images", LazyImages(self))

    @classmethod
    def from_paths(
        cls,
        root: Path,
        files: Sequence[Path],
        labels: Sequence[int],
        classes: tuple[str, ...],
        size: tuple[int, int],
        geometry: str = "crop",
    ) -> ImageFiles:
        rel = [os.path.relpath(f, root).encode("utf-8", "surrogateescape") for f in files]
        names = np.array(rel, dtype=np.bytes_) if rel else np.array([], dtype="S1")
        return cls(
            str(root), names, torch.tensor(list(labels), dtype=torch.int64), classes, size, geometry
        )

    def __len__(self) -> int:
        return len(self.names)

    def path(self, i: int) -> str:
        return os.path.join(self.root, self.names[i].decode("utf-8", "surrogateescape"))

    def subset(self, index: torch.Tensor | Sequence[int]) -> ImageFiles:
        index = torch.as_tensor(index, dtype=torch.int64)
        return ImageFiles(
            self.root,
            self.names[index.numpy()],
            self.labels[index],
            self.classes,
            self.size,
            self.geometry,
        )

    def load(self, i: int, seed: int | None = None, mode: str = "none") -> torch.Tensor:
        """Image ``i`` as (3, H, W) uint8: the evaluation geometry, or with ``seed`` the
        training ``mode`` (``random-resized-crop`` or ``flip``; else evaluation)."""
        img = open_rgb(self.path(i))
        if seed is None or mode not in ("random-resized-crop", "flip"):
            return to_tensor(eval_view(img, self.size, self.geometry))
        rng = random.Random(seed)
        if mode == "random-resized-crop":
            left, top, w, h = crop_box(*img.size, rng)
            img = img.resize(
                (self.size[1], self.size[0]), _BILINEAR, box=(left, top, left + w, top + h)
            )
        else:
            img = eval_view(img, self.size, self.geometry)
        if rng.random() < 0.5:
            img = img.transpose(_FLIP)
        return to_tensor(img)


class LazyImages:
    """The images of an :class:`ImageFiles` as if they were one uint8 tensor (N, 3, H, W):
    ``shape``, ``dtype`` and ``len`` without decoding; indexing decodes those images."""

    dtype = torch.uint8

    def __init__(self, files: ImageFiles) -> None:
        self._files = files

    @property
    def shape(self) -> torch.Size:
        return torch.Size((len(self._files), 3, *self._files.size))

    def dim(self) -> int:
        return 4

    def __len__(self) -> int:
        return len(self._files)

    def __getitem__(self, index: int | slice | torch.Tensor | Sequence[int]) -> torch.Tensor:
        if isinstance(index, int):
            return self._files.load(range(len(self._files))[index])
        positions = range(len(self._files))[index] if isinstance(index, slice) else index
        positions = torch.as_tensor(list(positions), dtype=torch.int64).tolist()
        if not positions:
            return torch.empty((0, *self.shape[1:]), dtype=torch.uint8)
        return torch.stack([self._files.load(i) for i in positions])


def sample_stats(
    files: ImageFiles, count: int = 512, seed: int = 0
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean/std in [0, 1] of a seeded random sample of ``count`` images
    (evaluation geometry): the normalization of a streamed folder."""
    n = len(files)
    if n == 0:
        raise DataError("cannot compute channel statistics of an empty split")
    pick = torch.randperm(n, generator=torch.Generator().manual_seed(seed))[: min(n, count)]
    return channel_stats(files.images[pick.sort().values])


# -------------------------------------------------------------------------- loading


class _Decode(torch.utils.data.Dataset):
    """Worker side: ``(file index, seed or -1)`` -> (uint8 image, label)."""

    def __init__(self, files: ImageFiles, mode: str) -> None:
        self.files = files
        self.mode = mode

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, key: tuple[int, int]) -> tuple[torch.Tensor, int]:
        i, seed = key
        image = self.files.load(i, None if seed < 0 else seed, self.mode)
        return image, int(self.files.labels[i])


class _BatchPlan:
    """The batch sampler of one epoch: lists of ``(file index, seed)`` keys per local batch."""

    def __init__(self, batches: list[range], order: torch.Tensor, epoch_seed: int | None):
        self.batches = batches
        self.order = order
        self.epoch_seed = epoch_seed

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        for positions in self.batches:
            index = self.order[positions.start : positions.stop].tolist()
            if self.epoch_seed is None:
                yield [(i, -1) for i in index]
            else:
                yield [
                    (i, (self.epoch_seed + (p + 1) * _GOLDEN) % 2**63)
                    for i, p in zip(index, positions)
                ]


class StreamingLoader:
    """(inputs, labels) batches of an :class:`ImageFiles` split, decoded by ``workers``
    processes (default :func:`default_workers`; 0 decodes in this process).

    Same arguments, length rules and sharding as
    :class:`~gemminer.data.loader.BatchLoader` (see the module docstring);
    ``augmentation`` is one of :data:`~gemminer.data.augment.AUGMENTATIONS` and applies only
    with ``train=True``.
    """

    def __init__(
        self,
        data: ImageFiles,
        *,
        batch_size: int,
        mean: Sequence[float],
        std: Sequence[float],
        device: torch.device | str = "cpu",
        train: bool = False,
        augmentation: str = "random-resized-crop",
        padding: int = 4,
        degrees: float | None = None,
        seed: int = 0,
        drop_last: bool = False,
        channels_last: bool = True,
        shard: tuple[int, int] = (0, 1),
        workers: int | None = None,
    ) -> None:
        check_batching(batch_size, shard, train)
        rank, world = shard
        check_augmentation(augmentation)
        self.data = data
        self.batch_size = batch_size
        self.train = train
        self.shard = (rank, world)
        self.augmentation = augmentation if train else "none"
        self.padding = padding
        self.degrees = ROTATION_DEGREES if degrees is None else degrees
        self.drop_last = drop_last or (train and world > 1)
        self.device = torch.device(device)
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.workers = default_workers() if workers is None else workers
        if self.workers < 0:
            raise ConfigError(f"workers must be >= 0, got {self.workers}")
        std_t = torch.tensor(std, dtype=torch.float32, device=self.device).view(1, -1, 1, 1)
        mean_t = torch.tensor(mean, dtype=torch.float32, device=self.device).view(1, -1, 1, 1)
        self.scale = 1.0 / (255.0 * std_t)
        self.shift = -mean_t / std_t
        self.generator = torch.Generator().manual_seed(seed)
        self._skip = 0
        if not train and world > 1:
            self._eval_index = torch.arange(len(data))[rank::world]
        else:
            self._eval_index = torch.arange(len(data))

    def _count(self) -> int:
        return len(self.data) if self.train else len(self._eval_index)

    def __len__(self) -> int:
        n = self._count()
        if self.drop_last or (self.train and n > 1 and n % self.batch_size == 1):
            return n // self.batch_size
        return -(-n // self.batch_size)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.generator.set_state(state["generator"])

    def resume_at(self, step: int) -> None:
        """Start the next epoch at batch ``step`` (0-based), in the same order and with the
        same augmentation as an uninterrupted epoch, without decoding the batches before."""
        if not 0 <= step <= len(self):
            raise ValueError(f"cannot resume at batch {step} of {len(self)}")
        self._skip = step

    def _local_batches(self) -> list[range]:
        """Positions (in the epoch's order) of this rank's batches."""
        rank, world = self.shard
        n, b = self._count(), self.batch_size
        out = []
        for k in range(len(self)):
            start, stop = k * b, min((k + 1) * b, n)
            if self.train and world > 1:
                local = b // world
                start, stop = start + rank * local, start + (rank + 1) * local
            out.append(range(start, stop))
        return out

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        skip, self._skip = self._skip, 0
        if self.train:
            epoch_seed = int(torch.randint(0, 2**62, (1,), generator=self.generator))
            order = torch.randperm(
                len(self.data), generator=torch.Generator().manual_seed(epoch_seed)
            )
        else:
            epoch_seed, order = None, self._eval_index
        batches = self._local_batches()
        first = skip
        plan = _BatchPlan(batches[first:], order, epoch_seed)
        mode = self.augmentation if self.train else "none"
        loader = torch.utils.data.DataLoader(
            _Decode(self.data, mode),
            batch_sampler=plan,
            num_workers=self.workers,
            pin_memory=self.device.type == "cuda",
            prefetch_factor=4 if self.workers else None,
        )
        for k, (x, y) in enumerate(loader, start=first):
            x = x.to(self.device, non_blocking=True)
            if self.augmentation in ("crop-flip", "rotate-flip"):
                x = self._batched(x, epoch_seed, k)
            x = (x.float() * self.scale + self.shift).contiguous(memory_format=self.memory_format)
            yield x, y.to(self.device, non_blocking=True)

    def _batched(self, x: torch.Tensor, epoch_seed: int | None, k: int) -> torch.Tensor:
        """``crop-flip`` / ``rotate-flip`` of batch ``k`` as in ``BatchLoader``: drawn for the
        global batch from a generator seeded by (epoch seed, k), this rank's slice applied."""
        rank, world = self.shard
        gen = torch.Generator().manual_seed(((epoch_seed or 0) + (k + 1) * _GOLDEN) % 2**63)
        size = self.batch_size if world > 1 else len(x)
        part = slice(rank * len(x), (rank + 1) * len(x)) if world > 1 else slice(None)
        if self.augmentation == "crop-flip":
            params = draw_crop_flip(size, self.padding, gen)
            return crop_flip(x, self.padding, *(p[part] for p in params))
        params = draw_rotate_flip(size, self.degrees, gen)
        return rotate_flip(x, *(p[part] for p in params))
