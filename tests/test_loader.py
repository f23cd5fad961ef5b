import torch

from gemminer.data import ImageArrays
from gemminer.data.loader import BatchLoader, random_crop_flip


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
