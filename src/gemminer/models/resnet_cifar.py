"""ResNet-20 for CIFAR (He et al. 2016; the paper's Table 5).

Three stages of three basic blocks with 16, 32 and 64 channels, global average pooling
and a linear classifier; no biases anywhere, non-affine BatchNorm.

Shortcut choice: where a block changes width or resolution (the first block of stages 2
and 3) the shortcut is a strided 1×1 convolution followed by BatchNorm ("option B" of He
et al.), and it is prunable like every other convolution. With 10 classes the network has
270,896 prunable weights (the first 3×3 convolution, 18 block convolutions, the two 1×1
shortcuts and the 64×10 classifier).
"""

from __future__ import annotations

import torch
from torch import nn

from . import MODELS
from ._layers import ConvLayer, LinearLayer, NormLayer, conv, non_affine_bn, residual_stages


class BasicBlock(nn.Module):
    def __init__(
        self,
        c_in: int,
        c_out: int,
        stride: int,
        conv_layer: ConvLayer,
        norm_layer: NormLayer,
    ) -> None:
        super().__init__()
        self.conv1 = conv(conv_layer, c_in, c_out, 3, stride, 1)
        self.bn1 = norm_layer(c_out)
        self.conv2 = conv(conv_layer, c_out, c_out, 3, 1, 1)
        self.bn2 = norm_layer(c_out)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(
                conv(conv_layer, c_in, c_out, 1, stride), norm_layer(c_out)
            )
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
        conv_layer: ConvLayer = nn.Conv2d,
        linear_layer: LinearLayer = nn.Linear,
        norm_layer: NormLayer = non_affine_bn,
    ) -> None:
        super().__init__()
        self.conv1 = conv(conv_layer, 3, width, 3, 1, 1)
        self.bn1 = norm_layer(width)
        self.relu = nn.ReLU(inplace=True)
        widths = [width * 2**i for i in range(3)]
        stages, c_in = residual_stages(
            BasicBlock, width, widths, blocks_per_stage, conv_layer, norm_layer
        )
        self.layer1, self.layer2, self.layer3 = stages
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = linear_layer(c_in, num_classes, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(torch.flatten(self.pool(x), 1))


@MODELS.register("resnet20")
def resnet20(num_classes: int = 10, **layers: object) -> CifarResNet:
    """ResNet-20: 3 blocks per stage, 16/32/64 channels (Table 5)."""
    return CifarResNet(3, num_classes, **layers)


@MODELS.register("resnet32")
def resnet32(num_classes: int = 10, **layers: object) -> CifarResNet:
    """ResNet-32: 5 blocks per stage, 16/32/64 channels.

    The ResNet-20 column of Table 5 with five blocks per stage instead of three (6·5+2 =
    32 layers); the paper runs it on CIFAR-100 (Fig. 4a). Shortcuts as in ResNet-20.
    Prunable weights: 464,432 with 10 classes, 470,192 with 100.
    """
    return CifarResNet(5, num_classes, **layers)
