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
from collections.abc import Callable, Iterator

from torch import nn

from ..errors import ConfigError
from ..masking import prunable_weights
from ._ratios import allocate_counts, target_count, weight_counts

Distribution = Callable[[nn.Module, float, str], dict[str, int]]


class DistributionRegistry:
    """Distributions by name, in the order they were registered (which is the order error
    messages list them in)."""

    def __init__(self) -> None:
        self._items: dict[str, Distribution] = {}

    def register(self, name: str) -> Callable[[Distribution], Distribution]:
        """Decorator that registers its target under ``name``."""

        def decorate(counts: Distribution) -> Distribution:
            if name in self._items:
                raise ValueError(f"distribution {name!r} is registered twice")
            self._items[name] = counts
            return counts

        return decorate

    def get(self, name: str) -> Distribution:
        """The distribution ``name``; :class:`ConfigError` listing the valid names otherwise."""
        try:
            return self._items[name]
        except KeyError:
            raise ConfigError(
                f"unknown distribution {name!r}; valid distributions: {', '.join(self)}"
            ) from None

    def names(self) -> tuple[str, ...]:
        """The registered names, in registration order."""
        return tuple(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._items)


DISTRIBUTIONS = DistributionRegistry()
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
    "DistributionRegistry",
    "erk_ratio",
    "register_distribution",
]
