"""Iterative magnitude pruning (IMP) with weight rewinding.

Frankle & Carbin (2019), "The Lottery Ticket Hypothesis", and Frankle et al. (2020),
"Linear Mode Connectivity and the Lottery Ticket Hypothesis". Each round trains the
network with the current mask fixed, prunes ``prune_fraction`` of the *remaining*
weights by global magnitude |w| (weights pruned earlier never come back), and rewinds
the kept weights to the rewind point:

* **cold** (``rewind="0it"``, the default): the original initialization — a lottery
  ticket;
* **warm** (``rewind="Nit"``, ``"Kep"`` or ``"KepNit"``): the weights after that many
  optimizer steps of the first round's (dense) training, snapshotted during that round
  (later rounds restart from its parameters and buffers, BatchNorm statistics included;
  the ticket's weights are its parameters). The step strings are
  open_lth's (``foundations/step.py``: ``"2000it"``, ``"120ep"``, ``"120ep50it"``); an
  epoch is ``len(ctx.train_batches)`` steps. ``rewind_epoch=k`` is kept as an alias of
  ``rewind="kep"``. Rewinding to an iteration is what the rare-gems authors' IMP does
  (``imp_main.py``: ``--imp_rewind_iter`` counts optimizer steps and copies the
  ``state_dict`` when round 0 reaches it; ``0`` rewinds to the initialization). The
  rewind point must come before the end of the first round (the authors assert the
  same, ``imp_rewind_iter // 391 < iter_period``).

Every round, as in the authors' ``imp_main.py``, trains a whole round of epochs with a
fresh optimizer and schedule (open_lth instead resumes later levels' schedules at the
rewind step); the rewind point only decides which weights each round starts from.

The number of rounds is the smallest R with (1 − f)^R ≤ target density (up to a relative
slack of :data:`ROUND_SLACK`, so that 0.8^19 ≈ 0.01441 counts as 1.44 % and takes 19
rounds, as in the paper's Table 1), and the last round prunes exactly down to the target.
With ``rounds=R`` every round prunes 1 − density^(1/R) instead. ``round_epochs`` sets the
length of a round ("short" vs "long" IMP, Appendix B / Fig. 10 of the Gem-Miner paper).

The shared loop, :func:`prune_iteratively`, also serves learning-rate rewinding
(:mod:`gemminer.methods.lr_rewinding`), which keeps the trained weights instead of
rewinding them. Each round trains in the shared training loop
(:class:`~gemminer.training.trainer.Trainer`, with :class:`PruningRound`'s hooks), so a
run stopped or killed continues in the round it was in, to the same result.
"""

from __future__ import annotations

import copy
import math
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from numbers import Real
from typing import Any

import torch
from torch import nn

from ..errors import ConfigError, GemMinerError
from ..masking import Mask, prunable_weights
from ..masking.threshold import global_mask
from ..settings.config import PruneConfig
from ..training.finetune import MaskedTraining
from ..training.loop import Batches, EpochStats
from ..training.optim import build_optimizer
from ..training.trainer import Trainer
from .base import PruneContext, PruneResult, register_method

ROUND_SLACK = 0.01
"""Relative slack on the target density when deriving the number of rounds: a round is
not added just to prune the last < 1 % of the target away (the last round then prunes
slightly more than ``prune_fraction`` to land on the target)."""

RoundCallback = Callable[[int, Mask], None]


# Settings ----------------------------------------------------------------------------------
def check_fraction(value: object, name: str = "prune_fraction") -> None:
    """A fraction of the remaining weights pruned per round: a number in (0, 1)."""
    ok = isinstance(value, Real) and not isinstance(value, bool) and math.isfinite(value)
    if not (ok and 0 < value < 1):
        raise ConfigError(
            f"{name} must lie in (0, 1) (a fraction of the remaining weights), got {value!r}"
        )


def check_count(value: object, name: str, meaning: str) -> None:
    """A whole number >= 0 where 0 means ``meaning``."""
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ConfigError(f"{name} must be a whole number >= 0 (0 = {meaning}), got {value!r}")


_STEP = re.compile(r"(?:(\d+)ep)?(?:(\d+)it)?")


@dataclass(frozen=True)
class RewindPoint:
    """A point of the first round's training, as ``epochs`` plus ``iterations`` steps."""

    epochs: int = 0
    iterations: int = 0

    def steps(self, steps_per_epoch: int) -> int:
        """Optimizer steps from the start of training to this point."""
        return self.epochs * steps_per_epoch + self.iterations


def parse_rewind(text: object) -> RewindPoint:
    """open_lth's step strings: ``"500it"``, ``"2ep"`` or ``"2ep100it"`` (whole numbers)."""
    match = _STEP.fullmatch(text.strip()) if isinstance(text, str) else None
    if match is None or not any(match.groups()):
        raise ConfigError(
            f"rewind must be a training step like '500it' (optimizer steps), '2ep' (epochs) "
            f"or '2ep100it' ('0it' = the initialization), got {text!r}"
        )
    epochs, iterations = (int(g) if g else 0 for g in match.groups())
    return RewindPoint(epochs, iterations)


@dataclass(frozen=True)
class ImpSettings:
    """IMP (Frankle et al. 2019/2020).

    ``prune_fraction``: fraction of the remaining weights pruned per round (0.2 in the
    papers). ``rewind``: where the kept weights go back to after each pruning, a step of
    the first round as in open_lth: ``"0it"`` (or ``""``, the default) the initialization
    ("cold"), ``"500it"`` the weights after 500 optimizer steps, ``"2ep"`` after 2 epochs
    ("warm"). ``rewind_epoch``: k > 0 is the same as ``rewind="kep"`` (kept for older
    recipes and sweeps; set one of the two). ``rounds``: 0 derives the number of rounds
    from ``prune_fraction``; R > 0 uses exactly R rounds of 1 − density^(1/R) each.
    ``round_epochs``: training epochs per round; 0 = the method's epoch budget.
    """

    prune_fraction: float = 0.2
    rewind_epoch: int = 0
    rounds: int = 0
    round_epochs: int = 0
    rewind: str = ""

    def __post_init__(self) -> None:
        check_fraction(self.prune_fraction)
        check_count(self.rewind_epoch, "rewind_epoch", "rewind to initialization")
        check_count(self.rounds, "rounds", "derived from prune_fraction")
        check_count(self.round_epochs, "round_epochs", "the method's epoch budget")
        if self.round_epochs and self.rewind_epoch >= self.round_epochs:
            raise ConfigError(
                f"rewind_epoch {self.rewind_epoch} must be shorter than a round "
                f"(round_epochs = {self.round_epochs})"
            )
        if self.rewind != "":
            point = parse_rewind(self.rewind)
            if self.rewind_epoch:
                raise ConfigError(
                    f"rewind {self.rewind!r} and rewind_epoch {self.rewind_epoch} both set "
                    f"the rewind point; set only rewind (e.g. '{self.rewind_epoch}ep')"
                )
            if self.round_epochs and point.epochs >= self.round_epochs:
                raise ConfigError(
                    f"rewind {self.rewind!r} must come before the end of a round "
                    f"(round_epochs = {self.round_epochs})"
                )

    @property
    def rewind_point(self) -> RewindPoint:
        """The rewind point, from ``rewind`` or its alias ``rewind_epoch``."""
        if self.rewind != "":
            return parse_rewind(self.rewind)
        return RewindPoint(epochs=self.rewind_epoch)


def resolve_rewind_step(settings: ImpSettings, round_epochs: int, steps_per_epoch: int) -> int:
    """The rewind point in optimizer steps; :class:`ConfigError` unless it lies within
    the first round (from 0, the initialization, up to but excluding its last step)."""
    step = settings.rewind_point.steps(steps_per_epoch)
    total = round_epochs * steps_per_epoch
    if step < total:
        return step
    if settings.rewind == "":  # the alias rewind_epoch
        raise ConfigError(
            f"rewind_epoch {settings.rewind_epoch} must lie in [0, {round_epochs}), "
            f"within the first round's {round_epochs} epochs"
        )
    raise ConfigError(
        f"rewind {settings.rewind!r} is step {step}, beyond the first round's {total} "
        f"optimizer steps ({round_epochs} epochs of {steps_per_epoch}); "
        f"rewind to a step below {total}"
    )


# The schedule ------------------------------------------------------------------------------
def round_densities(density: float, prune_fraction: float, rounds: int = 0) -> tuple[float, ...]:
    """The density after each round; the last one is exactly ``density``.

    ``rounds=0``: (1 − f)^1, (1 − f)^2, …, until (1 − f)^R ≤ density · (1 + ROUND_SLACK),
    whose entry is replaced by ``density`` (at least one round). ``rounds=R``: density^(r/R).
    E.g. density 0.5 with f = 0.2: 0.8, 0.64, 0.512, 0.5 (four rounds).
    """
    if not 0 < density <= 1:
        raise ConfigError(
            f"density must lie in (0, 1] (the fraction of weights kept), got {density}"
        )
    if rounds > 0:
        return tuple(density ** (r / rounds) for r in range(1, rounds)) + (density,)
    out: list[float] = []
    d = 1.0 - prune_fraction
    while d > density * (1 + ROUND_SLACK):
        out.append(d)
        d *= 1.0 - prune_fraction
    return (*out, density)


def resolve_round_epochs(round_epochs: int, epochs: int) -> int:
    """The training epochs of each round: ``round_epochs``, else the method's budget."""
    epochs = round_epochs or epochs
    if not isinstance(epochs, int) or epochs < 1:
        raise ConfigError(f"a pruning round needs >= 1 training epoch, got {epochs!r}")
    return epochs


def check_rounds(prune: PruneConfig, settings: Any) -> None:
    """The registered ``validate`` of the iterative methods: each round trains >= 1 epoch
    (``--epochs 0`` only with ``--set round_epochs=N``)."""
    resolve_round_epochs(settings.round_epochs, prune.epochs)


# The loop ----------------------------------------------------------------------------------
def _parameters(model: nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().cpu().clone() for n, p in model.named_parameters()}


def _full_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}


class _SnapshotAfter:
    """``batches`` that call ``take()`` once ``steps`` batches have been drawn, when the
    next is asked for: the training loop draws a batch only after its previous step
    (optimizer step and mask enforcement) is done, so ``take`` sees the state after
    exactly ``steps`` optimizer steps. Counts across epochs (``drawn``: from the start of
    the first round); other attributes (length, loader state) are the wrapped loader's."""

    def __init__(self, batches: Iterable[Any], steps: int, take: Callable[[], None]) -> None:
        self.batches = batches
        self.steps = steps
        self.take = take
        self.drawn = 0

    def __iter__(self) -> Iterator[Any]:
        for batch in self.batches:
            if self.drawn == self.steps:
                self.take()
            self.drawn += 1
            yield batch

    def __len__(self) -> int:
        return len(self.batches)  # type: ignore[arg-type]

    def __getattr__(self, name: str) -> Any:
        if name == "batches":  # not set yet (e.g. while copying): no recursion
            raise AttributeError(name)
        return getattr(self.batches, name)


class Rewind:
    """Where the kept weights go back to after each pruning: the parameters and buffers
    after ``step`` optimizer steps of the first round (0: the initialization), taken by
    :meth:`take` during that round."""

    def __init__(self, model: nn.Module, step: int) -> None:
        self.model = model
        self.step = step
        self.state: dict[str, torch.Tensor] | None = _full_state(model) if step == 0 else None

    def take(self) -> None:
        if self.state is None:  # a resumed run may hold it already
            self.state = _full_state(self.model)


class PruningRound(MaskedTraining):
    """One round of iterative pruning in the shared training loop: training with ``mask``
    fixed (:class:`MaskedTraining`), epochs numbered across rounds, the round in every
    record, and in the checkpoint what continues the rounds (the round, its mask and a
    warm rewind point)."""

    def __init__(
        self,
        ctx: PruneContext,
        model: nn.Module,
        mask: Mask,
        round_: int,
        round_epochs: int,
        rewind: Rewind | None,
    ) -> None:
        super().__init__(
            model,
            mask,
            ctx.device,
            round_epochs,
            eval_batches=ctx.eval_batches,
            eval_every=ctx.eval_every,
            runtime=ctx.runtime,
        )
        self.round = round_
        self.offset = (round_ - 1) * round_epochs  # epochs of the earlier rounds
        self.rewind = rewind
        self.stage = f"prune round {round_}"
        self.where = f"pruning round {round_}"

    phase = "prune"

    def after_epoch(self, epoch: int, stats: EpochStats, lr: float) -> dict:
        record = super().after_epoch(epoch, stats, lr)
        record.update(round=self.round, round_epoch=epoch - self.offset)
        return record

    def state(self) -> dict[str, Any]:
        state: dict[str, Any] = {"round": self.round, "mask": dict(self.mask)}
        if self.rewind is not None and self.rewind.step > 0 and self.rewind.state is not None:
            state["rewind"] = self.rewind.state
        return state


def _train_round(
    ctx: PruneContext,
    hooks: PruningRound,
    batches: Batches,
    rounds: int,
    resume: Mapping[str, Any] | bool,
    history: list[dict],
) -> list[dict]:
    """Train one round with a fresh optimizer and schedule; returns the records so far."""
    epochs = hooks.epochs
    trainer = Trainer.scheduled(
        hooks.model,
        build_optimizer(hooks.model.parameters(), ctx.optim),
        ctx.optim,
        batches,
        ctx.device,
        epochs,
        hooks,
        checkpoint=ctx.checkpoint,
        on_epoch=ctx.on_epoch,
        progress=ctx.progress,
        runtime=ctx.runtime,
        offset=hooks.offset,
        total=rounds * epochs,
    )
    return trainer.fit(resume, history)


def _prune(model: nn.Module, mask: Mask, density: float) -> tuple[Mask, dict[str, torch.Tensor]]:
    """The mask at ``density`` by global magnitude among the weights ``mask`` keeps, and
    the magnitudes |w| (pruned weights are exactly zero after training)."""
    magnitudes = {n: w.detach().abs().cpu() for n, w in prunable_weights(model).items()}
    # -inf keeps pruned weights from coming back
    candidates = {n: m.masked_fill(~mask[n], -math.inf) for n, m in magnitudes.items()}
    return global_mask(candidates, density), magnitudes


def _ticket_weights(model: nn.Module, mask: Mask, rewind: Rewind | None) -> dict:
    """The weights to finetune: the rewind point's parameters, or (no rewinding) the
    trained ones with the pruned weights zeroed."""
    if rewind is None:
        weights = _parameters(model)
        for name, keep in mask.items():
            weights[name].mul_(keep.to(weights[name].dtype))
        return weights
    assert rewind.state is not None  # set at init or during round 1
    params = {n for n, _ in model.named_parameters()}
    return {k: v for k, v in rewind.state.items() if k in params}


def prune_iteratively(
    ctx: PruneContext,
    densities: tuple[float, ...],
    round_epochs: int,
    *,
    rewind_step: int | None = 0,
    on_round: RoundCallback | None = None,
) -> PruneResult:
    """Train, prune by global magnitude, rewind; once per entry of ``densities``.

    ``rewind_step``: 0 rewinds parameters and buffers to their initial values after each
    pruning, k > 0 to their values after k optimizer steps of the first round (an epoch
    is ``ctx.batches_per_epoch`` steps), ``None`` keeps the trained weights
    (learning-rate rewinding: each round restarts the schedule).
    Every round trains ``round_epochs`` epochs with a fresh optimizer and schedule from
    ``ctx.optim``. ``on_round(r, mask)`` sees the mask after each round's pruning.
    ``ctx.checkpoint`` (optional) keeps the state after every epoch and on a stop signal,
    and a later call continues from it (in the round it was in).
    Returns the final mask; the weights to finetune (the rewind point, or the trained
    weights with the pruned ones zeroed); scores |w| of the last round's trained weights
    (pruned ones 0).
    """
    per_epoch = ctx.batches_per_epoch
    round_steps = round_epochs * per_epoch
    if rewind_step is not None and not 0 <= rewind_step < round_steps:
        raise ConfigError(
            f"the rewind step {rewind_step} must lie in [0, {round_steps}), within the first "
            f"round's {round_steps} optimizer steps ({round_epochs} epochs of {per_epoch})"
        )
    model = copy.deepcopy(ctx.model)
    rewind = None if rewind_step is None else Rewind(model, rewind_step)
    model.to(ctx.device)
    for p in model.parameters():
        p.requires_grad_(True)
    first_round_batches = ctx.train_batches
    if rewind is not None and rewind.step:
        first_round_batches = _SnapshotAfter(ctx.train_batches, rewind.step, rewind.take)
    first, mask = 1, Mask.ones_like(model)
    saved = ctx.checkpoint.load() if ctx.checkpoint is not None else None
    if saved is not None:  # continue in the round the checkpoint was written in
        first, mask = saved["extra"]["round"], Mask(saved["extra"]["mask"])
        if rewind is not None and "rewind" in saved["extra"]:
            rewind.state = dict(saved["extra"]["rewind"])
        if isinstance(first_round_batches, _SnapshotAfter):
            first_round_batches.drawn = saved["epoch"] * per_epoch  # the epochs done
    history: list[dict] = []
    magnitudes: dict[str, torch.Tensor] = {}

    for r in range(first, len(densities) + 1):
        history = _train_round(
            ctx,
            PruningRound(ctx, model, mask, r, round_epochs, rewind),
            first_round_batches if r == 1 else ctx.train_batches,
            len(densities),
            saved if r == first and saved is not None else False,
            history,
        )
        mask, magnitudes = _prune(model, mask, densities[r - 1])
        if on_round is not None:
            on_round(r, mask)
        if rewind is not None and rewind.state is None:
            raise GemMinerError(
                f"the first round ended after {getattr(first_round_batches, 'drawn', 0)} "
                f"batches, before the rewind step {rewind_step}: the training data yielded "
                f"fewer batches than its length ({per_epoch} an epoch)"
            )
        if rewind is not None and rewind.state is not None and r < len(densities):
            model.load_state_dict(rewind.state)

    return PruneResult(
        mask=mask,
        epochs_to_mask=float(len(densities) * round_epochs),
        iterations_to_mask=len(densities) * round_steps,
        weights=_ticket_weights(model, mask, rewind),
        scores=magnitudes,
        history=history,
    )


@register_method(
    "imp",
    settings=ImpSettings,
    default_init="kaiming_normal",
    description="iterative magnitude pruning with weight rewinding (Frankle et al. 2019, 2020)",
    weight_decay=1e-4,
    validate=check_rounds,
)
def run_imp(ctx: PruneContext, settings: ImpSettings) -> PruneResult:
    """IMP: train, prune ``prune_fraction`` of the remaining weights globally by |w|, rewind."""
    epochs = resolve_round_epochs(settings.round_epochs, ctx.epochs)
    densities = round_densities(ctx.density, settings.prune_fraction, settings.rounds)
    step = resolve_rewind_step(settings, epochs, ctx.batches_per_epoch)
    return prune_iteratively(ctx, densities, epochs, rewind_step=step)
