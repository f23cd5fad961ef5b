"""Gem-Miner over channels (``granularity="channel"``): scores, gradients, freezing, tickets."""

import json

import pytest
import torch
from torch import nn

from gemminer import MineConfig
from gemminer.data.loader import BatchLoader
from gemminer.errors import ConfigError, MaskError
from gemminer.masking.channel_scores import channel_gates, gated_mask, to_channel_model
from gemminer.masking.channels import COLUMNS, ROWS, channel_sets, cost_of, live_channels
from gemminer.masking.flops import count_flops
from gemminer.methods import METHODS, PruneContext
from gemminer.methods.gem_miner import ChannelSpace, mine_scores

from .test_gem_miner import small_net

SHAPE = (3, 8, 8)


def loader(data, batch_size=32):
    return BatchLoader(
        data, batch_size=batch_size, mean=(0.5,) * 3, std=(0.25,) * 3, train=True, seed=1
    )


def channel_context(net: nn.Module, data, density: float) -> PruneContext:
    """A context pruning ``net`` to ``density`` of its multiply-adds in 2 epochs of ``data``."""
    return PruneContext(
        model=net,
        density=density,
        train_batches=loader(data),
        device=torch.device("cpu"),
        epochs=2,
        input_shape=SHAPE,
    )


def channel_model(net: nn.Module | None = None, gradient: str = "mean"):
    net = net if net is not None else small_net()
    sets, cost = cost_of(net, SHAPE)
    model = to_channel_model(net, sets, torch.Generator().manual_seed(0), gradient)
    return model, sets, cost


@pytest.mark.parametrize("gradient", ["sum", "mean"])
def test_only_the_channel_scores_learn_and_their_gradient_is_the_straight_through_sum(gradient):
    model, sets, _ = channel_model(gradient=gradient)
    gates = channel_gates(model)
    assert [p.requires_grad for p in model.parameters()].count(True) == len(sets) == 2
    x = torch.randn(4, *SHAPE)
    model(x).square().sum().backward()
    assert all(p.grad is None for n, p in model.named_parameters() if "channel_scores" not in n)
    # the same loss through a plain copy whose effective weights are leaves: ∂L/∂p_c is the
    # sum over the channel's rows and columns of ∂L/∂w_eff ⊙ w (⊙ the other gate)
    plain = small_net()
    convs = [m for m in plain if isinstance(m, (nn.Conv2d, nn.Linear))]
    g0, g1 = (gates.gate(i).detach() for i in range(2))
    effective = [
        (convs[0].weight * g0.view(-1, 1, 1, 1)).detach().requires_grad_(),
        (convs[1].weight * g1.view(-1, 1, 1, 1) * g0.view(1, -1, 1, 1)).detach().requires_grad_(),
        (convs[2].weight * g1.view(1, -1)).detach().requires_grad_(),
    ]
    for m, w in zip(convs, effective):
        del m.weight
        m.weight = w
    plain(x).square().sum().backward()
    w = [small_net()[i].weight for i in (0, 3)] + [small_net()[8].weight]
    expect0 = (effective[0].grad * w[0]).sum((1, 2, 3)) + (
        effective[1].grad * w[1] * g1.view(-1, 1, 1, 1)
    ).sum((0, 2, 3))
    expect1 = (effective[1].grad * w[1] * g0.view(1, -1, 1, 1)).sum((1, 2, 3)) + (
        effective[2].grad * w[2]
    ).sum(0)
    if gradient == "mean":  # divided by the weights each channel gates: rows + columns
        expect0 = expect0 / (w[0][0].numel() + w[1][:, 0].numel())
        expect1 = expect1 / (w[1][0].numel() + w[2][:, 0].numel())
    assert torch.allclose(gates.scores[0].grad, expect0, rtol=1e-4, atol=1e-9)
    assert torch.allclose(gates.scores[1].grad, expect1, rtol=1e-4, atol=1e-9)


def test_a_channel_gradient_other_than_mean_or_sum_is_refused():
    net = small_net()
    sets, _ = cost_of(net, SHAPE)
    with pytest.raises(MaskError, match="channel gradient"):
        to_channel_model(net, sets, gradient="max")
    with pytest.raises(ConfigError, match="channel_gradient"):
        MineConfig(density=0.5, epochs=2, granularity="channel", channel_gradient="max")


def test_gated_weights_drop_whole_channels_as_the_rounded_mask_says():
    model, sets, _ = channel_model()
    gates = channel_gates(model)
    with torch.no_grad():
        gates.scores[0].fill_(0.9)
        gates.scores[0][[2, 5]] = 0.1
    mask = gated_mask(model)
    assert not mask["0.weight"][[2, 5]].any() and mask["0.weight"][[0, 1, 3]].all()
    assert not mask["3.weight"][:, [2, 5]].any()
    live = live_channels(mask, sets)
    assert live["0"].sum() == 14


def mine(data, **overrides):
    settings = {"density": 0.3, "epochs": 6, "period": 2, "lam": 0.0, "batch_size": 32}
    settings.update(overrides)
    cfg = MineConfig(granularity="channel", **settings)
    model, sets, cost = channel_model()
    space = ChannelSpace(model, cost, cfg.collapse_guard, cfg.min_layer_density, cfg.channel_rank)
    return model, cost, mine_scores(model, loader(data), cfg, torch.device("cpu"), space=space)


def test_the_flags_follow_the_multiply_add_bound_down_to_the_target(tiny_data):
    model, cost, result = mine(tiny_data)
    for record in result.history:
        assert record["flag_flops"] <= record["bound"] + 1e-9
    last = result.history[-1]
    assert last["bound"] == 0.3
    # within one channel of the target: adding back any dropped channel exceeds it
    flags = channel_gates(model).keep(rounded=False)
    assert cost.fraction(flags) <= 0.3
    assert cost.fraction(flags) > 0.3 - 0.1  # the coarsest channel here is ~1/16 of the cost
    assert result.mask.density == pytest.approx(
        count_flops(small_net(), SHAPE, result.mask).ticket / cost.dense, abs=0.2
    )
    assert last["flops"] <= last["flag_flops"]  # the rounded channels are among the flags


def test_mining_learns_a_tiny_task_by_channels_alone(tiny_data):
    _, _, result = mine(tiny_data, density=0.6, epochs=12, period=4)
    assert result.history[-1]["train_acc"] > 0.6  # chance is 1/3


def test_inverted_channel_mining_freezes_the_highest_scores(tiny_data):
    normal, _, _ = mine(tiny_data)
    inverted, _, _ = mine(tiny_data, freeze_order="highest")
    a, b = channel_gates(normal).keep(False), channel_gates(inverted).keep(False)
    assert any(not torch.equal(a[n], b[n]) for n in a)


def test_ranked_per_multiply_add_a_freeze_drops_the_dearer_channels_of_equal_score():
    # small_net's first set: a channel costs (3 + 32) × 9 × 64 multiply-adds, the second's
    # 16 × 9 × 64 + 3: with every score equal, ranking by score thins both alike, ranking
    # per multiply-add takes the first set's channels first
    from gemminer.methods.gem_miner import FreezeSchedule, score_model

    widths = {}
    for rank in ("score", "score_per_flop"):
        cfg = MineConfig(density=0.5, epochs=2, period=1, granularity="channel", channel_rank=rank)
        _, space = score_model(small_net(), cfg, torch.Generator().manual_seed(0), SHAPE)
        for p in space.scores:
            p.data.fill_(0.7)
        space.freeze(FreezeSchedule(0.5, epochs=1, period=1, kind="algorithm1"), 1, False)
        widths[rank] = [int(q.sum()) for q in space.flags]
        assert space.flag_fraction() <= 0.5
    assert widths["score"][0] / 16 == pytest.approx(widths["score"][1] / 32, abs=0.05)
    assert widths["score_per_flop"][0] < widths["score"][0]
    assert widths["score_per_flop"][1] > widths["score"][1]
    assert widths["score_per_flop"][0] / 16 < widths["score_per_flop"][1] / 32 - 0.2


def test_channel_mining_ranked_per_multiply_add_meets_the_bound(tiny_data):
    model, cost, result = mine(tiny_data, channel_rank="score_per_flop")
    for record in result.history:
        assert record["flag_flops"] <= record["bound"] + 1e-9
    assert cost.fraction(channel_gates(model).keep(rounded=False)) > 0.3 - 0.1


def test_a_target_below_one_channel_per_set_is_refused_before_mining(tiny_data):
    spec = METHODS.get("gem-miner")
    ctx = channel_context(small_net(), tiny_data, 0.001)
    with pytest.raises(ConfigError, match="below .*the smallest fraction reachable"):
        spec.run(ctx, spec.build_settings({"granularity": "channel", "period": 1}))


def test_the_registered_method_returns_a_channel_ticket(tiny_data):
    spec = METHODS.get("gem-miner")
    settings = spec.build_settings({"granularity": "channel", "period": 1, "lam": 0.0})
    assert spec.budget_of(settings) == "flops"
    assert spec.budget_of(spec.build_settings()) == "density"
    net = small_net()
    ctx = channel_context(net, tiny_data, 0.4)
    result = spec.run(ctx, settings)
    sets = channel_sets(net, SHAPE)
    for s in sets:  # whole channels only: a producer's rows are all alike or all zero
        rows = result.mask[f"{s.name}.weight"].flatten(1)
        kept = rows.any(1)
        assert 0 < kept.sum() < s.size
        assert (rows[kept] == rows[kept][0]).all()  # (its own inputs may be dropped too)
        (consumer,) = s.weights(COLUMNS)
        cols = result.mask[f"{consumer.module}.weight"].transpose(0, 1).flatten(1)
        assert torch.equal(cols.any(1), kept)
    assert count_flops(net, SHAPE, result.mask).fraction <= 0.4
    # scores.pt: each producer row holds its channel's score
    first = sets[0]
    assert first.members[0].kind == ROWS
    row_scores = result.scores[f"{first.name}.weight"]
    assert torch.equal(row_scores.amin((1, 2, 3)), row_scores.amax((1, 2, 3)))
    assert "flag_flops" in result.extra and "gem_flops" in result.extra
    assert result.extra["channel_gradient"] == "mean"  # auto, under the context's SGD


def test_a_channel_run_end_to_end_records_its_multiply_add_budget(data_dir, tmp_path, capsys):
    from gemminer.cli import main

    out = tmp_path / "run"
    args = [
        "prune", "--method", "gem-miner", "--set", "granularity=channel", "--model",
        "resnet20", "--dataset", "cifar10", "--no-download", "--data-dir", str(data_dir),
        "--batch-size", "8", "--density", "0.5", "--epochs", "2", "--period", "1",
        "--out", str(out), "--no-progress",
    ]  # fmt: skip
    assert main(args) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["budget"] == "flops"
    assert 0.45 < summary["ticket_flops"] / summary["dense_flops"] <= 0.5
    printed = capsys.readouterr().out
    assert "multiply-adds" in printed and "(target 50.00 %)" in printed
    assert main(args) == 0  # a finished run is found, not redone
    captured = capsys.readouterr()
    assert "mask already found" in captured.out + captured.err


def test_the_python_api_mines_channels_of_a_users_model(tiny_data, user_net):
    import gemminer

    result = gemminer.mine(
        user_net, tiny_data, density=0.5, epochs=2, period=1, lam=0.0, granularity="channel"
    )
    shape = tuple(tiny_data.images.shape[1:])
    sets = channel_sets(user_net, shape)
    assert [s.name for s in sets] == ["features.0", "features.2"]  # the head reads the 2nd
    assert count_flops(user_net, shape, result.mask).fraction <= 0.5
    assert result.history[-1]["flag_flops"] <= 0.5
    holder = result.model.get_submodule("features.0")
    assert float(holder.channel_grad_scale) < 1  # the mean over the channel's weights
    summed = gemminer.mine(
        user_net, tiny_data, density=0.5, epochs=1, period=1, lam=0.0,
        granularity="channel", channel_gradient="sum",
    )  # fmt: skip
    assert float(summed.model.get_submodule("features.0").channel_grad_scale) == 1.0


def test_weights_per_channel_counts_a_residual_streams_every_reader_and_writer():
    from gemminer.masking.channel_scores import weights_per_channel
    from gemminer.models import create_model

    net = create_model("resnet20", num_classes=10)
    sets = {s.name: s for s in channel_sets(net, (3, 32, 32))}
    # an inner channel: a row of layer1.0.conv1 (16·3·3) and a column of layer1.0.conv2
    assert weights_per_channel(net, sets["layer1.0.conv1"]) == 144 + 144
    # the stem's stream channel: conv1's row (3·3·3), stage 1's three conv2 rows and
    # conv1 columns (16·9 each), stage 2's and 3's (32·9, 64·9: the zero-padded shortcut
    # carries it on), and one column of the classifier
    stage = [3 * 16 * 9, 3 * 32 * 9, 3 * 64 * 9]
    assert weights_per_channel(net, sets["conv1"]) == 27 + 2 * sum(stage) + 10
    model = to_channel_model(net, list(sets.values()), gradient="mean")
    assert float(model.conv1.channel_grad_scale) == pytest.approx(1 / 6085)
    assert "channel_grad_scale" not in "".join(model.state_dict())


def test_channel_gem_miner_with_streams_whole_scores_only_the_inner_channels():
    from gemminer.methods.gem_miner import score_model
    from gemminer.models import create_model

    net = create_model("resnet20", num_classes=10)
    cfg = MineConfig(density=0.25, epochs=2, period=1, granularity="channel", streams="whole")
    scored, space = score_model(net, cfg, torch.Generator().manual_seed(0), (3, 32, 32))
    inner = [f"layer{i}.{j}.conv1" for i in (1, 2, 3) for j in range(3)]
    assert space.names == inner
    assert not hasattr(scored.conv1, "channel_scores")
    assert space.flag_fraction() == 1.0
    for setting in (
        {"streams": "whole"},
        {"channel_gradient": "sum"},
        {"channel_rank": "score_per_flop"},
    ):
        with pytest.raises(ConfigError, match="granularity=channel"):
            MineConfig(density=0.25, epochs=2, period=1, **setting)


def _first_adam_step(gradient: str, lam: float, batch) -> tuple[torch.Tensor, ...]:
    """Channel Gem-Miner's scores before and after one Adam step on ``batch``, and the
    loss's gradient on them, gathered as ``gradient`` says ("auto": by the method's rule)."""
    from gemminer.methods.gem_miner import MiningStep, score_model
    from gemminer.settings.config import OptimConfig

    cfg = MineConfig(
        density=0.5, epochs=2, period=1, lam=lam, granularity="channel",
        channel_gradient=gradient, optim=OptimConfig(name="adam", lr=0.01, momentum=0.9),
    )  # fmt: skip
    model, space = score_model(small_net(), cfg, torch.Generator().manual_seed(0), SHAPE)
    step = MiningStep(model, cfg, scores=space.scores, flags=space.flags)
    before = torch.cat([p.detach().clone() for p in space.scores])
    x, y = batch
    nn.functional.cross_entropy(model(x), y).backward()
    grad = torch.cat([p.grad.clone() for p in space.scores])
    step.optimizer.step()
    step.after_step()
    return before, torch.cat([p.detach() for p in space.scores]), grad


def test_auto_channel_gradient_sums_under_adam_so_lambda_does_not_close_every_channel(
    tiny_data,
):
    """Under Adam every score steps by about the LR whatever its gradient's size, so the
    mean over a channel's weights only shrinks the loss's gradient against λ's 2λp: with
    a λ above the averaged gradients every channel's score falls in the first step, as
    VGG-16's all did in its first epoch. "auto" sums under Adam: the scores follow the
    loss, and the channels the loss wants open rise."""
    from gemminer.methods.gem_miner import channel_gradient

    assert channel_gradient("auto", "sgd") == "mean" and channel_gradient("auto", "adam") == "sum"
    assert channel_gradient("mean", "adam") == "mean" and channel_gradient("sum", "sgd") == "sum"
    batch = next(iter(loader(tiny_data)))
    before, _, averaged = _first_adam_step("mean", 0.0, batch)
    lam = float(averaged.abs().max() / before.min())  # 2λp above every averaged gradient
    before, after, _ = _first_adam_step("mean", lam, batch)
    assert (after < before).all()
    before, after, summed = _first_adam_step("auto", lam, batch)
    opens = summed + 2 * lam * before < 0
    assert opens.any() and (after[opens] > before[opens]).all()
    assert (after[~opens] < before[~opens]).all()


def test_auto_channel_gradient_averages_under_sgd_and_an_explicit_setting_wins():
    from gemminer.masking.channel_scores import weights_per_channel
    from gemminer.methods.gem_miner import score_model
    from gemminer.settings.config import OptimConfig

    def scale(optimizer: str, gradient: str = "auto") -> float:
        cfg = MineConfig(
            density=0.5, epochs=2, period=1, granularity="channel", channel_gradient=gradient,
            optim=OptimConfig(name=optimizer, lr=0.01),
        )  # fmt: skip
        model, _ = score_model(small_net(), cfg, torch.Generator().manual_seed(0), SHAPE)
        return float(model.get_submodule("0").channel_grad_scale)

    first = channel_sets(small_net(), SHAPE)[0]
    assert scale("sgd") == pytest.approx(1 / weights_per_channel(small_net(), first))
    assert scale("adam") == 1.0
    assert scale("adam", "mean") == scale("sgd") and scale("sgd", "sum") == 1.0
    with pytest.raises(ConfigError, match="granularity=channel"):
        MineConfig(density=0.5, epochs=2, period=1, channel_gradient="mean")
