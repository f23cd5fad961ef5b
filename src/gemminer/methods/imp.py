"""Iterative magnitude pruning (IMP) with weight rewinding.

Frankle & Carbin (2019), "The Lottery Ticket Hypothesis", and Frankle et al. (2020),
"Linear Mode Connectivity and the Lottery Ticket Hypothesis". Each round trains the
network with the current mask fixed, prunes ``prune_fraction`` of the *remaining*
weights by global magnitude |w| (weights pruned earlier never come back), and rewinds
the kept weights to the rewind point:

* **cold** (``rewind_epoch=0``): the original initialization — a lottery ticket;
* **warm** (``rewind_epoch=k``): the weights after ``k`` epochs of the first round's
  (dense) training, snapshotted during that round.

The number of rounds is the smallest R with (1 − f)^R ≤ target density (up to a relative
slack of :data:`ROUND_SLACK`, so that 0.8^19 ≈ 0.01441 counts as 1.44 % and takes 19
rounds, as in the paper's Table 1), and the last round prunes exactly down to the target.
With ``rounds=R`` every round prunes 1 − density^(1/R) instead. ``round_epochs`` sets the
length of a round ("short" vs "long" IMP, Appendix B / Fig. 10 of the Gem-Miner paper).

The shared loop, :func:`prune_iteratively`, also serves learning-rate rewinding
(:mod:`gemminer.methods.lr_rewinding`), which keeps the trained weights instead of
rewinding them.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass
from numbers import Real

import torch
from torch import nn

from ..config import FinetuneConfig
from ..errors import ConfigError
from ..masking import Mask, prunable_weights
from ..masking.threshold import global_mask
from ..training import finetune
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


@dataclass(frozen=True)
class ImpSettings:
    """IMP (Frankle et al. 2019/2020).

    ``prune_fraction``: fraction of the remaining weights pruned per round (0.2 in the
    papers). ``rewind_epoch``: 0 rewinds to initialization ("cold"); k > 0 to the weights
    after k epochs of the first round ("warm"). ``rounds``: 0 derives the number of rounds
    from ``prune_fraction``; R > 0 uses exactly R rounds of 1 − density^(1/R) each.
    ``round_epochs``: training epochs per round; 0 = the method's epoch budget.
    """

    prune_fraction: float = 0.2
    rewind_epoch: int = 0
    rounds: int = 0
    round_epochs: int = 0

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


def resolve_round_epochs(round_epochs: int, ctx: PruneContext) -> int:
    epochs = round_epochs or ctx.epochs
    if not isinstance(epochs, int) or epochs < 1:
        raise ConfigError(f"a pruning round needs >= 1 training epoch, got {epochs!r}")
    return epochs


# The loop ----------------------------------------------------------------------------------
def _parameters(model: nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().cpu().clone() for n, p in model.named_parameters()}


def _full_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}


def prune_iteratively(
    ctx: PruneContext,
    densities: tuple[float, ...],
    round_epochs: int,
    *,
    rewind_epoch: int | None = 0,
    on_round: RoundCallback | None = None,
) -> PruneResult:
    """Train, prune by global magnitude, rewind; once per entry of ``densities``.

    ``rewind_epoch``: 0 rewinds parameters and buffers to their initial values after each
    pruning, k > 0 to their values after epoch k of the first round, ``None`` keeps the
    trained weights (learning-rate rewinding: each round restarts the schedule).
    Every round trains ``round_epochs`` epochs with a fresh optimizer and schedule from
    ``ctx.optim``. ``on_round(r, mask)`` sees the mask after each round's pruning.
    Returns the final mask; the weights to finetune (the rewind point, or the trained
    weights with the pruned ones zeroed); scores |w| of the last round's trained weights
    (pruned ones 0).
    """
    if rewind_epoch is not None and not 0 <= rewind_epoch < round_epochs:
        raise ConfigError(
            f"rewind_epoch {rewind_epoch} must lie in [0, {round_epochs}), "
            f"within the first round's {round_epochs} epochs"
        )
    model = copy.deepcopy(ctx.model)
    initial = _full_state(model)
    rewind_state = initial if rewind_epoch == 0 else None
    mask = Mask.ones_like(model)
    cfg = FinetuneConfig(epochs=round_epochs, batch_size=ctx.batch_size, optim=ctx.optim)
    history: list[dict] = []
    magnitudes: dict[str, torch.Tensor] = {}

    for r, density in enumerate(densities, 1):

        def on_epoch(record: dict, r: int = r) -> None:
            nonlocal rewind_state
            if rewind_epoch and r == 1 and record["epoch"] == rewind_epoch:
                rewind_state = _full_state(model)
            record = {
                **record,
                "phase": "prune",
                "round": r,
                "round_epoch": record["epoch"],
                "epoch": (r - 1) * round_epochs + record["epoch"],
            }
            history.append(record)
            if ctx.on_epoch is not None:
                ctx.on_epoch(record)

        finetune(
            model,
            mask,
            ctx.train_batches,
            cfg,
            ctx.device,
            eval_batches=ctx.eval_batches,
            eval_every=ctx.eval_every,
            on_epoch=on_epoch,
            progress=ctx.progress,
            runtime=ctx.runtime,
        )
        magnitudes = {n: w.detach().abs().cpu() for n, w in prunable_weights(model).items()}
        # pruned weights are exactly zero after training; -inf keeps them from coming back
        candidates = {n: m.masked_fill(~mask[n], -math.inf) for n, m in magnitudes.items()}
        mask = global_mask(candidates, density)
        if on_round is not None:
            on_round(r, mask)
        if rewind_state is not None and r < len(densities):
            model.load_state_dict(rewind_state)

    if rewind_epoch is None:
        weights = _parameters(model)
        for name, keep in mask.items():
            weights[name].mul_(keep.to(weights[name].dtype))
    else:
        assert rewind_state is not None  # set at init or during round 1
        params = {n for n, _ in model.named_parameters()}
        weights = {k: v for k, v in rewind_state.items() if k in params}
    return PruneResult(
        mask=mask,
        epochs_to_mask=float(len(densities) * round_epochs),
        iterations_to_mask=len(densities) * round_epochs * ctx.batches_per_epoch,
        weights=weights,
        scores=magnitudes,
        history=history,
    )


@register_method(
    "imp",
    settings=ImpSettings,
    default_init="kaiming_normal",
    description="iterative magnitude pruning with weight rewinding (Frankle et al. 2019, 2020)",
    weight_decay=1e-4,
)
def run_imp(ctx: PruneContext, settings: ImpSettings) -> PruneResult:
    """IMP: train, prune ``prune_fraction`` of the remaining weights globally by |w|, rewind."""
    epochs = resolve_round_epochs(settings.round_epochs, ctx)
    densities = round_densities(ctx.density, settings.prune_fraction, settings.rounds)
    return prune_iteratively(ctx, densities, epochs, rewind_epoch=settings.rewind_epoch)
