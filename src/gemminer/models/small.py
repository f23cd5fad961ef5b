"""Small networks of the lottery-ticket literature: LeNet-300-100 and Conv-4.

* LeNet-300-100 (LeCun et al. 1998; Frankle & Carbin 2019) for MNIST: fully connected
  784–300–100–classes with ReLU, no biases.
* Conv-4 (Frankle & Carbin 2019; Ramanujan et al. 2020, "hidden-networks") for CIFAR:
  3×3 convolutions 64, 64, max pool, 128, 128, max pool, then fully connected
  256, 256, classes. Here every convolution is followed by a non-affine BatchNorm
  (the reference versions have none) so that it matches the rest of the registry;
  the fully connected layers have none. No biases.

Neither is in the paper's Table 5; they are quick models for tests and small studies.
"""

from __future__ import annotations

import torch
from torch import nn

from ..errors import ConfigError, DataError
from . import MODELS
from ._layers import batchnorm, conv


def _positive(name: str, value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ConfigError(f"{name} must be a positive integer, got {value!r}")
    return value


def _check_features(x: torch.Tensor, expected: int) -> torch.Tensor:
    """``x`` unchanged, if it has ``expected`` values per sample (a :class:`DataError`
    otherwise). A leaf of ``torch.fx`` traces (the graph keeps the call), so that channel
    pruning can trace the model."""
    if x.shape[1] != expected:
        raise DataError(
            f"lenet300 expects {expected} values per sample, got {x.shape[1]}; "
            "build it with in_features matching the data"
        )
    return x


torch.fx.wrap("_check_features")


class LeNet300(nn.Module):
    """in_features → 300 → 100 → classes, ReLU between, any input flattened per sample."""

    def __init__(self, num_classes: int = 10, in_features: int = 28 * 28) -> None:
        super().__init__()
        self.in_features = _positive("in_features", in_features)
        self.fc1 = nn.Linear(in_features, 300, bias=False)
        self.fc2 = nn.Linear(300, 100, bias=False)
        self.fc3 = nn.Linear(100, num_classes, bias=False)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = _check_features(torch.flatten(x, 1), self.in_features)
        x = self.relu(self.fc1(x))
        x = self.relu(self.fc2(x))
        return self.fc3(x)


class Conv4(nn.Module):
    """conv64-conv64-pool-conv128-conv128-pool, then fully connected 256-256-classes."""

    def __init__(self, num_classes: int = 10, in_channels: int = 3, input_size: int = 32) -> None:
        super().__init__()
        _positive("in_channels", in_channels)
        if _positive("input_size", input_size) < 4:
            raise ConfigError(f"conv4 needs inputs of at least 4×4 pixels, got {input_size}")

        def unit(c_in: int, c_out: int) -> list[nn.Module]:
            return [conv(c_in, c_out, 3, 1, 1), batchnorm(c_out), nn.ReLU(True)]

        self.features = nn.Sequential(
            *unit(in_channels, 64),
            *unit(64, 64),
            nn.MaxPool2d(2),
            *unit(64, 128),
            *unit(128, 128),
            nn.MaxPool2d(2),
        )
        side = input_size // 4
        self.classifier = nn.Sequential(
            nn.Linear(128 * side * side, 256, bias=False),
            nn.ReLU(True),
            nn.Linear(256, 256, bias=False),
            nn.ReLU(True),
            nn.Linear(256, num_classes, bias=False),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.features(x), 1))


@MODELS.register("lenet300")
def lenet300(num_classes: int = 10, *, in_features: int = 28 * 28) -> LeNet300:
    """LeNet-300-100 for MNIST: Linear 784→300→100→classes, no biases (not in Table 5).

    Accepts (N, 1, 28, 28) images or any input with ``in_features`` values per sample.
    Prunable weights with 10 classes: 266,200 (235,200 + 30,000 + 1,000).
    """
    return LeNet300(num_classes, in_features)


@MODELS.register("conv4")
def conv4(num_classes: int = 10, *, in_channels: int = 3, input_size: int = 32) -> Conv4:
    """Conv-4 of Frankle & Carbin / Ramanujan et al. for CIFAR (not in Table 5).

    3×3 convolutions 64, 64, max pool, 128, 128, max pool, each convolution followed by
    non-affine BatchNorm and ReLU; then Linear 128·(input_size/4)²→256→256→classes.
    Prunable weights with 10 classes on 32×32 RGB: 2,425,024 (convolutions 259,776;
    fully connected 2,097,152 + 65,536 + 2,560).
    """
    return Conv4(num_classes, in_channels, input_size)
