"""Layer distributions: how many weights each layer keeps, registered by name.

A distribution is a function ``counts(model, density, method) -> {layer: count}`` registered
with :func:`register_distribution`: it gives every prunable layer of ``model`` a whole
number of kept weights, the counts adding up exactly to ``round(density · total)``
(:func:`~gemminer.methods._ratios.allocate_counts`); ``method`` is the scorer that asks,
for error messages. The shared thresholding (:mod:`gemminer.methods.scoring`) looks
``Thresholding.distribution`` up in :data:`DISTRIBUTIONS`, so it knows no distribution by
name, and the valid names in its errors are the registered ones. Registered, in this order:

* ``"uniform"`` (here): every layer at the target density;
* ``"erk"`` (here): the Erdős–Rényi-Kernel densities of RigL (Evci et al. 2020), each
  layer's relative density the sum of its weight's dimensions over their product;
* ``"smart-ratio"`` (:mod:`gemminer.methods.smart_ratio`): Smart Ratio v1 with its
  published defaults (the ``smart-ratio`` method sets its variants).

Importing :mod:`gemminer.methods` imports every method module, so all of them are
registered before any settings are checked.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from torch import nn

from ..masking import prunable_weights
from ..registry import Registry
from ._ratios import allocate_counts, target_count, weight_counts

Distribution = Callable[[nn.Module, float, str], dict[str, int]]


#: In registration order, the order error messages list them in.
DISTRIBUTIONS: Registry[Distribution] = Registry("distribution", ordered=True)
register_distribution = DISTRIBUTIONS.register


def erk_ratio(shape: tuple[int, ...]) -> float:
    """The ERK relative density of a weight: the sum of its dimensions over their product."""
    return sum(shape) / math.prod(shape)


@register_distribution("uniform")
def uniform_counts(model: nn.Module, density: float, method: str) -> dict[str, int]:
    """Every layer keeps ``density`` of its weights (within one weight)."""
    sizes = weight_counts(model)
    target = target_count(method, density, sum(sizes.values()))
    return allocate_counts(method, sizes, dict.fromkeys(sizes, 1.0), target)


@register_distribution("erk")
def erk_counts(model: nn.Module, density: float, method: str) -> dict[str, int]:
    """Every layer keeps ε · :func:`erk_ratio` of its weights (dense where that exceeds
    all of them), ε solved for the target."""
    sizes = weight_counts(model)
    target = target_count(method, density, sum(sizes.values()))
    ratios = {n: erk_ratio(tuple(w.shape)) for n, w in prunable_weights(model).items()}
    return allocate_counts(method, sizes, ratios, target)


__all__ = [
    "DISTRIBUTIONS",
    "Distribution",
    "erk_ratio",
    "register_distribution",
]
