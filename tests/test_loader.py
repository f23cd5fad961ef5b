import pytest
import torch

from gemminer.data import ImageArrays
from gemminer.data.augment import random_crop_flip, random_flip, random_rotate_flip, rotate_flip
from gemminer.data.loader import BatchLoader
from gemminer.errors import ConfigError


def test_crop_offsets_cover_every_shift_and_pad_with_zero():
    n, size, pad = 2000, 12, 4
    images = torch.ones(n, 1, size, size, dtype=torch.uint8)  # value 1 everywhere, 0 = padding
    out = random_crop_flip(images, pad, torch.Generator().manual_seed(0), flip=False)
    assert out.shape == images.shape and out.dtype == torch.uint8
    assert set(out.unique().tolist()) == {0, 1}
    rows = out[:, 0].amax(2)  # 1 where a row lies inside the image
    cols = out[:, 0].amax(1)
    # a shift of dy pixels down leaves dy zero rows at the top (dy > 0) or bottom (dy < 0)
    dy = rows.argmax(1) - rows.flip(1).argmax(1)
    dx = cols.argmax(1) - cols.flip(1).argmax(1)
    assert set(dy.tolist()) == set(range(-pad, pad + 1))
    assert set(dx.tolist()) == set(range(-pad, pad + 1))
    # every offset pair is roughly uniform (81 cells, ~25 hits each)
    counts = torch.bincount((dy + pad) * (2 * pad + 1) + (dx + pad), minlength=81)
    assert counts.min() > 5


def test_flips_happen_half_the_time_and_mirror_the_image():
    ramp = torch.arange(8, dtype=torch.uint8).expand(1000, 3, 8, 8).clone()
    out = random_crop_flip(ramp, 0, torch.Generator().manual_seed(1))
    flipped = (out == ramp.flip(3)).flatten(1).all(1)
    kept = (out == ramp).flatten(1).all(1)
    assert torch.all(flipped | kept)
    assert 400 < int(flipped.sum()) < 600


def test_labels_stay_with_their_images_and_normalization_is_exact():
    n = 64
    labels = torch.arange(n) % 10
    images = (labels * 20 + 10).to(torch.uint8).view(n, 1, 1, 1).expand(n, 3, 6, 6).contiguous()
    data = ImageArrays(images, labels, tuple("abcdefghij"))
    mean, std = (0.1, 0.2, 0.3), (0.5, 0.25, 0.125)
    loader = BatchLoader(data, batch_size=10, mean=mean, std=std, train=True, seed=3)
    seen = []
    for x, y in loader:
        raw = (y * 20 + 10).float() / 255
        for c in range(3):
            expected = (raw - mean[c]) / std[c]
            centre = x[:, c, 2:4, 2:4]  # never padding: shifts are at most 4 of 6... check by value
            is_pad = torch.isclose(centre, torch.tensor(-mean[c] / std[c]))
            assert torch.all(
                is_pad | torch.isclose(centre, expected.view(-1, 1, 1).expand_as(centre), atol=1e-5)
            )
        seen.append(y)
    seen = torch.cat(seen)
    assert len(seen) == n and sorted(seen.tolist()) == sorted(labels.tolist())  # a permutation
    assert len(loader) == 7


def test_same_seed_same_batches_and_eval_order_is_fixed(tiny_data):
    kwargs = {"batch_size": 16, "mean": (0.5,) * 3, "std": (0.25,) * 3}
    a = [x for x, _ in BatchLoader(tiny_data, train=True, seed=5, **kwargs)]
    b = [x for x, _ in BatchLoader(tiny_data, train=True, seed=5, **kwargs)]
    assert all(torch.equal(p, q) for p, q in zip(a, b))
    ys = torch.cat([y for _, y in BatchLoader(tiny_data, **kwargs)])
    assert torch.equal(ys, tiny_data.labels)


def test_drop_last_and_channels_last(tiny_data):
    loader = BatchLoader(tiny_data, batch_size=40, mean=(0.5,) * 3, std=(0.25,) * 3, drop_last=True)
    batches = list(loader)
    assert len(batches) == len(loader) == 2
    assert batches[0][0].is_contiguous(memory_format=torch.channels_last)


# --------------------------------------------------------------------------- rotation, flips


def _angles(n, value):
    return torch.full((n,), float(value), dtype=torch.float64)


def test_rotation_by_zero_is_identity_and_by_90_is_rot90():
    g = torch.Generator().manual_seed(0)
    no_flip = torch.zeros(4, dtype=torch.bool)
    for h, w in ((7, 7), (8, 8), (5, 9)):
        images = torch.randint(0, 256, (4, 3, h, w), generator=g, dtype=torch.uint8)
        out = rotate_flip(images, _angles(4, 0), no_flip)
        assert out.dtype == torch.uint8 and torch.equal(out, images)
        mirrored = rotate_flip(images, _angles(4, 0), ~no_flip)
        assert torch.equal(mirrored, images.flip(3))
        if h == w:  # a quarter turn counter-clockwise, and back
            assert torch.equal(
                rotate_flip(images, _angles(4, 90), no_flip), images.rot90(1, (2, 3))
            )
            assert torch.equal(
                rotate_flip(images, _angles(4, -90), no_flip), images.rot90(-1, (2, 3))
            )
            # rotate, then mirror
            assert torch.equal(
                rotate_flip(images, _angles(4, 90), ~no_flip), images.rot90(1, (2, 3)).flip(3)
            )


def test_rotation_fills_with_zero_and_keeps_the_centre():
    ones = torch.ones(2, 1, 15, 15, dtype=torch.uint8)
    out = rotate_flip(ones, _angles(2, 45), torch.tensor([False, True]))
    assert set(out.unique().tolist()) == {0, 1}
    assert out[:, 0, 0, 0].tolist() == [0, 0] and out[:, 0, -1, -1].tolist() == [0, 0]
    assert torch.all(out[:, :, 5:10, 5:10] == 1)
    floats = rotate_flip(ones.float() * 3.5, _angles(2, 45), torch.tensor([False, False]))
    assert floats.dtype == torch.float32 and set(floats.unique().tolist()) == {0.0, 3.5}


def test_random_rotation_draws_angles_in_range_from_the_generator():
    images = torch.randint(0, 256, (64, 3, 11, 11), dtype=torch.uint8)
    out = random_rotate_flip(images, 20.0, torch.Generator().manual_seed(7))
    g = torch.Generator().manual_seed(7)
    angles = (torch.rand(64, generator=g, dtype=torch.float64) * 2 - 1) * 20.0
    flips = torch.rand(64, generator=g) < 0.5
    assert angles.abs().max() <= 20 and 10 < int(flips.sum()) < 54
    assert torch.equal(out, rotate_flip(images, angles, flips))
    again = random_rotate_flip(images, 20.0, torch.Generator().manual_seed(7))
    assert torch.equal(out, again)
    assert not torch.equal(out, random_rotate_flip(images, 20.0, torch.Generator().manual_seed(8)))
    # degrees=0: only flips.
    flipped_only = random_rotate_flip(images, 0.0, torch.Generator().manual_seed(1))
    same = (flipped_only == images).flatten(1).all(1)
    mirror = (flipped_only == images.flip(3)).flatten(1).all(1)
    assert torch.all(same | mirror) and same.any() and mirror.any()


def test_random_flip_mirrors_about_half():
    ramp = torch.arange(6, dtype=torch.uint8).expand(400, 2, 3, 6).clone()
    out = random_flip(ramp, torch.Generator().manual_seed(2))
    flipped = (out == ramp.flip(3)).flatten(1).all(1)
    assert torch.all(flipped | (out == ramp).flatten(1).all(1))
    assert 150 < int(flipped.sum()) < 250


@pytest.mark.parametrize("augmentation", ["rotate-flip", "flip", "none", "crop-flip"])
def test_loader_augmentations_keep_labels_with_images(augmentation):
    n = 50
    labels = torch.arange(n) % 10
    images = (labels * 20 + 10).to(torch.uint8).view(n, 1, 1, 1).expand(n, 3, 9, 9).contiguous()
    data = ImageArrays(images, labels, tuple("abcdefghij"))
    kwargs = {"batch_size": 8, "mean": (0.0,) * 3, "std": (1.0,) * 3, "train": True}
    loader = BatchLoader(data, augmentation=augmentation, seed=4, **kwargs)
    xs, ys = zip(*loader)
    x, y = torch.cat(xs), torch.cat(ys)
    assert x.shape == (n, 3, 9, 9) and sorted(y.tolist()) == sorted(labels.tolist())
    # The centre pixel never leaves the image (rotation is about it, crops shift <= 4).
    assert torch.allclose(x[:, :, 4, 4] * 255, (y * 20 + 10).float().view(-1, 1).expand(n, 3))
    if augmentation in ("flip", "none"):  # nothing is moved out of these constant images
        assert torch.allclose(x * 255, (y * 20 + 10).float().view(-1, 1, 1, 1).expand_as(x))
    same = [b for b, _ in BatchLoader(data, augmentation=augmentation, seed=4, **kwargs)]
    assert all(torch.equal(p, q) for p, q in zip(xs, same))


def test_loader_rotation_state_dict_resumes_and_eval_is_plain(tiny_data):
    kwargs = {"batch_size": 32, "mean": (0.5,) * 3, "std": (0.25,) * 3, "train": True}
    a = BatchLoader(tiny_data, augmentation="rotate-flip", seed=9, **kwargs)
    list(a)
    state = a.state_dict()
    second = [x for x, _ in a]
    b = BatchLoader(tiny_data, augmentation="rotate-flip", seed=123, **kwargs)
    b.load_state_dict(state)
    assert all(torch.equal(p, q) for p, q in zip(second, (x for x, _ in b)))
    plain = BatchLoader(tiny_data, batch_size=96, mean=(0.0,) * 3, std=(1.0,) * 3)
    evaluated = BatchLoader(
        tiny_data, batch_size=96, mean=(0.0,) * 3, std=(1.0,) * 3, augmentation="rotate-flip"
    )
    assert torch.equal(next(iter(plain))[0], next(iter(evaluated))[0])
    assert torch.allclose(next(iter(plain))[0] * 255, tiny_data.images.float())


def test_loader_rejects_unknown_augmentation(tiny_data):
    with pytest.raises(ConfigError, match="unknown augmentation 'cutout'.*rotate-flip"):
        BatchLoader(tiny_data, batch_size=4, mean=(0,) * 3, std=(1,) * 3, augmentation="cutout")


def test_a_last_training_batch_of_one_is_dropped():
    """BatchNorm cannot train on one image; evaluation still sees every image."""
    from gemminer.data.loader import BatchLoader

    from .conftest import separable_arrays

    data = separable_arrays(9)
    kw = {"batch_size": 4, "mean": (0.5,) * 3, "std": (0.5,) * 3}
    train = BatchLoader(data, train=True, **kw)
    assert len(train) == 2 and [len(y) for _, y in train] == [4, 4]
    assert [len(y) for _, y in BatchLoader(data, **kw)] == [4, 4, 1]
    assert [len(y) for _, y in BatchLoader(separable_arrays(10), train=True, **kw)] == [4, 4, 2]


def reference_crop_flip(image: torch.Tensor, pad: int, dy: int, dx: int, flip: bool):
    """torchvision's RandomCrop(padding=pad, fill=0) + RandomHorizontalFlip, one image."""
    h, w = image.shape[-2:]
    padded = torch.nn.functional.pad(image, (pad, pad, pad, pad))
    crop = padded[:, dy : dy + h, dx : dx + w]
    return crop.flip(-1) if flip else crop


def test_batched_crop_flip_equals_the_per_image_reference():
    from gemminer.data.augment import crop_flip, draw_crop_flip

    images = torch.randint(1, 256, (300, 3, 10, 7), dtype=torch.uint8)
    dy, dx, flipped = draw_crop_flip(300, 4, torch.Generator().manual_seed(5))
    out = crop_flip(images, 4, dy, dx, flipped)
    for i in range(300):
        expected = reference_crop_flip(images[i], 4, int(dy[i]), int(dx[i]), bool(flipped[i]))
        assert torch.equal(out[i], expected)


def test_loader_draws_the_reference_distribution_and_keeps_labels_aligned():
    """Through the loader (normalization undone): every image's crop offset and flip are
    read back from its pixels, which encode (row, column, image id)."""
    n, size, pad = 1800, 8, 4
    ids = torch.arange(n)
    rows = torch.arange(1, size + 1, dtype=torch.uint8).view(1, size, 1).expand(n, size, size)
    cols = torch.arange(1, size + 1, dtype=torch.uint8).view(1, 1, size).expand(n, size, size)
    who = (ids % 240 + 1).to(torch.uint8).view(n, 1, 1).expand(n, size, size)
    images = torch.stack([rows, cols, who], 1).contiguous()
    data = ImageArrays(images, ids % 3, ("a", "b", "c"))
    loader = BatchLoader(
        data, batch_size=128, mean=(0.0,) * 3, std=(1 / 255,) * 3, train=True, seed=9
    )
    offsets_y, offsets_x, flips = [], [], []
    for x, y in loader:
        assert x.dtype == torch.float32 and x.shape[1:] == (3, size, size)
        assert x.is_contiguous(memory_format=torch.channels_last)
        x = x.round().long()
        inside = x[:, 0] > 0
        assert torch.equal(inside, x[:, 1] > 0) and torch.equal(inside, x[:, 2] > 0)
        assert torch.all(x[:, :, :, :][~inside.unsqueeze(1).expand_as(x)] == 0)  # zero fill
        image_id = x[:, 2].amax((1, 2)) - 1
        assert torch.equal(image_id % 3, y)  # labels stay with their images
        first = inside.flatten(1).float().argmax(1)  # first pixel inside the image
        r0, c0 = first // size, first % size
        b = torch.arange(len(y))
        src_row = x[b, 0, r0, c0] - 1
        offsets_y.append(src_row - r0)  # source row = output row + offset
        left = x[b, 1, r0, c0] - 1
        right = x[b, 1, r0, (c0 + 1).clamp(max=size - 1)] - 1
        flipped = (right < left) | ((c0 == size - 1) & (left > 0))
        flips.append(flipped)
        offsets_x.append(torch.where(flipped, 0, left - c0))
    dy, dx, flips = torch.cat(offsets_y), torch.cat(offsets_x), torch.cat(flips)
    assert len(dy) == n
    assert set(dy.tolist()) == set(range(-pad, pad + 1))  # every offset occurs...
    counts = torch.bincount(dy + pad, minlength=2 * pad + 1).float()
    assert torch.all((counts - n / 9).abs() < 0.25 * n / 9)  # ...about equally often
    assert set(dx[~flips].tolist()) == set(range(-pad, pad + 1))
    assert abs(flips.float().mean().item() - 0.5) < 0.05
