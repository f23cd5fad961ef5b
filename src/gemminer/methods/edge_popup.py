"""Edge-Popup (Ramanujan et al., 2020) and the variants of the paper's Table 3.

The weights stay frozen at their initialization. Every prunable weight gets a real-valued
score ``s`` (Kaiming-uniform, as in allenai/hidden-networks), and the forward pass uses
``w ⊙ m`` where ``m`` keeps the weights whose ``|s|`` is among the top-k. The mask is
differentiated straight through: the gradient of ``w ⊙ m`` reaches ``m`` unchanged, then
``|s|``, so ∂L/∂s = (∂L/∂w_eff ⊙ w) ⊙ sign(s), for kept and pruned weights alike. The scores
are trained by SGD (``ctx.optim``) for ``ctx.epochs`` epochs in the shared training loop
(:class:`~gemminer.training.trainer.Trainer` with :class:`PopupHooks`, so a run resumes
after a kill); nothing else trains (the models' BatchNorm is non-affine). The ticket is
the top-k mask of the final scores on the original weights.

Settings (defaults = the original method) select the variants of Table 3:

* ``scope="layer"``: k = density × layer size in every layer (the original);
  ``scope="global"``: one top-k over the scores of all layers ("Global EP").
* ``gradual=True``: the kept fraction decays exponentially from 1 to the target over the
  epochs, ``density_j = target^(j/E)`` during epoch j = 1..E, the bound Gem-Miner's
  freezing follows (sampled every epoch). The last epoch trains at the target density.
  Pruning is not permanent: a weight dropped early comes back if its score grows.
* ``score_l2=λ``: λ‖s‖² added to the loss (its gradient 2λs added before each step).

Tolerance: with ``scope="global"`` the mask keeps ``round(density × total)`` weights
(within one weight of the target); with ``scope="layer"`` every layer keeps
``round(density × size)`` weights (at least one), so each layer is within one weight of
its target and the whole mask within one weight per layer.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from ..errors import ConfigError, MaskError
from ..masking import Mask, weight_name
from ..masking.scores import convert_layers
from ..masking.threshold import global_mask, keep_count, layerwise_mask
from ..settings.config import CALIBRATION_BATCHES
from ..training.loop import EpochStats, evaluate_splits, evaluation_due, recalibrate_batchnorm
from ..training.optim import build_optimizer
from ..training.trainer import Hooks, Trainer
from .base import PruneContext, PruneResult, register_method

SCOPES = ("layer", "global")


@dataclass(frozen=True)
class EdgePopupSettings:
    """Edge-Popup and its Table 3 variants; the defaults are the original method.

    ``scope``: ``"layer"`` (top-k per layer) or ``"global"`` (one top-k over all layers).
    ``gradual``: decay the kept fraction from 1 to the target as ``target^(j/E)``.
    ``score_l2``: λ of the λ‖s‖² penalty on the scores (0 = none).
    """

    scope: str = "layer"
    gradual: bool = False
    score_l2: float = 0.0

    def __post_init__(self) -> None:
        if self.scope not in SCOPES:
            raise ConfigError(
                f"unknown edge-popup scope {self.scope!r}; valid scopes: {', '.join(SCOPES)}"
            )
        if not isinstance(self.gradual, bool):
            raise ConfigError(f"gradual must be true or false, got {self.gradual!r}")
        if (
            isinstance(self.score_l2, bool)
            or not isinstance(self.score_l2, (int, float))
            or not math.isfinite(self.score_l2)
            or self.score_l2 < 0
        ):
            raise ConfigError(f"score_l2 must be a finite number >= 0, got {self.score_l2!r}")


@dataclass(frozen=True)
class GlobalEdgePopupSettings(EdgePopupSettings):
    """Table 3 "Global EP": one top-k over the scores of all layers."""

    scope: str = "global"


@dataclass(frozen=True)
class GlobalGradualEdgePopupSettings(EdgePopupSettings):
    """Table 3 "Global EP with gradual pruning"."""

    scope: str = "global"
    gradual: bool = True


# --- layers ----------------------------------------------------------------------------


class _TopKStraightThrough(torch.autograd.Function):
    """m = 1[|s| ≥ threshold]; the backward pass treats the thresholding as identity."""

    @staticmethod
    def forward(ctx, magnitudes: torch.Tensor, threshold: torch.Tensor) -> torch.Tensor:
        return (magnitudes >= threshold).to(magnitudes.dtype)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return grad, None


class PopupLayer:
    """Mixin: a frozen weight, a trainable score per weight and a threshold on ``|s|``.

    The layer keeps the weights whose ``|s|`` reaches ``threshold`` (a buffer the method
    sets; 0 keeps every weight). Layers never read configuration.
    """

    weight: nn.Parameter
    scores: nn.Parameter
    threshold: torch.Tensor

    def _add_scores(self, generator: torch.Generator | None) -> None:
        self.weight.requires_grad_(False)
        scores = torch.empty(self.weight.shape)
        nn.init.kaiming_uniform_(scores, a=math.sqrt(5), generator=generator)
        self.scores = nn.Parameter(scores.to(self.weight))
        self.register_buffer("threshold", torch.zeros((), device=self.weight.device))

    def mask(self) -> torch.Tensor:
        """The layer's current mask as booleans."""
        return self.scores.detach().abs() >= self.threshold

    def effective_weight(self) -> torch.Tensor:
        return self.weight * _TopKStraightThrough.apply(self.scores.abs(), self.threshold)


class PopupConv2d(PopupLayer, nn.Conv2d):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(x, self.effective_weight(), self.bias)


class PopupLinear(PopupLayer, nn.Linear):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.effective_weight(), self.bias)


_POPUP_CLASS: dict[type[nn.Module], type[nn.Module]] = {
    nn.Conv2d: PopupConv2d,
    nn.Linear: PopupLinear,
}


def to_popup_model(model: nn.Module, generator: torch.Generator | None = None) -> nn.Module:
    """Turn every Conv2d/Linear of ``model`` into a popup layer, in place, and return it.

    Every parameter is frozen except the new scores, drawn Kaiming-uniform (a = √5) from
    ``generator`` in module order.
    """
    convert_layers(model, _POPUP_CLASS, lambda m: m._add_scores(generator))
    for layer in popup_layers(model).values():
        layer.scores.requires_grad_(True)
    return model


def popup_layers(model: nn.Module) -> dict[str, PopupLayer]:
    """The popup layers of ``model`` keyed by weight name (``"conv1.weight"``)."""
    return {weight_name(n): m for n, m in model.named_modules() if isinstance(m, PopupLayer)}


def _kth_largest(values: torch.Tensor, k: int) -> torch.Tensor:
    return torch.kthvalue(values, values.numel() - k + 1).values


def layer_keep_counts(layers: dict[str, PopupLayer], density: float) -> dict[str, int]:
    """Weights each layer keeps at ``density`` in layer scope: nearest integer, at least 1."""
    return {name: keep_count(m.scores.numel(), density) for name, m in layers.items()}


@torch.no_grad()
def set_thresholds(layers: dict[str, PopupLayer], density: float, scope: str) -> None:
    """Set every layer's threshold so that the top-k of ``|s|`` is kept.

    ``"layer"``: k = ``round(density × size)`` in each layer; ``"global"``: k =
    ``round(density × total)`` over all layers together. Runs on the scores' device
    without synchronizing with the host. Ties at the threshold are all kept (they do not
    occur with real-valued scores in practice); the final mask breaks them exactly.
    """
    if scope == "layer":
        counts = layer_keep_counts(layers, density)
        for name, m in layers.items():
            m.threshold.copy_(_kth_largest(m.scores.detach().abs().flatten(), counts[name]))
        return
    flat = torch.cat([m.scores.detach().abs().flatten() for m in layers.values()])
    threshold = _kth_largest(flat, keep_count(flat.numel(), density))
    for m in layers.values():
        m.threshold.copy_(threshold)


@torch.no_grad()
def add_score_l2_grad(layers: dict[str, PopupLayer], lam: float) -> None:
    """Add ∂(λ‖s‖²)/∂s = 2λs to the score gradients."""
    if lam == 0:
        return
    for m in layers.values():
        if m.scores.grad is None:
            m.scores.grad = torch.zeros_like(m.scores)
        m.scores.grad.add_(m.scores, alpha=2 * lam)


def scheduled_density(target: float, epoch: int, epochs: int, gradual: bool) -> float:
    """The kept fraction during ``epoch`` (1-based): the target, or ``target^(epoch/epochs)``."""
    if not gradual or epoch >= epochs:
        return target
    return target ** (epoch / epochs)


def final_mask(layers: dict[str, PopupLayer], density: float, scope: str) -> Mask:
    """The exact top-k mask of the current ``|s|`` (shared thresholding, ties by position)."""
    scores = {name: m.scores.detach().abs().cpu() for name, m in layers.items()}
    if scope == "global":
        return global_mask(scores, density)
    counts = layer_keep_counts(layers, density)
    return layerwise_mask(scores, {n: counts[n] / scores[n].numel() for n in scores})


# --- training --------------------------------------------------------------------------


@dataclass
class PopupTraining:
    """What :func:`train_scores` returns: the trained popup model and its history."""

    model: nn.Module
    steps: int
    history: list[dict] = field(default_factory=list)


def _check_context(ctx: PruneContext) -> None:
    if not 0 < ctx.density <= 1:
        raise ConfigError(f"density must lie in (0, 1] (the fraction kept), got {ctx.density}")
    if ctx.epochs < 1:
        raise ConfigError(f"edge-popup needs at least one training epoch, got {ctx.epochs}")


class PopupHooks(Hooks):
    """Edge-Popup's part of the training loop: each epoch's kept fraction, the L2 penalty's
    gradient before each step, the top-k thresholds after it, and the epoch's record."""

    stage = "edge-popup"
    where = "edge-popup training"
    phase = "prune"

    def __init__(self, model: nn.Module, ctx: PruneContext, settings: EdgePopupSettings) -> None:
        self.model = model
        self.ctx = ctx
        self.settings = settings
        self.layers = popup_layers(model)
        self.total = sum(m.scores.numel() for m in self.layers.values())
        self.density = ctx.density  # the kept fraction of the epoch in progress
        self.steps = 0  # optimizer steps taken

    def before_epoch(self, epoch: int) -> None:
        self.density = scheduled_density(
            self.ctx.density, epoch, self.ctx.epochs, self.settings.gradual
        )
        set_thresholds(self.layers, self.density, self.settings.scope)

    def before_step(self) -> None:
        add_score_l2_grad(self.layers, self.settings.score_l2)

    def after_step(self) -> None:
        self.steps += 1
        set_thresholds(self.layers, self.density, self.settings.scope)

    def after_epoch(self, epoch: int, stats: EpochStats, lr: float) -> dict:
        kept = int(sum(m.mask().sum() for m in self.layers.values()))
        record = super().after_epoch(epoch, stats, lr)
        record.update(density=kept / self.total, target_density=self.density)
        ctx = self.ctx
        if ctx.eval_batches is not None and evaluation_due(epoch, ctx.epochs, ctx.eval_every):
            if ctx.calibration_batches is not None:
                recalibrate_batchnorm(
                    self.model, ctx.calibration_batches, ctx.device, CALIBRATION_BATCHES
                )
            record.update(evaluate_splits(self.model, ctx.eval_batches, ctx.device, ctx.runtime))
        return record

    def state(self) -> dict[str, int]:
        return {"steps": self.steps}

    def load_state(self, state: Mapping[str, Any]) -> None:
        self.steps = int(state["steps"])


def train_scores(ctx: PruneContext, settings: EdgePopupSettings) -> PopupTraining:
    """Train the scores of a popup copy of ``ctx.model``; ``ctx.model`` is left unchanged.

    Saves its state to ``ctx.checkpoint`` (if any) after every epoch and on a stop
    signal, and continues from it.
    """
    _check_context(ctx)
    generator = torch.Generator().manual_seed(ctx.seed)
    model = to_popup_model(copy.deepcopy(ctx.model), generator).to(ctx.device)
    if not popup_layers(model):
        raise MaskError("the model has no Conv2d or Linear layer to prune")
    hooks = PopupHooks(model, ctx, settings)
    trainer = Trainer.scheduled(
        model,
        build_optimizer([m.scores for m in hooks.layers.values()], ctx.optim),
        ctx.optim,
        ctx.train_batches,
        ctx.device,
        ctx.epochs,
        hooks,
        checkpoint=ctx.checkpoint,
        loaders={"calibration": ctx.calibration_batches},
        on_epoch=ctx.on_epoch,
        progress=ctx.progress,
        runtime=ctx.runtime,
    )
    history = trainer.fit()
    return PopupTraining(model, hooks.steps, history)


#: Shared by the Edge-Popup variants: hidden-networks trains scores with SGD, LR 0.1,
#: weight decay 5e-4 over 100 cosine epochs, from signed-constant weights.
_TRAINING = {
    "default_init": "signed_constant",
    "weight_decay": 5e-4,
    "lr_epochs": 100,
    "min_epochs": 1,
}


@register_method(
    "edge-popup-global-gradual",
    settings=GlobalGradualEdgePopupSettings,
    **_TRAINING,
    description="Edge-Popup, global top-k, kept fraction decaying to the target (Table 3)",
)
@register_method(
    "edge-popup-global",
    settings=GlobalEdgePopupSettings,
    **_TRAINING,
    description="Edge-Popup with one top-k over all layers (Table 3, Global EP)",
)
@register_method(
    "edge-popup",
    settings=EdgePopupSettings,
    **_TRAINING,
    description="Edge-Popup (Ramanujan et al. 2020): learned scores, top-k per layer",
)
def run(ctx: PruneContext, settings: EdgePopupSettings) -> PruneResult:
    """Edge-Popup: train the scores, return the top-k mask of ``|s|`` on the original weights."""
    trained = train_scores(ctx, settings)
    layers = popup_layers(trained.model)
    mask = final_mask(layers, ctx.density, settings.scope)
    scores = {name: m.scores.detach().abs().cpu().clone() for name, m in layers.items()}
    return PruneResult(
        mask=mask,
        epochs_to_mask=float(ctx.epochs),
        iterations_to_mask=trained.steps,
        weights=None,
        scores=scores,
        history=trained.history,
    )


__all__: list[str] = [
    "EdgePopupSettings",
    "GlobalEdgePopupSettings",
    "GlobalGradualEdgePopupSettings",
    "PopupConv2d",
    "PopupLayer",
    "PopupLinear",
    "PopupTraining",
    "final_mask",
    "popup_layers",
    "run",
    "scheduled_density",
    "set_thresholds",
    "to_popup_model",
    "train_scores",
]
