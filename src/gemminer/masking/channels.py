"""Channels that can be pruned as a whole, found in any traceable model.

A **channel set** is the output channels (or features) of one prunable layer — its
*producer*, a ``Conv2d`` with ``groups=1`` or a ``Linear`` — whose output reaches exactly
one other prunable layer — its *consumer* — through operations that act on each channel
alone (BatchNorm, activations, pooling, dropout, depthwise convolutions, a flatten before
a ``Linear``) and nowhere else. Dropping channel c of a set zeroes

* row c of the producer's weight,
* row c of every depthwise convolution on the way (a depthwise convolution follows its
  input channels),
* the columns of the consumer's weight that read channel c (after a flatten, the H·W
  columns of the channel).

The consumer's columns being zero, the network's output no longer depends on the channel
whatever the BatchNorm statistics on the way, so the masked network computes what a
narrower dense network computes (:mod:`gemminer.rundir.compact`), and the multiply-adds
a dropped channel saves are those of its rows and columns (:class:`ChannelCost`).

Channels whose tensor is added to another (a residual stream), concatenated, reused or
returned are in no set: they are left whole. In the CIFAR ResNets that leaves the stream
whole and makes every block's inner channels (``conv1``'s outputs) a set; in VGG every
convolution's outputs but the classifier's; in MobileNet-V2 every block's expanded
channels (through the depthwise convolution).

The graph is found by :func:`torch.fx.symbolic_trace`; a model it cannot trace raises
:class:`~gemminer.errors.MaskError`.
"""

from __future__ import annotations

import math
import operator
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import fx, nn
from torch.fx.passes.shape_prop import ShapeProp
from torch.nn import functional as F

from ..errors import MaskError
from .flops import weight_uses
from .mask import Mask, count_dense, prunable_modules, weight_name

ROWS, COLUMNS, FEATURES = "rows", "columns", "features"

#: Modules that act on every channel alone (and keep the channel dimension).
CHANNELWISE_MODULES: tuple[type[nn.Module], ...] = (
    nn.BatchNorm1d,
    nn.BatchNorm2d,
    nn.ReLU,
    nn.ReLU6,
    nn.LeakyReLU,
    nn.PReLU,
    nn.ELU,
    nn.GELU,
    nn.SiLU,
    nn.Hardswish,
    nn.Hardsigmoid,
    nn.Sigmoid,
    nn.Tanh,
    nn.Identity,
    nn.Dropout,
    nn.Dropout2d,
    nn.MaxPool2d,
    nn.AvgPool2d,
    nn.AdaptiveAvgPool2d,
    nn.AdaptiveMaxPool2d,
)
_CHANNELWISE_FUNCTIONS = {
    F.relu,
    F.relu6,
    F.leaky_relu,
    F.gelu,
    F.silu,
    F.hardswish,
    F.dropout,
    F.max_pool2d,
    F.avg_pool2d,
    F.adaptive_avg_pool2d,
    F.adaptive_max_pool2d,
    torch.relu,
    torch.sigmoid,
    torch.tanh,
}
_CHANNELWISE_METHODS = {"relu", "relu_", "sigmoid", "tanh", "contiguous"}


@dataclass(frozen=True)
class Member:
    """One module a channel set touches: ``rows`` (a producer or depthwise weight: one
    row per channel), ``columns`` (the consumer's weight: ``repeat`` columns per channel,
    more than one after a flatten) or ``features`` (a BatchNorm: one entry per channel)."""

    module: str
    kind: str
    repeat: int = 1


@dataclass(frozen=True)
class ChannelSet:
    """The ``size`` output channels of the producer ``name`` and everything they touch."""

    name: str
    size: int
    members: tuple[Member, ...]

    @property
    def consumer(self) -> str:
        return next(m.module for m in self.members if m.kind == COLUMNS)

    def weights(self, kind: str) -> list[Member]:
        return [m for m in self.members if m.kind == kind]


def is_depthwise(module: nn.Module) -> bool:
    """A convolution whose every output channel reads its own input channel alone."""
    return (
        isinstance(module, nn.Conv2d)
        and module.groups > 1
        and module.groups == module.in_channels == module.out_channels
    )


def _is_producer(module: nn.Module) -> bool:
    return isinstance(module, nn.Linear) or (isinstance(module, nn.Conv2d) and module.groups == 1)


def _flatten_start(node: fx.Node) -> int | None:
    """The start dimension of a flatten node (``torch.flatten``, ``x.flatten``,
    ``nn.Flatten``), None for any other node."""
    if node.op == "call_function" and node.target is torch.flatten:
        return node.kwargs.get("start_dim", node.args[1] if len(node.args) > 1 else 0)
    if node.op == "call_method" and node.target == "flatten":
        return node.kwargs.get("start_dim", node.args[1] if len(node.args) > 1 else 0)
    return None


def _trace(model: nn.Module, input_shape: Sequence[int]) -> fx.GraphModule:
    try:
        graph = fx.symbolic_trace(model)
    except Exception as exc:  # noqa: BLE001 - any tracing failure has one meaning here
        raise MaskError(
            f"cannot trace {type(model).__name__} to find its channels "
            f"({type(exc).__name__}: {exc}); channel pruning needs a model "
            "torch.fx.symbolic_trace can trace (no control flow on tensor values)"
        ) from None
    first = next(model.parameters(), None)
    device = first.device if first is not None else torch.device("cpu")
    dtype = first.dtype if first is not None and first.is_floating_point() else torch.float32
    training = model.training
    try:
        model.eval()
        with torch.no_grad():
            ShapeProp(graph).propagate(torch.zeros(1, *input_shape, device=device, dtype=dtype))
    finally:
        model.train(training)
    return graph


def _follow(
    graph: fx.GraphModule, producer: fx.Node, modules: Mapping[str, nn.Module], calls: Counter
) -> tuple[Member, ...] | None:
    """The members of the channel set ``producer`` starts, or None if its channels reach
    anything but one consumer through channelwise operations."""
    members = [Member(str(producer.target), ROWS)]
    node, repeat = producer, 1
    while True:
        users = list(node.users)
        if len(users) != 1:
            return None
        (node,) = users
        if node.op == "call_module":
            name = str(node.target)
            module = modules[name]
            if calls[name] != 1 and any(True for _ in module.parameters(recurse=False)):
                return None  # a layer with weights used twice: its channels are shared
            if calls[name] != 1 and isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d)):
                return None
            if _is_producer(module):
                return (*members, Member(name, COLUMNS, repeat))
            if is_depthwise(module) and repeat == 1:
                members.append(Member(name, ROWS))
                continue
            if isinstance(module, nn.Flatten) and module.start_dim == 1 and repeat == 1:
                repeat = _spatial(node)
                continue
            if isinstance(module, CHANNELWISE_MODULES):
                if isinstance(module, nn.PReLU) and module.num_parameters != 1:
                    return None
                if isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d)):
                    members.append(Member(name, FEATURES))
                continue
            return None
        if node.op == "call_function" and node.target in _CHANNELWISE_FUNCTIONS:
            continue
        if node.op == "call_method" and node.target in _CHANNELWISE_METHODS:
            continue
        if _flatten_start(node) == 1 and repeat == 1:
            repeat = _spatial(node)
            continue
        if node.op == "call_function" and node.target is operator.getitem:
            return None
        return None


def _spatial(flatten: fx.Node) -> int:
    """H·W of the tensor a flatten node flattens: the columns each channel becomes."""
    source = flatten.args[0]
    meta = source.meta.get("tensor_meta") if isinstance(source, fx.Node) else None
    if meta is None:
        raise MaskError("cannot tell the shape of a flattened tensor")
    return math.prod(meta.shape[2:])


def channel_sets(model: nn.Module, input_shape: Sequence[int]) -> tuple[ChannelSet, ...]:
    """Every channel set of ``model`` (see the module docstring), in the order of its
    producers' definitions; ``input_shape`` (channels, height, width, or features) is one
    input's shape, needed where a flatten turns channels into columns."""
    graph = _trace(model, input_shape)
    modules = dict(model.named_modules())
    calls = Counter(str(n.target) for n in graph.graph.nodes if n.op == "call_module")
    found: dict[str, ChannelSet] = {}
    for node in graph.graph.nodes:
        if node.op != "call_module" or not _is_producer(modules[str(node.target)]):
            continue
        name = str(node.target)
        if calls[name] != 1:
            continue
        members = _follow(graph, node, modules, calls)
        if members is not None:
            module = modules[name]
            size = module.out_features if isinstance(module, nn.Linear) else module.out_channels
            found[name] = ChannelSet(name, size, members)
    order = list(prunable_modules(model))
    return tuple(sorted(found.values(), key=lambda s: order.index(s.name)))


def check_sets(sets: Sequence[ChannelSet], model: nn.Module, what: str) -> None:
    """A :class:`MaskError` unless ``model`` has channel sets (``what``: who needs them)."""
    if not sets:
        raise MaskError(
            f"{what}: {type(model).__name__} has no channels that can be pruned as a whole "
            "(every layer's outputs are added, concatenated or returned)"
        )


def _drop(mask: torch.Tensor, member: Member, dropped: torch.Tensor) -> None:
    if member.kind == ROWS:
        mask[dropped] = False
    else:
        mask[:, dropped.repeat_interleave(member.repeat)] = False


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
            if member.kind != FEATURES:
                _drop(tensors[weight_name(member.module)], member, ~kept)
    return Mask(tensors, dense_values=count_dense(model))


def live_channels(
    mask: Mapping[str, torch.Tensor], sets: Sequence[ChannelSet]
) -> dict[str, torch.Tensor]:
    """For every set, which channels the network under ``mask`` still reads: those whose
    consumer columns are not all zero (a channel whose columns are zero contributes
    nothing, whatever its producer computes)."""
    live = {}
    for s in sets:
        (member,) = s.weights(COLUMNS)
        m = mask[weight_name(member.module)].bool()
        cols = m.transpose(0, 1).reshape(s.size, member.repeat, -1)
        live[s.name] = cols.flatten(1).any(dim=1)
    return live


class ChannelCost:
    """The multiply-adds per image of a network as a function of the channels kept.

    Each prunable layer costs ``rows × columns × per_entry``: its kept output channels
    (all, or the kept channels of the set it produces; a depthwise convolution's rows
    follow its set), its kept input columns (all, or the kept channels of the set it
    consumes times their repeat) and, per weight entry, the kernel size times the
    positions it is used at (:func:`~gemminer.masking.flops.weight_uses`). Exactly what
    :func:`~gemminer.masking.flops.count_flops` counts for :func:`channel_mask`'s mask.
    """

    def __init__(
        self, model: nn.Module, sets: Sequence[ChannelSet], uses: Mapping[str, int]
    ) -> None:
        self.sets = tuple(sets)
        self.index = {s.name: i for i, s in enumerate(self.sets)}
        row_of: dict[str, int] = {}
        col_of: dict[str, tuple[int, int]] = {}
        for i, s in enumerate(self.sets):
            for m in s.members:
                if m.kind == ROWS:
                    row_of[m.module] = i
                elif m.kind == COLUMNS:
                    col_of[m.module] = (i, m.repeat)
        self.layers = []
        for name, module in prunable_modules(model).items():
            w = module.weight
            per_entry = math.prod(w.shape[2:]) * uses.get(weight_name(name), 0)
            self.layers.append(
                (row_of.get(name), w.shape[0], col_of.get(name), w.shape[1], per_entry)
            )
        self.dense = self.flops([s.size for s in self.sets])

    def flops(self, kept: Sequence[int] | torch.Tensor) -> int:
        """Multiply-adds with ``kept[i]`` channels of set i kept."""
        kept = [int(k) for k in kept]
        total = 0
        for row, rows, col, cols, per_entry in self.layers:
            r = kept[row] if row is not None else rows
            c = kept[col[0]] * col[1] if col is not None else cols
            total += r * c * per_entry
        return total

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
    model: nn.Module, input_shape: Sequence[int]
) -> tuple[tuple[ChannelSet, ...], ChannelCost]:
    """``model``'s channel sets and their :class:`ChannelCost` for inputs of
    ``input_shape``."""
    sets = channel_sets(model, input_shape)
    return sets, ChannelCost(model, sets, weight_uses(model, input_shape))


def keep_lowest_removed(
    cost: ChannelCost,
    scores: Mapping[str, torch.Tensor],
    active: Mapping[str, torch.Tensor],
    budget: float,
    floors: Mapping[str, int] | None = None,
    *,
    ties_together: bool = False,
) -> dict[str, torch.Tensor]:
    """Drop the ``active`` channels with the lowest ``scores``, globally and one by one,
    until the multiply-adds are at most ``budget`` × dense; returns the channels that stay
    active. ``floors`` (set → count) keeps each set's highest-scored channels; with
    ``ties_together`` every channel scored like the last one dropped goes too. When the
    budget cannot be met, every channel but the floors' is dropped."""
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
    candidates = torch.where(flat_active & ~protected, flat_scores, math.inf)
    order = torch.sort(candidates, stable=True).indices
    order = order[: int((candidates < math.inf).sum())]
    counts = torch.tensor([int(active[n].sum()) for n in names])
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
    if ties_together and hi > 0:
        drop |= candidates <= candidates[order[hi - 1]]
    stay = flat_active & ~drop
    return dict(zip(names, stay.split([s.size for s in cost.sets])))
