"""Every registered model, tested from the registry; and loading pretrained weights."""

from __future__ import annotations

import pickle
import re
from pathlib import Path

import pytest
import torch
from torch import nn

from gemminer.errors import ConfigError, GemMinerError, RunError
from gemminer.masking.mask import (
    PRUNABLE_TYPES,
    count_prunable,
    prunable_modules,
    prunable_weights,
)
from gemminer.masking.scores import ScoreLayer, to_score_model
from gemminer.models import MODELS, create_model
from gemminer.models.pretrained import load_pretrained, read_state_dict

CIFAR = (3, 32, 32)

#: name → (build options, input shape of one sample, prunable weights with 10 classes).
#: Counts are worked out by hand from the paper's tables (Appendix A.2):
#: - resnet20/32 (Table 5, akamaster's parameter-free option-A shortcuts, Appendix A):
#:   3×3 stem 432 + stages of n blocks (n·4,608; 4,608 + 9,216 + (n − 1)·18,432;
#:   18,432 + 36,864 + (n − 1)·73,728) + 64×10: 268,336 (n = 3), 461,872 (n = 5).
#:   Option-B 1×1 shortcuts would add 16·32 + 32·64 = 2,560 (270,896 / 464,432).
#: - wrn28-2 (Table 5): 432 + stacks 69,632 / 278,528 / 1,114,112 (1×1 shortcuts 512, 2,048,
#:   8,192 included) + 128×10 = 1,463,984.
#: - resnet18 at 64×64 (Table 5, 3×3/2 stem): 1,728 + 147,456 + 524,288 + 2,097,152
#:   + 8,388,608 + 512×10 = 11,164,352.
#: - resnet50 (Table 5, 7×7 stem): torchvision's 23,454,912 convolution weights + 2048×10.
#: - vgg16 (Table 6): 13 convolutions 14,710,464 + 1×1 512×10 classifier = 14,715,584.
#: - mobilenetv2 (Table 7): stem 864; 17 blocks of expansion (c_in·e·c_in), depthwise
#:   (e·c_in·9) and projection (e·c_in·c_out) convolutions, 1,780,320; the 1×1 shortcut
#:   convolutions of the stride-1 blocks that change width (32→16, 16→24, 64→96, 160→320:
#:   58,240; not listed in Table 7 but in the paper's code, kuangliu/pytorch-cifar);
#:   1×1 320→1280 (409,600); linear 1280×10 → 2,261,824 (2,203,584 without shortcuts).
#: - lenet300: 784·300 + 300·100 + 100·10 = 266,200.
#: - conv4: 1,728 + 36,864 + 73,728 + 147,456 + 8192·256 + 256·256 + 256·10 = 2,425,024.
PINNED: dict[str, tuple[dict[str, object], tuple[int, ...], int]] = {
    "resnet20": ({}, CIFAR, 268_336),
    "resnet32": ({}, CIFAR, 461_872),
    "wrn28-2": ({}, CIFAR, 1_463_984),
    "vgg16": ({}, CIFAR, 14_715_584),
    "mobilenetv2": ({}, CIFAR, 2_261_824),
    "resnet18": ({"input_size": 64}, (3, 64, 64), 11_164_352),
    "resnet50": ({"input_size": 64}, (3, 64, 64), 23_475_392),
    "lenet300": ({}, (1, 28, 28), 266_200),
    "conv4": ({}, CIFAR, 2_425_024),
}
AFFINE_CAPABLE = ["resnet18", "resnet50"]
BATCH = 2


def build(name: str, num_classes: int = 10, **extra: object) -> nn.Module:
    options, _, _ = PINNED[name]
    torch.manual_seed(0)
    return create_model(name, num_classes=num_classes, **{**options, **extra})


def batch(name: str) -> torch.Tensor:
    return torch.randn(BATCH, *PINNED[name][1], generator=torch.Generator().manual_seed(1))


@pytest.fixture(params=MODELS.names())
def name(request: pytest.FixtureRequest) -> str:
    if request.param not in PINNED:
        pytest.fail(f"model {request.param!r} is registered but has no pinned count in PINNED")
    return request.param


def test_pins_cover_registry() -> None:
    assert sorted(PINNED) == MODELS.names()


def test_structure_and_count(name: str) -> None:
    model = build(name)
    weights = [m.weight for m in model.modules() if isinstance(m, PRUNABLE_TYPES)]
    assert count_prunable(model) == PINNED[name][2]
    assert count_prunable(model) == sum(w.numel() for w in weights)
    assert len(prunable_modules(model)) == len(weights)
    # No biases, non-affine norms: every parameter is a prunable weight.
    assert [n for n, _ in model.named_parameters() if "bias" in n] == []
    assert sum(p.numel() for p in model.parameters()) == count_prunable(model)
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._NormBase)]
    assert all(not m.affine for m in norms)
    assert all(m.bias is None for m in model.modules() if isinstance(m, PRUNABLE_TYPES))


def test_forward_shape_and_finite(name: str) -> None:
    model = build(name, num_classes=7)
    for mode in (model.train, model.eval):
        mode()
        out = model(batch(name))
        assert out.shape == (BATCH, 7)
        assert torch.isfinite(out).all()


def test_score_model_gradients(name: str) -> None:
    model = to_score_model(build(name), torch.Generator().manual_seed(0))
    layers = [m for m in model.modules() if isinstance(m, ScoreLayer)]
    assert len(layers) == len(prunable_modules(model))
    model(batch(name)).square().mean().backward()
    for layer in layers:
        assert layer.scores.grad is not None
        assert torch.isfinite(layer.scores.grad).all()
    assert all(p.grad is None for n, p in model.named_parameters() if not n.endswith("scores"))


@pytest.mark.parametrize("name", AFFINE_CAPABLE)
def test_affine_bn_option(name: str) -> None:
    model = build(name, affine_bn=True)
    norms = {n for n, m in model.named_modules() if isinstance(m, nn.BatchNorm2d)}
    assert norms and all(m.affine for m in model.modules() if isinstance(m, nn.BatchNorm2d))
    biases = [n for n, _ in model.named_parameters() if "bias" in n]
    assert biases and all(n.rpartition(".")[0] in norms for n in biases)
    assert count_prunable(model) == PINNED[name][2]
    assert torch.isfinite(model(batch(name))).all()


def test_count_scales_with_classes() -> None:
    assert count_prunable(create_model("resnet32", num_classes=100)) == 467_632
    assert count_prunable(create_model("resnet18", num_classes=200, input_size=64)) == 11_261_632


# CIFAR ResNets: shortcut options ------------------------------------------------------


@pytest.mark.parametrize(("name", "a_count", "b_count"), [
    ("resnet20", 268_336, 270_896), ("resnet32", 461_872, 464_432),
])  # fmt: skip
def test_cifar_resnet_shortcut_options(name: str, a_count: int, b_count: int) -> None:
    default, a, b = (create_model(name, **o) for o in ({}, {"shortcut": "A"}, {"shortcut": "B"}))
    assert count_prunable(default) == count_prunable(a) == a_count
    assert count_prunable(b) == b_count == a_count + 16 * 32 + 32 * 64
    # Option B: the two 1×1 convolutions + BatchNorm, prunable; option A: no shortcut layers.
    b_shortcuts = [n for n in prunable_weights(b) if ".shortcut." in n]
    assert b_shortcuts == ["layer2.0.shortcut.0.weight", "layer3.0.shortcut.0.weight"]
    assert not any(".shortcut" in n for n in prunable_weights(a))
    assert not any(".shortcut" in n for n in a.state_dict())
    for x in (torch.randn(2, *CIFAR), torch.randn(2, *CIFAR).to(memory_format=torch.channels_last)):
        assert b(x).shape == a(x).shape == (2, 10)


def test_option_a_shortcut_is_a_parameter_free_subsample_and_zero_pad() -> None:
    model = create_model("resnet20")
    shortcuts = {n: m for n, m in model.named_modules() if n.endswith(".shortcut")}
    padded = {n: m for n, m in shortcuts.items() if not isinstance(m, nn.Identity)}
    assert sorted(padded) == ["layer2.0.shortcut", "layer3.0.shortcut"]
    for m in padded.values():
        assert list(m.parameters()) == [] and list(m.buffers()) == [] and list(m.children()) == []
    x = torch.randn(2, 16, 32, 32, generator=torch.Generator().manual_seed(0))
    for memory_format in (torch.contiguous_format, torch.channels_last):
        out = padded["layer2.0.shortcut"](x.to(memory_format=memory_format))
        assert out.shape == (2, 32, 16, 16)
        # 16 → 32 channels: 8 zero channels on each side (planes // 4, as in akamaster's).
        assert torch.equal(out[:, 8:24], x[:, :, ::2, ::2])
        assert not out[:, :8].any() and not out[:, 24:].any()
        if memory_format == torch.channels_last:
            assert out.is_contiguous(memory_format=torch.channels_last)
    # Odd sizes: the subsample matches the stride-2 3×3 convolution's output (ceil(H / 2)).
    y = torch.randn(1, 32, 7, 7)
    out = padded["layer3.0.shortcut"](y)
    assert out.shape == (1, 64, 4, 4) == model.layer3[0].conv1(y).shape
    assert torch.equal(out[:, 16:48], y[:, :, ::2, ::2]) and out[:, :16].abs().sum() == 0
    # The whole block adds it to the residual branch.
    block = model.layer2[0].eval()
    z = torch.randn(2, 16, 8, 8)
    residual = block.bn2(block.conv2(block.relu(block.bn1(block.conv1(z)))))
    assert torch.allclose(block(z), torch.relu(residual + padded["layer2.0.shortcut"](z)))


@pytest.mark.parametrize("bad", ["C", "a", "", None, 1])
def test_bad_cifar_resnet_shortcut(bad: object) -> None:
    with pytest.raises(ConfigError, match=rf"shortcut {re.escape(repr(bad))}.*valid.*: A, B"):
        create_model("resnet20", shortcut=bad)
    with pytest.raises(ConfigError, match="valid shortcuts: A, B"):
        create_model("resnet32", shortcut=bad)


def test_smart_ratio_sees_the_papers_layer_count() -> None:
    """Smart Ratio's L (its prunable layers): 20 for ResNet-20 (19 convs + 1 linear)."""
    from gemminer.methods.smart_ratio import SmartRatioSettings, smart_ratio_counts

    def num_layers(model: nn.Module) -> int:
        return len(smart_ratio_counts(model, 0.1, SmartRatioSettings()))

    assert num_layers(create_model("resnet20")) == 20
    assert num_layers(create_model("resnet32")) == 32
    assert num_layers(create_model("resnet20", shortcut="B")) == 22


# ImageNet-style ResNets ------------------------------------------------------------------


def test_resnet_stems_follow_input_size() -> None:
    def stem(model: nn.Module) -> tuple:
        c = model.conv1
        return c.kernel_size[0], c.stride[0], c.padding[0], isinstance(model.maxpool, nn.MaxPool2d)

    assert stem(create_model("resnet18", input_size=224)) == (7, 2, 3, True)
    assert stem(create_model("resnet18", input_size=64)) == (3, 2, 1, False)
    assert stem(create_model("resnet18", input_size=32)) == (3, 1, 1, False)
    assert stem(create_model("resnet50", input_size=64)) == (7, 2, 3, True)
    assert stem(create_model("resnet50", input_size=32)) == (3, 1, 1, False)
    assert stem(create_model("resnet18", input_size=64, stem="imagenet")) == (7, 2, 3, True)
    assert count_prunable(create_model("resnet18")) == 11_172_032
    with pytest.raises(ConfigError, match="'huge'.*imagenet, tiny, cifar"):
        create_model("resnet18", stem="huge")
    with pytest.raises(ConfigError, match="input_size"):
        create_model("resnet50", input_size=0)


def test_resnet_uses_torchvision_names() -> None:
    keys = set(create_model("resnet50", num_classes=1000, affine_bn=True).state_dict())
    expected = {
        "conv1.weight", "bn1.weight", "bn1.bias", "bn1.running_mean", "bn1.running_var",
        "bn1.num_batches_tracked", "layer1.0.conv3.weight", "layer1.0.downsample.0.weight",
        "layer1.0.downsample.1.running_var", "layer4.2.bn3.bias", "fc.weight",
    }  # fmt: skip
    assert expected <= keys
    assert not any(k.startswith("layer1.1.downsample") for k in keys)
    # torchvision's resnet50: 320 state-dict entries, fc.bias included; ours has no fc.bias.
    assert len(keys) == 319
    r18 = set(create_model("resnet18").state_dict())
    assert {"layer2.0.downsample.0.weight", "layer4.1.conv2.weight"} <= r18
    assert not any(k.startswith("layer1.0.downsample") or ".conv3." in k for k in r18)


def test_lenet300_flattens_and_checks_features() -> None:
    model = create_model("lenet300", num_classes=3, in_features=12)
    assert model(torch.randn(4, 3, 2, 2)).shape == (4, 3)
    with pytest.raises(GemMinerError, match="12 values per sample, got 784"):
        model(torch.randn(4, 1, 28, 28))


def test_conv4_options() -> None:
    model = create_model("conv4", num_classes=5, in_channels=1, input_size=28)
    assert model(torch.randn(2, 1, 28, 28)).shape == (2, 5)
    with pytest.raises(ConfigError, match="in_channels"):
        create_model("conv4", in_channels=0)


# Pretrained weights --------------------------------------------------------------------


@pytest.fixture(scope="module")
def torchvision_like(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """A random state dict with torchvision's ResNet-50 keys (1000-class head with bias)."""
    torch.manual_seed(0)
    state = create_model("resnet50", num_classes=1000, affine_bn=True).state_dict()
    state = {k: torch.randn(v.shape) if v.is_floating_point() else v for k, v in state.items()}
    state["fc.bias"] = torch.randn(1000)
    path = tmp_path_factory.mktemp("weights") / "resnet50.pth"
    torch.save(state, path)
    return path, state


def test_load_pretrained_copies_all_but_head(torchvision_like: tuple[Path, dict]) -> None:
    path, state = torchvision_like
    model = create_model("resnet50", num_classes=101, affine_bn=True)
    head = model.fc.weight.detach().clone()
    loaded = load_pretrained(model, path)
    mine = model.state_dict()
    assert set(loaded) == set(state) - {"fc.weight", "fc.bias"} == set(mine) - {"fc.weight"}
    assert all(torch.equal(mine[k], state[k]) for k in loaded)
    assert torch.equal(model.fc.weight, head) and model.fc.weight.shape == (101, 2048)


def test_load_pretrained_unwraps_and_tolerates_old_files(
    tmp_path: Path, torchvision_like: tuple[Path, dict]
) -> None:
    _, state = torchvision_like
    old = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}
    path = tmp_path / "wrapped.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in old.items()}, "epoch": 90}, path)
    model = create_model("resnet50", num_classes=101, affine_bn=True)
    loaded = load_pretrained(model, path)
    assert set(loaded) == set(old) - {"fc.weight", "fc.bias"}
    assert torch.equal(model.layer3[5].conv2.weight, state["layer3.5.conv2.weight"])


def test_load_pretrained_errors(tmp_path: Path, torchvision_like: tuple[Path, dict]) -> None:
    _, state = torchvision_like
    bad = dict(state)
    bad["layer2.0.conv1.weight"] = torch.randn(7, 7, 1, 1)
    path = tmp_path / "bad.pth"
    torch.save(bad, path)
    model = create_model("resnet50", num_classes=101, affine_bn=True)
    before = model.conv1.weight.detach().clone()
    with pytest.raises(RunError, match=r"layer2\.0\.conv1\.weight \(file \(7, 7, 1, 1\)"):
        load_pretrained(model, path)
    assert torch.equal(model.conv1.weight, before)  # nothing copied on error
    # The head only fits when skipped.
    with pytest.raises(RunError, match=r"fc\.weight \(file \(1000, 2048\), model \(101, 2048\)"):
        load_pretrained(model, torchvision_like[0], skip=())
    # Affine tensors into a non-affine model: say how to fix it.
    with pytest.raises(RunError, match="affine_bn=True"):
        load_pretrained(create_model("resnet50", num_classes=101), torchvision_like[0])
    # Another architecture: missing and unexpected keys are listed.
    with pytest.raises(RunError, match=r"keys the model lacks: .*layer1\.0\.conv3\.weight"):
        load_pretrained(create_model("resnet18", affine_bn=True), torchvision_like[0])
    # A small-image stem: point to the torchvision one.
    with pytest.raises(RunError, match=r"conv1\.weight \(file \(64, 3, 7, 7\).*stem='imagenet'"):
        load_pretrained(
            create_model("resnet50", num_classes=101, affine_bn=True, input_size=32), path
        )
    # Not a state dict, corrupt, absent.
    torch.save([1, 2, 3], tmp_path / "list.pth")
    with pytest.raises(RunError, match="not a non-empty state dict"):
        load_pretrained(model, tmp_path / "list.pth")
    for junk in (b"\x00not a checkpoint", b"", b"hello world\n", b"PK\x03\x04broken zip"):
        (tmp_path / "junk.pth").write_bytes(junk)
        with pytest.raises(RunError, match=r"cannot read .*junk\.pth.* as a PyTorch state dict"):
            load_pretrained(model, tmp_path / "junk.pth")
    with pytest.raises(RunError, match="does not exist"):
        load_pretrained(model, tmp_path / "absent.pth")


def test_load_pretrained_into_score_model(tmp_path: Path) -> None:
    source = create_model("resnet18", num_classes=1000, affine_bn=True)
    torch.save(source.state_dict(), tmp_path / "r18.pth")
    model = to_score_model(create_model("resnet18", num_classes=5, affine_bn=True))
    scores = model.conv1.scores.detach().clone()
    loaded = load_pretrained(model, tmp_path / "r18.pth")
    assert not any(k.endswith(("scores", "flags")) or k.startswith("fc.") for k in loaded)
    assert torch.equal(model.layer4[1].conv2.weight, source.layer4[1].conv2.weight)
    assert torch.equal(model.conv1.scores, scores)


class _Exploit:
    """Unpickling this would create a marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (open, (str(self.marker), "w"))


@pytest.mark.parametrize("writer", ["torch.save", "pickle"])
def test_load_pretrained_refuses_code(tmp_path: Path, writer: str) -> None:
    marker = tmp_path / "pwned"
    payload = {"conv1.weight": torch.zeros(1), "evil": _Exploit(marker)}
    path = tmp_path / "evil.pth"
    if writer == "torch.save":
        torch.save(payload, path)
    else:  # a bare pickle (protocol 2, which torch's legacy reader parses)
        path.write_bytes(pickle.dumps({"evil": _Exploit(marker)}, protocol=2))
    with pytest.raises(RunError, match=r"refusing to load .*evil\.pth.*would call .*open"):
        read_state_dict(path)
    with pytest.raises(RunError):
        load_pretrained(create_model("resnet18"), path)
    assert not marker.exists()


def test_load_pretrained_safetensors(tmp_path: Path) -> None:
    model = create_model("resnet18", affine_bn=True)
    path = tmp_path / "weights.safetensors"
    try:
        from safetensors.torch import save_file
    except ImportError:
        path.write_bytes(b"{}")
        with pytest.raises(RunError, match="install the 'safetensors' package"):
            load_pretrained(model, path)
        return
    state = {k: torch.randn(v.shape) if v.is_floating_point() else v.clone()
             for k, v in model.state_dict().items()}  # fmt: skip
    save_file(state, str(path))
    loaded = load_pretrained(model, path)
    assert torch.equal(model.layer1[0].conv1.weight, state["layer1.0.conv1.weight"])
    assert "fc.weight" not in loaded
