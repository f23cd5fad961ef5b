"""Pruning within a ticket (``--within RUN``, ``gemminer.mine(within=...)``): channels first,
then Gem-Miner's weights inside them."""

import json
import math

import pytest
import torch

import gemminer
from gemminer.cli import main
from gemminer.errors import ConfigError
from gemminer.masking import prunable_weights
from gemminer.methods.gem_miner import FreezeSchedule
from gemminer.settings.config import RunConfig

from .conftest import UserNet, fails, write_image_folder


def test_the_bound_falls_from_the_density_the_flags_start_from():
    authors = FreezeSchedule(0.05, epochs=6, period=2, start=0.4)
    assert authors.keep_rate == pytest.approx(math.sqrt(0.05 / 0.4))  # N = 2 freezes
    assert [authors.bound(e) for e in (1, 3, 5)] == pytest.approx(
        [0.4, 0.4 * math.sqrt(0.125), 0.05]
    )
    assert authors.bound(6) == 0.05
    printed = FreezeSchedule(0.05, epochs=6, period=2, kind="algorithm1", start=0.4)
    assert printed.bound(3) == pytest.approx(0.4 * (0.05 / 0.4) ** 0.5)
    assert printed.bound(6) == 0.05
    whole = FreezeSchedule(0.05, epochs=6, period=2)  # from every weight, as ever
    assert whole.keep_rate == pytest.approx(math.sqrt(0.05)) and whole.bound(1) == 1.0
    with pytest.raises(ConfigError, match="must lie below the density 0.4 the flags start"):
        FreezeSchedule(0.4, epochs=6, period=2, start=0.4)


def half_the_rows(net: torch.nn.Module) -> gemminer.Mask:
    """Each layer's first half of output rows kept (the head whole): a channel-like mask."""
    out = {}
    for name, w in prunable_weights(net).items():
        keep = torch.zeros(w.shape, dtype=torch.bool)
        keep[: max(1, w.shape[0] // 2) if w.shape[0] > 3 else w.shape[0]] = True
        out[name] = keep
    return gemminer.Mask(out)


def test_mining_within_a_mask_keeps_a_subset_of_it_at_the_target(tiny_data):
    torch.manual_seed(0)
    net = UserNet()
    within = half_the_rows(net)
    result = gemminer.mine(
        net, tiny_data, density=0.1, epochs=4, period=1, batch_size=16, device="cpu",
        within=within,
    )  # fmt: skip
    assert all(not (result.mask[k] & ~within[k]).any() for k in within)  # a subset
    assert 0.1 - 0.01 <= result.density <= 0.1
    # the bound starts at the mask's density, not at 1
    assert result.history[0]["bound"] == pytest.approx(within.density)
    assert result.history[-1]["bound"] == 0.1
    assert within.density == pytest.approx(118 / 188)  # half of 8 + half of 8 rows, head whole
    with pytest.raises(ConfigError, match="keeps 0.6276.* not more than the target density 0.7"):
        gemminer.mine(net, tiny_data, density=0.7, epochs=2, device="cpu", within=within)
    with pytest.raises(ConfigError, match="channel Gem-Miner cannot mine within a ticket"):
        gemminer.mine(
            net, tiny_data, density=0.1, epochs=2, device="cpu", within=within,
            granularity="channel",
        )  # fmt: skip
    with pytest.raises(ConfigError, match="does not fit the model: no mask for head.weight"):
        partial = {k: v for k, v in within.items() if k != "head.weight"}
        gemminer.mine(net, tiny_data, density=0.1, epochs=2, device="cpu", within=partial)


def test_an_empty_within_leaves_config_hashes_as_they_were():
    assert "within" not in RunConfig().to_dict()  # every run folder's name stays the same
    cfg = RunConfig(within="runs/channels")
    assert cfg.to_dict()["within"] == "runs/channels"
    assert RunConfig.from_dict(cfg.to_dict()) == cfg


@pytest.fixture(scope="module")
def channel_run(tmp_path_factory):
    """A channel ticket of ResNet-20 (random channels, 30 % of the multiply-adds)."""
    root = tmp_path_factory.mktemp("within")
    write_image_folder(root / "data")
    out = root / "channels"
    assert main([*COMMON, "--data-dir", str(root / "data"), "--method", "channel-random",
                 "--density", "0.3", "--epochs", "0", "--out", str(out)]) == 0  # fmt: skip
    return out


COMMON = [
    "prune", "--model", "resnet20", "--dataset", "cifar10", "--no-download",
    "--batch-size", "16", "--no-progress", "--no-epoch-eval",
]  # fmt: skip


def test_gem_miner_prunes_the_weights_inside_a_channel_tickets_channels(channel_run):
    data = str(channel_run.parent / "data")
    out = channel_run.parent / "inside"
    args = [*COMMON, "--data-dir", data, "--method", "gem-miner", "--within", str(channel_run),
            "--weight-init", "kaiming_normal", "--density", "0.05", "--epochs", "2",
            "--out", str(out)]  # fmt: skip
    assert main(args) == 0
    channels = torch.load(channel_run / "mask.pt", weights_only=True)
    inside = torch.load(out / "mask.pt", weights_only=True)
    assert all(not (inside[k] & ~channels[k]).any() for k in channels)
    summary = json.loads((out / "summary.json").read_text())
    source = json.loads((channel_run / "summary.json").read_text())
    assert summary["density"] == pytest.approx(0.05, abs=1e-4)
    assert summary["epochs_to_mask"] == 2 + source["epochs_to_mask"]
    assert summary["ticket_flops"] < source["ticket_flops"]
    assert json.loads((out / "config.json").read_text())["within"] == str(channel_run)
    # the compact network drops the channels; the zeros inside stay zeros
    assert main(["export", str(out), "--compact", "--ticket"]) == 0
    compact = gemminer.load_exported(out / "ticket-unfinetuned-compact.safetensors")
    weights = prunable_weights(compact)
    assert sum(int((w != 0).sum()) for w in weights.values()) == summary["num_kept"]
    assert sum(w.numel() for w in weights.values()) < summary["num_prunable"]


def test_within_is_refused_where_it_cannot_hold(channel_run, capsys):
    data = str(channel_run.parent / "data")
    base = [*COMMON, "--data-dir", data, "--within", str(channel_run), "--epochs", "1",
            "--density", "0.05"]  # fmt: skip
    fails([*base, "--method", "channel-random"], capsys,
          "--within: channel-random cannot prune within a ticket", "gem-miner")  # fmt: skip
    fails([*base, "--method", "gem-miner", "--set", "granularity=channel"], capsys,
          "channel Gem-Miner cannot mine within a ticket")  # fmt: skip
    fails([*base, "--method", "gem-miner", "--seed", "3", "--weight-init", "kaiming_normal"],
          capsys, "network is not this one's: seed 0 (here 3)", "(--seed 0)")  # fmt: skip
    fails([*base, "--method", "gem-miner"], capsys, "--weight-init kaiming_normal",
          "weight_init 'kaiming_normal' (here 'signed_constant')")  # fmt: skip
    fails([*base[:-1], "0.5", "--method", "gem-miner", "--weight-init", "kaiming_normal"],
          capsys, "not more than the target density 0.5")  # fmt: skip
    missing = [*base, "--method", "gem-miner", "--weight-init", "kaiming_normal"]
    missing[missing.index(str(channel_run))] = str(channel_run.parent / "nowhere")
    fails(missing, capsys, "no run folder there")


def test_a_ticket_of_trained_weights_cannot_be_pruned_within(channel_run, capsys):
    data = str(channel_run.parent / "data")
    trained = channel_run.parent / "trained"
    assert main([*COMMON, "--data-dir", data, "--method", "l1-filter", "--set",
                 "train_epochs=1", "--density", "0.3", "--epochs", "0",
                 "--out", str(trained)]) == 0  # fmt: skip
    capsys.readouterr()
    fails([*COMMON, "--data-dir", data, "--method", "gem-miner", "--within", str(trained),
           "--weight-init", "kaiming_normal", "--density", "0.05", "--epochs", "1",
           "--out", str(channel_run.parent / "no")], capsys,
          "its ticket's weights are not the initialization (first at conv1.weight)")  # fmt: skip
    assert not (channel_run.parent / "no").exists()
