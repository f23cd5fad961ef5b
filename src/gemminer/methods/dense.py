"""Dense weight training: the all-ones mask, the reference accuracy of every table.

The target density is ignored: the mask keeps every prunable weight (density 1), and the
"finetuning" that follows is ordinary training of the full network, with Table 15's
settings for the densest row (LR 0.1 for ResNet-20 on CIFAR-10, as at >= 50 % density),
not those of the row nearest the ignored target. No scores are returned (there is nothing
to invert) and no training is spent finding the mask.
"""

from __future__ import annotations

from ..masking import Mask
from .base import NoSettings, PruneContext, PruneResult, register_method


@register_method(
    "dense",
    settings=NoSettings,
    default_init="kaiming_normal",
    description="Dense weight training (no pruning; the target density is ignored).",
    fixed_density=1.0,
    trains=False,
)
def dense(ctx: PruneContext, settings: NoSettings) -> PruneResult:
    """Keep every prunable weight, whatever ``ctx.density`` says."""
    return PruneResult(mask=Mask.ones_like(ctx.model), epochs_to_mask=0.0, iterations_to_mask=0)
