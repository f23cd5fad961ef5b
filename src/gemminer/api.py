"""The Python API: mine a ticket in any ``nn.Module``, apply it, finetune it.

>>> import gemminer
>>> net = gemminer.init_weights(MyNet(), "signed_constant", seed=0)
>>> result = gemminer.mine(net, train_batches, density=0.0144, epochs=150)
>>> ticket = gemminer.apply_mask(net, result.mask)       # original weights ⊙ mask
>>> result.gem.density                                   # the rounded mask (the rare gem)
>>> gemminer.finetune(ticket, result.mask, train_batches, epochs=150)

Data may be a re-iterable of ``(inputs, labels)`` batches (a ``DataLoader``, a
:class:`~gemminer.data.loader.BatchLoader`), or :class:`~gemminer.data.ImageArrays`
(uint8 images), which are then batched, augmented and normalized on the device.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Sequence

import torch
from torch import nn

from .config import FinetuneConfig, MineConfig, OptimConfig
from .data.base import ImageArrays
from .data.loader import BatchLoader
from .masking import Mask, to_score_model
from .methods.gem_miner import MiningResult, mine_scores
from .recipe import paper_mining_defaults
from .training import finetune as _finetune
from .training import resolve_device
from .training.runtime import Runtime, resolve_precision

Data = ImageArrays | Iterable[tuple[torch.Tensor, torch.Tensor]]


def _channel_stats(data: ImageArrays) -> tuple[tuple[float, ...], tuple[float, ...]]:
    x = data.images.float().div_(255)
    return tuple(x.mean((0, 2, 3)).tolist()), tuple(x.std((0, 2, 3)).tolist())


def _batches(
    data: Data | None,
    *,
    batch_size: int,
    device: torch.device,
    train: bool,
    seed: int,
    mean: Sequence[float] | None,
    std: Sequence[float] | None,
    augment: bool = True,
    runtime: Runtime | None = None,
) -> Iterable[tuple[torch.Tensor, torch.Tensor]] | None:
    if data is None or not isinstance(data, ImageArrays):
        return data
    if mean is None or std is None:
        mean, std = _channel_stats(data)
    return BatchLoader(
        data,
        batch_size=batch_size,
        mean=mean,
        std=std,
        device=device,
        train=train,
        augmentation="crop-flip" if augment else "none",
        seed=seed,
        shard=(runtime.rank, runtime.world_size) if runtime and augment else (0, 1),
    )


def _test_batches(
    data: Data | None,
    device: torch.device,
    mean: Sequence[float] | None,
    std: Sequence[float] | None,
    runtime: Runtime,
) -> dict[str, Iterable[tuple[torch.Tensor, torch.Tensor]]] | None:
    """``{"test": batches}`` in order, unaugmented (each torchrun rank reads its share)."""
    batches = _batches(
        data,
        batch_size=500,
        device=device,
        train=False,
        seed=0,
        mean=mean,
        std=std,
        runtime=runtime,
    )
    return {"test": batches} if batches is not None else None


def mine(
    model: nn.Module,
    train_data: Data,
    *,
    density: float,
    epochs: int,
    lam: float | None = None,
    period: int | None = None,
    lr: float | None = None,
    optimizer: str = "sgd",
    regularizer: str = "l2",
    freeze_schedule: str = "authors",
    finetune_mask: str = "flags",
    batch_size: int = 128,
    test_data: Data | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    device: str = "auto",
    seed: int = 0,
    progress: bool = False,
    precision: str = "fp32",
    compile: bool = False,
    runtime: Runtime | None = None,
) -> MiningResult:
    """Find a ``density`` ticket in ``model``'s current weights with Gem-Miner.

    ``model`` is not modified: a copy is converted to score layers. ``lam``, ``period``
    and ``lr`` default to the paper's ResNet-20 values (Table 8) for the nearest density,
    with the period scaled to ``epochs`` and, as ``gemminer mine`` does, the LR per
    ``optimizer``: SGD takes Table 8's LR × 150/``epochs`` for shorter runs (the same
    summed LR); Adam takes 0.01 (the authors' Adam LR) at any ``epochs``
    (:meth:`gemminer.recipe.Recipe.mining_at`). An explicit ``lr`` always wins.
    ``freeze_schedule`` and ``finetune_mask`` default to the authors' runs (see
    :mod:`gemminer.methods.gem_miner`). Returns the ticket to finetune as ``result.mask``
    (the flags q by default; keyed by ``model``'s weight names), the rounded mask — the
    "rare gem", accurate before finetuning — as ``result.gem``, the per-epoch history,
    and the trained score model as ``result.model``.
    ``precision="bf16"`` trains under bfloat16 autocast (scores stay fp32), ``"auto"``
    picks bf16 where the device runs it fast
    (:func:`~gemminer.training.runtime.resolve_precision`), ``compile`` uses
    ``torch.compile``; ``runtime`` (e.g. from
    :func:`gemminer.training.runtime.start_runtime` under torchrun) replaces both.
    """
    runtime = runtime or Runtime(precision=resolve_precision(precision, device), compile=compile)
    d_period, d_lr, d_lam = paper_mining_defaults("", density, epochs, optimizer=optimizer)
    cfg = MineConfig(
        density=density,
        epochs=epochs,
        period=period if period is not None else d_period,
        lam=lam if lam is not None else d_lam,
        regularizer=regularizer,
        freeze_schedule=freeze_schedule,
        finetune_mask=finetune_mask,
        batch_size=batch_size,
        optim=OptimConfig(name=optimizer, lr=lr if lr is not None else d_lr, schedule="cosine"),
    )
    dev = resolve_device(device)
    scored = to_score_model(copy.deepcopy(model), torch.Generator().manual_seed(seed))
    scored.to(device=dev, memory_format=torch.channels_last)  # as the loader's batches
    train = _batches(
        train_data,
        batch_size=batch_size,
        device=dev,
        train=True,
        seed=seed + 1,
        mean=mean,
        std=std,
        runtime=runtime,
    )
    calibration = _batches(
        train_data,
        batch_size=batch_size,
        device=dev,
        train=True,
        seed=seed + 2,
        mean=mean,
        std=std,
        augment=False,
    )
    return mine_scores(
        scored,
        train,
        cfg,
        dev,
        eval_batches=_test_batches(test_data, dev, mean, std, runtime),
        calibration_batches=calibration if isinstance(train_data, ImageArrays) else None,
        progress=progress,
        runtime=runtime,
    )


def finetune(
    model: nn.Module,
    mask: Mask,
    train_data: Data,
    *,
    epochs: int,
    lr: float = 0.01,
    optimizer: str = "sgd",
    weight_decay: float = 1e-4,
    schedule: str = "multistep",
    milestones: tuple[float, ...] = (80 / 150, 120 / 150),
    batch_size: int = 128,
    test_data: Data | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    device: str = "auto",
    seed: int = 0,
    progress: bool = False,
    precision: str = "fp32",
    compile: bool = False,
    runtime: Runtime | None = None,
) -> list[dict]:
    """Train ``model`` in place with ``mask`` fixed (pruned weights stay exactly zero).

    Defaults are Table 15's for ResNet-20 below 50 % density. Returns per-epoch records.
    ``precision``, ``compile`` and ``runtime`` as in :func:`mine`.
    """
    runtime = runtime or Runtime(precision=resolve_precision(precision, device), compile=compile)
    cfg = FinetuneConfig(
        epochs=epochs,
        batch_size=batch_size,
        optim=OptimConfig(
            name=optimizer,
            lr=lr,
            weight_decay=weight_decay,
            schedule=schedule,
            milestones=milestones,
        ),
    )
    dev = resolve_device(device)
    train = _batches(
        train_data,
        batch_size=batch_size,
        device=dev,
        train=True,
        seed=seed,
        mean=mean,
        std=std,
        runtime=runtime,
    )
    return _finetune(
        model,
        mask,
        train,
        cfg,
        dev,
        eval_batches=_test_batches(test_data, dev, mean, std, runtime),
        progress=progress,
        runtime=runtime,
    )
