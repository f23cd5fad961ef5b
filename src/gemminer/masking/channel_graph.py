"""Which channels can be pruned as a whole: found by tracing the model's graph.

Every tensor with channels gets a *slot* per channel. A producer (``Conv2d`` with
``groups=1``, ``Linear``) makes new slots for its outputs; operations that act on each
channel alone (BatchNorm, activations, pooling, dropout, depthwise convolutions, a
flatten before a ``Linear``) pass slots on; an addition joins the slots of its two
operands channel by channel (a residual stream: what every block adds into one channel
is dropped together; with ``streams="whole"`` an addition fixes its operands instead, so
streams stay whole and only the channels between additions are pruned); a module that
moves channels (``channel_positions()``, such as the CIFAR ResNets' zero-padding shortcut)
passes each input slot to its output position and adds empty ones. A slot reaching
anything else — the network's output, a reshape, an unknown function, a layer used
twice — is *fixed*: its channel is never pruned.

The joined slots that are not fixed and that some layer reads are the prunable channels.
Channels whose slots sit in the same modules (the same rows, columns and features, each
once) form a **channel set**, named after its first producer; a set's :class:`Member` s
say where each of its channels lies in each module. Dropping channel k of a set zeroes,
in every member, producer and depthwise rows ``index[k]`` and consumer columns
``index[k]·repeat …`` (``repeat`` > 1 after a flatten), so no layer reads it any more.
"""

from __future__ import annotations

import math
import operator
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import fx, nn
from torch.fx.passes.shape_prop import ShapeProp
from torch.nn import functional as F

from ..errors import MaskError
from .flops import probe

ROWS, COLUMNS, FEATURES = "rows", "columns", "features"
#: The input and output channels of a module that moves channels (``channel_positions``).
INPUTS, OUTPUTS = "inputs", "outputs"
#: What an addition does to its operands' channels: ``"joined"`` (one set: a residual
#: stream is pruned as a whole, across every layer adding into it) or ``"whole"`` (fixed:
#: the stream keeps every channel and only the channels between additions are pruned).
STREAMS = ("joined", "whole")

#: Modules that act on every channel alone (and keep the channel dimension).
CHANNELWISE_MODULES: tuple[type[nn.Module], ...] = (
    nn.BatchNorm1d, nn.BatchNorm2d, nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.GELU,
    nn.SiLU, nn.Hardswish, nn.Hardsigmoid, nn.Sigmoid, nn.Tanh, nn.Identity, nn.Dropout,
    nn.Dropout2d, nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d,
)  # fmt: skip
_CHANNELWISE_FUNCTIONS = {
    F.relu, F.relu6, F.leaky_relu, F.gelu, F.silu, F.hardswish, F.dropout, F.max_pool2d,
    F.avg_pool2d, F.adaptive_avg_pool2d, F.adaptive_max_pool2d, torch.relu, torch.sigmoid,
    torch.tanh,
}  # fmt: skip
_CHANNELWISE_METHODS = {"relu", "relu_", "sigmoid", "tanh", "contiguous"}
_ADD = {operator.add, operator.iadd, torch.add}


@dataclass(frozen=True)
class Member:
    """Where a channel set lies in one module: channel k of the set is the module's
    ``index[k]``-th output row (``rows``: a producer or depthwise weight), input columns
    ``index[k]·repeat … index[k]·repeat + repeat − 1`` (``columns``: a reader's weight),
    feature (``features``: a BatchNorm), or input / output channel of a module that moves
    channels (``inputs`` / ``outputs``)."""

    module: str
    kind: str
    index: tuple[int, ...]
    repeat: int = 1

    def positions(self, channels: torch.Tensor | None = None) -> torch.Tensor:
        """The module's positions (rows, columns, features) of the set's ``channels``
        (indices; all when None)."""
        index = torch.tensor(self.index, dtype=torch.long)
        if channels is not None:
            index = index[torch.as_tensor(channels, dtype=torch.long)]
        if self.repeat == 1:
            return index
        return (index[:, None] * self.repeat + torch.arange(self.repeat)).flatten()


@dataclass(frozen=True)
class ChannelSet:
    """``size`` channels pruned one by one, each across all the ``members``."""

    name: str
    size: int
    members: tuple[Member, ...]

    @property
    def consumer(self) -> str:
        """The first module that reads the set."""
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


class _Tracer(fx.Tracer):
    """Keeps modules that move channels (``channel_positions``) whole in the graph."""

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return hasattr(m, "channel_positions") or super().is_leaf_module(m, qualname)


def trace_graph(
    model: nn.Module, purpose: str = "find its channels", needs: str = "channel pruning"
) -> fx.GraphModule:
    """``model``'s ``torch.fx`` graph, modules that move channels kept whole; a
    :class:`MaskError` saying that ``needs`` (to ``purpose``) a traceable model otherwise."""
    try:
        return fx.GraphModule(model, _Tracer().trace(model))
    except Exception as exc:  # noqa: BLE001 - any tracing failure has one meaning here
        raise MaskError(
            f"cannot trace {type(model).__name__} to {purpose} "
            f"({type(exc).__name__}: {exc}); {needs} needs a model "
            "torch.fx.symbolic_trace can trace (no control flow on tensor values)"
        ) from None


def _trace(model: nn.Module, input_shape: Sequence[int]) -> fx.GraphModule:
    graph = trace_graph(model)
    probe(ShapeProp(graph).propagate, model, input_shape)
    return graph


class _Slots:
    """Union-find over channel slots, with what each slot touches."""

    def __init__(self) -> None:
        self.parent: list[int] = []
        self.fixed: set[int] = set()
        self.places: dict[int, list[tuple[str, str, int, int]]] = defaultdict(list)

    def new(self, n: int) -> list[int]:
        start = len(self.parent)
        self.parent.extend(range(start, start + n))
        return list(range(start, start + n))

    def root(self, s: int) -> int:
        while self.parent[s] != s:
            self.parent[s] = self.parent[self.parent[s]]
            s = self.parent[s]
        return s

    def join(self, a: int, b: int) -> None:
        ra, rb = self.root(a), self.root(b)
        if ra != rb:
            self.parent[rb] = ra

    def place(self, slots: Sequence[int], module: str, kind: str, repeat: int = 1) -> None:
        for i, s in enumerate(slots):
            self.places[s].append((module, kind, i, repeat))


#: A traced tensor's channels: its slots and how many columns each becomes (a flatten).
_Channels = tuple[list[int], int]


def _flatten_start(node: fx.Node) -> int | None:
    if (node.op == "call_function" and node.target is torch.flatten) or (
        node.op == "call_method" and node.target == "flatten"
    ):
        return node.kwargs.get("start_dim", node.args[1] if len(node.args) > 1 else 0)
    return None


def _spatial(node: fx.Node) -> int | None:
    meta = node.meta.get("tensor_meta") if isinstance(node, fx.Node) else None
    return math.prod(meta.shape[2:]) if meta is not None and len(meta.shape) == 4 else None


def _walk(graph: fx.GraphModule, model: nn.Module, streams: str = "joined") -> _Slots:
    """Give every traced tensor its channel slots (see the module docstring)."""
    modules = dict(model.named_modules())
    calls = Counter(str(n.target) for n in graph.graph.nodes if n.op == "call_module")
    slots = _Slots()
    env: dict[fx.Node, _Channels | None] = {}

    def channels(arg: object) -> _Channels | None:
        return env.get(arg) if isinstance(arg, fx.Node) else None

    def fix(node: fx.Node) -> None:
        for arg in node.all_input_nodes:
            found = env.get(arg)
            if found is not None:
                slots.fixed.update(found[0])

    def out_width(node: fx.Node) -> int | None:
        meta = node.meta.get("tensor_meta")
        return int(meta.shape[1]) if meta is not None and len(meta.shape) >= 2 else None

    for node in graph.graph.nodes:
        x = channels(node.args[0]) if node.args else None
        out: _Channels | None = None
        if node.op == "call_module":
            name = str(node.target)
            m = modules[name]
            shared = calls[name] != 1
            if _is_producer(m):
                if x is not None:
                    slots.place(x[0], name, COLUMNS, x[1])
                    if shared:
                        slots.fixed.update(x[0])
                out = (slots.new(m.weight.shape[0]), 1)
                slots.place(out[0], name, ROWS)
                if shared:
                    slots.fixed.update(out[0])
            elif x is not None and x[1] == 1 and is_depthwise(m):
                slots.place(x[0], name, ROWS)
                out = x
            elif x is not None and hasattr(m, "channel_positions"):
                width = out_width(node)
                moved = slots.new(width) if width is not None else []
                for i, p in enumerate(m.channel_positions()):
                    slots.join(moved[p], x[0][i])
                slots.place(x[0], name, INPUTS)
                slots.place(moved, name, OUTPUTS)
                out = (moved, 1) if width is not None else None
            elif x is not None and x[1] == 1 and isinstance(m, nn.Flatten) and m.start_dim == 1:
                spatial = _spatial(node.args[0])
                out = (x[0], spatial) if spatial is not None else None
            elif x is not None and isinstance(m, CHANNELWISE_MODULES):
                if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
                    slots.place(x[0], name, FEATURES)
                out = x
            if shared and not _is_producer(m) and any(True for _ in m.buffers()):
                out = None  # a BatchNorm used twice: its statistics mix the two
            if out is None and not _is_producer(m):
                fix(node)
        elif node.op == "call_function" and node.target in _CHANNELWISE_FUNCTIONS:
            out = x
        elif node.op == "call_method" and node.target in _CHANNELWISE_METHODS:
            out = x
        elif _flatten_start(node) == 1 and x is not None and x[1] == 1:
            spatial = _spatial(node.args[0])
            out = (x[0], spatial) if spatial is not None else None
            if out is None:
                fix(node)
        elif node.op in ("call_function", "call_method") and node.target in (*_ADD, "add"):
            a, b = (channels(arg) for arg in node.args[:2])
            if a is not None and b is not None and len(a[0]) == len(b[0]) and a[1] == b[1]:
                if streams == "whole":
                    fix(node)  # both operands' channels, and so the sum's (``a``'s slots)
                for sa, sb in zip(a[0], b[0]):
                    slots.join(sa, sb)
                out = a
            elif (a is None) != (b is None) and not all(
                isinstance(arg, fx.Node) for arg in node.args[:2]
            ):
                out = a or b  # a tensor plus a number
            else:
                fix(node)
        elif node.op == "call_function" and node.target is operator.getitem:
            index = node.args[1]
            spatial_only = (
                isinstance(index, tuple)
                and len(index) >= 2
                and all(i == slice(None) for i in index[:2])
                and all(isinstance(i, slice) for i in index)
            )
            if spatial_only and x is not None and x[1] == 1:
                out = x
            else:
                fix(node)
        elif node.op in ("call_function", "call_method", "output"):
            fix(node)
        env[node] = out
    return slots


def _group(slots: _Slots) -> list[ChannelSet]:
    """The prunable joined slots, gathered into sets by the places they touch."""
    classes: dict[int, list[int]] = defaultdict(list)
    for s in range(len(slots.parent)):
        classes[slots.root(s)].append(s)
    fixed = {slots.root(s) for s in slots.fixed}
    by_footprint: dict[tuple, list[dict]] = defaultdict(list)
    for root, members in classes.items():
        if root in fixed:
            continue
        places = [p for s in members for p in slots.places.get(s, ())]
        where = {(module, kind): (i, repeat) for module, kind, i, repeat in places}
        if len(where) != len(places):  # a channel twice in one module: leave it whole
            continue
        if not any(kind == COLUMNS for _, kind in where):
            continue  # read by no layer
        footprint = tuple(sorted((m, k, r) for (m, k), (_, r) in where.items()))
        by_footprint[footprint].append(where)
    sets = []
    for footprint, channels in by_footprint.items():
        first = footprint[0][:2]
        channels.sort(key=lambda w: w[first][0])
        members = tuple(
            Member(module, kind, tuple(w[(module, kind)][0] for w in channels), repeat)
            for module, kind, repeat in footprint
        )
        sets.append((members, len(channels)))
    return [ChannelSet("", size, members) for members, size in sets]


def channel_sets(
    model: nn.Module, input_shape: Sequence[int], streams: str = "joined"
) -> tuple[ChannelSet, ...]:
    """Every channel set of ``model`` (see the module docstring), ordered by their first
    producers in definition order; ``input_shape`` (channels, height, width, or features)
    is one input's shape, for the positions a flatten turns into columns. ``streams``
    (:data:`STREAMS`): ``"whole"`` leaves every channel that enters an addition unpruned."""
    if streams not in STREAMS:
        raise MaskError(f"streams must be one of {STREAMS}, got {streams!r}")
    graph = _trace(model, input_shape)
    order = {name: i for i, name in enumerate(dict(model.named_modules()))}
    found = _group(_walk(graph, model, streams))

    def first(s: ChannelSet) -> str:
        rows = [m.module for m in s.members if m.kind == ROWS]
        return min(rows or [m.module for m in s.members], key=lambda n: order[n])

    found.sort(
        key=lambda s: (order[first(s)], min(s.weights(ROWS)[0].index) if s.weights(ROWS) else 0)
    )
    named: list[ChannelSet] = []
    seen: Counter = Counter()
    for s in found:
        base = first(s)
        seen[base] += 1
        name = base if seen[base] == 1 else f"{base}#{seen[base]}"
        named.append(
            ChannelSet(
                name, s.size, tuple(sorted(s.members, key=lambda m: (order[m.module], m.kind)))
            )
        )
    return tuple(named)
