"""Forward compute per image, counted from the layer shapes and a mask.

What is counted: the multiply-adds of the prunable weights (every ``Conv2d`` and
``Linear`` weight, :mod:`gemminer.masking.mask`) in one forward pass of one image — the
work a sparse kernel that skips pruned weights has to do. Biases, normalization, pooling,
activations and additions are not counted (for ResNet-20 they are under 1 % of the
total). One multiply-add is one "FLOP", as pruning papers count them (ResNet-20 on
CIFAR-10: 40.6 M dense).

Each weight value of a ``Conv2d`` is multiplied once per output position, so a layer costs
``weights × H_out × W_out`` (grouped and depthwise convolutions included: their weight
tensors are already ``C_out × C_in/groups × k × k``); a ``Linear`` weight is used once per
input vector (once per image for a classifier head). Zero padding at the borders is
counted as the dense convolution computes it. The output sizes come from one forward pass
of a zero image through the model with hooks (:func:`weight_uses`); the kept weights per
layer from the mask.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from .mask import prunable_modules, weight_name


@dataclass(frozen=True)
class LayerFlops:
    """One prunable layer: its weight name, how often each weight value is used per
    image, and its dense and kept multiply-adds per image."""

    name: str
    uses: int
    dense: int
    kept: int


@dataclass(frozen=True)
class FlopCount:
    """Multiply-adds per image of the dense network and of the ticket, per layer."""

    layers: tuple[LayerFlops, ...]

    @property
    def dense(self) -> int:
        return sum(layer.dense for layer in self.layers)

    @property
    def ticket(self) -> int:
        return sum(layer.kept for layer in self.layers)

    @property
    def fraction(self) -> float:
        """The ticket's share of the dense multiply-adds (not its density: layers that see
        more positions weigh more)."""
        return self.ticket / self.dense if self.dense else 0.0


def weight_uses(model: nn.Module, input_shape: Sequence[int]) -> dict[str, int]:
    """How many times each value of each prunable weight is multiplied in the forward pass
    of one image of ``input_shape`` (channels, height, width), by weight name.

    Runs ``model`` once, without gradients and in eval mode (restored afterwards), on a zero
    image on the device and in the dtype of its first parameter. A prunable module the
    forward pass never reaches counts 0 uses.
    """
    modules = prunable_modules(model)
    uses = {weight_name(name): 0 for name in modules}
    hooks = []

    def hook(name: str):
        def record(module: nn.Module, _inputs, output: torch.Tensor) -> None:
            if isinstance(module, nn.Conv2d):
                positions = math.prod(output.shape[2:])  # H_out × W_out
            else:  # Linear: once per input vector (leading dims besides the batch)
                positions = math.prod(output.shape[1:-1])
            uses[weight_name(name)] += positions

        return record

    for name, module in modules.items():
        hooks.append(module.register_forward_hook(hook(name)))
    try:
        probe(model, model, input_shape)
    finally:
        for h in hooks:
            h.remove()
    return uses


def probe(run: Callable[[torch.Tensor], object], model: nn.Module, input_shape: Sequence[int]):
    """``run`` (``model`` itself, or something that runs it) on one zero image of
    ``input_shape``, on the device and in the dtype of ``model``'s first parameter,
    without gradients and in eval mode (``model``'s mode restored afterwards)."""
    first = next(model.parameters(), None)
    device = first.device if first is not None else torch.device("cpu")
    dtype = first.dtype if first is not None and first.is_floating_point() else torch.float32
    training = model.training
    try:
        model.eval()
        with torch.no_grad():
            return run(torch.zeros(1, *input_shape, device=device, dtype=dtype))
    finally:
        model.train(training)


def count_flops(
    model: nn.Module,
    input_shape: Sequence[int] | None = None,
    mask: Mapping[str, torch.Tensor] | None = None,
    *,
    uses: Mapping[str, int] | None = None,
) -> FlopCount:
    """Dense and kept multiply-adds per image of ``model`` under ``mask`` (weight name →
    0/1 tensor; ``None``: every weight kept). ``uses`` (from :func:`weight_uses`) saves the
    forward pass; otherwise ``input_shape`` is needed."""
    if uses is None:
        if input_shape is None:
            raise ValueError("count_flops needs the input shape or the weight uses")
        uses = weight_uses(model, input_shape)
    layers = []
    for module_name, module in prunable_modules(model).items():
        name = weight_name(module_name)
        n = uses.get(name, 0)
        total = module.weight.numel()
        kept = total if mask is None or name not in mask else int(mask[name].count_nonzero())
        layers.append(LayerFlops(name, n, total * n, kept * n))
    return FlopCount(tuple(layers))


def format_flops(value: float | None) -> str:
    """``40.6 M``, ``583 k``, ``1.23 G``; ``—`` for None."""
    if value is None:
        return "—"
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(value) >= scale:
            return f"{value / scale:.3g} {unit}"
    return f"{value:.0f}"
