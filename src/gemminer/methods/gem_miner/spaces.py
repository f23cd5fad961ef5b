"""What Gem-Miner scores: every weight (the paper's) or every channel (``granularity``).

Mining is the same for both — SGD on the task loss plus λ‖p‖², projection into [0, 1],
rounding at 0.5, freezing the lowest scores along the bound — and :class:`MiningHooks`
runs it through one of these two *score spaces*, which say what a score is, how much of
the network the flags keep and how freezing reaches the bound:

* :class:`WeightSpace`: a score per weight; the bound is on the fraction of weights kept
  (the density), each freeze a count of scores (the authors' ``ceil((1 − r)·active)``, or
  Algorithm 1's bound).
* :class:`ChannelSpace`: a score per channel of every channel set
  (:mod:`gemminer.masking.channels`); the bound is on the fraction of forward
  multiply-adds kept, and each freeze drops the lowest-scored channels, globally, until
  the flags' multiply-adds are at most the bound.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ...masking import Mask, flag_counts, flag_mask, rounded_mask, score_layers, weight_name
from ...masking.channel_scores import channel_gates, gated_mask
from ...masking.channels import ChannelCost, keep_lowest_removed
from ...masking.scores import THRESHOLD
from ..channel_scoring import weight_scores
from .freezing import FreezeSchedule, freeze_scores, guard_collapse, layer_floor


class WeightSpace:
    """A score per weight (:func:`gemminer.masking.to_score_model`)."""

    unit = "weights"

    def __init__(self, model: nn.Module, collapse_guard: bool, min_layer_density: float) -> None:
        self.model = model
        self.layers = score_layers(model)
        _, self.total = flag_counts(model)
        self.floors = (
            {name: layer_floor(m, min_layer_density) for name, m in self.layers.items()}
            if collapse_guard
            else {}
        )

    @property
    def scores(self) -> list[torch.Tensor]:
        return [m.scores for m in self.layers.values()]

    @property
    def flags(self) -> list[torch.Tensor]:
        return [m.flags for m in self.layers.values()]

    def rounded_mask(self) -> Mask:
        return rounded_mask(self.model)

    def flag_mask(self) -> Mask:
        return flag_mask(self.model)

    def rounded_fraction(self) -> float:
        """The fraction the bound is on, of the rounded mask: its density."""
        return self.rounded_mask().density

    def flag_fraction(self) -> float:
        return flag_counts(self.model)[0] / self.total

    def freeze(self, schedule: FreezeSchedule, epoch: int, highest: bool) -> int:
        return freeze_scores(
            self.model,
            schedule.freeze_count(epoch, flag_counts(self.model)[0], self.total),
            self.floors,
            highest=highest,
            ties_together=schedule.kind == "authors",
        )

    def guard(self) -> dict[str, int]:
        return guard_collapse(self.model, self.floors)

    def record(self, rounded: Mask) -> dict[str, float]:
        return {"density": rounded.density, "flag_density": self.flag_fraction()}

    def score_tensors(self) -> dict[str, torch.Tensor]:
        """The scores by weight name (``scores.pt``)."""
        return {
            weight_name(name): layer.scores.detach().cpu().clone()
            for name, layer in self.layers.items()
        }


class ChannelSpace:
    """A score per channel (:func:`gemminer.masking.channel_scores.to_channel_model`);
    fractions are of the forward multiply-adds, counted by ``cost``.

    Each freeze drops the fewest lowest-scored channels (``rank="score_per_flop"``: lowest
    per multiply-add) that bring the flags' multiply-adds to the bound, tied scores spread
    evenly over the sets (:func:`~gemminer.masking.channels.keep_lowest_removed`),
    whatever the schedule: the authors' freezing of every score tied at the threshold
    (their code, per weight) would, with the many channel scores the projection holds at
    exactly 0, drop far below the bound in one freeze.
    """

    unit = "channels"

    def __init__(
        self,
        model: nn.Module,
        cost: ChannelCost,
        collapse_guard: bool,
        min_layer_density: float,
        rank: str = "score",
    ) -> None:
        self.model = model
        self.gates = channel_gates(model)
        self.cost = cost
        self.per_flop = rank == "score_per_flop"
        self.names = [s.name for s in self.gates.sets]
        self.floors = (
            {s.name: max(1, math.ceil(min_layer_density * s.size)) for s in self.gates.sets}
            if collapse_guard
            else {}
        )

    @property
    def scores(self) -> list[torch.Tensor]:
        return list(self.gates.scores)

    @property
    def flags(self) -> list[torch.Tensor]:
        return self.gates.flags

    def rounded_mask(self) -> Mask:
        return gated_mask(self.model, rounded=True)

    def flag_mask(self) -> Mask:
        return gated_mask(self.model, rounded=False)

    def rounded_fraction(self) -> float:
        """The fraction the bound is on, of the rounded channels: their multiply-adds."""
        return self.cost.fraction(self.gates.keep(rounded=True))

    def flag_fraction(self) -> float:
        return self.cost.fraction(self.gates.keep(rounded=False))

    @torch.no_grad()
    def freeze(self, schedule: FreezeSchedule, epoch: int, highest: bool) -> int:
        scores = {n: (-p if highest else p).detach() for n, p in zip(self.names, self.scores)}
        active = self.gates.keep(rounded=False)
        stay = keep_lowest_removed(
            self.cost,
            scores,
            active,
            schedule.bound(epoch),
            self.floors,  # exact counts: ties by position (see the class docstring)
            self.per_flop,
        )
        frozen = 0
        for name, p, q in zip(self.names, self.scores, self.flags):
            drop = (active[name] & ~stay[name]).to(q.device)
            q.masked_fill_(drop, 0.0)
            p.masked_fill_(drop, 0.0)
            frozen += int(drop.sum())
        return frozen

    @torch.no_grad()
    def guard(self) -> dict[str, int]:
        """Where fewer than a set's floor of channels round to 1, raise its highest-scored
        active channels to 0.5; returns {set name: channels raised}."""
        fixed = {}
        for name, p, q in zip(self.names, self.scores, self.flags):
            floor = self.floors.get(name, 0)
            rounded = (p >= THRESHOLD) & q.bool()
            if int(rounded.sum()) >= floor:
                continue
            key = torch.where(q.bool(), p, -math.inf)
            top = torch.sort(key, descending=True, stable=True).indices[:floor]
            raise_ = torch.zeros_like(rounded)
            raise_[top] = True
            raise_ &= q.bool() & ~rounded
            p[raise_] = THRESHOLD
            fixed[name] = int(raise_.sum())
        return fixed

    def record(self, rounded: Mask) -> dict[str, float]:
        return {
            "density": rounded.density,
            "flag_density": self.flag_mask().density,
            "flops": self.rounded_fraction(),
            "flag_flops": self.flag_fraction(),
        }

    def score_tensors(self) -> dict[str, torch.Tensor]:
        """Per weight name, the channel scores spread over the weights they gate
        (:func:`gemminer.methods.channel_scoring.weight_scores`), for ``scores.pt``."""
        scores = {s.name: p.detach().float().cpu() for s, p in zip(self.gates.sets, self.scores)}
        return weight_scores(self.model, self.gates.sets, scores)
