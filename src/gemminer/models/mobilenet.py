"""MobileNet-V2 for CIFAR (Sandler et al. 2018; the paper's Table 7).

A 3×3 stem with 32 channels at stride 1, seventeen inverted-residual blocks (1×1
expansion, 3×3 depthwise, 1×1 projection; each conv followed by non-affine BatchNorm,
ReLU after the first two), a 1×1 convolution to 1280 channels, global average pooling and
a 1280 → classes linear layer. For 32×32 inputs the second stage keeps stride 1 (the
CIFAR variant the paper follows), so the last feature map is 4×4. Blocks with stride 1
add a shortcut: the identity, or a 1×1 convolution + BatchNorm where the width changes.
Every convolution is prunable, depthwise ones included. With 10 classes it has 2,261,824
prunable weights.
"""

from __future__ import annotations

import torch
from torch import nn

from . import MODELS
from ._layers import batchnorm, conv

#: (expansion, output channels, blocks, stride of the first block) per stage (Table 7).
MOBILENET_V2_PLAN: tuple[tuple[int, int, int, int], ...] = (
    (1, 16, 1, 1),
    (6, 24, 2, 1),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)


class InvertedResidual(nn.Module):
    def __init__(
        self,
        c_in: int,
        c_out: int,
        expansion: int,
        stride: int,
    ) -> None:
        super().__init__()
        hidden = expansion * c_in
        self.conv1 = conv(c_in, hidden, 1)
        self.bn1 = batchnorm(hidden)
        self.conv2 = nn.Conv2d(
            hidden, hidden, kernel_size=3, stride=stride, padding=1, groups=hidden, bias=False
        )
        self.bn2 = batchnorm(hidden)
        self.conv3 = conv(hidden, c_out, 1)
        self.bn3 = batchnorm(c_out)
        self.relu = nn.ReLU(inplace=True)
        self.residual = stride == 1
        self.shortcut: nn.Module = nn.Identity()
        if self.residual and c_in != c_out:
            self.shortcut = nn.Sequential(conv(c_in, c_out, 1), batchnorm(c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return out + self.shortcut(x) if self.residual else out


class MobileNetV2(nn.Module):
    def __init__(self, num_classes: int = 10, in_channels: int = 3) -> None:
        super().__init__()
        self.conv1 = conv(in_channels, 32, 3, 1, 1)
        self.bn1 = batchnorm(32)
        blocks: list[nn.Module] = []
        c_in = 32
        for expansion, c_out, n, stride in MOBILENET_V2_PLAN:
            for i in range(n):
                s = stride if i == 0 else 1
                blocks.append(InvertedResidual(c_in, c_out, expansion, s))
                c_in = c_out
        self.layers = nn.Sequential(*blocks)
        self.conv2 = conv(c_in, 1280, 1)
        self.bn2 = batchnorm(1280)
        self.relu = nn.ReLU(inplace=True)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.linear = nn.Linear(1280, num_classes, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.relu(self.bn2(self.conv2(self.layers(x))))
        return self.linear(torch.flatten(self.pool(x), 1))


@MODELS.register("mobilenetv2")
def mobilenetv2(num_classes: int = 10, *, in_channels: int = 3) -> MobileNetV2:
    """MobileNet-V2 for CIFAR, depthwise convolutions prunable (Table 7)."""
    return MobileNetV2(num_classes, in_channels)
