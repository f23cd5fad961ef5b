"""The epoch loop shared by mining and finetuning, evaluation and BN recalibration."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F
from tqdm.auto import tqdm

from ..errors import GemMinerError

Batches = Iterable[tuple[torch.Tensor, torch.Tensor]]


class TrainingDivergedError(GemMinerError):
    """The loss became NaN or infinite."""


@dataclass(frozen=True)
class EpochStats:
    loss: float
    accuracy: float
    samples: int


def evaluation_due(epoch: int, epochs: int, every: int) -> bool:
    """Evaluate after ``epoch``? Every ``every`` epochs (0: never) and always after the last."""
    return epoch == epochs or (every > 0 and epoch % every == 0)


def resolve_device(name: str = "auto") -> torch.device:
    """``"auto"`` → CUDA when present, else CPU; anything else is passed to ``torch.device``."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def _progress(batches: Batches, desc: str | None) -> Batches:
    if desc is None:
        return batches
    total = len(batches) if hasattr(batches, "__len__") else None  # type: ignore[arg-type]
    # disable=None: bars only on a terminal, so logs and CI output stay readable
    return tqdm(batches, total=total, desc=desc, leave=False, dynamic_ncols=True, disable=None)


def train_epoch(
    model: nn.Module,
    batches: Batches,
    optimizer: torch.optim.Optimizer,
    device: torch.device,
    *,
    before_step: Callable[[], None] | None = None,
    after_step: Callable[[], None] | None = None,
    progress: str | None = None,
) -> EpochStats:
    """One pass over ``batches``: cross-entropy, backward, ``before_step``, step, ``after_step``.

    Loss and accuracy are accumulated on the device and read once at the end, so the
    step itself never waits for the host.
    """
    model.train()
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), device=device, dtype=torch.long)
    samples = 0
    for x, y in _progress(batches, progress):
        x = x.to(device, non_blocking=True)
        y = y.to(device, non_blocking=True)
        out = model(x)
        loss = F.cross_entropy(out, y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if before_step is not None:
            before_step()
        optimizer.step()
        if after_step is not None:
            after_step()
        loss_sum += loss.detach() * len(y)
        correct += (out.detach().argmax(1) == y).sum()
        samples += len(y)
    if samples == 0:
        raise GemMinerError("the training data yielded no batch")
    mean_loss = loss_sum.item() / samples
    if not math.isfinite(mean_loss):
        raise TrainingDivergedError(f"the training loss became {mean_loss}")
    return EpochStats(mean_loss, correct.item() / samples, samples)


@torch.no_grad()
def evaluate(model: nn.Module, batches: Batches, device: torch.device) -> EpochStats:
    """Loss and accuracy of ``model`` in eval mode."""
    model.eval()
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), device=device, dtype=torch.long)
    samples = 0
    for x, y in batches:
        x = x.to(device, non_blocking=True)
        y = y.to(device, non_blocking=True)
        out = model(x)
        loss_sum += F.cross_entropy(out, y, reduction="sum")
        correct += (out.argmax(1) == y).sum()
        samples += len(y)
    if samples == 0:
        raise GemMinerError("the evaluation data yielded no batch")
    return EpochStats(loss_sum.item() / samples, correct.item() / samples, samples)


def _batchnorms(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    return [
        m
        for m in model.modules()
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats
    ]


@torch.no_grad()
def recalibrate_batchnorm(
    model: nn.Module, batches: Batches, device: torch.device, num_batches: int
) -> None:
    """Re-estimate BatchNorm running statistics for the current mask.

    The mask changes during mining, so running statistics gathered along the way belong
    to earlier masks. This resets them and averages over ``num_batches`` training
    batches (training itself only uses batch statistics, so it is unaffected).
    """
    norms = _batchnorms(model)
    if not norms or num_batches <= 0:
        return
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average
    model.train()
    for i, (x, _) in enumerate(batches):
        if i >= num_batches:
            break
        model(x.to(device, non_blocking=True))
    for m, momentum in zip(norms, momenta):
        m.momentum = momentum
