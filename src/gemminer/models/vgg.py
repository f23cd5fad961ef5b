"""VGG-16 for CIFAR in the paper's 14-layer form (Table 6).

Thirteen 3×3 convolutions (each followed by non-affine BatchNorm and ReLU) in five stages
of 64, 128, 256, 512 and 512 channels, each stage ending in 2×2 max pooling, then a 1×1
convolution from 512 channels to the classes as the classifier: the two hidden fully
connected layers of the original VGG-16 are removed (Frankle et al.), as in the paper.
With 10 classes it has 14,715,584 prunable weights.
"""

from __future__ import annotations

import torch
from torch import nn

from . import MODELS
from ._layers import batchnorm, conv

#: Output channels of the convolutions; "M" is a 2×2 max pooling.
VGG16_PLAN: tuple[int | str, ...] = (
    64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M",
)  # fmt: skip


class VGG(nn.Module):
    def __init__(
        self,
        plan: tuple[int | str, ...] = VGG16_PLAN,
        num_classes: int = 10,
        in_channels: int = 3,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c_in = in_channels
        for item in plan:
            if item == "M":
                layers.append(nn.MaxPool2d(2, 2))
                continue
            c_out = int(item)
            layers += [conv(c_in, c_out, 3, 1, 1), batchnorm(c_out), nn.ReLU(True)]
            c_in = c_out
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = conv(c_in, num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.flatten(self.classifier(self.pool(self.features(x))), 1)


@MODELS.register("vgg16")
def vgg16(num_classes: int = 10, *, in_channels: int = 3) -> VGG:
    """VGG-16, 13 convolutions + a 1×1 convolution classifier (Table 6)."""
    return VGG(VGG16_PLAN, num_classes, in_channels)
