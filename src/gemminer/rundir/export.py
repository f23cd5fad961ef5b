"""Export a run's ticket as one compact, self-describing safetensors file.

A ticket at 1-5 % density is mostly zeros; the exported file stores the mask as a bitmask
(one bit per prunable weight) and only the kept weight values, beside every tensor that is
not pruned. Reading it back needs no pickle and no gemminer score layers:
:func:`load_exported` rebuilds the registered architecture with plain ``nn.Conv2d`` /
``nn.Linear`` layers and the mask baked in (pruned weights exactly 0).

File format, version 1 (a standard safetensors file)
----------------------------------------------------

Tensors:

``__mask_bits__``
    ``uint8``, shape ``(ceil(P / 8),)``: the mask of all ``P`` prunable weights as bits.
    The masks of the prunable weights (every Conv2d/Linear ``weight``, see
    :mod:`gemminer.masking`) are flattened in row-major (C) order and concatenated in the
    order of the metadata's ``layout``; bit ``i`` of that sequence is bit ``i % 8`` of byte
    ``i // 8``, counting from the least significant bit (``numpy.packbits(...,
    bitorder="little")``). A set bit means the weight is kept. The padding bits of the last
    byte are 0.
``__kept_values__``
    The dtype of the model's weights (``float32``), shape ``(K,)``: the kept weights, in the
    order of the set bits above. ``K`` equals the number of set bits.
every other tensor of the model's ``state_dict``
    Under its own name, dense, with its own dtype: BatchNorm ``running_mean`` /
    ``running_var`` (``float32``) and ``num_batches_tracked`` (``int64``), the affine
    BatchNorm ``weight`` / ``bias`` of models built with ``affine_bn``, biases if any.

Metadata (safetensors stores ``str -> str``): one key, ``"gemminer"``, holding a JSON object:

``format`` (``"gemminer-ticket"``), ``format_version`` (``1``), ``which`` (``"finetuned"``:
the finetuned weights; ``"ticket"``: the ticket's weights before finetuning, with its
re-estimated BatchNorm statistics), ``model``, ``num_classes``, ``model_args`` (the
arguments of :func:`gemminer.models.create_model`), ``layout`` (``[[name, shape], ...]``:
the prunable weights in bitmask order), ``bit_order`` (``"little"``), ``num_kept``,
``num_prunable``, ``density``, ``test_acc`` / ``val_acc`` (the run's reported accuracy of
these weights; ``null`` when unknown), and, for information, ``method``, ``dataset``,
``image_size``, ``input_mean`` / ``input_std`` (the per-channel normalization of the inputs
during training), ``class_names`` (the class of each output, ``null`` for runs made before
gemminer recorded them), ``target_density``, ``seed``, ``sanity_check`` and ``gemminer``
(version). :func:`load_exported` sets ``model.class_names`` (a tuple, or ``None``).

``export_run(..., compact=True)`` writes the ticket as a smaller dense network instead, the
channels it no longer reads cut out (format ``gemminer-compact``,
:mod:`gemminer.rundir.compact`); :func:`load_exported` reads both formats.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save as save_safetensors
from torch import nn

from ..errors import ConfigError, MaskError, RunError, UnknownNameError
from ..masking import Mask, count_prunable, prunable_weights
from ..models import create_model
from ..settings.config import RunConfig
from ..version import __version__
from . import compact as _compact
from .files import atomic_write_bytes
from .runs import RunDir, check_keys, check_tensors
from .summary import RunSummary

FORMAT = "gemminer-ticket"
FORMAT_VERSION = 1
METADATA_KEY = "gemminer"
BITS = "__mask_bits__"
VALUES = "__kept_values__"
BIT_ORDER = "little"

#: What can be exported: the run file holding the weights and its default output name.
WHICH = {
    "finetuned": ("finetuned.pt", "ticket.safetensors"),
    "ticket": ("ticket.pt", "ticket-unfinetuned.safetensors"),
}


@dataclass(frozen=True)
class ExportInfo:
    """What :func:`export_run` wrote, and how its size compares with the dense checkpoint."""

    path: Path
    which: str
    model: str
    num_classes: int
    num_kept: int
    num_prunable: int
    test_acc: float | None
    file_bytes: int
    #: the run's dense checkpoint of the same weights (finetuned.pt or ticket.pt)
    checkpoint: Path
    checkpoint_bytes: int

    @property
    def density(self) -> float:
        return self.num_kept / self.num_prunable

    @property
    def ratio(self) -> float:
        """Size of the exported file over the size of the dense checkpoint."""
        return self.file_bytes / self.checkpoint_bytes

    def describe(self) -> str:
        acc = "—" if self.test_acc is None else f"{100 * self.test_acc:.2f} %"
        return (
            f"{self.path}: {self.which} {self.model} ({self.num_classes} classes), "
            f"{self.num_kept} of {self.num_prunable} weights kept "
            f"(density {100 * self.density:.2f} %), test accuracy {acc}; "
            f"{self.file_bytes} bytes, {100 * self.ratio:.1f} % of {self.checkpoint.name} "
            f"({self.checkpoint_bytes} bytes)"
        )


# Export -------------------------------------------------------------------------------


def _version() -> str:
    return __version__


def _architecture(model: str, num_classes: int, model_args: dict[str, Any]) -> nn.Module:
    return create_model(model, num_classes=num_classes, **model_args)


def _infer_num_classes(
    model: str, model_args: dict[str, Any], state: dict[str, torch.Tensor], source: Path
) -> int:
    """The number of classes the saved ``state`` was built for, for runs pruned before
    summary.json recorded it.

    The model is built on the meta device with 1 and with 2 classes; every dimension that
    changes is affine in the number of classes, and the saved shape gives its value. A
    ``state`` with other keys than the model's raises :class:`RunError` naming ``source``.
    """
    try:
        with torch.device("meta"):  # shapes only, no memory
            one, two = (_architecture(model, c, model_args).state_dict() for c in (1, 2))
    except (NotImplementedError, RuntimeError):  # a constructor that needs real tensors
        one, two = (_architecture(model, c, model_args).state_dict() for c in (1, 2))
    check_keys(source, state, one)
    found: set[int] = set()
    for key, a in one.items():
        if key not in two or key not in state or a.shape == two[key].shape:
            continue
        if len(state[key].shape) != len(a.shape):
            continue
        for d1, d2, d in zip(a.shape, two[key].shape, state[key].shape):
            if d1 != d2:
                n, rest = divmod(d - d1, d2 - d1)
                if rest == 0 and n >= 0:
                    found.add(1 + n)
    if len(found) != 1:
        raise RunError(
            f"cannot tell the number of classes of {source} for model {model}: "
            f"the saved shapes suggest {sorted(found) or 'none'}"
        )
    return found.pop()


def _source(run: RunDir, which: str) -> Path:
    """The run file holding the ``which`` weights; a :class:`RunError` saying what to run
    when it (or the mask) is missing."""
    source = run.file(WHICH[which][0])
    if not source.is_file():
        hint = (
            "run `gemminer finetune` first, or export the unfinetuned ticket (--ticket)"
            if which == "finetuned"
            else "run `gemminer prune` (or `mine`) into it first"
        )
        raise RunError(f"{run.path} has no {source.name}: {hint}")
    if not run.file("mask.pt").is_file():
        raise RunError(f"{run.path} has no mask.pt: run `gemminer prune` (or `mine`) into it first")
    return source


@dataclass(frozen=True)
class _Network:
    """The network a run's weights belong to, as :func:`load_exported` rebuilds it."""

    model: str
    num_classes: int
    model_args: dict[str, Any]

    @classmethod
    def of_run(
        cls, cfg: RunConfig, summary: RunSummary, state: dict[str, torch.Tensor], source: Path
    ) -> _Network:
        """As recorded at prune time (older runs: the config's model arguments, and the
        number of classes inferred from ``state``'s shapes)."""
        args = summary.model_args if summary.model_args is not None else cfg.model_args
        num_classes = summary.num_classes or _infer_num_classes(cfg.model, args, state, source)
        return cls(cfg.model, num_classes, dict(args))

    def build(self) -> nn.Module:
        return _architecture(self.model, self.num_classes, self.model_args)


def _pack(
    state: dict[str, torch.Tensor],
    mask: Mask,
    layout: list[tuple[str, list[int]]],
    which: str,
    source: Path,
) -> tuple[dict[str, torch.Tensor], int]:
    """The bitmask and the kept values of the prunable weights in ``layout`` order (the
    finetuned weights must be 0 where pruned); returns them and the number kept."""
    dtypes = {state[name].dtype for name, _ in layout}
    if len(dtypes) != 1 or not next(iter(dtypes)).is_floating_point:
        raise RunError(f"{source}: prunable weights must share one float dtype, got {dtypes}")
    values, bits = [], []
    for name, _ in layout:
        w = state[name].detach().cpu().flatten()
        m = mask[name].flatten()
        if which == "finetuned" and bool((w[~m] != 0).any()):
            raise RunError(
                f"{source}: {name} has nonzero weights where mask.pt prunes them; "
                "finetuned weights must be exactly 0 there"
            )
        values.append(w[m])
        bits.append(m)
    flat = torch.cat(bits)
    packed = {
        BITS: torch.from_numpy(np.packbits(flat.numpy(), bitorder=BIT_ORDER)),
        VALUES: torch.cat(values).contiguous(),
    }
    return packed, int(flat.sum())


def _metadata(
    which: str,
    network: _Network,
    layout: list[tuple[str, list[int]]],
    num_kept: int,
    cfg: RunConfig,
    summary: RunSummary,
) -> dict[str, Any]:
    """The file's metadata (see this module's docstring)."""
    num_prunable = sum(math.prod(shape) for _, shape in layout)
    finetuned = which == "finetuned"
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "which": which,
        "model": network.model,
        "num_classes": network.num_classes,
        "model_args": network.model_args,
        "layout": layout,
        "bit_order": BIT_ORDER,
        "num_kept": num_kept,
        "num_prunable": num_prunable,
        "density": num_kept / num_prunable,
        "test_acc": summary.post_finetune_acc if finetuned else summary.pre_finetune_acc,
        "val_acc": summary.post_finetune_val_acc if finetuned else summary.pre_finetune_val_acc,
        "method": cfg.method,
        "dataset": cfg.dataset,
        "image_size": cfg.image_size,
        "input_mean": summary.input_mean,  # per-channel input normalization
        "input_std": summary.input_std,
        "class_names": summary.class_names,  # index → name; null for older runs
        "target_density": cfg.prune.density,
        "seed": cfg.seed,
        "sanity_check": cfg.sanity_check,
        "gemminer": _version(),
    }


def export_run(
    run_dir: str | Path,
    out: str | Path | None = None,
    which: str = "finetuned",
    *,
    compact: bool = False,
    input_shape: Sequence[int] | None = None,
) -> ExportInfo | _compact.CompactInfo:
    """Write the ``which`` weights of run folder ``run_dir`` as a compact ticket file.

    ``which="finetuned"`` exports ``finetuned.pt`` (default output
    ``RUN_DIR/ticket.safetensors``); ``which="ticket"`` exports the ticket before
    finetuning, ``ticket.pt`` with the mask applied (default output
    ``RUN_DIR/ticket-unfinetuned.safetensors``). The format is described in this module's
    docstring. ``compact=True``: the smaller dense network instead
    (:mod:`gemminer.rundir.compact`; default output ``RUN_DIR/ticket-compact.safetensors``
    or ``ticket-unfinetuned-compact.safetensors``) for inputs of ``input_shape`` (default:
    the run's, from its image size or its dense multiply-adds).
    """
    if which not in WHICH:
        raise ConfigError(f"unknown export {which!r}; valid: {', '.join(WHICH)}")
    run = RunDir(run_dir)
    cfg = run.read_config()
    summary = run.summary()
    if summary.input_mean is None or summary.input_std is None:
        raise RunError(
            f"{run.file('summary.json')} records no input normalization (input_mean, "
            "input_std; a run made by an older gemminer?): an exported ticket must say how "
            "to normalize its inputs; make the run again with this gemminer (--overwrite)"
        )
    source = _source(run, which)
    state = run.load_tensors(source.name)
    network = _Network.of_run(cfg, summary, state, source)
    model = network.build()
    check_tensors(source, state, {k: tuple(t.shape) for k, t in model.state_dict().items()})
    weights = prunable_weights(model)
    mask = run.load_mask({k: tuple(w.shape) for k, w in weights.items()})
    layout = [(name, list(w.shape)) for name, w in weights.items()]

    tensors, num_kept = _pack(state, mask, layout, which, source)
    for key in model.state_dict():
        if key not in weights:
            tensors[key] = state[key].detach().cpu().contiguous()
    meta = _metadata(which, network, layout, num_kept, cfg, summary)
    if compact:
        model.load_state_dict(state)
        path = Path(out) if out is not None else run.file(_compact.COMPACT_NAMES[which])
        return _compact.write_compact(path, model, mask, meta, source, input_shape, summary)
    data = save_safetensors(tensors, metadata={METADATA_KEY: json.dumps(meta)})
    path = Path(out) if out is not None else run.file(WHICH[which][1])
    atomic_write_bytes(path, data)
    return ExportInfo(
        path=path,
        which=which,
        model=network.model,
        num_classes=network.num_classes,
        num_kept=num_kept,
        num_prunable=meta["num_prunable"],
        test_acc=meta["test_acc"],
        file_bytes=path.stat().st_size,
        checkpoint=source,
        checkpoint_bytes=source.stat().st_size,
    )


# Loading ------------------------------------------------------------------------------


def _bad(path: Path, why: str) -> RunError:
    return RunError(f"{path} is not a valid gemminer ticket file: {why}")


def _check_metadata(path: Path, raw: dict[str, str] | None) -> dict[str, Any]:
    if not raw or METADATA_KEY not in raw:
        raise _bad(path, f"its safetensors metadata has no {METADATA_KEY!r} entry")
    try:
        meta = json.loads(raw[METADATA_KEY])
    except json.JSONDecodeError as exc:
        raise _bad(path, f"its metadata is not valid JSON ({exc})") from None
    if isinstance(meta, dict) and meta.get("format") == _compact.COMPACT_FORMAT:
        return _compact.check_compact_metadata(path, meta)
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        known = f"{FORMAT!r} or {_compact.COMPACT_FORMAT!r}"
        raise _bad(path, f"its metadata does not declare format {known}")
    version = meta.get("format_version")
    if version != FORMAT_VERSION:
        raise _bad(
            path,
            f"format version {version!r}; this gemminer ({_version()}) reads version "
            f"{FORMAT_VERSION}",
        )
    if meta.get("bit_order") != BIT_ORDER:
        raise _bad(path, f"bit order {meta.get('bit_order')!r}, expected {BIT_ORDER!r}")
    _compact.check_network(meta, lambda why: _bad(path, why))
    for key, kind in {"layout": list, "num_kept": int, "num_prunable": int}.items():
        if not isinstance(meta.get(key), kind) or isinstance(meta.get(key), bool):
            raise _bad(path, f"metadata {key!r} must be a {kind.__name__}, got {meta.get(key)!r}")
    for entry in meta["layout"]:
        ok = (
            isinstance(entry, list)
            and len(entry) == 2
            and isinstance(entry[0], str)
            and isinstance(entry[1], list)
            and all(isinstance(d, int) and d >= 0 for d in entry[1])
        )
        if not ok:
            raise _bad(path, f"layout entry {entry!r} is not [name, shape]")
    return meta


def _read(path: Path, tensors: bool = True) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    if not path.is_file():
        raise RunError(f"{path} does not exist")
    try:
        with safe_open(path, framework="pt") as f:
            meta = _check_metadata(path, f.metadata())
            return meta, ({key: f.get_tensor(key) for key in f.keys()} if tensors else {})
    except SafetensorError as exc:
        raise _bad(path, f"not a safetensors file ({exc})") from None


def read_metadata(path: str | Path) -> dict[str, Any]:
    """The checked metadata of an exported ticket file, either format (no tensors read)."""
    return _read(Path(path), tensors=False)[0]


def _unpack_weights(
    path: Path, meta: dict[str, Any], tensors: dict[str, torch.Tensor], model: nn.Module
) -> dict[str, torch.Tensor]:
    """The dense prunable weights (pruned entries 0) from the bitmask and kept values."""
    weights = prunable_weights(model)
    layout = {name: tuple(shape) for name, shape in meta["layout"]}
    if len(layout) != len(meta["layout"]) or set(layout) != set(weights):
        raise MaskError(
            f"{path}: the layout lists {sorted(layout)}, but {meta['model']} prunes "
            f"{sorted(weights)}"
        )
    for name, w in weights.items():
        if layout[name] != tuple(w.shape):
            raise MaskError(
                f"{path}: layout gives {name} shape {layout[name]}, "
                f"{meta['model']} has {tuple(w.shape)}"
            )
    total = count_prunable(model)
    if meta["num_prunable"] != total:
        raise MaskError(f"{path}: num_prunable {meta['num_prunable']}, the layout holds {total}")

    for key in (BITS, VALUES):
        if key not in tensors:
            raise _bad(path, f"tensor {key} is missing")
    bits, values = tensors[BITS], tensors[VALUES]
    if bits.dtype != torch.uint8 or bits.dim() != 1:
        raise MaskError(f"{path}: {BITS} must be a 1-D uint8 tensor, got {bits.dtype} {bits.shape}")
    need = math.ceil(total / 8)
    if bits.numel() != need:
        raise MaskError(
            f"{path}: the bitmask {BITS} has {bits.numel()} bytes; the {total} prunable "
            f"weights of the layout need {need}"
        )
    unpacked = np.unpackbits(bits.numpy(), bitorder=BIT_ORDER)
    if unpacked[total:].any():
        raise MaskError(f"{path}: the padding bits after the {total} mask bits are not 0")
    flat = torch.from_numpy(unpacked[:total].astype(bool))
    kept = int(flat.sum())
    if meta["num_kept"] != kept:
        raise MaskError(f"{path}: metadata num_kept {meta['num_kept']}, the bitmask keeps {kept}")
    dtype = next(iter(weights.values())).dtype
    if values.dim() != 1 or values.dtype != dtype:
        raise MaskError(
            f"{path}: {VALUES} must be a 1-D {dtype} tensor, got {values.dtype} "
            f"{tuple(values.shape)}"
        )
    if values.numel() != kept:
        raise MaskError(
            f"{path}: {values.numel()} kept values for a bitmask that keeps {kept} weights"
        )
    dense = torch.zeros(total, dtype=dtype)
    dense[flat] = values
    out, start = {}, 0
    for name, shape in meta["layout"]:
        n = math.prod(shape)
        out[name] = dense[start : start + n].view(shape)
        start += n
    return out


def load_exported(path: str | Path) -> nn.Module:
    """The plain model of an exported ticket file, mask baked in, in eval mode; its
    ``class_names`` attribute names each output (``None`` if the file does not say).
    A compact file (``export_run(..., compact=True)``) gives the narrower network.

    Everything is checked against the registered architecture (format version, bitmask
    length, kept count, tensor names, shapes and dtypes); nothing is unpickled.
    """
    path = Path(path)
    meta, tensors = _read(path)
    if meta["format"] == _compact.COMPACT_FORMAT:
        return _compact.load_compact(path, meta, tensors)
    try:
        model = _architecture(meta["model"], meta["num_classes"], meta["model_args"])
    except UnknownNameError as exc:
        raise UnknownNameError(f"{path}: {exc}") from None
    state = _unpack_weights(path, meta, tensors, model)
    expected = model.state_dict()
    rest = {k: v for k, v in tensors.items() if k not in (BITS, VALUES)}
    missing = sorted(set(expected) - set(state) - set(rest))
    unknown = sorted(set(rest) - set(expected) | (set(rest) & set(state)))
    if missing:
        raise _bad(path, f"tensors missing: {', '.join(missing)}")
    if unknown:
        raise _bad(path, f"unexpected tensors: {', '.join(unknown)}")
    for key, t in rest.items():
        if t.shape != expected[key].shape or t.dtype != expected[key].dtype:
            raise _bad(
                path,
                f"{key} is {t.dtype} {tuple(t.shape)}, {meta['model']} expects "
                f"{expected[key].dtype} {tuple(expected[key].shape)}",
            )
    model.load_state_dict(state | rest)
    names = meta.get("class_names")
    model.class_names = tuple(names) if names else None
    return model.eval()
