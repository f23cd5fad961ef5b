"""Streamed data sets: ImageNet's layouts, the streaming loader's batches, shards, resume."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import torch
from torch import nn

from gemminer.data import ImageFiles, load_dataset
from gemminer.data import folder as folder_module
from gemminer.data.caltech101 import IMAGENET_MEAN, IMAGENET_STD
from gemminer.data.loader import eval_batches, training_batches
from gemminer.data.stream import CROP_SCALE, StreamingLoader, crop_box, default_workers
from gemminer.errors import ConfigError, DataError
from gemminer.training.loop import train_epoch

from .tiny_datasets import IMAGENET_WNIDS, write_folder, write_imagenet

SIZE = 16


def _colour(images: torch.Tensor) -> list[int]:
    """Each single-colour image's class: its brightest channel."""
    return images.float().mean((2, 3)).argmax(1).tolist()


def _pixels(x: torch.Tensor) -> torch.Tensor:
    """Normalized inputs back to [0, 255] pixel values."""
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return (x * std + mean) * 255


@pytest.fixture
def imagenet(tmp_path: Path) -> Path:
    return write_imagenet(tmp_path / "imagenet", per_class=5)


def _splits(root: Path, **kw):
    return load_dataset("imagenet", root, download=False, image_size=SIZE, **kw)


@pytest.mark.parametrize("val", ["folders", "flat", "flat-txt"])
def test_imagenet_layouts(tmp_path: Path, val: str) -> None:
    root = write_imagenet(tmp_path, val=val)
    splits = _splits(root)
    assert isinstance(splits.train, ImageFiles) and isinstance(splits.test, ImageFiles)
    assert splits.train.classes == IMAGENET_WNIDS and splits.val is None
    assert splits.image_shape == (3, SIZE, SIZE)
    assert splits.augmentation == "random-resized-crop" and splits.mean == IMAGENET_MEAN
    assert splits.train.labels.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    assert sorted(splits.test.labels.tolist()) == [0, 0, 1, 1, 2, 2]
    images = splits.test.images[:]
    assert images.shape == (6, 3, SIZE, SIZE) and images.dtype == torch.uint8
    assert _colour(images) == splits.test.labels.tolist()


def test_imagenet_flat_val_errors(tmp_path: Path) -> None:
    root = write_imagenet(tmp_path, val="flat")
    notes = root / "LOC_val_solution.csv"
    good = notes.read_text()
    notes.write_text(good.replace("n01484850 1", "n09999999 1"))
    with pytest.raises(DataError, match="'n09999999'.*not a train/ class"):
        _splits(root)
    notes.unlink()
    with pytest.raises(DataError, match="no labels file"):
        _splits(root)
    with pytest.raises(DataError, match="not downloaded automatically"):
        _splits(tmp_path / "nothing")


def test_eval_geometry_resizes_short_side_then_centre_crops(tmp_path: Path) -> None:
    from PIL import Image

    from gemminer.data.stream import eval_view

    img = Image.new("RGB", (40, 80))
    assert eval_view(img, (16, 16), "crop").size == (16, 16)
    assert eval_view(img, (224, 224), "crop").size == (224, 224)
    assert eval_view(img, (12, 20), "squash").size == (20, 12)


def test_crop_box_matches_random_resized_crop_bounds() -> None:
    rng = random.Random(0)
    for width, height in [(64, 36), (40, 56), (500, 375), (10, 200)]:
        for _ in range(50):
            left, top, w, h = crop_box(width, height, rng)
            assert 0 <= left and left + w <= width and 0 <= top and top + h <= height
            area = w * h / (width * height)
            assert area <= CROP_SCALE[1] + 1e-9 and w > 0 and h > 0


def test_training_batches_contract_and_determinism(imagenet: Path) -> None:
    splits = _splits(imagenet)
    args = dict(batch_size=4, mean=splits.mean, std=splits.std, device="cpu", seed=3)
    loader = training_batches(splits.train, augmentation=splits.augmentation, **args)
    assert isinstance(loader, StreamingLoader) and len(loader) == 4  # 15 images
    loader.workers = 0
    batches = list(loader)
    assert [len(y) for _, y in batches] == [4, 4, 4, 3]
    x, y = batches[0]
    assert x.dtype == torch.float32 and x.shape == (4, 3, SIZE, SIZE)
    assert x.is_contiguous(memory_format=torch.channels_last)
    labels = torch.cat([y for _, y in batches])
    assert sorted(labels.tolist()) == sorted(splits.train.labels.tolist())
    for x, y in batches:  # crops and flips keep each single-colour image's class
        assert _colour(_pixels(x)) == y.tolist()
    again = training_batches(splits.train, augmentation=splits.augmentation, **args)
    again.workers = 2  # decoded in worker processes: the same batches
    for (a, ya), (b, yb) in zip(batches, again, strict=True):
        assert torch.equal(ya, yb) and torch.allclose(a, b)
    second = list(loader)  # the next epoch: another order
    assert not all(torch.equal(a[1], b[1]) for a, b in zip(batches, second))


def test_shards_read_disjoint_slices_of_every_global_batch(imagenet: Path) -> None:
    splits = _splits(imagenet)
    args = dict(batch_size=4, mean=splits.mean, std=splits.std, device="cpu", seed=1)
    whole = list(training_batches(splits.train, augmentation="flip", **args))
    ranks = []
    for rank in range(2):
        loader = training_batches(splits.train, augmentation="flip", shard=(rank, 2), **args)
        loader.workers = 0
        ranks.append(list(loader))
    assert len(ranks[0]) == len(ranks[1]) == 3  # the incomplete last global batch dropped
    for k in range(3):
        joined = torch.cat([ranks[0][k][0], ranks[1][k][0]])
        assert torch.allclose(joined, whole[k][0])
    with pytest.raises(ConfigError, match="multiple of the 2 processes"):
        training_batches(
            splits.train,
            batch_size=3,
            mean=splits.mean,
            std=splits.std,
            device="cpu",
            seed=0,
            shard=(0, 2),
        )
    parts = [
        eval_batches(
            splits.test, batch_size=4, mean=splits.mean, std=splits.std, device="cpu", shard=(r, 2)
        )
        for r in range(2)
    ]
    for p in parts:
        p.workers = 0
    seen = [torch.cat([y for _, y in p]).tolist() for p in parts]
    assert seen[0] + seen[1] != [] and len(seen[0]) + len(seen[1]) == len(splits.test)
    assert seen[0] == splits.test.labels[0::2].tolist()


def test_resume_inside_an_epoch_skips_without_decoding(
    imagenet: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    splits = _splits(imagenet)
    args = dict(batch_size=4, mean=splits.mean, std=splits.std, device="cpu", seed=7)
    loader = training_batches(splits.train, augmentation=splits.augmentation, **args)
    loader.workers = 0
    list(loader)  # epoch 1
    state = loader.state_dict()  # where epoch 2 begins (what a checkpoint keeps)
    epoch2 = list(loader)
    fresh = training_batches(splits.train, augmentation=splits.augmentation, **args)
    fresh.workers = 0
    fresh.load_state_dict(state)
    decoded = []
    load = ImageFiles.load

    def counting(self, i, seed=None, mode="none"):
        decoded.append(i)
        return load(self, i, seed, mode)

    monkeypatch.setattr(ImageFiles, "load", counting)
    fresh.resume_at(2)
    rest = list(fresh)
    assert len(rest) == 2 and len(decoded) == 4 + 3  # only batches 2 and 3 decoded
    for (a, ya), (b, yb) in zip(epoch2[2:], rest, strict=True):
        assert torch.equal(ya, yb) and torch.allclose(a, b)
    with pytest.raises(ValueError, match="cannot resume at batch 9"):
        fresh.resume_at(9)


def test_training_loop_consumes_streamed_batches(imagenet: Path) -> None:
    splits = _splits(imagenet)
    loader = training_batches(
        splits.train,
        batch_size=5,
        mean=splits.mean,
        std=splits.std,
        device="cpu",
        seed=0,
        augmentation=splits.augmentation,
    )
    loader.workers = 0
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * SIZE * SIZE, 3))
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    stats = train_epoch(model, loader, opt, torch.device("cpu"))
    assert stats.samples == 15


def test_val_size_and_train_size_subset_streamed_splits(imagenet: Path) -> None:
    splits = _splits(imagenet, val_size=3, train_size=6, seed=0)
    assert isinstance(splits.val, ImageFiles) and len(splits.val) == 3
    assert len(splits.train) == 6


def test_large_folder_streams(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_folder(tmp_path, same_size=True)
    in_memory = load_dataset("folder", tmp_path, download=False)
    assert not isinstance(in_memory.train, ImageFiles)
    monkeypatch.setattr(folder_module, "STREAM_ABOVE_BYTES", 100)
    big = load_dataset("folder", tmp_path, download=False)
    assert isinstance(big.train, ImageFiles) and big.image_shape == in_memory.image_shape
    assert big.train.labels.tolist() == in_memory.train.labels.tolist()
    assert torch.equal(big.train.images[:], in_memory.train.images)  # same size: no resize
    assert big.mean == pytest.approx(in_memory.mean, abs=1e-6)
    with pytest.raises(DataError, match="cannot skip unreadable"):
        load_dataset("folder", tmp_path, download=False, skip_bad=True)
    small = load_dataset("folder", tmp_path, download=False, stream=False)
    assert not isinstance(small.train, ImageFiles)
    with pytest.raises(DataError, match="pass stream=True"):
        load_dataset(
            "folder", tmp_path, download=False, stream=False, augmentation="random-resized-crop"
        )
    forced = load_dataset(
        "folder", tmp_path, download=False, stream=True, image_size=8, augmentation="crop-flip"
    )
    loader = training_batches(
        forced.train,
        batch_size=4,
        mean=forced.mean,
        std=forced.std,
        device="cpu",
        seed=0,
        augmentation="crop-flip",
    )
    loader.workers = 0
    x, _ = next(iter(loader))
    assert x.shape == (4, 3, 8, 8)


def test_default_workers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GEMMINER_DATA_WORKERS", "3")
    assert default_workers() == 3
    monkeypatch.setenv("GEMMINER_DATA_WORKERS", "many")
    with pytest.raises(ConfigError, match="GEMMINER_DATA_WORKERS"):
        default_workers()
    monkeypatch.delenv("GEMMINER_DATA_WORKERS")
    assert 1 <= default_workers() <= 8


def test_a_resumed_epoch_asks_the_streaming_loader_to_skip(imagenet: Path, monkeypatch) -> None:
    """train_epoch resumes a streamed epoch with ``resume_at`` (no decoding of done batches)
    and trains only the remaining batches."""
    from gemminer.training.checkpoint import EpochProgress

    splits = _splits(imagenet)
    loader = training_batches(
        splits.train, batch_size=5, mean=splits.mean, std=splits.std, device="cpu", seed=0,
        augmentation=splits.augmentation,
    )  # fmt: skip
    loader.workers = 0
    asked: list[int] = []
    real = loader.resume_at
    monkeypatch.setattr(loader, "resume_at", lambda step: (asked.append(step), real(step)))
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * SIZE * SIZE, 3))
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    done = EpochProgress(steps=2, loss_sum=0.0, correct=0, samples=10)
    stats = train_epoch(model, loader, opt, torch.device("cpu"), resume=done)
    assert asked == [2] and stats.samples == 15  # 10 carried + the 5 of the last batch
