"""One training epoch (the step loop of :class:`~gemminer.training.trainer.Trainer`),
evaluation and BatchNorm recalibration."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from ..errors import GemMinerError
from .checkpoint import EpochProgress
from .progress import Stage, epoch_reporter
from .runtime import SINGLE, STOP_POLL_STEPS, Runtime

Batches = Iterable[tuple[torch.Tensor, torch.Tensor]]


class TrainingDivergedError(GemMinerError):
    """The loss became NaN or infinite."""


@dataclass(frozen=True)
class EpochStats:
    """Mean loss and accuracy of an epoch; ``stopped`` holds the progress of one cut short."""

    loss: float
    accuracy: float
    samples: int
    stopped: EpochProgress | None = None


def evaluation_due(epoch: int, epochs: int, every: int) -> bool:
    """Evaluate after ``epoch``? Every ``every`` epochs (0: never) and always after the last."""
    return epoch == epochs or (every > 0 and epoch % every == 0)


def train_epoch(
    model: nn.Module,
    batches: Batches,
    optimizer: torch.optim.Optimizer,
    device: torch.device,
    *,
    before_step: Callable[[], None] | None = None,
    after_step: Callable[[], None] | None = None,
    progress: Stage | str | None = None,
    resume: EpochProgress | None = None,
    should_stop: Callable[[], bool] | None = None,
    where: str = "",
    runtime: Runtime = SINGLE,
) -> EpochStats:
    """One pass over ``batches``: cross-entropy, backward, ``before_step``, step, ``after_step``.

    Loss and accuracy are accumulated on the device and read once at the end, so the
    step itself never waits for the host; the first step with a NaN or infinite loss is
    tracked on the device too, and reported (with ``where``, e.g. "epoch 3") at the end.
    ``resume`` continues an epoch that was cut short: its first ``resume.steps`` batches
    are drawn (so the data order is the same) but not trained on. When ``should_stop()``
    turns true after a step, the epoch ends early with ``stopped`` set.

    ``runtime`` sets the precision (the forward pass and the loss run under its autocast)
    and, under torchrun, sums the figures over ranks at the end and agrees on stopping
    every :data:`STOP_POLL_STEPS` steps; ``model`` is then the module from
    :meth:`Runtime.training_module`.

    ``progress`` (e.g. ``Stage("mine", 3, 10)``; None: nothing shown) labels the epoch's
    display (:mod:`gemminer.training.progress`): a tqdm bar on a terminal, else a line
    every 30 s with the running loss, read from the device only for that line.
    """
    model.train()
    start = resume.steps if resume else 0
    # A resumed epoch's sums are totals over ranks: rank 0 carries them.
    carried = resume if resume is not None and runtime.is_main else None
    loss_sum = torch.full((), carried.loss_sum if carried else 0.0, device=device)
    correct = torch.full((), carried.correct if carried else 0, device=device, dtype=torch.long)
    samples = carried.samples if carried else 0
    first_bad = torch.full((), -1, device=device, dtype=torch.long)
    steps = len(batches) if hasattr(batches, "__len__") else None  # type: ignore[arg-type]
    reporter = epoch_reporter(progress, steps, runtime, start)
    trained = 0  # images this call trained on, for the images/s shown
    step = 0
    first = 1
    if start and hasattr(batches, "resume_at"):  # a streaming loader skips without decoding
        batches.resume_at(start)  # type: ignore[union-attr]
        first = start + 1
    for step, (x, y) in enumerate(reporter.wrap(batches) if reporter else batches, start=first):
        if step <= start:
            continue
        x = x.to(device, non_blocking=True)
        y = y.to(device, non_blocking=True)
        with runtime.autocast(device):
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
        trained += len(y)
        first_bad = torch.where((first_bad < 0) & ~torch.isfinite(loss.detach()), step, first_bad)
        if reporter is not None:
            reporter.update(step, trained, _running_mean(loss_sum, samples))
        if _stop_now(should_stop, step, runtime):
            _check_finite(first_bad, where, runtime)
            total_loss, total_correct, total = runtime.sum([loss_sum, correct, samples])
            stopped = EpochProgress(step, total_loss, int(total_correct), int(total))
            return EpochStats(total_loss / total, total_correct / total, int(total), stopped)
    total_loss, total_correct, total = runtime.sum([loss_sum, correct, samples])
    if total == 0:
        raise GemMinerError("the training data yielded no batch")
    # each rank's BatchNorm running statistics saw its own slices: average them
    runtime.average_([t for m in _batchnorms(model) for t in (m.running_mean, m.running_var)])
    _check_finite(first_bad, where, runtime)
    mean_loss = total_loss / total
    if not math.isfinite(mean_loss):
        raise TrainingDivergedError(
            f"the training loss became {mean_loss} in {where or 'training'}"
        )
    return EpochStats(mean_loss, total_correct / total, int(total))


def _running_mean(loss_sum: torch.Tensor, samples: int) -> Callable[[], float]:
    """The mean loss so far, read from the device when called (for a progress line)."""
    return lambda: loss_sum.item() / max(samples, 1)


def _stop_now(should_stop: Callable[[], bool] | None, step: int, runtime: Runtime) -> bool:
    """Poll the stop flag; under torchrun every rank agrees, every few steps."""
    if should_stop is None:
        return False
    if not runtime.distributed:
        return should_stop()
    return step % STOP_POLL_STEPS == 0 and runtime.any(should_stop())


def _check_finite(first_bad: torch.Tensor, where: str, runtime: Runtime) -> None:
    bad = runtime.max(int(first_bad.item()))
    if bad >= 0:
        raise TrainingDivergedError(
            f"the training loss became NaN or infinite in {where or 'training'}, step {bad}"
        )


@torch.inference_mode()
def evaluate(
    model: nn.Module, batches: Batches, device: torch.device, runtime: Runtime = SINGLE
) -> EpochStats:
    """Loss and accuracy of ``model`` in eval mode, under :func:`torch.inference_mode`
    (under torchrun: over every rank's share of the data, each rank reading its own).

    Always in full precision, whatever precision trains (``runtime`` only sums over
    ranks): every accuracy a run reports — per epoch, before and after finetuning — is the
    one ``gemminer eval`` and the exported model give."""
    model.eval()
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), device=device, dtype=torch.long)
    samples = 0
    for x, y in batches:
        x = x.to(device, non_blocking=True)
        y = y.to(device, non_blocking=True)
        out = model(x)
        loss_sum += F.cross_entropy(out.float(), y, reduction="sum")
        correct += (out.argmax(1) == y).sum()
        samples += len(y)
    total_loss, total_correct, total = runtime.sum([loss_sum, correct, samples])
    if total == 0:
        raise GemMinerError("the evaluation data yielded no batch")
    return EpochStats(total_loss / total, total_correct / total, int(total))


def evaluate_splits(
    model: nn.Module,
    splits: Mapping[str, Batches],
    device: torch.device,
    runtime: Runtime = SINGLE,
    suffix: str = "",
) -> dict[str, float]:
    """The accuracy on each split, as ``{"<name>_acc<suffix>": accuracy}``."""
    return {
        f"{name}_acc{suffix}": evaluate(model, batches, device, runtime).accuracy
        for name, batches in splits.items()
    }


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
