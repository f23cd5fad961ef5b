"""Layer-wise keep ratios → exact keep counts, and random scores to fill them.

Shared by the layer distributions of :mod:`gemminer.methods.distributions` (uniform, ERK,
Smart Ratio): each gives every layer a *relative* keep ratio w_l (its density is s · w_l
for one common scale s), and possibly a few layers a fixed keep count. :func:`allocate_counts`
solves for s so that the kept counts add up to the target, caps layers whose density would
exceed 1 (they become dense and s is solved again for the rest, until no layer exceeds 1),
and rounds to integers by largest remainder, so the total is *exact* and every layer is
within one weight of its real-valued share. The random methods choose the weights kept
inside a layer at random: :func:`random_scores` draws U[0, 1) per weight from ``ctx.seed``
and the shared thresholding keeps each layer's highest scores, so inverting the scores
gives a disjoint random mask with the same layer-wise counts.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
from torch import nn

from ..errors import ConfigError
from ..masking import prunable_weights
from ..masking.threshold import keep_count
from .base import PruneContext


def weight_counts(model: nn.Module) -> dict[str, int]:
    """The number of weights of each prunable layer of ``model``, in definition order."""
    return {name: w.numel() for name, w in prunable_weights(model).items()}


def target_count(method: str, density: float, total: int) -> int:
    """Weights to keep for ``density`` of ``total`` (the nearest integer, at least one)."""
    if not (isinstance(density, (int, float)) and 0 < density <= 1):
        raise ConfigError(f"{method}: density must lie in (0, 1], got {density!r}")
    return keep_count(total, density)


def allocate_counts(
    method: str,
    sizes: Mapping[str, int],
    ratios: Mapping[str, float],
    target: int,
    fixed: Mapping[str, int] | None = None,
) -> dict[str, int]:
    """Keep counts per layer, in the order of ``sizes``, summing exactly to ``target``.

    ``fixed`` layers keep the given counts; every other layer keeps s · ``ratios[l]`` of
    its ``sizes[l]`` weights (capped at all of them), with s solved so the total is
    ``target``. Raises :class:`ConfigError` (naming ``method``) when the fixed layers
    alone exceed the target, or when the free layers cannot absorb the rest even dense.
    """
    fixed = dict(fixed or {})
    free = [name for name in sizes if name not in fixed]
    missing = [name for name in free if name not in ratios]
    if missing:
        raise ConfigError(f"{method}: no keep ratio for {', '.join(missing)}")
    for name in free:
        if not (math.isfinite(ratios[name]) and ratios[name] > 0):
            raise ConfigError(f"{method}: keep ratio of {name} must be > 0, got {ratios[name]}")
    for name, count in fixed.items():
        if not 0 <= count <= sizes[name]:
            raise ConfigError(f"{method}: {name} cannot keep {count} of its {sizes[name]} weights")
    budget = target - sum(fixed.values())
    total = sum(sizes.values())
    if budget < 0:
        raise ConfigError(
            f"{method}: the fixed layers ({', '.join(fixed)}) keep {sum(fixed.values())} "
            f"weights, more than the {target} of {total} the target density allows; "
            "raise the density"
        )
    room = sum(sizes[name] for name in free)
    if budget > room:
        reachable = (sum(fixed.values()) + room) / total
        raise ConfigError(
            f"{method}: cannot keep {target} of {total} weights with "
            f"{', '.join(fixed)} fixed; the highest reachable density is {reachable:.6g}"
        )

    # Water-filling: cap every layer whose density s·w_l would exceed 1, solve s again.
    # s only grows when layers are capped, so capping all offenders at once is the same
    # as capping the largest one at a time (RigL's ERK loop).
    dense: set[str] = set()
    scale = 0.0
    while True:
        rest = [name for name in free if name not in dense]
        weight = sum(ratios[name] * sizes[name] for name in rest)
        left = budget - sum(sizes[name] for name in dense)
        scale = left / weight if weight > 0 else 0.0
        over = {name for name in rest if scale * ratios[name] > 1}
        if not over:
            break
        dense |= over

    exact = {
        name: float(sizes[name]) if name in dense else scale * ratios[name] * sizes[name]
        for name in free
    }
    counts = {name: min(sizes[name], math.floor(exact[name])) for name in free}
    short = budget - sum(counts.values())
    # Largest remainder first; ties go to the earlier layer.
    position = {name: i for i, name in enumerate(free)}
    order = sorted(free, key=lambda n: (-(exact[n] - counts[n]), position[n]))
    for name in order:
        if short <= 0:
            break
        if counts[name] < sizes[name]:
            counts[name] += 1
            short -= 1
    counts.update(fixed)
    return {name: counts[name] for name in sizes}


def random_scores(ctx: PruneContext) -> dict[str, torch.Tensor]:
    """U[0, 1) per prunable weight, drawn layer by layer from ``ctx.seed`` (on the CPU)."""
    g = torch.Generator().manual_seed(ctx.seed)
    return {
        name: torch.rand(w.shape, generator=g) for name, w in prunable_weights(ctx.model).items()
    }
