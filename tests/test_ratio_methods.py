"""Smart Ratio (v1/v2/v3), random (uniform and ERK) and dense, through the method registry."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import gemminer.methods.dense  # noqa: F401
import gemminer.methods.random_pruning  # noqa: F401
import gemminer.methods.smart_ratio  # noqa: F401
from gemminer.errors import ConfigError
from gemminer.masking import Mask
from gemminer.masking.threshold import layerwise_mask
from gemminer.methods import METHODS
from gemminer.methods.base import PruneContext, PruneResult

NAMES = ("smart-ratio", "smart-ratio-v3", "random", "random-erk", "dense")


class FourLayers(nn.Module):
    """conv 3→4 (108 weights), conv 4→8 (288), conv 8→8 (576), linear 8→5 (40): 1012."""

    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(3, 4, 3, padding=1, bias=False)
        self.c2 = nn.Conv2d(4, 8, 3, padding=1, bias=False)
        self.c3 = nn.Conv2d(8, 8, 3, padding=1, bias=False)
        self.fc = nn.Linear(8, 5, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.c3(torch.relu(self.c2(torch.relu(self.c1(x))))))
        return self.fc(x.mean((2, 3)))


class TinyVGG(FourLayers):
    """The same layers; the class name makes ``depth_rule="auto"`` pick the VGG rule."""


class TinyFirst(nn.Module):
    """A 1×1 conv with 2 weights first: ERK must make it dense. 2658 weights in all."""

    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(1, 2, 1, bias=False)  # 2 weights, ERK ratio 5/2
        self.c2 = nn.Conv2d(2, 16, 3, bias=False)  # 288 weights, ratio 24/288
        self.c3 = nn.Conv2d(16, 16, 3, bias=False)  # 2304 weights, ratio 38/2304
        self.fc = nn.Linear(16, 4, bias=False)  # 64 weights, ratio 20/64

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.c3(self.c2(self.c1(x))).mean((2, 3)))


SIZES = {"c1.weight": 108, "c2.weight": 288, "c3.weight": 576, "fc.weight": 40}


def run(name: str, model: nn.Module, density: float, seed: int = 0, **settings) -> PruneResult:
    ctx = PruneContext(
        model=model, density=density, train_batches=[], device=torch.device("cpu"), seed=seed
    )
    spec = METHODS.get(name)
    return spec.run(ctx, spec.build_settings(settings))


def counts(mask: Mask) -> dict[str, int]:
    return {row.name: row.kept for row in mask.layers()}


def assert_total(mask: Mask, density: float) -> None:
    assert abs(mask.num_kept - density * mask.num_total) <= 1


def net() -> FourLayers:
    torch.manual_seed(0)
    return FourLayers()


# Smart Ratio v1 ---------------------------------------------------------------------------
def test_smart_ratio_matches_closed_form():
    # L = 4: w_l = (L-l+1)^2 + (L-l+1) = 20, 12, 6 for the convs; the linear keeps 0.3.
    density = 0.1
    result = run("smart-ratio", net(), density)
    kept = counts(result.mask)
    assert kept["fc.weight"] == 12  # round(0.3 * 40)
    target = round(density * 1012)
    gamma = (target - 12) / (20 * 108 + 12 * 288 + 6 * 576)
    for name, w in zip(("c1.weight", "c2.weight", "c3.weight"), (20, 12, 6)):
        assert abs(kept[name] - gamma * w * SIZES[name]) < 1
    assert result.mask.num_kept == target
    assert_total(result.mask, density)
    dens = [row.density for row in result.mask.layers()[:3]]
    assert dens[0] > dens[1] > dens[2]
    assert result.epochs_to_mask == 0 and result.iterations_to_mask == 0


def test_smart_ratio_clips_and_redistributes_in_proportion():
    # At density 0.6, 20·γ > 1: c1 is dense and γ is solved again for c2 and c3.
    density = 0.6
    kept = counts(run("smart-ratio", net(), density).mask)
    target = round(density * 1012)
    assert kept["c1.weight"] == 108 and kept["fc.weight"] == 12
    gamma = (target - 108 - 12) / (12 * 288 + 6 * 576)
    assert 12 * gamma < 1
    for name, w in (("c2.weight", 12), ("c3.weight", 6)):
        assert abs(kept[name] - gamma * w * SIZES[name]) < 1
    assert sum(kept.values()) == target


def test_smart_ratio_vgg_rule_divides_by_l_squared():
    density = 0.1
    target = round(density * 1012)
    gamma = (target - 12) / (20 * 108 + 12 / 4 * 288 + 6 / 9 * 576)
    for model, settings in ((net(), {"depth_rule": "vgg"}), (TinyVGG(), {})):
        kept = counts(run("smart-ratio", model, density, **settings).mask)
        for name, w in (("c1.weight", 20), ("c2.weight", 12 / 4), ("c3.weight", 6 / 9)):
            assert abs(kept[name] - gamma * w * SIZES[name]) < 1
        assert sum(kept.values()) == target
    # "resnet" overrides the name-based choice.
    assert counts(run("smart-ratio", TinyVGG(), density, depth_rule="resnet").mask) == counts(
        run("smart-ratio", net(), density).mask
    )


def test_smart_ratio_last_layer_ratio_setting():
    kept = counts(run("smart-ratio", net(), 0.1, last_layer_ratio=0.5).mask)
    assert kept["fc.weight"] == 20 and sum(kept.values()) == 101


def test_smart_ratio_out_of_reach_densities():
    with pytest.raises(ConfigError, match="raise the density"):
        run("smart-ratio", net(), 0.005)  # 5 weights < the linear layer's 12
    with pytest.raises(ConfigError, match="highest reachable density"):
        run("smart-ratio", net(), 0.99)  # the linear layer keeps only 12 of 40


# Smart Ratio v2 / v3 ----------------------------------------------------------------------
def reference_mask(tmp_path, model: nn.Module) -> tuple[Mask, str]:
    g = torch.Generator().manual_seed(7)
    weights = dict(model.named_parameters())
    ref = Mask({n: torch.rand(weights[n].shape, generator=g) < 0.3 for n in SIZES})
    path = tmp_path / "mask.pt"
    ref.save(path)
    return ref, str(path)


def test_v2_takes_first_and_last_densities_not_positions(tmp_path):
    model = net()
    ref, path = reference_mask(tmp_path, model)
    density = 0.2
    result = run("smart-ratio", model, density, variant="v2", reference_mask=path)
    kept = counts(result.mask)
    for name in ("c1.weight", "fc.weight"):
        # the reference layer's density, within one weight (here: its exact count) ...
        assert abs(kept[name] - ref[name].float().mean().item() * SIZES[name]) < 1
        assert kept[name] == int(ref[name].sum())
        # ... at random positions, not the reference's
        assert not torch.equal(result.mask[name], ref[name])
    assert_total(result.mask, density)
    fixed = int(ref["c1.weight"].sum()) + int(ref["fc.weight"].sum())
    gamma = (round(density * 1012) - fixed) / (12 * 288 + 6 * 576)
    for name, w in (("c2.weight", 12), ("c3.weight", 6)):
        assert abs(kept[name] - gamma * w * SIZES[name]) < 1
    # the first and last layers are drawn like the others: from the same U[0, 1) scores
    v1 = run("smart-ratio", net(), density)
    for name in SIZES:
        assert torch.equal(result.scores[name], v1.scores[name])
        expected = layerwise_mask({name: v1.scores[name]}, {name: kept[name] / SIZES[name]})
        assert torch.equal(result.mask[name], expected[name])
    # another seed, other positions, the same counts
    other = run("smart-ratio", net(), density, seed=1, variant="v2", reference_mask=path)
    assert counts(other.mask) == kept
    assert not torch.equal(other.mask["c1.weight"], result.mask["c1.weight"])


def test_v2_without_matching_the_target_keeps_v1_middle_ratios(tmp_path):
    """The paper's Table 16 pattern: SR-v1 middle ratios, the reference's ends (drifts)."""
    model = net()
    ref, path = reference_mask(tmp_path, model)
    v1 = counts(run("smart-ratio", net(), 0.2).mask)
    drift = run("smart-ratio", model, 0.2, variant="v2", reference_mask=path, match_target=False)
    kept = counts(drift.mask)
    assert kept["c2.weight"] == v1["c2.weight"] and kept["c3.weight"] == v1["c3.weight"]
    assert kept["c1.weight"] == int(ref["c1.weight"].sum())
    assert kept["fc.weight"] == int(ref["fc.weight"].sum())


def test_v3_keeps_first_and_last_dense():
    density = 0.3
    result = run("smart-ratio-v3", net(), density)
    assert result.mask["c1.weight"].all() and result.mask["fc.weight"].all()
    assert_total(result.mask, density)
    same = run("smart-ratio", net(), density, variant="v3")
    assert torch.equal(same.mask["c3.weight"], result.mask["c3.weight"])


def test_v2_v3_raise_when_first_and_last_exceed_the_budget(tmp_path):
    with pytest.raises(ConfigError, match="raise the density"):
        run("smart-ratio-v3", net(), 0.1)  # 108 + 40 dense > 101
    model = net()
    _, path = reference_mask(tmp_path, model)
    with pytest.raises(ConfigError, match="raise the density"):
        run("smart-ratio", model, 0.02, variant="v2", reference_mask=path)


def test_v3_without_matching_the_target_keeps_v1_middle_ratios():
    density = 0.2
    v1 = counts(run("smart-ratio", net(), density).mask)
    drift = run("smart-ratio-v3", net(), density, match_target=False).mask
    kept = counts(drift)
    assert kept["c2.weight"] == v1["c2.weight"] and kept["c3.weight"] == v1["c3.weight"]
    assert kept["c1.weight"] == 108 and kept["fc.weight"] == 40
    assert drift.num_kept > round(density * 1012)


def test_v2_reference_mask_errors(tmp_path):
    with pytest.raises(ConfigError, match="unusable"):
        run("smart-ratio", net(), 0.2, variant="v2", reference_mask=str(tmp_path / "none.pt"))
    wrong = Mask({"c1.weight": torch.ones(4, 3, 3, 3)})
    wrong.save(tmp_path / "wrong.pt")
    with pytest.raises(ConfigError, match="unusable"):
        run("smart-ratio", net(), 0.2, variant="v2", reference_mask=str(tmp_path / "wrong.pt"))
    torch.save({"c1.weight": object()}, tmp_path / "unsafe.pt")
    with pytest.raises(ConfigError, match="unusable"):
        run("smart-ratio", net(), 0.2, variant="v2", reference_mask=str(tmp_path / "unsafe.pt"))


# Random -------------------------------------------------------------------------------------
@pytest.mark.parametrize("density", [0.05, 0.37])
def test_random_uniform_keeps_the_density_in_every_layer(density):
    mask = run("random", net(), density).mask
    for row in mask.layers():
        assert abs(row.kept - density * row.total) <= 1
    assert_total(mask, density)


def test_random_is_seeded():
    a, b = run("random", net(), 0.2, seed=1).mask, run("random", net(), 0.2, seed=1).mask
    c = run("random", net(), 0.2, seed=2).mask
    assert all(torch.equal(a[n], b[n]) for n in a)
    assert counts(a) == counts(c)
    assert any(not torch.equal(a[n], c[n]) for n in a)


def test_random_erk_caps_tiny_layers_and_follows_the_formula():
    torch.manual_seed(0)
    density = 0.1
    result = run("random-erk", TinyFirst(), density)
    kept = counts(result.mask)
    target = round(density * 2658)
    # The 2-weight 1×1 conv (ratio 5/2) and the linear layer (20/64) would exceed 1: dense.
    assert kept["c1.weight"] == 2 and kept["fc.weight"] == 64
    eps = (target - 2 - 64) / (24 + 38)  # ε · (sum of dims / product) · size = ε · sum of dims
    ratios = {"c2.weight": 24 / 288, "c3.weight": 38 / 2304}
    for name, r in ratios.items():
        assert eps * r < 1
        assert abs(kept[name] - eps * r * result.mask[name].numel()) < 1
    assert 5 / 2 * eps > 1 and 20 / 64 * eps > 1
    assert result.mask.num_kept == target


# Shared -------------------------------------------------------------------------------------
def test_dense_keeps_everything():
    result = run("dense", net(), 0.01)
    assert result.mask.density == 1.0 and result.epochs_to_mask == 0


@pytest.mark.parametrize("name", NAMES)
def test_model_is_unchanged_and_registry_defaults_work(name):
    model = net()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    result = run(name, model, 0.3 if name != "smart-ratio-v3" else 0.4)
    result.mask.check(model)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    if name != "dense":
        assert_total(result.mask, 0.3 if name != "smart-ratio-v3" else 0.4)
        assert result.scores is not None and set(result.scores) == set(result.mask)


@pytest.mark.parametrize("name", ["smart-ratio", "random", "random-erk"])
def test_inverted_scores_give_a_disjoint_mask_with_the_same_counts(name):
    result = run(name, net(), 0.05)  # every layer below half dense
    densities = {row.name: row.kept / row.total for row in result.mask.layers()}
    assert max(densities.values()) < 0.5
    inverted = layerwise_mask({n: -s for n, s in result.scores.items()}, densities)
    assert counts(inverted) == counts(result.mask)
    assert not any((inverted[n] & result.mask[n]).any() for n in SIZES)


@pytest.mark.parametrize(
    "settings, match",
    [
        ({"variant": "v4"}, "v4"),
        ({"last_layer_ratio": 0.0}, "last_layer_ratio"),
        ({"last_layer_ratio": 1.5}, "last_layer_ratio"),
        ({"depth_rule": "mlp"}, "mlp"),
        ({"variant": "v2"}, "reference_mask"),
        ({"reference_mask": "mask.pt"}, "only by variant 'v2'"),
        ({"match_target": "yes"}, "match_target"),
        ({"linear_keep_ratio": 0.3}, "no setting"),
    ],
)
def test_bad_settings(settings, match):
    with pytest.raises(ConfigError, match=match):
        METHODS.get("smart-ratio").build_settings(settings)


@pytest.mark.parametrize("name", ["random", "random-erk", "smart-ratio"])
@pytest.mark.parametrize("density", [0.0, 1.5, math.nan])
def test_bad_density(name, density):
    with pytest.raises(ConfigError, match="density"):
        run(name, net(), density)


def test_random_settings_are_only_where_to_keep():
    with pytest.raises(ConfigError, match="no setting seed; its settings: distribution, scope"):
        METHODS.get("random").build_settings({"seed": 1})
