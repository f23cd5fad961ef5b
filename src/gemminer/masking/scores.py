"""Score-learning layers: Gem-Miner's optimization variables, for any ``nn.Module``.

Each prunable layer keeps its random weight ``w`` frozen and gains

* ``scores`` p ∈ [0, 1] (a trainable parameter, initialized U[0, 1]) and
* ``flags``  q ∈ {0, 1} (a buffer; 0 once the weight is frozen out by iterative freezing).

The forward pass uses the effective weight ``w ⊙ q ⊙ 1[p ≥ 0.5]``. The rounding is
differentiated with the straight-through estimator: ∂L/∂p = ∂L/∂w_eff ⊙ w ⊙ q.
After each optimizer step :func:`project_scores` clips p back into [0, 1].

A model made by :func:`to_score_model` computes these effective weights for all its layers
at once (:class:`FusedScores`): a forward pass of the whole model adds a fixed handful of
kernels to a dense network's, however many layers it has.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

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
            with torch.inference_mode(False):  # kept for training too, even if made in eval
                kept = (key, (w * q).detach(), w.detach(), q.detach())
            self.__dict__["_masked"] = kept
        return kept[1]

    def effective_weight(self) -> torch.Tensor:
        """This layer's w ⊙ q ⊙ 1[p ≥ 0.5], computed on its own."""
        return _StraightThroughMask.apply(self.masked_weight(), self.scores)

    def current_weight(self) -> torch.Tensor:
        """The weight this forward pass uses: the view :class:`FusedScores` handed out for
        the model's forward pass, or (a layer called on its own, or compiled)
        :meth:`effective_weight`. Both hold the same values."""
        fused = None if torch.compiler.is_compiling() else self.__dict__.get(_FUSED)
        return fused if fused is not None else self.effective_weight()

    def rounded_mask(self) -> torch.Tensor:
        """The layer's current mask 1[p ≥ 0.5] ⊙ q as booleans."""
        return (self.scores.detach() >= THRESHOLD) & self.flags.bool()


class ScoreConv2d(ScoreLayer, nn.Conv2d):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(x, self.current_weight(), self.bias)


class ScoreLinear(ScoreLayer, nn.Linear):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.linear(x, self.current_weight(), self.bias)


#: The attribute under which :class:`FusedScores` hands a layer its effective weight.
_FUSED = "_fused_weight"


def _layout(t: torch.Tensor) -> str | None:
    """How ``t`` lies in memory, if as a whole (``"rows"``: contiguous; ``"channels_last"``:
    a 4-D tensor contiguous in N, H, W, C order); None otherwise."""
    if t.is_contiguous():
        return "rows"
    if t.dim() == 4 and t.is_contiguous(memory_format=torch.channels_last):
        return "channels_last"
    return None


def _flat(t: torch.Tensor, layout: str) -> torch.Tensor:
    """``t`` as a 1-D view in its memory order (no copy)."""
    return t.view(-1) if layout == "rows" else t.permute(0, 2, 3, 1).reshape(-1)


def _shaped(flat: torch.Tensor, like: torch.Tensor, layout: str) -> torch.Tensor:
    """The inverse of :func:`_flat`: ``flat`` viewed with ``like``'s shape and strides."""
    if layout == "rows":
        return flat.view(like.shape)
    o, i, h, w = like.shape
    return flat.view(o, h, w, i).permute(0, 3, 1, 2)


@dataclass
class _Plan:
    """What :class:`FusedScores` keeps between forward passes: the state it was made for
    (``key``), each layer's layout, and w ⊙ q of every layer in one buffer (None: the
    layers' tensors cannot be laid side by side, so each layer works on its own)."""

    key: tuple
    layouts: list[str]
    sizes: list[int]
    masked: torch.Tensor | None


class FusedScores:
    """Every score layer's effective weight ``w ⊙ q ⊙ 1[p ≥ 0.5]`` in a fixed number of
    kernels, whatever the number of layers.

    Registered by :func:`to_score_model` as forward hooks of the model. Before the model's
    forward pass it concatenates the scores (one kernel; its backward only takes views),
    compares them with 0.5 and selects w ⊙ q (two kernels) for all layers at once, and hands
    each layer its weight as a view of the result; under bf16 autocast the weights are cast
    once, not layer by layer. In the backward pass the layers' weight gradients become the
    score gradients with one concatenation and one multiplication (the straight-through
    rule g ⊙ w ⊙ q), and reach the scores as views of one buffer. w ⊙ q of every layer sits
    in one buffer, refreshed in place only when a weight or flag changed (freezing, loading,
    a move to another device or dtype). After the forward pass the views are dropped.

    The values are those of each layer's own :meth:`ScoreLayer.effective_weight`, which a
    layer called on its own uses, as do compiled models (the compiler fuses these
    element-wise operations itself) and layers whose tensors differ in device, dtype or
    memory layout.
    """

    def __init__(self, model: nn.Module) -> None:
        self.layers: list[ScoreLayer] = list(score_layers(model).values())
        self._plan: _Plan | None = None

    @classmethod
    def attach(cls, model: nn.Module) -> FusedScores:
        """The instance hooked on ``model``, made and registered if it has none."""
        for hook in model._forward_pre_hooks.values():
            fused = getattr(hook, "__self__", None)
            if isinstance(fused, cls):
                fused.layers = list(score_layers(model).values())
                fused._plan = None
                return fused
        fused = cls(model)
        model.register_forward_pre_hook(fused.before_forward)
        model.register_forward_hook(fused.after_forward, always_call=True)
        return fused

    def _key(self) -> tuple:
        """What the plan depends on: where each tensor lives, and when w or q last changed."""
        return tuple(
            (m.weight._version, m.flags._version)
            + (m.weight.data_ptr(), m.flags.data_ptr(), m.scores.data_ptr())
            for m in self.layers
        )

    @torch.no_grad()
    def plan(self) -> _Plan:
        """The plan for the layers' current tensors, w ⊙ q refreshed if they changed."""
        key = self._key()
        plan = self._plan
        if plan is not None and plan.key == key:
            return plan
        first = self.layers[0].weight
        layouts = [_layout(m.weight) for m in self.layers]
        fits = all(
            layout is not None
            and _layout(m.flags) == layout
            and _layout(m.scores) == layout
            and m.weight.stride() == m.flags.stride() == m.scores.stride()
            and all(t.device == first.device for t in (m.weight, m.flags, m.scores))
            and all(t.dtype == first.dtype for t in (m.weight, m.flags, m.scores))
            for m, layout in zip(self.layers, layouts)
        )
        sizes = [m.weight.numel() for m in self.layers]
        if not fits:
            self._plan = _Plan(key, [], [], None)
            return self._plan
        masked = plan.masked if plan is not None else None
        wanted = (sum(sizes), first.dtype, first.device)
        if masked is None or (masked.numel(), masked.dtype, masked.device) != wanted:
            with torch.inference_mode(False):  # kept for training too, even if made in eval
                masked = torch.empty(wanted[0], dtype=first.dtype, device=first.device)
        # in place, so that a captured graph replaying this step reads the new values
        torch.cat([_flat(m.weight, lay) for m, lay in zip(self.layers, layouts)], out=masked)
        masked.mul_(torch.cat([_flat(m.flags, lay) for m, lay in zip(self.layers, layouts)]))
        self._plan = _Plan(key, layouts, sizes, masked)
        return self._plan

    def weights(self) -> list[torch.Tensor] | None:
        """Every layer's effective weight (views of one tensor), or None where the layers
        work on their own."""
        plan = self.plan()
        if plan.masked is None:
            return None
        scores = torch.cat([_flat(m.scores, lay) for m, lay in zip(self.layers, plan.layouts)])
        weight = _StraightThroughMask.apply(plan.masked, scores)
        kind = weight.device.type
        if torch.is_autocast_enabled(kind):
            weight = weight.to(torch.get_autocast_dtype(kind))
        return [
            _shaped(part, m.weight, lay)
            for part, m, lay in zip(weight.split(plan.sizes), self.layers, plan.layouts)
        ]

    def before_forward(self, module: nn.Module, args: tuple) -> None:
        if not self.layers or torch.compiler.is_compiling():
            return
        weights = self.weights()
        if weights is not None:
            for m, w in zip(self.layers, weights):
                m.__dict__[_FUSED] = w

    def after_forward(self, module: nn.Module, args: tuple, output: object) -> None:
        for m in self.layers:
            m.__dict__.pop(_FUSED, None)


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
    newly converted layer in module order, and freeze every parameter (the caller
    unfreezes its optimization variables)."""
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
    return model


def to_score_model(model: nn.Module, generator: torch.Generator | None = None) -> nn.Module:
    """Turn every Conv2d/Linear of ``model`` into a score layer, in place, and return it.

    Weights (and biases) keep their values and are frozen; every other parameter of the
    model is frozen too, so that only the scores are optimized. Scores are drawn
    U[0, 1] from ``generator`` (in module order, so a seed fixes them). The model computes
    its layers' effective weights together (:class:`FusedScores`, hooked on it).
    """
    convert_layers(model, _SCORE_CLASS, lambda m: m._add_scores(generator))
    for layer in score_layers(model).values():
        layer.scores.requires_grad_(True)
    FusedScores.attach(model)
    return model


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
