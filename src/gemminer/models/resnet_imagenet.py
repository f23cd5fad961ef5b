"""ResNet-18 and ResNet-50 for ImageNet-style data (He et al. 2016; the paper's Table 5).

Module names follow torchvision's layout exactly — ``conv1``, ``bn1``, ``layer1`` …
``layer4`` made of blocks with ``conv1``/``bn1``/``conv2``/``bn2`` (and ``conv3``/``bn3``
in bottlenecks), ``downsample.0`` (1×1 convolution) and ``downsample.1`` (BatchNorm) where
a block changes shape, and ``fc`` — so a torchvision state dict maps onto it key by key
(see :func:`gemminer.models.pretrained.load_pretrained`). As in torchvision (ResNet v1.5)
a bottleneck strides in its 3×3 convolution. No biases; BatchNorm is non-affine unless
``affine_bn=True`` (the paper's Caltech-101 transfer from a pretrained ResNet-50 uses
affine BatchNorm, Appendix A.3.1).

Stem, chosen from ``input_size`` unless ``stem`` names one:

* ``"imagenet"``: 7×7 convolution, stride 2, padding 3, then 3×3 max pool with stride 2
  and padding 1 — torchvision's stem, and Table 5's ResNet-50 column, for TinyImageNet as
  well as ImageNet ("ResNet50 is used for both TinyImageNet and ImageNet"). ResNet-50 uses
  it for every input larger than 32×32, ResNet-18 for inputs larger than 64×64 (ImageNet,
  Caltech-101 at 224×224), so that pretrained torchvision weights fit.
* ``"tiny"``: 3×3 convolution with 64 channels, stride 2, padding 1, no max pool — Table
  5's ResNet-18 column, used by ResNet-18 for inputs of 33 to 64 pixels (TinyImageNet).
  The paper's code built it so (``models/tinyresnet.py``: ``conv3x3(3, 64, stride=2)``,
  whose builder pads 3×3 kernels by 1, and no max pool). Table 5 prints "padding 3" in
  this column, apparently copied from the 7×7 column: with a 3×3 kernel it would only
  add a ring of outputs that see nothing but padding. A later file of that code
  (``models/resnet_tiny.py``) switched TinyResNet18 to the ImageNet stem; pass
  ``stem="imagenet"`` to reproduce that variant.
* ``"cifar"``: 3×3 convolution, stride 1, padding 1, no max pool — the usual CIFAR
  ResNet-18/50 (the paper's code, ``models/resnet_cifar.py``; Appendix Fig. 8 runs
  ResNet-18 on CIFAR-10), used by both for inputs of 32×32 or less.

Whatever the stem, the network ends with global average pooling and a linear ``fc``
without bias (Table 5: "Adaptive Avg Pool, output size (1, 1)").
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from ..errors import ConfigError
from . import MODELS
from ._layers import batchnorm, conv

STEMS = ("imagenet", "tiny", "cifar")


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(
        self,
        c_in: int,
        planes: int,
        stride: int,
        downsample: nn.Module | None,
        affine: bool,
    ) -> None:
        super().__init__()
        self.conv1 = conv(c_in, planes, 3, stride, 1)
        self.bn1 = batchnorm(planes, affine)
        self.conv2 = conv(planes, planes, 3, 1, 1)
        self.bn2 = batchnorm(planes, affine)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(
        self,
        c_in: int,
        planes: int,
        stride: int,
        downsample: nn.Module | None,
        affine: bool,
    ) -> None:
        super().__init__()
        self.conv1 = conv(c_in, planes, 1)
        self.bn1 = batchnorm(planes, affine)
        self.conv2 = conv(planes, planes, 3, stride, 1)
        self.bn2 = batchnorm(planes, affine)
        self.conv3 = conv(planes, planes * self.expansion, 1)
        self.bn3 = batchnorm(planes * self.expansion, affine)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


Block = type[BasicBlock] | type[Bottleneck]


class ResNet(nn.Module):
    """torchvision-layout ResNet with widths 64/128/256/512 and a choice of stem; BatchNorm
    is non-affine unless ``affine_bn``."""

    def __init__(
        self,
        block: Block,
        blocks_per_stage: tuple[int, int, int, int],
        num_classes: int = 1000,
        stem: str = "imagenet",
        affine_bn: bool = False,
    ) -> None:
        super().__init__()
        if stem not in STEMS:
            raise ConfigError(f"unknown ResNet stem {stem!r}; valid stems: {', '.join(STEMS)}")
        if stem == "imagenet":
            self.conv1 = conv(3, 64, 7, 2, 3)
        else:
            self.conv1 = conv(3, 64, 3, 2 if stem == "tiny" else 1, 1)
        self.bn1 = batchnorm(64, affine_bn)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool: nn.Module = (
            nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
            if stem == "imagenet"
            else nn.Identity()
        )
        c_in = 64
        stages = []
        for i, n in enumerate(blocks_per_stage):
            planes = 64 * 2**i
            stride = 1 if i == 0 else 2
            c_out = planes * block.expansion
            downsample = None
            if stride != 1 or c_in != c_out:
                downsample = nn.Sequential(
                    conv(c_in, c_out, 1, stride), batchnorm(c_out, affine_bn)
                )
            blocks = [block(c_in, planes, stride, downsample, affine_bn)]
            blocks += [block(c_out, planes, 1, None, affine_bn) for _ in range(n - 1)]
            stages.append(nn.Sequential(*blocks))
            c_in = c_out
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(c_in, num_classes, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def _build(
    block: Block,
    blocks_per_stage: tuple[int, int, int, int],
    num_classes: int,
    input_size: int,
    stem: str | None,
    default_stem: Callable[[int], str],
    affine_bn: bool,
) -> ResNet:
    if not isinstance(input_size, int) or input_size < 1:
        raise ConfigError(f"input_size must be a positive number of pixels, got {input_size!r}")
    chosen = default_stem(input_size) if stem is None else stem
    return ResNet(block, blocks_per_stage, num_classes, chosen, affine_bn)


def _resnet18_stem(input_size: int) -> str:
    return "cifar" if input_size <= 32 else "tiny" if input_size <= 64 else "imagenet"


def _resnet50_stem(input_size: int) -> str:
    return "cifar" if input_size <= 32 else "imagenet"


@MODELS.register("resnet18")
def resnet18(
    num_classes: int = 10,
    *,
    input_size: int = 224,
    affine_bn: bool = False,
    stem: str | None = None,
) -> ResNet:
    """ResNet-18: basic blocks [2, 2, 2, 2] with 64/128/256/512 channels, 512×classes
    linear (Table 5). The stem follows ``input_size`` (see the module docstring):
    7×7/2 + max pool above 64 pixels, 3×3/2 (Table 5's ResNet-18 column, TinyImageNet)
    from 33 to 64, 3×3/1 up to 32.

    Prunable weights with 10 classes: 11,172,032 at input_size=224 (torchvision stem,
    7×7 conv1 of 9,408 weights), 11,164,352 at input_size=64 or 32 (3×3 conv1 of 1,728).
    With 200 classes (TinyImageNet, input_size=64): 11,261,632.
    """
    return _build(
        BasicBlock, (2, 2, 2, 2), num_classes, input_size, stem, _resnet18_stem, affine_bn
    )


@MODELS.register("resnet50")
def resnet50(
    num_classes: int = 10,
    *,
    input_size: int = 224,
    affine_bn: bool = False,
    stem: str | None = None,
) -> ResNet:
    """ResNet-50: bottleneck blocks [3, 4, 6, 3] with widths 64/128/256/512 (outputs ×4),
    2048×classes linear (Table 5). The stem is torchvision's 7×7/2 + max pool for every
    input larger than 32 pixels (Table 5 uses it on TinyImageNet too), 3×3/1 up to 32.

    Prunable weights with 10 classes: 23,475,392 (7×7 stem; 23,467,712 with the 3×3
    stem at input_size ≤ 32). With 200 classes (TinyImageNet): 23,864,512; with 101
    (Caltech-101 transfer): 23,661,760.
    """
    return _build(
        Bottleneck, (3, 4, 6, 3), num_classes, input_size, stem, _resnet50_stem, affine_bn
    )
