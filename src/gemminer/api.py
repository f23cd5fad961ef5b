"""The Python API: mine a ticket in any ``nn.Module``, apply it, finetune it.

>>> import gemminer
>>> net = gemminer.init_weights(MyNet(), "signed_constant", seed=0)
>>> result = gemminer.mine(net, train_batches, density=0.0144, epochs=150)
>>> print(result.mask.report())                          # per-layer densities
>>> ticket = gemminer.apply_mask(net, result.mask)       # in place: ticket is net
>>> result.gem.density                                   # the rounded mask (the rare gem)
>>> gemminer.finetune(ticket, result.mask, train_batches, epochs=150)

Data may be a re-iterable of ``(inputs, labels)`` batches (a list, a ``DataLoader``, a
:class:`~gemminer.data.loader.BatchLoader`), or :class:`~gemminer.data.ImageArrays`
(uint8 images), which are then batched, augmented and normalized on the device. Training
reads it once per epoch, so a generator or other one-shot iterator is refused; labels are
class indices below the model's number of outputs.

What is pruned: the ``weight`` of every ``nn.Conv2d`` and ``nn.Linear`` (found by type).
Biases, normalization parameters and every other parameter stay dense; they are not
counted in any density (``Mask.report`` says how many values that is).

Mistakes in the arguments (a density outside (0, 1], a model without Conv2d/Linear
layers, labels the model has no output for, one-shot data) raise a
:class:`~gemminer.errors.GemMinerError` naming the value, before any training.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from .data.base import ImageArrays
from .data.loader import BatchLoader, eval_batches, training_batches
from .errors import DataError, MaskError, ModelError
from .masking import Mask, prunable_modules
from .methods import METHODS
from .methods.gem_miner import (
    MineConfig,
    MiningResult,
    channel_cost,
    channels_of,
    mine_config,
    mine_scores,
    score_model,
)
from .seeds import derive_seed
from .settings.config import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_DEVICE,
    DEFAULT_PRECISION,
    check_density,
    check_whole,
)
from .settings.resolve import finetune_defaults, resolve
from .training import finetune as _finetune
from .training import resolve_device
from .training.progress import show_epochs
from .training.runtime import Runtime, resolve_precision

Data = ImageArrays | Iterable[tuple[torch.Tensor, torch.Tensor]]


def _check_model(model: nn.Module) -> None:
    """A :class:`ModelError` unless ``model`` has something to prune."""
    if not isinstance(model, nn.Module):
        raise ModelError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if not prunable_modules(model):
        raise ModelError(
            f"{type(model).__name__} has no Conv2d or Linear layer, so there is nothing to "
            "prune: gemminer prunes the weights of every torch.nn.Conv2d and torch.nn.Linear "
            "module (found by type); build the model from those layers"
        )


def _check_reiterable(data: Data | None, what: str) -> None:
    """A :class:`DataError` unless ``data`` can be iterated once per epoch."""
    if data is None or isinstance(data, ImageArrays):
        return
    if isinstance(data, Iterator):
        kind = "generator" if inspect.isgenerator(data) else "one-shot iterator"
        raise DataError(
            f"{what} is a {kind} ({type(data).__name__}), used up after one pass, but "
            "training reads the data once per epoch; pass data that can be iterated again: "
            "a list of (inputs, labels) batches, a torch DataLoader, or "
            "gemminer.data.ImageArrays"
        )
    if not isinstance(data, Iterable):
        raise DataError(
            f"{what} must be gemminer.data.ImageArrays or an iterable of (inputs, labels) "
            f"batches (a list, a DataLoader), got {type(data).__name__}"
        )


def _peek(data: Iterable[tuple[torch.Tensor, torch.Tensor]], what: str) -> tuple[Any, Any]:
    """The first batch of ``data``, leaving every random generator as it was, so that
    looking does not change the batches training will see."""
    generators = {
        id(g): g
        for g in (
            getattr(data, "generator", None),
            getattr(getattr(data, "sampler", None), "generator", None),
        )
        if isinstance(g, torch.Generator)
    }
    states = {k: g.get_state() for k, g in generators.items()}
    try:
        with torch.random.fork_rng(devices=[]):  # e.g. a DataLoader's shuffling seed
            first = next(iter(data), None)
    finally:
        for k, g in generators.items():
            g.set_state(states[k])
    if first is None:
        raise DataError(f"{what} holds no batch; give it at least one (inputs, labels) batch")
    if not (
        isinstance(first, (tuple, list))
        and len(first) == 2
        and all(isinstance(t, torch.Tensor) for t in first)
    ):
        got = type(first).__name__
        if isinstance(first, (tuple, list)):
            got += f" of {len(first)}: {', '.join(type(t).__name__ for t in first)}"
        raise DataError(
            f"each batch of {what} must be an (inputs, labels) pair of tensors, got {got}"
        )
    return first[0], first[1]


@torch.no_grad()
def _output_count(model: nn.Module, inputs: torch.Tensor, what: str) -> int | None:
    """The number of outputs (classes) of ``model`` on one sample of ``inputs``, or ``None``
    if its output is not (batch, classes). Leaves the model's train/eval modes as they were."""
    modes = [(m, m.training) for m in model.modules()]
    weight = next(iter(prunable_modules(model).values())).weight
    model.eval()
    try:
        out = model(inputs[:1].to(weight.device))
    except (RuntimeError, TypeError, ValueError) as exc:
        raise DataError(
            f"the model cannot run on the inputs of {what} (shape {tuple(inputs.shape)}): {exc}"
        ) from exc
    finally:
        for m, training in modes:
            m.training = training
    return int(out.shape[1]) if isinstance(out, torch.Tensor) and out.dim() == 2 else None


def _check_data(model: nn.Module, data: Data | None, what: str) -> None:
    """Refuse ``data`` training would fail on later: one-shot iterators, no batch, labels
    that are no class indices, and labels outside the model's outputs (all labels of
    ImageArrays, else the first batch's)."""
    _check_reiterable(data, what)
    if data is None:
        return
    if isinstance(data, (ImageArrays, BatchLoader)):
        if not len(data.labels):
            raise DataError(f"{what} holds no images")
        inputs, labels = data.images[:1].float() / 255, data.labels
    else:
        inputs, labels = _peek(data, what)
    if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        raise DataError(
            f"{what}'s labels are {str(labels.dtype).removeprefix('torch.')}: they must be "
            "integer class indices 0, 1, ... (e.g. labels.long())"
        )
    outputs = _output_count(model, inputs, what)
    if outputs is None or not labels.numel():
        return  # an output that is not one score per class
    low, high = int(labels.min()), int(labels.max())
    bad = low if low < 0 else high if high >= outputs else None
    if bad is not None:
        raise DataError(
            f"{what} holds label {bad} but the model has {outputs} outputs (labels are class "
            f"indices 0 to {outputs - 1}); give the model's last layer as many outputs as "
            "there are classes, or relabel the data to 0, 1, ..."
        )


def _input_shape(data: Data, what: str) -> tuple[int, ...]:
    """One input's shape (channels, height, width): what multiply-adds are counted for."""
    if isinstance(data, (ImageArrays, BatchLoader)):
        return tuple(data.images.shape[1:])
    inputs, _ = _peek(data, what)
    return tuple(inputs.shape[1:])


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
    """``data`` itself, or batches of ImageArrays: shuffled and augmented (``train``; not
    augmented and whole on every rank with ``augment=False``, for BatchNorm calibration),
    as the command line's stages build them (:func:`~gemminer.data.loader.training_batches`),
    else in order."""
    if data is None or not isinstance(data, ImageArrays):
        return data
    if mean is None or std is None:
        mean, std = _channel_stats(data)
    shard = (runtime.rank, runtime.world_size) if runtime else (0, 1)
    if train:
        return training_batches(
            data,
            batch_size=batch_size,
            mean=mean,
            std=std,
            device=device,
            seed=seed,
            calibration=not augment,
            shard=shard,
        )
    return eval_batches(data, batch_size=batch_size, mean=mean, std=std, device=device, shard=shard)


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


def _given(**values: Any) -> dict[str, Any]:
    return {key: value for key, value in values.items() if value is not None}


def _mine_config(**values: Any) -> MineConfig:
    """Gem-Miner's configuration of :func:`mine`'s arguments (``None``: not given), chosen
    by the command line's resolver, so ``mine(...)`` and ``gemminer mine`` agree."""
    settings = ("freeze_schedule", "finetune_mask", "granularity", "channel_gradient")
    options = _given(**{k: v for k, v in values.items() if k not in (*settings, "lam")})
    options.update(_given(**{"lambda": values["lam"]}), method="gem-miner")
    options["set"] = _given(**{k: values[k] for k in settings})
    run = resolve(options)
    return mine_config(run.prune, METHODS.get(run.method).build_settings(run.settings))


def mine(
    model: nn.Module,
    train_data: Data,
    *,
    density: float,
    epochs: int,
    lam: float | None = None,
    period: int | None = None,
    lr: float | None = None,
    optimizer: str | None = None,
    regularizer: str | None = None,
    freeze_schedule: str | None = None,
    finetune_mask: str | None = None,
    granularity: str | None = None,
    channel_gradient: str | None = None,
    within: Mapping[str, torch.Tensor] | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    test_data: Data | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    device: str = DEFAULT_DEVICE,
    seed: int = 0,
    progress: bool = False,
    precision: str = DEFAULT_PRECISION,
    compile: bool = False,
    runtime: Runtime | None = None,
) -> MiningResult:
    """Find a ``density`` ticket in ``model``'s current weights with Gem-Miner.

    ``model`` is not modified: a copy is converted to score layers. The settings are
    resolved as ``gemminer mine`` resolves its flags (:func:`gemminer.settings.resolve.resolve`):
    what is ``None`` takes the paper's ResNet-20 row (Table 8) nearest to ``density`` —
    its optimizer, λ and regularizer, the period scaled to ``epochs`` and, for SGD, the
    LR × 150/``epochs`` for shorter runs (the same summed LR; Adam's LR is never scaled,
    :meth:`gemminer.settings.recipe.Recipe.mining_at`). ``freeze_schedule`` and ``finetune_mask``
    default to the authors' runs (see :mod:`gemminer.methods.gem_miner`).
    ``granularity="channel"`` mines a score per channel instead, ``density`` then being the
    fraction of the multiply-adds kept, and ``channel_gradient`` (``"mean"``, ``"sum"``,
    or ``"auto"``, the default: the mean under SGD, the sum under Adam) says how a
    channel's score gathers its weights' gradients
    (:func:`~gemminer.methods.gem_miner.channel_gradient`);
    ``granularity="channel_from_weight"`` mines per weight, then returns the channels
    that ticket keeps most of, ``density`` of the multiply-adds (the result's ``mask``;
    its ``gem`` is the per-weight rare gem). ``within``: a ticket's mask
    (e.g. ``result.mask`` of a channel run on the same ``model``) whose pruned weights stay
    pruned: mining keeps a subset of its weights, ``density`` (below the mask's) being, as
    always, the fraction of all the weights — channels first, then weights inside them.
    Returns the
    ticket to finetune as ``result.mask`` (the flags q by default; keyed by ``model``'s
    weight names), the rounded mask — the "rare gem", accurate before finetuning — as
    ``result.gem``, the per-epoch history, and the trained score model as
    ``result.model``.
    Only the weights of ``model``'s Conv2d and Linear layers are pruned; biases and
    normalization parameters (and any other parameter) are not pruned and not counted in
    ``density`` — ``result.mask.report()`` ends with how many values stay dense.
    ``train_data`` and ``test_data`` must be re-iterable (see the module docstring); they,
    ``density`` (in (0, 1]), ``epochs`` (>= 1) and the model (it needs a Conv2d or Linear
    layer, and an output per label) are checked before training, raising a
    :class:`~gemminer.errors.GemMinerError` that names the bad value.
    ``seed`` seeds the scores, the batch order and augmentation of ImageArrays and the
    BatchNorm calibration batches, each through :func:`gemminer.seeds.derive_seed` as
    ``gemminer mine --seed`` does: with weights initialized from
    ``derive_seed(seed, "weights")`` and the run's data, ``mean`` and ``std``, the mask
    is the command line's.
    ``precision="bf16"`` trains under bfloat16 autocast (scores stay fp32), ``"auto"``
    picks bf16 where the device runs it fast
    (:func:`~gemminer.training.runtime.resolve_precision`), ``compile`` uses
    ``torch.compile``; ``runtime`` (e.g. from
    :func:`gemminer.training.runtime.start_runtime` under torchrun) replaces both.
    """
    check_density(density)
    check_whole(epochs, 1, "epochs")
    check_whole(batch_size, 1, "batch size")
    dev = resolve_device(device)  # a device this PyTorch cannot use fails first
    _check_model(model)
    _check_data(model, train_data, "train_data")
    _check_data(model, test_data, "test_data")
    runtime = runtime or Runtime(precision=resolve_precision(precision, device), compile=compile)
    cfg = _mine_config(
        density=density,
        epochs=epochs,
        batch_size=batch_size,
        optimizer=optimizer,
        lr=lr,
        lam=lam,
        period=period,
        regularizer=regularizer,
        freeze_schedule=freeze_schedule,
        finetune_mask=finetune_mask,
        granularity=granularity,
        channel_gradient=channel_gradient,
    )
    scores_seed = torch.Generator().manual_seed(derive_seed(seed, "scores"))
    shape = _input_shape(train_data, "train_data") if cfg.granularity != "weight" else None
    to_channels = cfg.granularity == "channel_from_weight"
    cost = channel_cost(model, shape, cfg)[1] if to_channels else None  # checked first
    scored, space = score_model(model, cfg, scores_seed, shape, within)
    scored.to(device=dev, memory_format=torch.channels_last)  # as the loader's batches
    train = _batches(
        train_data,
        batch_size=batch_size,
        device=dev,
        train=True,
        seed=derive_seed(seed, "prune-data"),
        mean=mean,
        std=std,
        runtime=runtime,
    )
    calibration = _batches(
        train_data,
        batch_size=batch_size,
        device=dev,
        train=True,
        seed=derive_seed(seed, "calibration"),
        mean=mean,
        std=std,
        augment=False,
    )
    with show_epochs(progress):
        result = mine_scores(
            scored,
            train,
            cfg,
            dev,
            eval_batches=_test_batches(test_data, dev, mean, std, runtime),
            calibration_batches=calibration if isinstance(train_data, ImageArrays) else None,
            progress=progress,
            runtime=runtime,
            space=space,
            start_density=1.0 if within is None else space.flag_fraction(),
        )
    return channels_of(result, model, cost, cfg.density)[0] if cost is not None else result


def finetune(
    model: nn.Module,
    mask: Mask,
    train_data: Data,
    *,
    epochs: int,
    lr: float | None = None,
    optimizer: str | None = None,
    weight_decay: float | None = None,
    schedule: str | None = None,
    milestones: tuple[float, ...] | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    test_data: Data | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    device: str = DEFAULT_DEVICE,
    seed: int = 0,
    progress: bool = False,
    precision: str = DEFAULT_PRECISION,
    compile: bool = False,
    runtime: Runtime | None = None,
) -> list[dict]:
    """Train ``model`` in place with ``mask`` fixed (pruned weights stay exactly zero).

    What is ``None`` takes Table 15's ResNet-20 row nearest to the mask's density
    (:func:`gemminer.settings.resolve.finetune_defaults`: SGD, LR 0.01 below 50 % density and 0.1
    at it, × 0.1 after 80/150 and 120/150 of the epochs, weight decay 1e-4). Returns
    per-epoch records.
    Biases and normalization parameters are trained too (they were never pruned).
    The mask, ``epochs`` and the data are checked first, as in :func:`mine`; ``seed``
    (the batch order and augmentation of ImageArrays, as ``gemminer finetune`` derives
    it), ``precision``, ``compile`` and ``runtime`` as in :func:`mine`.
    """
    check_whole(epochs, 1, "epochs")
    check_whole(batch_size, 1, "batch size")
    _check_model(model)
    if not isinstance(mask, Mask):
        raise MaskError(
            f"mask must be a gemminer.Mask, got {type(mask).__name__}; "
            "wrap a dict of 0/1 tensors keyed by weight name: gemminer.Mask(tensors)"
        )
    mask.check(model)
    dev = resolve_device(device)  # a device this PyTorch cannot use fails first
    _check_data(model, train_data, "train_data")
    _check_data(model, test_data, "test_data")
    runtime = runtime or Runtime(precision=resolve_precision(precision, device), compile=compile)
    row = finetune_defaults(mask.density, epochs, batch_size)
    given = _given(
        name=optimizer,
        lr=lr,
        weight_decay=weight_decay,
        schedule=schedule,
        milestones=milestones,
    )
    cfg = dataclasses.replace(row, optim=dataclasses.replace(row.optim, **given))
    train = _batches(
        train_data,
        batch_size=batch_size,
        device=dev,
        train=True,
        seed=derive_seed(seed, "finetune-data"),
        mean=mean,
        std=std,
        runtime=runtime,
    )
    with show_epochs(progress):
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
