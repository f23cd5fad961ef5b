"""Gem-Miner's settings: the method's own (:class:`GemMinerSettings`: what ``--period``,
``--lambda``, ``--regularizer`` and ``--set`` give) and a whole mining configuration
(:class:`MineConfig`: the same fields plus the budget — density, epochs, batch size and
optimizer — checked together, e.g. the period no longer than the epochs).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from ...masking.channel_scores import CHANNEL_GRADIENTS
from ...masking.channels import CHANNEL_RANKS, STREAMS
from ...settings.config import (
    CALIBRATION_BATCHES,
    FINETUNE_MASKS,
    FREEZE_ORDERS,
    FREEZE_SCHEDULES,
    GRANULARITIES,
    REGULARIZERS,
    PruneConfig,
    check_choice,
    check_whole,
    require,
)


@dataclass(frozen=True)
class GemMinerSettings:
    """Gem-Miner's own settings; the defaults are Table 8's row for density 1.44 %.

    ``period`` T: freeze every T epochs; ``lam`` λ: weight of the ``regularizer`` on the
    scores; ``bn_recalibration_batches``: training batches used to re-estimate BatchNorm
    statistics of the current mask before each evaluation.
    ``collapse_guard`` (on by default) keeps at least one weight per output unit in every
    layer, or ``min_layer_density`` of it if larger; ``auto_lambda`` adapts λ every epoch
    (beyond the paper; see :func:`adapt_lambda`).
    ``freeze_schedule``: ``"authors"`` (default, the authors' code) or ``"algorithm1"``
    (the printed algorithm), see the module docstring. ``finetune_mask``: ``"flags"``
    (default, the authors' ``unflag_before_finetune: True``) or ``"rounded"`` (Algorithm
    1's output r(p) ⊙ q). ``freeze_order``: ``"highest"`` freezes the highest scores
    instead of the lowest — the authors' score-inversion sanity check.
    ``granularity``: ``"weight"`` (the paper's) or ``"channel"`` (beyond the paper: a score
    per channel, the target a fraction of the multiply-adds; :mod:`.spaces`), whose
    ``channel_gradient`` is ``"mean"`` (a channel's straight-through gradient averaged
    over the weights it gates, so that under SGD a channel's score moves at one weight's
    pace and the weight-level LR and λ carry over), ``"sum"`` (see
    :mod:`gemminer.masking.channel_scores`) or ``"auto"`` (default, :func:`channel_gradient`:
    the mean under SGD, the sum under Adam); its ``streams`` are
    ``"joined"`` (default: a residual stream's channels pruned together) or ``"whole"``
    (kept whole, only the channels between additions mined;
    :func:`gemminer.masking.channels.channel_sets`); its ``channel_rank`` is ``"score"``
    (default: each freeze drops the lowest-scored channels) or ``"score_per_flop"`` (the
    lowest scores per multiply-add a channel of their set costs, so that dear channels —
    the residual streams', the first stage's — go before cheap ones of equal score;
    :func:`gemminer.masking.channels.keep_lowest_removed`).
    ``granularity="channel_from_weight"`` (beyond the paper) mines per weight as the paper
    does, at the target as a density, then keeps channels to the target fraction of the
    multiply-adds: each set's width in proportion to the square root of the fraction of
    its weights the mined ticket keeps, inside it the channels the ticket keeps most of
    (:func:`gemminer.methods.channel_scoring.channels_from_ticket`); its ``streams`` are
    as above.
    """

    period: int = 5
    lam: float = 1e-4
    regularizer: str = "l2"
    bn_recalibration_batches: int = CALIBRATION_BATCHES
    collapse_guard: bool = True
    min_layer_density: float = 0.0
    auto_lambda: bool = False
    freeze_schedule: str = "authors"
    finetune_mask: str = "flags"
    freeze_order: str = "lowest"
    granularity: str = "weight"
    channel_gradient: str = "auto"
    streams: str = "joined"
    channel_rank: str = "score"

    def __post_init__(self) -> None:
        check_whole(self.period, 1, "period")
        require(math.isfinite(self.lam) and self.lam >= 0, f"lambda must be >= 0, got {self.lam}")
        check_choice(self.regularizer, REGULARIZERS, "regularizer")
        check_whole(self.bn_recalibration_batches, 0, "bn_recalibration_batches")
        require(
            0 <= self.min_layer_density <= 1,
            f"min_layer_density must lie in [0, 1], got {self.min_layer_density}",
        )
        require(
            not self.auto_lambda or self.lam > 0,
            "auto_lambda adapts a positive lambda; give --lambda > 0",
        )
        check_choice(self.freeze_schedule, FREEZE_SCHEDULES, "freeze_schedule")
        check_choice(self.finetune_mask, FINETUNE_MASKS, "finetune_mask")
        check_choice(self.freeze_order, FREEZE_ORDERS, "freeze_order")
        check_choice(self.granularity, GRANULARITIES, "granularity")
        check_choice(self.channel_gradient, ("auto", *CHANNEL_GRADIENTS), "channel_gradient")
        check_choice(self.streams, STREAMS, "streams")
        check_choice(self.channel_rank, CHANNEL_RANKS, "channel_rank")
        require(
            self.granularity == "channel"
            or (self.channel_gradient == "auto" and self.channel_rank == "score"),
            "channel_gradient and channel_rank apply to granularity=channel only",
        )
        require(
            self.granularity != "weight" or self.streams == "joined",
            "streams applies to granularity=channel or channel_from_weight only",
        )


@dataclass(frozen=True)
class MineConfig(GemMinerSettings, PruneConfig):
    """Gem-Miner's whole configuration: the budget every method shares
    (:class:`~gemminer.settings.config.PruneConfig`: ``density``, the target fraction of
    weights kept; ``epochs``; ``batch_size``; ``optim``) and the method's own settings
    (:class:`GemMinerSettings`), checked together. The flag density falls geometrically
    to ``density``, frozen every ``period`` of the ``epochs`` (Algorithm 1, by default on
    the authors' freezing schedule). ``density=1`` with ``lam=0`` is Gem-Miner(0): no
    freezing, no regularization.
    """

    def __post_init__(self) -> None:
        PruneConfig.__post_init__(self)
        GemMinerSettings.__post_init__(self)
        check_whole(self.epochs, 1, "epochs")
        require(
            self.period <= self.epochs,
            f"period {self.period} is longer than the {self.epochs} mining epochs",
        )


def channel_gradient(setting: str, optimizer: str) -> str:
    """How channel Gem-Miner's scores gather their weights' gradients: the
    ``channel_gradient`` ``setting``, or for ``"auto"`` the mean under the ``optimizer``
    SGD and the sum under Adam.

    Under SGD the mean makes a channel's score move at one weight's pace, whatever the
    number of weights it gates (288 to 6,085 in ResNet-20), where the sum let the widest
    gates race to 0. Adam already takes steps of one size for every score, so there the
    mean would only shrink the loss's gradient against λ's pull 2λp by that count: on
    VGG-16 at initialization the averaged gradients (1e-7 to 2e-5 per set, mean magnitude)
    lie below 2λp ≈ 1.1e-5 of its 8-epoch recipe, and Adam, stepping 0.01 along them,
    closed nearly every channel in the first epoch (1.17 % of the multiply-adds still
    rounded to 1, the collapse guard's channels; 0.01 % after the third). Summed they are
    1e-3 to 2e-2, and the loss leads (benchmarks/results/channel_gradients.md).
    """
    if setting != "auto":
        return setting
    return "mean" if optimizer == "sgd" else "sum"


def _values(obj: object, kind: type) -> dict:
    return {f.name: getattr(obj, f.name) for f in dataclasses.fields(kind)}


def mine_config(prune: PruneConfig, settings: GemMinerSettings) -> MineConfig:
    """The full Gem-Miner configuration of a run (validated: e.g. period <= epochs); the
    method's registered ``validate``."""
    return MineConfig(**_values(prune, PruneConfig), **_values(settings, GemMinerSettings))
