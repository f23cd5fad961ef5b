"""WideResNet-28-2 for CIFAR (Zagoruyko & Komodakis 2016; the paper's Table 5).

The paper bases it on xternalz/WideResNet-pytorch, and so does this definition:
pre-activation basic blocks (BN-ReLU-conv-BN-ReLU-conv), a 3×3 stem with 16 channels,
three stacks of (28 − 4) / 6 = 4 blocks with 16·k, 32·k and 64·k channels (k = 2:
32/64/128), BN-ReLU after the last stack, global average pooling and a linear classifier.

Where a block changes width or resolution (the first block of every stack: 16→32,
32→64 with stride 2, 64→128 with stride 2) its shortcut is a 1×1 convolution applied to
the block's pre-activated input, as in the reference code; elsewhere the shortcut is the
identity. Dropout is off (the reference's default, and the paper does not use it). No
biases, non-affine BatchNorm.

Table 5 pools with a fixed 8×8 average pool, which on 32×32 inputs is the global average
pool used here; the adaptive pool also accepts other input sizes.
"""

from __future__ import annotations

import torch
from torch import nn

from ..errors import ConfigError
from . import MODELS
from ._layers import batchnorm, conv, residual_stages


class PreActBlock(nn.Module):
    """BN-ReLU-conv3×3-BN-ReLU-conv3×3 with an identity or 1×1-convolution shortcut."""

    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.bn1 = batchnorm(c_in)
        self.conv1 = conv(c_in, c_out, 3, stride, 1)
        self.bn2 = batchnorm(c_out)
        self.conv2 = conv(c_out, c_out, 3, 1, 1)
        self.shortcut: nn.Module | None = None
        if stride != 1 or c_in != c_out:
            self.shortcut = conv(c_in, c_out, 1, stride)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pre = self.relu(self.bn1(x))
        out = self.conv1(pre)
        out = self.conv2(self.relu(self.bn2(out)))
        # The projection sees the pre-activated input; the identity sees the raw input.
        return out + (x if self.shortcut is None else self.shortcut(pre))


class WideResNet(nn.Module):
    """WRN-depth-k for CIFAR: depth = 6·n + 4 with n pre-activation blocks per stack."""

    def __init__(self, depth: int = 28, widen_factor: int = 2, num_classes: int = 10) -> None:
        super().__init__()
        if (depth - 4) % 6 != 0 or depth < 10:
            raise ConfigError(f"WideResNet depth must be 6·n + 4 with n ≥ 1, got {depth}")
        n = (depth - 4) // 6
        widths = [16 * widen_factor, 32 * widen_factor, 64 * widen_factor]
        self.conv1 = conv(3, 16, 3, 1, 1)
        stacks, c_in = residual_stages(PreActBlock, 16, widths, n)
        self.block1, self.block2, self.block3 = stacks
        self.bn = batchnorm(c_in)
        self.relu = nn.ReLU(inplace=True)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(c_in, num_classes, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(x)
        x = self.block3(self.block2(self.block1(x)))
        x = self.relu(self.bn(x))
        return self.fc(torch.flatten(self.pool(x), 1))


@MODELS.register("wrn28-2")
def wrn28_2(num_classes: int = 10) -> WideResNet:
    """WideResNet-28-2: 3×3 16 stem, 3 stacks of 4 pre-activation blocks with 32/64/128
    channels, 1×1 shortcuts where the shape changes, 128×classes linear (Table 5).

    Prunable weights with 10 classes: 1,463,984 (stem 432; stacks 69,632, 278,528 and
    1,114,112, shortcuts included; classifier 1,280).
    """
    return WideResNet(28, 2, num_classes)
