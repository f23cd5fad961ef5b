"""One-shot methods only score; the shared thresholding applies ``scope`` and ``distribution``."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from gemminer.cli import parse_settings
from gemminer.data.loader import BatchLoader
from gemminer.errors import ConfigError, GemMinerError
from gemminer.masking.threshold import global_mask, layerwise_mask
from gemminer.methods import METHODS, PruneContext
from gemminer.methods.distributions import DISTRIBUTIONS
from gemminer.methods.scoring import layer_counts
from gemminer.methods.smart_ratio import SmartRatioSettings, smart_ratio_counts

from .conftest import separable_arrays

SCORERS = ("snip", "grasp", "synflow", "random", "random-erk", "smart-ratio", "smart-ratio-v3")


class Net(nn.Module):
    """conv 3→4 (108), conv 4→8 (288), conv 8→8 (576), linear 8→3 (24): 996 weights."""

    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(3, 4, 3, padding=1)
        self.c2 = nn.Conv2d(4, 8, 3, padding=1)
        self.c3 = nn.Conv2d(8, 8, 3, padding=1)
        self.fc = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.c3(torch.relu(self.c2(torch.relu(self.c1(x))))))
        return self.fc(x.mean((2, 3)))


def context(density: float = 0.2) -> PruneContext:
    torch.manual_seed(0)
    batches = BatchLoader(
        separable_arrays(32), batch_size=16, mean=(0.5,) * 3, std=(0.25,) * 3, train=True
    )
    return PruneContext(
        model=Net(), density=density, train_batches=batches, device=torch.device("cpu"), seed=4
    )


def run(name: str, density: float = 0.2, **settings):
    spec = METHODS.get(name)
    return spec.run(context(density), spec.build_settings(settings))


def same_mask(a, b) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def kept(mask) -> dict[str, int]:
    return {row.name: row.kept for row in mask.layers()}


def test_every_scorer_thresholds_its_own_scores():
    for name in SCORERS:
        result = run(name, 0.5 if name == "smart-ratio-v3" else 0.2)
        counts = kept(result.mask)
        densities = {n: counts[n] / s.numel() for n, s in result.scores.items()}
        if METHODS.get(name).build_settings().layer_counts(Net(), 0.2, name) is None:
            expected = global_mask(result.scores, 0.2)
        else:
            expected = layerwise_mask(result.scores, densities)
        assert same_mask(result.mask, expected), name


@pytest.mark.parametrize(
    "alias, name, settings",
    [
        ("random-erk", "random", {"distribution": "erk"}),
        ("random", "random-erk", {"distribution": "uniform"}),
        ("smart-ratio", "random", {"distribution": "smart-ratio"}),
        ("smart-ratio-v3", "smart-ratio", {"variant": "v3"}),
        ("edge-popup-global", "edge-popup", {"scope": "global"}),
    ],
)
def test_an_alias_is_its_method_with_other_settings(alias, name, settings):
    density = 0.5 if "v3" in alias else 0.2
    a, b = run(alias, density), run(name, density, **settings)
    assert same_mask(a.mask, b.mask)
    assert all(torch.equal(a.scores[k], b.scores[k]) for k in a.scores)


@pytest.mark.parametrize("name", ["snip", "grasp", "synflow", "random"])
@pytest.mark.parametrize("distribution", DISTRIBUTIONS)
def test_layer_scope_keeps_each_layers_count(name, distribution):
    settings = {"scope": "layer", "distribution": distribution}
    if name == "synflow":
        settings["iterations"] = 3
    result = run(name, **settings)
    expected = layer_counts(Net(), 0.2, distribution, name)
    assert kept(result.mask) == expected
    assert result.mask.num_kept == round(0.2 * 996)
    # within each layer the highest scores are kept
    for n, keep in result.mask.items():
        if 0 < int(keep.sum()) < keep.numel():
            assert result.scores[n][keep].min() >= result.scores[n][~keep].max()


def test_uniform_counts_are_within_one_weight_of_the_density_per_layer():
    counts = layer_counts(Net(), 0.2, "uniform", "snip")
    sizes = {"c1.weight": 108, "c2.weight": 288, "c3.weight": 576, "fc.weight": 24}
    assert all(abs(counts[n] - 0.2 * sizes[n]) < 1 for n in sizes)


def test_global_scope_random_is_one_random_top_k():
    result = run("random", scope="global")
    assert same_mask(result.mask, global_mask(result.scores, 0.2))
    assert kept(result.mask) != kept(run("random").mask)


@pytest.mark.parametrize(
    "settings, match",
    [
        ({"scope": "local"}, "unknown scope 'local'; valid scopes: global, layer"),
        ({"distribution": "erk"}, "needs scope='layer'"),
        ({"scope": "layer", "distribution": "rigl"}, "valid distributions: uniform, erk"),
    ],
)
@pytest.mark.parametrize("name", ["snip", "grasp", "synflow"])
def test_bad_thresholding_settings(name, settings, match):
    with pytest.raises(ConfigError, match=match):
        METHODS.get(name).build_settings(settings)


def test_random_erk_refuses_a_global_scope_and_smart_ratio_has_no_scope():
    with pytest.raises(ConfigError, match="needs scope='layer'"):
        METHODS.get("random-erk").build_settings({"scope": "global"})
    with pytest.raises(ConfigError, match="no setting scope"):
        METHODS.get("smart-ratio").build_settings({"scope": "global"})


def test_thresholding_settings_from_the_command_line():
    spec = METHODS.get("snip")
    values = parse_settings(spec, ["scope=layer", "distribution=erk"])
    assert spec.build_settings(values).layer_counts(Net(), 0.2, "snip") == layer_counts(
        Net(), 0.2, "erk", "snip"
    )


def test_every_distribution_is_reached_through_the_registry_and_unknown_names_are_refused():
    # importing gemminer.methods registers all of them, in the order errors list them
    assert DISTRIBUTIONS.names() == ["uniform", "erk", "smart-ratio"]
    assert len(DISTRIBUTIONS) == 3 and "erk" in DISTRIBUTIONS and "rigl" not in DISTRIBUTIONS
    smart_ratio = smart_ratio_counts(Net(), 0.2, SmartRatioSettings())
    for name in DISTRIBUTIONS:
        counts = DISTRIBUTIONS.get(name)(Net(), 0.2, "random")
        assert sum(counts.values()) == round(0.2 * 996), name
        assert counts == layer_counts(Net(), 0.2, name, "random"), name
        settings = METHODS.get("random").build_settings({"distribution": name})
        assert settings.layer_counts(Net(), 0.2, "random") == counts, name
        if name == "smart-ratio":
            assert counts == smart_ratio
    assert DISTRIBUTIONS.get("uniform")(Net(), 0.2, "random") != smart_ratio
    message = "unknown distribution 'rigl'; valid distributions: uniform, erk, smart-ratio"
    refusals = (
        lambda: DISTRIBUTIONS.get("rigl"),
        lambda: layer_counts(Net(), 0.2, "rigl", "snip"),
        lambda: METHODS.get("snip").build_settings({"scope": "layer", "distribution": "rigl"}),
    )
    for refuse in refusals:
        with pytest.raises(GemMinerError) as info:
            refuse()
        assert str(info.value) == message
