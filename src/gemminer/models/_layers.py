"""Layer builders shared by the models: bias-free convolutions, non-affine BatchNorm.

The models build plain ``nn.Conv2d`` / ``nn.Linear`` layers; score-learning and masked
variants swap those classes afterwards (:func:`gemminer.masking.to_score_model`), which
works on any user model as well.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from torch import nn


def batchnorm(channels: int, affine: bool = False) -> nn.BatchNorm2d:
    """BatchNorm, by default without learnable scale and shift as in the paper (Appendix
    A.2); ``affine=True`` for pretrained torchvision weights."""
    return nn.BatchNorm2d(channels, affine=affine)


def conv(c_in: int, c_out: int, kernel: int, stride: int = 1, padding: int = 0) -> nn.Conv2d:
    """A bias-free convolution."""
    return nn.Conv2d(c_in, c_out, kernel_size=kernel, stride=stride, padding=padding, bias=False)


def residual_stages(
    block: Callable[[int, int, int], nn.Module],
    c_in: int,
    widths: Sequence[int],
    blocks_per_stage: int,
) -> tuple[list[nn.Sequential], int]:
    """CIFAR-style stages of ``block(c_in, c_out, stride)``: the first block of every stage
    after the first halves the resolution. Returns the stages and the output width."""
    stages = []
    for i, c_out in enumerate(widths):
        blocks = [
            block(c_in if j == 0 else c_out, c_out, 2 if i > 0 and j == 0 else 1)
            for j in range(blocks_per_stage)
        ]
        stages.append(nn.Sequential(*blocks))
        c_in = c_out
    return stages, c_in
