"""BatchNorm folded into the layer before it: the same network in fewer operations.

In eval mode a BatchNorm that reads a convolution's (or a Linear's) output alone is an
affine map per channel, ``y = (x − mean) · γ / √(var + ε) + β``, so the layer before it
can compute it: its weights scaled per output channel by ``γ / √(var + ε)`` and a bias
``(b − mean) · γ / √(var + ε) + β`` (γ = 1 and β = 0 for the paper's non-affine
BatchNorm). :func:`fold_batchnorm` does that for every such pair of a model and puts an
``nn.Identity`` where each folded BatchNorm was. The model keeps its own class and its
``forward`` runs as is, one operation fewer per pair: at batch 1 on a CPU, where a small
network's time goes to calling operations rather than to arithmetic, that is measured in
``benchmarks/results/structured_inference.md``.

Pairs are found by tracing the model with ``torch.fx`` (the tracer of the channel sets,
:mod:`gemminer.masking.channel_graph`), so only a BatchNorm whose input is the output of a
``Conv2d`` / ``Linear`` called once, read by nothing else, is folded; any other is left in
place. The result is for inference only: it has no BatchNorm statistics left to train, and
it is in eval mode. Outputs equal the model's in eval mode up to float rounding.
"""

from __future__ import annotations

import copy
from collections import Counter

from torch import fx, nn
from torch.nn.utils.fusion import fuse_conv_bn_eval, fuse_linear_bn_eval
from torch.nn.utils.parametrize import is_parametrized

from ..errors import MaskError, ModelError
from ..masking.channel_graph import trace_graph

_PAIRS = ((nn.Conv2d, nn.BatchNorm2d), (nn.Linear, nn.BatchNorm1d))


def _has_hooks(module: nn.Module) -> bool:
    return bool(module._forward_hooks or module._forward_pre_hooks) or is_parametrized(module)


def foldable_pairs(model: nn.Module) -> list[tuple[str, str]]:
    """The (layer, BatchNorm) module names of ``model`` whose BatchNorm can be folded into
    the layer before it, in the order the model calls them (see the module docstring)."""
    try:
        graph = trace_graph(model, "find its BatchNorm layers", "folding BatchNorm")
    except MaskError as exc:
        raise ModelError(str(exc)) from None
    modules = dict(model.named_modules())
    nodes = list(graph.graph.nodes)
    calls = Counter(n.target for n in nodes if n.op == "call_module")
    pairs = []
    for node in nodes:
        if node.op != "call_module" or len(node.args) != 1 or node.kwargs:
            continue
        source = node.args[0]
        if not isinstance(source, fx.Node) or source.op != "call_module":
            continue
        layer, norm = modules[source.target], modules[node.target]
        ok = any(isinstance(layer, a) and type(norm) is b for a, b in _PAIRS)
        if (
            ok
            and norm.track_running_stats
            and norm.running_mean is not None
            and len(source.users) == 1
            and calls[source.target] == 1
            and calls[node.target] == 1
            and not _has_hooks(layer)
            and not _has_hooks(norm)
        ):
            pairs.append((source.target, node.target))
    return pairs


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """A copy of ``model``, in eval mode, with every BatchNorm that reads a ``Conv2d`` or
    ``Linear`` alone folded into it and replaced by ``nn.Identity`` (see the module
    docstring); ``model`` itself is left as it is. A :class:`~gemminer.errors.ModelError`
    when ``torch.fx`` cannot trace the model."""
    folded = copy.deepcopy(model).eval()
    for layer_name, norm_name in foldable_pairs(folded):
        layer, norm = folded.get_submodule(layer_name), folded.get_submodule(norm_name)
        fuse = fuse_conv_bn_eval if isinstance(layer, nn.Conv2d) else fuse_linear_bn_eval
        fused = fuse(layer, norm)
        fused.weight.requires_grad_(layer.weight.requires_grad)
        fused.bias.requires_grad_(layer.weight.requires_grad)
        folded.set_submodule(layer_name, fused)
        folded.set_submodule(norm_name, nn.Identity())
    return folded
