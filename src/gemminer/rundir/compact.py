"""A ticket as a smaller dense network: the channels it no longer reads cut out.

A mask that zeroes whole channels (:func:`gemminer.masking.channels.channel_mask`), or an
unstructured one that happens to leave some channel unread, computes what a *narrower*
dense network computes. :func:`compact_model` builds that network from a plain model with
the ticket's weights: a copy of it in which, for every channel set
(:mod:`gemminer.masking.channels`), the producer ``Conv2d`` / ``Linear`` keeps only the
kept channels as outputs (its bias sliced too), every BatchNorm on the way only their
features (running statistics and affine parameters), every depthwise convolution only
their channels (``groups`` = channels) and the consumer only the input columns that read
them (``repeat`` columns per channel after a flatten). The layers stay the model's own
classes (plain ``torch.nn`` ones for gemminer's models), so its ``forward`` runs as is.

Which channels are kept (:func:`kept_channels`): those the masked network still reads,
found by repetition — a channel whose consumer columns are all zero contributes nothing
(whatever BatchNorm makes of it), so its producer rows are dropped too, which may leave a
channel of the set before it unread, and so on until nothing changes. The compact
network's weights are the masked weights with those rows dropped as well (unstructured
zeros inside stay zeros); its outputs equal the masked network's in eval mode up to float
rounding. **A set with no channel left keeps one** (its first, every weight of it zero,
its consumer columns zero), so that no layer has zero channels; it contributes nothing.

File format ``gemminer-compact``, version 1 (a standard safetensors file)
-------------------------------------------------------------------------

Tensors: the compact network's whole ``state_dict``, dense, each under its own name with
its own dtype. Metadata: one key, ``"gemminer"``, a JSON object with ``format``
(``"gemminer-compact"``), ``format_version`` (``1``), ``which``, ``model``,
``num_classes``, ``model_args``, ``input_shape`` (one input's shape, ``[C, H, W]``: the
channel sets are found by tracing the model on it), ``channels`` (``[{"set": name,
"size": n, "kept": [i, ...]}, ...]``: every narrowed channel set of the architecture, its
full size and the kept channel indices, ascending; a set not listed keeps every
channel), the forward multiply-adds per image (:mod:`gemminer.masking.flops`) of the dense
architecture (``dense_flops``), of the ticket's kept weights (``ticket_flops``) and of the
compact network computed densely (``compact_flops``), the parameter counts
``dense_parameters`` / ``compact_parameters`` (every parameter, biases and normalization
included), and the ticket's informational keys as in the ``gemminer-ticket`` format
(:mod:`gemminer.rundir.export`: ``num_kept``, ``num_prunable``, ``density``,
``test_acc``, ``val_acc``, ``method``, ``dataset``, ``image_size``, ``input_mean`` /
``input_std``, ``class_names``, ``target_density``, ``seed``, ``sanity_check``,
``gemminer``). :func:`gemminer.load_exported` builds the registered architecture, narrows
the listed sets the same way and loads the tensors strictly.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save as save_safetensors
from torch import nn

from ..errors import ConfigError, MaskError, RunError, UnknownNameError
from ..masking import Mask, prunable_weights, weight_name
from ..masking.channels import (
    COLUMNS,
    FEATURES,
    INPUTS,
    OUTPUTS,
    ROWS,
    ChannelSet,
    channel_sets,
    live_channels,
)
from ..masking.flops import count_flops, format_flops, weight_uses
from ..models import create_model
from .files import atomic_write_bytes
from .summary import RunSummary

COMPACT_FORMAT = "gemminer-compact"
METADATA_KEY = "gemminer"
COMPACT_VERSION = 1
#: The default output name of a compact export, by what is exported.
COMPACT_NAMES = {
    "finetuned": "ticket-compact.safetensors",
    "ticket": "ticket-unfinetuned-compact.safetensors",
}
#: Square image sides tried when a run does not say its input size (the first one whose
#: dense multiply-adds are the run's ``dense_flops`` is taken).
_COMMON_SIDES = (32, 28, 64, 224, 96, 16, 8, 128, 256, 299, 48, 12)


# The compact network ----------------------------------------------------------------


def _settle(
    mask: Mapping[str, torch.Tensor], sets: Sequence[ChannelSet]
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """The mask with the rows of unread channels dropped, repeated until every channel
    left is read, and the channels read per set (booleans)."""
    work = {name: m.detach().cpu().bool().clone() for name, m in mask.items()}
    while True:
        live = live_channels(work, sets)
        changed = False
        for s in sets:
            dead = (~live[s.name]).nonzero().flatten()
            for member_rows in s.weights(ROWS):
                rows = work[weight_name(member_rows.module)]
                where = member_rows.positions(dead)
                if bool(rows[where].any()):
                    rows[where] = False
                    changed = True
        if not changed:
            return work, live


def kept_channels(
    mask: Mapping[str, torch.Tensor], sets: Sequence[ChannelSet]
) -> dict[str, torch.Tensor]:
    """For every channel set, the indices (ascending, ``int64``) of the channels the
    network under ``mask`` still reads, through unread channels of the sets after it too
    (see the module docstring); a set with none keeps channel 0."""
    return _indices(_settle(mask, sets)[1])


def _indices(live: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The indices of the ``live`` channels of each set; channel 0 if none."""
    kept = {}
    for name, alive in live.items():
        index = alive.nonzero().flatten()
        kept[name] = index if index.numel() else torch.zeros(1, dtype=torch.long)
    return kept


def _index(name: str, size: int, kept: Sequence[int] | torch.Tensor) -> torch.Tensor:
    index = torch.as_tensor(kept, dtype=torch.long).flatten()
    ok = index.numel() > 0 and bool((index >= 0).all()) and bool((index < size).all())
    if not ok or (index.numel() > 1 and not bool((index[1:] > index[:-1]).all())):
        raise MaskError(
            f"channel set {name} ({size} channels): kept channels must be ascending, "
            f"distinct, within 0..{size - 1} and at least one, got {index.tolist()}"
        )
    return index


def _param(old: torch.Tensor, new: torch.Tensor) -> nn.Parameter:
    return nn.Parameter(new.contiguous(), requires_grad=old.requires_grad)


@torch.no_grad()
def _cut(module: nn.Module, rows: torch.Tensor | None, cols: torch.Tensor | None) -> None:
    """Keep only output channels ``rows`` and input columns ``cols`` of a Conv2d / Linear
    (a depthwise convolution: rows only), in place."""
    weight = module.weight
    if rows is not None:
        weight = weight[rows]
        if module.bias is not None:
            module.bias = _param(module.bias, module.bias[rows])
    if cols is not None:
        weight = weight[:, cols]
    module.weight = _param(module.weight, weight)
    if isinstance(module, nn.Linear):
        module.out_features, module.in_features = weight.shape
    elif module.groups > 1:  # depthwise: its channels follow its set
        module.in_channels = module.out_channels = module.groups = weight.shape[0]
    else:
        module.out_channels, module.in_channels = weight.shape[:2]


@torch.no_grad()
def _cut_features(module: nn.Module, index: torch.Tensor) -> None:
    """Keep only the features ``index`` of a BatchNorm, in place."""
    if not isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d)):
        raise MaskError(f"cannot narrow {type(module).__name__}: not a BatchNorm")
    for name in ("weight", "bias"):
        if getattr(module, name, None) is not None:
            setattr(module, name, _param(getattr(module, name), getattr(module, name)[index]))
    for name in ("running_mean", "running_var"):
        if getattr(module, name, None) is not None:
            setattr(module, name, getattr(module, name)[index].clone())
    module.num_features = index.numel()


def narrow(
    model: nn.Module, sets: Sequence[ChannelSet], kept: Mapping[str, Sequence[int] | torch.Tensor]
) -> nn.Module:
    """Cut ``model`` **in place** to the channels ``kept`` (set name → ascending channel
    indices; a set not named keeps all) of its channel ``sets``, and return it."""
    modules = dict(model.named_modules())
    dropped: dict[tuple[str, str], list[torch.Tensor]] = {}
    for s in sets:
        if s.name not in kept:
            continue
        index = _index(s.name, s.size, kept[s.name])
        gone = torch.ones(s.size, dtype=torch.bool)
        gone[index] = False
        for member in s.members:
            where = member.positions(gone.nonzero().flatten())
            dropped.setdefault((member.module, member.kind), []).append(where)

    def keep(name: str, kind: str, size: int) -> torch.Tensor | None:
        parts = dropped.get((name, kind))
        if not parts:
            return None
        out = torch.ones(size, dtype=torch.bool)
        for where in parts:
            if not bool(out[where].all()):
                raise MaskError(f"{name} holds two channel sets at the same {kind}")
            out[where] = False
        return out.nonzero().flatten()

    names = {name for name, _ in dropped}
    for name in sorted(names):
        module = modules[name]
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            w = module.weight
            _cut(module, keep(name, ROWS, w.shape[0]), keep(name, COLUMNS, w.shape[1]))
        elif isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d)):
            _cut_features(module, keep(name, FEATURES, module.num_features))
        elif hasattr(module, "narrow_channels"):
            inputs = len(module.channel_positions())
            ins = keep(name, INPUTS, inputs)
            outs = keep(name, OUTPUTS, module.out_channels)
            module.narrow_channels(
                (ins if ins is not None else torch.arange(inputs)).tolist(),
                (outs if outs is not None else torch.arange(module.out_channels)).tolist(),
            )
        else:
            raise MaskError(f"cannot narrow {name}, a {type(module).__name__}")
    return model


@dataclass(frozen=True)
class Compacted:
    """A compact network, the channel sets of the model it came from and the channels
    of each that it keeps."""

    model: nn.Module
    sets: tuple[ChannelSet, ...]
    kept: dict[str, torch.Tensor]


def compact_model(
    model: nn.Module, mask: Mapping[str, torch.Tensor], input_shape: Sequence[int]
) -> Compacted:
    """The smaller dense network that computes what ``model`` under ``mask`` computes
    (``model`` itself is left as it is; see the module docstring). ``input_shape``: one
    input's shape, to trace the model's channel sets; the result is in ``model``'s
    training mode."""
    if not isinstance(mask, Mask):
        mask = Mask(mask)
    mask.check(model)
    sets = channel_sets(model, input_shape)
    settled, live = _settle(mask, sets)
    kept = _indices(live)
    small = copy.deepcopy(model)
    with torch.no_grad():
        for name, w in prunable_weights(small).items():
            w.mul_(settled[name].to(device=w.device, dtype=w.dtype))
    return Compacted(narrow(small, sets, kept), sets, kept)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# Writing ----------------------------------------------------------------------------


@dataclass(frozen=True)
class CompactInfo:
    """What a compact export wrote, and how the compact network compares with the dense."""

    path: Path
    which: str
    model: str
    num_classes: int
    test_acc: float | None
    dense_flops: int
    compact_flops: int
    dense_parameters: int
    compact_parameters: int
    file_bytes: int
    checkpoint: Path

    @property
    def flops_fraction(self) -> float:
        return self.compact_flops / self.dense_flops if self.dense_flops else 0.0

    def describe(self) -> str:
        acc = "—" if self.test_acc is None else f"{100 * self.test_acc:.2f} %"
        return (
            f"compact {self.model}: {format_flops(self.compact_flops)} of "
            f"{format_flops(self.dense_flops)} multiply-adds "
            f"({100 * self.flops_fraction:.1f} %), {self.compact_parameters:,} of "
            f"{self.dense_parameters:,} parameters; {self.path} ({self.file_bytes:,} bytes, "
            f"{self.which} weights of {self.checkpoint.name}), test accuracy {acc}"
        )


def parse_input_shape(value: str | Sequence[int]) -> tuple[int, ...]:
    """``"3,32,32"`` (or ``3x32x32``, or a sequence) as positive integers; a
    :class:`ConfigError` otherwise."""
    parts = value.replace("x", ",").split(",") if isinstance(value, str) else list(value)
    try:
        dims = tuple(int(str(d).strip()) for d in parts)
    except ValueError:
        dims = ()
    if not dims or any(d < 1 for d in dims) or any(isinstance(d, bool) for d in parts):
        raise ConfigError(f"input shape must be positive integers like 3,32,32, got {value!r}")
    return dims


def run_input_shape(
    model: nn.Module, channels: int, image_size: int, dense_flops: int | None, source: Path
) -> tuple[int, ...]:
    """The input shape of a run's model: ``channels`` × ``image_size``² when the run
    resized its images, else the common square side whose dense multiply-adds are the
    run's ``dense_flops``; a :class:`RunError` (naming ``source``) when neither tells."""
    if image_size > 0:
        return (channels, image_size, image_size)
    for side in _COMMON_SIDES if dense_flops else ():
        try:
            uses = weight_uses(model, (channels, side, side))
        except (RuntimeError, ValueError):  # an input size the model does not take
            continue
        if count_flops(model, uses=uses).dense == dense_flops:
            return (channels, side, side)
    raise RunError(
        f"cannot tell the input size of run {source.parent} (no image size, and no common "
        "size gives its dense multiply-adds): give it with --input-shape C,H,W "
        "(input_shape= in Python)"
    )


def write_compact(
    path: Path,
    model: nn.Module,
    mask: Mask,
    ticket_meta: Mapping[str, Any],
    checkpoint: Path,
    input_shape: Sequence[int] | None,
    summary: RunSummary,
) -> CompactInfo:
    """Write the compact form of ``model`` (the weights of the run file ``checkpoint``)
    under ``mask`` to ``path``; ``ticket_meta`` is the run's ``gemminer-ticket`` metadata,
    whose informational keys it carries (see the module docstring). ``input_shape``: one
    input's shape, or None for the run's (:func:`run_input_shape`)."""
    if input_shape is None and summary.input_shape:  # recorded by the prune stage
        input_shape = [int(d) for d in summary.input_shape]
    if input_shape is None:  # runs pruned before summaries recorded it
        channels, side = len(ticket_meta["input_mean"]), ticket_meta["image_size"]
        input_shape = run_input_shape(model, channels, side, summary.dense_flops, checkpoint)
    shape = list(parse_input_shape(input_shape))
    compacted = compact_model(model, mask, shape)
    small = compacted.model
    uses = weight_uses(model, shape)
    meta = {k: v for k, v in ticket_meta.items() if k not in ("layout", "bit_order")}
    meta |= {
        "format": COMPACT_FORMAT,
        "format_version": COMPACT_VERSION,
        "input_shape": shape,
        "channels": [
            {"set": s.name, "size": s.size, "kept": compacted.kept[s.name].tolist()}
            for s in compacted.sets
            if compacted.kept[s.name].numel() < s.size
        ],
        "dense_flops": count_flops(model, uses=uses).dense,
        "ticket_flops": count_flops(model, mask=mask, uses=uses).ticket,
        "compact_flops": count_flops(small, shape).dense,
        "dense_parameters": count_parameters(model),
        "compact_parameters": count_parameters(small),
    }
    tensors = {k: t.detach().cpu().contiguous() for k, t in small.state_dict().items()}
    atomic_write_bytes(path, save_safetensors(tensors, metadata={METADATA_KEY: json.dumps(meta)}))
    return CompactInfo(
        path=path,
        which=meta["which"],
        model=meta["model"],
        num_classes=meta["num_classes"],
        test_acc=meta.get("test_acc"),
        dense_flops=meta["dense_flops"],
        compact_flops=meta["compact_flops"],
        dense_parameters=meta["dense_parameters"],
        compact_parameters=meta["compact_parameters"],
        file_bytes=path.stat().st_size,
        checkpoint=checkpoint,
    )


# Reading ----------------------------------------------------------------------------


def _is(value: Any, kind: type) -> bool:
    return isinstance(value, kind) and not isinstance(value, bool)


def check_network(meta: Mapping[str, Any], bad: Callable[[str], RunError]) -> None:
    """The keys that name the network of an exported file (both formats): ``model``,
    ``num_classes``, ``model_args`` and ``class_names``; ``bad(why)`` makes the error."""
    for key, kind in {"model": str, "num_classes": int, "model_args": dict}.items():
        if not _is(meta.get(key), kind):
            raise bad(f"metadata {key!r} must be a {kind.__name__}, got {meta.get(key)!r}")
    if meta["num_classes"] < 1:
        raise bad(f"num_classes {meta['num_classes']} < 1")
    names = meta.get("class_names")
    if names is not None and (
        not isinstance(names, list)
        or len(names) != meta["num_classes"]
        or not all(isinstance(n, str) for n in names)
    ):
        raise bad(f"class_names must be {meta['num_classes']} strings, got {names!r}")


def _bad(path: Path, why: str) -> RunError:
    return RunError(f"{path} is not a valid gemminer compact file: {why}")


def check_compact_metadata(path: Path, meta: Mapping[str, Any]) -> dict[str, Any]:
    """``meta``, checked: a :class:`RunError` naming ``path`` unless it is version-1
    compact metadata of the documented form (the indices against the architecture:
    :func:`load_compact`)."""

    def bad(why: str) -> RunError:
        return _bad(path, why)

    if meta.get("format_version") != COMPACT_VERSION:
        raise bad(
            f"format version {meta.get('format_version')!r}; this gemminer reads version "
            f"{COMPACT_VERSION}"
        )
    check_network(meta, bad)
    shape = meta.get("input_shape")
    if not isinstance(shape, list) or not shape or not all(_is(d, int) and d > 0 for d in shape):
        raise bad(f"input_shape must be a list of positive integers, got {shape!r}")
    channels = meta.get("channels")
    if not isinstance(channels, list):
        raise bad(f"channels must be a list, got {channels!r}")
    for entry in channels:
        ok = (
            isinstance(entry, dict)
            and set(entry) == {"set", "size", "kept"}
            and isinstance(entry["set"], str)
            and _is(entry["size"], int)
            and isinstance(entry["kept"], list)
            and all(_is(i, int) for i in entry["kept"])
        )
        if not ok:
            raise bad(f"channels entry {entry!r} is not {{set, size, kept: [indices]}}")
    return dict(meta)


def load_compact(
    path: Path, meta: Mapping[str, Any], tensors: Mapping[str, torch.Tensor]
) -> nn.Module:
    """The compact network of a checked compact file's ``meta`` and ``tensors``, in eval
    mode, ``class_names`` set (see :func:`gemminer.rundir.export.load_exported`)."""

    def bad(why: str) -> RunError:
        return _bad(path, why)

    try:
        model = create_model(meta["model"], num_classes=meta["num_classes"], **meta["model_args"])
    except UnknownNameError as exc:
        raise UnknownNameError(f"{path}: {exc}") from None
    try:
        sets = {s.name: s for s in channel_sets(model, meta["input_shape"])}
    except (MaskError, RuntimeError) as exc:
        shape = meta["input_shape"]
        raise bad(f"{meta['model']} cannot be traced on input_shape {shape} ({exc})") from None
    kept = {}
    for entry in meta["channels"]:
        name, size = entry["set"], entry["size"]
        if name in kept:
            raise bad(f"channel set {name} is listed twice")
        if name not in sets or sets[name].size != size:
            found = f"has {sets[name].size} channels" if name in sets else "has no such set"
            raise bad(f"channel set {name} of {size} channels: {meta['model']} {found}")
        try:
            kept[name] = _index(name, size, entry["kept"])
        except MaskError as exc:
            raise bad(str(exc)) from None
    narrow(model, tuple(sets.values()), kept)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(tensors))
    unknown = sorted(set(tensors) - set(expected))
    if missing or unknown:
        missing_text, unknown_text = ", ".join(missing) or "none", ", ".join(unknown) or "none"
        raise bad(f"tensors missing: {missing_text}; unexpected: {unknown_text}")
    for key, t in tensors.items():
        if t.shape != expected[key].shape or t.dtype != expected[key].dtype:
            raise bad(
                f"{key} is {t.dtype} {tuple(t.shape)}, the narrowed {meta['model']} expects "
                f"{expected[key].dtype} {tuple(expected[key].shape)}"
            )
    model.load_state_dict(dict(tensors), strict=True)
    names = meta.get("class_names")
    model.class_names = tuple(names) if names else None
    return model.eval()
