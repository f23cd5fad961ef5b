"""Channels that can be pruned as a whole: their masks, what they cost, how to drop them.

The channel sets of a model are found by tracing it (:mod:`.channel_graph`): in the CIFAR
ResNets every block's inner channels (``conv1``'s outputs) and the residual stream of
every stage — what the stem or a stage's first block and every block after it add into
one channel, followed through the zero-padding shortcuts — in VGG every convolution's
outputs but the classifier's, in MobileNet-V2 every block's expanded channels (through
the depthwise convolution) and the stream of each stage.

Dropping a channel zeroes its rows in every producer and depthwise convolution and its
columns in every layer that reads it, so the network's output no longer depends on it
whatever the BatchNorm statistics on the way; the masked network computes what a
narrower dense network computes (:mod:`gemminer.rundir.compact`), and the multiply-adds a
dropped channel saves are those of its rows and columns (:class:`ChannelCost`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
from torch import nn

from ..errors import MaskError
from .channel_graph import (
    CHANNELWISE_MODULES,
    COLUMNS,
    FEATURES,
    INPUTS,
    OUTPUTS,
    ROWS,
    STREAMS,
    ChannelSet,
    Member,
    channel_sets,
    is_depthwise,
)
from .flops import weight_uses
from .mask import Mask, count_dense, prunable_modules, weight_name

#: How channels are ranked for dropping (:func:`keep_lowest_removed`): by their scores, or
#: by their scores per multiply-add a channel of their set costs.
CHANNEL_RANKS = ("score", "score_per_flop")

__all__ = [
    "CHANNELWISE_MODULES",
    "COLUMNS",
    "FEATURES",
    "INPUTS",
    "OUTPUTS",
    "ROWS",
    "STREAMS",
    "CHANNEL_RANKS",
    "ChannelCost",
    "ChannelSet",
    "Member",
    "channel_mask",
    "channel_sets",
    "check_sets",
    "cost_of",
    "is_depthwise",
    "keep_lowest_removed",
    "kept_per_channel",
    "live_channels",
]


def check_sets(sets: Sequence[ChannelSet], model: nn.Module, what: str) -> None:
    """A :class:`MaskError` unless ``model`` has channel sets (``what``: who needs them)."""
    if not sets:
        raise MaskError(
            f"{what}: {type(model).__name__} has no channels that can be pruned as a whole "
            "(every layer's outputs are added, concatenated or returned)"
        )


def _drop(mask: torch.Tensor, member: Member, dropped: torch.Tensor) -> None:
    where = member.positions(dropped.nonzero().flatten())
    if member.kind == ROWS:
        mask[where] = False
    else:
        mask[:, where] = False


def channel_mask(
    model: nn.Module, sets: Sequence[ChannelSet], keep: Mapping[str, torch.Tensor]
) -> Mask:
    """The weight mask of ``model`` that drops the channels ``keep`` (set name → boolean
    per channel; a set not named keeps every channel) does not keep: their rows and
    columns are zero, every other weight kept."""
    weights = {weight_name(n): m.weight for n, m in prunable_modules(model).items()}
    tensors = {n: torch.ones(w.shape, dtype=torch.bool) for n, w in weights.items()}
    for s in sets:
        if s.name not in keep:
            continue
        kept = keep[s.name].detach().cpu().bool().flatten()
        if kept.numel() != s.size:
            raise MaskError(f"channel set {s.name} has {s.size} channels, got {kept.numel()}")
        for member in s.members:
            if member.kind in (ROWS, COLUMNS):
                _drop(tensors[weight_name(member.module)], member, ~kept)
    return Mask(tensors, dense_values=count_dense(model))


def live_channels(
    mask: Mapping[str, torch.Tensor], sets: Sequence[ChannelSet]
) -> dict[str, torch.Tensor]:
    """For every set, which channels the network under ``mask`` still reads: those with a
    reader's column not all zero (a channel no layer reads contributes nothing, whatever
    its producers compute)."""
    live = {}
    for s in sets:
        alive = torch.zeros(s.size, dtype=torch.bool)
        for member in s.weights(COLUMNS):
            alive |= _per_channel(mask[weight_name(member.module)].bool(), member, s).any(1)
        live[s.name] = alive
    return live


def _per_channel(weight: torch.Tensor, member: Member, s: ChannelSet) -> torch.Tensor:
    """The entries of ``weight`` that set ``s``'s channels gate in ``member`` (its rows, or
    its columns, ``repeat`` per channel), one row per channel."""
    if member.kind == ROWS:
        return weight[member.positions()].reshape(s.size, -1)
    return weight.transpose(0, 1)[member.positions()].reshape(s.size, -1)


def kept_per_channel(
    mask: Mapping[str, torch.Tensor], s: ChannelSet
) -> tuple[torch.Tensor, torch.Tensor]:
    """For every channel of set ``s``, how many of the weights it gates (its rows and
    columns in every layer it touches) ``mask`` keeps, and how many it gates: two float
    tensors of ``s.size`` (the second the same for every channel)."""
    kept = torch.zeros(s.size)
    total = torch.zeros(s.size)
    for member in s.members:
        if member.kind in (ROWS, COLUMNS):
            entries = _per_channel(mask[weight_name(member.module)].detach().cpu(), member, s)
            kept += entries.bool().sum(1).float()
            total += entries.shape[1]
    return kept, total


class ChannelCost:
    """The multiply-adds per image of a network as a function of the channels kept.

    Each prunable layer costs ``rows × columns × per_entry``: its output rows (those of no
    set, plus the kept channels of every set with rows in it), its input columns
    (likewise, a set's channel counting ``repeat`` columns) and, per weight entry, the
    kernel size times the positions it is used at
    (:func:`~gemminer.masking.flops.weight_uses`). Exactly what
    :func:`~gemminer.masking.flops.count_flops` counts for :func:`channel_mask`'s mask.
    """

    def __init__(
        self, model: nn.Module, sets: Sequence[ChannelSet], uses: Mapping[str, int]
    ) -> None:
        self.sets = tuple(sets)
        self.index = {s.name: i for i, s in enumerate(self.sets)}
        owned: dict[tuple[str, str], list[tuple[int, int]]] = {}
        for i, s in enumerate(self.sets):
            for m in s.members:
                owned.setdefault((m.module, m.kind), []).append((i, m.repeat))
        self.layers = []
        for name, module in prunable_modules(model).items():
            w = module.weight
            per_entry = math.prod(w.shape[2:]) * uses.get(weight_name(name), 0)
            rows = owned.get((name, ROWS), [])
            cols = owned.get((name, COLUMNS), [])
            free_rows = w.shape[0] - sum(self.sets[i].size for i, _ in rows)
            free_cols = w.shape[1] - sum(self.sets[i].size * r for i, r in cols)
            self.layers.append((free_rows, rows, free_cols, cols, per_entry))
        self.dense = self.flops([s.size for s in self.sets])

    def flops(self, kept: Sequence[int] | torch.Tensor) -> int:
        """Multiply-adds with ``kept[i]`` channels of set i kept."""
        kept = [int(k) for k in kept]
        total = 0
        for free_rows, rows, free_cols, cols, per_entry in self.layers:
            r = free_rows + sum(kept[i] for i, _ in rows)
            c = free_cols + sum(kept[i] * repeat for i, repeat in cols)
            total += r * c * per_entry
        return total

    def saved_per_channel(self, kept: Sequence[int] | torch.Tensor) -> list[int]:
        """Per set, the multiply-adds one channel fewer saves with ``kept[i]`` channels of
        set i kept (its rows and columns at the other sets' widths); 0 for an empty set."""
        kept = [int(k) for k in kept]
        now = self.flops(kept)
        return [
            now - self.flops([k - (j == i) for j, k in enumerate(kept)]) if kept[i] else 0
            for i in range(len(kept))
        ]

    def of(self, keep: Mapping[str, torch.Tensor]) -> int:
        """Multiply-adds of the channels ``keep`` says (set name → booleans)."""
        return self.flops(
            [int(keep[s.name].sum()) if s.name in keep else s.size for s in self.sets]
        )

    def fraction(self, keep: Mapping[str, torch.Tensor]) -> float:
        return self.of(keep) / self.dense

    @property
    def floor(self) -> float:
        """The smallest fraction of the multiply-adds reachable with one channel kept per
        set."""
        return self.flops([1] * len(self.sets)) / self.dense


def cost_of(
    model: nn.Module, input_shape: Sequence[int], streams: str = "joined"
) -> tuple[tuple[ChannelSet, ...], ChannelCost]:
    """``model``'s channel sets (``streams``: see :func:`channel_sets`) and their
    :class:`ChannelCost` for inputs of ``input_shape``."""
    sets = channel_sets(model, input_shape, streams)
    return sets, ChannelCost(model, sets, weight_uses(model, input_shape))


def keep_lowest_removed(
    cost: ChannelCost,
    scores: Mapping[str, torch.Tensor],
    active: Mapping[str, torch.Tensor],
    budget: float,
    floors: Mapping[str, int] | None = None,
    per_flop: bool = False,
) -> dict[str, torch.Tensor]:
    """Drop the ``active`` channels with the lowest ``scores``, globally and one by one,
    until the multiply-adds are at most ``budget`` × dense; returns the channels that stay
    active. ``floors`` (set → count) keeps each set's highest-scored channels. When the
    budget cannot be met, every channel but the floors' is dropped.

    ``per_flop`` ranks by score per multiply-add instead (a greedy knapsack): each
    channel's score divided by what dropping one channel of its set saves at the active
    widths (:meth:`ChannelCost.saved_per_channel`), so of two equal scores the dearer
    channel goes first. Within a set the order is the scores'.

    Channels with equal scores (scores held at 0 by the projection tie in numbers) go in
    turn across the sets, each set's last channels first: the k-th of a set of n before
    the j-th of a set of m when (k + ½)/n > (j + ½)/m, so that ties thin every set alike
    (a uniform allocation, what no information gives) and keep each set's first channels.
    """
    names = [s.name for s in cost.sets]
    flat_scores = torch.cat([scores[n].detach().float().cpu().flatten() for n in names])
    flat_active = torch.cat([active[n].detach().cpu().bool().flatten() for n in names])
    owner = torch.cat([torch.full((s.size,), i, dtype=torch.long) for i, s in enumerate(cost.sets)])
    protected = torch.zeros_like(flat_active)
    if floors:
        offset = 0
        for s in cost.sets:
            k = min(floors.get(s.name, 0), int(active[s.name].sum()))
            part = torch.where(
                flat_active[offset : offset + s.size],
                flat_scores[offset : offset + s.size],
                -math.inf,
            )
            if k > 0:
                protected[offset + torch.sort(part, descending=True, stable=True).indices[:k]] = (
                    True
                )
            offset += s.size
    counts = torch.tensor([int(active[n].sum()) for n in names])
    if per_flop:
        saved = torch.tensor(cost.saved_per_channel(counts), dtype=torch.float64)
        flat_scores = (flat_scores.double() / saved.clamp(min=1)[owner]).float()
    candidates = torch.where(flat_active & ~protected, flat_scores, math.inf)
    spread = torch.cat([(torch.arange(s.size) + 0.5) / s.size for s in cost.sets])
    turn = torch.sort(spread, descending=True, stable=True).indices  # ties: in turn
    order = turn[torch.sort(candidates[turn], stable=True).indices]
    order = order[: int((candidates < math.inf).sum())]
    target = budget * cost.dense

    def flops_after(k: int) -> int:
        removed = torch.bincount(owner[order[:k]], minlength=len(names))
        return cost.flops(counts - removed)

    lo, hi = 0, len(order)
    if flops_after(0) <= target:
        hi = 0
    else:
        while lo < hi:  # the fewest drops that meet the budget (flops fall with k)
            mid = (lo + hi) // 2
            if flops_after(mid) <= target:
                hi = mid
            else:
                lo = mid + 1
    drop = torch.zeros_like(flat_active)
    drop[order[:hi]] = True
    stay = flat_active & ~drop
    return dict(zip(names, stay.split([s.size for s in cost.sets])))
