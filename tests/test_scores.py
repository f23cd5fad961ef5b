import copy

import pytest
import torch
from torch import nn

from gemminer.errors import MaskError
from gemminer.masking import (
    ScoreConv2d,
    ScoreLinear,
    init_weights,
    project_scores,
    rounded_mask,
    score_layers,
    to_score_model,
)


def test_conversion_keeps_weights_and_finds_every_layer(user_net):
    original = copy.deepcopy(user_net)
    model = to_score_model(user_net, torch.Generator().manual_seed(0))
    layers = score_layers(model)
    assert list(layers) == ["features.0", "features.2", "head"]
    assert isinstance(layers["features.0"], ScoreConv2d) and isinstance(layers["head"], ScoreLinear)
    params = dict(model.named_parameters())
    for name, q in original.named_parameters():
        assert torch.equal(params[name], q), name
    for layer in layers.values():
        assert 0 <= layer.scores.min() and layer.scores.max() <= 1  # U[0, 1]
        assert torch.equal(layer.flags, torch.ones_like(layer.flags))
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable == ["features.0.scores", "features.2.scores", "head.scores"]


def test_score_init_is_seeded(user_net):
    a = to_score_model(copy.deepcopy(user_net), torch.Generator().manual_seed(3))
    b = to_score_model(copy.deepcopy(user_net), torch.Generator().manual_seed(3))
    assert all(
        torch.equal(x.scores, y.scores)
        for x, y in zip(score_layers(a).values(), score_layers(b).values())
    )


def test_forward_uses_w_times_q_times_rounded_p():
    torch.manual_seed(0)
    lin = nn.Linear(4, 3, bias=False)
    w = lin.weight.detach().clone()
    model = to_score_model(nn.Sequential(lin))
    layer = model[0]
    with torch.no_grad():
        layer.scores.copy_(torch.tensor([[0.1, 0.5, 0.9, 0.49]] * 3))
        layer.flags[0, 2] = 0.0
    x = torch.randn(5, 4)
    expected_mask = torch.tensor([[0, 1, 1, 0]] * 3, dtype=torch.float32)
    expected_mask[0, 2] = 0
    assert torch.allclose(model(x), x @ (w * expected_mask).T)
    assert torch.equal(rounded_mask(model)["0.weight"], expected_mask.bool())


def test_straight_through_gradient_reaches_scores_not_weights():
    torch.manual_seed(0)
    lin = nn.Linear(4, 2, bias=False)
    w = lin.weight.detach().clone()
    model = to_score_model(nn.Sequential(lin))
    layer = model[0]
    with torch.no_grad():
        layer.flags[1, 3] = 0.0
    x = torch.randn(6, 4)
    model(x).sum().backward()
    # d(sum(x @ W_eff^T))/dW_eff = column sums of x; STE: dL/dp = dL/dW_eff * w * q
    grad_w_eff = x.sum(0).expand(2, 4)
    assert torch.allclose(layer.scores.grad, grad_w_eff * w * layer.flags)
    assert layer.scores.grad[1, 3] == 0
    assert layer.weight.grad is None and not layer.weight.requires_grad


def test_gradients_reach_every_score_of_resnet20():
    from gemminer import create_model

    model = to_score_model(
        init_weights(create_model("resnet20"), seed=0), torch.Generator().manual_seed(0)
    )
    model(torch.randn(4, 3, 16, 16)).logsumexp(1).sum().backward()
    for name, layer in score_layers(model).items():
        assert layer.scores.grad is not None and layer.scores.grad.abs().sum() > 0, name
    assert all(p.grad is None for n, p in model.named_parameters() if not n.endswith("scores"))


def test_projection_clips_into_unit_interval_and_keeps_frozen_at_zero(user_net):
    model = to_score_model(user_net)
    head = score_layers(model)["head"]
    with torch.no_grad():
        head.scores.mul_(4).sub_(2)  # values in [-2, 2]
        head.flags[0] = 0.0
    project_scores(model)
    assert head.scores.min() >= 0 and head.scores.max() <= 1
    assert torch.all(head.scores[0] == 0)
    assert (head.scores == 1).any() and (head.scores == 0).sum() > head.scores.shape[1]


def test_signed_constant_init_uses_kaiming_scale(user_net):
    init_weights(user_net, "signed_constant", seed=1)
    w = user_net.features[0].weight
    std = (2 / (3 * 9)) ** 0.5
    assert torch.allclose(w.abs(), torch.full_like(w, std))
    assert (w > 0).any() and (w < 0).any()
    init_weights(user_net, "kaiming_normal", seed=1)
    assert len(user_net.features[0].weight.unique()) > 2


def test_unconvertible_subclass_is_a_clear_error():
    class MyConv(nn.Conv2d):
        pass

    with pytest.raises(MaskError, match="MyConv"):
        to_score_model(nn.Sequential(MyConv(3, 3, 1)))


def test_the_kept_masked_weight_follows_freezing_loading_and_conversion():
    model = to_score_model(nn.Sequential(nn.Linear(4, 3, bias=False)), torch.Generator())
    layer = model[0]
    x = torch.randn(5, 4)
    with torch.no_grad():
        layer.scores.fill_(1.0)
    assert torch.equal(model(x), x @ layer.weight.T)
    with torch.no_grad():  # freezing clears flags in place
        layer.flags[0, 1] = 0
        layer.flags[2, 3] = 0
    assert torch.equal(model(x), x @ (layer.weight * layer.flags).T)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    state["0.weight"] = torch.randn(3, 4)
    model.load_state_dict(state)
    assert torch.equal(model(x), x @ (state["0.weight"] * layer.flags).T)
    layer.weight.data = torch.randn(3, 4)  # a new tensor behind the parameter
    assert torch.equal(model(x), x @ (layer.weight * layer.flags).T)
    model.double()
    assert model(x.double()).dtype == torch.float64
    assert torch.equal(model(x.double()), x.double() @ (layer.weight * layer.flags).T)


def test_kaiming_normal_fan_half_is_the_same_draw_root_two_wider(user_net):
    """Smart Ratio's default: the authors' ``scale_fan`` at their default prune_rate 0.5."""
    init_weights(user_net, "kaiming_normal", seed=3)
    plain = user_net.features[0].weight.clone()
    init_weights(user_net, "kaiming_normal_fan_half", seed=3)
    assert torch.allclose(user_net.features[0].weight, plain * 2**0.5)
