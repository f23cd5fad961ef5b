"""L1-norm filter pruning (Li et al., ICLR 2017, "Pruning Filters for Efficient ConvNets")
at a multiply-add budget.

The score of a channel is the L1 norm of its producer's filter, Σ|w| over the filter's row
of the weight (a convolution's output channel, a linear layer's output feature; for a
residual stream's channel, summed over every layer that adds into it); the
shared channel thresholding (:mod:`.channel_scoring`) keeps the highest. Li et al. prune
each layer by a fraction, so ``scope="layer"`` is the default (every channel set keeps the
same fraction of its channels); ``scope="global"`` ranks the norms across sets.
``--density`` is the fraction of the multiply-adds kept.

``train_epochs``:

* 0 (the default): the norms of the initialization — a pruning-at-initialization
  baseline, whose ticket is the initial weights;
* N > 0: the dense network is first trained N epochs with the run's optimizer settings
  (``ctx.optim``, its schedule over the N epochs) in the shared training loop, which
  checkpoints every epoch and resumes; the norms are the trained filters' and the ticket
  keeps the trained weights (pruned ones zeroed), as Li et al. prune a trained network
  and retrain it: the *after-training* reference, not a ticket at initialization (its
  pre-finetune accuracy and the sanity checks do not mean what they mean for tickets).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from ..masking.channels import ROWS, ChannelSet
from ..training.loop import EpochStats
from ..training.optim import build_optimizer
from ..training.trainer import EvaluatingHooks, Trainer
from .base import PruneContext
from .channel_scoring import (
    ChannelScores,
    ChannelThresholding,
    register_channel_scorer,
    sets_of,
)
from .imp import check_count


@dataclass(frozen=True)
class L1FilterSettings(ChannelThresholding):
    """L1-norm filter pruning (Li et al. 2017).

    ``train_epochs``: 0 scores the filters at initialization (the ticket is the initial
    weights); N > 0 trains the dense network N epochs with the run's optimizer settings
    first, scores the trained filters and keeps the trained weights.
    ``scope``: ``"layer"`` (every layer keeps the same fraction of its channels) or
    ``"global"``.
    """

    train_epochs: int = 0

    def __post_init__(self) -> None:
        super().__post_init__()
        check_count(self.train_epochs, "train_epochs", "score the initialization")


class DenseTraining(EvaluatingHooks):
    """Plain training of every weight before pruning; each epoch's record holds its
    density (1: nothing pruned yet) and, when due, the accuracies on the evaluation
    splits."""

    stage = "train"
    where = "dense training"
    phase = "prune"

    def after_epoch(self, epoch: int, stats: EpochStats, lr: float) -> dict:
        record = super().after_epoch(epoch, stats, lr)
        record["density"] = 1.0
        if self.evaluating_after(epoch):
            record.update(self.accuracies())
        return record


def train_dense(ctx: PruneContext, epochs: int) -> tuple[nn.Module, list[dict]]:
    """A copy of ``ctx.model`` trained ``epochs`` epochs with ``ctx.optim`` (checkpointed
    in ``ctx.checkpoint`` and resumed from it), and the epochs' records."""
    model = copy.deepcopy(ctx.model).to(ctx.device)
    for p in model.parameters():
        p.requires_grad_(True)
    hooks = DenseTraining(
        model,
        ctx.device,
        epochs,
        eval_batches=ctx.eval_batches,
        eval_every=ctx.eval_every,
        runtime=ctx.runtime,
    )
    trainer = Trainer.scheduled(
        model,
        build_optimizer(model.parameters(), ctx.optim),
        ctx.optim,
        ctx.train_batches,
        ctx.device,
        epochs,
        hooks,
        checkpoint=ctx.checkpoint,
        on_epoch=ctx.on_epoch,
        progress=ctx.progress,
        runtime=ctx.runtime,
    )
    return model, trainer.fit()


def filter_norms(model: nn.Module, sets: Sequence[ChannelSet]) -> dict[str, torch.Tensor]:
    """Per channel set, each channel's Σ|w| over its filters: its rows in every layer that
    produces it (one filter for a block's inner channel; every layer adding into a
    residual stream channel for the stream's)."""
    modules = dict(model.named_modules())
    norms = {}
    for s in sets:
        total = torch.zeros(s.size)
        for member in s.weights(ROWS):
            rows = modules[member.module].weight.detach().abs().flatten(1).sum(1).float().cpu()
            total += rows[member.positions()]
        norms[s.name] = total
    return norms


@register_channel_scorer(
    "l1-filter",
    settings=L1FilterSettings,
    default_init="kaiming_normal",
    description="L1-norm filter pruning (Li et al. 2017): each layer keeps the same fraction "
    "of its filters, the largest by sum |w|, to a target fraction of the multiply-adds; at "
    "initialization, or after train_epochs of dense training (keeping the trained weights).",
    weight_decay=1e-4,
)
def score_filters_by_l1(ctx: PruneContext, settings: L1FilterSettings) -> ChannelScores:
    """The L1 norm of every filter, at initialization or after ``train_epochs``."""
    sets = sets_of(ctx, "l1-filter", settings.streams)
    if settings.train_epochs == 0:
        return ChannelScores(filter_norms(ctx.model, sets))
    model, history = train_dense(ctx, settings.train_epochs)
    return ChannelScores(
        filter_norms(model, sets),
        epochs=float(settings.train_epochs),
        iterations=settings.train_epochs * ctx.batches_per_epoch,
        weights={n: p.detach().cpu().clone() for n, p in model.named_parameters()},
        history=history,
    )
