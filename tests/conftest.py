"""Tiny data and models shared by the tests."""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from gemminer.cli import main
from gemminer.data import ImageArrays
from gemminer.notices import forget_notices
from gemminer.training import runtime as runtime_module

CLASSES = ("cat", "dog", "ship")


def separable_arrays(n: int, size: int = 8, seed: int = 0) -> ImageArrays:
    """Images whose class is visible in their colour, so tiny networks can learn it."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % len(CLASSES)
    images = torch.randint(0, 100, (n, 3, size, size), generator=g, dtype=torch.int64)
    images[torch.arange(n), labels] += 150
    return ImageArrays(images.to(torch.uint8), labels, CLASSES)


def pytest_collection_modifyitems(config, items):
    """Tests marked ``gpu`` need CUDA: skipped on machines without it."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if item.get_closest_marker("gpu") is not None:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _cpu_unless_marked_gpu(request, monkeypatch):
    """Tests run on the CPU on a GPU machine too (where the device ``auto`` would be CUDA),
    and so do the processes they start (:func:`child_env`), so that their figures do not
    depend on the machine; tests marked ``gpu`` get the GPU."""
    if request.node.get_closest_marker("gpu") is None:
        monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")


def child_env(**extra: str) -> dict[str, str]:
    """The environment of a process a test starts: the test's own (on a GPU machine
    without its GPUs, see :func:`_cpu_unless_marked_gpu`), plus ``extra``."""
    return {**os.environ, **extra}


@pytest.fixture(autouse=True)
def _fp32_unless_asked(monkeypatch):
    """``--precision auto`` (the default) resolves to fp32 on every test machine, so that
    results do not depend on whether its CPU has bf16 instructions; tests of ``auto``
    patch the probe themselves."""
    monkeypatch.setattr(runtime_module, "cpu_has_fast_bf16", lambda: False)


@pytest.fixture(autouse=True)
def _fresh_notices():
    """Each test sees every notice it causes (a process tells each message once)."""
    forget_notices()
    yield
    forget_notices()


def told(caplog: pytest.LogCaptureFixture) -> list[str]:
    """The notices (:func:`gemminer.notices.notice`) that ``caplog`` caught."""
    return [
        r.getMessage() for r in caplog.records if r.name == "gemminer" and r.levelname == "WARNING"
    ]


def fails(argv: list[str], capsys: pytest.CaptureFixture, *needles: str) -> str:
    """Run ``gemminer ARGV``: it must exit with status 2 and one line on stderr,
    ``gemminer: error: ...``, holding every one of ``needles``; returns that stderr."""
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("gemminer: error:"), err
    for needle in needles:
        assert needle in err, err
    return err


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory):
    """A tiny image-folder data set (24 training and 9 test images of 16×16 pixels), made
    once per test module; modules that need other data define their own ``data_dir``."""
    root = tmp_path_factory.mktemp("data")
    write_image_folder(root, n_train=24, n_test=9, size=16)
    return root


@pytest.fixture
def tiny_data() -> ImageArrays:
    return separable_arrays(96)


class UserNet(nn.Module):
    """A model gemminer has never seen: convs, a 1×1 conv, biases and a linear head."""

    def __init__(self, num_classes: int = 3) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(8, 8, 1, bias=False),
            nn.BatchNorm2d(8),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(2),
            nn.Flatten(),
        )
        self.head = nn.Linear(32, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


@pytest.fixture
def user_net() -> UserNet:
    torch.manual_seed(0)
    return UserNet()


def write_image_folder(root, n_train: int = 30, n_test: int = 12, size: int = 32) -> None:
    """An image-folder CIFAR-like data set (train/<class>/*.png, test/<class>/*.png)."""
    data = {
        "train": separable_arrays(n_train, size, seed=1),
        "test": separable_arrays(n_test, size, seed=2),
    }
    for split, arrays in data.items():
        for i, (img, label) in enumerate(zip(arrays.images, arrays.labels)):
            folder = root / split / CLASSES[label]
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.ascontiguousarray(img.permute(1, 2, 0).numpy())).save(
                folder / f"{i:04d}.png"
            )


BENCHMARKS = Path(__file__).parents[1] / "benchmarks"


def benchmark_script(name: str) -> ModuleType:
    """The module of ``benchmarks/<name>.py`` (importing its ``_common`` helpers)."""
    path = BENCHMARKS / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(BENCHMARKS))
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(BENCHMARKS))
    return module
