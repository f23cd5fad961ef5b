"""Random pruning at fixed layer-wise densities: uniform (``random``) and ERK (``random-erk``).

Both keep weights at random inside each layer (U[0, 1) scores seeded from ``ctx.seed``,
the highest kept); they differ only in how the target is split across layers. Kept counts
are integers that add up exactly to ``round(density · total)`` (see
:mod:`gemminer.methods._ratios`), and no training is spent (0 epochs, 0 iterations).

* ``random``: every layer keeps the same fraction, ``density``; each layer's count is
  ``density · size`` rounded up or down (largest remainder), so within one weight.
* ``random-erk``: the Erdős–Rényi-Kernel densities of RigL (Evci et al. 2020):
  density_l = ε · (n_in + n_out + k_h + k_w) / (n_in · n_out · k_h · k_w) for a
  convolution, ε · (n_in + n_out) / (n_in · n_out) for a linear layer (the sum of the
  weight's dimensions over their product), with ε solved so the total kept count is the
  target. A layer whose density would exceed 1 is made dense and ε is solved again for
  the others, until none exceeds 1 (RigL's loop; its ``erk_power_scale`` is 1 here).
"""

from __future__ import annotations

import math

from ..masking import prunable_weights
from ._ratios import allocate_counts, layer_sizes, random_result, random_scores, target_count
from .base import NoSettings, PruneContext, PruneResult, register_method


def erk_ratio(shape: tuple[int, ...]) -> float:
    """The ERK relative density of a weight: the sum of its dimensions over their product."""
    return sum(shape) / math.prod(shape)


def uniform_counts(ctx: PruneContext) -> dict[str, int]:
    """Per-layer keep counts at the same density in every layer, summing to the target."""
    sizes = layer_sizes(ctx)
    target = target_count("random", ctx.density, sum(sizes.values()))
    return allocate_counts("random", sizes, dict.fromkeys(sizes, 1.0), target)


def erk_counts(ctx: PruneContext) -> dict[str, int]:
    """Per-layer keep counts at ERK densities (capped at 1), summing to the target."""
    sizes = layer_sizes(ctx)
    ratios = {n: erk_ratio(tuple(w.shape)) for n, w in prunable_weights(ctx.model).items()}
    target = target_count("random-erk", ctx.density, sum(sizes.values()))
    return allocate_counts("random-erk", sizes, ratios, target)


@register_method(
    "random",
    settings=NoSettings,
    default_init="kaiming_normal",
    description="Random pruning: every layer keeps the target density, at random positions.",
)
def random_uniform(ctx: PruneContext, settings: NoSettings) -> PruneResult:
    """Keep ``density`` of every layer at random (seeded by ``ctx.seed``)."""
    return random_result(random_scores(ctx), uniform_counts(ctx))


@register_method(
    "random-erk",
    settings=NoSettings,
    default_init="kaiming_normal",
    description="Random pruning at Erdős–Rényi-Kernel layer densities (RigL, Evci et al. 2020).",
)
def random_erk(ctx: PruneContext, settings: NoSettings) -> PruneResult:
    """Keep ERK layer densities at random positions (seeded by ``ctx.seed``)."""
    return random_result(random_scores(ctx), erk_counts(ctx))
