"""Layer builders shared by the models: bias-free convolutions, non-affine BatchNorm."""

from __future__ import annotations

from collections.abc import Callable, Sequence

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


def residual_stages(
    block: Callable[..., nn.Module],
    c_in: int,
    widths: Sequence[int],
    blocks_per_stage: int,
    conv_layer: ConvLayer,
    norm_layer: NormLayer,
) -> tuple[list[nn.Sequential], int]:
    """CIFAR-style stages of ``block(c_in, c_out, stride, conv_layer, norm_layer)``: the
    first block of every stage after the first halves the resolution. Returns the stages
    and the output width."""
    stages = []
    for i, c_out in enumerate(widths):
        blocks = [
            block(c_in if j == 0 else c_out, c_out, 2 if i > 0 and j == 0 else 1, conv_layer,
                  norm_layer)
            for j in range(blocks_per_stage)
        ]  # fmt: skip
        stages.append(nn.Sequential(*blocks))
        c_in = c_out
    return stages, c_in
