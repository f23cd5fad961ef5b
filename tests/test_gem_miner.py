import math
import re

import pytest
import torch
from torch import nn

from gemminer import FreezeSchedule, MineConfig, OptimConfig, count_prunable
from gemminer.data.loader import BatchLoader
from gemminer.masking import (
    flag_counts,
    flag_mask,
    init_weights,
    rounded_mask,
    score_layers,
    to_score_model,
)
from gemminer.methods import METHODS
from gemminer.methods.gem_miner import MiningHooks, freeze_scores, mine_scores

from .conftest import told


def small_net() -> nn.Module:
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1, bias=False),
        nn.BatchNorm2d(16, affine=False),
        nn.ReLU(),
        nn.Conv2d(16, 32, 3, padding=1, bias=False),
        nn.BatchNorm2d(32, affine=False),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(32, 3, bias=False),
    )
    return init_weights(net, "signed_constant", seed=0)


def run_mining(data, **overrides):
    settings = {"density": 0.1, "epochs": 6, "period": 2, "lam": 0.0, "batch_size": 32}
    settings.update(overrides)
    cfg = MineConfig(**settings)
    model = to_score_model(small_net(), torch.Generator().manual_seed(0))
    loader = BatchLoader(
        data, batch_size=cfg.batch_size, mean=(0.5,) * 3, std=(0.25,) * 3, train=True, seed=1
    )
    return model, mine_scores(model, loader, cfg, torch.device("cpu"))


def test_registered_as_gem_miner_with_table8_defaults():
    spec = METHODS.get("gem-miner")
    assert spec.default_init == "signed_constant"
    settings = spec.build_settings()
    assert (settings.period, settings.lam, settings.regularizer) == (5, 1e-4, "l2")


def test_registered_defaults_follow_the_authors_code():
    settings = METHODS.get("gem-miner").build_settings()
    assert settings.freeze_schedule == "authors"
    assert settings.finetune_mask == "flags"
    assert settings.freeze_order == "lowest"
    with pytest.raises(ValueError, match="freeze_schedule"):
        METHODS.get("gem-miner").build_settings({"freeze_schedule": "sometimes"})
    with pytest.raises(ValueError, match="finetune_mask"):
        MineConfig(finetune_mask="both")


def test_algorithm1_schedule_rate_and_bound():
    s = FreezeSchedule(0.0144, epochs=150, period=5, kind="algorithm1")
    assert s.rate == pytest.approx(math.log(1 / 0.0144) / 150)
    for j in (5, 30, 75, 149):
        assert s.bound(j) == pytest.approx(math.exp(-s.rate * j))
    assert s.bound(150) == 0.0144
    freezes = [j for j in range(1, 13) if FreezeSchedule(0.5, 12, 5, "algorithm1").freezes_after(j)]
    assert freezes == [5, 10, 12]


def test_authors_schedule_freezes_29_times_for_150_epochs():
    """main.py: prune after 0-based epoch e when e % T == 0 and e != 0; get_prune_rate:
    N = floor((E - 1) / T) freezes at keep rate r = exp(ln(s) / N)."""
    s = FreezeSchedule(0.0144, epochs=150, period=5)
    assert s.kind == "authors" and s.freezes == 29
    epochs = [j for j in range(1, 151) if s.freezes_after(j)]
    assert epochs == list(range(6, 147, 5)) and len(epochs) == 29 and epochs[-1] == 146
    assert s.keep_rate == pytest.approx(0.0144 ** (1 / 29))
    assert s.bound(5) == 1.0 and s.bound(6) == pytest.approx(s.keep_rate)
    assert s.bound(146) == pytest.approx(0.0144) and s.bound(150) == 0.0144
    # the freeze count is the authors' ceiling of (1 - r) * active
    assert s.freeze_count(6, 1000, 1000) == math.ceil((1 - s.keep_rate) * 1000)
    # 10 epochs at period 1: 9 freezes, after epochs 2..10
    short = FreezeSchedule(0.0144, epochs=10, period=1)
    assert [j for j in range(1, 11) if short.freezes_after(j)] == list(range(2, 11))
    # too short for one period: one freeze to the target after the last epoch
    single = FreezeSchedule(0.0144, epochs=3, period=5)
    assert single.freezes == 0 and [j for j in range(1, 4) if single.freezes_after(j)] == [3]
    assert single.freeze_count(3, 1000, 1000) == 1000 - round(0.0144 * 1000)


def test_authors_schedule_in_mining(tiny_data):
    epochs, period, target = 9, 2, 0.05
    model, result = run_mining(
        tiny_data, density=target, epochs=epochs, period=period, collapse_guard=False
    )
    total = count_prunable(model)
    r = math.exp(math.log(target) / 4)  # N = floor(8 / 2) = 4 freezes: after epochs 3, 5, 7, 9
    active = total
    for record in result.history:
        if record["epoch"] in (3, 5, 7, 9):
            expected = active - math.ceil((1 - r) * active)
            now = round(record["flag_density"] * total)
            assert now <= expected  # ties at the threshold go together
            assert now >= expected - 0.01 * total
            active = now
        else:
            assert record["frozen"] == 0
    assert flag_counts(model)[0] <= target * total
    assert flag_counts(model)[0] >= 0.95 * target * total


def test_freeze_ties_together_as_the_authors_do():
    model = to_score_model(nn.Sequential(nn.Linear(5, 1, bias=False)))
    layer = model[0]
    with torch.no_grad():
        layer.scores.copy_(torch.tensor([[0.1, 0.2, 0.2, 0.2, 0.9]]))
    assert freeze_scores(model, 2, ties_together=True) == 4
    assert layer.flags.tolist() == [[0.0, 0.0, 0.0, 0.0, 1.0]]


def test_freeze_highest_is_the_inversion_check():
    model = to_score_model(nn.Sequential(nn.Linear(5, 1, bias=False)))
    layer = model[0]
    with torch.no_grad():
        layer.scores.copy_(torch.tensor([[0.1, 0.8, 0.3, 0.7, 0.9]]))
    assert freeze_scores(model, 2, highest=True) == 2
    assert layer.flags.tolist() == [[1.0, 0.0, 1.0, 1.0, 0.0]]
    # the collapse guard protects the entries that would be frozen last: here the lowest
    assert freeze_scores(model, 5, {"0": 2}, highest=True) == 1
    assert layer.flags.tolist() == [[1.0, 0.0, 1.0, 0.0, 0.0]]


def test_inverted_mining_keeps_low_scores(tiny_data):
    _, normal = run_mining(tiny_data, density=0.2, epochs=4, period=1, collapse_guard=False)
    model, inverted = run_mining(
        tiny_data, density=0.2, epochs=4, period=1, collapse_guard=False, freeze_order="highest"
    )
    assert abs(inverted.mask.density - normal.mask.density) < 0.01
    overlap = sum(int((normal.mask[k] & inverted.mask[k]).sum()) for k in normal.mask)
    assert overlap < 0.5 * normal.mask.num_kept


def test_finetune_mask_flags_or_rounded(tiny_data):
    model, result = run_mining(tiny_data, density=0.2, epochs=4, period=1, lam=0.01)
    assert result.gem is not None
    assert all(torch.equal(result.mask[k], flag_mask(model)[k]) for k in result.mask)
    assert all(torch.equal(result.gem[k], rounded_mask(model)[k]) for k in result.gem)
    assert result.gem.num_kept <= result.mask.num_kept  # r(p) ⊙ q never exceeds q
    model, rounded = run_mining(
        tiny_data, density=0.2, epochs=4, period=1, lam=0.01, finetune_mask="rounded"
    )
    assert all(torch.equal(rounded.mask[k], rounded.gem[k]) for k in rounded.mask)


@pytest.mark.parametrize("target", [0.5, 0.0372, 0.0144, 0.0059])
def test_flag_density_follows_bound_and_ends_at_target(tiny_data, target):
    epochs, period = 10, 2  # Algorithm 1 exactly: the collapse guard off
    model, result = run_mining(
        tiny_data,
        density=target,
        epochs=epochs,
        period=period,
        collapse_guard=False,
        freeze_schedule="algorithm1",
        finetune_mask="rounded",
    )
    total = count_prunable(model)
    c = math.log(1 / target) / epochs
    active_prev = total
    for record in result.history:
        j = record["epoch"]
        active = round(record["flag_density"] * total)
        if j % period == 0:
            assert active == max(1, round(total * math.exp(-c * j))), j
            assert record["bound"] == pytest.approx(math.exp(-c * j))
        else:
            assert active == active_prev  # no freezing between periods
        active_prev = active
    active, _ = flag_counts(model)
    assert abs(active - target * total) <= 1  # the target, within one weight
    # the output mask is 1[p >= 0.5] ⊙ q: never denser than the flags
    assert result.mask.num_kept <= active
    assert result.history[-1]["density"] == result.mask.density


def test_algorithm1_last_epoch_freezes_even_off_period(tiny_data):
    model, result = run_mining(
        tiny_data, density=0.05, epochs=7, period=3, freeze_schedule="algorithm1"
    )
    assert [r["epoch"] for r in result.history if r["frozen"]] == [3, 6, 7]
    active, total = flag_counts(model)
    assert abs(active - 0.05 * total) <= 1


def test_freeze_is_global_lowest_first_and_exact():
    model = to_score_model(nn.Sequential(nn.Linear(3, 1, bias=False), nn.Linear(1, 2, bias=False)))
    a, b = score_layers(model).values()
    with torch.no_grad():
        a.scores.copy_(torch.tensor([[0.9, 0.2, 0.6]]))
        b.scores.copy_(torch.tensor([[0.1], [0.7]]))
    assert freeze_scores(model, 2) == 2
    assert a.flags.tolist() == [[1.0, 0.0, 1.0]] and b.flags.tolist() == [[0.0], [1.0]]
    assert a.scores[0, 1] == 0 and b.scores[0, 0] == 0
    # frozen entries are not candidates any more, even with score 0
    assert freeze_scores(model, 1) == 1
    assert a.flags.tolist() == [[1.0, 0.0, 0.0]] and b.flags.tolist() == [[0.0], [1.0]]
    assert freeze_scores(model, 0) == 0


def test_freeze_breaks_ties_to_freeze_exactly_k():
    model = to_score_model(nn.Sequential(nn.Linear(10, 10, bias=False)))
    layer = model[0]
    with torch.no_grad():
        layer.scores.fill_(0.5)
    assert freeze_scores(model, 63) == 63
    assert int(layer.flags.sum()) == 37


def test_scores_stay_in_unit_interval_during_mining(tiny_data):
    model, _ = run_mining(tiny_data, lam=0.05, optim=OptimConfig(lr=1.0))
    for layer in score_layers(model).values():
        assert layer.scores.min() >= 0 and layer.scores.max() <= 1
        assert torch.all(layer.scores[layer.flags == 0] == 0)


def test_regularization_lowers_density_on_a_fixed_seed(tiny_data):
    densities = [
        run_mining(tiny_data, density=1.0, lam=lam, epochs=3, period=1)[1].gem.density
        for lam in (0.0, 0.05, 0.1)
    ]
    assert densities[0] - 0.05 > densities[1] > densities[2] + 0.05


def test_gem_miner_zero_never_freezes(tiny_data):
    """Gem-Miner(0): density 1 and lambda 0 — no freezing, the network picks its density."""
    model, result = run_mining(tiny_data, density=1.0, lam=0.0, epochs=3, period=1)
    assert all(r["frozen"] == 0 and r["flag_density"] == 1.0 for r in result.history)
    assert 0.3 < result.gem.density < 0.7
    assert result.mask.density == 1.0  # the flags: finetuning would train every weight


def test_only_scores_change_during_mining(tiny_data):
    model = to_score_model(small_net())
    weights = {
        n: p.detach().clone() for n, p in model.named_parameters() if not n.endswith("scores")
    }
    loader = BatchLoader(tiny_data, batch_size=32, mean=(0.5,) * 3, std=(0.25,) * 3, train=True)
    mine_scores(
        model, loader, MineConfig(density=0.2, epochs=2, period=1, lam=1e-3), torch.device("cpu")
    )
    for name, p in model.named_parameters():
        if name in weights:
            assert torch.equal(p, weights[name]), name


def test_mining_learns_tiny_task(tiny_data):
    model, result = run_mining(
        tiny_data, density=0.5, epochs=15, period=4, optim=OptimConfig(lr=0.3)
    )
    assert result.history[-1]["train_acc"] > 0.9  # chance is 1/3; only the mask was learned


def test_evaluation_schedule_always_includes_the_last_epoch():
    from gemminer.training import evaluation_due

    assert [j for j in range(1, 8) if evaluation_due(j, 7, 1)] == list(range(1, 8))
    assert [j for j in range(1, 8) if evaluation_due(j, 7, 3)] == [3, 6, 7]
    assert [j for j in range(1, 8) if evaluation_due(j, 7, 0)] == [7]


def test_paper_defaults_scale_period_and_lr_to_short_runs():
    from gemminer.settings.recipe import paper_recipe

    def defaults(density: float, epochs: int) -> tuple:
        return paper_recipe("resnet20", "cifar10", density).mining_at(epochs)

    assert defaults(0.0144, 150) == (5, 0.1, 1e-4)
    assert defaults(0.0144, 300) == (10, 0.1, 1e-4)
    period, lr, lam = defaults(0.0144, 10)
    assert (period, lam) == (1, 1e-4) and lr == pytest.approx(1.5)  # same summed lr as 150 x 0.1
    assert defaults(0.5, 150) == (8, 0.05, 1e-8)
    assert defaults(0.04, 150)[2] == 3e-5


def test_collapse_guard_keeps_every_layer_alive_under_an_aggressive_lambda(tiny_data, caplog):
    """Section 4.3: a large λ pushes every score of a layer below 0.5 and disconnects the
    network. Without the guard that happens (and is reported); with it every layer keeps
    at least one weight per output unit, with a warning naming the layer."""
    aggressive = {
        "density": 0.5,
        "epochs": 3,
        "period": 1,
        "lam": 5.0,
        "optim": OptimConfig(lr=1.0),
    }
    _, bare = run_mining(tiny_data, collapse_guard=False, **aggressive)
    assert told(caplog)[0].startswith("layer collapse, mining epoch 1: no weight of")
    assert any(row.kept == 0 for row in bare.mask.layers())
    assert bare.history[0]["collapsed"]
    caplog.clear()
    model, guarded = run_mining(tiny_data, **aggressive)
    assert re.match(r"layer collapse guard, mining epoch 1: .*\.weight \(\+", told(caplog)[0])
    rows = {row.name: row for row in guarded.mask.layers()}
    outputs = {"0.weight": 16, "3.weight": 32, "8.weight": 3}
    assert all(rows[name].kept >= n for name, n in outputs.items())
    assert guarded.history[-1]["guarded"] and not guarded.history[-1]["collapsed"]
    # the guarded weights are real: they round to 1 and the density counts them
    assert guarded.mask.num_kept == sum(
        int(m.rounded_mask().sum()) for m in score_layers(model).values()
    )


def test_collapse_guard_floor_follows_min_layer_density(tiny_data, caplog):
    aggressive = {
        "density": 0.5,
        "epochs": 2,
        "period": 1,
        "lam": 5.0,
        "optim": OptimConfig(lr=1.0),
    }
    _, result = run_mining(tiny_data, min_layer_density=0.25, **aggressive)
    assert told(caplog)
    for row in result.mask.layers():
        assert row.kept >= math.ceil(0.25 * row.total)


def test_auto_lambda_moves_lambda_towards_the_bound():
    from gemminer.methods.gem_miner import adapt_lambda

    assert adapt_lambda(1e-4, 0.30, 0.20) == pytest.approx(1.5e-4)  # too dense: λ up
    assert adapt_lambda(1e-4, 0.05, 0.20) == pytest.approx(0.5e-4)  # too sparse: λ down, ≤ 2×
    assert adapt_lambda(1e-4, 0.90, 0.20) == pytest.approx(2e-4)  # at most 2× per epoch
    assert adapt_lambda(1e-4, 0.20, 0.20) == pytest.approx(1e-4)


def test_auto_lambda_is_recorded_and_needs_a_positive_lambda(tiny_data):
    from gemminer.errors import ConfigError

    _, result = run_mining(tiny_data, lam=1e-3, auto_lambda=True, epochs=4, period=1)
    lams = [r["lam"] for r in result.history]
    assert lams[0] == 1e-3 and len(set(lams)) > 1
    with pytest.raises(ConfigError, match="auto_lambda adapts a positive lambda"):
        MineConfig(lam=0.0, auto_lambda=True)


@pytest.mark.parametrize("regularizer", ["l2", "l1"])
def test_a_mining_step_is_sgd_on_loss_plus_lambda_times_the_regularizer(tiny_data, regularizer):
    """The step the paper defines, written out with autograd: loss + λ·reg(p) through the
    straight-through rounding, an SGD step with momentum, projection into [0, 1]."""
    lam, lr = 0.05, 0.3
    cfg = MineConfig(
        density=1.0,
        epochs=1,
        period=1,
        lam=lam,
        regularizer=regularizer,
        batch_size=96,
        optim=OptimConfig(lr=lr, momentum=0.9, weight_decay=1e-3),
        bn_recalibration_batches=0,
    )

    def loader():
        return BatchLoader(
            tiny_data, batch_size=96, mean=(0.5,) * 3, std=(0.25,) * 3, train=True, seed=1
        )

    mined = to_score_model(small_net(), torch.Generator().manual_seed(0))
    mine_scores(mined, loader(), cfg, torch.device("cpu"))

    model = to_score_model(small_net(), torch.Generator().manual_seed(0))
    (x, y), *_ = list(loader())
    scores = [m.scores for m in score_layers(model).values()]
    reg = sum(s.pow(2).sum() if regularizer == "l2" else s.abs().sum() for s in scores)
    loss = nn.functional.cross_entropy(model(x), y) + lam * reg
    grads = torch.autograd.grad(loss, scores)
    with torch.no_grad():
        for s, g in zip(scores, grads):
            s.sub_(lr * (g + 1e-3 * s)).clamp_(0, 1)  # first step: momentum buffer = gradient
    for expected, got in zip(scores, (m.scores for m in score_layers(mined).values())):
        torch.testing.assert_close(got, expected, atol=1e-6, rtol=0)
    assert any(not torch.equal(s, p) for s, p in zip(scores, small_scores()))


def small_scores() -> list[torch.Tensor]:
    model = to_score_model(small_net(), torch.Generator().manual_seed(0))
    return [m.scores.detach() for m in score_layers(model).values()]


def test_a_freeze_counts_the_weights_it_cut_that_still_rounded_to_1():
    model = to_score_model(small_net(), torch.Generator().manual_seed(0))
    cfg = MineConfig(density=0.1, epochs=6, period=2, lam=0.0, collapse_guard=False)
    hooks = MiningHooks(model, cfg, torch.device("cpu"))
    layers = list(score_layers(model).values())
    total = sum(m.scores.numel() for m in layers)
    ramp = torch.randperm(total, generator=torch.Generator().manual_seed(1)).float() / total
    with torch.no_grad():
        for m, part in zip(layers, ramp.split([m.scores.numel() for m in layers])):
            m.scores.copy_(part.view_as(m.scores))
    assert hooks._freeze(2) == (0, 0)  # no freeze due after epoch 2
    frozen, live = hooks._freeze(3)  # the first of the authors' two freezes: keep √0.1
    assert frozen == math.ceil((1 - math.sqrt(0.1)) * total)
    lowest = ramp.sort().values[:frozen]
    assert live == int((lowest >= 0.5).sum()) > 0
    assert flag_counts(model)[0] == total - frozen


def test_mining_tells_when_freezes_cut_weights_still_in_use(tiny_data, caplog):
    """λ = 0 leaves about half the scores above 0.5, and freezing to 10 % must cut some:
    a notice names it; a λ strong enough to pull the scores under 0.5 first cuts none."""
    _, weak = run_mining(tiny_data)
    cut = [r for r in weak.history if r["frozen_live"]]
    assert cut and all(0 < r["frozen_live"] <= r["frozen"] for r in cut)
    assert re.match(
        rf"{len(cut)} of 2 freezes cut weights that still rounded to 1 .* the first after "
        rf"mining epoch {cut[0]['epoch']}\): λ = 0 did not pull",
        told(caplog)[-1],
    )
    caplog.clear()
    _, strong = run_mining(tiny_data, lam=0.5, optim=OptimConfig(lr=1.0))
    assert all(r["frozen_live"] == 0 for r in strong.history)
    assert sum(r["frozen"] for r in strong.history) > 0
    assert not any("still rounded to 1" in m for m in told(caplog))
    caplog.clear()  # the score inversion freezes the highest scores on purpose: no notice
    run_mining(tiny_data, freeze_order="highest")
    assert not any("still rounded to 1" in m for m in told(caplog))
