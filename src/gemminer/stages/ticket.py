"""A run's ticket on disk — ``ticket.pt`` (unmasked weights and re-estimated BatchNorm
buffers), ``mask.pt`` and ``density.txt`` — and its accuracy before finetuning."""

from __future__ import annotations

import torch
from torch import nn

from ..data import DataSplits
from ..errors import RunError
from ..masking import Mask, apply_mask, prunable_weights
from ..methods import METHODS
from ..rundir.runs import RunDir
from ..seeds import derive_seed
from ..settings.config import CALIBRATION_BATCHES, RunConfig
from ..training import evaluate, recalibrate_batchnorm
from ..training.runtime import SINGLE, Runtime
from .assemble import architecture, eval_loaders, train_loader


def require_ticket(run: RunDir) -> None:
    """A :class:`RunError` unless ``run`` holds a ticket (mask.pt and ticket.pt)."""
    for name in ("mask.pt", "ticket.pt"):
        if not run.file(name).is_file():
            raise RunError(
                f"{run.path} has no {name}: run `gemminer prune` (or `mine`) into it first"
            )


def model_shapes(model: nn.Module) -> dict[str, tuple[int, ...]]:
    """The name and shape of every tensor of ``model``'s state dict."""
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def mask_shapes(model: nn.Module) -> dict[str, tuple[int, ...]]:
    """The name and shape of every prunable weight of ``model`` (the keys of its mask)."""
    return {k: tuple(w.shape) for k, w in prunable_weights(model).items()}


def ticket_model(run: RunDir, cfg: RunConfig, num_classes: int) -> tuple[nn.Module, Mask]:
    """The run's model with its ticket weights (unmasked) and BatchNorm buffers, and the mask;
    both files checked against the model (a :class:`RunError` names a damaged one)."""
    require_ticket(run)
    model = architecture(cfg, num_classes)
    state = run.load_tensors("ticket.pt", model_shapes(model))
    mask = run.load_mask(mask_shapes(model))
    model.load_state_dict(state)
    return model, mask


def load_parameters(model: nn.Module, weights: dict[str, torch.Tensor], what: str) -> None:
    """Copy ``weights`` into every parameter of ``model``; a :class:`RunError` naming
    ``what`` when one is missing or has another shape."""
    params = dict(model.named_parameters())
    missing = sorted(set(params) - set(weights))
    if missing:
        raise RunError(f"{what} lack {', '.join(missing)}: wrong model?")
    with torch.no_grad():
        for name, p in params.items():
            if tuple(weights[name].shape) != tuple(p.shape):
                raise RunError(
                    f"{what}: {name} has shape {tuple(weights[name].shape)}, "
                    f"the model expects {tuple(p.shape)}"
                )
            p.copy_(weights[name])


def save_ticket(
    run: RunDir, model: nn.Module, weights: dict[str, torch.Tensor], mask: Mask
) -> None:
    """``ticket.pt`` (``model``'s state with its parameters replaced by ``weights``: the
    ticket's unmasked weights, and its re-estimated BatchNorm buffers), ``mask.pt`` and
    ``density.txt``."""
    state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    state.update({k: v.detach().cpu().clone() for k, v in weights.items()})
    run.save_tensors("ticket.pt", state)
    mask.save(run.file("mask.pt"))
    run.file("density.txt").write_text(mask.report() + "\n")


def calibration_batches(cfg: RunConfig) -> int:
    """How many training batches re-estimate BatchNorm statistics of ``cfg``'s ticket: the
    method's ``bn_recalibration_batches`` setting where it has one (Gem-Miner), else
    :data:`~gemminer.settings.config.CALIBRATION_BATCHES` — the same count as the method's own
    evaluations, so the reported pre-finetune accuracy matches them."""
    settings = METHODS.get(cfg.method).build_settings(cfg.settings)
    return int(getattr(settings, "bn_recalibration_batches", CALIBRATION_BATCHES))


def ticket_accuracy(
    model: nn.Module,
    mask: Mask,
    splits: DataSplits,
    cfg: RunConfig,
    device: torch.device,
    runtime: Runtime = SINGLE,
) -> dict[str, float]:
    """Pre-finetune accuracy of ``model`` ⊙ ``mask`` (``{"test_acc": ..., "val_acc": ...}``):
    BatchNorm statistics re-estimated for the ticket on :func:`calibration_batches`
    training batches, then evaluated on each split. ``model`` keeps the re-estimated
    statistics; its weights are masked in place."""
    apply_mask(model, mask)
    calibration = train_loader(
        splits, cfg.prune.batch_size, device, derive_seed(cfg.seed, "calibration"), augment=False
    )
    recalibrate_batchnorm(model, calibration, device, calibration_batches(cfg))
    return {
        f"{name}_acc": evaluate(model, loader, device, runtime).accuracy
        for name, loader in eval_loaders(splits, device, runtime=runtime).items()
    }
