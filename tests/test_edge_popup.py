import math

import pytest
import torch
from torch import nn

import gemminer.methods.edge_popup  # noqa: F401  (registers the methods)
from gemminer import OptimConfig
from gemminer.data.loader import BatchLoader
from gemminer.errors import ConfigError
from gemminer.masking import init_weights, prunable_weights
from gemminer.methods import METHODS
from gemminer.methods.base import PruneContext
from gemminer.methods.edge_popup import (
    PopupConv2d,
    PopupLinear,
    popup_layers,
    scheduled_density,
    set_thresholds,
    to_popup_model,
    train_scores,
)

CPU = torch.device("cpu")


def small_net() -> nn.Module:
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1, bias=False),
        nn.BatchNorm2d(8, affine=False),
        nn.ReLU(),
        nn.Conv2d(8, 16, 3, padding=1, bias=False),
        nn.BatchNorm2d(16, affine=False),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(16, 3, bias=False),
    )
    return init_weights(net, "signed_constant", seed=0)


def make_ctx(data, density=0.1, epochs=3, records=None, **optim) -> PruneContext:
    loader = BatchLoader(data, batch_size=32, mean=(0.5,) * 3, std=(0.25,) * 3, train=True, seed=1)
    settings = {"lr": 0.1, "momentum": 0.9, "weight_decay": 5e-4, "schedule": "cosine"}
    settings.update(optim)
    return PruneContext(
        model=small_net(),
        density=density,
        train_batches=loader,
        device=CPU,
        epochs=epochs,
        batch_size=32,
        optim=OptimConfig(**settings),
        seed=0,
        on_epoch=None if records is None else records.append,
    )


def run_method(name, ctx, **settings):
    spec = METHODS.get(name)
    return spec.run(ctx, spec.build_settings(settings))


def two_layer_net() -> nn.Module:
    """A 4→3→2 linear net with hand-set weights and scores."""
    net = to_popup_model(nn.Sequential(nn.Linear(4, 3, bias=False), nn.Linear(3, 2, bias=False)))
    with torch.no_grad():
        net[0].weight.copy_(torch.arange(12.0).view(3, 4) - 5.5)
        net[1].weight.copy_(torch.tensor([[1.0, -2.0, 3.0], [-1.0, 0.5, 2.0]]))
        # |s| of layer 0: its top 6 are 1.0, 0.9, 0.8, 0.7, 0.6, 0.5
        net[0].scores.copy_(
            torch.tensor([[0.1, -0.9, 0.3, 0.8], [-0.2, 0.7, -0.5, 0.05], [0.6, -0.4, 1.0, -0.15]])
        )
        # |s| of layer 1: 2, 0.01, 1.5, 3, 0.02, 1.2 — all but two beat layer 0's scores
        net[1].scores.copy_(torch.tensor([[2.0, -0.01, 1.5], [-3.0, 0.02, 1.2]]))
    return net


def check_forward(net: nn.Module, masks: list[list]) -> None:
    m0, m1 = (torch.tensor(m, dtype=torch.bool) for m in masks)
    assert torch.equal(net[0].mask(), m0) and torch.equal(net[1].mask(), m1)
    x = torch.randn(5, 4, generator=torch.Generator().manual_seed(0))
    expected = x @ (net[0].weight * m0).T @ (net[1].weight * m1).T
    assert torch.allclose(net(x), expected)


def test_registered_names_with_their_defaults():
    expected = {
        "edge-popup": ("layer", False),
        "edge-popup-global": ("global", False),
        "edge-popup-global-gradual": ("global", True),
    }
    for name, (scope, gradual) in expected.items():
        spec = METHODS.get(name)
        assert spec.default_init == "signed_constant"
        settings = spec.build_settings()
        assert (settings.scope, settings.gradual, settings.score_l2) == (scope, gradual, 0.0)
    assert METHODS.get("edge-popup").build_settings({"score_l2": 1e-4}).score_l2 == 1e-4


def test_forward_keeps_the_per_layer_top_k():
    net = two_layer_net()
    set_thresholds(popup_layers(net), 0.5, "layer")  # 6 of 12, 3 of 6
    check_forward(net, [[[0, 1, 0, 1], [0, 1, 1, 0], [1, 0, 1, 0]], [[1, 0, 1], [1, 0, 0]]])


def test_forward_keeps_the_global_top_k():
    net = two_layer_net()
    set_thresholds(popup_layers(net), 0.5, "global")  # 9 of 18: 4 in layer 1, 5 in layer 0
    check_forward(net, [[[0, 1, 0, 1], [0, 1, 0, 0], [1, 0, 1, 0]], [[1, 0, 1], [1, 0, 1]]])


def test_converted_layers_keep_their_weights_and_only_scores_train():
    plain = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Linear(4, 2))
    weights = {n: p.detach().clone() for n, p in plain.named_parameters()}
    net = to_popup_model(plain, torch.Generator().manual_seed(0))
    assert isinstance(net[0], PopupConv2d) and isinstance(net[1], PopupLinear)
    for name, p in net.named_parameters():
        assert p.requires_grad == name.endswith("scores"), name
        if name in weights:
            assert torch.equal(p, weights[name])
    # Kaiming-uniform with a = √5: U(−1/√fan_in, 1/√fan_in)
    assert net[0].scores.abs().max() <= 1 / math.sqrt(27)
    assert net[1].scores.abs().max() <= 1 / math.sqrt(4)
    # threshold 0 until the method sets one: the dense network
    x = torch.randn(2, 4)
    assert torch.allclose(net[1](x), nn.functional.linear(x, net[1].weight, net[1].bias))


def test_straight_through_gradient_by_hand():
    layer = to_popup_model(nn.Sequential(nn.Linear(3, 1, bias=False)))[0]
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[0.5, -1.0, 2.0]]))
        layer.scores.copy_(torch.tensor([[0.3, -0.2, -0.9]]))
    set_thresholds({"weight": layer}, 1 / 3, "layer")  # keeps only |−0.9|
    x = torch.tensor([[1.0, 2.0, 3.0]])
    out = layer(x)
    assert out.item() == pytest.approx(6.0)  # 2.0 · 3
    out.sum().backward()
    # ∂L/∂s = (∂L/∂w_eff ⊙ w) ⊙ sign(s) = (x ⊙ w) ⊙ sign(s), pruned entries included
    assert torch.allclose(layer.scores.grad, torch.tensor([[0.5, 2.0, -6.0]]))
    assert layer.weight.grad is None


@pytest.mark.parametrize("name", ["edge-popup", "edge-popup-global"])
def test_mask_hits_density_and_result_is_complete(tiny_data, name):
    records: list[dict] = []
    ctx = make_ctx(tiny_data, density=0.1, epochs=3, records=records)
    result = run_method(name, ctx)
    mask = result.mask
    mask.check(ctx.model)
    if name == "edge-popup":
        for row in mask.layers():
            assert abs(row.kept - 0.1 * row.total) <= 1, row
    assert abs(mask.num_kept - 0.1 * mask.num_total) <= 1
    assert result.weights is None
    assert result.epochs_to_mask == 3
    assert result.iterations_to_mask == 3 * ctx.batches_per_epoch
    assert [r["epoch"] for r in records] == [1, 2, 3]
    assert all(r["phase"] == "prune" for r in records) and result.history == records
    # PruneResult.scores are |s|, and the mask is their top-k
    assert set(result.scores) == set(mask)
    assert all(bool((s >= 0).all()) for s in result.scores.values())
    kept = torch.cat([result.scores[n][mask[n]] for n in mask])
    dropped = torch.cat([result.scores[n][~mask[n]] for n in mask])
    if name == "edge-popup-global":
        assert kept.min() >= dropped.max()
    else:
        for n in mask:
            assert result.scores[n][mask[n]].min() >= result.scores[n][~mask[n]].max()


def test_weights_and_ctx_model_unchanged(tiny_data):
    ctx = make_ctx(tiny_data, epochs=2)
    before = {k: v.clone() for k, v in ctx.model.state_dict().items()}
    trained = train_scores(ctx, METHODS.get("edge-popup-global").build_settings())
    for name, w in prunable_weights(trained.model).items():
        assert torch.equal(w, before[name]), name
    init = to_popup_model(small_net(), torch.Generator().manual_seed(0))
    assert any(
        not torch.equal(a.scores, b.scores)
        for a, b in zip(popup_layers(trained.model).values(), popup_layers(init).values())
    )
    after = ctx.model.state_dict()
    assert set(after) == set(before)
    assert all(torch.equal(after[k], before[k]) for k in before)
    assert not any(isinstance(m, (PopupConv2d, PopupLinear)) for m in ctx.model.modules())


def test_gradual_density_follows_its_schedule(tiny_data):
    target, epochs = 0.05, 4
    records: list[dict] = []
    ctx = make_ctx(tiny_data, density=target, epochs=epochs, records=records)
    result = run_method("edge-popup-global-gradual", ctx)
    total = result.mask.num_total
    for r in records:
        expected = target ** (r["epoch"] / epochs)
        assert r["target_density"] == pytest.approx(expected)
        assert abs(r["density"] * total - expected * total) <= 1
    assert records[-1]["target_density"] == target
    assert abs(result.mask.num_kept - target * total) <= 1
    assert scheduled_density(0.01, 2, 4, gradual=True) == pytest.approx(0.1)
    assert scheduled_density(0.01, 1, 4, gradual=False) == 0.01


def test_score_l2_shrinks_scores(tiny_data):
    def total_magnitude(lam: float) -> float:
        ctx = make_ctx(tiny_data, epochs=2, weight_decay=0.0)
        result = run_method("edge-popup", ctx, score_l2=lam)
        return float(sum(s.sum() for s in result.scores.values()))

    assert total_magnitude(1.0) < 0.75 * total_magnitude(0.0)


@pytest.mark.parametrize(
    "values",
    [
        {"scope": "per-layer"},
        {"score_l2": -1e-4},
        {"score_l2": float("nan")},
        {"score_l2": "0.1"},
        {"gradual": "yes"},
        {"lam": 0.1},
    ],
)
def test_bad_settings_raise(values):
    with pytest.raises(ConfigError):
        METHODS.get("edge-popup").build_settings(values)


def test_bad_density_raises(tiny_data):
    with pytest.raises(ConfigError, match="density"):
        run_method("edge-popup", make_ctx(tiny_data, density=0.0))
