"""SynFlow: iterative synaptic flow pruning, data-free (Tanaka et al., NeurIPS 2020).

On a copy of the network with every floating-point parameter and buffer replaced by its
absolute value, the input is a single all-ones image and R = Σ outputs (the "synaptic
flow"). A weight's score is |∂R/∂w ⊙ w| with the current mask applied (pruned weights are
zero). Over ``iterations`` rounds k = 1..n the mask is re-thresholded to density
``density^(k/n)`` by the shared thresholding (:mod:`gemminer.methods.scoring`: globally,
the original, or per layer with ``scope="layer"``), and the last round's scores are
thresholded at the target.

As in the reference (ganguli-lab/Synaptic-Flow), the copy is in eval mode: BatchNorm then
uses its running statistics, which at initialization (mean 0, variance 1) make it the
near-identity x·|γ|/√(1+ε) + |β|; dropout is off. The reference also takes the absolute
value of every state entry, buffers included; so does this module. Signs need no restoring
because ``ctx.model`` is never touched.

Numerics: the copy runs in float64, since R and the scores grow or shrink geometrically
with depth and leave float32's range on deep networks. Each round's scores are divided
by their maximum (in float64) before thresholding, so the float32 values the shared
threshold code compares stay in [0, 1]; scores smaller than ~1e-45 of the maximum become
0 and tie (broken by position). Weights pruned in an earlier round get score −1, so they
never come back (the density only decreases). ``PruneResult.scores`` holds the last
round's scores; thresholding them at the target density gives the mask.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..errors import ConfigError
from ._saliency import check_positive_int, grads_or_zeros, peek_input_shape, scoring_copy
from .base import PruneContext
from .scoring import Scores, Thresholding, register_scorer, threshold


def _parse_shape(value: object) -> tuple[int, ...] | None:
    """``""`` → None; ``"3,32,32"``, ``"3x32x32"`` or ``(3, 32, 32)`` → (3, 32, 32)."""
    if isinstance(value, str):
        text = value.strip()
        if not text:
            return None
        parts = text.replace("x", ",").replace("×", ",").split(",")
        dims: list[object] = []
        for part in parts:
            try:
                dims.append(int(part))
            except ValueError:
                dims.append(part)
    elif isinstance(value, (tuple, list)):
        dims = list(value)
    else:
        dims = []
    if not dims or any(isinstance(d, bool) or not isinstance(d, int) or d < 1 for d in dims):
        raise ConfigError(
            f"synflow: input_shape must be positive integers like '3,32,32' (or '' to take "
            f"the shape from the training data), got {value!r}"
        )
    return tuple(int(d) for d in dims)  # type: ignore[arg-type]


@dataclass(frozen=True)
class SynflowSettings(Thresholding):
    """SynFlow's settings; the defaults are the published method."""

    iterations: int = 100
    """Scoring rounds, with the density schedule density^(k/iterations)."""
    input_shape: str = ""
    """Shape of one input, e.g. "3,32,32"; "" takes it from one training batch. A tuple of
    ints is accepted too and stored as such a string."""

    def __post_init__(self) -> None:
        super().__post_init__()
        check_positive_int("synflow", "iterations", self.iterations)
        shape = _parse_shape(self.input_shape)
        canonical = "" if shape is None else ",".join(map(str, shape))
        object.__setattr__(self, "input_shape", canonical)

    @property
    def shape(self) -> tuple[int, ...] | None:
        """``input_shape`` as a tuple, or None."""
        return _parse_shape(self.input_shape)


@register_scorer(
    "synflow",
    settings=SynflowSettings,
    default_init="kaiming_normal",
    description="SynFlow (Tanaka et al. 2020): data-free, iterative, keep the largest flow.",
)
def synflow(ctx: PruneContext, settings: SynflowSettings) -> Scores:
    """Synaptic-flow scores after ``settings.iterations - 1`` rounds of pruning towards
    ``ctx.density`` (the last round's mask is the shared thresholding of these scores)."""
    shape = settings.shape or peek_input_shape(ctx.train_batches, "synflow")
    model, weights = scoring_copy(ctx.model, ctx.device, torch.float64)
    model.eval()
    with torch.no_grad():
        for t in model.state_dict().values():
            if t.is_floating_point():
                t.abs_()
    x = torch.ones((1, *shape), dtype=torch.float64, device=ctx.device)
    alive = {name: torch.ones_like(w, dtype=torch.bool) for name, w in weights.items()}
    n = settings.iterations
    scores = _flow_scores(model, weights, alive, x)
    for k in range(1, n):
        mask = threshold(scores, ctx.model, ctx.density ** (k / n), settings, "synflow")
        alive = {name: m.to(ctx.device) for name, m in mask.items()}
        scores = _flow_scores(model, weights, alive, x)
    return Scores(scores, 0.0, n)


def _flow_scores(
    model: torch.nn.Module,
    weights: dict[str, torch.Tensor],
    alive: dict[str, torch.Tensor],
    x: torch.Tensor,
) -> dict[str, torch.Tensor]:
    """One round's scores |∂R/∂w ⊙ w| with the pruned weights zeroed, divided by their
    maximum (float32, on the CPU); pruned weights score −1."""
    with torch.no_grad():
        for name, w in weights.items():
            w.mul_(alive[name])
    params = list(weights.values())
    flow = model(x).sum()
    grads = grads_or_zeros(torch.autograd.grad(flow, params, allow_unused=True), params)
    with torch.no_grad():
        raw = {name: (g * w).abs() for (name, w), g in zip(weights.items(), grads)}
        top = max(float(r.max()) for r in raw.values())
        scale = top if top > 0 else 1.0
        return {
            name: torch.where(alive[name], r / scale, -1.0).float().cpu() for name, r in raw.items()
        }
