"""The prune stage: find a ticket with any registered method into a run folder.

Every method's ticket is then judged by the same code: BatchNorm statistics re-estimated
for it, its pre-finetune accuracy measured, its forward multiply-adds per image counted
(dense and kept, :mod:`gemminer.masking.flops`), and ticket.pt, mask.pt, density.txt,
scores.pt (score-based methods) and summary.json written.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ..data import DataSplits
from ..errors import ConfigError, RunError
from ..masking import Mask, format_density, prunable_weights
from ..masking.flops import FlopCount, count_flops, format_flops, weight_uses
from ..methods import METHODS, MethodSpec, PruneContext, PruneResult, targets_density
from ..rundir.runs import RunDir
from ..rundir.summary import RunSummary
from ..seeds import derive_seed
from ..settings.config import RunConfig
from ..settings.explain import explain_settings
from ..training import resolve_device
from ..training.checkpoint import Checkpoint, stop_on_signals
from ..training.runtime import SINGLE, Runtime
from .assemble import architecture, build_model, eval_loaders, load_data, train_loader
from .claim import PRUNE_CHECKPOINT, Claim, claim_folder, mask_part, plan_folder, settings_key
from .describe import Log, diverged_hint, echo, metrics_writer, quiet, where
from .ticket import load_parameters, save_ticket, ticket_accuracy, ticket_model

#: A ticket this far below its target density (relative) earns a warning.
SHORTFALL_WARNING = 0.10


def prune_run(
    cfg: RunConfig,
    out: str | Path,
    *,
    overwrite: bool = False,
    progress: bool = True,
    log: Log = echo,
    tensorboard: bool = False,
    runtime: Runtime = SINGLE,
) -> RunSummary:
    """Find a ticket with ``cfg.method`` into run folder ``out``; returns the summary.

    A folder that already holds a finished run with the same settings is left as it
    is; one with other settings is refused unless ``overwrite``. Under torchrun
    (``runtime``) every rank runs this; rank 0 alone prints and writes.
    """
    spec = METHODS.get(cfg.method)
    settings = spec.build_settings(cfg.settings)
    run = RunDir(out, writable=runtime.is_main)
    log = log if runtime.is_main else quiet
    with stop_on_signals(runtime.deadline) as stop:
        checkpoint = Checkpoint(
            run.file(PRUNE_CHECKPOINT),
            settings_key(mask_part(cfg).to_dict()),
            stop,
            writable=runtime.is_main,
        )
        claim = plan_folder(run, cfg, overwrite, log, checkpoint) if runtime.is_main else None
        if not runtime.any(claim is not None):  # every rank learns rank 0's decision
            return run.summary()
        summary = _prune(
            run,
            cfg,
            spec,
            settings,
            claim or Claim(),
            checkpoint,
            progress and runtime.is_main,
            log,
            tensorboard and runtime.is_main,
            runtime,
        )
    checkpoint.remove()
    runtime.barrier()  # every file is written before any rank reads it
    return summary


def _prune(
    run: RunDir,
    cfg: RunConfig,
    spec: MethodSpec,
    settings: object,
    claim: Claim,
    checkpoint: Checkpoint,
    progress: bool,
    log: Log,
    tensorboard: bool,
    runtime: Runtime,
) -> RunSummary:
    """Load the data and the model, then claim the folder (rank 0), find the ticket, judge
    and save it."""
    device = resolve_device(cfg.device)
    splits = load_data(cfg)
    model = build_model(cfg, splits.num_classes).to(
        device=device, memory_format=torch.channels_last
    )
    within = within_ticket(cfg, model, splits.num_classes)
    claim_folder(run, cfg, claim, log)
    runtime.barrier()  # the folder is claimed before any rank reads its checkpoint
    original = {n: p.detach().cpu().clone() for n, p in model.named_parameters()}
    shapes = architecture(cfg, splits.num_classes)  # on the CPU: counts the multiply-adds
    uses = weight_uses(shapes, input_shape(splits))
    ctx = _context(cfg, model, splits, device, run, checkpoint, progress, log, tensorboard, runtime)
    ctx.input_shape = input_shape(splits)
    if within is not None:
        ctx.within = within.mask
    log(_describe_start(cfg, splits, device, runtime))
    for line in explain_settings(cfg):
        log(f"  {line}")
    if within is not None:
        log(
            f"  within the ticket of {cfg.within}: {format_density(within.mask.density)}, "
            "its pruned weights kept pruned"
        )
    checkpoint.start_clock()  # a resumed run counts its earlier processes' seconds too
    result = diverged_hint(
        lambda: spec.run(ctx, settings),
        checkpoint,
        "Lower the learning rate (or λ) and run with --overwrite",
    )
    seconds = checkpoint.elapsed()
    result.mask.check(model)
    if within is not None:  # the training that found the mask includes the source's
        result.epochs_to_mask += within.epochs
        result.iterations_to_mask += within.iterations
    runtime.broadcast_(list(result.mask.values()))  # one mask on every rank: rank 0's

    accs = _keep_ticket(run, cfg, splits, result, original, device, runtime)
    flops = count_flops(shapes, mask=result.mask, uses=uses)
    summary = _summary(cfg, splits, result, accs, seconds, flops, device, runtime)
    if spec.budget_of(settings) == "flops":
        summary = summary.updated(budget="flops")
    run.write_summary(summary)
    _log_ticket(log, run, cfg, summary)
    return summary


@dataclass(frozen=True)
class Within:
    """The ticket a run prunes within (``--within``): its mask and the training that found
    it."""

    mask: Mask
    epochs: float
    iterations: int


#: What a run pruning within another's ticket must share with it: what makes the weights.
SHARED_WITH_WITHIN = (
    "model", "model_args", "pretrained", "dataset", "image_size", "weight_init", "seed",
)  # fmt: skip


def within_ticket(cfg: RunConfig, model: nn.Module, num_classes: int) -> Within | None:
    """The ticket of the run ``cfg.within`` names (None without one), checked to be the
    same network as ``model``: the same settings that make the weights
    (:data:`SHARED_WITH_WITHIN`), and its kept weights ``model``'s own initial ones (a
    ticket of trained weights cannot be pruned within at initialization)."""
    if not cfg.within:
        return None
    source = RunDir(cfg.within)
    if not source.file("config.json").is_file():
        raise RunError(f"--within {cfg.within}: no run folder there (no config.json)")
    theirs = source.read_config()
    differ = [k for k in SHARED_WITH_WITHIN if getattr(theirs, k) != getattr(cfg, k)]
    if differ:
        pairs = ", ".join(f"{k} {getattr(theirs, k)!r} (here {getattr(cfg, k)!r})" for k in differ)
        flags = " ".join(
            f"--{k.replace('_', '-')} {getattr(theirs, k)}"
            for k in differ
            if isinstance(getattr(theirs, k), (str, int))
        )
        raise ConfigError(
            f"--within {cfg.within}: that run's network is not this one's: {pairs}; give "
            f"the same settings{f' ({flags})' if flags else ''}"
        )
    if theirs.within:
        raise ConfigError(f"--within {cfg.within}: that run was itself pruned within a ticket")
    ticket, mask = ticket_model(source, theirs, num_classes)
    if mask.density <= cfg.prune.density:
        raise ConfigError(
            f"--within {cfg.within}: the ticket to mine within keeps {mask.density:.6g} of "
            f"the weights, not more than the target density {cfg.prune.density:.6g}: lower "
            "--density below it"
        )
    ours = prunable_weights(model)
    for name, weight in prunable_weights(ticket).items():
        keep = mask[name]
        if not torch.equal(weight.detach()[keep], ours[name].detach().cpu()[keep]):
            raise ConfigError(
                f"--within {cfg.within}: its ticket's weights are not the initialization "
                f"(first at {name}): a ticket of trained weights cannot be pruned within at "
                "initialization"
            )
    summary = source.summary()
    return Within(mask, summary.epochs_to_mask or 0.0, summary.iterations_to_mask or 0)


def _context(
    cfg: RunConfig,
    model: nn.Module,
    splits: DataSplits,
    device: torch.device,
    run: RunDir,
    checkpoint: Checkpoint,
    progress: bool,
    log: Log,
    tensorboard: bool,
    runtime: Runtime,
) -> PruneContext:
    """What a method gets: the model, its data (each loader seeded by its own stream), the
    training settings, and where each epoch's record goes."""
    return PruneContext(
        model=model,
        density=cfg.prune.density,
        train_batches=train_loader(
            splits,
            cfg.prune.batch_size,
            device,
            derive_seed(cfg.seed, "prune-data"),
            runtime=runtime,
        ),
        device=device,
        epochs=cfg.prune.epochs,
        batch_size=cfg.prune.batch_size,
        optim=cfg.prune.optim,
        seed=derive_seed(cfg.seed, "scores"),
        eval_batches=eval_loaders(splits, device, runtime=runtime),
        eval_every=cfg.eval_every,
        calibration_batches=train_loader(
            splits,
            cfg.prune.batch_size,
            device,
            derive_seed(cfg.seed, "calibration"),
            augment=False,
        ),
        on_epoch=metrics_writer(run, log, tensorboard),
        progress=progress,
        checkpoint=checkpoint,
        runtime=runtime,
    )


def _keep_ticket(
    run: RunDir,
    cfg: RunConfig,
    splits: DataSplits,
    result: PruneResult,
    original: dict[str, torch.Tensor],
    device: torch.device,
    runtime: Runtime,
) -> dict[str, float]:
    """Judge the method's ticket (its weights, or the ``original`` initialization, ⊙ its
    mask) and save it (rank 0) with the method's scores; returns its accuracies."""
    weights = result.weights if result.weights is not None else original
    ticket = architecture(cfg, splits.num_classes)
    load_parameters(ticket, weights, f"{cfg.method}'s ticket weights")
    ticket.to(device=device, memory_format=torch.channels_last)
    accs = ticket_accuracy(ticket, result.mask, splits, cfg, device, runtime)
    if runtime.is_main:
        save_ticket(run, ticket, {k: v for k, v in weights.items() if k in original}, result.mask)
    if result.scores is not None:
        run.save_tensors("scores.pt", result.scores)
    return accs


def _summary(
    cfg: RunConfig,
    splits: DataSplits,
    result: PruneResult,
    accs: dict[str, float],
    seconds: float,
    flops: FlopCount,
    device: torch.device,
    runtime: Runtime,
) -> RunSummary:
    """The figures of a found ticket, with the method's own (``result.extra``)."""
    mask = result.mask
    return RunSummary(
        method=cfg.method,
        model=cfg.model,
        dataset=cfg.dataset,
        target_density=cfg.prune.density,
        density=mask.density,
        num_kept=mask.num_kept,
        num_prunable=mask.num_total,
        layer_density={row.name: row.density for row in mask.layers()},
        dense_flops=flops.dense,
        ticket_flops=flops.ticket,
        pre_finetune_acc=accs["test_acc"],
        pre_finetune_val_acc=accs.get("val_acc"),
        post_finetune_acc=None,
        epochs_to_mask=result.epochs_to_mask,
        iterations_to_mask=result.iterations_to_mask,
        epochs_mining=result.epochs_to_mask,
        epochs_finetune=0,
        seconds_mask=seconds,
        seconds=seconds,
        seed=cfg.seed,
        device=str(device),
        processes=runtime.world_size,
        precision=runtime.precision,
        torch=torch.__version__,
        input_mean=tuple(splits.mean),
        input_std=tuple(splits.std),
        num_classes=splits.num_classes,
        input_shape=input_shape(splits),
        class_names=tuple(splits.train.classes),
        model_args=dict(cfg.model_args),
    ).updated(**result.extra)


def _log_ticket(log: Log, run: RunDir, cfg: RunConfig, summary: RunSummary) -> None:
    """The ticket found: its density and accuracy (and Gem-Miner's rare gem), and a warning
    when it fell short of the target."""
    target = f" (target {100 * cfg.prune.density:.2f} %)" if targets_density(cfg.method) else ""
    flops = summary.budget == "flops" and summary.dense_flops
    if flops:  # the target is a fraction of the multiply-adds
        kept = f"multiply-adds {format_fraction(summary.ticket_flops, summary.dense_flops)}"
        log(
            f"{cfg.method} → {run.path}: {kept}{target}, {format_density(summary.density)}, "
            f"pre-finetune test accuracy {100 * summary.pre_finetune_acc:.2f} %"
        )
    else:
        log(
            f"{cfg.method} → {run.path}: {format_density(summary.density)}{target}, "
            f"pre-finetune test accuracy {100 * summary.pre_finetune_acc:.2f} %"
        )
    reached = summary.ticket_flops / summary.dense_flops if flops else summary.density
    shortfall = density_shortfall(
        cfg, reached, "of the multiply-adds" if flops else "of the weights"
    )
    if shortfall:
        log(shortfall)
    if summary.gem_density is not None and summary.gem_acc is not None:
        running_bn = math.nan if summary.gem_acc_running_bn is None else summary.gem_acc_running_bn
        log(
            f"  rare gem (rounded mask, not finetuned): {format_density(summary.gem_density)}, "
            f"test accuracy {100 * summary.gem_acc:.2f} % (BatchNorm re-estimated), "
            f"{100 * running_bn:.2f} % (mining's statistics); "
            f"finetuning the {summary.finetune_mask or 'rounded'} mask"
        )


def format_fraction(kept: int | None, dense: int | None) -> str:
    """``"25.0 % (10.1 M of 40.6 M)"``: kept multiply-adds per image against the dense."""
    if not kept or not dense:
        return "—"
    return f"{100 * kept / dense:.2f} % ({format_flops(kept)} of {format_flops(dense)})"


def density_shortfall(cfg: RunConfig, reached: float, what: str = "of the weights") -> str:
    """A warning when the ticket kept more than 10 % (relative) less than asked (a
    fraction ``what``: of the weights, or of the multiply-adds), naming the likely cause;
    empty otherwise."""
    target = cfg.prune.density
    if target >= 1 or reached >= (1 - SHORTFALL_WARNING) * target:
        return ""
    text = (
        f"warning: the ticket kept {100 * reached:.2f} % {what}, "
        f"{100 * (1 - reached / target):.0f} % "
        f"below the target {100 * target:.2f} %."
    )
    spec = METHODS.get(cfg.method)
    if spec.shortfall_hint is not None:
        text += spec.shortfall_hint(spec.build_settings(cfg.settings))
    return text


def input_shape(splits: DataSplits) -> tuple[int, ...]:
    """The shape of one input image (channels, height, width): the training images' (the
    loaders' crops and flips keep it)."""
    return tuple(splits.train.images.shape[1:])


def _describe_start(
    cfg: RunConfig, splits: DataSplits, device: torch.device, runtime: Runtime
) -> str:
    """What runs where: model, data (images, classes, size), device, threads."""
    shape = tuple(splits.train.images.shape[1:])
    n = torch.get_num_threads()
    threads = f", {n} thread{'s' if n > 1 else ''}" if device.type == "cpu" else ""
    return (
        f"{cfg.method}: {cfg.model} on {cfg.dataset} ({len(splits.train)} training images, "
        f"{splits.num_classes} classes, {shape[-2]}×{shape[-1]}×{shape[0]}), "
        f"{where(device, runtime)}{threads}"
    )
