"""Compact export (issue 29, 2): a ticket as a narrower dense network, exact, on every
registered model, through a run folder and the command line, and refused when damaged."""

from __future__ import annotations

import copy
import json
import shutil

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from gemminer.cli import main
from gemminer.errors import ConfigError, MaskError, RunError
from gemminer.masking import Mask, apply_mask, count_prunable, prunable_weights
from gemminer.masking.channels import COLUMNS, ROWS, channel_mask, cost_of, live_channels
from gemminer.masking.flops import count_flops
from gemminer.models import create_model, list_models
from gemminer.rundir.compact import compact_model, kept_channels, narrow, parse_input_shape
from gemminer.rundir.export import export_run, load_exported, read_metadata

from .conftest import fails

#: One input's shape per model (the ImageNet ResNets on small images; LeNet on MNIST's).
SHAPES = {"lenet300": (1, 28, 28)}


def input_shape(name: str) -> tuple[int, ...]:
    return SHAPES.get(name, (3, 32, 32))


def randomize_batchnorm(model: nn.Module, seed: int = 0) -> None:
    """Running statistics (and affine parameters) far from 0 and 1: a dropped channel's
    BatchNorm output is then a nonzero constant that only its zero consumer columns cancel."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.running_mean.copy_(torch.randn(m.num_features, generator=g))
                m.running_var.copy_(0.5 + torch.rand(m.num_features, generator=g))
                if m.affine:
                    m.weight.copy_(torch.randn(m.num_features, generator=g))
                    m.bias.copy_(torch.randn(m.num_features, generator=g))


def random_keep(sets, seed: int = 0) -> dict[str, torch.Tensor]:
    """About half the channels of every set, at least one kept and one dropped."""
    g = torch.Generator().manual_seed(seed)
    keep = {}
    for s in sets:
        k = torch.rand(s.size, generator=g) < 0.5
        k[torch.randint(s.size, (1,), generator=g)] = True
        if bool(k.all()):
            k[0] = False
        keep[s.name] = k
    return keep


def outputs(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        return model(x)


def assert_same_outputs(a: torch.Tensor, b: torch.Tensor) -> None:
    scale = float(a.abs().max()) or 1.0
    assert a.shape == b.shape
    assert float((a - b).abs().max()) <= 1e-5 * scale


def masked(model: nn.Module, mask: Mask) -> nn.Module:
    return apply_mask(copy.deepcopy(model), mask).eval()


@pytest.mark.parametrize("name", list_models())
def test_compact_network_computes_the_masked_network_on_every_model(name):
    torch.manual_seed(0)
    shape = input_shape(name)
    model = create_model(name, num_classes=10)
    randomize_batchnorm(model)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    sets, cost = cost_of(model, shape)
    keep = random_keep(sets)
    mask = channel_mask(model, sets, keep)
    compacted = compact_model(model, mask, shape)
    small = compacted.model
    x = torch.randn(2, *shape)
    assert_same_outputs(outputs(masked(model, mask), x), outputs(small, x))
    # the kept channels are those the mask keeps; the model itself is untouched
    assert {n: k.tolist() for n, k in compacted.kept.items()} == {
        n: k.nonzero().flatten().tolist() for n, k in keep.items()
    }
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    # computed densely, the compact network costs what the channel mask keeps
    flops = count_flops(small, shape).dense
    assert flops == count_flops(model, shape, mask).ticket == cost.of(keep) < cost.dense
    assert count_prunable(small) == mask.num_kept
    assert sum(p.numel() for p in small.parameters()) < sum(p.numel() for p in model.parameters())
    # plain torch.nn layers, no masks
    assert all(
        type(m).__module__.startswith(("torch.nn", "gemminer.models")) for m in small.modules()
    )


@pytest.mark.parametrize("name", ["resnet20", "mobilenetv2"])
def test_a_ticket_with_whole_streams_compacts_its_inner_channels_only(name):
    torch.manual_seed(0)
    shape = input_shape(name)
    model = create_model(name, num_classes=10)
    randomize_batchnorm(model)
    sets, cost = cost_of(model, shape, streams="whole")
    keep = random_keep(sets)
    mask = channel_mask(model, sets, keep)
    small = compact_model(model, mask, shape).model
    x = torch.randn(2, *shape)
    assert_same_outputs(outputs(masked(model, mask), x), outputs(small, x))
    assert count_flops(small, shape).dense == cost.of(keep) < cost.dense


class BiasNet(nn.Module):
    """Biases everywhere, affine BatchNorm (2-D and 1-D), a depthwise convolution with a
    bias and a flatten of a 3×3 map before a Linear."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 6, 3, padding=1)
        self.bn = nn.BatchNorm2d(6)
        self.depthwise = nn.Conv2d(6, 6, 3, padding=1, groups=6)
        self.pool = nn.AdaptiveMaxPool2d(3)
        self.fc1 = nn.Linear(54, 10)
        self.bn1 = nn.BatchNorm1d(10)
        self.fc2 = nn.Linear(10, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(torch.relu(self.depthwise(torch.relu(self.bn(self.conv(x))))))
        return self.fc2(torch.relu(self.bn1(self.fc1(x.flatten(1)))))


@pytest.mark.parametrize("net", ["bias", "user"])
def test_biases_affine_batchnorm_and_flattens_of_user_models(net, user_net):
    torch.manual_seed(0)
    model = BiasNet() if net == "bias" else user_net
    shape = (3, 8, 8)
    randomize_batchnorm(model)
    sets, _ = cost_of(model, shape)
    assert {m.repeat for s in sets for m in s.members} == {1, 9 if net == "bias" else 4}
    keep = random_keep(sets, seed=1)
    mask = channel_mask(model, sets, keep)
    small = compact_model(model, mask, shape).model
    x = torch.randn(5, *shape)
    assert_same_outputs(outputs(masked(model, mask), x), outputs(small, x))
    assert count_prunable(small) == mask.num_kept
    if net == "bias":
        k = int(keep["conv"].sum())
        assert small.conv.bias.shape == small.bn.weight.shape == small.depthwise.bias.shape == (k,)
        assert small.depthwise.groups == k and small.fc1.in_features == 9 * k
        assert small.bn1.running_var.shape == (int(keep["fc1"].sum()),)


def test_unread_channels_go_through_the_sets_after_them_and_an_empty_set_keeps_one():
    """An unstructured mask: a channel read only by an unread channel is unread too, and a
    set left with no channel keeps one whose weights and consumer columns are zero."""
    torch.manual_seed(0)
    shape = (3, 32, 32)
    model = create_model("conv4", num_classes=10)
    randomize_batchnorm(model)
    sets, _ = cost_of(model, shape)
    g = torch.Generator().manual_seed(3)
    mask = {n: torch.rand(w.shape, generator=g) < 0.3 for n, w in prunable_weights(model).items()}
    mask["features.3.weight"][:, 5] = False
    mask["features.3.weight"][7, 5] = True  # channel 5 of features.0: only row 7 reads it
    mask["features.7.weight"][:, 7] = False  # channel 7 of features.3: unread
    mask["features.10.weight"][:, :] = False  # set features.7: no channel read
    mask = Mask(mask)
    live = live_channels(mask, sets)
    kept = kept_channels(mask, sets)
    assert bool(live["features.0"][5]) and 5 not in kept["features.0"].tolist()
    assert 7 not in kept["features.3"].tolist()
    assert kept["features.7"].tolist() == [0]
    for s in sets:
        assert set(kept[s.name].tolist()) <= set(live[s.name].nonzero().flatten().tolist()) | {0}
    small = compact_model(model, mask, shape).model
    assert small.features[7].out_channels == 1 and not small.features[7].weight.any()
    assert not small.features[10].weight.any()
    x = torch.randn(3, *shape)
    assert_same_outputs(outputs(masked(model, mask), x), outputs(small, x))


def test_a_random_unstructured_mask_stays_exact_with_inner_zeros_kept():
    """Weights kept at random, and a few channels' consumer columns all zero."""
    torch.manual_seed(0)
    shape = (3, 32, 32)
    model = create_model("resnet20", num_classes=10)
    randomize_batchnorm(model)
    sets, _ = cost_of(model, shape)
    g = torch.Generator().manual_seed(1)
    tensors = {
        n: torch.rand(w.shape, generator=g) < 0.3 for n, w in prunable_weights(model).items()
    }
    inner = [s for s in sets if len(s.weights(COLUMNS)) == 1][::2]  # one reader each
    for s in inner:
        (reader,) = s.weights(COLUMNS)
        unread = torch.randperm(s.size, generator=g)[:3]
        tensors[f"{reader.module}.weight"][:, reader.positions(unread)] = False
    mask = Mask(tensors)
    small = compact_model(model, mask, shape).model
    x = torch.randn(2, *shape)
    assert_same_outputs(outputs(masked(model, mask), x), outputs(small, x))
    assert count_prunable(small) < count_prunable(model)
    kept = sum(int(w.count_nonzero()) for w in prunable_weights(small).values())
    assert kept < 0.35 * count_prunable(small)  # the mask's zeros inside stay zeros
    dropped = 0  # the rows of the unread channels are gone; every other kept weight stays
    for s in inner:
        (reader,) = s.weights(COLUMNS)
        unread = ~mask[f"{reader.module}.weight"].transpose(0, 1)[reader.positions()].flatten(
            1
        ).any(1)
        for rows in s.weights(ROWS):
            dropped += int(
                mask[f"{rows.module}.weight"][rows.positions(unread.nonzero().flatten())].sum()
            )
    assert dropped > 0 and kept == mask.num_kept - dropped


def test_narrow_refuses_indices_that_are_no_channels():
    model = create_model("lenet300", num_classes=10)
    sets, _ = cost_of(model, (1, 28, 28))
    for bad in ([], [3, 1], [1, 1], [300], [-1]):
        with pytest.raises(MaskError, match="kept channels must be ascending"):
            narrow(copy.deepcopy(model), sets, {"fc1": bad})
    with pytest.raises(ConfigError, match="input shape must be positive integers"):
        parse_input_shape("3,0,32")
    assert parse_input_shape("3x32x32") == parse_input_shape([3, 32, 32]) == (3, 32, 32)


# A run folder ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def run_dir(data_dir, tmp_path_factory):
    """A finetuned random ticket of a narrow ResNet-20 on 16×16 images (unstructured)."""
    out = tmp_path_factory.mktemp("compact-runs") / "run"
    args = [
        "prune", "--method", "random", "--model", "resnet20", "--model-arg", "width=4",
        "--dataset", "cifar10", "--no-download", "--data-dir", str(data_dir),
        "--batch-size", "8", "--no-progress", "--density", "0.3", "--epochs", "1",
        "--finetune", "--finetune-epochs", "1", "--out", str(out),
    ]  # fmt: skip
    assert main(args) == 0
    return out


@pytest.fixture(scope="module")
def channel_run(run_dir, tmp_path_factory):
    """The run with a channel mask instead (its weights zeroed where it prunes)."""
    out = tmp_path_factory.mktemp("compact-channel") / "run"
    shutil.copytree(run_dir, out)
    model = create_model("resnet20", num_classes=3, width=4)
    sets, _ = cost_of(model, (3, 16, 16))
    mask = channel_mask(model, sets, random_keep(sets, seed=2))
    torch.save(dict(mask), out / "mask.pt")
    for name in ("finetuned.pt", "ticket.pt"):
        state = torch.load(out / name, weights_only=True)
        torch.save({k: v * mask[k] if k in mask else v for k, v in state.items()}, out / name)
    return out


def reference(run, tmp_path, which="finetuned") -> nn.Module:
    """The masked network of the run, as the ordinary export gives it."""
    return load_exported(export_run(run, tmp_path / f"{which}.safetensors", which).path)


def test_export_compact_command_writes_an_exact_smaller_network(channel_run, tmp_path, capsys):
    assert main(["export", str(channel_run), "--compact"]) == 0
    printed = capsys.readouterr().out
    path = channel_run / "ticket-compact.safetensors"
    assert path.is_file() and str(path) in printed
    assert "compact resnet20: " in printed and "multiply-adds" in printed
    small = load_exported(path)
    assert not small.training and small.class_names == ("cat", "dog", "ship")
    x = torch.randn(4, 3, 16, 16)
    assert_same_outputs(outputs(reference(channel_run, tmp_path), x), outputs(small, x))
    meta = read_metadata(path)
    summary = json.loads((channel_run / "summary.json").read_text())
    assert meta["format"] == "gemminer-compact" and meta["format_version"] == 1
    assert meta["input_shape"] == [3, 16, 16]  # found from the run's dense multiply-adds
    assert meta["dense_flops"] == summary["dense_flops"]
    assert meta["compact_flops"] == meta["ticket_flops"] < meta["dense_flops"]
    assert meta["compact_parameters"] == sum(p.numel() for p in small.parameters())
    assert meta["test_acc"] == summary["post_finetune_acc"] and meta["which"] == "finetuned"
    assert f"{meta['compact_parameters']:,} of {meta['dense_parameters']:,}" in printed
    mask = torch.load(channel_run / "mask.pt", weights_only=True)
    sets = {s.name: s for s in cost_of(create_model("resnet20", 3, width=4), (3, 16, 16))[0]}
    for entry in meta["channels"]:
        first = sets[entry["set"]].weights(ROWS)[0]
        rows = mask[f"{first.module}.weight"].flatten(1).any(1)[first.positions()]
        assert entry["kept"] == rows.nonzero().flatten().tolist()


def test_compact_ticket_variant_and_an_unstructured_run(run_dir, channel_run, tmp_path, capsys):
    assert main(["export", str(channel_run), "--compact", "--ticket"]) == 0
    path = channel_run / "ticket-unfinetuned-compact.safetensors"
    x = torch.randn(4, 3, 16, 16)
    ticket = reference(channel_run, tmp_path, "ticket")
    assert_same_outputs(outputs(ticket, x), outputs(load_exported(path), x))
    assert read_metadata(path)["which"] == "ticket"
    out = tmp_path / "u.safetensors"
    info = export_run(run_dir, out, compact=True, input_shape=(3, 16, 16))
    assert info.path == out and info.compact_parameters <= info.dense_parameters
    assert_same_outputs(outputs(reference(run_dir, tmp_path), x), outputs(load_exported(out), x))


def test_export_compact_input_shape_flag_and_its_mistakes(channel_run, tmp_path, capsys):
    out = tmp_path / "c.safetensors"
    argv = ["export", str(channel_run), "--compact", "--input-shape", "3,16,16", "--out", str(out)]
    assert main(argv) == 0 and read_metadata(out)["input_shape"] == [3, 16, 16]
    capsys.readouterr()
    fails(["export", str(channel_run), "--input-shape", "3,16,16"], capsys, "--compact")
    with pytest.raises(SystemExit):
        main(["export", str(channel_run), "--compact", "--input-shape", "3,0"])
    assert "input shape must be positive integers" in capsys.readouterr().err


def test_a_run_whose_input_size_cannot_be_told_asks_for_it(channel_run, tmp_path):
    old = tmp_path / "old"
    shutil.copytree(channel_run, old)
    data = json.loads((old / "summary.json").read_text())
    assert data.pop("input_shape") == [3, 16, 16]  # recorded since the prune stage knows it
    data["dense_flops"] = None  # a run pruned before either was recorded
    (old / "summary.json").write_text(json.dumps(data))
    with pytest.raises(RunError, match="cannot tell the input size.*--input-shape"):
        export_run(old, compact=True)


# Damaged files --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def compact_file(channel_run, tmp_path_factory):
    out = tmp_path_factory.mktemp("compact-file") / "c.safetensors"
    export_run(channel_run, out, compact=True)
    return out


def _tamper(src, dst, edit) -> None:
    with safe_open(src, framework="pt") as f:
        meta = json.loads(f.metadata()["gemminer"])
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    edit(tensors, meta)
    save_file(tensors, dst, metadata={"gemminer": json.dumps(meta)})


def _kept(edit):
    def apply(tensors, meta):
        entry = meta["channels"][0]
        entry["kept"] = edit(entry["kept"], entry["size"])

    return apply


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (_kept(lambda k, n: k + [n]), "kept channels must be ascending"),
        (_kept(lambda k, n: k[::-1] if len(k) > 1 else [0, 0]), "kept channels must be ascending"),
        (_kept(lambda k, n: []), "kept channels must be ascending"),
        (
            _kept(lambda k, n: sorted(k + [min(set(range(n)) - set(k))])),
            "narrowed resnet20 expects",
        ),
        (_kept(lambda k, n: "all"), "is not {set, size, kept: [indices]}"),
        (lambda t, m: m["channels"][0].update(set="conv9"), "channel set conv9"),
        (lambda t, m: m["channels"][0].update(size=7), "has 4 channels"),
        (lambda t, m: m["channels"].append(m["channels"][0]), "is listed twice"),
        (lambda t, m: m.update(channels=m["channels"][1:]), "the narrowed resnet20 expects"),
        (lambda t, m: m.update(format_version=2), "format version 2"),
        (lambda t, m: m.update(input_shape=[3, 0, 16]), "input_shape must be"),
        (lambda t, m: t.pop("fc.weight"), "tensors missing: fc.weight"),
        (lambda t, m: t.__setitem__("extra", torch.zeros(1)), "unexpected: extra"),
        (lambda t, m: m.update(format="gemminer-other"), "does not declare format"),
    ],
)
def test_damaged_compact_files_are_refused_clearly(compact_file, tmp_path, edit, message):
    bad = tmp_path / "bad.safetensors"
    _tamper(compact_file, bad, edit)
    with pytest.raises(RunError) as info:
        load_exported(bad)
    assert message in str(info.value) and str(bad) in str(info.value)


def test_a_ticket_file_with_a_compact_label_is_refused(channel_run, tmp_path):
    """A file that is not a compact export: an ordinary ticket file relabelled."""
    ticket = export_run(channel_run, tmp_path / "t.safetensors").path
    bad = tmp_path / "bad.safetensors"

    def relabel(tensors, meta):
        meta.update(format="gemminer-compact", input_shape=[3, 16, 16], channels=[])

    _tamper(ticket, bad, relabel)
    with pytest.raises(RunError, match="unexpected: __kept_values__, __mask_bits__"):
        load_exported(bad)
