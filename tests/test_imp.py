import copy
import math

import pytest
import torch

import gemminer.methods.imp  # noqa: F401  (registers "imp")
import gemminer.methods.lr_rewinding  # noqa: F401  (registers "lr-rewinding")
from gemminer import FinetuneConfig, Mask, OptimConfig, prunable_weights
from gemminer.data.loader import BatchLoader
from gemminer.errors import ConfigError
from gemminer.masking.threshold import global_mask, keep_count
from gemminer.methods import METHODS
from gemminer.methods.base import PruneContext
from gemminer.methods.imp import ROUND_SLACK, ImpSettings, prune_iteratively, round_densities
from gemminer.methods.lr_rewinding import LrRewindingSettings
from gemminer.training import finetune

CPU = torch.device("cpu")
OPTIM = OptimConfig(lr=0.05, momentum=0.9, schedule="cosine")
BATCH = 32  # 96 images → 3 steps per epoch


def loader(data, seed: int = 1) -> BatchLoader:
    return BatchLoader(
        data, batch_size=BATCH, mean=(0.5,) * 3, std=(0.25,) * 3, train=True, seed=seed
    )


def context(model, data, density: float, epochs: int = 1, **kw) -> PruneContext:
    return PruneContext(
        model=model,
        density=density,
        train_batches=loader(data),
        device=CPU,
        epochs=epochs,
        batch_size=BATCH,
        optim=OPTIM,
        **kw,
    )


def run(name: str, ctx: PruneContext, **settings):
    spec = METHODS.get(name)
    return spec.run(ctx, spec.build_settings(settings))


def params(model) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def assert_equal_params(actual: dict, expected: dict) -> None:
    assert set(actual) == set(expected)
    for name in expected:
        assert torch.equal(actual[name], expected[name]), name


def within_one_weight(mask: Mask, density: float) -> bool:
    return abs(mask.num_kept - density * mask.num_total) <= 1


def test_registered_with_settings_and_kaiming_init():
    imp, lrr = METHODS.get("imp"), METHODS.get("lr-rewinding")
    assert imp.settings is ImpSettings and lrr.settings is LrRewindingSettings
    assert imp.default_init == lrr.default_init == "kaiming_normal"
    assert imp.build_settings() == ImpSettings(0.2, 0, 0, 0)
    assert lrr.build_settings() == LrRewindingSettings(0.2, 0, 0)


@pytest.mark.parametrize(
    ("density", "rounds"), [(0.8, 1), (0.64, 2), (0.5, 4), (0.3, 6), (0.0144, 19), (1.0, 1)]
)
def test_number_of_rounds(density, rounds):
    densities = round_densities(density, 0.2)
    assert len(densities) == rounds
    assert densities[-1] == density
    # the smallest R with 0.8^R <= density (up to the documented slack): 0.8^3 = 0.512 > 0.5
    assert 0.8**rounds <= density * (1 + ROUND_SLACK)
    assert rounds == 1 or 0.8 ** (rounds - 1) > density * (1 + ROUND_SLACK)
    assert all(d == pytest.approx(0.8**r) for r, d in enumerate(densities[:-1], 1))


def test_fixed_number_of_rounds_prunes_geometrically():
    densities = round_densities(0.1, 0.2, rounds=3)
    assert densities == pytest.approx((0.1 ** (1 / 3), 0.1 ** (2 / 3), 0.1))
    assert densities[-1] == 0.1


def test_cold_imp_rewinds_to_the_exact_initialization(user_net, tiny_data):
    initial = params(user_net)
    buffers = {n: b.clone() for n, b in user_net.named_buffers()}
    records = []
    ctx = context(user_net, tiny_data, density=0.5, on_epoch=records.append)
    result = run("imp", ctx)

    assert_equal_params(result.weights, initial)
    assert_equal_params(params(ctx.model), initial)  # ctx.model untouched
    assert all(torch.equal(b, buffers[n]) for n, b in user_net.named_buffers())
    # density 0.5 with fraction 0.2: 0.8^3 = 0.512 > 0.5 >= 0.8^4 → 4 rounds of 1 epoch
    assert within_one_weight(result.mask, 0.5)
    assert result.epochs_to_mask == 4
    assert result.iterations_to_mask == 4 * 3
    assert [r["round"] for r in result.history] == [1, 2, 3, 4]
    assert [r["epoch"] for r in result.history] == [1, 2, 3, 4]
    assert {r["phase"] for r in result.history} == {"prune"}
    assert records == result.history
    # each round trains at the previous round's density
    assert result.history[0]["density"] == 1.0
    assert result.history[1]["density"] == pytest.approx(0.8, abs=1 / result.mask.num_total)
    # scores: |w| after the last round's training, which rank the mask's weights first
    assert set(result.scores) == set(result.mask)
    assert all(torch.all(s >= 0) for s in result.scores.values())
    reproduced = global_mask(result.scores, 0.5)
    assert all(torch.equal(reproduced[n], result.mask[n]) for n in result.mask)


def test_masks_are_nested_and_hit_each_rounds_density(user_net, tiny_data):
    ctx = context(user_net, tiny_data, density=0.3)
    densities = round_densities(0.3, 0.2)
    masks: list[Mask] = []
    result = prune_iteratively(ctx, densities, 1, on_round=lambda r, m: masks.append(m))

    assert len(masks) == len(densities) == 6
    previous = Mask.ones_like(user_net)
    for mask, density in zip(masks, densities):
        assert mask.num_kept == keep_count(mask.num_total, density)
        for name in mask:
            assert not torch.any(mask[name] & ~previous[name]), "a pruned weight came back"
        previous = mask
    assert within_one_weight(result.mask, 0.3)
    assert all(torch.equal(result.mask[n], masks[-1][n]) for n in result.mask)


def test_fixed_rounds_through_the_registry(user_net, tiny_data):
    result = run("imp", context(user_net, tiny_data, density=0.1, epochs=1), rounds=3)
    assert within_one_weight(result.mask, 0.1)
    assert result.epochs_to_mask == 3
    assert sorted({r["round"] for r in result.history}) == [1, 2, 3]


def test_warm_imp_rewinds_to_epoch_k_of_the_first_round(user_net, tiny_data):
    initial = params(user_net)
    # the first round's training, replayed independently: same weights, same data order
    replay = copy.deepcopy(user_net)
    snapshots: dict[int, dict[str, torch.Tensor]] = {}
    finetune(
        replay,
        Mask.ones_like(replay),
        loader(tiny_data),
        FinetuneConfig(epochs=2, batch_size=BATCH, optim=OPTIM),
        CPU,
        on_epoch=lambda rec: snapshots.__setitem__(rec["epoch"], params(replay)),
    )

    ctx = context(user_net, tiny_data, density=0.64, epochs=5)
    result = run("imp", ctx, rewind_epoch=1, round_epochs=2)

    assert_equal_params(result.weights, snapshots[1])
    # meaningful: neither the initialization nor the end of the round
    for other in (initial, snapshots[2]):
        assert any(not torch.equal(result.weights[n], other[n]) for n in other)
    assert_equal_params(params(ctx.model), initial)
    assert result.epochs_to_mask == 2 * 2  # two rounds of round_epochs=2 (not ctx.epochs)
    assert result.iterations_to_mask == 2 * 2 * 3
    assert [(r["round"], r["round_epoch"]) for r in result.history] == [
        (1, 1),
        (1, 2),
        (2, 1),
        (2, 2),
    ]
    assert within_one_weight(result.mask, 0.64)


class FirstBatches:
    """The first ``count`` batches of ``batches``, counted across epochs, then nothing."""

    def __init__(self, batches, count: int) -> None:
        self.batches, self.left = batches, count

    def __iter__(self):
        for batch in self.batches:
            if self.left == 0:
                return
            self.left -= 1
            yield batch


def replay_steps(model, data, steps: int) -> dict[str, torch.Tensor]:
    """The weights after ``steps`` optimizer steps of the first round's dense training
    (2 epochs of 3 steps), re-run independently: same weights, same data order, same
    learning rates (the cosine schedule steps per epoch, and its first epoch runs at the
    base rate whatever its length, so 1 epoch replays the first 3 steps of 2)."""
    replay = copy.deepcopy(model)
    cfg = FinetuneConfig(epochs=math.ceil(steps / 3), batch_size=BATCH, optim=OPTIM)
    finetune(replay, Mask.ones_like(replay), FirstBatches(loader(data), steps), cfg, CPU)
    return params(replay)


def test_warm_imp_rewinds_to_iteration_n_of_the_first_round(user_net, tiny_data):
    initial = params(user_net)
    ctx = context(user_net, tiny_data, density=0.64, epochs=5)
    # 3 steps an epoch: step 4 is the first step of the second epoch, mid-way
    result = run("imp", ctx, rewind="4it", round_epochs=2)

    assert_equal_params(result.weights, replay_steps(user_net, tiny_data, 4))
    for steps in (0, 3, 5, 6):  # neither the neighbouring steps nor the ends
        other = initial if steps == 0 else replay_steps(user_net, tiny_data, steps)
        assert any(not torch.equal(result.weights[n], other[n]) for n in other), steps
    assert_equal_params(params(ctx.model), initial)
    assert result.epochs_to_mask == 2 * 2  # two rounds of round_epochs=2 (not ctx.epochs)
    assert result.iterations_to_mask == 2 * 2 * 3  # every round trains its whole length
    assert [(r["round"], r["round_epoch"]) for r in result.history] == [
        (1, 1),
        (1, 2),
        (2, 1),
        (2, 2),
    ]
    assert within_one_weight(result.mask, 0.64)


def test_rewind_steps_and_epochs_agree_with_rewind_epoch(user_net, tiny_data):
    def weights(**settings):
        ctx = context(user_net, tiny_data, density=0.64, epochs=2)
        return run("imp", ctx, **settings).weights

    by_epoch = weights(rewind_epoch=1)
    assert_equal_params(weights(rewind="1ep"), by_epoch)
    assert_equal_params(weights(rewind="3it"), by_epoch)  # 1 epoch = 3 steps
    assert_equal_params(weights(rewind="1ep1it"), replay_steps(user_net, tiny_data, 4))


@pytest.mark.parametrize("rewind", ["0it", "0ep", "0ep0it", ""])
def test_rewinding_to_step_zero_is_cold(user_net, tiny_data, rewind):
    initial = params(user_net)
    ctx = context(user_net, tiny_data, density=0.64, epochs=2)
    result = run("imp", ctx, rewind=rewind)
    assert_equal_params(result.weights, initial)
    assert result.iterations_to_mask == 2 * 2 * 3


@pytest.mark.parametrize("rewind, step", [("6it", 6), ("7it", 7), ("1ep3it", 6), ("9it", 9)])
def test_rewind_beyond_the_first_round_is_refused(user_net, tiny_data, rewind, step):
    ctx = context(user_net, tiny_data, density=0.64, epochs=2)  # a round: 2 × 3 = 6 steps
    with pytest.raises(ConfigError, match=rf"rewind '{rewind}' is step {step}, beyond .* 6 "):
        run("imp", ctx, rewind=rewind)


@pytest.mark.parametrize(
    "text, point",
    [("500it", (0, 500)), ("2ep", (2, 0)), ("2ep100it", (2, 100)), (" 0it ", (0, 0))],
)
def test_rewind_step_strings(text, point):
    settings = METHODS.get("imp").build_settings({"rewind": text})
    assert (settings.rewind_point.epochs, settings.rewind_point.iterations) == point
    assert settings.rewind_point.steps(10) == point[0] * 10 + point[1]
    from gemminer.cli import parse_settings

    assert parse_settings(METHODS.get("imp"), [f"rewind={text.strip()}"]) == {
        "rewind": text.strip()
    }


@pytest.mark.parametrize(
    "bad, match",
    [
        ({"rewind": "500"}, "rewind must be a training step like '500it'"),
        ({"rewind": "it"}, "rewind must be"),
        ({"rewind": "ep"}, "rewind must be"),
        ({"rewind": "2 ep"}, "rewind must be"),
        ({"rewind": "-1it"}, "rewind must be"),
        ({"rewind": "1.5ep"}, "rewind must be"),
        ({"rewind": "100it2ep"}, "rewind must be"),
        ({"rewind": 500}, "rewind must be"),
        ({"rewind": "2ep", "round_epochs": 2}, "before the end of a round"),
        ({"rewind": "1ep", "rewind_epoch": 1}, "both set"),
        ({"rewind": "0it", "rewind_epoch": 2}, "both set"),
    ],
)
def test_bad_rewind_raises_config_error(bad, match):
    with pytest.raises(ConfigError, match=match):
        METHODS.get("imp").build_settings(bad)


def test_lr_rewinding_keeps_the_trained_weights(user_net, tiny_data):
    initial = params(user_net)
    result = run("lr-rewinding", context(user_net, tiny_data, density=0.5), rounds=2)

    # replay: train, prune to sqrt(0.5), keep the weights, retrain (fresh schedule), prune
    replay = copy.deepcopy(user_net)
    cfg = FinetuneConfig(epochs=1, batch_size=BATCH, optim=OPTIM)
    batches = loader(tiny_data)
    mask = Mask.ones_like(replay)
    for density in (math.sqrt(0.5), 0.5):
        finetune(replay, mask, batches, cfg, CPU)
        mask = global_mask({n: w.abs() for n, w in prunable_weights(replay).items()}, density)
    expected = params(replay)
    for name, keep in mask.items():
        expected[name] *= keep

    assert all(torch.equal(result.mask[n], mask[n]) for n in mask)
    assert_equal_params(result.weights, expected)
    assert any(not torch.equal(result.weights[n], initial[n]) for n in initial)
    assert_equal_params(params(user_net), initial)
    assert within_one_weight(result.mask, 0.5)
    assert result.epochs_to_mask == 2


@pytest.mark.parametrize(
    "bad",
    [
        {"prune_fraction": 0.0},
        {"prune_fraction": 1.0},
        {"prune_fraction": -0.2},
        {"prune_fraction": 1.5},
        {"prune_fraction": float("nan")},
        {"prune_fraction": True},
        {"prune_fraction": "0.2"},
        {"rounds": -1},
        {"rounds": 2.5},
        {"round_epochs": -3},
        {"no_such_setting": 1},
    ],
)
@pytest.mark.parametrize("method", ["imp", "lr-rewinding"])
def test_bad_settings_raise_config_error(method, bad):
    with pytest.raises(ConfigError, match=next(iter(bad))):
        METHODS.get(method).build_settings(bad)


@pytest.mark.parametrize(
    "bad",
    [{"rewind_epoch": -1}, {"rewind_epoch": 1.0}, {"rewind_epoch": 2, "round_epochs": 2}],
)
def test_bad_rewind_epoch_raises_config_error(bad):
    with pytest.raises(ConfigError, match="rewind_epoch"):
        METHODS.get("imp").build_settings(bad)


def test_rewind_epoch_beyond_the_epoch_budget_is_refused(user_net, tiny_data):
    with pytest.raises(ConfigError, match="rewind_epoch 3"):
        run("imp", context(user_net, tiny_data, density=0.5, epochs=3), rewind_epoch=3)


@pytest.mark.parametrize("method", ["imp", "lr-rewinding"])
def test_no_training_epochs_is_refused(user_net, tiny_data, method):
    with pytest.raises(ConfigError, match="epoch"):
        run(method, context(user_net, tiny_data, density=0.5, epochs=0))
