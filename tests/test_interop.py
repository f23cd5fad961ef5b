"""Tickets to and from torch.nn.utils.prune's weight_orig / weight_mask form."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn
from torch.nn.utils import prune

import gemminer
from gemminer.errors import MaskError, ModelError
from gemminer.masking import Mask, apply_mask, prunable_weights
from gemminer.masking.threshold import global_mask


def small_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(4 * 5 * 5, 3),
    )


def ticket(model: nn.Module, density: float = 0.3) -> Mask:
    gen = torch.Generator().manual_seed(1)
    scores = {n: torch.rand(w.shape, generator=gen) for n, w in prunable_weights(model).items()}
    return global_mask(scores, density)


def test_round_trip_and_forward_equals_the_masked_model():
    model = small_net().eval()
    mask = ticket(model)
    dense = copy.deepcopy(model.state_dict())
    masked = apply_mask(copy.deepcopy(model), mask)

    pruned = gemminer.to_torch_prune(model, mask)
    assert pruned is model
    for name in ("0", "4"):
        module = model.get_submodule(name)
        assert "weight_orig" in dict(module.named_parameters())
        torch.testing.assert_close(module.weight_orig, dense[f"{name}.weight"])
        assert torch.equal(module.weight_mask.bool(), mask[f"{name}.weight"])
        assert module.weight_mask.dtype == module.weight_orig.dtype
    x = torch.randn(2, 3, 5, 5)
    torch.testing.assert_close(model(x), masked(x))

    back = gemminer.from_torch_prune(model)
    assert isinstance(back, Mask) and list(back) == list(mask)
    assert all(torch.equal(back[n], mask[n]) for n in mask)
    assert back.dense_values == 4 + 4 + 4 + 3  # conv bias, BN weight and bias, linear bias
    # PyTorch's own utilities take it from here: gradients stop at the pruned weights,
    # prune.remove makes the ticket permanent
    model(x).sum().backward()
    grad = model[0].weight_orig.grad
    assert torch.all(grad[~mask["0.weight"]] == 0)
    prune.remove(model[0], "weight")
    prune.remove(model[4], "weight")
    assert all(torch.equal(model.state_dict()[k], v) for k, v in masked.state_dict().items())


def test_a_partly_pruned_model_reads_as_dense_where_unpruned():
    model = small_net()
    prune.l1_unstructured(model[4], "weight", amount=0.5)
    mask = gemminer.from_torch_prune(model)
    assert bool(mask["0.weight"].all())
    assert mask["4.weight"].sum() == model[4].weight.numel() // 2


def test_a_model_without_pruning_is_an_error():
    with pytest.raises(ModelError, match="no torch.nn.utils.prune"):
        gemminer.from_torch_prune(small_net())


def test_an_already_pruned_model_or_a_wrong_mask_is_refused():
    model = small_net()
    mask = ticket(model)
    gemminer.to_torch_prune(model, mask)
    with pytest.raises(ModelError, match="already carry"):
        gemminer.to_torch_prune(model, mask)
    other = nn.Sequential(nn.Linear(2, 2))
    with pytest.raises(MaskError):
        gemminer.to_torch_prune(other, mask)
