"""Sanity checks of Frankle et al. (2020b) on any finished run.

Each check turns a run's ticket into a new ticket in a new run folder, finetuned later by
the same code as any other ticket:

* ``shuffle`` — permute the mask randomly within each layer (same per-layer density); a
  channel ticket keeps as many channels of every channel set, drawn at random (same
  widths and multiply-adds: only which channels were kept is forgotten);
* ``reinit``  — keep the mask, redraw the weights from the original init scheme, new seed;
* ``invert-posthoc`` — keep the lowest-scored weights instead of the highest, per layer,
  at the same per-layer density (needs a method that stores scores); a channel ticket
  (its target a fraction of the multiply-adds) keeps the lowest-scored channels of every
  channel set, as many as it kept.

``invert`` is the paper's score inversion as the authors ran it
(ksreenivasan/pruning_is_enough: ``invert_sanity_check``, which makes every freeze remove
the *highest* active scores; their post-hoc inversion is disabled in that code): Gem-Miner
mines again from the same initialization with ``freeze_order="highest"``, into the new
folder. It costs a whole mining run.

If finetuned accuracy barely drops, the method only found good layer-wise ratios.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import RunError
from ..masking import Mask, init_weights
from ..masking.flops import count_flops
from ..masking.threshold import layerwise_mask
from ..methods.channel_scoring import invert_channels, shuffle_channels
from ..registry import Registry
from ..rundir.runs import RunDir
from ..rundir.summary import RunSummary
from ..seeds import derive_seed
from ..settings.config import RunConfig
from ..training import resolve_device
from ..training.runtime import SINGLE, Runtime
from .assemble import load_data
from .claim import claim_folder, plan_folder
from .describe import Log, echo
from .prune import input_shape, prune_run
from .ticket import mask_shapes, require_ticket, save_ticket, ticket_accuracy, ticket_model

#: Figures of the source run a sanity check's ticket keeps: what was pruned, and the
#: training spent finding the mask it was made from.
INHERITED = (
    "method",
    "model",
    "dataset",
    "target_density",
    "budget",
    "epochs_to_mask",
    "iterations_to_mask",
    "epochs_mining",
    "seconds_mask",
    "seed",
    "device",
    "torch",
)


def shuffle_mask(mask: Mask, generator: torch.Generator) -> Mask:
    """A random permutation of each layer's mask entries."""
    out = {}
    for name, m in mask.items():
        flat = m.flatten()
        out[name] = flat[torch.randperm(flat.numel(), generator=generator)].view(m.shape)
    return Mask(out)


def invert_mask(mask: Mask, scores: Mapping[str, torch.Tensor]) -> Mask:
    """Per layer, keep as many weights as ``mask`` does, but the lowest-scored ones."""
    missing = sorted(set(mask) - set(scores))
    if missing:
        raise RunError(f"no scores stored for {', '.join(missing)}")
    densities = {name: m.sum().item() / m.numel() for name, m in mask.items()}
    return layerwise_mask({name: -scores[name].float() for name in mask}, densities)


@dataclasses.dataclass
class _Ticket:
    """The ticket a check changes in place: its model (ticket weights) and mask."""

    model: nn.Module
    mask: Mask
    run: RunDir
    seed: int
    weight_init: str
    original_seed: int


@dataclasses.dataclass(frozen=True)
class Remine:
    """A check that finds the ticket again: ``method`` with ``settings`` changed."""

    method: str
    settings: Mapping[str, Any]


Check = Callable[[_Ticket], None]
SANITY_CHECKS: Registry[Check | Remine] = Registry("sanity check")
SANITY_CHECKS.register("invert")(Remine("gem-miner", {"freeze_order": "highest"}))


def channel_ticket(run: RunDir) -> tuple[list[int], str] | None:
    """For a channel ticket (its target a fraction of the multiply-adds), the input shape
    its multiply-adds were counted for and the ``streams`` its channel sets were found
    with; None for a ticket of weights."""
    summary = run.summary()
    if summary.budget != "flops" or not summary.input_shape:
        return None
    streams = str(run.read_config().settings.get("streams", "joined"))
    return [int(d) for d in summary.input_shape], streams


def _remask(
    t: _Ticket, weights: Callable[[], Mask], channels: Callable[[list[int], str], Mask]
) -> None:
    """Give ``t`` the mask of ``weights()``, or for a channel ticket of
    ``channels(input shape, streams)``."""
    found = channel_ticket(t.run)
    t.mask = weights() if found is None else channels(*found)


@SANITY_CHECKS.register("shuffle")
def _shuffle(t: _Ticket) -> None:
    g = torch.Generator().manual_seed(t.seed)
    _remask(
        t,
        lambda: shuffle_mask(t.mask, g),
        lambda shape, streams: shuffle_channels(t.model, shape, t.mask, g, streams),
    )


@SANITY_CHECKS.register("reinit")
def _reinit(t: _Ticket) -> None:
    if t.seed == t.original_seed:
        raise RunError(f"seed {t.seed} is the seed of the original weights: pick another --seed")
    init_weights(t.model, t.weight_init, t.seed)


@SANITY_CHECKS.register("invert-posthoc")
def _invert_posthoc(t: _Ticket) -> None:
    if not t.run.file("scores.pt").is_file():
        raise RunError(
            f"{t.run.path} stores no scores (scores.pt): score inversion needs a score-based method"
        )
    scores = t.run.load_tensors("scores.pt", mask_shapes(t.model), extra_ok=True)
    _remask(
        t,
        lambda: invert_mask(t.mask, scores),
        lambda shape, streams: invert_channels(t.model, shape, t.mask, scores, streams),
    )


def sanity_run(
    run_dir: str | Path,
    check: str,
    *,
    out: str | Path | None = None,
    seed: int = 1,
    overwrite: bool = False,
    log: Log = echo,
    progress: bool = True,
    runtime: Runtime = SINGLE,
) -> RunSummary:
    """Apply ``check`` to the ticket of ``run_dir`` and write the new ticket to ``out``
    (default ``<run_dir>-<check>``); returns the new run's summary (not yet finetuned).
    Every torchrun rank calls this: a re-mining check trains on all of them, the others
    run on rank 0 alone."""
    apply = SANITY_CHECKS.get(check)
    source = RunDir(run_dir)
    cfg = source.read_config()
    require_ticket(source)
    if cfg.sanity_check:
        raise RunError(f"{source.path} is itself a sanity check ({cfg.sanity_check})")
    target = RunDir(out or f"{source.path}-{check}", writable=runtime.is_main)
    if isinstance(apply, Remine):
        return _remine(source, cfg, check, apply, target, overwrite, log, progress, runtime)
    if not runtime.is_main:
        return RunSummary()
    new_cfg = dataclasses.replace(cfg, sanity_check=check, sanity_seed=seed)
    claim = plan_folder(target, new_cfg, overwrite, log)
    if claim is None:
        return target.summary()

    # everything is read and the new ticket made before the new folder is claimed
    source_summary = source.summary()
    device = resolve_device(cfg.device)
    splits = load_data(cfg)
    model, mask = ticket_model(source, cfg, splits.num_classes)
    original_seed = derive_seed(cfg.seed, "weights")
    ticket = _Ticket(model, mask, source, seed, cfg.weight_init, original_seed)
    apply(ticket)
    ticket.mask.check(model)
    flops = count_flops(model, input_shape(splits), ticket.mask)
    weights = {n: p.detach().cpu().clone() for n, p in model.named_parameters()}
    model.to(device=device, memory_format=torch.channels_last)
    accs = ticket_accuracy(model, ticket.mask, splits, new_cfg, device)
    claim_folder(target, new_cfg, claim, log)
    save_ticket(target, model, weights, ticket.mask)
    inherited = {name: getattr(source_summary, name) for name in INHERITED}
    mask_seconds = source_summary.seconds_mask
    summary = RunSummary(
        **inherited,
        sanity_check=check,
        source_run=str(source.path),
        density=ticket.mask.density,
        num_kept=ticket.mask.num_kept,
        num_prunable=ticket.mask.num_total,
        layer_density={row.name: row.density for row in ticket.mask.layers()},
        dense_flops=flops.dense,
        ticket_flops=flops.ticket,
        pre_finetune_acc=accs["test_acc"],
        pre_finetune_val_acc=accs.get("val_acc"),
        post_finetune_acc=None,
        epochs_finetune=0,
        seconds=0.0 if mask_seconds is None else mask_seconds,
        input_mean=tuple(splits.mean),
        input_std=tuple(splits.std),
        num_classes=splits.num_classes,
        class_names=tuple(splits.train.classes),
        model_args=dict(cfg.model_args),
    )
    target.write_summary(summary)
    acc = 100 * accs["test_acc"]
    log(f"{check} of {source.path} → {target.path}: pre-finetune accuracy {acc:.2f} %")
    return summary


def _remine(
    source: RunDir,
    cfg: RunConfig,
    check: str,
    remine: Remine,
    target: RunDir,
    overwrite: bool,
    log: Log,
    progress: bool,
    runtime: Runtime,
) -> RunSummary:
    """Find the ticket again with ``remine``'s settings into ``target`` (every rank)."""
    if cfg.method != remine.method:
        raise RunError(
            f"the {check} check mines again with {remine.method}, but {source.path} was "
            f"pruned by {cfg.method}; use invert-posthoc for a method that stores scores"
        )
    new_cfg = dataclasses.replace(
        cfg, settings={**cfg.settings, **remine.settings}, sanity_check=check, sanity_seed=0
    )
    log(f"{check} of {source.path}: mining again with {dict(remine.settings)}")
    summary = prune_run(
        new_cfg, target.path, overwrite=overwrite, progress=progress, log=log, runtime=runtime
    )
    if not runtime.is_main:
        return RunSummary()
    summary = summary.updated(sanity_check=check, source_run=str(source.path))
    target.write_summary(summary)
    return summary
