"""Channel pruning at a multiply-add budget: a scorer scores channels, shared code keeps them.

The channel counterpart of :mod:`gemminer.methods.scoring`. A channel-pruning method is a
function ``score(ctx, settings) -> ChannelScores`` registered with
:func:`register_channel_scorer`: one score per channel of every channel set of the model
(:mod:`gemminer.masking.channels`; a set is named after its first producer; higher =
keep).
The registered method's target, ``ctx.density``, is **the fraction of the forward
multiply-adds kept** (``budget="flops"``), not of the weights; the shared code keeps the
highest-scored channels so that the multiply-adds per image are at most the target, as
the settings' ``scope`` says:

* ``scope="layer"`` (the default): every set keeps the same fraction q of its channels,
  ``round(q · size)`` (halves up), at least one. q is the largest fraction whose
  multiply-adds (:class:`~gemminer.masking.channels.ChannelCost`) are at most the target,
  found by bisection over the fractions where some set's count changes, so one more step
  of q (one more channel in a set, or in every set of the same size) would pass it.
* ``scope="global"``: the lowest-scored channels across all sets are dropped one by one
  until the multiply-adds are at most the target
  (:func:`~gemminer.masking.channels.keep_lowest_removed`), every set keeping its best
  channel; the last channel dropped would pass the target if kept.

A target below the model's floor (one channel in every set) is a :class:`ConfigError`
naming the smallest reachable fraction; a model without channel sets, or that torch.fx
cannot trace, a :class:`~gemminer.errors.MaskError`.

The mask is :func:`~gemminer.masking.channels.channel_mask`'s: dropped channels' producer
rows, depthwise rows and consumer columns are zero, every other weight kept.
``PruneResult.extra`` holds ``channels_kept`` and ``channels_total`` (set → count).

**Scores and score inversion.** ``PruneResult.scores`` (scores.pt) are per weight, keyed
like the mask (:func:`weight_scores`): a set's rows (producers, depthwise convolutions)
hold its channels' scores, the columns reading a set the same where the layer holds no
set's rows, other weights 0; :func:`channel_values` reads them back.
:func:`invert_channels` keeps the *lowest*-scored channels at the same count per set —
the channel-level score inversion, which ``gemminer sanity RUN --check invert-posthoc``
applies to a channel ticket (a layer that reads one set and holds another's rows, as a
ResNet block's ``conv2``, would not be inverted whole weight by weight);
:func:`shuffle_channels` keeps as many channels per set, drawn at random: the
channel-level shuffle of ``--check shuffle`` (a per-weight shuffle would leave no channel
whole).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

import torch
from torch import nn

from ..errors import ConfigError, MaskError
from ..masking import Mask, prunable_modules, weight_name
from ..masking.channels import (
    COLUMNS,
    ROWS,
    STREAMS,
    ChannelCost,
    ChannelSet,
    channel_mask,
    channel_sets,
    check_sets,
    cost_of,
    keep_lowest_removed,
    kept_per_channel,
    live_channels,
)
from .base import PruneContext, PruneResult, register_method

CHANNEL_SCOPES = ("layer", "global")


@dataclass
class ChannelScores:
    """What a channel scorer returns: ``scores``, set name → one score per channel (higher
    = keep; names of other layers are ignored), the training it spent (``epochs``,
    optimizer ``iterations``), the ``weights`` of its ticket when they are not the
    initialization (a state dict of the plain model's parameters; pruned ones are zeroed
    by the shared code) and its training records (``history``)."""

    scores: dict[str, torch.Tensor]
    epochs: float = 0.0
    iterations: int = 0
    weights: dict[str, torch.Tensor] | None = None
    history: list[dict] = field(default_factory=list)


@dataclass(frozen=True)
class ChannelThresholding:
    """Where a channel scorer's mask keeps the highest scores (base of its settings).

    ``scope``: ``"layer"`` (every channel set keeps the same fraction of its channels) or
    ``"global"`` (the lowest scores across all sets are dropped until the multiply-add
    target is met, one channel per set kept). ``streams``: ``"joined"`` (a residual
    stream's channels are pruned together across the layers adding into it) or ``"whole"``
    (streams kept whole, only the channels between additions pruned;
    :func:`gemminer.masking.channels.channel_sets`).
    """

    scope: str = "layer"
    streams: str = "joined"

    def __post_init__(self) -> None:
        if self.scope not in CHANNEL_SCOPES:
            raise ConfigError(
                f"unknown scope {self.scope!r}; valid scopes: {', '.join(CHANNEL_SCOPES)}"
            )
        if self.streams not in STREAMS:
            raise ConfigError(
                f"unknown streams {self.streams!r}; valid values: {', '.join(STREAMS)}"
            )


# The model's channels ------------------------------------------------------------------
def input_shape_of(ctx: PruneContext, method: str) -> tuple[int, ...]:
    """``ctx.input_shape``, which the multiply-adds are counted for; a ConfigError if unset."""
    if ctx.input_shape is None:
        raise ConfigError(
            f"{method} prunes to a fraction of the multiply-adds, which needs the input "
            "shape: set PruneContext.input_shape (one input's channels, height, width)"
        )
    return tuple(ctx.input_shape)


def sets_of(ctx: PruneContext, method: str, streams: str = "joined") -> tuple[ChannelSet, ...]:
    """The channel sets of ``ctx.model`` (a MaskError if it has none, naming ``method``)."""
    sets = channel_sets(ctx.model, input_shape_of(ctx, method), streams)
    check_sets(sets, ctx.model, method)
    return sets


def check_target(method: str, density: float, cost: ChannelCost) -> None:
    """A ConfigError unless ``density`` is a fraction in (0, 1] the channel sets can reach
    (at least :attr:`ChannelCost.floor`: one channel kept in every set)."""
    if not (isinstance(density, (int, float)) and 0 < density <= 1):
        raise ConfigError(
            f"{method}: the target must lie in (0, 1] (a fraction of the multiply-adds), "
            f"got {density!r}"
        )
    if cost.flops([1] * len(cost.sets)) > density * cost.dense:
        enough = math.ceil(cost.floor * 1e6) / 1e6  # rounded up: a target that is reachable
        raise ConfigError(
            f"{method}: a multiply-add target of {density:.6g} is below {cost.floor:.6g}, the "
            f"smallest fraction reachable (one channel kept in each of the {len(cost.sets)} "
            f"channel sets); raise --density to at least {enough:g}"
        )


# Thresholds ----------------------------------------------------------------------------
def uniform_counts(
    cost: ChannelCost, density: float, shares: Sequence[float] | None = None
) -> list[int]:
    """Channels kept per set (in ``cost.sets``' order) when every set keeps the same
    fraction q of its channels, ``max(1, round(q · size))`` with halves rounded up, at the
    largest q whose multiply-adds are at most ``density`` × dense. The target must be
    reachable (:func:`check_target`).

    ``shares`` (one per set, >= 0): set i keeps ``min(size, max(1, round(q · shares[i] ·
    size)))`` instead, so the sets' widths stand in the ratio of their shares until one is
    whole; the default, equal shares, is the uniform fraction."""
    sizes = [s.size for s in cost.sets]
    target = density * cost.dense
    if cost.flops(sizes) <= target:
        return sizes
    # exact fractions, so sets whose steps coincide (e.g. of equal sizes) step together
    scale = [n * Fraction(1 if shares is None else shares[i]) for i, n in enumerate(sizes)]

    def counts(q: Fraction) -> list[int]:
        return [min(n, max(1, math.floor(q * a + Fraction(1, 2)))) for n, a in zip(sizes, scale)]

    # every fraction where a count steps up: (j + ½) / (share · n), set j → j + 1
    steps = sorted(
        {Fraction(2 * j + 1, 2) / a for n, a in zip(sizes, scale) if a > 0 for j in range(1, n)}
    )
    lo, hi = 0, len(steps)  # the steps that fit: steps[:lo] do, steps[hi:] do not
    while lo < hi:
        mid = (lo + hi) // 2
        if cost.flops(counts(steps[mid])) <= target:
            lo = mid + 1
        else:
            hi = mid
    return counts(steps[lo - 1]) if lo > 0 else [1] * len(sizes)


def top_channels(scores: torch.Tensor, count: int) -> torch.Tensor:
    """Booleans keeping the ``count`` highest ``scores`` (ties: the earlier channel)."""
    keep = torch.zeros(scores.numel(), dtype=torch.bool)
    keep[torch.sort(scores, descending=True, stable=True).indices[:count]] = True
    return keep


def keep_channels(
    cost: ChannelCost, scores: Mapping[str, torch.Tensor], density: float, scope: str
) -> dict[str, torch.Tensor]:
    """Set name → booleans: the channels kept at ``density`` of the multiply-adds, per
    ``scope`` (see the module docstring); the target must be reachable."""
    if scope == "layer":
        counts = uniform_counts(cost, density)
        return {s.name: top_channels(scores[s.name], k) for s, k in zip(cost.sets, counts)}
    active = {s.name: torch.ones(s.size, dtype=torch.bool) for s in cost.sets}
    floors = {s.name: 1 for s in cost.sets}
    return keep_lowest_removed(cost, scores, active, density, floors)


def channels_from_ticket(
    model: nn.Module, cost: ChannelCost, ticket: Mapping[str, torch.Tensor], density: float
) -> tuple[Mask, dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """The channel mask at ``density`` of the multiply-adds that follows a per-weight
    ``ticket`` of ``model`` (weight name → booleans): every set's width in proportion to
    √ρ, ρ being the fraction of the set's weights (its channels' rows and columns,
    :func:`~gemminer.masking.channels.kept_per_channel`) the ticket keeps — so a layer
    between two sets of like ρ keeps about ρ of its weights — scaled to the target
    (:func:`uniform_counts` with these shares); inside a set, the channels of which the
    ticket keeps the largest fraction (ties: the earlier). Returns the mask, the kept
    channels (set name → booleans) and those fractions (set name → one per channel)."""
    check_target("a channel ticket", density, cost)
    fractions, shares = {}, []
    for s in cost.sets:
        kept, total = kept_per_channel(ticket, s)
        fractions[s.name] = kept / total.clamp(min=1)
        shares.append(math.sqrt(float(kept.sum() / total.sum().clamp(min=1))))
    counts = uniform_counts(cost, density, shares)
    keep = {s.name: top_channels(fractions[s.name], k) for s, k in zip(cost.sets, counts)}
    return channel_mask(model, cost.sets, keep), keep, fractions


def _checked(found: Mapping[str, torch.Tensor], sets: Sequence[ChannelSet], method: str) -> dict:
    """Each set's scores as a flat float tensor on the CPU; a MaskError if one is missing
    or of the wrong size."""
    out = {}
    for s in sets:
        if s.name not in found:
            raise MaskError(f"{method} scored no channels of the channel set {s.name}")
        score = found[s.name].detach().float().cpu().flatten()
        if score.numel() != s.size:
            raise MaskError(
                f"{method} gave {score.numel()} scores for the {s.size} channels of {s.name}"
            )
        out[s.name] = score
    return out


# Per-weight scores and their inversion ---------------------------------------------------
def _broadcast(values: torch.Tensor, shape: torch.Size, dim: int) -> torch.Tensor:
    view = [1] * len(shape)
    view[dim] = -1
    return values.view(view).expand(shape)


def weight_scores(
    model: nn.Module, sets: Sequence[ChannelSet], scores: Mapping[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    """Per-weight scores keyed like the mask (see the module docstring): a set's producer
    and depthwise rows hold its channels' scores, a consumer's columns (where the layer
    produces no set) the scores of the channels they read, other weights 0."""
    out = {weight_name(n): torch.zeros(m.weight.shape) for n, m in prunable_modules(model).items()}
    for kind in (COLUMNS, ROWS):  # rows last: a layer that produces a set holds its rows'
        for s in sets:
            for member in s.weights(kind):
                w = out[weight_name(member.module)]
                if kind == ROWS:
                    place = member.positions()
                    w[place] = _broadcast(scores[s.name], w[place].shape, 0)
                else:
                    place = member.positions()
                    cols = scores[s.name].repeat_interleave(member.repeat)
                    w[:, place] = _broadcast(cols, w[:, place].shape, 1)
    return out


def channel_values(per_weight: Mapping[str, torch.Tensor], s: ChannelSet) -> torch.Tensor:
    """Set ``s``'s channel scores read back from :func:`weight_scores`'s per-weight scores
    (its first producer's rows; a set without one: its first reader's columns)."""
    rows = s.weights(ROWS)
    if rows:
        w = per_weight[weight_name(rows[0].module)].detach().float().cpu()
        return w.flatten(1)[:, 0][rows[0].positions()]
    cols = s.weights(COLUMNS)[0]
    w = per_weight[weight_name(cols.module)].detach().float().cpu()
    return w.transpose(0, 1).flatten(1)[:, 0][cols.positions()][:: cols.repeat]


def reselect_channels(
    model: nn.Module,
    input_shape: Sequence[int],
    mask: Mapping[str, torch.Tensor],
    choose: Callable[[ChannelSet, int], torch.Tensor],
    streams: str = "joined",
) -> Mask:
    """A channel mask keeping, in every channel set, as many channels as ``mask`` keeps
    (those it still reads, :func:`~gemminer.masking.channels.live_channels`), the ones
    ``choose(set, count)`` marks (booleans, ``count`` of them): so the multiply-adds are
    the same. ``streams``: the sets ``mask`` was pruned over
    (:func:`~gemminer.masking.channels.channel_sets`)."""
    sets = channel_sets(model, input_shape, streams)
    live = live_channels(mask, sets)
    keep = {}
    for s in sets:
        count = int(live[s.name].sum())
        keep[s.name] = choose(s, count)
        if int(keep[s.name].sum()) != count:
            raise MaskError(f"kept {int(keep[s.name].sum())} channels of {s.name}, not {count}")
    return channel_mask(model, sets, keep)


def invert_channels(
    model: nn.Module,
    input_shape: Sequence[int],
    mask: Mapping[str, torch.Tensor],
    scores: Mapping[str, torch.Tensor],
    streams: str = "joined",
) -> Mask:
    """Channel-level score inversion of a channel-pruned ``mask``: every set keeps as many
    channels as ``mask`` does, the lowest-scored ones (ties: the earlier), with channel
    scores read from the producers' rows of the per-weight ``scores``
    (:func:`weight_scores`); so the multiply-adds are the same."""

    def lowest(s: ChannelSet, count: int) -> torch.Tensor:
        return top_channels(-channel_values(scores, s), count)

    return reselect_channels(model, input_shape, mask, lowest, streams)


def shuffle_channels(
    model: nn.Module,
    input_shape: Sequence[int],
    mask: Mapping[str, torch.Tensor],
    generator: torch.Generator,
    streams: str = "joined",
) -> Mask:
    """The channel-level shuffle of a channel-pruned ``mask``: every set keeps as many
    channels as ``mask`` does, drawn at random (set by set, in the sets' order, from
    ``generator``); so each set's width and the multiply-adds are the same, and only
    *which* channels were kept is forgotten."""

    def drawn(s: ChannelSet, count: int) -> torch.Tensor:
        keep = torch.zeros(s.size, dtype=torch.bool)
        keep[torch.randperm(s.size, generator=generator)[:count]] = True
        return keep

    return reselect_channels(model, input_shape, mask, drawn, streams)


# Registration --------------------------------------------------------------------------
ChannelScorer = Callable[[PruneContext, Any], ChannelScores]


def _masked(weights: Mapping[str, torch.Tensor], mask: Mask) -> dict[str, torch.Tensor]:
    out = {k: v.detach().cpu().clone() for k, v in weights.items()}
    for name, keep in mask.items():
        if name in out:
            out[name].mul_(keep.to(out[name].dtype))
    return out


def prune_channels(
    ctx: PruneContext, settings: Any, score: ChannelScorer, method: str
) -> PruneResult:
    """Score ``ctx.model``'s channels with ``score`` and keep the best at ``ctx.density`` of
    the multiply-adds, per ``settings.scope`` (the target is checked before scoring)."""
    sets, cost = cost_of(ctx.model, input_shape_of(ctx, method), settings.streams)
    check_sets(sets, ctx.model, method)
    check_target(method, ctx.density, cost)
    found = score(ctx, settings)
    channel = _checked(found.scores, sets, method)
    keep = keep_channels(cost, channel, ctx.density, settings.scope)
    mask = channel_mask(ctx.model, sets, keep)
    return PruneResult(
        mask=mask,
        epochs_to_mask=found.epochs,
        iterations_to_mask=found.iterations,
        weights=None if found.weights is None else _masked(found.weights, mask),
        scores=weight_scores(ctx.model, sets, channel),
        history=list(found.history),
        extra={
            "channels_kept": {s.name: int(keep[s.name].sum()) for s in sets},
            "channels_total": {s.name: s.size for s in sets},
        },
    )


def register_channel_scorer(name: str, **spec: Any) -> Callable[[ChannelScorer], ChannelScorer]:
    """Register ``score(ctx, settings) -> ChannelScores`` as the method ``name``, whose
    target is a fraction of the multiply-adds (``budget="flops"``): its mask keeps the
    highest-scored channels by :func:`prune_channels` (``settings`` must have ``scope``,
    e.g. by deriving from :class:`ChannelThresholding`). ``spec``: the other arguments of
    :func:`~gemminer.methods.base.register_method` (``trains`` defaults to False)."""

    def decorate(score: ChannelScorer) -> ChannelScorer:
        def run(ctx: PruneContext, settings: Any) -> PruneResult:
            return prune_channels(ctx, settings, score, name)

        run.__doc__ = score.__doc__
        register_method(name, budget=lambda s: "flops", **{"trains": False, **spec})(run)
        return score

    return decorate


__all__ = [
    "CHANNEL_SCOPES",
    "ChannelScores",
    "ChannelThresholding",
    "channel_values",
    "channels_from_ticket",
    "check_target",
    "input_shape_of",
    "invert_channels",
    "keep_channels",
    "prune_channels",
    "register_channel_scorer",
    "reselect_channels",
    "sets_of",
    "shuffle_channels",
    "uniform_counts",
    "weight_scores",
]
