"""Weight initializations for prunable layers, registered by name."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from ..registry import Registry
from .mask import prunable_weights

#: ``init(weight, generator)`` fills ``weight`` in place.
WeightInit = Callable[[torch.Tensor, torch.Generator], None]
WEIGHT_INITS: Registry[WeightInit] = Registry("weight init")

_RELU_GAIN = math.sqrt(2.0)


def _fan_in(weight: torch.Tensor) -> int:
    return weight.shape[1] * int(math.prod(weight.shape[2:]))


@WEIGHT_INITS.register("kaiming_normal")
def kaiming_normal(weight: torch.Tensor, generator: torch.Generator) -> None:
    """N(0, gain²/fan_in) with the ReLU gain √2 (He et al.), the dense-training default."""
    std = _RELU_GAIN / math.sqrt(_fan_in(weight))
    weight.copy_(torch.randn(weight.shape, generator=generator) * std)


@WEIGHT_INITS.register("kaiming_normal_fan_half")
def kaiming_normal_fan_half(weight: torch.Tensor, generator: torch.Generator) -> None:
    """N(0, gain²/(fan_in/2)): Kaiming normal √2 wider, Smart Ratio's default.

    What the authors' Smart Ratio baseline trains (ksreenivasan/pruning_is_enough,
    configs/sr/*: ``init: kaiming_normal``, ``scale_fan: True``): their builder divides the
    fan by ``1 - prune_rate``, and ``main.py`` builds the model before it sets
    ``prune_rate``, so the argument's default 0.5 applies at every density."""
    kaiming_normal(weight, generator)
    weight.mul_(math.sqrt(2.0))


@WEIGHT_INITS.register("signed_constant")
def signed_constant(weight: torch.Tensor, generator: torch.Generator) -> None:
    """±gain/√fan_in with the sign of a Kaiming draw (Ramanujan et al.), Gem-Miner's default."""
    std = _RELU_GAIN / math.sqrt(_fan_in(weight))
    weight.copy_(torch.randn(weight.shape, generator=generator).sign() * std)


@torch.no_grad()
def init_weights(model: nn.Module, scheme: str = "signed_constant", seed: int = 0) -> nn.Module:
    """Re-initialize every prunable weight of ``model`` with ``scheme``, seeded; returns it."""
    init = WEIGHT_INITS.get(scheme)
    generator = torch.Generator().manual_seed(seed)
    for weight in prunable_weights(model).values():
        init(weight, generator)
    return model
