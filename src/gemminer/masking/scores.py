"""Score-learning layers: Gem-Miner's optimization variables, for any ``nn.Module``.

Each prunable layer keeps its random weight ``w`` frozen and gains

* ``scores`` p ∈ [0, 1] (a trainable parameter, initialized U[0, 1]) and
* ``flags``  q ∈ {0, 1} (a buffer; 0 once the weight is frozen out by iterative freezing).

The forward pass uses the effective weight ``w ⊙ q ⊙ 1[p ≥ 0.5]``. The rounding is
differentiated with the straight-through estimator: ∂L/∂p = ∂L/∂w_eff ⊙ w ⊙ q.
After each optimizer step :func:`project_scores` clips p back into [0, 1].
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch
from torch import nn

from ..errors import MaskError
from .mask import Mask, count_dense, prunable_modules, weight_name

THRESHOLD = 0.5


class _StraightThroughMask(torch.autograd.Function):
    """w_eff = (w ⊙ q) ⊙ 1[p ≥ 0.5]; the backward pass treats the rounding as identity,
    so ∂L/∂p = ∂L/∂w_eff ⊙ w ⊙ q."""

    @staticmethod
    def forward(ctx, masked: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(masked)
        return torch.where(scores >= THRESHOLD, masked, 0.0)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[None, torch.Tensor]:
        (masked,) = ctx.saved_tensors
        return None, grad * masked


class ScoreLayer:
    """Mixin holding a score and a flag per weight. Layers never read configuration."""

    weight: nn.Parameter
    scores: nn.Parameter
    flags: torch.Tensor

    def _add_scores(self, generator: torch.Generator | None) -> None:
        self.weight.requires_grad_(False)
        scores = torch.rand(self.weight.shape, generator=generator)
        self.scores = nn.Parameter(scores.to(self.weight))
        self.register_buffer("flags", torch.ones_like(self.weight))

    def masked_weight(self) -> torch.Tensor:
        """w ⊙ q. Both change only when weights are loaded or scores frozen, so the product
        is kept and recomputed only when either tensor changed (in-place changes bump a
        tensor's version; the kept aliases stop a new tensor from reusing the address)."""
        w, q = self.weight, self.flags
        if torch.compiler.is_compiling():
            return w * q
        key = (w._version, q._version, w.data_ptr(), q.data_ptr(), w.dtype, w.device, w.shape)
        kept = self.__dict__.get("_masked")
        if kept is None or kept[0] != key:
            kept = (key, (w * q).detach(), w.detach(), q.detach())
            self.__dict__["_masked"] = kept
        return kept[1]

    def effective_weight(self) -> torch.Tensor:
        return _StraightThroughMask.apply(self.masked_weight(), self.scores)

    def rounded_mask(self) -> torch.Tensor:
        """The layer's current mask 1[p ≥ 0.5] ⊙ q as booleans."""
        return (self.scores.detach() >= THRESHOLD) & self.flags.bool()


class ScoreConv2d(ScoreLayer, nn.Conv2d):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(x, self.effective_weight(), self.bias)


class ScoreLinear(ScoreLayer, nn.Linear):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.linear(x, self.effective_weight(), self.bias)


_SCORE_CLASS: dict[type[nn.Module], type[nn.Module]] = {
    nn.Conv2d: ScoreConv2d,
    nn.Linear: ScoreLinear,
}


def convert_layers(
    model: nn.Module,
    classes: Mapping[type[nn.Module], type[nn.Module]],
    add_scores: Callable[[nn.Module], None],
) -> nn.Module:
    """Swap the class of every plain Conv2d/Linear of ``model`` for its score-learning
    subclass in ``classes`` (in place, keeping every attribute), call ``add_scores`` on each
    newly converted layer in module order, and freeze everything but the ``scores``."""
    converted = tuple(classes.values())
    for name, module in prunable_modules(model).items():
        if isinstance(module, converted):
            continue
        cls = classes.get(type(module))
        if cls is None:
            raise MaskError(
                f"layer {name!r} is a {type(module).__name__}, a subclass of "
                f"{', '.join(t.__name__ for t in classes)} that gemminer cannot convert; "
                "use the plain torch.nn layer types"
            )
        module.__class__ = cls
        add_scores(module)
    for p in model.parameters():
        p.requires_grad_(False)
    for module in model.modules():
        if isinstance(module, converted):
            module.scores.requires_grad_(True)
    return model


def to_score_model(model: nn.Module, generator: torch.Generator | None = None) -> nn.Module:
    """Turn every Conv2d/Linear of ``model`` into a score layer, in place, and return it.

    Weights (and biases) keep their values and are frozen; every other parameter of the
    model is frozen too, so that only the scores are optimized. Scores are drawn
    U[0, 1] from ``generator`` (in module order, so a seed fixes them).
    """
    return convert_layers(model, _SCORE_CLASS, lambda m: m._add_scores(generator))


def score_layers(model: nn.Module) -> dict[str, ScoreLayer]:
    """The score layers of ``model`` by module name."""
    return {n: m for n, m in model.named_modules() if isinstance(m, ScoreLayer)}


def _require_score_layers(model: nn.Module) -> dict[str, ScoreLayer]:
    layers = score_layers(model)
    if not layers:
        raise MaskError("the model has no score layers; call gemminer.to_score_model first")
    return layers


@torch.no_grad()
def project_scores(model: nn.Module) -> None:
    """Clip every score into [0, 1]; frozen-out scores stay exactly 0."""
    layers = _require_score_layers(model).values()
    project([m.scores for m in layers], [m.flags for m in layers])


@torch.no_grad()
def project(scores: list[torch.Tensor], flags: list[torch.Tensor]) -> None:
    """:func:`project_scores` on lists of score and flag tensors, as three multi-tensor
    kernels (what the mining step calls after every optimizer step)."""
    torch._foreach_clamp_min_(scores, 0.0)
    torch._foreach_clamp_max_(scores, 1.0)
    torch._foreach_mul_(scores, flags)


def rounded_mask(model: nn.Module) -> Mask:
    """The output mask 1[p ≥ 0.5] ⊙ q of a score model, keyed by weight name."""
    layers = _require_score_layers(model)
    return Mask(
        {weight_name(n): m.rounded_mask() for n, m in layers.items()},
        dense_values=count_dense(model),
    )


def flag_mask(model: nn.Module) -> Mask:
    """The flags q of a score model (every weight not frozen out), keyed by weight name."""
    layers = _require_score_layers(model)
    return Mask(
        {weight_name(n): m.flags.detach().bool() for n, m in layers.items()},
        dense_values=count_dense(model),
    )


def flag_counts(model: nn.Module) -> tuple[int, int]:
    """(active flags, prunable weights) of a score model."""
    layers = _require_score_layers(model).values()
    return int(sum(int(m.flags.sum()) for m in layers)), sum(m.flags.numel() for m in layers)
