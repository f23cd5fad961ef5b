"""Random pruning: U[0, 1) scores, kept by the shared thresholding (:mod:`.scoring`).

The scores are drawn per weight from ``ctx.seed`` and no training is spent (0 epochs,
0 iterations); where they are kept is the settings' business
(:class:`~gemminer.methods.scoring.Thresholding`):

* ``random`` (``scope="layer"``, ``distribution="uniform"``): every layer keeps the same
  fraction, ``density``; each layer's count is ``density · size`` rounded up or down
  (largest remainder), so within one weight, and the counts add up exactly to
  ``round(density · total)`` (see :mod:`gemminer.methods._ratios`).
* ``random-erk``, i.e. ``random`` with ``distribution="erk"``: the Erdős–Rényi-Kernel
  densities of RigL (Evci et al. 2020): density_l = ε · (n_in + n_out + k_h + k_w) /
  (n_in · n_out · k_h · k_w) for a convolution, ε · (n_in + n_out) / (n_in · n_out) for a
  linear layer (the sum of the weight's dimensions over their product), with ε solved so
  the total kept count is the target. A layer whose density would exceed 1 is made dense
  and ε is solved again for the others, until none exceeds 1 (RigL's loop; its
  ``erk_power_scale`` is 1 here).
* ``distribution="smart-ratio"``: Smart Ratio v1's densities (the ``smart-ratio`` method's
  default mask); ``scope="global"``: one random top-k over all layers.
"""

from __future__ import annotations

from dataclasses import dataclass

from ._ratios import random_scores
from .base import PruneContext
from .scoring import Scores, Thresholding, register_scorer


@dataclass(frozen=True)
class RandomSettings(Thresholding):
    """Random pruning: every layer at the target density unless ``scope`` or
    ``distribution`` say otherwise."""

    scope: str = "layer"


@dataclass(frozen=True)
class RandomErkSettings(RandomSettings):
    """``random-erk``: random pruning at ERK layer densities."""

    distribution: str = "erk"


@register_scorer(
    "random-erk",
    settings=RandomErkSettings,
    default_init="kaiming_normal",
    description="Random pruning at Erdős–Rényi-Kernel layer densities (RigL, Evci et al. "
    "2020); random with distribution=erk.",
)
@register_scorer(
    "random",
    settings=RandomSettings,
    default_init="kaiming_normal",
    description="Random pruning: every layer keeps the target density, at random positions.",
)
def score_at_random(ctx: PruneContext, settings: object) -> Scores:
    """U[0, 1) per prunable weight, seeded by ``ctx.seed``."""
    return Scores(random_scores(ctx))
