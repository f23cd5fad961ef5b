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
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ..config import (
    CALIBRATION_BATCHES,
    FINETUNE_MASKS,
    FREEZE_ORDERS,
    FREEZE_SCHEDULES,
    REGULARIZERS,
    MineConfig,
    PruneConfig,
    check_choice,
    require,
)
from ..masking import (
    Mask,
    flag_counts,
    flag_mask,
    rounded_mask,
    score_layers,
    to_score_model,
    weight_name,
)
from ..masking.scores import THRESHOLD, project
from ..notices import notice
from ..training.checkpoint import Checkpoint
from ..training.loop import (
    Batches,
    EpochStats,
    evaluate_splits,
    evaluation_due,
    recalibrate_batchnorm,
)
from ..training.optim import build_optimizer, build_scheduler
from ..training.runtime import SINGLE, Runtime
from ..training.trainer import EpochCallback, Hooks, Trainer
from .base import PruneContext, PruneResult, register_method


@dataclass(frozen=True)
class FreezeSchedule:
    """When to freeze and how many flags to keep (see the module docstring).

    ``kind="algorithm1"``: the bound s̄(j) = e^(−c·j), c = ln(1/s)/E, sampled every
    ``period`` epochs and after the last. ``kind="authors"``: N = ⌊(E−1)/T⌋ freezes after
    epochs T+1, 2T+1, …, NT+1 (1-based), each keeping a fraction r = s^(1/N) of the
    active flags (rounded down: the authors freeze a ceiling count, ties together).
    """

    target_density: float
    epochs: int
    period: int
    kind: str = "authors"

    def __post_init__(self) -> None:
        check_choice(self.kind, FREEZE_SCHEDULES, "freeze_schedule")

    @property
    def rate(self) -> float:
        return math.log(1.0 / self.target_density) / self.epochs

    @property
    def freezes(self) -> int:
        """N, the authors' number of freezes (0: a single freeze after the last epoch)."""
        return (self.epochs - 1) // self.period

    @property
    def keep_rate(self) -> float:
        """r = s^(1/N): the fraction of active flags each of the authors' freezes keeps."""
        return math.exp(math.log(self.target_density) / max(1, self.freezes))

    def freezes_done(self, epoch: int) -> int:
        """How many of the authors' freezes have happened after ``epoch`` epochs."""
        if self.freezes == 0:
            return int(epoch >= self.epochs)
        return max(0, (epoch - 1) // self.period)

    def bound(self, epoch: int) -> float:
        """The density bound after ``epoch`` epochs (exactly the target at the end)."""
        if self.kind == "authors":
            if epoch >= self.epochs:
                return self.target_density
            return self.keep_rate ** self.freezes_done(epoch)
        return self.target_density if epoch >= self.epochs else math.exp(-self.rate * epoch)

    def freezes_after(self, epoch: int) -> bool:
        if self.kind == "authors":
            if self.freezes == 0:
                return epoch == self.epochs
            return epoch > 1 and (epoch - 1) % self.period == 0
        return epoch % self.period == 0 or epoch == self.epochs

    def active_after(self, epoch: int, total: int) -> int:
        """Algorithm 1: how many flags stay active after freezing at ``epoch`` (at least one)."""
        return max(1, round(total * self.bound(epoch)))

    def freeze_count(self, epoch: int, active: int, total: int) -> int:
        """How many of the ``active`` flags (of ``total``) to freeze after ``epoch``."""
        if self.kind == "authors" and self.freezes > 0:
            return min(active - 1, math.ceil((1.0 - self.keep_rate) * active))
        return active - self.active_after(epoch, total)


def layer_floor(layer: nn.Module, min_density: float) -> int:
    """Weights a layer keeps at least under the collapse guard: one per output unit, or
    ``min_density`` of the layer if that is more (never more than the layer has)."""
    numel = layer.weight.numel()
    return min(numel, max(int(layer.weight.shape[0]), math.ceil(min_density * numel)))


def _top_active(layer: nn.Module, k: int, highest: bool = True) -> torch.Tensor:
    """Boolean mask of the ``k`` highest-scored (``highest=False``: lowest-scored) active
    entries of ``layer``, ties by position."""
    key = layer.scores.detach() if highest else -layer.scores.detach()
    scores = torch.where(layer.flags.bool(), key, -math.inf).flatten()
    top = torch.zeros_like(scores, dtype=torch.bool)
    if k > 0:
        top[torch.sort(scores, descending=True, stable=True).indices[:k]] = True
    return top.view_as(layer.flags) & layer.flags.bool()


@torch.no_grad()
def freeze_scores(
    model: nn.Module,
    count: int,
    floors: Mapping[str, int] | None = None,
    *,
    highest: bool = False,
    ties_together: bool = False,
) -> int:
    """Freeze out ``count`` active scores, lowest first (``highest``: highest first),
    globally across layers. Frozen entries get flag 0 and score 0.

    Ties are broken by position (stable sort), so exactly ``count`` entries are frozen;
    with ``ties_together`` (the authors' code) every active score at or beyond the
    ``count``-th is frozen, so ties at the threshold go together. ``floors`` (layer name →
    count) protects each layer's entries that would be frozen last (the collapse guard).
    Returns how many were frozen.
    """
    named = score_layers(model)
    layers = list(named.values())
    flags = torch.cat([m.flags.flatten() for m in layers])
    scores = torch.cat([m.scores.detach().flatten() for m in layers])
    key = -scores if highest else scores
    candidates = torch.where(flags.bool(), key, torch.full_like(key, math.inf))
    if floors:
        protected = torch.cat(
            [_top_active(m, floors.get(n, 0), not highest).flatten() for n, m in named.items()]
        )
        candidates[protected] = math.inf
    count = min(count, int((candidates < math.inf).sum()))
    if count <= 0:
        return 0
    if ties_together:
        threshold = torch.kthvalue(candidates, count).values
        drop = candidates <= threshold
    else:
        drop = torch.zeros_like(flags, dtype=torch.bool)
        drop[torch.sort(candidates, stable=True).indices[:count]] = True
    offset = 0
    for m in layers:
        n = m.flags.numel()
        part = drop[offset : offset + n].view_as(m.flags)
        m.flags.masked_fill_(part, 0.0)
        m.scores.masked_fill_(part, 0.0)
        offset += n
    return int(drop.sum())


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


def _collapse_notice(
    epoch: int, guarded: Mapping[str, int], collapsed: list[str], runtime: Runtime
) -> None:
    if guarded:
        layers = ", ".join(f"{name} (+{n})" for name, n in guarded.items())
        notice(
            f"layer collapse guard, mining epoch {epoch}: too few weights of {layers} "
            "rounded to 1; kept their highest-scored weights (counted in the density)",
            runtime,
        )
    if collapsed:
        notice(
            f"layer collapse, mining epoch {epoch}: no weight of {', '.join(collapsed)} "
            "rounds to 1, so the network is disconnected (lower λ, or keep the guard on)",
            runtime,
        )


@dataclass
class MiningResult:
    """What :func:`mine_scores` returns.

    ``mask`` is the ticket to finetune (the flags q, or the rounded mask, as
    ``finetune_mask`` says); ``gem`` the rounded mask 1[p ≥ 0.5] ⊙ q — the "rare gem",
    accurate without finetuning; ``history`` the per-epoch records; ``model`` the trained
    score model.
    """

    mask: Mask
    history: list[dict] = field(default_factory=list)
    model: nn.Module | None = None
    gem: Mask | None = None

    @property
    def density(self) -> float:
        return self.mask.density


class MiningHooks(Hooks):
    """Gem-Miner's part of the training loop (see :func:`mine_scores`): the scores' steps
    (:class:`MiningStep`), then after each epoch λ's adaptation, the freezing of the
    schedule, the collapse guard, the epoch's record and its evaluation."""

    stage = "mine"
    where = "mining"

    def __init__(
        self,
        model: nn.Module,
        cfg: MineConfig,
        device: torch.device,
        *,
        eval_batches: Mapping[str, Batches] | None = None,
        eval_every: int = 1,
        calibration_batches: Batches | None = None,
        runtime: Runtime = SINGLE,
    ) -> None:
        self.model = model
        self.cfg = cfg
        self.device = device
        self.eval_batches = eval_batches
        self.eval_every = eval_every
        self.calibration_batches = calibration_batches
        self.runtime = runtime
        self.layers = score_layers(model)
        self.step = MiningStep(model, cfg)
        self.schedule = FreezeSchedule(cfg.density, cfg.epochs, cfg.period, cfg.freeze_schedule)
        _, self.total = flag_counts(model)
        self.floors = (
            {name: layer_floor(m, cfg.min_layer_density) for name, m in self.layers.items()}
            if cfg.collapse_guard
            else {}
        )
        self.lam = cfg.lam  # the λ of the next epoch

    @property
    def before_step(self) -> Callable[[], None] | None:  # type: ignore[override]
        return self.step.before_step

    def after_step(self) -> None:
        self.step.after_step()

    def before_epoch(self, epoch: int) -> None:
        self.step.set_lambda(self.lam)  # after a resume too: the checkpoint's λ

    def after_epoch(self, epoch: int, stats: EpochStats, lr: float) -> dict:
        epoch_lam = self.lam
        if self.cfg.auto_lambda:
            self.lam = adapt_lambda(
                self.lam, rounded_mask(self.model).density, self.schedule.bound(epoch)
            )
        frozen = self._freeze(epoch)
        guarded, collapsed, density = self._guard(epoch)
        active, _ = flag_counts(self.model)
        record = {
            "phase": "mine",
            "epoch": epoch,
            "loss": stats.loss,
            "reg": regularization_value(self.model, self.cfg.regularizer),
            "lam": epoch_lam,
            "train_acc": stats.accuracy,
            "lr": lr,
            "density": density,
            "flag_density": active / self.total,
            "bound": self.schedule.bound(epoch),
            "frozen": frozen,
        }
        if guarded or collapsed:
            record.update(guarded=guarded, collapsed=collapsed)
        record.update(self._evaluation(epoch))
        return record

    def _freeze(self, epoch: int) -> int:
        """Freeze the scores the schedule drops after ``epoch``; returns how many."""
        if not self.schedule.freezes_after(epoch):
            return 0
        return freeze_scores(
            self.model,
            self.schedule.freeze_count(epoch, flag_counts(self.model)[0], self.total),
            self.floors,
            highest=self.cfg.freeze_order == "highest",
            ties_together=self.schedule.kind == "authors",
        )

    def _guard(self, epoch: int) -> tuple[dict[str, int], list[str], float]:
        """Apply the collapse guard, make every rank's scores and flags rank 0's, and tell
        about collapsed layers. Returns the guarded layers, the collapsed ones and the
        rounded mask's density."""
        # the rounded mask of an inverted run (highest scores frozen) is not its ticket
        lowest = self.cfg.freeze_order == "lowest"
        guarded = guard_collapse(self.model, self.floors) if lowest else {}
        self.runtime.broadcast_([t for m in self.layers.values() for t in (m.scores, m.flags)])
        mask = rounded_mask(self.model)
        collapsed = [row.name for row in mask.layers() if row.kept == 0]
        _collapse_notice(epoch, guarded, collapsed, self.runtime)
        return guarded, collapsed, mask.density

    def _evaluation(self, epoch: int) -> dict[str, float]:
        """The rounded network's accuracies after ``epoch``, if evaluation is due: after the
        last epoch first with the BatchNorm statistics of mining (the authors' protocol,
        ``<split>_acc_running_bn``), then, as every time, with statistics re-estimated for
        the current mask (``<split>_acc``)."""
        if self.eval_batches is None or not evaluation_due(epoch, self.cfg.epochs, self.eval_every):
            return {}
        accs = {}
        if epoch == self.cfg.epochs:
            accs = evaluate_splits(
                self.model, self.eval_batches, self.device, self.runtime, "_running_bn"
            )
        self.recalibrate()
        accs.update(evaluate_splits(self.model, self.eval_batches, self.device, self.runtime))
        return accs

    def recalibrate(self) -> None:
        """Re-estimate BatchNorm statistics for the current mask (with calibration batches)."""
        if self.calibration_batches is not None:
            recalibrate_batchnorm(
                self.model,
                self.calibration_batches,
                self.device,
                self.cfg.bn_recalibration_batches,
            )

    def state(self) -> dict[str, float]:
        return {"lam": self.lam}

    def load_state(self, state: Mapping[str, Any]) -> None:
        self.lam = state.get("lam", self.lam)


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
    rounded network, recorded as ``<name>_acc``; after the last epoch also as
    ``<name>_acc_running_bn``, with the BatchNorm statistics left by mining (the authors'
    protocol), before they are re-estimated.
    ``calibration_batches`` (optional; shuffled, unaugmented training batches with their
    own generator, so the training order is not disturbed) re-estimate BatchNorm
    statistics for the current mask before each evaluation and at the end.
    ``checkpoint`` (optional) saves the state after every epoch and on a stop signal, and
    resumes from it (see :mod:`gemminer.training.checkpoint`).
    ``runtime`` sets precision and compilation; under torchrun each rank trains on its
    slice of every batch (DDP) and the scores and flags are made identical on every rank
    (rank 0's) after each epoch's freezing, so every rank holds the same mask.
    ``progress`` shows each epoch (:mod:`gemminer.training.progress`); every finished epoch
    is also logged at INFO on the ``gemminer`` logger.
    """
    model.to(device)
    hooks = MiningHooks(
        model,
        cfg,
        device,
        eval_batches=eval_batches,
        eval_every=eval_every,
        calibration_batches=calibration_batches,
        runtime=runtime,
    )
    optimizer = hooks.step.optimizer
    trainer = Trainer(
        model,
        optimizer,
        build_scheduler(optimizer, cfg.optim, cfg.epochs),
        train_batches,
        device,
        cfg.epochs,
        hooks,
        checkpoint=checkpoint,
        loaders={"calibration": calibration_batches},
        on_epoch=on_epoch,
        progress=progress,
        runtime=runtime,
    )
    history = trainer.fit()
    if eval_batches is None:  # else the last epoch's evaluation re-estimated them
        hooks.recalibrate()
    gem = rounded_mask(model)
    mask = flag_mask(model) if cfg.finetune_mask == "flags" else gem
    return MiningResult(mask, history, model, gem)


@dataclass(frozen=True)
class GemMinerSettings:
    """Gem-Miner's own settings; the defaults are Table 8's row for density 1.44 %.

    ``period`` T: freeze every T epochs; ``lam`` λ: weight of the ``regularizer`` on the
    scores; ``bn_recalibration_batches``: training batches used to re-estimate BatchNorm
    statistics of the current mask before each evaluation.
    ``collapse_guard`` (on by default) keeps at least one weight per output unit in every
    layer, or ``min_layer_density`` of it if larger; ``auto_lambda`` adapts λ every epoch
    (beyond the paper; see :func:`adapt_lambda`).
    ``freeze_schedule``: ``"authors"`` (default, the authors' code) or ``"algorithm1"``
    (the printed algorithm), see the module docstring. ``finetune_mask``: ``"flags"``
    (default, the authors' ``unflag_before_finetune: True``) or ``"rounded"`` (Algorithm
    1's output r(p) ⊙ q). ``freeze_order``: ``"highest"`` freezes the highest scores
    instead of the lowest — the authors' score-inversion sanity check.
    """

    period: int = 5
    lam: float = 1e-4
    regularizer: str = "l2"
    bn_recalibration_batches: int = CALIBRATION_BATCHES
    collapse_guard: bool = True
    min_layer_density: float = 0.0
    auto_lambda: bool = False
    freeze_schedule: str = "authors"
    finetune_mask: str = "flags"
    freeze_order: str = "lowest"

    def __post_init__(self) -> None:
        require(self.period >= 1, f"period must be >= 1, got {self.period}")
        require(math.isfinite(self.lam) and self.lam >= 0, f"lambda must be >= 0, got {self.lam}")
        check_choice(self.regularizer, REGULARIZERS, "regularizer")
        check_choice(self.freeze_schedule, FREEZE_SCHEDULES, "freeze_schedule")
        check_choice(self.finetune_mask, FINETUNE_MASKS, "finetune_mask")
        check_choice(self.freeze_order, FREEZE_ORDERS, "freeze_order")


def mine_config(prune: PruneConfig, settings: GemMinerSettings) -> MineConfig:
    """The full Gem-Miner configuration of a run (validated: e.g. period <= epochs)."""
    return MineConfig(
        density=prune.density,
        epochs=prune.epochs,
        batch_size=prune.batch_size,
        optim=prune.optim,
        **dataclasses.asdict(settings),
    )


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
    for split in ("test", "val"):
        prefix = "gem" if split == "test" else "gem_val"
        if f"{split}_acc" in last:
            out[f"{prefix}_acc"] = last[f"{split}_acc"]
        if f"{split}_acc_running_bn" in last:
            out[f"{prefix}_acc_running_bn"] = last[f"{split}_acc_running_bn"]
    return out


@register_method(
    "gem-miner",
    settings=GemMinerSettings,
    default_init="signed_constant",
    description="Gem-Miner: scores in [0,1], rounding, L2, iterative freezing (authors' schedule)",
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
        extra=gem_summary(result, cfg.finetune_mask),
    )
