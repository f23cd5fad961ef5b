"""Channel pruning at a multiply-add budget (channel-random, l1-filter), through the registry."""

from __future__ import annotations

import copy
import itertools
import json
import math
from fractions import Fraction

import pytest
import torch
from torch import nn

from gemminer.cli import main
from gemminer.data.loader import BatchLoader
from gemminer.errors import ConfigError, MaskError
from gemminer.masking import weight_name
from gemminer.masking.channels import COLUMNS, ROWS, cost_of
from gemminer.masking.flops import count_flops
from gemminer.methods import METHODS, PruneContext, PruneResult
from gemminer.methods.channel_scoring import channel_values, invert_channels, shuffle_channels
from gemminer.models import MODELS
from gemminer.settings.config import OptimConfig
from gemminer.stages.sanity import invert_mask
from gemminer.training.checkpoint import Checkpoint, TrainingInterrupted

from .conftest import UserNet, separable_arrays, write_image_folder

CPU = torch.device("cpu")
NORM = {"mean": (0.5,) * 3, "std": (0.25,) * 3}
CIFAR = (3, 32, 32)
TINY = (3, 8, 8)


def context(model: nn.Module, density: float, shape=TINY, seed: int = 0, **kw) -> PruneContext:
    return PruneContext(
        model=model,
        density=density,
        train_batches=kw.pop("train_batches", []),
        device=CPU,
        seed=seed,
        input_shape=shape,
        **kw,
    )


def run(name: str, ctx: PruneContext, **settings) -> PruneResult:
    spec = METHODS.get(name)
    return spec.run(ctx, spec.build_settings(settings))


def kept_rows(result: PruneResult, sets) -> dict[str, torch.Tensor]:
    """Each set's kept channels, read from its first producer's mask rows."""
    out = {}
    for s in sets:
        member = s.weights(ROWS)[0]
        rows = result.mask[weight_name(member.module)].flatten(1).any(1)
        out[s.name] = rows[member.positions()]
    return out


def assert_whole_channels(result: PruneResult, sets) -> None:
    """Each layer's mask is its kept rows × its kept columns; rows are dropped only where
    a set has rows, columns only where a set is read, the set's kept channels there."""
    channels = kept_rows(result, sets)
    rows_of: dict[str, list] = {}
    cols_of: dict[str, list] = {}
    for s in sets:
        for m in s.weights(ROWS):
            rows_of.setdefault(m.module, []).append((s, m))
        for m in s.weights(COLUMNS):
            cols_of.setdefault(m.module, []).append((s, m))
    for name, m in result.mask.items():
        module = name.removesuffix(".weight")
        rows = m.flatten(1).any(1)
        cols = m.transpose(0, 1).flatten(1).any(1)
        expected = rows.view(-1, *[1] * (m.dim() - 1)) & cols.view(1, -1, *[1] * (m.dim() - 2))
        if m.shape[1] == 1 and m.dim() == 4:  # depthwise: one column, every row its own
            expected = rows.view(-1, 1, 1, 1).expand_as(m)
        assert torch.equal(m, expected.expand_as(m)), name
        free = torch.ones_like(rows)
        for s, member in rows_of.get(module, []):
            assert torch.equal(rows[member.positions()], channels[s.name]), name
            free[member.positions()] = False
        assert rows[free].all(), name
        if m.shape[1] == 1 and m.dim() == 4:
            continue
        free = torch.ones_like(cols)
        for s, member in cols_of.get(module, []):
            kept = channels[s.name].repeat_interleave(member.repeat)
            assert torch.equal(cols[member.positions()], kept), name
            free[member.positions()] = False
        assert cols[free].all(), name


def set_scores(result: PruneResult, s) -> torch.Tensor:
    """Set ``s``'s channel scores, read back from the per-weight scores."""
    return channel_values(result.scores, s)


# Exact targets on the paper's networks -------------------------------------------------------
CASES = [
    (model, scope, density)
    for model in ("resnet20", "vgg16", "mobilenetv2")
    for scope in ("layer", "global")
    for density in (0.5, 0.25, 0.1)
]


#: small inputs where the network allows (VGG-16 pools five times: 32 × 32)
SHAPES = {"resnet20": TINY, "vgg16": CIFAR, "mobilenetv2": TINY}


@pytest.fixture(scope="module")
def networks():
    """name → (network, input shape, its channel sets, their cost)."""
    torch.manual_seed(0)
    out = {}
    for name, shape in SHAPES.items():
        net = MODELS.get(name)(10)
        out[name] = (net, shape, *cost_of(net, shape))
    return out


@pytest.mark.parametrize(("model", "scope", "density"), CASES)
def test_channel_masks_meet_the_multiply_add_target_within_one_step(
    networks, model, scope, density
):
    net, shape, sets, cost = networks[model]
    result = run("channel-random", context(net, density, shape), scope=scope)
    assert_whole_channels(result, sets)
    flops = count_flops(net, shape, result.mask)
    target = density * flops.dense
    assert flops.ticket <= target
    kept = [int(k.sum()) for k in kept_rows(result, sets).values()]
    assert cost.flops(kept) == flops.ticket  # the cost model counts what count_flops counts
    assert result.extra["channels_kept"] == {s.name: k for s, k in zip(sets, kept)}
    assert result.extra["channels_total"] == {s.name: s.size for s in sets}
    assert all(k >= 1 for k in kept)
    sizes = [s.size for s in sets]
    if scope == "layer":
        # one fraction q for all: |k - q·n| <= 1/2 (k = 1 where q·n < 1/2) ...
        low = max(Fraction(2 * k - 1, 2 * n) for k, n in zip(kept, sizes) if k > 1)
        high = min(Fraction(2 * k + 1, 2 * n) for k, n in zip(kept, sizes) if k < n)
        assert low < high
        # ... and the next step of q (where some set gains a channel) passes the target
        bigger = [min(n, max(1, math.floor(high * n + Fraction(1, 2)))) for n in sizes]
        assert bigger != kept and cost.flops(bigger) > target
    else:
        # keeping the best channel dropped would pass the target
        rows = kept_rows(result, sets)
        dropped = torch.cat(
            [set_scores(result, s).masked_fill(rows[s.name], -1) for s in sets]
        )  # fmt: skip
        owner = torch.cat([torch.full((s.size,), i) for i, s in enumerate(sets)])
        bigger = list(kept)
        bigger[int(owner[dropped.argmax()])] += 1
        assert cost.flops(bigger) > target


def test_a_full_target_keeps_every_channel(networks):
    net, shape, _, _ = networks["resnet20"]
    result = run("channel-random", context(net, 1.0, shape))
    assert result.mask.density == 1.0


# Scores -------------------------------------------------------------------------------------
class Tiny(nn.Module):
    """conv 3→6, conv 6→8, linear 8→3: two channel sets (conv1 → conv2, conv2 → fc)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 6, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(6)
        self.conv2 = nn.Conv2d(6, 8, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(8)
        self.fc = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn1(self.conv1(x)))
        x = torch.relu(self.bn2(self.conv2(x)))
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


#: each filter's L1 norm, a known order (conv1: 6 channels, conv2: 8)
NORMS = {
    "conv1": [3.0, 9.0, 1.0, 7.0, 5.0, 2.0],
    "conv2": [4.0, 8.0, 0.5, 6.0, 2.5, 1.5, 7.5, 3.5],
}


def tiny_with_known_norms() -> Tiny:
    torch.manual_seed(0)
    model = Tiny()
    with torch.no_grad():
        for name, norms in NORMS.items():
            w = getattr(model, name).weight
            signs = torch.randn(w.shape).sign()
            w.copy_(signs * torch.tensor(norms).view(-1, 1, 1, 1) / w[0].numel())
    return model


def test_l1_filter_keeps_each_layers_largest_filters():
    model = tiny_with_known_norms()
    result = run("l1-filter", context(model, 0.5))
    sets, cost = cost_of(model, TINY)
    assert_whole_channels(result, sets)
    rows = kept_rows(result, sets)
    for name, norms in NORMS.items():
        k = int(rows[name].sum())
        assert 1 <= k < len(norms)
        best = torch.tensor(norms).argsort(descending=True)[:k]
        assert set(best.tolist()) == set(torch.nonzero(rows[name]).flatten().tolist()), name
        # the scores saved for inversion: every row its filter's norm
        assert torch.allclose(result.scores[f"{name}.weight"][:, 0, 0, 0], torch.tensor(norms))
    assert result.weights is None and result.epochs_to_mask == 0  # the initialization
    assert count_flops(model, TINY, result.mask).ticket <= 0.5 * cost.dense


def test_l1_filter_global_drops_the_smallest_norms_across_layers():
    model = tiny_with_known_norms()
    result = run("l1-filter", context(model, 0.4), scope="global")
    rows = kept_rows(result, cost_of(model, TINY)[0])
    kept = [v for n, norms in NORMS.items() for v, k in zip(norms, rows[n]) if k]
    dropped = [v for n, norms in NORMS.items() for v, k in zip(norms, rows[n]) if not k]
    assert dropped and min(kept) > max(dropped)


def test_l1_filter_scores_a_stream_channel_by_all_the_filters_adding_into_it(networks):
    net, shape, sets, _ = networks["resnet20"]
    result = run("l1-filter", context(net, 0.3, shape))
    assert_whole_channels(result, sets)
    stream = {s.name: s for s in sets}["conv1"]  # stage 1's stream, through every stage
    modules = dict(net.named_modules())
    expected = sum(
        modules[m.module].weight.abs().flatten(1).sum(1)[m.positions()]
        for m in stream.weights(ROWS)
    )
    assert len(stream.weights(ROWS)) == 1 + 3 * 3  # the stem and every block's conv2
    assert torch.allclose(set_scores(result, stream), expected)
    rows = kept_rows(result, sets)["conv1"]
    assert expected[rows].min() >= expected[~rows].max()  # the largest kept


def test_channel_random_is_reproducible_for_a_seed_and_differs_across_seeds(networks):
    net, shape, _, _ = networks["resnet20"]

    def mask(seed):
        return run("channel-random", context(net, 0.3, shape, seed=seed)).mask

    first, again, other = mask(0), mask(0), mask(1)
    assert all(torch.equal(first[k], again[k]) for k in first)
    assert any(not torch.equal(first[k], other[k]) for k in first)
    assert first.num_kept == other.num_kept  # same counts per set (scope layer)


# Trained before scoring ---------------------------------------------------------------------
def trained_context(model, **kw) -> PruneContext:
    loader = BatchLoader(separable_arrays(48), batch_size=16, train=True, seed=1, **NORM)
    return context(
        model,
        0.5,
        train_batches=loader,
        optim=OptimConfig(lr=0.05, momentum=0.9, weight_decay=1e-4, schedule="cosine"),
        eval_batches={"test": BatchLoader(separable_arrays(24, seed=5), batch_size=16, **NORM)},
        **kw,
    )


def test_l1_filter_after_training_scores_and_keeps_the_trained_weights(user_net):
    before = copy.deepcopy(user_net.state_dict())
    result = run("l1-filter", trained_context(user_net), train_epochs=1)
    assert all(torch.equal(before[k], user_net.state_dict()[k]) for k in before)  # not in place
    assert result.epochs_to_mask == 1 and result.iterations_to_mask == 3  # 48 images / 16
    assert [r["phase"] for r in result.history] == ["prune"] and "test_acc" in result.history[0]
    weights = result.weights
    assert set(dict(user_net.named_parameters())) <= set(weights)
    assert not torch.equal(
        weights["head.weight"], user_net.head.weight * result.mask["head.weight"]
    )
    for name, keep in result.mask.items():
        assert not weights[name][~keep].any()  # pruned weights zeroed
    # the norms are the trained filters' (kept rows are unchanged by the zeroing)
    w = weights["features.0.weight"]
    rows = result.mask["features.0.weight"].flatten(1).any(1)
    scores = result.scores["features.0.weight"][:, 0, 0, 0]
    assert torch.allclose(scores[rows], w.abs().flatten(1).sum(1)[rows])


def test_l1_filter_training_stopped_continues_to_the_same_result(tmp_path):
    def fresh():
        torch.manual_seed(0)
        return UserNet()

    whole = run("l1-filter", trained_context(fresh()), train_epochs=2)
    polls = itertools.count(1)
    path = tmp_path / "ck.pt"
    stopping = Checkpoint(path, {"run": "l1"}, should_stop=lambda: next(polls) >= 4)
    with pytest.raises(TrainingInterrupted):
        run("l1-filter", trained_context(fresh(), checkpoint=stopping), train_epochs=2)
    torch.manual_seed(99)
    resumed = run(
        "l1-filter",
        trained_context(fresh(), checkpoint=Checkpoint(path, {"run": "l1"})),
        train_epochs=2,
    )
    assert all(torch.equal(whole.mask[k], resumed.mask[k]) for k in whole.mask)
    assert all(torch.equal(whole.weights[k], resumed.weights[k]) for k in whole.weights)
    assert resumed.iterations_to_mask == whole.iterations_to_mask == 6


# Score inversion ----------------------------------------------------------------------------
@pytest.mark.parametrize("model", ["resnet20", "mobilenetv2"])
def test_inverting_a_channel_mask_keeps_the_lowest_channels_at_the_same_cost(networks, model):
    net, shape, sets, cost = networks[model]
    result = run("channel-random", context(net, 0.3, shape))
    inverted = invert_channels(net, shape, result.mask, result.scores)
    assert_whole_channels(PruneResult(inverted, 0, 0), sets)
    assert cost.of(kept_rows(PruneResult(inverted, 0, 0), sets)) == cost.of(kept_rows(result, sets))
    rows, flipped = kept_rows(result, sets), kept_rows(PruneResult(inverted, 0, 0), sets)
    for s in sets:
        scores = set_scores(result, s)
        assert flipped[s.name].sum() == rows[s.name].sum()
        if not rows[s.name].all():
            assert scores[flipped[s.name]].max() < scores[~flipped[s.name]].min()
    # a layer that reads one set and holds another's rows (a block's conv2 reads its inner
    # channels and writes the stream) is not inverted whole by the per-weight inversion
    posthoc = invert_mask(result.mask, result.scores)
    assert not all(torch.equal(posthoc[k], inverted[k]) for k in inverted)


@pytest.mark.parametrize("model", ["resnet20", "mobilenetv2"])
def test_shuffling_a_channel_mask_keeps_every_sets_width_and_the_cost(networks, model):
    net, shape, sets, cost = networks[model]
    result = run("channel-random", context(net, 0.3, shape))
    rows = kept_rows(result, sets)
    shuffled = shuffle_channels(net, shape, result.mask, torch.Generator().manual_seed(5))
    again = shuffle_channels(net, shape, result.mask, torch.Generator().manual_seed(5))
    assert all(torch.equal(shuffled[k], again[k]) for k in shuffled)  # seeded
    assert_whole_channels(PruneResult(shuffled, 0, 0), sets)
    moved = kept_rows(PruneResult(shuffled, 0, 0), sets)
    assert cost.of(moved) == cost.of(rows)
    assert all(moved[s.name].sum() == rows[s.name].sum() for s in sets)
    partial = [s.name for s in sets if 1 < rows[s.name].sum() < s.size - 1]
    assert partial and any(not torch.equal(moved[n], rows[n]) for n in partial)


# Errors -------------------------------------------------------------------------------------
def test_a_target_below_the_floor_names_the_smallest_reachable_fraction(networks):
    net, shape, _, cost = networks["resnet20"]
    for name in ("channel-random", "l1-filter"):
        with pytest.raises(ConfigError, match=f"below {cost.floor:.6g}, the smallest fraction"):
            run(name, context(net, cost.floor / 2, shape))


class Untraceable(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.fc = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        if x.sum() > 0:  # control flow on a tensor's value
            x = -x
        return self.fc(x.mean((2, 3)))


def test_models_without_channel_sets_are_clear_errors():
    with pytest.raises(MaskError, match="cannot trace Untraceable"):
        run("channel-random", context(Untraceable(), 0.5))
    with pytest.raises(MaskError, match="no channels that can be pruned as a whole"):
        run("l1-filter", context(nn.Sequential(nn.Flatten(), nn.Linear(192, 3)), 0.5))
    with pytest.raises(ConfigError, match="needs the input shape"):
        run("channel-random", context(Tiny(), 0.5, shape=None))
    with pytest.raises(ConfigError, match="unknown scope 'weird'"):
        METHODS.get("l1-filter").build_settings({"scope": "weird"})
    with pytest.raises(ConfigError, match="train_epochs must be a whole number"):
        METHODS.get("l1-filter").build_settings({"train_epochs": -1})


def test_both_methods_declare_a_multiply_add_budget():
    for name in ("channel-random", "l1-filter"):
        spec = METHODS.get(name)
        assert spec.budget_of(spec.build_settings()) == "flops"
        assert spec.build_settings().scope == "layer" and spec.default_init == "kaiming_normal"


# End to end ---------------------------------------------------------------------------------
def prune_randomly(tmp_path, *settings: str):
    """``gemminer prune --method channel-random`` of ResNet-20 at 30 % of the multiply-adds
    on a tiny image folder, with ``settings`` (``--set`` pairs); its run folder."""
    data = tmp_path / "data"
    write_image_folder(data)
    out = tmp_path / "run"
    args = [
        "prune", "--method", "channel-random", *settings, "--model", "resnet20",
        "--dataset", "cifar10", "--no-download", "--batch-size", "16", "--no-progress",
        "--data-dir", str(data), "--density", "0.3", "--epochs", "0", "--no-epoch-eval",
        "--out", str(out),
    ]  # fmt: skip
    assert main(args) == 0
    return out


def test_prune_command_writes_a_multiply_add_budget(tmp_path):
    out = prune_randomly(tmp_path)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["budget"] == "flops" and summary["method"] == "channel-random"
    assert summary["ticket_flops"] / summary["dense_flops"] <= 0.3
    assert summary["ticket_flops"] / summary["dense_flops"] > 0.25
    assert sum(summary["channels_kept"].values()) < sum(summary["channels_total"].values())
    assert (out / "scores.pt").is_file()
    # the score inversion of a channel ticket keeps as many channels, the lowest-scored
    assert main(["sanity", str(out), "--check", "invert-posthoc", "--no-progress"]) == 0
    inverted = json.loads((tmp_path / "run-invert-posthoc" / "summary.json").read_text())
    assert inverted["budget"] == "flops" and inverted["sanity_check"] == "invert-posthoc"
    assert inverted["ticket_flops"] == summary["ticket_flops"]
    source = torch.load(out / "mask.pt", weights_only=True)
    flipped = torch.load(tmp_path / "run-invert-posthoc" / "mask.pt", weights_only=True)
    assert any(not torch.equal(source[k], flipped[k]) for k in source)
    # the shuffle of a channel ticket draws as many channels per set: whole channels, the
    # same multiply-adds (a per-weight shuffle would keep none whole and cost them all)
    assert main(["sanity", str(out), "--check", "shuffle", "--no-progress"]) == 0
    shuffled = json.loads((tmp_path / "run-shuffle" / "summary.json").read_text())
    assert shuffled["ticket_flops"] == summary["ticket_flops"]
    assert shuffled["num_kept"] == summary["num_kept"]
    drawn = torch.load(tmp_path / "run-shuffle" / "mask.pt", weights_only=True)
    assert any(not torch.equal(source[k], drawn[k]) for k in source)


def test_sanity_checks_of_a_ticket_with_whole_streams_keep_the_streams_whole(tmp_path):
    out = prune_randomly(tmp_path, "--set", "streams=whole")
    flops = json.loads((out / "summary.json").read_text())["ticket_flops"]
    for check in ("shuffle", "invert-posthoc"):
        assert main(["sanity", str(out), "--check", check, "--no-progress"]) == 0
        new = tmp_path / f"run-{check}"
        assert json.loads((new / "summary.json").read_text())["ticket_flops"] == flops
        mask = torch.load(new / "mask.pt", weights_only=True)
        assert mask["conv1.weight"].all()  # the stem writes the first stream, kept whole
        for i in (1, 2, 3):  # every stream channel is still written by every block
            assert mask[f"layer{i}.0.conv2.weight"].flatten(1).any(1).all()


@pytest.mark.parametrize("method", ["channel-random", "l1-filter"])
def test_streams_whole_prunes_only_the_blocks_inner_channels(networks, method):
    net, shape, _, _ = networks["resnet20"]
    sets, cost = cost_of(net, shape, streams="whole")
    result = run(method, context(net, 0.25, shape), streams="whole")
    assert_whole_channels(result, sets)
    assert set(result.extra["channels_kept"]) == {s.name for s in sets}
    assert not any(
        name.endswith("conv2") or name == "conv1" for name in result.extra["channels_kept"]
    )
    flops = count_flops(net, shape, result.mask)
    assert flops.ticket <= 0.25 * flops.dense
    assert cost.flops(list(result.extra["channels_kept"].values())) == flops.ticket
    for i in (1, 2, 3):  # every stream channel is still written by every block
        assert result.mask[f"layer{i}.0.conv2.weight"].flatten(1).any(1).all()
    with pytest.raises(ConfigError, match="unknown streams"):
        run(method, context(net, 0.25, shape), streams="some")
