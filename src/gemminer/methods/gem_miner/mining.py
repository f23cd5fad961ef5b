"""Gem-Miner's training: the scores' optimizer step (λ‖p‖² as its weight decay, the
projection into [0, 1]), the per-epoch hooks of the shared training loop (λ, freezing,
collapse guard, record, evaluation) and :func:`mine_scores`, which runs them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ...masking import Mask, score_layers
from ...masking.scores import THRESHOLD, project
from ...notices import notice
from ...training.checkpoint import Checkpoint
from ...training.loop import (
    Batches,
    EpochStats,
    recalibrate_batchnorm,
)
from ...training.optim import build_optimizer
from ...training.runtime import SINGLE, Runtime
from ...training.trainer import EpochCallback, EvaluatingHooks, Trainer
from .freezing import FreezeSchedule, adapt_lambda
from .settings import MineConfig
from .spaces import ChannelSpace, WeightSpace

#: What Gem-Miner scores (:mod:`.spaces`).
ScoreSpace = WeightSpace | ChannelSpace


def regularization_value(scores: list[torch.Tensor], kind: str) -> float:
    """‖p‖² (``"l2"``) or ‖p‖₁ (``"l1"``) over every score tensor."""
    with torch.no_grad():
        if kind == "l2":
            return float(sum(s.pow(2).sum() for s in scores))
        return float(sum(s.abs().sum() for s in scores))


@torch.no_grad()
def add_regularization_grad(scores: list[torch.Tensor], lam: float, kind: str) -> None:
    """Add ∂(λ·reg)/∂p to the score gradients: 2λp for L2, λ·sign(p) for L1.

    Equivalent to adding λ·reg(p) to the loss before ``backward``, without building
    the extra graph on every step.
    """
    if lam == 0:
        return
    for p in scores:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
        if kind == "l2":
            p.grad.add_(p, alpha=2 * lam)
        else:
            p.grad.add_(p.sign(), alpha=lam)


class MiningStep:
    """Gem-Miner's optimizer and per-step hooks for the scores of ``model``'s score layers,
    or for the given ``scores`` (with their ``flags``: channel scores).

    λ‖p‖²'s gradient 2λp is the optimizer's own weight decay (the same update, fused into
    its multi-tensor step); L1's λ·sign(p) is added to the gradients by ``before_step``.
    ``after_step`` projects the scores into [0, 1] (frozen ones stay 0).
    """

    def __init__(
        self,
        model: nn.Module,
        cfg: MineConfig,
        *,
        scores: list[torch.Tensor] | None = None,
        flags: list[torch.Tensor] | None = None,
    ) -> None:
        layers = score_layers(model).values() if scores is None else ()
        self.scores = scores if scores is not None else [m.scores for m in layers]
        self.flags = flags if flags is not None else [m.flags for m in layers]
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
        return lambda: add_regularization_grad(self.scores, self.lam, self.regularizer)

    def after_step(self) -> None:
        project(self.scores, self.flags)


def rounded_count(space: ScoreSpace) -> int:
    """How many active scores of ``space`` round to 1 (p ≥ 0.5, flag 1)."""
    with torch.no_grad():
        return sum(
            int(((p >= THRESHOLD) & q.bool()).sum()) for p, q in zip(space.scores, space.flags)
        )


def live_cut_notice(history: list[dict], cfg: MineConfig, unit: str, runtime: Runtime) -> None:
    """Tell when freezes cut units that still rounded to 1 (``frozen_live`` in the epoch
    records): λ did not pull the scores below 0.5 ahead of the bound, so the ticket lost
    units in use — the failure of a budget too short for λ (no notice for the score
    inversion, which freezes the highest scores on purpose)."""
    cut = [r for r in history if r.get("frozen_live")]
    if not cut or cfg.freeze_order != "lowest":
        return
    lost = sum(r["frozen_live"] for r in cut)
    frozen = sum(r.get("frozen", 0) for r in cut)
    freezes = sum(1 for r in history if r.get("frozen"))
    notice(
        f"{len(cut)} of {freezes} freezes cut {unit} that still rounded to 1 ({lost:,} of the "
        f"{frozen:,} they froze; the first after mining epoch {cut[0]['epoch']}): λ = "
        f"{cfg.lam:g} did not pull the scores below 0.5 ahead of the bound at this budget, "
        "so the ticket lost what the network was using. Raise --lambda"
        + ("" if cfg.auto_lambda else " (or --set auto_lambda=true, which raises it then)")
        + " or mine for more epochs",
        runtime,
    )


def _collapse_notice(
    epoch: int,
    guarded: Mapping[str, int],
    collapsed: list[str],
    runtime: Runtime,
    unit: str = "weights",
) -> None:
    if guarded:
        layers = ", ".join(f"{name} (+{n})" for name, n in guarded.items())
        notice(
            f"layer collapse guard, mining epoch {epoch}: too few {unit} of {layers} "
            f"rounded to 1; kept their highest-scored {unit} (counted in the density)",
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


class MiningHooks(EvaluatingHooks):
    """Gem-Miner's part of the training loop (see :func:`mine_scores`): the scores' steps
    (:class:`MiningStep`), then after each epoch λ's adaptation, the freezing of the
    schedule, the collapse guard, the epoch's record and its evaluation."""

    stage = "mine"
    where = "mining"
    phase = "mine"

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
        space: ScoreSpace | None = None,
        start_density: float = 1.0,
    ) -> None:
        super().__init__(
            model,
            device,
            cfg.epochs,
            eval_batches=eval_batches,
            eval_every=eval_every,
            runtime=runtime,
        )
        self.cfg = cfg
        self.calibration_batches = calibration_batches
        self.space = space or WeightSpace(model, cfg.collapse_guard, cfg.min_layer_density)
        self.step = MiningStep(model, cfg, scores=self.space.scores, flags=self.space.flags)
        self.schedule = FreezeSchedule(
            cfg.density, cfg.epochs, cfg.period, cfg.freeze_schedule, start=start_density
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
                self.lam, self.space.rounded_fraction(), self.schedule.bound(epoch)
            )
        frozen, frozen_live = self._freeze(epoch)
        guarded, collapsed, rounded = self._guard(epoch)
        record = super().after_epoch(epoch, stats, lr)
        record.update(
            reg=regularization_value(self.space.scores, self.cfg.regularizer),
            lam=epoch_lam,
            **self.space.record(rounded),
            bound=self.schedule.bound(epoch),
            frozen=frozen,
            frozen_live=frozen_live,
        )
        if guarded or collapsed:
            record.update(guarded=guarded, collapsed=collapsed)
        record.update(self._evaluation(epoch))
        return record

    def _freeze(self, epoch: int) -> tuple[int, int]:
        """Freeze the scores the schedule drops after ``epoch``; returns how many, and how
        many of them still rounded to 1 (units the network was using: none, where λ
        pulled the scores below 0.5 ahead of the bound)."""
        if not self.schedule.freezes_after(epoch):
            return 0, 0
        before = rounded_count(self.space)
        frozen = self.space.freeze(self.schedule, epoch, self.cfg.freeze_order == "highest")
        return frozen, before - rounded_count(self.space)

    def _guard(self, epoch: int) -> tuple[dict[str, int], list[str], Mask]:
        """Apply the collapse guard, make every rank's scores and flags rank 0's, and tell
        about collapsed layers. Returns the guarded layers, the collapsed ones and the
        rounded mask."""
        # the rounded mask of an inverted run (highest scores frozen) is not its ticket
        lowest = self.cfg.freeze_order == "lowest"
        guarded = self.space.guard() if lowest else {}
        self.runtime.broadcast_(
            [t for pair in zip(self.space.scores, self.space.flags) for t in pair]
        )
        mask = self.space.rounded_mask()
        collapsed = [row.name for row in mask.layers() if row.kept == 0]
        _collapse_notice(epoch, guarded, collapsed, self.runtime, self.space.unit)
        return guarded, collapsed, mask

    def _evaluation(self, epoch: int) -> dict[str, float]:
        """The rounded network's accuracies after ``epoch``, if evaluation is due: after the
        last epoch first with the BatchNorm statistics of mining (the authors' protocol,
        ``<split>_acc_running_bn``), then, as every time, with statistics re-estimated for
        the current mask (``<split>_acc``)."""
        if not self.evaluating_after(epoch):
            return {}
        accs = self.accuracies("_running_bn") if epoch == self.epochs else {}
        self.recalibrate()
        accs.update(self.accuracies())
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
    space: ScoreSpace | None = None,
    start_density: float = 1.0,
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
    ``space`` says what is scored (:mod:`.spaces`; default: every weight of the score
    layers; a :class:`~.spaces.ChannelSpace` for a model made by
    :func:`~gemminer.masking.channel_scores.to_channel_model`).
    ``start_density``: the density the bound falls from (1; below it when mining within a
    ticket whose pruned weights start frozen out, :func:`~.start_within`).
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
        space=space,
        start_density=start_density,
    )
    trainer = Trainer.scheduled(
        model,
        hooks.step.optimizer,
        cfg.optim,
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
    live_cut_notice(history, cfg, hooks.space.unit, runtime)
    if eval_batches is None:  # else the last epoch's evaluation re-estimated them
        hooks.recalibrate()
    gem = hooks.space.rounded_mask()
    mask = hooks.space.flag_mask() if cfg.finetune_mask == "flags" else gem
    return MiningResult(mask, history, model, gem)
