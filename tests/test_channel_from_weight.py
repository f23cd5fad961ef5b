"""Channels read off a per-weight ticket (``granularity="channel_from_weight"``): the
per-channel counts, widths in proportion to √(the ticket's density of each set), the
registered method, the API and the command line."""

import json
import math

import pytest
import torch

from gemminer import MineConfig
from gemminer.errors import ConfigError
from gemminer.masking import prunable_modules, weight_name
from gemminer.masking.channels import (
    channel_mask,
    channel_sets,
    cost_of,
    kept_per_channel,
    live_channels,
)
from gemminer.masking.flops import count_flops
from gemminer.methods import METHODS
from gemminer.methods.channel_scoring import channels_from_ticket, uniform_counts

from .test_channel_gem_miner import SHAPE, channel_context
from .test_gem_miner import small_net


def ones(net):
    """A mask keeping every weight of ``net``."""
    return {
        weight_name(n): torch.ones(m.weight.shape, dtype=torch.bool)
        for n, m in prunable_modules(net).items()
    }


def test_kept_per_channel_counts_each_channels_rows_and_columns():
    net = small_net()  # set "0": 16 channels, rows of conv 0 (3·3·3) and columns of conv 3
    first, second = channel_sets(net, SHAPE)
    mask = ones(net)
    mask["0.weight"][2] = False  # channel 2 of the first set loses its 27 row weights
    mask["3.weight"][:5, 2] = False  # and 5 · 9 of its 32 · 9 column weights
    mask["3.weight"][7] = False  # channel 7 of the second set: its 16 · 9 row weights
    kept, total = kept_per_channel(mask, first)
    assert torch.equal(total, torch.full((16,), 27.0 + 288))
    # row 7 of conv 3 held 9 weights of every first-set channel's column
    assert kept[2] == 288 - 45 - 9 and kept[3] == 27 + 288 - 9
    kept, total = kept_per_channel(mask, second)
    assert torch.equal(total, torch.full((32,), 144.0 + 3))  # and one column of the head
    assert kept[7] == 3 and kept[10] == 147 and kept[0] == 147 - 9


def best_counts_on_a_grid(cost, density, shares):
    """The counts of the largest q on a fine grid whose multiply-adds meet the target."""
    sizes = [s.size for s in cost.sets]
    best = [1] * len(sizes)
    for i in range(1, 40001):
        q = i / 10000
        counts = [min(n, max(1, math.floor(q * a * n + 0.5))) for n, a in zip(sizes, shares)]
        if cost.flops(counts) <= density * cost.dense:
            best = counts
    return best


@pytest.mark.parametrize("shares", [(1.0, 1.0), (1.0, 0.5), (0.3, 1.0), (0.0, 1.0)])
@pytest.mark.parametrize("density", [0.2, 0.45, 0.8])
def test_shares_set_the_widths_ratio_at_the_largest_scale_that_meets_the_target(shares, density):
    net = small_net()
    _, cost = cost_of(net, SHAPE)
    counts = uniform_counts(cost, density, shares)
    assert cost.flops(counts) <= density * cost.dense
    assert counts == best_counts_on_a_grid(cost, density, shares)
    if shares == (1.0, 1.0):
        assert counts == uniform_counts(cost, density)


def test_channels_follow_the_tickets_density_of_each_set():
    net = small_net()
    sets, cost = cost_of(net, SHAPE)
    first, second = sets
    ticket = ones(net)
    # the second set's channels keep a quarter of their weights on average: channels
    # 0..7 keep all their rows and column, the others none
    ticket["3.weight"][8:] = False
    ticket["8.weight"][:, 8:] = False
    mask, keep, fractions = channels_from_ticket(net, cost, ticket, 0.3)
    kept_first, total_first = kept_per_channel(ticket, first)
    kept_second, total_second = kept_per_channel(ticket, second)
    rho = [
        float(kept_first.sum() / total_first.sum()),
        float(kept_second.sum() / total_second.sum()),
    ]
    expect = uniform_counts(cost, 0.3, [math.sqrt(r) for r in rho])
    assert [int(keep[s.name].sum()) for s in sets] == expect
    assert expect[1] / 32 < expect[0] / 16  # the thinner set narrower
    assert count_flops(net, SHAPE, mask).fraction <= 0.3
    # inside the second set, the channels the ticket keeps most of: 0..7 first
    assert keep[second.name][: min(8, expect[1])].all()
    assert torch.allclose(fractions[second.name][:8], torch.ones(8))
    live = live_channels(mask, sets)
    assert all(torch.equal(live[s.name], keep[s.name]) for s in sets)
    with pytest.raises(ConfigError, match="smallest fraction reachable"):
        channels_from_ticket(net, cost, ticket, 1e-4)


def test_the_registered_method_mines_per_weight_then_returns_whole_channels(tiny_data):
    spec = METHODS.get("gem-miner")
    settings = spec.build_settings({"granularity": "channel_from_weight", "period": 1})
    assert spec.budget_of(settings) == "flops"
    net = small_net()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    result = spec.run(channel_context(net, tiny_data, 0.4), settings)
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    sets = channel_sets(net, SHAPE)
    live = live_channels(result.mask, sets)  # whole channels: exactly their channel mask
    whole = channel_mask(net, sets, live)
    assert all(torch.equal(result.mask[n], whole[n]) for n in whole)
    for s in sets:
        assert 0 < result.extra["channels_kept"][s.name] == int(live[s.name].sum()) < s.size
        assert result.extra["channels_total"][s.name] == s.size
    assert count_flops(net, SHAPE, result.mask).fraction <= 0.4
    # the per-weight ticket it read: the flags, at 0.4 of the weights
    assert result.extra["weight_ticket_density"] == pytest.approx(0.4, abs=0.01)
    assert result.extra["weight_finetune_mask"] == "flags"
    assert "gem_density" not in result.extra  # that rare gem is not this ticket
    assert result.history[-1]["flag_density"] == pytest.approx(0.4, abs=0.01)
    # scores.pt: each producer row holds the fraction of its channel the ticket kept
    rows = result.scores["0.weight"]
    assert torch.equal(rows.amin((1, 2, 3)), rows.amax((1, 2, 3)))
    assert 0 <= float(rows.min()) and float(rows.max()) <= 1


def test_settings_of_channel_from_weight():
    MineConfig(density=0.25, epochs=2, period=1, granularity="channel_from_weight", streams="whole")
    for setting in ({"channel_gradient": "sum"}, {"channel_rank": "score_per_flop"}):
        with pytest.raises(ConfigError, match="apply to granularity=channel only"):
            MineConfig(
                density=0.25, epochs=2, period=1, granularity="channel_from_weight", **setting
            )
    with pytest.raises(ConfigError, match="streams applies to granularity=channel"):
        MineConfig(density=0.25, epochs=2, period=1, streams="whole")


def test_the_python_api_turns_its_mined_ticket_into_channels(tiny_data, user_net):
    import gemminer

    result = gemminer.mine(
        user_net, tiny_data, density=0.5, epochs=2, period=1, granularity="channel_from_weight"
    )
    shape = tuple(tiny_data.images.shape[1:])
    assert count_flops(user_net, shape, result.mask).fraction <= 0.5
    assert result.gem is not None and result.gem.density <= 0.5  # the per-weight rare gem
    assert result.history[-1]["flag_density"] == pytest.approx(0.5, abs=0.01)
    with pytest.raises(ConfigError, match="cannot mine within a ticket"):
        gemminer.mine(
            user_net, tiny_data, density=0.2, epochs=1, granularity="channel_from_weight",
            within=result.mask,
        )  # fmt: skip


def test_a_channel_from_weight_run_end_to_end(data_dir, tmp_path):
    from gemminer.cli import main

    out = tmp_path / "run"
    args = [
        "prune", "--method", "gem-miner", "--set", "granularity=channel_from_weight",
        "--model", "resnet20", "--dataset", "cifar10", "--no-download", "--data-dir",
        str(data_dir), "--batch-size", "8", "--density", "0.25", "--epochs", "2",
        "--period", "1", "--out", str(out), "--no-progress",
    ]  # fmt: skip
    assert main(args) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["budget"] == "flops"
    assert 0.2 < summary["ticket_flops"] / summary["dense_flops"] <= 0.25
    assert summary["weight_ticket_density"] == pytest.approx(0.25, abs=0.01)
    kept, total = summary["channels_kept"], summary["channels_total"]
    assert set(kept) == set(total) and len(kept) == 12  # 9 blocks' inner sets, 3 streams
    assert all(1 <= kept[n] <= total[n] for n in kept)
