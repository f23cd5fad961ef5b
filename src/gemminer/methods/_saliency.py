"""Shared pieces of the saliency methods (SNIP, GraSP, SynFlow): copies, batches, checks."""

from __future__ import annotations

import copy
import math
from collections.abc import Iterable

import torch
from torch import nn

from ..errors import ConfigError
from ..masking import prunable_weights
from .base import PruneContext

Batch = tuple[torch.Tensor, torch.Tensor]


def check_positive_int(method: str, name: str, value: object) -> None:
    """Raise :class:`ConfigError` unless ``value`` is an integer ≥ 1."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{method}: {name} must be an integer >= 1, got {value!r}")


def check_positive_float(method: str, name: str, value: object) -> None:
    """Raise :class:`ConfigError` unless ``value`` is a finite number > 0."""
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or value <= 0
    ):
        raise ConfigError(f"{method}: {name} must be a finite number > 0, got {value!r}")


BN_MODES = ("eval", "train")
"""The mode a gradient-based saliency method scores in (its ``bn_mode`` setting)."""


def check_bn_mode(method: str, value: object) -> None:
    """Raise :class:`ConfigError` unless ``value`` is one of :data:`BN_MODES`."""
    if value not in BN_MODES:
        raise ConfigError(
            f"{method}: unknown bn_mode {value!r}; valid modes: {', '.join(BN_MODES)}"
        )


def scoring_copy(
    model: nn.Module,
    device: torch.device,
    dtype: torch.dtype | None = None,
    mode: str | None = None,
) -> tuple[nn.Module, dict[str, nn.Parameter]]:
    """A deep copy of ``model`` on ``device`` whose only trainable tensors are its prunable weights.

    ``mode`` ("eval" or "train", see :data:`BN_MODES`) sets the copy's mode: "eval" makes
    BatchNorm normalize with its running statistics (and leave them alone) and turns
    dropout off, "train" uses batch statistics (updating the *copy's* running buffers).
    ``None`` keeps the mode ``model`` is in. ``model`` itself — its parameters, buffers,
    ``requires_grad`` flags and mode — is left untouched. Returns the copy and its
    prunable weights by name.
    """
    work = copy.deepcopy(model).to(device)
    if mode is not None:
        check_bn_mode("scoring", mode)
        work.train(mode == "train")
    if dtype is not None:
        work = work.to(dtype)
    for p in work.parameters():
        p.requires_grad_(False)
    weights = prunable_weights(work)
    for w in weights.values():
        w.requires_grad_(True)
    return work, weights


def take_batches(batches: Iterable[Batch], count: int, device: torch.device, method: str) -> list:
    """The first ``count`` batches of one pass over ``batches``, moved to ``device``."""
    out = []
    for x, y in batches:
        out.append((x.to(device), y.to(device)))
        if len(out) == count:
            return out
    raise ConfigError(
        f"{method}: batches={count} but the training data yields only {len(out)} batch(es)"
    )


def grads_or_zeros(
    grads: tuple[torch.Tensor | None, ...], weights: Iterable[torch.Tensor]
) -> list[torch.Tensor]:
    """``torch.autograd.grad(..., allow_unused=True)`` output with ``None`` replaced by zeros."""
    return [torch.zeros_like(w) if g is None else g for g, w in zip(grads, weights)]


def epochs_for(ctx: PruneContext, batches: int) -> float:
    """Training epochs that ``batches`` scoring batches amount to (0 if the epoch length is
    unknown, e.g. for a generator of batches)."""
    try:
        per_epoch = ctx.batches_per_epoch
    except TypeError:
        return 0.0
    return batches / per_epoch if per_epoch > 0 else 0.0


def peek_input_shape(batches: Iterable[Batch], method: str) -> tuple[int, ...]:
    """The shape of one input of the first batch, without a sample axis.

    A loader with ``state_dict``/``load_state_dict`` (like
    :class:`~gemminer.data.loader.BatchLoader`) gets its state back afterwards, so peeking
    does not change the order of later batches.
    """
    state = batches.state_dict() if hasattr(batches, "load_state_dict") else None  # type: ignore[attr-defined]
    try:
        first = next(iter(batches), None)
    finally:
        if state is not None:
            batches.load_state_dict(state)  # type: ignore[attr-defined]
    if first is None:
        raise ConfigError(
            f"{method}: the training data yielded no batch to take the input shape from"
        )
    return tuple(first[0].shape[1:])
