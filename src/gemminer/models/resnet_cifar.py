"""ResNet-20 and ResNet-32 for CIFAR (He et al. 2016; the paper's Table 5).

Three stages of n basic blocks with 16, 32 and 64 channels, global average pooling and a
linear classifier; no biases anywhere, non-affine BatchNorm.

Shortcut choice, where a block changes width and resolution (the first block of stages 2
and 3; everywhere else the shortcut is the identity), set by ``shortcut``:

* ``"A"`` (the default): no parameters — the input subsampled with stride 2 (every other
  row and column) and zero-padded in the channel dimension, half of the new channels on
  each side. This is He et al.'s option A as implemented in
  akamaster/pytorch_resnet_cifar10 (``resnet.py``), the repository the paper bases its
  ResNet-20 on (Appendix A), and in the authors' code (``models/resnet_kaiming.py``,
  which builds their ``resnet20`` and ``resnet32``). The network then has 6n + 2
  prunable layers (ResNet-20: 19 convolutions and the classifier, L = 20) and, with
  10 classes, 268,336 prunable weights (ResNet-32: 461,872).
* ``"B"``: a strided 1×1 convolution followed by BatchNorm — He et al.'s projection
  shortcut (option B), this library's default before it followed the paper. The two 1×1
  convolutions (16·32 + 32·64 = 2,560 weights) are prunable like every other
  convolution: 270,896 prunable weights for ResNet-20 with 10 classes (ResNet-32:
  464,432), in 6n + 4 layers.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial

import torch
from torch import nn
from torch.nn import functional as F

from ..errors import ConfigError
from . import MODELS
from ._layers import batchnorm, conv, residual_stages

#: Shortcut options where a block changes shape (see the module docstring).
SHORTCUTS = ("A", "B")


class PadShortcut(nn.Module):
    """Option A: subsample by ``stride`` and zero-pad the channels; no parameters or buffers.

    The ``c_out - c_in`` new channels go half before and half after the input's (the extra
    one after when odd); for the CIFAR ResNets, which double the width, that is ``c_out
    // 4`` on each side as in akamaster/pytorch_resnet_cifar10. Works in any memory
    format: a channels_last input gives a channels_last output.

    Channel pruning (:mod:`gemminer.masking.channels`) sees it through
    :meth:`channel_positions` — input channel i becomes output channel ``positions[i]``,
    the others are zero — and a compact network (:mod:`gemminer.rundir.compact`) narrows it
    with :meth:`narrow_channels`.
    """

    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        if c_out < c_in:
            raise ConfigError(
                f"shortcut 'A' can only add channels, not go from {c_in} to {c_out}; "
                "use shortcut='B'"
            )
        self.stride = stride
        before = (c_out - c_in) // 2
        self.positions = tuple(range(before, before + c_in))
        self.out_channels = c_out

    def channel_positions(self) -> tuple[int, ...]:
        """The output channel of each input channel."""
        return self.positions

    def narrow_channels(self, inputs: Sequence[int], outputs: Sequence[int]) -> None:
        """Keep only input channels ``inputs`` and output channels ``outputs`` (ascending
        indices; every kept input's position among the kept outputs), in place."""
        where = {c: i for i, c in enumerate(outputs)}
        self.positions = tuple(where[self.positions[c]] for c in inputs)
        self.out_channels = len(outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x[:, :, :: self.stride, :: self.stride]
        first, c_in = (self.positions[0] if self.positions else 0), len(self.positions)
        if self.positions == tuple(range(first, first + c_in)):
            return F.pad(x, (0, 0, 0, 0, first, self.out_channels - first - c_in))
        out = x.new_zeros(x.shape[0], self.out_channels, *x.shape[2:])
        out[:, list(self.positions)] = x
        return out

    def extra_repr(self) -> str:
        first = self.positions[0] if self.positions else 0
        after = self.out_channels - first - len(self.positions)
        return f"stride={self.stride}, pad=({first}, {after})"


class BasicBlock(nn.Module):
    def __init__(
        self,
        c_in: int,
        c_out: int,
        stride: int,
        shortcut: str = "A",
    ) -> None:
        super().__init__()
        self.conv1 = conv(c_in, c_out, 3, stride, 1)
        self.bn1 = batchnorm(c_out)
        self.conv2 = conv(c_out, c_out, 3, 1, 1)
        self.bn2 = batchnorm(c_out)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or c_in != c_out:
            if shortcut == "A":
                self.shortcut = PadShortcut(c_in, c_out, stride)
            else:
                self.shortcut = nn.Sequential(conv(c_in, c_out, 1, stride), batchnorm(c_out))
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """The CIFAR ResNet family (6n+2 layers) with widths 16/32/64."""

    def __init__(
        self,
        blocks_per_stage: int,
        num_classes: int = 10,
        width: int = 16,
        shortcut: str = "A",
    ) -> None:
        super().__init__()
        if not isinstance(shortcut, str) or shortcut not in SHORTCUTS:
            raise ConfigError(
                f"unknown CIFAR ResNet shortcut {shortcut!r}; valid shortcuts: "
                f"{', '.join(SHORTCUTS)} (A: parameter-free subsample and zero-pad, as in "
                "the paper; B: 1×1 convolution + BatchNorm)"
            )
        self.conv1 = conv(3, width, 3, 1, 1)
        self.bn1 = batchnorm(width)
        self.relu = nn.ReLU(inplace=True)
        widths = [width * 2**i for i in range(3)]
        block = partial(BasicBlock, shortcut=shortcut)
        stages, c_in = residual_stages(block, width, widths, blocks_per_stage)
        self.layer1, self.layer2, self.layer3 = stages
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(c_in, num_classes, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(torch.flatten(self.pool(x), 1))


@MODELS.register("resnet20")
def resnet20(num_classes: int = 10, *, width: int = 16, shortcut: str = "A") -> CifarResNet:
    """ResNet-20: 3 blocks per stage, 16/32/64 channels (Table 5; ``width`` sets the first
    stage's, the others double it).

    ``shortcut="A"`` (default, the paper's): parameter-free shortcuts, 268,336 prunable
    weights with 10 classes in 20 layers. ``shortcut="B"``: 1×1 convolution + BatchNorm
    shortcuts, 270,896 in 22 layers.
    """
    return CifarResNet(3, num_classes, width, shortcut)


@MODELS.register("resnet32")
def resnet32(num_classes: int = 10, *, width: int = 16, shortcut: str = "A") -> CifarResNet:
    """ResNet-32: 5 blocks per stage, 16/32/64 channels.

    The ResNet-20 column of Table 5 with five blocks per stage instead of three (6·5+2 =
    32 layers); the paper runs it on CIFAR-100 (Fig. 4a). Shortcuts as in ResNet-20.
    Prunable weights with ``shortcut="A"`` (default): 461,872 with 10 classes, 467,632
    with 100; with ``shortcut="B"``: 464,432 and 470,192.
    """
    return CifarResNet(5, num_classes, width, shortcut)
