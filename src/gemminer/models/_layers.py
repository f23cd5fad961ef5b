"""Layer builders shared by the models: bias-free convolutions, non-affine BatchNorm."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

ConvLayer = Callable[..., nn.Module]
NormLayer = Callable[[int], nn.Module]
LinearLayer = Callable[..., nn.Module]


def non_affine_bn(channels: int) -> nn.Module:
    """BatchNorm without learnable scale and shift, as in the paper (Appendix A.2)."""
    return nn.BatchNorm2d(channels, affine=False)


def conv(
    conv_layer: ConvLayer, c_in: int, c_out: int, kernel: int, stride: int = 1, padding: int = 0
) -> nn.Module:
    return conv_layer(c_in, c_out, kernel_size=kernel, stride=stride, padding=padding, bias=False)
