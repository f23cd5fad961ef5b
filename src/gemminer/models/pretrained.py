"""Loading pretrained weights from a local file in torchvision's ResNet key layout.

The paper's transfer task (Caltech-101, Appendix A.3.1) starts from torchvision's
ImageNet ResNet-50, replaces the 2048×1000 head with 2048×101 and keeps affine BatchNorm.
:func:`load_pretrained` copies such a file into a model built by
``create_model("resnet50", num_classes=101, affine_bn=True)``: every tensor whose key the
model has with the same shape, except the head, which keeps its fresh weights.

Files are read with ``torch.load(weights_only=True)``: a pickle that would run code is
refused, never executed. ``.safetensors`` files are read when the ``safetensors`` package
is installed. gemminer never downloads weights; fetch the file yourself.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from pathlib import Path

import torch
from torch import nn

from ..errors import RunError

#: Keys that may be absent from a file: old torchvision checkpoints (e.g. the original
#: resnet50-19c8e357.pth) predate BatchNorm's ``num_batches_tracked`` counter.
_OPTIONAL_SUFFIXES = (".num_batches_tracked",)
#: Per-weight state that score layers add (:mod:`gemminer.masking.scores`); never in a file.
_SCORE_STATE = ("scores", "flags")
_LISTED = 8


def _listing(keys: Iterable[str]) -> str:
    keys = sorted(keys)
    shown = ", ".join(keys[:_LISTED])
    return shown + (f" and {len(keys) - _LISTED} more" if len(keys) > _LISTED else "")


def _is_skipped(key: str, skip: tuple[str, ...]) -> bool:
    return any(key == s or key.startswith(s + ".") for s in skip)


def _unreadable(path: Path, error: Exception) -> RunError:
    """A clear error for a file ``torch.load(weights_only=True)`` refused or failed on."""
    text = str(error)
    code = re.search(r"Unsupported global: GLOBAL (\S+)", text)
    if code:
        return RunError(
            f"refusing to load {str(path)!r}: it is not a plain state dict of tensors; "
            f"unpickling it would call {code.group(1)}, and gemminer never runs code from a "
            "weights file; save the weights with torch.save(model.state_dict(), path)"
        )
    detail = text.partition("WeightsUnpickler error:")[2]
    if not detail:  # not the unpickler's own message: name the exception too
        detail = f"{type(error).__name__}: {text}" if text.strip() else type(error).__name__
    reason = next(line.strip() for line in detail.splitlines() if line.strip())
    return RunError(f"cannot read {str(path)!r} as a PyTorch state dict: {reason}")


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of a state-dict file, unwrapped from ``{"state_dict": ...}`` or
    ``{"model": ...}`` and from DataParallel's ``module.`` prefix; :class:`RunError` for
    anything that is not a readable, code-free mapping of names to tensors."""
    path = Path(path)
    if not path.is_file():
        raise RunError(f"pretrained weights file {str(path)!r} does not exist")
    if path.suffix == ".safetensors":
        try:
            from safetensors.torch import load_file
        except ImportError:
            raise RunError(
                f"{str(path)!r} is a .safetensors file; install the 'safetensors' package "
                "to read it, or save the weights with torch.save"
            ) from None
        try:
            data: object = load_file(str(path), device="cpu")
        except Exception as e:  # noqa: BLE001 - any failure means an unreadable file
            raise RunError(f"cannot read safetensors file {str(path)!r}: {e}") from None
    else:
        try:
            data = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # noqa: BLE001 - any failure means an unreadable file
            raise _unreadable(path, e) from None
    for wrapper in ("state_dict", "model"):
        if isinstance(data, Mapping) and isinstance(data.get(wrapper), Mapping):
            data = data[wrapper]
            break
    if not isinstance(data, Mapping) or not data:
        raise RunError(
            f"{str(path)!r} holds a {type(data).__name__}, not a non-empty state dict "
            "(a mapping of parameter names to tensors)"
        )
    not_tensors = [str(k) for k, v in data.items() if not isinstance(v, torch.Tensor)]
    if not_tensors:
        raise RunError(
            f"{str(path)!r} is not a state dict: entries {_listing(not_tensors)} are not tensors"
        )
    tensors = {str(k): v for k, v in data.items()}
    if all(k.startswith("module.") for k in tensors):
        tensors = {k[len("module.") :]: v for k, v in tensors.items()}
    return tensors


def _model_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The model's parameters and persistent buffers by state-dict key, without the
    score-learning state (scores, flags) of converted layers."""
    from ..masking.scores import ScoreLayer

    state = dict(model.state_dict(keep_vars=True))
    for name, module in model.named_modules():
        if isinstance(module, ScoreLayer):
            for extra in _SCORE_STATE:
                state.pop(f"{name}.{extra}" if name else extra, None)
    return state


def _non_affine_norm_keys(model: nn.Module, keys: Iterable[str]) -> list[str]:
    """Those of ``keys`` that are the scale/shift of a non-affine norm layer of ``model``."""
    norms = {
        name
        for name, m in model.named_modules()
        if isinstance(m, nn.modules.batchnorm._NormBase) and not m.affine
    }
    return [k for k in keys if k.rpartition(".")[0] in norms and k.endswith((".weight", ".bias"))]


def load_pretrained(
    model: nn.Module, path: str | Path, *, skip: tuple[str, ...] = ("fc",)
) -> list[str]:
    """Copy the tensors of a torchvision-layout state-dict file into ``model``, in place.

    Keys under a module named in ``skip`` (by default the head ``fc``: ``fc.weight`` and
    ``fc.bias``, replaced because the number of classes changes) are ignored in the file
    and left untouched in the model. Every other key must match: a key of the file the
    model lacks, a key of the model the file lacks (except BatchNorm's
    ``num_batches_tracked``) or a shape mismatch raises :class:`RunError` listing them,
    and nothing is copied. Returns the loaded key names in the model's order.

    Call it on the plain model, before :func:`gemminer.to_score_model` (a converted
    model works too: its scores and flags are left alone).
    """
    skip = tuple(skip)
    source = {k: v for k, v in read_state_dict(path).items() if not _is_skipped(k, skip)}
    target = {k: v for k, v in _model_state(model).items() if not _is_skipped(k, skip)}
    where = f"loading {str(path)!r}"

    unexpected = sorted(set(source) - set(target))
    affine = _non_affine_norm_keys(model, unexpected)
    if affine:
        raise RunError(
            f"{where}: the file has BatchNorm scale/shift tensors ({_listing(affine)}) but "
            "the model's BatchNorm is non-affine; build the model with affine_bn=True"
        )
    missing = sorted(k for k in set(target) - set(source) if not k.endswith(_OPTIONAL_SUFFIXES))
    mis_shaped = [
        f"{k} (file {tuple(source[k].shape)}, model {tuple(t.shape)})"
        for k, t in target.items()
        if k in source and source[k].shape != t.shape
    ]
    problems = []
    if mis_shaped:
        problems.append(f"shapes differ for {_listing(mis_shaped)}")
    if unexpected:
        problems.append(f"keys the model lacks: {_listing(unexpected)}")
    if missing:
        problems.append(f"model keys missing from the file: {_listing(missing)}")
    if problems:
        head = f"; skipped: {', '.join(skip)}" if skip else ""
        hint = ""
        if any(m.startswith("conv1.weight ") for m in mis_shaped):
            hint = " (for torchvision weights build the model with stem='imagenet')"
        raise RunError(
            f"{where}: the file does not fit the model{head}: " + "; ".join(problems) + hint
        )

    loaded = [k for k in target if k in source]
    with torch.no_grad():
        for k in loaded:
            target[k].copy_(source[k])
    return loaded
