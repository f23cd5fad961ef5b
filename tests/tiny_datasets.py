"""Tiny instances of every registered data set, each in its exact on-disk format.

One writer per format (shared by the reader tests, the registry contract test and the
recipe tests), and :data:`TINY_INSTANCES`: for every name in the data set registry, a
function that writes a tiny instance into a folder and says what reading it must give.
A data set registered without an entry here fails the contract test.
"""

from __future__ import annotations

import gzip
import io
import pickle
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

# --------------------------------------------------------------------------- images


def save_image(path: Path, pixels: np.ndarray, fmt: str = "PNG") -> None:
    """``pixels`` (H, W) grayscale or (H, W, 3) RGB saved as ``fmt``, folders made."""
    path.parent.mkdir(parents=True, exist_ok=True)
    mode = "L" if pixels.ndim == 2 else "RGB"
    Image.fromarray(pixels, mode).save(path, format=fmt)


def random_pixels(seed: int, h: int, w: int, gray: bool = False) -> np.ndarray:
    shape = (h, w) if gray else (h, w, 3)
    return np.random.default_rng(seed).integers(0, 256, size=shape, dtype=np.uint8)


# --------------------------------------------------------------------------- CIFAR pickles


class _Py2Pickler(pickle._Pickler):
    """Writes every string as a Python 2 ``str`` (bytes when loaded with encoding="bytes")."""

    dispatch = pickle._Pickler.dispatch.copy()

    def save_py2_str(self, obj: str | bytes) -> None:
        raw = obj.encode("latin1") if isinstance(obj, str) else obj
        if len(raw) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(raw)]) + raw)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(raw)) + raw)
        self.memoize(obj)

    dispatch[bytes] = save_py2_str
    dispatch[str] = save_py2_str


def dump_pickle(obj: dict, path: Path, protocol: int, py2: bool) -> None:
    """``obj`` pickled to ``path``; ``py2``: byte for byte what Python 2 with numpy 1 wrote
    for the official CIFAR releases."""
    if py2:
        buf = io.BytesIO()
        _Py2Pickler(buf, protocol=2).dump(obj)
        path.write_bytes(buf.getvalue().replace(b"numpy._core.", b"numpy.core."))
    else:
        with open(path, "wb") as f:
            pickle.dump(obj, f, protocol=protocol)


CIFAR10_CLASSES = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)
PER_TRAIN_BATCH = 4
PER_TEST = 3


def _rows(start: int, n: int) -> np.ndarray:
    """``n`` random 3072-value rows; the first value (red at (0, 0)) is a unique id."""
    rows = np.random.default_rng(start).integers(0, 256, size=(n, 3072), dtype=np.uint8)
    rows[:, 0] = np.arange(start, start + n)
    return rows


def write_cifar10(
    folder: Path, *, protocol: int = 2, str_keys: bool = False, py2: bool = False
) -> dict:
    """Write a tiny release shaped like the official one; return the rows and labels written.

    The official files are Python 2 pickles (``py2``): loaded with ``encoding="bytes"`` their
    keys and strings are bytes. Otherwise Python 3 pickles with bytes keys are written, or
    with str keys and names when ``str_keys``.
    """

    def key(k: str) -> str | bytes:
        return k if str_keys or py2 else k.encode()

    batches = folder / "cifar-10-batches-py"
    batches.mkdir(parents=True)
    train_rows, train_labels = [], []
    for b in range(1, 6):
        rows = _rows(PER_TRAIN_BATCH * (b - 1), PER_TRAIN_BATCH)
        if b == 1:  # pixels at known places of the second image, one per colour plane
            rows[1, 0 * 1024 + 0 * 32 + 7] = 5  # red, y=0, x=7
            rows[1, 1 * 1024 + 2 * 32 + 5] = 222  # green, y=2, x=5
            rows[1, 2 * 1024 + 31 * 32 + 30] = 77  # blue, y=31, x=30
        labels = [(3 * i + b) % 10 for i in range(PER_TRAIN_BATCH)]
        train_rows.append(rows)
        train_labels += labels
        batch = {
            key("batch_label"): key(f"training batch {b} of 5"),
            key("labels"): labels,
            key("data"): rows,
            key("filenames"): [key(f"img_{b}_{i}.png") for i in range(PER_TRAIN_BATCH)],
        }
        dump_pickle(batch, batches / f"data_batch_{b}", protocol, py2)
    test_rows = _rows(100, PER_TEST)
    test_labels = [9, 0, 4]
    batch = {
        key("batch_label"): key("testing batch 1 of 1"),
        key("labels"): test_labels,
        key("data"): test_rows,
        key("filenames"): [key(f"test_{i}.png") for i in range(PER_TEST)],
    }
    dump_pickle(batch, batches / "test_batch", protocol, py2)
    meta = {
        key("num_cases_per_batch"): PER_TRAIN_BATCH,
        key("label_names"): [key(c) for c in CIFAR10_CLASSES],
        key("num_vis"): 3072,
    }
    dump_pickle(meta, batches / "batches.meta", protocol, py2)
    return {
        "train_rows": np.concatenate(train_rows),
        "train_labels": train_labels,
        "test_rows": test_rows,
        "test_labels": test_labels,
    }


FINE = tuple(f"class_{i:02d}" for i in range(100))


def write_cifar100(folder: Path) -> dict:
    """The official python release (Python 2 pickles): train, test, meta."""
    release = folder / "cifar-100-python"
    release.mkdir(parents=True)
    rng = np.random.default_rng(5)
    want = {}
    for split, n in (("train", 6), ("test", 4)):
        rows = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
        fine = [int(v) for v in rng.integers(0, 100, size=n)]
        coarse = [v // 5 for v in fine]
        batch = {
            b"filenames": [f"{split}_{i}.png".encode() for i in range(n)],
            b"batch_label": f"{split} batch".encode(),
            b"fine_labels": fine,
            b"coarse_labels": coarse,
            b"data": rows,
        }
        dump_pickle(batch, release / split, 2, py2=True)
        want[split] = (rows, fine)
    meta = {
        b"fine_label_names": [c.encode() for c in FINE],
        b"coarse_label_names": [f"super_{i}".encode() for i in range(20)],
    }
    dump_pickle(meta, release / "meta", 2, py2=True)
    return want


# --------------------------------------------------------------------------- image folders

FIVE = ("ant", "bee", "cat", "dog", "eel")


def write_folder(root: Path, *, test: bool = True, same_size: bool = False) -> None:
    """Five classes of odd-sized colour and grayscale PNGs in train/ (and test/)."""
    for split, per_class in (("train", 3), ("test", 2)) if test else (("train", 3),):
        for c, cls in enumerate(FIVE):
            for i in range(per_class):
                h, w = (5, 7) if same_size else (5 + c, 3 + 2 * i)
                save_image(root / split / cls / f"{i}.png", random_pixels(c * 10 + i, h, w, i == 1))


# --------------------------------------------------------------------------- TinyImageNet

WNIDS = ("n02", "n01", "n03")  # wnids.txt order is not sorted
COLOURS = {"n01": (250, 10, 10), "n02": (10, 250, 10), "n03": (10, 10, 250)}


def _jpeg(path: Path, colour: tuple[int, int, int], size: int = 64) -> None:
    pixels = np.empty((size, size, 3), dtype=np.uint8)
    pixels[:] = colour
    save_image(path, pixels, fmt="JPEG")


def write_tinyimagenet(parent: Path, size: int = 64) -> Path:
    """``parent/tiny-imagenet-200`` with 2 training images per class and 4 annotated val
    images; returns that folder."""
    root = parent / "tiny-imagenet-200"
    root.mkdir(parents=True)
    (root / "wnids.txt").write_text("\n".join(WNIDS) + "\n")
    (root / "words.txt").write_text(
        "n00\tentity\nn01\tgoldfish, Carassius auratus\nn02\tsalamander\nn03\tbullfrog\n"
    )
    for wnid in WNIDS:
        for i in range(2):
            _jpeg(root / "train" / wnid / "images" / f"{wnid}_{i}.JPEG", COLOURS[wnid], size)
        (root / "train" / wnid / f"{wnid}_boxes.txt").write_text(f"{wnid}_0.JPEG\t0\t0\t9\t9\n")
    lines = []
    for i, wnid in enumerate(("n03", "n01", "n01", "n02")):
        _jpeg(root / "val" / "images" / f"val_{i}.JPEG", COLOURS[wnid], size)
        lines.append(f"val_{i}.JPEG\t{wnid}\t0\t3\t40\t50")
    (root / "val" / "val_annotations.txt").write_text("\n".join(lines) + "\n")
    _jpeg(root / "test" / "images" / "test_0.JPEG", (0, 0, 0), size)  # unlabelled, unused
    return root


# --------------------------------------------------------------------------- Caltech-101

IMAGENET_WNIDS = ("n01440764", "n01443537", "n01484850")
#: (width, height) of each class's images: portrait, landscape and square, so crops and
#: the short-side resize are exercised.
IMAGENET_SHAPES = {"n01440764": (40, 56), "n01443537": (64, 36), "n01484850": (48, 48)}


def write_imagenet(root: Path, *, per_class: int = 3, val: str = "folders") -> Path:
    """A tiny ILSVRC-2012 layout: ``train/<wnid>/<wnid>_<i>.JPEG`` and two val images per
    class, ``val="folders"`` (``val/<wnid>/``), ``"flat"`` (``val/`` plus Kaggle's
    ``LOC_val_solution.csv``) or ``"flat-txt"`` (``val/val_labels.txt``). Each image is
    one colour: class c's channel c is bright, image i's other channels are 10·i."""
    rows = []
    for c, wnid in enumerate(IMAGENET_WNIDS):
        w, h = IMAGENET_SHAPES[wnid]
        for i in range(per_class + 2):
            colour = [10 * i] * 3
            colour[c] = 240
            pixels = np.zeros((h, w, 3), np.uint8) + np.array(colour, np.uint8)
            if i < per_class:
                path = root / "train" / wnid / f"{wnid}_{i}.JPEG"
            else:
                name = f"ILSVRC2012_val_{c * 2 + i - per_class + 1:08d}"
                folder = root / "val" / wnid if val == "folders" else root / "val"
                path = folder / f"{name}.JPEG"
                rows.append((name, wnid))
            save_image(path, pixels, "JPEG")
    if val == "flat":
        lines = ["ImageId,PredictionString"] + [f"{n},{w} 1 2 30 40" for n, w in rows]
        (root / "LOC_val_solution.csv").write_text("\n".join(lines) + "\n")
    elif val == "flat-txt":
        (root / "val" / "val_labels.txt").write_text(
            "".join(f"{n}.JPEG {w}\n" for n, w in reversed(rows))
        )
    return root


CALTECH_COUNTS = {"Faces": 10, "accordion": 5, "BACKGROUND_Google": 4, "yin_yang": 7}


def write_caltech101(parent: Path) -> Path:
    """101_ObjectCategories with odd sizes and a grayscale image; pixel [0,0,0] is an id."""
    folder = parent / "101_ObjectCategories"
    n = 0
    for cls, count in CALTECH_COUNTS.items():
        for i in range(count):
            pixels = random_pixels(n, 6 + i % 3, 9 - i % 2, gray=i == 2)
            pixels[0, 0] = n
            save_image(folder / cls / f"image_{i + 1:04d}.jpg", pixels)  # PNG bytes, .jpg name
            n += 1
    return folder


# --------------------------------------------------------------------------- MNIST


def idx_bytes(array: np.ndarray) -> bytes:
    """``array`` in the IDX format of MNIST (unsigned bytes)."""
    header = bytes([0, 0, 8, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(np.uint8).tobytes()


def write_mnist(folder: Path, *, gz: tuple[str, ...] = ()) -> dict[str, np.ndarray]:
    """The four IDX files (those named in ``gz`` gzipped); returns the arrays written."""
    rng = np.random.default_rng(3)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (5, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte": np.array([5, 0, 4, 1, 9], dtype=np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (3, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": np.array([7, 2, 1], dtype=np.uint8),
    }
    folder.mkdir(parents=True, exist_ok=True)
    for name, array in arrays.items():
        if name in gz:
            (folder / f"{name}.gz").write_bytes(gzip.compress(idx_bytes(array)))
        else:
            (folder / name).write_bytes(idx_bytes(array))
    return arrays


# --------------------------------------------------------------------------- the registry


@dataclass(frozen=True)
class TinyInstance:
    """What reading a tiny instance with the data set's defaults must give."""

    image_shape: tuple[int, int, int]
    classes: tuple[str, ...]
    sizes: dict[str, int]  # images per split: train, test and (if any) val


def _cifar10(root: Path) -> TinyInstance:
    write_cifar10(root, py2=True)
    return TinyInstance((3, 32, 32), CIFAR10_CLASSES, {"train": 5 * PER_TRAIN_BATCH, "test": 3})


def _cifar100(root: Path) -> TinyInstance:
    write_cifar100(root)
    return TinyInstance((3, 32, 32), FINE, {"train": 6, "test": 4})


def _folder(root: Path) -> TinyInstance:
    write_folder(root, same_size=True)
    return TinyInstance((3, 5, 7), FIVE, {"train": 15, "test": 10})


def _tinyimagenet(root: Path) -> TinyInstance:
    write_tinyimagenet(root)
    return TinyInstance((3, 64, 64), tuple(sorted(WNIDS)), {"train": 6, "test": 4})


def _caltech101(root: Path) -> TinyInstance:
    write_caltech101(root)
    classes = tuple(c for c in CALTECH_COUNTS if c != "BACKGROUND_Google")
    return TinyInstance((3, 224, 224), classes, {"train": 13, "val": 5, "test": 4})


def _imagenet(root: Path) -> TinyInstance:
    write_imagenet(root)
    return TinyInstance((3, 224, 224), IMAGENET_WNIDS, {"train": 9, "test": 6})


def _mnist(root: Path) -> TinyInstance:
    write_mnist(root)
    return TinyInstance((1, 28, 28), tuple("0123456789"), {"train": 5, "test": 3})


#: Registered data set name -> writer of a tiny instance into a folder.
TINY_INSTANCES: dict[str, Callable[[Path], TinyInstance]] = {
    "caltech101": _caltech101,
    "cifar10": _cifar10,
    "cifar100": _cifar100,
    "folder": _folder,
    "imagenet": _imagenet,
    "mnist": _mnist,
    "tinyimagenet": _tinyimagenet,
}
