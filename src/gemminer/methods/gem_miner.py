"""Gem-Miner (the paper's Algorithm 1).

Scores p ∈ [0, 1] are trained by SGD on ``task loss + λ·reg(p)`` through the
straight-through rounding of the score layers, projected back into [0, 1] after every
step. Every ``period`` epochs, and after the last epoch, the still-active scores with the
globally smallest values are frozen out (flag q = 0, score 0) — whether or not the bound
is violated — so that the number of active flags follows ``round(d · e^(−c·j))`` with
c = ln(1/s)/E, reaching ``round(d · s)`` at epoch E. The output mask is
1[p ≥ 0.5] ⊙ q, whose density can be lower than the target.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import time
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import torch
from torch import nn

from ..config import (
    CALIBRATION_BATCHES,
    REGULARIZERS,
    MineConfig,
    PruneConfig,
    _choice,
    _require,
)
from ..masking import (
    Mask,
    flag_counts,
    rounded_mask,
    score_layers,
    to_score_model,
    weight_name,
)
from ..masking.scores import THRESHOLD, project
from ..training.checkpoint import Checkpoint, Resumable
from ..training.loop import (
    Batches,
    evaluate,
    evaluation_due,
    recalibrate_batchnorm,
    train_epoch,
)
from ..training.optim import build_optimizer, build_scheduler
from ..training.runtime import SINGLE, Runtime
from .base import PruneContext, PruneResult, register_method

EpochCallback = Callable[[dict], None]


@dataclass(frozen=True)
class FreezeSchedule:
    """The exponential bound s̄(j) = e^(−c·j), c = ln(1/s)/E, sampled every ``period`` epochs."""

    target_density: float
    epochs: int
    period: int

    @property
    def rate(self) -> float:
        return math.log(1.0 / self.target_density) / self.epochs

    def bound(self, epoch: int) -> float:
        """The density bound after ``epoch`` epochs (exactly the target at the last one)."""
        return self.target_density if epoch >= self.epochs else math.exp(-self.rate * epoch)

    def freezes_after(self, epoch: int) -> bool:
        return epoch % self.period == 0 or epoch == self.epochs

    def active_after(self, epoch: int, total: int) -> int:
        """How many flags stay active after freezing at ``epoch`` (at least one)."""
        return max(1, round(total * self.bound(epoch)))


def layer_floor(layer: nn.Module, min_density: float) -> int:
    """Weights a layer keeps at least under the collapse guard: one per output unit, or
    ``min_density`` of the layer if that is more (never more than the layer has)."""
    numel = layer.weight.numel()
    return min(numel, max(int(layer.weight.shape[0]), math.ceil(min_density * numel)))


def _top_active(layer: nn.Module, k: int) -> torch.Tensor:
    """Boolean mask of the ``k`` highest-scored active entries of ``layer`` (ties by position)."""
    scores = torch.where(layer.flags.bool(), layer.scores.detach(), -math.inf).flatten()
    top = torch.zeros_like(scores, dtype=torch.bool)
    if k > 0:
        top[torch.sort(scores, descending=True, stable=True).indices[:k]] = True
    return top.view_as(layer.flags) & layer.flags.bool()


@torch.no_grad()
def freeze_lowest(model: nn.Module, keep: int, floors: Mapping[str, int] | None = None) -> int:
    """Freeze out all but ``keep`` active scores, lowest first, globally across layers.

    Frozen entries get flag 0 and score 0. Ties are broken by position (stable sort), so
    exactly ``active − keep`` entries are frozen. ``floors`` (layer name → count) protects
    each layer's highest-scored active entries from freezing (the collapse guard).
    Returns how many were frozen.
    """
    named = score_layers(model)
    layers = list(named.values())
    flags = torch.cat([m.flags.flatten() for m in layers])
    active = int(flags.sum())
    count = active - keep
    if count <= 0:
        return 0
    scores = torch.cat([m.scores.detach().flatten() for m in layers])
    candidates = torch.where(flags.bool(), scores, torch.full_like(scores, math.inf))
    if floors:
        protected = torch.cat(
            [_top_active(m, floors.get(n, 0)).flatten() for n, m in named.items()]
        )
        candidates[protected] = math.inf
        count = min(count, int((candidates < math.inf).sum()))
    order = torch.sort(candidates, stable=True).indices[:count]
    drop = torch.zeros_like(flags, dtype=torch.bool)
    drop[order] = True
    offset = 0
    for m in layers:
        n = m.flags.numel()
        part = drop[offset : offset + n].view_as(m.flags)
        m.flags.masked_fill_(part, 0.0)
        m.scores.masked_fill_(part, 0.0)
        offset += n
    return count


@torch.no_grad()
def guard_collapse(model: nn.Module, floors: Mapping[str, int]) -> dict[str, int]:
    """Keep every layer connected: where fewer than its floor of weights round to 1, the
    floor's highest-scored active weights are raised to the threshold 0.5 (so they round
    to 1). Returns {layer weight name: weights raised} for the layers it had to fix."""
    fixed: dict[str, int] = {}
    for name, m in score_layers(model).items():
        floor = floors.get(name, 0)
        if int(m.rounded_mask().sum()) >= floor:
            continue
        raise_ = _top_active(m, floor) & ~m.rounded_mask()
        m.scores[raise_] = THRESHOLD
        fixed[weight_name(name)] = int(raise_.sum())
    return fixed


def regularization_value(model: nn.Module, kind: str) -> float:
    """‖p‖² (``"l2"``) or ‖p‖₁ (``"l1"``) over every score."""
    with torch.no_grad():
        scores = [m.scores for m in score_layers(model).values()]
        if kind == "l2":
            return float(sum(s.pow(2).sum() for s in scores))
        return float(sum(s.abs().sum() for s in scores))


@torch.no_grad()
def add_regularization_grad(model: nn.Module, lam: float, kind: str) -> None:
    """Add ∂(λ·reg)/∂p to the score gradients: 2λp for L2, λ·sign(p) for L1.

    Equivalent to adding λ·reg(p) to the loss before ``backward``, without building
    the extra graph on every step.
    """
    if lam == 0:
        return
    for m in score_layers(model).values():
        if m.scores.grad is None:
            m.scores.grad = torch.zeros_like(m.scores)
        if kind == "l2":
            m.scores.grad.add_(m.scores, alpha=2 * lam)
        else:
            m.scores.grad.add_(m.scores.sign(), alpha=lam)


class MiningStep:
    """Gem-Miner's optimizer and per-step hooks for the scores of ``model``.

    λ‖p‖²'s gradient 2λp is the optimizer's own weight decay (the same update, fused into
    its multi-tensor step); L1's λ·sign(p) is added to the gradients by ``before_step``.
    ``after_step`` projects the scores into [0, 1] (frozen ones stay 0).
    """

    def __init__(self, model: nn.Module, cfg: MineConfig) -> None:
        layers = score_layers(model).values()
        self.model = model
        self.scores = [m.scores for m in layers]
        self.flags = [m.flags for m in layers]
        self.optimizer = build_optimizer(self.scores, cfg.optim)
        self.weight_decay = cfg.optim.weight_decay
        self.regularizer = cfg.regularizer
        self.set_lambda(cfg.lam)

    def set_lambda(self, lam: float) -> None:
        self.lam = lam
        if self.regularizer == "l2":
            for group in self.optimizer.param_groups:
                group["weight_decay"] = self.weight_decay + 2 * lam

    @property
    def before_step(self) -> Callable[[], None] | None:
        if self.regularizer == "l2":
            return None
        return lambda: add_regularization_grad(self.model, self.lam, self.regularizer)

    def after_step(self) -> None:
        project(self.scores, self.flags)


#: How far one epoch may move λ under ``auto_lambda`` (a factor in [1/2, 2]).
AUTO_LAMBDA_STEP = 2.0


def adapt_lambda(lam: float, rounded_density: float, bound: float) -> float:
    """λ for the next epoch under ``auto_lambda`` (beyond the paper).

    Freezing should only remove weights that already round to 0. So after each epoch the
    rounded density *before* freezing is compared with the bound: above it, freezing
    would cut live weights, and λ grows by the ratio; below it, λ prunes faster than the
    bound (towards layer collapse), and λ shrinks by the ratio — each step by at most
    a factor of 2.
    """
    ratio = rounded_density / bound if bound > 0 else 1.0
    return lam * min(AUTO_LAMBDA_STEP, max(1.0 / AUTO_LAMBDA_STEP, ratio))


def _collapse_warning(epoch: int, guarded: Mapping[str, int], collapsed: list[str]) -> None:
    if guarded:
        layers = ", ".join(f"{name} (+{n})" for name, n in guarded.items())
        warnings.warn(
            f"layer collapse guard, mining epoch {epoch}: too few weights of {layers} "
            "rounded to 1; kept their highest-scored weights (counted in the density)",
            stacklevel=3,
        )
    if collapsed:
        warnings.warn(
            f"layer collapse, mining epoch {epoch}: no weight of {', '.join(collapsed)} "
            "rounds to 1, so the network is disconnected (lower λ, or keep the guard on)",
            stacklevel=3,
        )


@dataclass
class MiningResult:
    """What :func:`mine_scores` returns: the output mask and the per-epoch history."""

    mask: Mask
    history: list[dict] = field(default_factory=list)
    model: nn.Module | None = None

    @property
    def density(self) -> float:
        return self.mask.density


def mine_scores(
    model: nn.Module,
    train_batches: Batches,
    cfg: MineConfig,
    device: torch.device,
    *,
    eval_batches: Mapping[str, Batches] | None = None,
    eval_every: int = 1,
    calibration_batches: Batches | None = None,
    on_epoch: EpochCallback | None = None,
    progress: bool = False,
    checkpoint: Checkpoint | None = None,
    runtime: Runtime = SINGLE,
) -> MiningResult:
    """Run Gem-Miner on a score model (see :func:`gemminer.to_score_model`) in place.

    ``eval_batches`` (optional, e.g. ``{"test": ...}``) give the per-epoch accuracy of the
    rounded network, recorded as ``<name>_acc``.
    ``calibration_batches`` (optional; shuffled, unaugmented training batches with their
    own generator, so the training order is not disturbed) re-estimate BatchNorm
    statistics for the current mask before each evaluation and at the end.
    ``checkpoint`` (optional) saves the state after every epoch and on a stop signal, and
    resumes from it (see :mod:`gemminer.training.checkpoint`).
    ``runtime`` sets precision and compilation; under torchrun each rank trains on its
    slice of every batch (DDP) and the scores and flags are made identical on every rank
    (rank 0's) after each epoch's freezing, so every rank holds the same mask.
    """
    model.to(device)
    net = runtime.training_module(model, device)
    layers = score_layers(model)
    step = MiningStep(model, cfg)
    optimizer = step.optimizer
    scheduler = build_scheduler(optimizer, cfg.optim, cfg.epochs)
    schedule = FreezeSchedule(cfg.density, cfg.epochs, cfg.period)
    _, total = flag_counts(model)
    floors = (
        {name: layer_floor(m, cfg.min_layer_density) for name, m in layers.items()}
        if cfg.collapse_guard
        else {}
    )
    lam = cfg.lam

    state = Resumable(
        checkpoint,
        model,
        optimizer,
        scheduler,
        {"train": train_batches, "calibration": calibration_batches},
    )
    first, resume, history, extra = state.restore()
    lam = extra.get("lam", lam)
    evaluated = False
    for epoch in range(first, cfg.epochs + 1):
        start = time.perf_counter()
        lr = optimizer.param_groups[0]["lr"]
        state.epoch_started()
        step.set_lambda(lam)  # after a resume too: the checkpoint's λ
        stats = train_epoch(
            net,
            train_batches,
            optimizer,
            device,
            before_step=step.before_step,
            after_step=step.after_step,
            progress=f"mine {epoch}/{cfg.epochs}" if progress else None,
            resume=resume,
            should_stop=state.should_stop,
            where=f"mining epoch {epoch}",
            runtime=runtime,
        )
        resume = None
        if stats.stopped is not None:
            raise state.interrupted(epoch, stats.stopped, history, {"lam": lam})
        scheduler.step()
        epoch_lam = lam
        if cfg.auto_lambda:
            lam = adapt_lambda(lam, rounded_mask(model).density, schedule.bound(epoch))
        frozen = 0
        if schedule.freezes_after(epoch):
            frozen = freeze_lowest(model, schedule.active_after(epoch, total), floors)
        guarded = guard_collapse(model, floors)
        runtime.broadcast_([t for m in layers.values() for t in (m.scores, m.flags)])
        mask = rounded_mask(model)
        collapsed = [row.name for row in mask.layers() if row.kept == 0]
        _collapse_warning(epoch, guarded, collapsed)
        active, _ = flag_counts(model)
        record = {
            "phase": "mine",
            "epoch": epoch,
            "loss": stats.loss,
            "reg": regularization_value(model, cfg.regularizer),
            "lam": epoch_lam,
            "train_acc": stats.accuracy,
            "lr": lr,
            "density": mask.density,
            "flag_density": active / total,
            "bound": schedule.bound(epoch),
            "frozen": frozen,
        }
        if guarded or collapsed:
            record.update(guarded=guarded, collapsed=collapsed)
        evaluated = eval_batches is not None and evaluation_due(epoch, cfg.epochs, eval_every)
        if evaluated:
            if calibration_batches is not None:
                recalibrate_batchnorm(
                    model, calibration_batches, device, cfg.bn_recalibration_batches
                )
            for name, batches in eval_batches.items():  # type: ignore[union-attr]
                record[f"{name}_acc"] = evaluate(model, batches, device, runtime).accuracy
        record["seconds"] = time.perf_counter() - start
        history.append(record)
        state.epoch_done(epoch, history, {"lam": lam})
        if on_epoch is not None:
            on_epoch(record)
    if not evaluated and calibration_batches is not None:
        recalibrate_batchnorm(model, calibration_batches, device, cfg.bn_recalibration_batches)
    return MiningResult(rounded_mask(model), history, model)


@dataclass(frozen=True)
class GemMinerSettings:
    """Gem-Miner's own settings; the defaults are Table 8's row for density 1.44 %.

    ``period`` T: freeze every T epochs (and after the last); ``lam`` λ: weight of the
    ``regularizer`` on the scores; ``bn_recalibration_batches``: training batches used to
    re-estimate BatchNorm statistics of the current mask before each evaluation.
    ``collapse_guard`` (on by default) keeps at least one weight per output unit in every
    layer, or ``min_layer_density`` of it if larger; ``auto_lambda`` adapts λ every epoch
    (beyond the paper; see :func:`adapt_lambda`).
    """

    period: int = 5
    lam: float = 1e-4
    regularizer: str = "l2"
    bn_recalibration_batches: int = CALIBRATION_BATCHES
    collapse_guard: bool = True
    min_layer_density: float = 0.0
    auto_lambda: bool = False

    def __post_init__(self) -> None:
        _require(self.period >= 1, f"period must be >= 1, got {self.period}")
        _require(math.isfinite(self.lam) and self.lam >= 0, f"lambda must be >= 0, got {self.lam}")
        _choice(self.regularizer, REGULARIZERS, "regularizer")


def mine_config(prune: PruneConfig, settings: GemMinerSettings) -> MineConfig:
    """The full Gem-Miner configuration of a run (validated: e.g. period <= epochs)."""
    return MineConfig(
        density=prune.density,
        epochs=prune.epochs,
        batch_size=prune.batch_size,
        optim=prune.optim,
        **dataclasses.asdict(settings),
    )


@register_method(
    "gem-miner",
    settings=GemMinerSettings,
    default_init="signed_constant",
    description="Gem-Miner (Algorithm 1): scores in [0,1], rounding, L2, iterative freezing",
)
def gem_miner(ctx: PruneContext, settings: GemMinerSettings) -> PruneResult:
    cfg = mine_config(PruneConfig(ctx.density, ctx.epochs, ctx.batch_size, ctx.optim), settings)
    model = to_score_model(copy.deepcopy(ctx.model), torch.Generator().manual_seed(ctx.seed))
    model.to(device=ctx.device, memory_format=torch.channels_last)
    result = mine_scores(
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
    )
    scores = {
        weight_name(name): layer.scores.detach().cpu().clone()
        for name, layer in score_layers(model).items()
    }
    return PruneResult(
        mask=result.mask,
        epochs_to_mask=cfg.epochs,
        iterations_to_mask=cfg.epochs * len(ctx.train_batches),
        scores=scores,
        history=result.history,
        extra={"flag_density": result.history[-1]["flag_density"]},
    )
