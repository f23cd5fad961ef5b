"""Channel sets: which channels can be pruned as a whole, their masks and multiply-adds."""

import pytest
import torch
from torch import nn

from gemminer.errors import MaskError
from gemminer.masking import apply_mask
from gemminer.masking.channels import (
    COLUMNS,
    FEATURES,
    INPUTS,
    ROWS,
    ChannelCost,
    channel_mask,
    channel_sets,
    cost_of,
    keep_lowest_removed,
    live_channels,
)
from gemminer.masking.flops import count_flops, weight_uses
from gemminer.models import create_model, list_models


def shape_of(model: str) -> tuple[int, ...]:
    return (1, 28, 28) if model == "lenet300" else (3, 32, 32)


def random_keep(sets, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    keep = {s.name: torch.rand(s.size, generator=g) < 0.5 for s in sets}
    for kept in keep.values():
        kept[0] = True
    return keep


def test_resnet20_prunes_each_blocks_inner_channels_and_each_stages_stream():
    sets = {s.name: s for s in channel_sets(create_model("resnet20"), (3, 32, 32))}
    inner = [f"layer{i}.{j}.conv1" for i in (1, 2, 3) for j in range(3)]
    assert sorted(sets) == sorted([*inner, "conv1", "layer2.0.conv2", "layer3.0.conv2"])
    assert [sets[n].size for n in inner] == [16] * 3 + [32] * 3 + [64] * 3
    first = sets["layer1.0.conv1"]
    assert [(m.module, m.kind) for m in first.members] == [
        ("layer1.0.conv1", ROWS),
        ("layer1.0.bn1", FEATURES),
        ("layer1.0.conv2", COLUMNS),
    ]
    # the stem's 16 channels run through every stage: the zero-padding shortcuts place
    # stage 1's channel c at c + 8 in stage 2 and at c + 24 in stage 3
    stream = sets["conv1"]
    assert stream.size == 16
    where = {(m.module, m.kind): m.index for m in stream.members}
    assert where[("conv1", ROWS)] == tuple(range(16))
    assert where[("layer1.2.conv2", ROWS)] == tuple(range(16))
    assert where[("layer2.0.conv2", ROWS)] == tuple(range(8, 24))
    assert where[("layer3.2.conv2", ROWS)] == tuple(range(24, 40))
    assert where[("fc", COLUMNS)] == tuple(range(24, 40))
    assert where[("layer2.0.shortcut", INPUTS)] == tuple(range(16))
    # stage 2's new channels (the padding's zeros plus its blocks' outputs), and stage 3's
    assert sets["layer2.0.conv2"].size == 16 and sets["layer3.0.conv2"].size == 32
    stage2 = {(m.module, m.kind): m.index for m in sets["layer2.0.conv2"].members}
    assert stage2[("layer2.0.conv2", ROWS)] == (*range(8), *range(24, 32))


def test_vgg16_prunes_every_convolution_but_the_classifier():
    sets = channel_sets(create_model("vgg16"), (3, 32, 32))
    assert len(sets) == 13
    assert sets[-1].consumer == "classifier"  # through max pool and the global pool


def test_depthwise_convolutions_follow_their_input_channels():
    sets = channel_sets(create_model("mobilenetv2"), (3, 32, 32))
    # every block's expanded channels, the 1×1 convolution to 1280 channels read by the
    # classifier, the stem, and the stream of every stage whose blocks add into it
    names = [s.name for s in sets]
    assert len(sets) == 26 and "conv2" in names and "conv1" in names
    assert {s.name: s for s in sets}["conv2"].consumer == "linear"
    block = {s.name: s for s in sets}["layers.1.conv1"]
    assert [(m.module.split(".")[-1], m.kind) for m in block.members] == [
        ("conv1", ROWS),
        ("bn1", FEATURES),
        ("conv2", ROWS),  # the depthwise convolution
        ("bn2", FEATURES),
        ("conv3", COLUMNS),
    ]


def test_a_flatten_turns_each_channel_into_its_positions_columns():
    sets = {s.name: s for s in channel_sets(create_model("conv4"), (3, 32, 32))}
    last = sets["features.10"]
    assert last.weights(COLUMNS)[0].module == "classifier.0"
    assert last.weights(COLUMNS)[0].repeat == 8 * 8
    assert "classifier.4" not in sets  # the output layer's features are returned


class Shared(nn.Module):
    """conv a's channels feed an add; conv b is used twice; conv c → conv d is a set."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(3, 4, 3, padding=1)
        self.skip = nn.Conv2d(3, 4, 1)
        self.b = nn.Conv2d(4, 4, 3, padding=1)
        self.c = nn.Conv2d(4, 6, 3, padding=1)
        self.d = nn.Conv2d(6, 2, 1)

    def forward(self, x):
        x = torch.relu(self.a(x)) + self.skip(x)
        x = self.b(self.b(x))
        return self.d(torch.relu(self.c(x))).mean((2, 3))


def test_added_reused_and_returned_channels_are_left_whole():
    sets = channel_sets(Shared(), (3, 8, 8))
    assert [s.name for s in sets] == ["c"]


class Untraceable(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)

    def forward(self, x):
        return self.conv(x) if x.sum() > 0 else x


def test_a_model_torch_fx_cannot_trace_is_a_clear_error():
    with pytest.raises(MaskError, match="cannot trace Untraceable"):
        channel_sets(Untraceable(), (3, 8, 8))


@pytest.mark.parametrize("name", list_models())
def test_masks_and_multiply_adds_agree_on_every_model(name):
    model = create_model(name)
    shape = shape_of(name)
    sets, cost = cost_of(model, shape)
    assert sets, f"{name} has no channel sets"
    keep = random_keep(sets)
    mask = channel_mask(model, sets, keep)
    # the dense count, and the kept count of the mask, as the shared FLOP counter says
    assert cost.dense == count_flops(model, shape).dense
    assert cost.of(keep) == count_flops(model, shape, mask).ticket
    live = live_channels(mask, sets)
    assert all(torch.equal(live[s.name], keep[s.name]) for s in sets)


def test_the_mask_zeroes_rows_and_columns_of_dropped_channels_exactly():
    model = create_model("resnet20")
    sets = channel_sets(model, (3, 32, 32))
    sets = [s for s in sets if s.name == "layer1.0.conv1"]
    keep = {sets[0].name: torch.tensor([True] * 15 + [False])}
    mask = channel_mask(model, sets, keep)
    assert not mask["layer1.0.conv1.weight"][15].any()
    assert mask["layer1.0.conv1.weight"][:15].all()
    assert not mask["layer1.0.conv2.weight"][:, 15].any()
    assert mask["layer1.0.conv2.weight"][:, :15].all()
    assert mask.num_total - mask.num_kept == 2 * 16 * 9
    with pytest.raises(MaskError, match="16 channels, got 3"):
        channel_mask(model, sets, {sets[0].name: torch.ones(3, dtype=torch.bool)})


@pytest.mark.parametrize("name", ["resnet20", "mobilenetv2", "conv4"])
def test_a_dropped_channel_cannot_change_the_masked_networks_output(name):
    """Whatever a dropped channel's weights and BatchNorm statistics, its consumer's columns
    are zero, so the output is the same."""
    torch.manual_seed(0)
    model = create_model(name).eval()
    sets = channel_sets(model, shape_of(name))
    keep = random_keep(sets)
    masked = apply_mask(model, channel_mask(model, sets, keep))
    x = torch.randn(2, *shape_of(name))
    before = masked(x)
    modules = dict(masked.named_modules())
    with torch.no_grad():
        for s in sets:
            for m in s.members:
                if m.kind == FEATURES:
                    bn = modules[m.module]
                    dead = m.positions((~keep[s.name]).nonzero().flatten())
                    bn.running_mean[dead] = 3.0  # a dead channel's constant output
                    bn.running_var[dead] = 1e-3
    assert torch.allclose(masked(x), before, atol=1e-5)


def test_keep_lowest_removed_drops_the_fewest_lowest_scored_channels_for_the_budget():
    model = create_model("resnet20")
    sets, cost = cost_of(model, (3, 32, 32))
    g = torch.Generator().manual_seed(1)
    scores = {s.name: torch.rand(s.size, generator=g) for s in sets}
    active = {s.name: torch.ones(s.size, dtype=torch.bool) for s in sets}
    stay = keep_lowest_removed(cost, scores, active, 0.5)
    assert cost.fraction(stay) <= 0.5
    dropped = torch.cat([scores[n][~stay[n]] for n in stay])
    kept = torch.cat([scores[n][stay[n]] for n in stay])
    assert dropped.max() < kept.min()  # globally lowest first
    # one channel fewer dropped (the highest dropped one back) exceeds the budget
    name = max(stay, key=lambda n: scores[n][~stay[n]].max() if (~stay[n]).any() else -1)
    back = dict(stay)
    back[name] = stay[name] | (scores[name] == scores[name][~stay[name]].max())
    assert cost.fraction(back) > 0.5
    floors = {s.name: 2 for s in sets}
    floored = keep_lowest_removed(cost, scores, active, 0.0, floors)
    assert all(int(floored[s.name].sum()) == 2 for s in sets)
    assert cost.floor == pytest.approx(
        cost.flops([1] * len(sets)) / cost.dense
    ) and cost.floor < cost.fraction(floored)


def test_a_channel_saves_its_rows_and_columns_at_the_other_sets_widths():
    model = create_model("resnet20")
    sets, cost = cost_of(model, (3, 32, 32))
    index = {s.name: i for i, s in enumerate(sets)}
    full = [s.size for s in sets]
    saved = cost.saved_per_channel(full)
    # an inner channel: one row of conv1, one column of conv2, 3 × 3 at every position
    assert saved[index["layer1.0.conv1"]] == 2 * 16 * 9 * 32 * 32
    assert saved[index["layer3.0.conv1"]] == 32 * 9 * 8 * 8 + 64 * 9 * 8 * 8
    half = list(full)
    half[index["conv1"]] //= 2  # the first stage's stream: conv1 reads it, conv2 writes it
    assert cost.saved_per_channel(half)[index["layer1.0.conv1"]] == (8 + 8) * 9 * 32 * 32
    empty = list(full)
    empty[0] = 0
    assert cost.saved_per_channel(empty)[0] == 0


def test_ranked_per_multiply_add_equal_scores_drop_the_dearest_channels_first():
    model = create_model("resnet20")
    sets, cost = cost_of(model, (3, 32, 32))
    scores = {s.name: torch.full((s.size,), 0.5) for s in sets}
    active = {s.name: torch.ones(s.size, dtype=torch.bool) for s in sets}
    alike = keep_lowest_removed(cost, scores, active, 0.5)
    dear_first = keep_lowest_removed(cost, scores, active, 0.5, per_flop=True)
    assert cost.fraction(dear_first) <= 0.5
    saved = dict(zip([s.name for s in sets], cost.saved_per_channel([s.size for s in sets])))
    dearest, cheapest = max(saved, key=saved.get), min(saved, key=saved.get)
    assert dearest == "conv1" and cheapest == "layer3.0.conv1"  # the first stage's stream
    assert int(dear_first[dearest].sum()) < int(alike[dearest].sum())
    assert int(dear_first[cheapest].sum()) == 64 > int(alike[cheapest].sum())
    # within a set the scores still decide
    scores[dearest] = torch.linspace(0.4, 0.6, 16)
    stay = keep_lowest_removed(cost, scores, active, 0.5, per_flop=True)
    kept = stay[dearest].nonzero().flatten()
    assert 0 < len(kept) < 16 and torch.equal(kept, torch.arange(16 - len(kept), 16))


def test_tied_scores_thin_every_set_alike_keeping_its_first_channels():
    model = create_model("resnet20")
    sets, cost = cost_of(model, (3, 32, 32))
    scores = {s.name: torch.zeros(s.size) for s in sets}  # all tied, as at the projection's 0
    active = {s.name: torch.ones(s.size, dtype=torch.bool) for s in sets}
    stay = keep_lowest_removed(cost, scores, active, 0.25)
    assert 0.2 < cost.fraction(stay) <= 0.25
    fractions = [float(stay[s.name].float().mean()) for s in sets]
    assert max(fractions) - min(fractions) <= 1 / 16 + 1e-9  # one channel of the smallest
    for s in sets:  # each set keeps its first channels
        kept = int(stay[s.name].sum())
        assert stay[s.name][:kept].all() and not stay[s.name][kept:].any()


def test_cost_counts_rows_columns_and_repeats():
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1, bias=False),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(4 * 5 * 5, 2, bias=False),
    )
    sets = channel_sets(model, (3, 5, 5))
    cost = ChannelCost(model, sets, weight_uses(model, (3, 5, 5)))
    assert cost.flops([4]) == 4 * 27 * 25 + 100 * 2
    assert cost.flops([1]) == 27 * 25 + 25 * 2


def test_streams_whole_leaves_every_added_channel_unpruned():
    net = create_model("resnet20")
    sets, cost = cost_of(net, (3, 32, 32), streams="whole")
    inner = [f"layer{i}.{j}.conv1" for i in (1, 2, 3) for j in range(3)]
    assert [s.name for s in sets] == inner  # no stream set: the stem and conv2s stay whole
    assert {m.module for s in sets for m in s.members} == {
        f"layer{i}.{j}.{part}"
        for i in (1, 2, 3)
        for j in range(3)
        for part in ("conv1", "bn1", "conv2")
    }
    # one channel per block left: the stem, the classifier and every conv's stream side
    _, joined = cost_of(net, (3, 32, 32))
    assert joined.floor < cost.floor < 0.05
    mask = channel_mask(net, sets, {s.name: torch.arange(s.size) < 1 for s in sets})
    assert mask["conv1.weight"].all() and mask["fc.weight"].all()
    assert mask["layer2.0.conv2.weight"].any(dim=(0, 2, 3)).sum() == 1  # reads one channel
    assert mask["layer2.0.conv2.weight"].any(dim=(1, 2, 3)).all()  # writes the whole stream
    with pytest.raises(MaskError, match="streams must be one of"):
        channel_sets(net, (3, 32, 32), streams="none")
    # a plain chain has no additions: both readings agree
    vgg = create_model("vgg16")
    assert channel_sets(vgg, (3, 32, 32), "whole") == channel_sets(vgg, (3, 32, 32))
