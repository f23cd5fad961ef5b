"""Gem-Miner (the paper's Algorithm 1, run as the authors ran it).

Scores p ∈ [0, 1] are trained by SGD on ``task loss + λ·reg(p)`` through the
straight-through rounding of the score layers, projected back into [0, 1] after every
step. Periodically the still-active scores with the globally smallest values are frozen
out (flag q = 0, score 0), so that the flag density falls geometrically to the target s.

Two freezing schedules (``freeze_schedule``):

* ``"authors"`` (default; what produced the published numbers — the authors' code,
  ksreenivasan/pruning_is_enough, ``main.py`` with ``utils/net_utils.py:prune`` and
  ``get_prune_rate``): freeze after the epochs whose 0-based index is a positive multiple
  of T, i.e. N = ⌊(E−1)/T⌋ times (E = 150, T = 5: 29 times, the last after epoch 146),
  each time ``ceil((1 − r)·active)`` scores with r = s^(1/N), ties at the threshold
  frozen together. The last epochs train the final flags without freezing. With N = 0
  (a run shorter than T + 1 epochs) it freezes once, to the target, after the last epoch.
* ``"algorithm1"`` (the paper's printed Algorithm 1): freeze every T epochs and after the
  last one, down to ``round(d·e^(−c·j))`` active flags with c = ln(1/s)/E — exactly
  ``round(d·s)`` at epoch E, right after the last epoch.

Two output masks (``finetune_mask``): the mined "rare gem" is 1[p ≥ 0.5] ⊙ q (the
rounded mask, at or below the target); the authors' paper configs set
``unflag_before_finetune: True`` and finetune the flags q (the target density), which is
the default here. Both are reported (``gem_*`` keys for the rounded mask).
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Mapping, Sequence

import torch
from torch import nn

from ...errors import ConfigError
from ...masking import score_layers, to_score_model, weight_name
from ...masking.channel_scores import to_channel_model
from ...masking.channels import ChannelCost, ChannelSet, check_sets, cost_of
from ...settings.config import PruneConfig
from ..base import PruneContext, PruneResult, register_method
from ..channel_scoring import channels_from_ticket, check_target, input_shape_of, weight_scores
from .freezing import FreezeSchedule, adapt_lambda, freeze_scores, guard_collapse
from .mining import MiningHooks, MiningResult, MiningStep, mine_scores
from .settings import GemMinerSettings, MineConfig, channel_gradient, mine_config
from .spaces import ChannelSpace, WeightSpace

__all__ = [
    "FreezeSchedule",
    "GemMinerSettings",
    "MineConfig",
    "MiningHooks",
    "MiningResult",
    "MiningStep",
    "ChannelSpace",
    "WeightSpace",
    "adapt_lambda",
    "channel_cost",
    "channel_gradient",
    "channels_of",
    "freeze_scores",
    "gem_summary",
    "guard_collapse",
    "mine_config",
    "mine_scores",
    "score_model",
    "shortfall_hint",
    "start_within",
]


def gem_summary(result: MiningResult, finetune_mask: str) -> dict:
    """Summary figures of the mined "rare gem" (the rounded mask), named apart from the
    finetuned ticket's: its density and its accuracy before any finetuning, with BatchNorm
    re-estimated for it (``gem_acc``) and with the statistics left by mining, the authors'
    protocol (``gem_acc_running_bn``); ``val`` variants when there is a validation split."""
    last = result.history[-1] if result.history else {}
    out = {
        "finetune_mask": finetune_mask,
        "flag_density": last.get("flag_density"),
        "gem_density": result.gem.density if result.gem is not None else None,
    }
    if "flops" in last:  # channel granularity: fractions of the multiply-adds
        out.update(gem_flops=last["flops"], flag_flops=last.get("flag_flops"))
    for split in ("test", "val"):
        prefix = "gem" if split == "test" else "gem_val"
        if f"{split}_acc" in last:
            out[f"{prefix}_acc"] = last[f"{split}_acc"]
        if f"{split}_acc_running_bn" in last:
            out[f"{prefix}_acc_running_bn"] = last[f"{split}_acc_running_bn"]
    return out


def shortfall_hint(settings: GemMinerSettings) -> str:
    """Why a Gem-Miner ticket kept fewer weights than asked, and what to do."""
    if settings.finetune_mask == "rounded":
        return (
            f" λ = {settings.lam:g} pushed more scores below 0.5 than freezing removed: lower "
            "--lambda, or finetune the flags (the default, --set finetune_mask=flags), which "
            "stop at the freezing schedule's count."
        )
    if settings.freeze_schedule == "authors":
        return (
            " The flags fell below the target: each freeze of the authors' schedule removes "
            "every score tied at its threshold (scores held at 0 by the projection tie), so "
            "short runs overshoot. More epochs spread the freezing, or --set "
            "freeze_schedule=algorithm1 freezes exact counts."
        )
    return ""


@register_method(
    "gem-miner",
    settings=GemMinerSettings,
    default_init="signed_constant",
    description="Gem-Miner: scores in [0,1], rounding, L2, iterative freezing (authors' schedule)",
    min_epochs=1,
    validate=mine_config,
    shortfall_hint=shortfall_hint,
    budget=lambda settings: "density" if settings.granularity == "weight" else "flops",
    mines_within=True,
)
def gem_miner(ctx: PruneContext, settings: GemMinerSettings) -> PruneResult:
    cfg = mine_config(PruneConfig(ctx.density, ctx.epochs, ctx.batch_size, ctx.optim), settings)
    if cfg.granularity == "channel_from_weight":
        return _channels_from_weights(ctx, cfg)
    shape = input_shape_of(ctx, "channel Gem-Miner") if cfg.granularity == "channel" else None
    generator = torch.Generator().manual_seed(ctx.seed)
    model, space = score_model(ctx.model, cfg, generator, shape, ctx.within)
    model.to(device=ctx.device, memory_format=torch.channels_last)
    result = _mine(ctx, cfg, model, space)
    extra = gem_summary(result, cfg.finetune_mask)
    if isinstance(space, ChannelSpace):  # how many each set keeps, as the channel baselines say
        kept = space.gates.keep(rounded=cfg.finetune_mask == "rounded")
        extra["channels_kept"] = {name: int(k.sum()) for name, k in kept.items()}
        extra["channels_total"] = {s.name: s.size for s in space.gates.sets}
        extra["channel_gradient"] = channel_gradient(cfg.channel_gradient, cfg.optim.name)
    return PruneResult(
        mask=result.mask,
        epochs_to_mask=cfg.epochs,
        iterations_to_mask=cfg.epochs * len(ctx.train_batches),
        scores=space.score_tensors(),
        history=result.history,
        extra=extra,
    )


def _mine(
    ctx: PruneContext, cfg: MineConfig, model: nn.Module, space: WeightSpace | ChannelSpace
) -> MiningResult:
    return mine_scores(
        model,
        ctx.train_batches,
        cfg,
        ctx.device,
        eval_batches=ctx.eval_batches,
        eval_every=ctx.eval_every,
        calibration_batches=ctx.calibration_batches,
        on_epoch=ctx.on_epoch,
        progress=ctx.progress,
        checkpoint=ctx.checkpoint,
        runtime=ctx.runtime,
        space=space,
        start_density=1.0 if ctx.within is None else space.flag_fraction(),
    )


def _channels_from_weights(ctx: PruneContext, cfg: MineConfig) -> PruneResult:
    """``granularity="channel_from_weight"``: mine per weight at the target (as a density),
    then keep channels at the target fraction of the multiply-adds as the ticket says
    (:func:`channels_of`; the target is checked to be reachable before mining)."""
    sets, cost = channel_cost(ctx.model, input_shape_of(ctx, "channel Gem-Miner"), cfg)
    generator = torch.Generator().manual_seed(ctx.seed)
    model, space = score_model(ctx.model, cfg, generator)
    model.to(device=ctx.device, memory_format=torch.channels_last)
    mined = _mine(ctx, cfg, model, space)
    result, keep, fractions = channels_of(mined, ctx.model, cost, cfg.density)
    return PruneResult(
        mask=result.mask,
        epochs_to_mask=cfg.epochs,
        iterations_to_mask=cfg.epochs * len(ctx.train_batches),
        scores=weight_scores(ctx.model, sets, fractions),
        history=result.history,
        extra={
            # the per-weight ticket the channels were read from (not this ticket's figures)
            **{f"weight_{k}": v for k, v in gem_summary(mined, cfg.finetune_mask).items()},
            "weight_ticket_density": mined.mask.density,
            "channels_kept": {name: int(k.sum()) for name, k in keep.items()},
            "channels_total": {s.name: s.size for s in sets},
        },
    )


def channel_cost(
    model: nn.Module, input_shape: Sequence[int], cfg: MineConfig
) -> tuple[tuple[ChannelSet, ...], ChannelCost]:
    """The channel sets of ``model`` (``cfg.streams``) on inputs of ``input_shape`` and
    their multiply-adds; a MaskError if it has none, a ConfigError if ``cfg.density`` of
    its multiply-adds cannot be reached."""
    sets, cost = cost_of(model, input_shape, cfg.streams)
    check_sets(sets, model, "channel Gem-Miner")
    check_target("channel Gem-Miner", cfg.density, cost)
    return sets, cost


def channels_of(
    mined: MiningResult, model: nn.Module, cost: ChannelCost, density: float
) -> tuple[MiningResult, dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Per-weight mining's ``mined`` result turned into channels of ``model`` at
    ``density`` of the multiply-adds (:func:`channels_from_ticket` of its ticket,
    ``mined.mask``): the result with the channel mask as its ``mask`` (``gem`` stays the
    per-weight rare gem), the channels kept and the fraction of every channel's weights
    the ticket kept (each: set name → one value per channel)."""
    mask, keep, fractions = channels_from_ticket(model, cost, mined.mask, density)
    return dataclasses.replace(mined, mask=mask), keep, fractions


def score_model(
    model: nn.Module,
    cfg: MineConfig,
    generator: torch.Generator,
    input_shape: Sequence[int] | None = None,
    within: Mapping[str, torch.Tensor] | None = None,
) -> tuple[nn.Module, WeightSpace | ChannelSpace]:
    """A copy of ``model`` with Gem-Miner's scores (drawn from ``generator``) and the
    space that mines them: per weight (``cfg.granularity`` ``"weight"`` or
    ``"channel_from_weight"``), or — ``cfg.granularity == "channel"`` — per channel
    of every channel set of ``model`` traced on inputs of ``input_shape``, the target a
    fraction of its multiply-adds (checked to be reachable).

    ``within`` (weight granularity): a ticket's mask (weight name → booleans, e.g. a
    channel ticket's), whose pruned weights start frozen out (flag 0, score 0), so mining
    keeps a subset of its weights and the bound falls from its density to ``cfg.density``
    (:class:`FreezeSchedule`'s ``start``) — channels first, then weights inside them."""
    if within is not None and cfg.granularity != "weight":
        raise ConfigError(
            "channel Gem-Miner cannot mine within a ticket: mine the channels first, then "
            "the weights inside them (granularity=weight)"
        )
    if cfg.granularity != "channel":
        scored = to_score_model(copy.deepcopy(model), generator)
        if within is not None:
            start_within(scored, within, cfg.density)
        return scored, WeightSpace(scored, cfg.collapse_guard, cfg.min_layer_density)
    if input_shape is None:
        raise ConfigError(
            "channel Gem-Miner counts multiply-adds for one input's shape: give input_shape"
        )
    plain = copy.deepcopy(model)
    sets, cost = channel_cost(plain, input_shape, cfg)
    scored = to_channel_model(
        plain, sets, generator, channel_gradient(cfg.channel_gradient, cfg.optim.name)
    )
    space = ChannelSpace(scored, cost, cfg.collapse_guard, cfg.min_layer_density, cfg.channel_rank)
    return scored, space


@torch.no_grad()
def start_within(model: nn.Module, within: Mapping[str, torch.Tensor], density: float) -> None:
    """Freeze out every weight of score model ``model`` that the mask ``within`` prunes
    (flag 0, score 0). A ConfigError if ``within`` does not fit the model's layers or keeps
    no more than ``density`` of the weights."""
    layers = score_layers(model)
    names = {weight_name(n): m for n, m in layers.items()}
    if set(within) != set(names):
        missing, extra = sorted(set(names) - set(within)), sorted(set(within) - set(names))
        raise ConfigError(
            "the ticket to mine within does not fit the model: "
            + "; ".join(
                part
                for part in (
                    f"no mask for {', '.join(missing)}" if missing else "",
                    f"no layer {', '.join(extra)}" if extra else "",
                )
                if part
            )
        )
    kept = total = 0
    for name, layer in names.items():
        keep = within[name]
        if tuple(keep.shape) != tuple(layer.flags.shape):
            raise ConfigError(
                f"the ticket to mine within has a mask of shape {tuple(keep.shape)} for "
                f"{name}, whose weight is {tuple(layer.flags.shape)}"
            )
        keep = keep.to(device=layer.flags.device, dtype=layer.flags.dtype)
        layer.flags.mul_(keep)
        layer.scores.mul_(keep)
        kept += int(keep.sum())
        total += keep.numel()
    if kept / total <= density:
        raise ConfigError(
            f"the ticket to mine within keeps {kept / total:.6g} of the weights, not more "
            f"than the target density {density:.6g}: lower --density below it"
        )
