"""SNIP: single-shot pruning by connection sensitivity (Lee et al., ICLR 2019).

The score of a weight is |∂L/∂w ⊙ w|, the first-order change of the loss when the weight
is removed (equivalently |∂L/∂m| of a multiplicative mask m at m = 1). The gradient is
that of the cross-entropy summed over ``batches`` training batches (the original uses one
batch), on a copy of the network in training mode (BatchNorm uses batch statistics).
The highest scores are kept, globally across layers.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.nn import functional as F

from ..masking.threshold import global_mask
from ._saliency import check_positive_int, epochs_for, grads_or_zeros, scoring_copy, take_batches
from .base import PruneContext, PruneResult, register_method


@dataclass(frozen=True)
class SnipSettings:
    """SNIP's settings; the defaults are the published method."""

    batches: int = 1
    """Training batches whose loss gradients are summed before scoring."""

    def __post_init__(self) -> None:
        check_positive_int("snip", "batches", self.batches)


@register_method(
    "snip",
    settings=SnipSettings,
    default_init="kaiming_normal",
    description="SNIP (Lee et al. 2019): keep the largest |∂L/∂w ⊙ w|, one shot, global.",
)
def snip(ctx: PruneContext, settings: SnipSettings) -> PruneResult:
    """Score every prunable weight by |g ⊙ w| and keep the top ``ctx.density`` globally."""
    model, weights = scoring_copy(ctx.model, ctx.device)
    model.train()
    params = list(weights.values())
    total = [torch.zeros_like(w) for w in params]
    for x, y in take_batches(ctx.train_batches, settings.batches, ctx.device, "snip"):
        loss = F.cross_entropy(model(x), y)
        grads = torch.autograd.grad(loss, params, allow_unused=True)
        for acc, g in zip(total, grads_or_zeros(grads, params)):
            acc.add_(g)
    scores = {name: (g * w).detach().abs().cpu() for (name, w), g in zip(weights.items(), total)}
    return PruneResult(
        mask=global_mask(scores, ctx.density),
        epochs_to_mask=epochs_for(ctx, settings.batches),
        iterations_to_mask=settings.batches,
        scores=scores,
    )
