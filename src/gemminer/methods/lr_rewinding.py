"""Learning-rate rewinding (Renda, Frankle & Carbin 2020, "Comparing Rewinding and
Fine-tuning in Neural Network Pruning").

The iterative loop of IMP (:mod:`gemminer.methods.imp`) without weight rewinding: each
round trains, prunes ``prune_fraction`` of the remaining weights by global magnitude, and
the network keeps its trained weights; the next round retrains them with the original
learning-rate schedule from its start. The output weights are the trained weights after
the last pruning (pruned ones zeroed), so finetuning the ticket is the last retraining with
the original schedule.

This is a **prune-after-training** reference, not a ticket at initialization: its weights
are fully trained, so the pre-finetune accuracy and the sanity checks (which re-initialize
or reshuffle at initialization) do not apply to it as they do to lottery tickets.
"""

from __future__ import annotations

from dataclasses import dataclass

from .base import PruneContext, PruneResult, register_method
from .imp import (
    check_count,
    check_fraction,
    check_rounds,
    prune_iteratively,
    resolve_round_epochs,
    round_densities,
)


@dataclass(frozen=True)
class LrRewindingSettings:
    """Learning-rate rewinding (Renda et al. 2020).

    ``prune_fraction``: fraction of the remaining weights pruned per round (0.2).
    ``rounds``: 0 derives the number of rounds from ``prune_fraction``; R > 0 uses exactly
    R rounds of 1 − density^(1/R) each. ``round_epochs``: training epochs per round (the
    full schedule is replayed each round); 0 = the method's epoch budget.
    """

    prune_fraction: float = 0.2
    rounds: int = 0
    round_epochs: int = 0

    def __post_init__(self) -> None:
        check_fraction(self.prune_fraction)
        check_count(self.rounds, "rounds", "derived from prune_fraction")
        check_count(self.round_epochs, "round_epochs", "the method's epoch budget")


@register_method(
    "lr-rewinding",
    settings=LrRewindingSettings,
    default_init="kaiming_normal",
    description="learning-rate rewinding (Renda et al. 2020): prune after training, no ticket",
    weight_decay=1e-4,
    validate=check_rounds,
)
def run_lr_rewinding(ctx: PruneContext, settings: LrRewindingSettings) -> PruneResult:
    """Train, prune globally by |w|, keep the trained weights, replay the LR schedule."""
    epochs = resolve_round_epochs(settings.round_epochs, ctx.epochs)
    densities = round_densities(ctx.density, settings.prune_fraction, settings.rounds)
    return prune_iteratively(ctx, densities, epochs, rewind_step=None)
