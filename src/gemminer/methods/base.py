"""The interface of a pruning method: score (or train), return a mask; shared code does the rest.

A method is one function ``run(ctx, settings) -> PruneResult`` registered with
:func:`register_method`, together with a frozen dataclass of its own settings (each
defaulting to the published method). A method that only scores registers
``score(ctx, settings) -> Scores`` with :func:`gemminer.methods.scoring.register_scorer`
instead, and shared code thresholds its scores; a method that trains runs its epochs in
the shared loop (:class:`gemminer.training.trainer.Trainer`) with its own hooks. Shared
code builds the model and data, evaluates the ticket before finetuning, and finetunes
every ticket the same way (Table 15's row, unless the method's authors finetuned their
baseline otherwise: ``finetune_rows``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any

import torch
from torch import nn

from ..errors import ConfigError
from ..masking import Mask
from ..settings.config import OptimConfig, PruneConfig
from ..settings.recipe import FinetuneRecipe
from ..training.checkpoint import Checkpoint
from ..training.loop import Batches
from ..training.runtime import SINGLE, Runtime


@dataclass(frozen=True)
class NoSettings:
    """For methods without settings of their own."""


@dataclass
class PruneContext:
    """What a method may use to find its mask.

    ``model`` is the plain network at its original initialization; a method that trains
    works on a copy (``copy.deepcopy``) and never changes ``model`` in place.
    ``epochs`` is the training budget for methods that train to find their mask (per
    round for iterative methods); ``optim`` and ``batch_size`` go with it.
    """

    model: nn.Module
    density: float
    train_batches: Batches
    device: torch.device
    epochs: int = 1
    batch_size: int = 128
    optim: OptimConfig = field(default_factory=OptimConfig)
    seed: int = 0
    eval_batches: Mapping[str, Batches] | None = None
    eval_every: int = 1  # evaluate every n epochs (0: only after the last)
    calibration_batches: Batches | None = None
    on_epoch: Callable[[dict], None] | None = None
    progress: bool = False
    #: Methods that train save their state here every epoch and continue from it
    #: (through :class:`~gemminer.training.trainer.Trainer`).
    checkpoint: Checkpoint | None = None
    #: Precision, compilation and the torchrun process group; methods that train pass it
    #: on to the training loops, so they run under DDP.
    runtime: Runtime = SINGLE
    #: One input's shape (channels, height, width): what multiply-adds are counted for
    #: (methods whose target is a fraction of multiply-adds need it).
    input_shape: tuple[int, ...] | None = None
    #: A ticket's mask to prune within (weight name → booleans; methods that can,
    #: :attr:`MethodSpec.mines_within`): its pruned weights stay pruned.
    within: Mapping[str, torch.Tensor] | None = None

    @property
    def batches_per_epoch(self) -> int:
        return len(self.train_batches)  # type: ignore[arg-type]


@dataclass
class PruneResult:
    """A method's output.

    ``weights``: the ticket's weights as a state dict of the plain model (parameters and,
    optionally, buffers), when they are not the original initialization (IMP rewinds to
    an epoch, learning-rate rewinding keeps trained weights); ``None`` means the
    original initialization. ``scores``: per-weight scores, higher = more important,
    keyed like the mask, for score inversion. ``epochs_to_mask`` and
    ``iterations_to_mask`` count the training spent to find the mask (Table 1).
    """

    mask: Mask
    epochs_to_mask: float
    iterations_to_mask: int
    weights: dict[str, torch.Tensor] | None = None
    scores: dict[str, torch.Tensor] | None = None
    history: list[dict] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)  # method-specific summary figures


@dataclass(frozen=True)
class MethodSpec:
    """A registered method: how to run it and what it needs."""

    name: str
    run: Callable[[PruneContext, Any], PruneResult]
    settings: type = NoSettings
    default_init: str = "kaiming_normal"
    description: str = ""
    weight_decay: float = 0.0
    lr: float = 0.1
    lr_epochs: int = 0
    #: The density of every mask the method returns, whatever the target (dense: 1);
    #: ``None``: the target's. Defaults that depend on density (the finetuning row of
    #: Table 15) follow this one.
    fixed_density: float | None = None
    #: Whether finding the mask trains (Gem-Miner, Edge-Popup, IMP); False for one-shot
    #: scorers and dense, whose ``--epochs`` only scale other defaults.
    trains: bool = True
    #: ``((model, dataset), row)`` pairs: how the method's own authors finetuned its masks
    #: where that is not Table 15's row (Smart Ratio, configs/sr/*); at a run's budget the
    #: row's epochs scale like Table 15's
    #: (:meth:`gemminer.settings.recipe.Recipe.finetune_epochs_at`).
    finetune_rows: tuple[tuple[tuple[str, str], FinetuneRecipe], ...] = ()
    #: The fewest ``--epochs`` the method runs with (Gem-Miner and Edge-Popup train: 1);
    #: checked when the settings are resolved, before any data is loaded.
    min_epochs: int = 0
    #: ``validate(prune, settings)``: checks of the settings against the run's budget
    #: (e.g. Gem-Miner's period no longer than its epochs), raising a ConfigError when
    #: the run is resolved, so that no run starts only to fail later.
    validate: Callable[[PruneConfig, Any], None] | None = None
    #: ``shortfall_hint(settings)``: why a ticket may keep fewer weights than the target
    #: and what to do, appended to the density-shortfall warning ("" for nothing to add).
    shortfall_hint: Callable[[Any], str] | None = None
    #: ``budget(settings)``: what the target counts, ``"density"`` (the fraction of
    #: weights kept; also when None) or ``"flops"`` (the fraction of forward multiply-adds
    #: kept: channel pruning, whose weight density follows from the channels kept).
    budget: Callable[[Any], str] | None = None
    #: Whether the method can prune within a ticket (``PruneContext.within``, ``--within
    #: RUN``), keeping a subset of its weights.
    mines_within: bool = False

    def budget_of(self, settings: Any) -> str:
        """What this method's target counts with ``settings``: ``"density"`` or
        ``"flops"``."""
        return "density" if self.budget is None else self.budget(settings)

    def finetune_row(self, model: str, dataset: str) -> FinetuneRecipe | None:
        """The method's own finetuning row for ``model`` on ``dataset``, if it has one."""
        return dict(self.finetune_rows).get((model, dataset))

    def build_settings(self, values: Mapping[str, Any] | None = None) -> Any:
        """The method's settings from a dict of overrides; unknown keys are errors."""
        values = dict(values or {})
        known = {f.name for f in fields(self.settings)}
        unknown = sorted(set(values) - known)
        if unknown:
            valid = ", ".join(sorted(known)) or "none"
            raise ConfigError(
                f"method {self.name!r} has no setting {', '.join(unknown)}; its settings: {valid}"
            )
        return self.settings(**values)


def register_method(
    name: str,
    *,
    settings: type = NoSettings,
    default_init: str = "kaiming_normal",
    description: str = "",
    weight_decay: float = 0.0,
    lr: float = 0.1,
    lr_epochs: int = 0,
    fixed_density: float | None = None,
    trains: bool = True,
    finetune_rows: Mapping[tuple[str, str], FinetuneRecipe] | None = None,
    min_epochs: int = 0,
    validate: Callable[[PruneConfig, Any], None] | None = None,
    shortfall_hint: Callable[[Any], str] | None = None,
    budget: Callable[[Any], str] | None = None,
    mines_within: bool = False,
) -> Callable[
    [Callable[[PruneContext, Any], PruneResult]], Callable[[PruneContext, Any], PruneResult]
]:
    """Register ``run(ctx, settings) -> PruneResult`` under ``name``.

    ``default_init`` is the weight initialization the method's authors used, and
    ``weight_decay`` and ``lr`` the defaults of the optimizer that finds the mask (if it
    trains). Methods that learn scores name the epochs their ``lr`` was published for in
    ``lr_epochs``: shorter runs scale the lr up to the same summed learning rate
    (:func:`gemminer.settings.config.budget_scaled_lr`), as scores must travel the same distance.
    ``fixed_density``: the density of every mask of a method that ignores the target.
    ``trains``: False for a method that finds its mask without training (one shot).
    ``finetune_rows``: ``{(model, dataset): FinetuneRecipe}``, the finetuning the method's
    authors used for its masks where it differs from Table 15's row (name the source).
    ``min_epochs``, ``validate``, ``shortfall_hint``, ``budget`` and ``mines_within``: see
    :class:`MethodSpec`.
    """
    from . import METHODS

    def decorate(run: Callable[[PruneContext, Any], PruneResult]) -> Callable[..., PruneResult]:
        METHODS.register(name)(
            MethodSpec(
                name,
                run,
                settings,
                default_init,
                description,
                weight_decay,
                lr,
                lr_epochs,
                fixed_density,
                trains,
                tuple((finetune_rows or {}).items()),
                min_epochs,
                validate,
                shortfall_hint,
                budget,
                mines_within,
            )
        )
        return run

    return decorate
