"""GraSP: gradient signal preservation (Wang et al., ICLR 2020).

With g the loss gradient and H the Hessian, removing weight q (δ = −w_q e_q) changes the
squared gradient norm by ≈ 2 δᵀHg = −2 w_q (Hg)_q. The paper's score is
S(−w) = −w ⊙ Hg and it *removes* the weights with the largest S (their removal raises, or
least reduces, gradient flow). This module stores the negation, **w ⊙ Hg**, in
``PruneResult.scores`` and keeps the highest (globally by default; ``scope="layer"`` with a
``distribution`` per layer, :mod:`gemminer.methods.scoring`), so "higher = keep" holds and
the mask is the one of the reference code (alecwangcq/GraSP; ganguli-lab/Synaptic-Flow
``GraSP`` stores the same w ⊙ Hg and keeps its top). Scores are signed, not absolute values.

g is the gradient of the cross-entropy on logits divided by ``temperature`` (T = 200 in
the paper), summed over ``batches`` training batches and detached; Hg is the gradient of
gᵀ∇L over the same batches, by double backpropagation, on a copy of the network.

The copy scores in **eval mode** by default (``bn_mode="eval"``): BatchNorm normalizes
with its running statistics (for a fresh network the identity up to its affine part and
ε) and dropout is off, as in ganguli-lab/Synaptic-Flow, whose ``prune_loop`` (``prune.py``)
calls ``model.eval()`` before ``pruner.score`` for every pruner, GraSP included
(unconditionally in its first versions; later behind ``--prune-train-mode``, default
False). In train mode g and Hg would also flow through the batch mean and variance
(each sample's share then depends on the rest of its batch). ``bn_mode="train"`` scores with batch
statistics (Synaptic-Flow's ``--prune-train-mode True``), as alecwangcq/GraSP's own code
does for a freshly built network (it scores a copy in the mode it is given; its
``.eval()`` is commented out). Either way the input network's mode and BatchNorm buffers
are untouched: scoring runs on a copy.

Deviations from the original code: the batches are ``batches`` ordinary training batches
(default one, e.g. 128 CIFAR-10 images ≈ 13 per class) instead of a class-balanced draw
of 10 (paper) or 25 (code default) samples per class; the reference's re-initialization of
the linear layers with Xavier normal before scoring is not done (the mask is found for
the weights it will be trained from); the normalization of the scores by |Σ scores| is
dropped (it does not change the ranking).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.nn import functional as F

from ._saliency import (
    check_bn_mode,
    check_positive_float,
    check_positive_int,
    epochs_for,
    grads_or_zeros,
    scoring_copy,
    take_batches,
)
from .base import PruneContext
from .scoring import Scores, Thresholding, register_scorer


@dataclass(frozen=True)
class GraspSettings(Thresholding):
    """GraSP's settings; the defaults are the published method."""

    batches: int = 1
    """Training batches for g and Hg (the same batches for both)."""
    temperature: float = 200.0
    """The logits are divided by this before the cross-entropy (T in the paper)."""
    bn_mode: str = "eval"
    """"eval" (Synaptic-Flow: BatchNorm uses its running statistics, dropout off) or
    "train" (batch statistics, as alecwangcq/GraSP); the mode of the scoring copy."""

    def __post_init__(self) -> None:
        super().__post_init__()
        check_positive_int("grasp", "batches", self.batches)
        check_positive_float("grasp", "temperature", self.temperature)
        check_bn_mode("grasp", self.bn_mode)


@register_scorer(
    "grasp",
    settings=GraspSettings,
    default_init="kaiming_normal",
    description="GraSP (Wang et al. 2020): keep the largest w ⊙ Hg (gradient flow), global.",
)
def grasp(ctx: PruneContext, settings: GraspSettings) -> Scores:
    """Score every prunable weight by w ⊙ Hg."""
    model, weights = scoring_copy(ctx.model, ctx.device, mode=settings.bn_mode)
    params = list(weights.values())
    data = take_batches(ctx.train_batches, settings.batches, ctx.device, "grasp")
    t = float(settings.temperature)

    g = [torch.zeros_like(w) for w in params]
    for x, y in data:
        loss = F.cross_entropy(model(x) / t, y)
        grads = torch.autograd.grad(loss, params, allow_unused=True)
        for acc, gi in zip(g, grads_or_zeros(grads, params)):
            acc.add_(gi)

    hg = [torch.zeros_like(w) for w in params]
    for x, y in data:
        loss = F.cross_entropy(model(x) / t, y)
        grads = torch.autograd.grad(loss, params, create_graph=True, allow_unused=True)
        terms = [(gs * gi).sum() for gs, gi in zip(g, grads) if gi is not None and gi.requires_grad]
        if not terms:  # the gradient does not depend on the weights: H = 0
            continue
        second = torch.autograd.grad(torch.stack(terms).sum(), params, allow_unused=True)
        for acc, h in zip(hg, grads_or_zeros(second, params)):
            acc.add_(h)

    scores = {name: (w * h).detach().cpu() for (name, w), h in zip(weights.items(), hg)}
    return Scores(scores, epochs_for(ctx, settings.batches), settings.batches)
