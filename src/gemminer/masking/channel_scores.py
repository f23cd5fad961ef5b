"""Gem-Miner's optimization variables over channels: one score per channel, not per weight.

:func:`to_channel_model` gives every channel set of a model (:mod:`.channels`) a score
p ∈ [0, 1] and a flag q ∈ {0, 1} per channel, held by the set's producer layer as
``channel_scores`` (a parameter) and ``channel_flags`` (a buffer), so they are saved,
loaded, moved and optimized with the model. Every layer a set touches computes its
effective weight

    w ⊙ g[rows] ⊙ g[columns],  g = q ⊙ 1[p ≥ 0.5],

a producer and a depthwise convolution scaling their rows, the consumer its columns (each
channel's ``repeat`` columns after a flatten). The rounding is differentiated with the
straight-through estimator, as per weight: ∂L/∂p_c is the sum over the channel's weights
of ∂L/∂w_eff ⊙ w (⊙ the other gate), so a channel's score moves with everything it
touches. The weights stay frozen. :class:`ChannelGates` (reached from any gated layer,
:func:`channel_gates`) reads them all.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ..errors import MaskError
from .channels import COLUMNS, ROWS, ChannelSet, channel_mask
from .mask import Mask, prunable_modules
from .scores import THRESHOLD, convert_layers


class _RoundStraightThrough(torch.autograd.Function):
    """1[p ≥ 0.5] forward, identity backward."""

    @staticmethod
    def forward(ctx, scores: torch.Tensor) -> torch.Tensor:
        return (scores >= THRESHOLD).to(scores.dtype)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        return grad


class ChannelGates:
    """The scores and flags of every channel set, read from the sets' producer layers
    (``producers[i]`` holds set ``i``'s ``channel_scores`` and ``channel_flags``)."""

    def __init__(self, sets: Sequence[ChannelSet], producers: Sequence[nn.Module]) -> None:
        self.sets = tuple(sets)
        self.producers = tuple(producers)

    @property
    def scores(self) -> list[nn.Parameter]:
        return [m.channel_scores for m in self.producers]

    @property
    def flags(self) -> list[torch.Tensor]:
        return [m.channel_flags for m in self.producers]

    def gate(self, i: int) -> torch.Tensor:
        """q ⊙ 1[p ≥ 0.5] of set ``i``, differentiable in p (straight through)."""
        producer = self.producers[i]
        return _RoundStraightThrough.apply(producer.channel_scores) * producer.channel_flags

    def keep(self, rounded: bool = True) -> dict[str, torch.Tensor]:
        """Per set, the channels kept: rounded (q ⊙ 1[p ≥ 0.5]) or flagged (q)."""
        out = {}
        for s, p, q in zip(self.sets, self.scores, self.flags):
            kept = q.detach().bool()
            if rounded:
                kept = kept & (p.detach() >= THRESHOLD)
            out[s.name] = kept.cpu()
        return out


class _GatedLayer:
    """A layer whose weight is scaled by channel gates: rows by one set, columns by another
    (each optional)."""

    weight: nn.Parameter
    _gate_rows: int | None
    _gate_columns: tuple[int, int] | None

    def gates(self) -> ChannelGates:
        return self.__dict__["_gates"]

    def gated_weight(self) -> torch.Tensor:
        w = self.weight
        gates = self.gates()
        if self._gate_rows is not None:
            g = gates.gate(self._gate_rows).to(w.dtype)
            w = w * g.view(-1, *([1] * (w.dim() - 1)))
        if self._gate_columns is not None:
            i, repeat = self._gate_columns
            g = gates.gate(i).to(w.dtype)
            if repeat > 1:
                g = g.repeat_interleave(repeat)
            w = w * g.view(1, -1, *([1] * (w.dim() - 2)))
        return w


class GatedConv2d(_GatedLayer, nn.Conv2d):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(x, self.gated_weight(), self.bias)


class GatedLinear(_GatedLayer, nn.Linear):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.linear(x, self.gated_weight(), self.bias)


_GATED_CLASS: dict[type[nn.Module], type[nn.Module]] = {
    nn.Conv2d: GatedConv2d,
    nn.Linear: GatedLinear,
}


def to_channel_model(
    model: nn.Module, sets: Sequence[ChannelSet], generator: torch.Generator | None = None
) -> nn.Module:
    """Give ``model``'s channel ``sets`` scores and flags (in place; returns ``model``).

    Scores are drawn U[0, 1] from ``generator`` in the order of the sets; every parameter
    but the scores is frozen. Layers the sets touch scale their weights by the gates;
    the other prunable layers compute as before.
    """
    modules = dict(model.named_modules())
    producers = [modules[s.name] for s in sets]
    gates = ChannelGates(sets, producers)
    rows: dict[str, int] = {}
    columns: dict[str, tuple[int, int]] = {}
    for i, s in enumerate(sets):
        for m in s.members:
            if m.kind == ROWS:
                rows[m.module] = i
            elif m.kind == COLUMNS:
                columns[m.module] = (i, m.repeat)

    def attach(module: nn.Module) -> None:
        module.__dict__["_gates"] = gates
        module._gate_rows = None
        module._gate_columns = None

    convert_layers(model, _GATED_CLASS, attach)
    for name, module in prunable_modules(model).items():
        module._gate_rows = rows.get(name)
        module._gate_columns = columns.get(name)
    for s, producer in zip(sets, producers):
        like = producer.weight
        scores = torch.rand(s.size, generator=generator).to(like)
        producer.channel_scores = nn.Parameter(scores)
        producer.register_buffer("channel_flags", torch.ones_like(scores))
    return model


def channel_gates(model: nn.Module) -> ChannelGates:
    """The gates :func:`to_channel_model` gave ``model``."""
    for module in model.modules():
        gates = module.__dict__.get("_gates")
        if isinstance(gates, ChannelGates):
            return gates
    raise MaskError("the model has no channel gates; call to_channel_model first")


def gated_mask(model: nn.Module, rounded: bool = True) -> Mask:
    """The weight mask of a channel model's kept channels (rounded, or flagged)."""
    gates = channel_gates(model)
    return channel_mask(model, gates.sets, gates.keep(rounded))
