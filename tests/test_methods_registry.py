"""Every registered method, through the registry, on a tiny model and tiny data."""

import copy

import pytest
import torch
from torch import nn

from gemminer.data.loader import BatchLoader
from gemminer.errors import ConfigError
from gemminer.masking import Mask, count_prunable, prunable_weights
from gemminer.masking.flops import count_flops
from gemminer.methods import METHODS, PruneContext
from gemminer.settings.config import OptimConfig

from .conftest import separable_arrays


def small_cnn() -> nn.Module:
    """Shaped like real networks: small first and last layers, most weights in between."""
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1, bias=False),
        nn.BatchNorm2d(4, affine=False),
        nn.ReLU(),
        nn.Conv2d(4, 32, 3, padding=1, bias=False),
        nn.BatchNorm2d(32, affine=False),
        nn.ReLU(),
        nn.Conv2d(32, 32, 3, padding=1, bias=False),
        nn.BatchNorm2d(32, affine=False),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(32, 3, bias=False),
    )


DENSITY = 0.1
#: Settings a method needs to run in one epoch (Gem-Miner's period must not exceed the epochs).
ONE_EPOCH = {"gem-miner": {"period": 1}}
#: One input's shape: what a method whose target counts multiply-adds counts them for.
SHAPE = (3, 8, 8)


def context(model, density=DENSITY, epochs=1):
    data = separable_arrays(48)
    loader = BatchLoader(data, batch_size=16, mean=(0.5,) * 3, std=(0.25,) * 3, train=True, seed=0)
    return PruneContext(
        model=model,
        density=density,
        train_batches=loader,
        device=torch.device("cpu"),
        epochs=epochs,
        batch_size=16,
        optim=OptimConfig(lr=0.05),
        seed=0,
        input_shape=SHAPE,
    )


def tolerance(name: str, model) -> int:
    """Weights a method may miss the target by: one, or one per layer for layer-wise top-k."""
    return len(prunable_weights(model)) if name == "edge-popup" else 1


@pytest.mark.parametrize("name", METHODS.names())
def test_every_method_hits_its_target_density(name):
    model = small_cnn()
    before = copy.deepcopy(model.state_dict())
    spec = METHODS.get(name)
    settings = spec.build_settings(ONE_EPOCH.get(name))
    result = spec.run(context(model), settings)
    assert isinstance(result.mask, Mask)
    result.mask.check(model)
    total = count_prunable(model)
    if name == "dense":
        assert result.mask.density == 1.0
    elif spec.budget_of(settings) == "flops":  # the target counts multiply-adds, in channels
        flops = count_flops(model, SHAPE, result.mask)
        assert 0.5 * DENSITY * flops.dense <= flops.ticket <= DENSITY * flops.dense, name
    else:
        assert abs(result.mask.num_kept - DENSITY * total) <= tolerance(name, model), name
    assert result.epochs_to_mask >= 0 and result.iterations_to_mask >= 0
    # the model handed to a method is never changed in place
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before), name
    if result.scores is not None:
        assert set(result.scores) == set(result.mask)
    if result.weights is not None:
        assert set(dict(model.named_parameters())) <= set(result.weights)


@pytest.mark.parametrize("name", METHODS.names())
def test_every_method_has_a_description_and_valid_defaults(name):
    spec = METHODS.get(name)
    assert spec.description
    spec.build_settings()
    with pytest.raises(ConfigError, match="no setting"):
        spec.build_settings({"no_such_setting": 1})


def test_training_methods_count_their_epochs():
    for name, expected in (("gem-miner", 2), ("edge-popup", 2), ("snip", 1 / 3), ("synflow", 0)):
        spec = METHODS.get(name)
        settings = spec.build_settings({"period": 1} if name == "gem-miner" else {})
        result = spec.run(context(small_cnn(), density=0.3, epochs=2), settings)
        assert result.epochs_to_mask == pytest.approx(expected), name
