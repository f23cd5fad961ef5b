"""Tickets to and from PyTorch's own pruning form (:mod:`torch.nn.utils.prune`).

``torch.nn.utils.prune`` reparametrizes a pruned module: the dense tensor becomes the
parameter ``weight_orig``, the mask the buffer ``weight_mask``, and a forward pre-hook sets
``weight = weight_orig * weight_mask``. :func:`to_torch_prune` puts a gemminer
:class:`~gemminer.masking.Mask` into that form (so code built on PyTorch's pruning
utilities — ``prune.remove``, ``prune.global_unstructured``, sparsity reports that read
``weight_mask`` — takes a ticket as it is), and :func:`from_torch_prune` reads a
:class:`Mask` back from it. Prunable modules are found by type, as everywhere in gemminer
(:func:`~gemminer.masking.prunable_modules`).
"""

from __future__ import annotations

from torch import nn
from torch.nn.utils import prune

from ..errors import ModelError
from ..masking import Mask, prunable_modules, weight_name


def _is_pruned(module: nn.Module) -> bool:
    """Whether ``module.weight`` carries a :mod:`torch.nn.utils.prune` reparametrization."""
    return "weight_orig" in module._parameters and hasattr(module, "weight_mask")


def to_torch_prune(model: nn.Module, mask: Mask) -> nn.Module:
    """Reparametrize every prunable weight of ``model`` **in place** with
    ``torch.nn.utils.prune.custom_from_mask``: ``weight_orig`` keeps the dense weights,
    ``weight_mask`` holds ``mask`` (in the weight's dtype and device), and the forward
    equals that of ``apply_mask(model, mask)``. Returns ``model``.

    Raises :class:`~gemminer.errors.MaskError` if ``mask`` does not fit ``model`` and
    :class:`~gemminer.errors.ModelError` if a prunable weight is already pruned by
    :mod:`torch.nn.utils.prune` (PyTorch would multiply the two masks; read the existing one
    with :func:`from_torch_prune` or drop it with ``prune.remove`` first).
    """
    mask.check(model)
    modules = prunable_modules(model)
    pruned = [weight_name(name) for name, m in modules.items() if _is_pruned(m)]
    if pruned:
        raise ModelError(
            f"{', '.join(pruned)} already carry a torch.nn.utils.prune mask; read it with "
            "gemminer.from_torch_prune(model) or drop it with torch.nn.utils.prune.remove"
        )
    for name, module in modules.items():
        w = module.weight
        prune.custom_from_mask(
            module, "weight", mask[weight_name(name)].to(device=w.device, dtype=w.dtype)
        )
    return model


def from_torch_prune(model: nn.Module) -> Mask:
    """The :class:`Mask` of a model pruned with :mod:`torch.nn.utils.prune`: each prunable
    module's ``weight_mask``, keyed ``"<module>.weight"``. A prunable weight without a
    reparametrization is unpruned, so it is dense in the mask. ``model`` is left as it is
    (``prune.remove`` makes the pruning permanent).

    Raises :class:`~gemminer.errors.ModelError` if no prunable weight of ``model`` carries
    a pruning reparametrization (nothing to read), and :class:`~gemminer.errors.MaskError`
    if a ``weight_mask`` is not binary.
    """
    modules = prunable_modules(model)
    if not any(_is_pruned(m) for m in modules.values()):
        raise ModelError(
            f"{type(model).__name__} has no torch.nn.utils.prune reparametrization "
            "(weight_orig / weight_mask) on any Conv2d/Linear weight; prune it first, "
            "e.g. with gemminer.to_torch_prune(model, mask)"
        )
    tensors = {}
    weights = set()
    for name, module in modules.items():
        if _is_pruned(module):
            tensors[weight_name(name)] = module.weight_mask
            weights.add(id(module.weight_orig))
        else:
            tensors[weight_name(name)] = module.weight.new_ones(module.weight.shape)
            weights.add(id(module.weight))
    dense = sum(p.numel() for p in model.parameters() if id(p) not in weights)
    return Mask(tensors, dense_values=dense)
