"""The data sets beyond CIFAR-10, each built tiny in its exact official format."""

from __future__ import annotations

import functools
import gzip
import hashlib
import http.server
import tarfile
import threading
import zipfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from gemminer.data import AUGMENTATIONS, DATASETS, DataSplits, ImageArrays, load_dataset
from gemminer.data.base import channel_stats, resize_images
from gemminer.data.caltech101 import IMAGENET_MEAN, load_caltech101
from gemminer.data.cifar import CIFAR100, CIFAR100_MEAN, load_cifar100, read_cifar_pickle
from gemminer.data.download import extract_zip
from gemminer.data.folder import read_image_folder
from gemminer.data.mnist import MNIST_MEAN, load_mnist, read_idx
from gemminer.data.tinyimagenet import TINYIMAGENET_MEAN, load_tinyimagenet
from gemminer.errors import ConfigError, DataError
from gemminer.notices import forget_notices

from .conftest import told
from .tiny_datasets import (
    FINE,
    FIVE,
    TINY_INSTANCES,
    idx_bytes,
    random_pixels,
    save_image,
    write_caltech101,
    write_cifar100,
    write_folder,
    write_mnist,
    write_tinyimagenet,
)


def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """A loopback HTTP server for a fresh folder; yields the folder and its base URL."""
    folder = tmp_path / "served"
    folder.mkdir()
    handler = functools.partial(_QuietHandler, directory=str(folder))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield folder, f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


def _offline_error(info: pytest.ExceptionInfo, folder: Path) -> None:
    message = str(info.value)
    assert str(folder) in message and "--no-download" in message and "--data-dir" in message


# --------------------------------------------------------------------------- every data set


def test_registry_names() -> None:
    assert {"cifar10", "cifar100", "folder", "tinyimagenet", "caltech101", "mnist"} <= set(
        DATASETS.names()
    )


@pytest.mark.parametrize("name", DATASETS.names())
def test_every_dataset_reads_its_tiny_instance(tmp_path: Path, name: str) -> None:
    """The contract of a registered data set: it reads a tiny instance of its on-disk
    format (written by tests/tiny_datasets.py) into checked splits of the right shape and
    classes."""
    if name not in TINY_INSTANCES:
        pytest.fail(f"data set {name!r} has no tiny-instance writer in tests/tiny_datasets.py")
    want = TINY_INSTANCES[name](tmp_path)
    splits = load_dataset(name, tmp_path, download=False)
    assert splits.image_shape == want.image_shape
    assert splits.train.classes == want.classes and splits.num_classes == len(want.classes)
    got = {"train": splits.train, "test": splits.test, "val": splits.val}
    assert {k: len(v) for k, v in got.items() if v is not None} == want.sizes
    for split in got.values():
        if split is not None:
            assert split.images.dtype == torch.uint8 and split.labels.dtype == torch.int64
            assert tuple(split.images.shape[1:]) == want.image_shape
    assert len(splits.mean) == len(splits.std) == want.image_shape[0]
    assert all(0 <= m <= 1 for m in splits.mean) and all(0 < s <= 1 for s in splits.std)
    assert splits.augmentation in AUGMENTATIONS


@pytest.mark.parametrize("name", DATASETS.names())
def test_every_dataset_explains_a_missing_folder(tmp_path: Path, name: str) -> None:
    missing = tmp_path / "missing"
    with pytest.raises(DataError, match="does not exist") as info:
        load_dataset(name, missing, download=False)
    message = str(info.value)
    assert "\n" not in message and str(missing) in message
    assert not missing.exists()  # refusing does not create the folder


@pytest.mark.parametrize("name", DATASETS.names())
def test_every_dataset_says_when_its_folder_is_a_file(tmp_path: Path, name: str) -> None:
    a_file = tmp_path / "data.tar"
    a_file.write_bytes(b"not a folder")
    with pytest.raises(DataError, match="is a file, not a folder") as info:
        load_dataset(name, a_file, download=False)
    assert "does not exist" not in str(info.value) and str(a_file) in str(info.value)


# --------------------------------------------------------------------------- generic folders


def test_folder_any_classes_sizes_and_grayscale(tmp_path: Path) -> None:
    write_folder(tmp_path)
    with pytest.raises(DataError, match="share one size"):
        load_dataset("folder", tmp_path)
    splits = load_dataset("folder", tmp_path, image_size=9)
    assert splits.train.classes == FIVE and splits.num_classes == 5
    assert splits.train.images.shape == (15, 3, 9, 9) and splits.test.images.shape == (10, 3, 9, 9)
    assert splits.train.labels.tolist() == [c for c in range(5) for _ in range(3)]
    assert splits.augmentation == "flip" and splits.val is None and splits.skipped == ()
    # A grayscale image becomes three equal channels.
    gray = splits.train.images[1]
    assert torch.equal(gray[0], gray[1]) and torch.equal(gray[1], gray[2])
    # mean/std: per channel over the training images, in [0, 1].
    x = splits.train.images.double() / 255
    assert splits.mean == pytest.approx(x.mean((0, 2, 3)).tolist(), abs=1e-9)
    assert splits.std == pytest.approx(x.std((0, 2, 3), unbiased=False).tolist(), abs=1e-9)


def test_folder_native_size_and_val_folder(tmp_path: Path) -> None:
    write_folder(tmp_path, same_size=True)
    for c, cls in enumerate(FIVE):
        save_image(tmp_path / "val" / cls / "v.png", random_pixels(99 + c, 5, 7))
    splits = load_dataset("folder", tmp_path)
    assert splits.image_shape == (3, 5, 7)
    assert splits.val is not None and splits.val.labels.tolist() == [0, 1, 2, 3, 4]
    with pytest.raises(DataError, match="own validation split"):
        load_dataset("folder", tmp_path, val_size=2)


def test_folder_without_test_split(tmp_path: Path) -> None:
    write_folder(tmp_path, test=False, same_size=True)
    with pytest.raises(DataError, match="no test/ folder") as info:
        load_dataset("folder", tmp_path)
    assert "test_fraction" in str(info.value)
    a = load_dataset("folder", tmp_path, test_fraction=0.34, split_seed=1)
    b = load_dataset("folder", tmp_path, test_fraction=0.34, split_seed=1)
    assert len(a.train) == 10 and len(a.test) == 5  # one of each class's three
    assert a.test.labels.tolist() == [0, 1, 2, 3, 4]
    assert torch.equal(a.test.images, b.test.images)
    with pytest.raises(DataError, match="does not exist"):
        load_dataset("folder", tmp_path / "nothing")


def test_folder_corrupt_image_error_and_skip_bad(tmp_path: Path, caplog) -> None:
    write_folder(tmp_path, same_size=True)
    bad = tmp_path / "train" / "cat" / "2.png"
    bad.write_bytes(bad.read_bytes()[:60])  # truncated
    with pytest.raises(DataError, match=r"cat/2\.png"):
        load_dataset("folder", tmp_path)
    for _ in range(2):  # decoded, then from the cache: the count is reported both times
        forget_notices()
        caplog.clear()
        splits = load_dataset("folder", tmp_path, skip_bad=True)
        (line,) = told(caplog)
        assert line.startswith("skipped 1 unreadable image(s) of 15 under ")
        assert line.endswith(f": {Path('train') / 'cat' / '2.png'}")
        assert splits.skipped == (str(Path("train") / "cat" / "2.png"),)
        assert len(splits.train) == 14
        assert splits.train.labels.tolist() == [0] * 3 + [1] * 3 + [2] * 2 + [3] * 3 + [4] * 3
    # Without skip_bad the cached skipping does not hide the error.
    with pytest.raises(DataError, match=r"cat/2\.png"):
        read_image_folder(tmp_path, "train")


def test_unknown_dataset_option(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no option colour.*skip_bad"):
        load_dataset("folder", tmp_path, colour=True)


def test_channel_stats_and_resize() -> None:
    images = torch.randint(0, 256, (7, 2, 5, 6), dtype=torch.uint8)
    mean, std = channel_stats(images, chunk_values=17)
    x = images.double() / 255
    assert mean == pytest.approx(x.mean((0, 2, 3)).tolist())
    assert std == pytest.approx(x.std((0, 2, 3), unbiased=False).tolist())
    flat = torch.full((2, 3, 10, 10), 77, dtype=torch.uint8)
    assert torch.equal(resize_images(flat, (4, 6)), torch.full((2, 3, 4, 6), 77, dtype=torch.uint8))


def test_datasplits_checks_augmentation_and_channels() -> None:
    arrays = ImageArrays(
        torch.zeros(2, 3, 4, 4, dtype=torch.uint8), torch.tensor([0, 1]), ("a", "b")
    )
    for name in AUGMENTATIONS:
        DataSplits("x", arrays, arrays, (0.5,) * 3, (0.2,) * 3, augmentation=name)
    with pytest.raises(ConfigError, match="rotate-flip"):
        DataSplits("x", arrays, arrays, (0.5,) * 3, (0.2,) * 3, augmentation="mixup")
    with pytest.raises(DataError, match="one value per image channel"):
        DataSplits("x", arrays, arrays, (0.5,), (0.2,))


# --------------------------------------------------------------------------- CIFAR-100


@pytest.fixture
def cifar100_archive(tmp_path: Path) -> tuple[Path, dict]:
    want = write_cifar100(tmp_path / "src")
    path = tmp_path / "cifar-100-python.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        tar.add(tmp_path / "src" / "cifar-100-python", arcname="cifar-100-python")
    return path, want


def test_cifar100_release_values(tmp_path: Path) -> None:
    want = write_cifar100(tmp_path)
    splits = load_dataset("cifar100", tmp_path, download=False)
    assert splits.train.classes == FINE and splits.num_classes == 100
    assert splits.train.images.shape == (6, 3, 32, 32) and splits.test.images.shape == (
        4,
        3,
        32,
        32,
    )
    rows, fine = want["train"]
    assert splits.train.labels.tolist() == fine and splits.test.labels.tolist() == want["test"][1]
    assert torch.equal(splits.train.images, torch.from_numpy(rows).view(6, 3, 32, 32))
    assert splits.mean == CIFAR100_MEAN and splits.augmentation == "crop-flip"
    train, _ = read_cifar_pickle(tmp_path / "cifar-100-python", CIFAR100)
    assert torch.equal(train.images, splits.train.images)
    resized = load_dataset("cifar100", tmp_path, download=False, image_size=16)
    assert resized.image_shape == (3, 16, 16)
    (tmp_path / "cifar-100-python" / "meta").unlink()
    with pytest.raises(DataError, match="CIFAR-100.*missing meta"):
        load_cifar100(tmp_path, download=False)


def test_cifar100_local_archive_md5(tmp_path: Path, cifar100_archive: tuple[Path, dict]) -> None:
    archive, want = cifar100_archive
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    (data_dir / archive.name).write_bytes(archive.read_bytes())
    with pytest.raises(DataError, match="checksum mismatch"):
        load_cifar100(data_dir, download=False, md5="0" * 32)
    splits = load_cifar100(data_dir, download=False, md5=_md5(archive))
    assert splits.test.labels.tolist() == want["test"][1]
    assert (data_dir / "cifar-100-python" / "train").is_file()
    assert not [p for p in data_dir.iterdir() if p.name.startswith(".")]


def test_cifar100_download_and_offline(
    tmp_path: Path, serve: tuple[Path, str], cifar100_archive: tuple[Path, dict]
) -> None:
    archive, want = cifar100_archive
    folder, url = serve
    (folder / archive.name).write_bytes(archive.read_bytes())
    offline = tmp_path / "offline"
    with pytest.raises(DataError, match="cifar-100-python.tar.gz") as info:
        load_cifar100(offline, download=False)
    _offline_error(info, offline)
    data_dir = tmp_path / "fresh"
    splits = load_cifar100(data_dir, url=f"{url}/{archive.name}", md5=_md5(archive))
    assert splits.train.labels.tolist() == want["train"][1]


def test_cifar100_image_folder_layout(tmp_path: Path) -> None:
    for split in ("train", "test"):
        for i, cls in enumerate(("apple", "bee")):
            save_image(tmp_path / split / cls / "0.png", random_pixels(i, 32, 32))
    splits = load_cifar100(tmp_path, download=False)
    assert splits.train.classes == ("apple", "bee") and splits.image_shape == (3, 32, 32)


# --------------------------------------------------------------------------- TinyImageNet


def _zip_folder(folder: Path, archive: Path) -> Path:
    with zipfile.ZipFile(archive, "w") as zf:
        for path in sorted(folder.rglob("*")):
            zf.write(path, path.relative_to(folder.parent).as_posix())
    return archive


def _colour_labels(images: torch.Tensor) -> list[int]:
    """The class of each constant-colour image: which of R, G, B dominates (n01, n02, n03)."""
    return images[:, :, 32, 32].int().argmax(1).tolist()


def test_tinyimagenet_official_layout(tmp_path: Path) -> None:
    write_tinyimagenet(tmp_path)
    for data_dir in (tmp_path, tmp_path / "tiny-imagenet-200"):
        splits = load_dataset("tinyimagenet", data_dir, download=False)
        assert splits.train.classes == ("n01", "n02", "n03")
        assert splits.descriptions == ("goldfish, Carassius auratus", "salamander", "bullfrog")
        assert splits.train.images.shape == (6, 3, 64, 64)
        assert splits.train.labels.tolist() == [0, 0, 1, 1, 2, 2]
        assert _colour_labels(splits.train.images) == splits.train.labels.tolist()
        # The official val set is the test split, in annotation order.
        assert splits.test.labels.tolist() == [2, 0, 0, 1]
        assert _colour_labels(splits.test.images) == [2, 0, 0, 1]
        assert splits.val is None and splits.augmentation == "rotate-flip"
        assert splits.mean == TINYIMAGENET_MEAN
    assert load_dataset("tinyimagenet", tmp_path, image_size=8).image_shape == (3, 8, 8)


def test_tinyimagenet_checks_annotations(tmp_path: Path) -> None:
    root = write_tinyimagenet(tmp_path)
    notes = root / "val" / "val_annotations.txt"
    good = notes.read_text()
    notes.write_text(good.replace("val_3.JPEG\tn02", "val_3.JPEG\tn09"))
    with pytest.raises(DataError, match="'n09' is not in wnids.txt"):
        load_tinyimagenet(tmp_path, download=False)
    notes.write_text(good.replace("val_3.JPEG\tn02\t0\t3\t40\t50\n", ""))
    with pytest.raises(DataError, match="val_3.JPEG"):
        load_tinyimagenet(tmp_path, download=False)
    notes.write_text(good)
    (root / "train" / "n04" / "images").mkdir(parents=True)
    with pytest.raises(DataError, match=r"unexpected \['n04'\]"):
        load_tinyimagenet(tmp_path, download=False)


def test_tinyimagenet_zip_local_and_download(tmp_path: Path, serve: tuple[Path, str]) -> None:
    root = write_tinyimagenet(tmp_path / "src", size=8)
    folder, url = serve
    archive = _zip_folder(root, folder / "tiny-imagenet-200.zip")
    offline = tmp_path / "offline"
    with pytest.raises(DataError, match="tiny-imagenet-200.zip") as info:
        load_tinyimagenet(offline, download=False)
    _offline_error(info, offline)
    local = tmp_path / "local"
    local.mkdir()
    (local / archive.name).write_bytes(archive.read_bytes())
    with pytest.raises(DataError, match="checksum mismatch"):
        load_tinyimagenet(local, download=False, md5="f" * 32)
    assert len(load_tinyimagenet(local, download=False, md5=_md5(archive)).train) == 6
    fresh = tmp_path / "fresh"
    splits = load_tinyimagenet(fresh, url=f"{url}/{archive.name}", md5=_md5(archive))
    assert splits.test.labels.tolist() == [2, 0, 0, 1]
    assert (fresh / "tiny-imagenet-200" / "wnids.txt").is_file()


def _zip_with(path: Path, info: zipfile.ZipInfo, data: bytes = b"x") -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(info, data)
    return path


def _zip_symlink(name: str) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name)
    info.external_attr = 0o120777 << 16  # a symbolic link as Info-ZIP stores it (data: target)
    return info


@pytest.mark.parametrize(
    "info",
    [
        zipfile.ZipInfo("../evil"),
        zipfile.ZipInfo("ok/../../evil"),
        zipfile.ZipInfo("/tmp/gemminer-zip-absolute-evil"),
        zipfile.ZipInfo("C:/evil"),
        _zip_symlink("link"),
    ],
    ids=["parent", "nested-parent", "absolute", "drive", "symlink"],
)
def test_extract_zip_rejects_unsafe_members(tmp_path: Path, info: zipfile.ZipInfo) -> None:
    bad = _zip_with(tmp_path / "bad.zip", info, b"../../evil")
    dest = tmp_path / "a" / "b"
    with pytest.raises(DataError, match="unsafe path|symbolic link"):
        extract_zip(bad, dest)
    assert not (tmp_path / "evil").exists() and not (tmp_path / "a" / "evil").exists()
    assert not Path("/tmp/gemminer-zip-absolute-evil").exists()
    assert not dest.exists()


def test_extract_zip_bad_archive_and_members(tmp_path: Path) -> None:
    bad = tmp_path / "bad.zip"
    bad.write_bytes(b"PK\x03\x04 not really")
    with pytest.raises(DataError, match="bad.zip"):
        extract_zip(bad, tmp_path / "out")
    good = _zip_with(tmp_path / "good.zip", zipfile.ZipInfo("d/f.txt"), b"hello")
    with pytest.raises(DataError, match="does not contain d/g.txt"):
        extract_zip(good, tmp_path / "out", members=["d/g.txt"])
    extract_zip(good, tmp_path / "out", members=["d/f.txt"])
    assert (tmp_path / "out" / "d" / "f.txt").read_bytes() == b"hello"


# --------------------------------------------------------------------------- Caltech-101


def _caltech_ids(arrays: ImageArrays) -> list[int]:
    return arrays.images[:, 0, 0, 0].tolist()


def test_caltech101_classes_split_and_determinism(tmp_path: Path) -> None:
    folder = write_caltech101(tmp_path)
    splits = load_dataset("caltech101", tmp_path, download=False, image_size=16)
    assert splits.train.classes == ("Faces", "accordion", "yin_yang")  # no BACKGROUND_Google
    assert splits.image_shape == (3, 16, 16) and splits.val is not None
    # Per class: 20 % test, then 25 % of the rest val, rounding halves up.
    for split, want in (
        (splits.test, [2, 1, 1]),
        (splits.val, [2, 1, 2]),
        (splits.train, [6, 3, 4]),
    ):
        assert torch.bincount(split.labels, minlength=3).tolist() == want
    parts = [_caltech_ids(s) for s in (splits.train, splits.val, splits.test)]
    background = set(range(15, 19))
    assert sorted(sum(parts, [])) == sorted(set(range(26)) - background)
    assert splits.mean == IMAGENET_MEAN and splits.augmentation == "flip"
    again = load_caltech101(folder, download=False, image_size=16)  # the folder itself
    assert [_caltech_ids(s) for s in (again.train, again.val, again.test)] == parts
    other = load_caltech101(tmp_path, download=False, image_size=16, split_seed=1)
    assert [_caltech_ids(s) for s in (other.train, other.val, other.test)] != parts
    with pytest.raises(DataError, match="own validation split"):
        load_dataset("caltech101", tmp_path, download=False, image_size=16, val_size=3)
    default = load_caltech101(tmp_path, download=False)
    assert default.image_shape == (3, 224, 224)


def _caltech_zip(tmp_path: Path) -> tuple[Path, str]:
    """The official zip: caltech-101/101_ObjectCategories.tar.gz plus Mac junk and extras."""
    src = write_caltech101(tmp_path / "src")
    tarball = tmp_path / "101_ObjectCategories.tar.gz"
    with tarfile.open(tarball, "w:gz") as tar:
        tar.add(src, arcname="101_ObjectCategories")
    archive = tmp_path / "caltech-101.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.write(tarball, "caltech-101/101_ObjectCategories.tar.gz")
        zf.writestr("caltech-101/Annotations.tar", b"not needed")
        zf.writestr("__MACOSX/caltech-101/._101_ObjectCategories.tar.gz", b"junk")
    return archive, _md5(tarball)


def test_caltech101_zip_and_offline(tmp_path: Path, serve: tuple[Path, str]) -> None:
    archive, inner_md5 = _caltech_zip(tmp_path)
    offline = tmp_path / "offline"
    with pytest.raises(DataError, match="caltech-101.zip") as info:
        load_caltech101(offline, download=False)
    _offline_error(info, offline)
    local = tmp_path / "local"
    local.mkdir()
    (local / archive.name).write_bytes(archive.read_bytes())
    with pytest.raises(DataError, match="101_ObjectCategories.tar.gz inside"):
        load_caltech101(local, download=False, md5=_md5(archive), categories_md5="0" * 32)
    splits = load_caltech101(
        local, download=False, image_size=8, md5=_md5(archive), categories_md5=inner_md5
    )
    assert len(splits.train) + len(splits.val) + len(splits.test) == 22
    assert (local / "101_ObjectCategories" / "Faces").is_dir()
    assert not [p for p in local.iterdir() if p.name.startswith(".")]
    folder, url = serve
    (folder / archive.name).write_bytes(archive.read_bytes())
    fresh = tmp_path / "fresh"
    downloaded = load_caltech101(
        fresh,
        image_size=8,
        url=f"{url}/{archive.name}",
        md5=_md5(archive),
        categories_md5=inner_md5,
    )
    assert torch.equal(downloaded.test.images, splits.test.images)
    # The zip unpacked by hand: caltech-101/101_ObjectCategories.tar.gz.
    by_hand = tmp_path / "by-hand"
    extract_zip(archive, by_hand)
    with pytest.raises(DataError, match="checksum mismatch"):
        load_caltech101(by_hand, download=False, categories_md5="0" * 32)
    unpacked = load_caltech101(by_hand, download=False, image_size=8, categories_md5=inner_md5)
    assert torch.equal(unpacked.train.images, splits.train.images)


# --------------------------------------------------------------------------- MNIST


def test_mnist_plain_gz_and_torchvision_layout(tmp_path: Path) -> None:
    gz = ("train-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
    for data_dir, folder in (
        (tmp_path / "a", tmp_path / "a"),
        (tmp_path / "b", tmp_path / "b" / "MNIST" / "raw"),
    ):
        want = write_mnist(folder, gz=gz)
        splits = load_dataset("mnist", data_dir, download=False)
        assert (
            splits.train.images.shape == (5, 1, 28, 28) and splits.train.images.dtype == torch.uint8
        )
        assert torch.equal(
            splits.train.images[:, 0], torch.from_numpy(want["train-images-idx3-ubyte"])
        )
        assert splits.train.labels.tolist() == [5, 0, 4, 1, 9] and splits.test.labels.tolist() == [
            7,
            2,
            1,
        ]
        assert splits.train.classes == tuple("0123456789")
        assert splits.mean == MNIST_MEAN and splits.augmentation == "none"
    assert load_mnist(tmp_path / "a", download=False, image_size=32).image_shape == (1, 32, 32)


@pytest.mark.parametrize(
    ("corrupt", "match"),
    [
        (lambda raw: raw[:-5], "truncated"),
        (lambda raw: raw[:10], "truncated inside its header"),
        (lambda raw: raw + b"\0", "longer than its header says"),
        (lambda raw: raw[:2] + b"\x0d" + raw[3:], "magic number 00000d03"),
        (lambda raw: raw[:3] + b"\x02" + raw[4:], "expected 00000803"),
    ],
    ids=["data", "header", "trailing", "type", "ndim"],
)
def test_mnist_strict_idx_header(tmp_path: Path, corrupt, match: str) -> None:
    write_mnist(tmp_path)
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(corrupt(path.read_bytes()))
    with pytest.raises(DataError, match=match) as info:
        load_mnist(tmp_path, download=False)
    assert "train-images-idx3-ubyte" in str(info.value)


def test_mnist_bad_gzip_and_count_mismatch(tmp_path: Path) -> None:
    write_mnist(tmp_path, gz=("t10k-images-idx3-ubyte",))
    gz = tmp_path / "t10k-images-idx3-ubyte.gz"
    gz.write_bytes(gz.read_bytes()[:-20])
    with pytest.raises(DataError, match="t10k-images-idx3-ubyte.gz"):
        load_mnist(tmp_path, download=False)
    write_mnist(tmp_path / "c")
    (tmp_path / "c" / "t10k-labels-idx1-ubyte").write_bytes(idx_bytes(np.array([1, 2], np.uint8)))
    with pytest.raises(DataError, match="3 images but .* 2 labels"):
        load_mnist(tmp_path / "c", download=False)
    assert read_idx(tmp_path / "c" / "t10k-labels-idx1-ubyte", 1).tolist() == [1, 2]


def test_mnist_download_and_offline(tmp_path: Path, serve: tuple[Path, str]) -> None:
    folder, url = serve
    want = write_mnist(tmp_path / "src")
    md5 = {}
    for name, array in want.items():
        (folder / f"{name}.gz").write_bytes(gzip.compress(idx_bytes(array)))
        md5[f"{name}.gz"] = _md5(folder / f"{name}.gz")
    offline = tmp_path / "offline"
    with pytest.raises(DataError, match="t10k-labels-idx1-ubyte") as info:
        load_mnist(offline, download=False)
    _offline_error(info, offline)
    fresh = tmp_path / "fresh"
    (fresh).mkdir()
    (fresh / "train-labels-idx1-ubyte").write_bytes(idx_bytes(want["train-labels-idx1-ubyte"]))
    splits = load_mnist(fresh, url=url + "/", md5=md5)
    assert splits.test.labels.tolist() == [7, 2, 1]
    assert sorted(p.name for p in fresh.iterdir()) == [
        "t10k-images-idx3-ubyte.gz",
        "t10k-labels-idx1-ubyte.gz",
        "train-images-idx3-ubyte.gz",
        "train-labels-idx1-ubyte",  # present already: not downloaded
    ]
    md5["t10k-images-idx3-ubyte.gz"] = "0" * 32
    with pytest.raises(DataError, match="checksum mismatch"):
        load_mnist(tmp_path / "again", url=url, md5=md5)
