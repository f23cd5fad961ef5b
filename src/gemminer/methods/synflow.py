"""SynFlow: iterative synaptic flow pruning, data-free (Tanaka et al., NeurIPS 2020).

On a copy of the network with every floating-point parameter and buffer replaced by its
absolute value, the input is a single all-ones image and R = Σ outputs (the "synaptic
flow"). A weight's score is |∂R/∂w ⊙ w| with the current mask applied (pruned weights are
zero). Over ``iterations`` rounds k = 1..n the mask is re-thresholded globally to density
``density^(k/n)``, so the last round reaches the target exactly.

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
round's scores, thresholding them globally at the target density gives the mask.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..errors import ConfigError
from ..masking.threshold import global_mask
from ._saliency import check_positive_int, grads_or_zeros, peek_input_shape, scoring_copy
from .base import PruneContext, PruneResult, register_method


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
class SynflowSettings:
    """SynFlow's settings; the defaults are the published method."""

    iterations: int = 100
    """Scoring rounds, with the density schedule density^(k/iterations)."""
    input_shape: str = ""
    """Shape of one input, e.g. "3,32,32"; "" takes it from one training batch. A tuple of
    ints is accepted too and stored as such a string."""

    def __post_init__(self) -> None:
        check_positive_int("synflow", "iterations", self.iterations)
        shape = _parse_shape(self.input_shape)
        canonical = "" if shape is None else ",".join(map(str, shape))
        object.__setattr__(self, "input_shape", canonical)

    @property
    def shape(self) -> tuple[int, ...] | None:
        """``input_shape`` as a tuple, or None."""
        return _parse_shape(self.input_shape)


@register_method(
    "synflow",
    settings=SynflowSettings,
    default_init="kaiming_normal",
    description="SynFlow (Tanaka et al. 2020): data-free, iterative, keep the largest flow.",
)
def synflow(ctx: PruneContext, settings: SynflowSettings) -> PruneResult:
    """Prune to ``ctx.density`` over ``settings.iterations`` rounds of synaptic-flow scores."""
    shape = settings.shape or peek_input_shape(ctx.train_batches, "synflow")
    model, weights = scoring_copy(ctx.model, ctx.device, torch.float64)
    model.eval()
    with torch.no_grad():
        for t in model.state_dict().values():
            if t.is_floating_point():
                t.abs_()
    params = list(weights.values())
    x = torch.ones((1, *shape), dtype=torch.float64, device=ctx.device)

    alive = {name: torch.ones_like(w, dtype=torch.bool) for name, w in weights.items()}
    n = settings.iterations
    mask = scores = None
    for k in range(1, n + 1):
        with torch.no_grad():
            for name, w in weights.items():
                w.mul_(alive[name])
        flow = model(x).sum()
        grads = grads_or_zeros(torch.autograd.grad(flow, params, allow_unused=True), params)
        with torch.no_grad():
            raw = {name: (g * w).abs() for (name, w), g in zip(weights.items(), grads)}
            top = max(float(r.max()) for r in raw.values())
            scale = top if top > 0 else 1.0
            scores = {
                name: torch.where(alive[name], r / scale, -1.0).float().cpu()
                for name, r in raw.items()
            }
        mask = global_mask(scores, ctx.density ** (k / n))
        alive = {name: m.to(ctx.device) for name, m in mask.items()}
    return PruneResult(mask=mask, epochs_to_mask=0.0, iterations_to_mask=n, scores=scores)
