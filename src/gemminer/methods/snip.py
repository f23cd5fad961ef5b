"""SNIP: single-shot pruning by connection sensitivity (Lee et al., ICLR 2019).

The score of a weight is |∂L/∂w ⊙ w|, the first-order change of the loss when the weight
is removed (equivalently |∂L/∂m| of a multiplicative mask m at m = 1). The gradient is
that of the cross-entropy summed over ``batches`` training batches (the original uses one
batch), on a copy of the network. The highest scores are kept by the shared thresholding
(:mod:`gemminer.methods.scoring`): globally across layers (the original), or per layer with
``scope="layer"`` and a ``distribution``.

The copy scores in **eval mode** by default (``bn_mode="eval"``): BatchNorm normalizes
with its running statistics — for a fresh network mean 0 and variance 1, so it is the
identity up to its affine part and ε — and dropout is off. This is what
ganguli-lab/Synaptic-Flow does for every pruner: ``prune_loop`` in its ``prune.py`` calls
``model.eval()`` before ``pruner.score`` (unconditionally in its first versions; later
behind ``--prune-train-mode``, which defaults to False), so its SNIP and GraSP baselines
score in eval mode. Why it matters: in train mode the gradient also flows through the
batch mean and variance, and each weight's score depends on the rest of the batch.
``bn_mode="train"`` scores with batch statistics instead (Synaptic-Flow's
``--prune-train-mode True``); it only affects networks with BatchNorm (or dropout).
Either way the input network's mode and BatchNorm buffers are untouched: scoring runs on
a copy.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.nn import functional as F

from ._saliency import (
    check_bn_mode,
    check_positive_int,
    epochs_for,
    grads_or_zeros,
    scoring_copy,
    take_batches,
)
from .base import PruneContext
from .scoring import Scores, Thresholding, register_scorer


@dataclass(frozen=True)
class SnipSettings(Thresholding):
    """SNIP's settings; the defaults are the published method (global top-k)."""

    batches: int = 1
    """Training batches whose loss gradients are summed before scoring."""
    bn_mode: str = "eval"
    """"eval" (Synaptic-Flow: BatchNorm uses its running statistics, dropout off) or
    "train" (batch statistics); the mode of the scoring copy."""

    def __post_init__(self) -> None:
        super().__post_init__()
        check_positive_int("snip", "batches", self.batches)
        check_bn_mode("snip", self.bn_mode)


@register_scorer(
    "snip",
    settings=SnipSettings,
    default_init="kaiming_normal",
    description="SNIP (Lee et al. 2019): keep the largest |∂L/∂w ⊙ w|, one shot, global.",
)
def snip(ctx: PruneContext, settings: SnipSettings) -> Scores:
    """Score every prunable weight by |g ⊙ w|."""
    model, weights = scoring_copy(ctx.model, ctx.device, mode=settings.bn_mode)
    params = list(weights.values())
    total = [torch.zeros_like(w) for w in params]
    for x, y in take_batches(ctx.train_batches, settings.batches, ctx.device, "snip"):
        loss = F.cross_entropy(model(x), y)
        grads = torch.autograd.grad(loss, params, allow_unused=True)
        for acc, g in zip(total, grads_or_zeros(grads, params)):
            acc.add_(g)
    scores = {name: (g * w).detach().abs().cpu() for (name, w), g in zip(weights.items(), total)}
    return Scores(scores, epochs_for(ctx, settings.batches), settings.batches)
