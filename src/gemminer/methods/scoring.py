"""Methods that only score: the method scores every prunable weight, shared code thresholds.

A one-shot method (SNIP, GraSP, SynFlow, random, Smart Ratio) is a function
``score(ctx, settings) -> Scores`` registered with :func:`register_scorer`. The registered
method keeps the highest scores by :func:`threshold`, as the method's settings say:

* ``scope="global"``: one top-k over all layers together (``round(density · total)``
  weights, within one weight of the target);
* ``scope="layer"``: every layer keeps its own count, set by ``distribution``, a name
  looked up in :data:`~gemminer.methods.distributions.DISTRIBUTIONS`: the same fraction
  everywhere (``"uniform"``), the Erdős–Rényi-Kernel densities of RigL (``"erk"``), or
  Smart Ratio's quadratically decaying ones (``"smart-ratio"``, registered by
  :mod:`gemminer.methods.smart_ratio`: SR-v1 with its published defaults; the
  ``smart-ratio`` method sets its variants). Counts are whole numbers that add up exactly
  to ``round(density · total)`` (:func:`~gemminer.methods._ratios.allocate_counts`).

So ``random-erk`` is ``random`` with ``distribution="erk"``, and ``smart-ratio`` is random
scores with Smart Ratio's counts; the old names stay registered (with those defaults), so
their run folders keep their names.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from torch import nn

from ..errors import ConfigError, UnknownNameError
from ..masking import Mask
from ..masking.threshold import global_mask, layerwise_mask
from ._ratios import target_count, weight_counts
from .base import PruneContext, PruneResult, register_method
from .distributions import DISTRIBUTIONS

SCOPES = ("global", "layer")


@dataclass
class Scores:
    """What a scorer returns: a score per prunable weight (higher = keep), keyed like the
    mask, and the training it spent (``epochs`` and optimizer ``iterations``, Table 1)."""

    scores: dict[str, torch.Tensor]
    epochs: float = 0.0
    iterations: int = 0


class LayerCounts(Protocol):
    """Settings that say how many weights each layer keeps (None: one global top-k)."""

    def layer_counts(
        self, model: nn.Module, density: float, method: str
    ) -> dict[str, int] | None: ...


@dataclass(frozen=True)
class Thresholding:
    """Where a scorer's mask keeps the highest scores (base of its settings).

    ``scope``: ``"global"`` (one top-k over all layers) or ``"layer"`` (each layer its
    own count). ``distribution`` (``scope="layer"`` only): the layers' counts, a name in
    :data:`~gemminer.methods.distributions.DISTRIBUTIONS`: ``"uniform"`` (every layer at
    the target density), ``"erk"`` (Erdős–Rényi-Kernel) or ``"smart-ratio"`` (Smart
    Ratio v1).
    """

    scope: str = "global"
    distribution: str = "uniform"

    def __post_init__(self) -> None:
        if self.scope not in SCOPES:
            raise ConfigError(f"unknown scope {self.scope!r}; valid scopes: {', '.join(SCOPES)}")
        try:
            DISTRIBUTIONS.get(self.distribution)
        except UnknownNameError as exc:  # a setting's value: the settings' error kind
            raise ConfigError(str(exc)) from None
        if self.scope == "global" and self.distribution != "uniform":
            raise ConfigError(
                f"distribution {self.distribution!r} sets each layer's count, so it needs "
                "scope='layer' (scope='global' keeps one top-k over all layers)"
            )

    def layer_counts(self, model: nn.Module, density: float, method: str) -> dict[str, int] | None:
        if self.scope == "global":
            return None
        return layer_counts(model, density, self.distribution, method)


def layer_counts(
    model: nn.Module, density: float, distribution: str, method: str
) -> dict[str, int]:
    """Each prunable layer's kept count under the registered ``distribution`` (see the
    module docstring), summing to ``round(density · total)``; errors name ``method``."""
    # the density first, whatever the distribution: its error names the scorer
    target_count(method, density, sum(weight_counts(model).values()))
    return DISTRIBUTIONS.get(distribution)(model, density, method)


def threshold(
    scores: Mapping[str, torch.Tensor],
    model: nn.Module,
    density: float,
    settings: LayerCounts,
    method: str,
) -> Mask:
    """Keep the highest ``scores`` at ``density``, globally or per layer as ``settings``
    say (ties by position, so counts are exact)."""
    counts = settings.layer_counts(model, density, method)
    if counts is None:
        return global_mask(scores, density)
    return layerwise_mask(scores, {name: counts[name] / s.numel() for name, s in scores.items()})


Scorer = Callable[[PruneContext, Any], Scores]


def register_scorer(name: str, **spec: Any) -> Callable[[Scorer], Scorer]:
    """Register ``score(ctx, settings) -> Scores`` as the method ``name``: its mask keeps
    the highest scores at ``ctx.density`` by :func:`threshold` (``settings`` must have
    ``layer_counts``, e.g. by deriving from :class:`Thresholding`). ``spec``: the other
    arguments of :func:`~gemminer.methods.base.register_method`."""

    def decorate(score: Scorer) -> Scorer:
        def run(ctx: PruneContext, settings: Any) -> PruneResult:
            found = score(ctx, settings)
            return PruneResult(
                mask=threshold(found.scores, ctx.model, ctx.density, settings, name),
                epochs_to_mask=found.epochs,
                iterations_to_mask=found.iterations,
                scores=found.scores,
            )

        run.__doc__ = score.__doc__
        register_method(name, trains=False, **spec)(run)
        return score

    return decorate


__all__ = [
    "DISTRIBUTIONS",
    "SCOPES",
    "Scores",
    "Thresholding",
    "layer_counts",
    "register_scorer",
    "threshold",
]
