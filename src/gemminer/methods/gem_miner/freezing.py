"""Gem-Miner's freezing: the schedule of the density bound (:class:`FreezeSchedule`, the
authors' and Algorithm 1's), freezing the globally lowest active scores, the collapse guard
that keeps every layer connected, and ``auto_lambda``'s adaptation of λ to the bound.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import nn

from ...masking import score_layers, weight_name
from ...masking.scores import THRESHOLD
from ...settings.config import FREEZE_SCHEDULES, check_choice, require


@dataclass(frozen=True)
class FreezeSchedule:
    """When to freeze and how many flags to keep (see :mod:`gemminer.methods.gem_miner`).

    ``kind="algorithm1"``: the bound s̄(j) = e^(−c·j), c = ln(1/s)/E, sampled every
    ``period`` epochs and after the last. ``kind="authors"``: N = ⌊(E−1)/T⌋ freezes after
    epochs T+1, 2T+1, …, NT+1 (1-based), each keeping a fraction r = s^(1/N) of the
    active flags (rounded down: the authors freeze a ceiling count, ties together).

    ``start``: the density the flags start from (1: every weight; less when mining within
    a ticket, e.g. inside the channels a channel ticket kept): the bound falls from it,
    s̄(j) = start · e^(−c·j) with c = ln(start/s)/E, and r = (s/start)^(1/N).
    """

    target_density: float
    epochs: int
    period: int
    kind: str = "authors"
    start: float = 1.0

    def __post_init__(self) -> None:
        check_choice(self.kind, FREEZE_SCHEDULES, "freeze_schedule")
        require(
            0 < self.start <= 1 and (self.target_density < self.start or self.start == 1),
            f"the target density {self.target_density:.6g} must lie below the density "
            f"{self.start:.6g} the flags start from",
        )

    @property
    def rate(self) -> float:
        return math.log(self.start / self.target_density) / self.epochs

    @property
    def freezes(self) -> int:
        """N, the authors' number of freezes (0: a single freeze after the last epoch)."""
        return (self.epochs - 1) // self.period

    @property
    def keep_rate(self) -> float:
        """r = (s/start)^(1/N): the fraction of active flags each of the authors' freezes
        keeps."""
        return math.exp(math.log(self.target_density / self.start) / max(1, self.freezes))

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
            return self.start * self.keep_rate ** self.freezes_done(epoch)
        if epoch >= self.epochs:
            return self.target_density
        return self.start * math.exp(-self.rate * epoch)

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
