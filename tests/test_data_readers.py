"""Readers of CIFAR-10: official pickles, image folders, download and safe extraction."""

from __future__ import annotations

import functools
import hashlib
import http.server
import io
import os
import pickle
import shlex
import shutil
import socket
import tarfile
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import gemminer.data
from gemminer.data import DATASETS, folder, load_dataset
from gemminer.data.cifar import (
    CIFAR10_MEAN,
    CIFAR10_STD,
    load_cifar10,
    read_cifar_pickle,
    read_image_folder,
)
from gemminer.data.download import download_file, extract_tar, file_digest
from gemminer.errors import DataError

from .tiny_datasets import (
    CIFAR10_CLASSES,
    PER_TEST,
    PER_TRAIN_BATCH,
    random_pixels,
    save_image,
    write_cifar10,
)

ARCHIVE = "cifar-10-python.tar.gz"


# --------------------------------------------------------------------------- official pickles


@pytest.fixture
def archive(tmp_path: Path) -> tuple[Path, str]:
    """A tar.gz of the tiny release, in a folder of its own; returns it and its md5."""
    src = tmp_path / "archive-src"
    write_cifar10(src, py2=True)
    out = tmp_path / "served"
    out.mkdir()
    path = out / ARCHIVE
    with tarfile.open(path, "w:gz") as tar:
        tar.add(src / "cifar-10-batches-py", arcname="cifar-10-batches-py")
    return path, hashlib.md5(path.read_bytes()).hexdigest()


@pytest.mark.parametrize(
    ("protocol", "str_keys", "py2"),
    [(2, False, True), (2, False, False), (4, True, False), (5, False, False)],
    ids=["python2", "bytes-keys-p2", "str-keys-p4", "bytes-keys-p5"],
)
def test_read_cifar_pickle_values(tmp_path: Path, protocol: int, str_keys: bool, py2: bool) -> None:
    want = write_cifar10(tmp_path, protocol=protocol, str_keys=str_keys, py2=py2)
    for root in (tmp_path, tmp_path / "cifar-10-batches-py"):
        train, test = read_cifar_pickle(root)
        assert train.classes == test.classes == CIFAR10_CLASSES
        assert train.images.shape == (5 * PER_TRAIN_BATCH, 3, 32, 32)
        assert test.images.shape == (PER_TEST, 3, 32, 32)
        assert train.images.dtype == torch.uint8 and train.labels.dtype == torch.int64
        assert train.labels.tolist() == want["train_labels"]
        assert test.labels.tolist() == want["test_labels"]
        # Channel planes: red first, then green, then blue, each row-major.
        assert train.images[1, 0, 0, 7] == 5
        assert train.images[1, 1, 2, 5] == 222
        assert train.images[1, 2, 31, 30] == 77
        rows = want["train_rows"]
        for n, c, y, x in [(0, 0, 0, 0), (3, 1, 17, 4), (19, 2, 9, 31), (12, 0, 31, 0)]:
            assert train.images[n, c, y, x] == rows[n, c * 1024 + y * 32 + x]
        assert train.images[:, 0, 0, 0].tolist() == list(range(5 * PER_TRAIN_BATCH))
        expected_test = torch.from_numpy(want["test_rows"]).view(PER_TEST, 3, 32, 32)
        assert torch.equal(test.images, expected_test)


def test_read_cifar_pickle_missing_files(tmp_path: Path) -> None:
    write_cifar10(tmp_path)
    (tmp_path / "cifar-10-batches-py" / "data_batch_3").unlink()
    with pytest.raises(DataError, match="data_batch_3"):
        read_cifar_pickle(tmp_path)


class _Exploit:
    """Unpickling this runs a shell command that creates ``marker``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (os.system, (f"touch {shlex.quote(str(self.marker))}",))


class _EvalExploit(_Exploit):
    def __reduce__(self) -> tuple:
        code = f"open({str(self.marker)!r}, 'w').close()"
        return (eval, (code,))


@pytest.mark.parametrize("exploit", [_Exploit, _EvalExploit])
def test_malicious_pickle_is_refused(tmp_path: Path, exploit: type[_Exploit]) -> None:
    write_cifar10(tmp_path)
    marker = tmp_path / "marker"
    payload = pickle.dumps({b"data": exploit(marker), b"labels": [0]}, protocol=2)
    assert b"system" in payload or b"eval" in payload
    (tmp_path / "cifar-10-batches-py" / "data_batch_2").write_bytes(payload)
    with pytest.raises(DataError, match="refusing to unpickle") as info:
        read_cifar_pickle(tmp_path)
    assert "data_batch_2" in str(info.value)
    assert not marker.exists()


def test_garbage_pickle_is_a_data_error(tmp_path: Path) -> None:
    write_cifar10(tmp_path)
    (tmp_path / "cifar-10-batches-py" / "test_batch").write_bytes(b"not a pickle at all")
    with pytest.raises(DataError, match="test_batch"):
        read_cifar_pickle(tmp_path)


# --------------------------------------------------------------------------- image folders


def _pixels(seed: int, h: int = 4, w: int = 5) -> np.ndarray:
    return random_pixels(seed, h, w)


def _make_split(root: Path, split: str, files: dict[str, list[str]]) -> dict[str, np.ndarray]:
    """PNGs ``root/split/<class>/<name>`` with distinct pixels; returns path -> pixels."""
    written = {}
    for cls, names in files.items():
        for name in names:
            pixels = _pixels(len(written) + 1000 * len(split))
            save_image(root / split / cls / name, pixels)
            written[f"{cls}/{name}"] = pixels
    return written


def test_image_folder_values_labels_and_order(tmp_path: Path) -> None:
    written = _make_split(
        tmp_path, "train", {"cat": ["b.png", "a.png"], "ant": ["x.PNG"], "bee": ["10.png", "9.png"]}
    )
    # Hidden files, other file types and hidden folders are ignored.
    save_image(tmp_path / "train" / "cat" / ".hidden.png", _pixels(1, 9, 9))
    (tmp_path / "train" / "cat" / "notes.txt").write_text("not an image")
    save_image(tmp_path / "train" / ".junk" / "z.png", _pixels(2, 9, 9))
    arrays = read_image_folder(tmp_path, "train")
    assert arrays.classes == ("ant", "bee", "cat")
    order = ["ant/x.PNG", "bee/10.png", "bee/9.png", "cat/a.png", "cat/b.png"]
    assert arrays.labels.tolist() == [0, 1, 1, 2, 2]
    assert arrays.images.shape == (5, 3, 4, 5) and arrays.images.dtype == torch.uint8
    for i, name in enumerate(order):
        expected = torch.from_numpy(written[name]).permute(2, 0, 1)
        assert torch.equal(arrays.images[i], expected), name


def test_image_folder_converts_to_rgb(tmp_path: Path) -> None:
    gray = np.arange(20, dtype=np.uint8).reshape(4, 5) * 9
    path = tmp_path / "train" / "a" / "g.png"
    path.parent.mkdir(parents=True)
    Image.fromarray(gray, "L").save(path)
    arrays = read_image_folder(tmp_path, "train", cache=False)
    assert arrays.images.shape == (1, 3, 4, 5)
    for c in range(3):
        assert torch.equal(arrays.images[0, c], torch.from_numpy(gray))


def test_image_folder_cache_reused_and_invalidated(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    written = _make_split(tmp_path, "train", {"a": ["0.png", "1.png"], "b": ["0.png"]})
    first = read_image_folder(tmp_path, "train")
    caches = list((tmp_path / ".gemminer-cache").glob("train-*.pt"))
    assert len(caches) == 1
    first_cache = caches[0].name

    def no_decoding(*args: object) -> np.ndarray:
        raise AssertionError("decoded although a valid cache exists")

    with monkeypatch.context() as m:
        m.setattr(folder, "_decode_image", no_decoding)
        second = read_image_folder(tmp_path, "train")
    assert torch.equal(first.images, second.images) and torch.equal(first.labels, second.labels)
    assert second.classes == first.classes

    changed = tmp_path / "train" / "a" / "1.png"
    new_pixels = 255 - written["a/1.png"]
    save_image(changed, new_pixels)
    stat = changed.stat()
    os.utime(changed, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    third = read_image_folder(tmp_path, "train")
    assert torch.equal(third.images[1], torch.from_numpy(new_pixels).permute(2, 0, 1))
    assert torch.equal(third.images[0], first.images[0])
    # The stale cache was replaced, not kept beside the new one.
    caches = list((tmp_path / ".gemminer-cache").glob("train-*.pt"))
    assert [p.name for p in caches] != [first_cache] and len(caches) == 1


def test_image_folder_without_cache_or_writable_root(tmp_path: Path) -> None:
    _make_split(tmp_path, "train", {"a": ["0.png"]})
    read_image_folder(tmp_path, "train", cache=False)
    assert not (tmp_path / ".gemminer-cache").exists()
    # A cache folder that cannot be created (here: a file is in the way) is skipped silently.
    (tmp_path / ".gemminer-cache").write_text("in the way")
    arrays = read_image_folder(tmp_path, "train")
    assert len(arrays) == 1


def test_image_folder_class_mismatch(tmp_path: Path) -> None:
    _make_split(tmp_path, "train", {"a": ["0.png"], "b": ["0.png"]})
    _make_split(tmp_path, "test", {"a": ["0.png"], "c": ["0.png"]})
    train = read_image_folder(tmp_path, "train")
    with pytest.raises(DataError, match=r"missing \['b'\].*unexpected \['c'\]"):
        read_image_folder(tmp_path, "test", classes=train.classes)
    with pytest.raises(DataError, match="missing"):
        load_cifar10(tmp_path, download=False)


def test_image_folder_corrupt_image_names_file(tmp_path: Path) -> None:
    _make_split(tmp_path, "train", {"a": ["0.png", "1.png", "2.png"]})
    bad = tmp_path / "train" / "a" / "1.png"
    bad.write_bytes(bad.read_bytes()[:40])
    with pytest.raises(DataError, match="1.png"):
        read_image_folder(tmp_path, "train")
    bad.write_bytes(b"\x89PNG but not really")
    with pytest.raises(DataError, match="1.png"):
        read_image_folder(tmp_path, "train")


def test_image_folder_sizes(tmp_path: Path) -> None:
    _make_split(tmp_path, "train", {"a": ["0.png", "2.png"]})
    save_image(tmp_path / "train" / "a" / "1.png", _pixels(7, 6, 6))
    save_image(tmp_path / "train" / "a" / "3.png", _pixels(8, 7, 7))
    with pytest.raises(DataError, match=r"1\.png"):
        read_image_folder(tmp_path, "train")
    arrays = read_image_folder(tmp_path, "train", size=(8, 10))
    assert arrays.images.shape == (4, 3, 8, 10)


def test_load_cifar10_image_folder_layout(tmp_path: Path) -> None:
    _make_split(tmp_path, "train", {"frog": ["0.png", "1.png"], "cat": ["0.png"]})
    _make_split(tmp_path, "test", {"cat": ["0.png"], "frog": ["0.png"]})
    splits = load_cifar10(tmp_path, download=False)
    assert splits.name == "cifar10"
    assert splits.train.classes == splits.test.classes == ("cat", "frog")
    assert splits.train.labels.tolist() == [0, 1, 1] and splits.test.labels.tolist() == [0, 1]
    assert splits.mean == CIFAR10_MEAN and splits.std == CIFAR10_STD


# --------------------------------------------------------------------------- download


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def server(archive: tuple[Path, str]) -> Iterator[str]:
    """A loopback HTTP server for the archive's folder; yields its base URL."""
    handler = functools.partial(_QuietHandler, directory=str(archive[0].parent))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def test_download_extract_and_read(tmp_path: Path, server: str, archive: tuple[Path, str]) -> None:
    data_dir = tmp_path / "fresh" / "cifar"
    splits = load_cifar10(data_dir, url=f"{server}/{ARCHIVE}", md5=archive[1])
    assert splits.train.images.shape == (5 * PER_TRAIN_BATCH, 3, 32, 32)
    assert splits.test.labels.tolist() == [9, 0, 4]
    assert (data_dir / ARCHIVE).is_file() and (data_dir / "cifar-10-batches-py").is_dir()
    assert _leftovers(data_dir) == []
    # A second call reads the extracted release without the network.
    again = load_cifar10(data_dir, download=False, url="http://127.0.0.1:1/none", md5=archive[1])
    assert torch.equal(again.train.images, splits.train.images)


def test_download_checksum_mismatch(tmp_path: Path, server: str) -> None:
    data_dir = tmp_path / "cifar"
    with pytest.raises(DataError, match="checksum") as info:
        load_cifar10(data_dir, url=f"{server}/{ARCHIVE}", md5="0" * 32)
    assert "0" * 32 in str(info.value)
    assert not (data_dir / ARCHIVE).exists() and _leftovers(data_dir) == []


def test_download_file_sha256_and_missing(
    tmp_path: Path, server: str, archive: tuple[Path, str]
) -> None:
    sha = hashlib.sha256(archive[0].read_bytes()).hexdigest()
    out = tmp_path / "downloads"
    dest = download_file(f"{server}/{ARCHIVE}", out / "a.tgz", sha256=sha, progress=False)
    assert file_digest(dest, "sha256") == sha and file_digest(dest, "md5") == archive[1]
    with pytest.raises(DataError, match="404.*--data-dir"):
        download_file(f"{server}/nothing-here.tar.gz", out / "b.tgz", progress=False)
    assert sorted(p.name for p in out.iterdir()) == ["a.tgz"]


def test_download_unreachable(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/{ARCHIVE}"
    with pytest.raises(DataError, match="--data-dir") as info:
        load_cifar10(tmp_path / "cifar", url=url, md5="0" * 32)
    assert url in str(info.value)


def test_no_data_and_no_download(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="--data-dir"):
        load_cifar10(tmp_path, download=False)
    with pytest.raises(DataError, match="does not exist"):
        load_cifar10(tmp_path / "missing", download=False)


def test_local_archive_is_checked_and_extracted(tmp_path: Path, archive: tuple[Path, str]) -> None:
    data_dir = tmp_path / "cifar"
    data_dir.mkdir()
    shutil.copy(archive[0], data_dir / ARCHIVE)
    with pytest.raises(DataError, match="checksum"):
        load_cifar10(data_dir, download=False, md5="f" * 32)
    splits = load_cifar10(data_dir, download=False, md5=archive[1])
    assert len(splits.train) == 5 * PER_TRAIN_BATCH and _leftovers(data_dir) == []


# --------------------------------------------------------------------------- extraction


def _tar_with(path: Path, member: tarfile.TarInfo, data: bytes = b"") -> Path:
    with tarfile.open(path, "w:gz") as tar:
        member.size = len(data) if member.isfile() else 0
        tar.addfile(member, io.BytesIO(data) if member.isfile() else None)
    return path


def _symlink(name: str, target: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = tarfile.SYMTYPE
    info.linkname = target
    return info


@pytest.mark.parametrize(
    "member",
    [
        tarfile.TarInfo("../evil"),
        tarfile.TarInfo("ok/../../evil"),
        tarfile.TarInfo("/tmp/gemminer-absolute-evil"),
        _symlink("link", "../../evil"),
        _symlink("link", "/etc/passwd"),
    ],
    ids=["parent", "nested-parent", "absolute", "symlink-out", "symlink-absolute"],
)
def test_extract_tar_rejects_unsafe_members(tmp_path: Path, member: tarfile.TarInfo) -> None:
    bad = _tar_with(tmp_path / "bad.tar.gz", member, b"pwned")
    dest = tmp_path / "a" / "b"
    with pytest.raises(DataError):
        extract_tar(bad, dest)
    assert not (tmp_path / "evil").exists() and not (tmp_path / "a" / "evil").exists()
    assert not Path("/tmp/gemminer-absolute-evil").exists()


def test_extract_tar_bad_archive(tmp_path: Path) -> None:
    bad = tmp_path / "bad.tar.gz"
    bad.write_bytes(b"\x1f\x8b not really gzip")
    with pytest.raises(DataError, match="bad.tar.gz"):
        extract_tar(bad, tmp_path / "out")


def test_extract_tar_good_archive(tmp_path: Path) -> None:
    good = _tar_with(tmp_path / "good.tar.gz", tarfile.TarInfo("dir/file.txt"), b"hello")
    extract_tar(good, tmp_path / "out")
    assert (tmp_path / "out" / "dir" / "file.txt").read_bytes() == b"hello"


# --------------------------------------------------------------------------- registry


def test_registry_and_validation_split(tmp_path: Path) -> None:
    assert DATASETS.get("cifar10") is load_cifar10
    assert gemminer.data.DATASETS is DATASETS and "cifar10" in DATASETS
    write_cifar10(tmp_path)
    n = 5 * PER_TRAIN_BATCH

    def ids(seed: int) -> tuple[list[int], list[int]]:
        splits = load_dataset("cifar10", tmp_path, download=False, val_size=6, seed=seed)
        assert splits.val is not None
        assert len(splits.train) == n - 6 and len(splits.val) == 6
        return splits.train.images[:, 0, 0, 0].tolist(), splits.val.images[:, 0, 0, 0].tolist()

    train, val = ids(3)
    assert not set(train) & set(val) and sorted(train + val) == list(range(n))
    assert ids(3) == (train, val)
    assert ids(4)[1] != val
    full = load_dataset("cifar10", tmp_path, download=False)
    assert full.val is None and len(full.train) == n
