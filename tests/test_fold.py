"""BatchNorm folded into the layer before it (issue 29, batch-1 inference): the same outputs
on every registered model, only the BatchNorms that read a layer alone folded, the model
given left as it is, and a clear error for a model that cannot be traced."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import gemminer
from gemminer.errors import ModelError
from gemminer.models import create_model, list_models
from gemminer.rundir.fold import fold_batchnorm, foldable_pairs

from .test_compact import BiasNet, assert_same_outputs, input_shape, outputs, randomize_batchnorm


def batchnorms(model: nn.Module) -> list[str]:
    return [n for n, m in model.named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


#: The BatchNorms a model keeps folded: WRN-28-2's blocks are pre-activation (BatchNorm,
#: ReLU, convolution), so its BatchNorms that read a sum (12 of 25) have no layer before
#: them to go into; every other registered model's BatchNorm follows a convolution.
LEFT = {"wrn28-2": 12}


@pytest.mark.parametrize("name", list_models())
def test_folded_network_computes_the_same_outputs_on_every_model(name):
    torch.manual_seed(0)
    model = create_model(name, num_classes=10)
    randomize_batchnorm(model)
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    folded = fold_batchnorm(model)
    assert model.training and not folded.training  # the model given keeps its mode
    assert type(folded) is type(model)
    x = torch.randn(2, *input_shape(name))
    assert_same_outputs(outputs(model, x), outputs(folded, x))
    pairs = foldable_pairs(model)
    assert len(batchnorms(folded)) == LEFT.get(name, 0)
    assert len(pairs) == len(batchnorms(model)) - LEFT.get(name, 0)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    for layer, norm in pairs:
        assert isinstance(folded.get_submodule(norm), nn.Identity)
        assert folded.get_submodule(layer).bias is not None


def test_biases_affine_batchnorm_and_a_linear_before_batchnorm1d():
    torch.manual_seed(0)
    model = BiasNet()
    randomize_batchnorm(model)
    assert foldable_pairs(model) == [("conv", "bn"), ("fc1", "bn1")]
    folded = fold_batchnorm(model)
    x = torch.randn(5, 3, 8, 8)
    assert_same_outputs(outputs(model, x), outputs(folded, x))
    # the folded bias by hand: (b − mean) · γ / √(var + ε) + β
    bn = model.bn
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    expected = (model.conv.bias - bn.running_mean) * scale + bn.bias
    assert torch.allclose(folded.conv.bias, expected, atol=1e-6)
    assert torch.allclose(folded.conv.weight, model.conv.weight * scale[:, None, None, None])
    assert folded.conv.weight.requires_grad and folded.conv.bias.requires_grad


class Tangled(nn.Module):
    """BatchNorms that must stay: one reads a convolution whose output is also read
    elsewhere, one keeps no running statistics, one reads a convolution called twice, and
    one reads a ReLU."""

    def __init__(self) -> None:
        super().__init__()
        self.shared_out = nn.Conv2d(3, 4, 3, padding=1)
        self.bn_shared = nn.BatchNorm2d(4)
        self.conv_batch = nn.Conv2d(4, 4, 1)
        self.bn_batch = nn.BatchNorm2d(4, track_running_stats=False)
        self.twice = nn.Conv2d(4, 4, 1)
        self.bn_twice = nn.BatchNorm2d(4)
        self.bn_relu = nn.BatchNorm2d(4)
        self.conv = nn.Conv2d(4, 4, 1)
        self.bn = nn.BatchNorm2d(4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.shared_out(x)
        x = self.bn_shared(y) + y
        x = self.bn_batch(self.conv_batch(x))
        x = self.bn_twice(self.twice(self.twice(x)))
        x = self.bn_relu(torch.relu(x))
        return self.bn(self.conv(x))


def test_only_a_batchnorm_reading_a_layer_alone_is_folded():
    torch.manual_seed(0)
    model = Tangled()
    model.bn_batch, kept = nn.BatchNorm2d(4), model.bn_batch
    randomize_batchnorm(model)
    model.bn_batch = kept  # no running statistics: it normalizes by each batch's own
    assert foldable_pairs(model) == [("conv", "bn")]
    folded = fold_batchnorm(model)
    assert batchnorms(folded) == ["bn_shared", "bn_batch", "bn_twice", "bn_relu"]
    x = torch.randn(3, 3, 6, 6)
    assert_same_outputs(outputs(model, x), outputs(folded, x))


def test_a_model_with_hooks_keeps_its_batchnorm_and_the_public_name_works():
    torch.manual_seed(0)
    model = create_model("resnet20", num_classes=10)
    model.conv1.register_forward_hook(lambda module, args, out: out)
    pairs = foldable_pairs(model)
    assert ("conv1", "bn1") not in pairs and len(pairs) == len(batchnorms(model)) - 1
    assert gemminer.fold_batchnorm is fold_batchnorm


class Branchy(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.bn = nn.BatchNorm2d(4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.sum() > 0:  # control flow on a tensor's value: torch.fx cannot trace it
            x = -x
        return self.bn(self.conv(x))


def test_a_model_that_cannot_be_traced_is_refused_clearly():
    with pytest.raises(ModelError, match="cannot trace Branchy to find its BatchNorm layers"):
        fold_batchnorm(Branchy())
