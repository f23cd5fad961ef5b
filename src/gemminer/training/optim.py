"""Optimizers and per-epoch learning-rate schedules built from :class:`OptimConfig`."""

from __future__ import annotations

from collections.abc import Iterable

import torch

from ..settings.config import OptimConfig


def build_optimizer(
    params: Iterable[torch.nn.Parameter], cfg: OptimConfig
) -> torch.optim.Optimizer:
    """SGD or Adam, as multi-tensor (``foreach``) updates on every device: a few operators
    a step for all parameters instead of a few per parameter (PyTorch's default on CUDA
    only; on the CPU the same values as its per-parameter loop, bit for bit)."""
    params = list(params)
    if cfg.name == "sgd":
        return torch.optim.SGD(
            params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay, foreach=True
        )
    return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay, foreach=True)


def milestone_epochs(cfg: OptimConfig, epochs: int) -> list[int]:
    """Milestones (fractions of the run) as epoch numbers, e.g. 80/150 of 150 → 80."""
    return sorted({max(1, round(f * epochs)) for f in cfg.milestones})


def build_scheduler(
    optimizer: torch.optim.Optimizer, cfg: OptimConfig, epochs: int
) -> torch.optim.lr_scheduler.LRScheduler:
    """A scheduler stepped once per epoch."""
    if cfg.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs)
    if cfg.schedule == "multistep":
        return torch.optim.lr_scheduler.MultiStepLR(
            optimizer, milestones=milestone_epochs(cfg, epochs), gamma=cfg.gamma
        )
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)
