"""Gem-Miner's optimization variables over channels: one score per channel, not per weight.

:func:`to_channel_model` gives every channel set of a model (:mod:`.channels`) a score
p ∈ [0, 1] and a flag q ∈ {0, 1} per channel, held by the set's producer layer as
``channel_scores`` (a parameter) and ``channel_flags`` (a buffer), so they are saved,
loaded, moved and optimized with the model. Every layer a set touches computes its
effective weight

    w ⊙ g[rows] ⊙ g[columns],  g = q ⊙ 1[p ≥ 0.5],

a producer and a depthwise convolution scaling their rows, the consumer its columns (each
channel's ``repeat`` columns after a flatten). The rounding is differentiated with the
straight-through estimator, as per weight: with ``gradient="sum"``, ∂L/∂p_c is the sum over
the channel's weights of ∂L/∂w_eff ⊙ w (⊙ the other gate), so a channel's score moves with
everything it touches; with ``gradient="mean"`` (Gem-Miner's default under SGD) it is
that sum divided by the number of weights the channel gates, so a channel's score moves at
the pace of one weight's score and the weight-level learning rates and λ carry over — summed, a
channel of ResNet-20's stem stream (6,085 weights) moves about 20 times faster than a
block's inner one (288), and the loss of a random network drives it to 0 first. The
weights stay frozen. :class:`ChannelGates` (reached from any gated layer,
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

#: How a channel score's straight-through gradient gathers its weights' (module docstring):
#: averaged or summed.
CHANNEL_GRADIENTS = ("mean", "sum")


class _RoundStraightThrough(torch.autograd.Function):
    """1[p ≥ 0.5] forward; backward the incoming gradient times ``scale``."""

    @staticmethod
    def forward(ctx, scores: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(scale)
        return (scores >= THRESHOLD).to(scores.dtype)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        (scale,) = ctx.saved_tensors
        return grad * scale.to(grad.dtype), None


class ChannelGates:
    """The scores and flags of every channel set, read from the modules holding them
    (``holders[i]`` holds set ``i``'s as ``channel_scores<suffix>`` and
    ``channel_flags<suffix>``: its first producer, see :func:`to_channel_model`)."""

    def __init__(
        self, sets: Sequence[ChannelSet], holders: Sequence[tuple[nn.Module, str]]
    ) -> None:
        self.sets = tuple(sets)
        self.holders = tuple(holders)

    @property
    def scores(self) -> list[nn.Parameter]:
        return [getattr(m, f"channel_scores{suffix}") for m, suffix in self.holders]

    @property
    def flags(self) -> list[torch.Tensor]:
        return [getattr(m, f"channel_flags{suffix}") for m, suffix in self.holders]

    def gate(self, i: int) -> torch.Tensor:
        """q ⊙ 1[p ≥ 0.5] of set ``i``, differentiable in p (straight through)."""
        module, suffix = self.holders[i]
        scores = getattr(module, f"channel_scores{suffix}")
        scale = getattr(module, f"channel_grad_scale{suffix}")
        return _RoundStraightThrough.apply(scores, scale) * getattr(
            module, f"channel_flags{suffix}"
        )

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
    """A layer whose weight rows and columns are scaled by channel gates: ``_gate_rows``
    and ``_gate_columns`` list (set index, buffer, repeat): the buffer (not saved) holds
    the positions of the set's channels in this layer (columns: ``repeat`` per channel)."""

    weight: nn.Parameter
    _gate_rows: list[tuple[int, str, int]]
    _gate_columns: list[tuple[int, str, int]]

    def gates(self) -> ChannelGates:
        return self.__dict__["_gates"]

    def _gate_vector(self, n: int, parts: list, like: torch.Tensor) -> torch.Tensor:
        g = torch.ones(n, dtype=like.dtype, device=like.device)
        gates = self.gates()
        for i, buffer, repeat in parts:
            values = gates.gate(i).to(like.dtype)
            if repeat > 1:
                values = values.repeat_interleave(repeat)
            g = g.index_put((getattr(self, buffer),), values)
        return g

    def gated_weight(self) -> torch.Tensor:
        w = self.weight
        if self._gate_rows:
            g = self._gate_vector(w.shape[0], self._gate_rows, w)
            w = w * g.view(-1, *([1] * (w.dim() - 1)))
        if self._gate_columns:
            g = self._gate_vector(w.shape[1], self._gate_columns, w)
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
    model: nn.Module,
    sets: Sequence[ChannelSet],
    generator: torch.Generator | None = None,
    gradient: str = "mean",
) -> nn.Module:
    """Give ``model``'s channel ``sets`` scores and flags (in place; returns ``model``).

    Scores are drawn U[0, 1] from ``generator`` in the order of the sets; every parameter
    but the scores is frozen. Layers the sets touch scale their weights by the gates;
    the other prunable layers compute as before. ``gradient``: ``"mean"`` or ``"sum"``
    over the channel's weights (module docstring); the holder keeps the factor as a buffer
    ``channel_grad_scale<suffix>`` (not saved).
    """
    if gradient not in CHANNEL_GRADIENTS:
        raise MaskError(f"channel gradient must be one of {CHANNEL_GRADIENTS}, got {gradient!r}")
    modules = dict(model.named_modules())
    holders = [_holder(s, modules) for s in sets]
    gates = ChannelGates(sets, holders)
    parts: dict[tuple[str, str], list] = {}
    for i, s in enumerate(sets):
        for m in s.members:
            if m.kind in (ROWS, COLUMNS):
                parts.setdefault((m.module, m.kind), []).append((i, m))

    def attach(module: nn.Module) -> None:
        module.__dict__["_gates"] = gates

    convert_layers(model, _GATED_CLASS, attach)
    for name, module in prunable_modules(model).items():
        for kind in (ROWS, COLUMNS):
            specs = []
            for j, (i, m) in enumerate(parts.get((name, kind), [])):
                buffer = f"_gate_{kind}_{j}"
                module.register_buffer(buffer, m.positions(), persistent=False)
                specs.append((i, buffer, m.repeat))
            setattr(module, f"_gate_{kind}", specs)
    for s, (holder, suffix) in zip(sets, holders):
        like = next(holder.parameters(), None)
        scores = torch.rand(s.size, generator=generator)
        if like is not None:
            scores = scores.to(like)
        holder.register_parameter(f"channel_scores{suffix}", nn.Parameter(scores))
        holder.register_buffer(f"channel_flags{suffix}", torch.ones_like(scores))
        gated = weights_per_channel(model, s) if gradient == "mean" else 1
        scale = torch.tensor(1.0 / gated, dtype=torch.float32, device=scores.device)
        holder.register_buffer(f"channel_grad_scale{suffix}", scale, persistent=False)
    return model


def weights_per_channel(model: nn.Module, s: ChannelSet) -> int:
    """How many weights one channel of set ``s`` gates: its rows, columns (``repeat`` per
    channel) and depthwise filters in every layer it touches (the same for every channel
    of a set)."""
    modules = dict(model.named_modules())
    total = 0
    for m in s.members:
        if m.kind in (ROWS, COLUMNS):
            w = modules[m.module].weight
            total += m.repeat * w.numel() // w.shape[0 if m.kind == ROWS else 1]
    return max(total, 1)


def _holder(s: ChannelSet, modules: dict[str, nn.Module]) -> tuple[nn.Module, str]:
    """The module holding set ``s``'s scores and flags, and their names' suffix: its name
    is the holder's, followed by ``#k`` for the k-th set of one module (suffix ``_k``)."""
    name, _, k = s.name.partition("#")
    return modules[name], f"_{k}" if k else ""


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
