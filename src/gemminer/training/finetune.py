"""Weight training of a ticket: the mask is fixed and pruned weights stay exactly zero."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from ..masking import Mask, apply_mask, prunable_weights
from ..settings.config import FinetuneConfig
from .checkpoint import Checkpoint
from .loop import Batches, EpochStats
from .optim import build_optimizer
from .runtime import SINGLE, Runtime
from .trainer import EpochCallback, EvaluatingHooks, Trainer


class MaskedWeights:
    """Keeps pruned weights at zero under any optimizer, in two multi-tensor kernels a step.

    :meth:`mask_gradients` (between backward and the optimizer step) zeroes the gradients of
    pruned entries, so momentum and Adam statistics of pruned weights stay zero, and
    :meth:`enforce` (after the step) multiplies the weights by the mask, so weight decay or
    any optimizer rule cannot revive them. The masks are kept in each weight's own memory
    layout, so both are single ``torch._foreach_mul_`` calls over every layer.
    """

    def __init__(self, model: nn.Module, mask: Mask) -> None:
        apply_mask(model, mask)
        self.weights = list(prunable_weights(model).values())
        self.masks = [
            torch.empty_like(w).copy_(mask[name])  # empty_like keeps w's strides
            for name, w in prunable_weights(model).items()
        ]

    @torch.no_grad()
    def mask_gradients(self) -> None:
        pairs = [(w.grad, m) for w, m in zip(self.weights, self.masks) if w.grad is not None]
        if pairs:
            torch._foreach_mul_([g for g, _ in pairs], [m for _, m in pairs])

    @torch.no_grad()
    def enforce(self) -> None:
        torch._foreach_mul_(self.weights, self.masks)


class MaskedTraining(EvaluatingHooks):
    """Weight training with ``mask`` fixed (finetuning, and every round of IMP): pruned
    weights are kept at zero after each step (:class:`MaskedWeights`); each epoch's
    record holds its density and, when due, the accuracy on each of ``eval_batches``."""

    stage = "finetune"
    where = "finetuning"
    phase = "finetune"
    #: Epochs before this run's first (an IMP round's), left out when evaluation is due.
    offset = 0

    def __init__(
        self,
        model: nn.Module,
        mask: Mask,
        device: torch.device,
        epochs: int,
        *,
        eval_batches: Mapping[str, Batches] | None = None,
        eval_every: int = 1,
        runtime: Runtime = SINGLE,
    ) -> None:
        super().__init__(
            model, device, epochs, eval_batches=eval_batches, eval_every=eval_every, runtime=runtime
        )
        self.mask = mask
        self.masked = MaskedWeights(model, mask)
        self.before_step = self.masked.mask_gradients
        self.after_step = self.masked.enforce

    def after_epoch(self, epoch: int, stats: EpochStats, lr: float) -> dict:
        record = super().after_epoch(epoch, stats, lr)
        record["density"] = self.mask.density
        record.update(self.evaluation(epoch - self.offset))
        return record

    def evaluation(self, epoch: int) -> dict[str, float]:
        """The accuracies after ``epoch`` (of this run's ``epochs``), if evaluation is due."""
        return self.accuracies() if self.evaluating_after(epoch) else {}


def finetune(
    model: nn.Module,
    mask: Mask,
    train_batches: Batches,
    cfg: FinetuneConfig,
    device: torch.device,
    *,
    eval_batches: Mapping[str, Batches] | None = None,
    eval_every: int = 1,
    on_epoch: EpochCallback | None = None,
    progress: bool = False,
    checkpoint: Checkpoint | None = None,
    runtime: Runtime = SINGLE,
) -> list[dict]:
    """Train every parameter of ``model`` with ``mask`` fixed; returns per-epoch records.

    ``model`` should hold the ticket's original initialization; it is trained in place.
    ``checkpoint`` (optional) saves the state every epoch and on a stop signal, and resumes.
    ``runtime``: precision, compilation, and DDP under torchrun. ``progress`` shows each
    epoch (:mod:`.progress`); every finished epoch is logged at INFO on the ``gemminer`` logger.
    """
    model.to(device)
    for p in model.parameters():
        p.requires_grad_(True)
    hooks = MaskedTraining(
        model,
        mask,
        device,
        cfg.epochs,
        eval_batches=eval_batches,
        eval_every=eval_every,
        runtime=runtime,
    )
    trainer = Trainer.scheduled(
        model,
        build_optimizer(model.parameters(), cfg.optim),
        cfg.optim,
        train_batches,
        device,
        cfg.epochs,
        hooks,
        checkpoint=checkpoint,
        on_epoch=on_epoch,
        progress=progress,
        runtime=runtime,
    )
    return trainer.fit()
