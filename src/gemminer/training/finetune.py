"""Weight training of a ticket: the mask is fixed and pruned weights stay exactly zero."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping

import torch
from torch import nn

from ..config import FinetuneConfig
from ..masking import Mask, apply_mask, prunable_weights
from .checkpoint import Checkpoint, Resumable
from .loop import Batches, evaluate, evaluation_due, train_epoch
from .optim import build_optimizer, build_scheduler
from .progress import Stage, log_epoch
from .runtime import SINGLE, Runtime

EpochCallback = Callable[[dict], None]


class MaskedWeights:
    """Keeps pruned weights at zero under any optimizer.

    Gradients of pruned entries are zeroed by a hook (so momentum and Adam statistics of
    pruned weights stay zero), and :meth:`enforce` multiplies the weights by the mask
    after each step (so weight decay or any optimizer rule cannot revive them).
    """

    def __init__(self, model: nn.Module, mask: Mask) -> None:
        apply_mask(model, mask)
        self._pairs: list[tuple[nn.Parameter, torch.Tensor]] = []
        self._hooks = []
        for name, w in prunable_weights(model).items():
            m = mask[name].to(device=w.device, dtype=w.dtype)
            self._pairs.append((w, m))
            self._hooks.append(w.register_hook(lambda g, m=m: g * m))

    @torch.no_grad()
    def enforce(self) -> None:
        for w, m in self._pairs:
            w.mul_(m)

    def remove(self) -> None:
        for h in self._hooks:
            h.remove()
        self._hooks.clear()


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
    masked = MaskedWeights(model, mask)
    net = runtime.training_module(model, device)
    optimizer = build_optimizer(model.parameters(), cfg.optim)
    scheduler = build_scheduler(optimizer, cfg.optim, cfg.epochs)
    state = Resumable(checkpoint, model, optimizer, scheduler, {"train": train_batches})
    first, resume, history, _ = state.restore()
    try:
        for epoch in range(first, cfg.epochs + 1):
            start = time.perf_counter()
            lr = optimizer.param_groups[0]["lr"]
            state.epoch_started()
            stats = train_epoch(
                net,
                train_batches,
                optimizer,
                device,
                after_step=masked.enforce,
                progress=Stage("finetune", epoch, cfg.epochs) if progress else None,
                resume=resume,
                should_stop=state.should_stop,
                where=f"finetuning epoch {epoch}",
                runtime=runtime,
            )
            resume = None
            if stats.stopped is not None:
                raise state.interrupted(epoch, stats.stopped, history)
            scheduler.step()
            record = {
                "phase": "finetune",
                "epoch": epoch,
                "loss": stats.loss,
                "train_acc": stats.accuracy,
                "lr": lr,
                "density": mask.density,
            }
            if eval_batches is not None and evaluation_due(epoch, cfg.epochs, eval_every):
                for name, batches in eval_batches.items():
                    record[f"{name}_acc"] = evaluate(model, batches, device, runtime).accuracy
            record["seconds"] = time.perf_counter() - start
            history.append(record)
            log_epoch(record, cfg.epochs, runtime)
            state.epoch_done(epoch, history)
            if on_epoch is not None:
                on_epoch(record)
    finally:
        masked.remove()
    return history
