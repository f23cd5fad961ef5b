import pytest
import torch
from torch import nn

from gemminer import (
    Mask,
    apply_mask,
    count_prunable,
    create_model,
    format_density,
    prunable_weights,
)
from gemminer.errors import MaskError


def test_prunable_weights_found_by_module_type(user_net):
    names = list(prunable_weights(user_net))
    assert names == ["features.0.weight", "features.2.weight", "head.weight"]
    # biases and BatchNorm parameters never count
    assert count_prunable(user_net) == 8 * 3 * 9 + 8 * 8 + 32 * 3


def test_resnet20_counts_first_last_and_shortcut_layers():
    model = create_model("resnet20")  # the paper's parameter-free (option A) shortcuts
    names = list(prunable_weights(model))
    assert names[0] == "conv1.weight" and names[-1] == "fc.weight" and len(names) == 20
    assert not any(".shortcut." in n for n in names)
    assert count_prunable(model) == 268_336
    # no biases, non-affine BatchNorm: every parameter is a prunable weight
    assert sum(p.numel() for p in model.parameters()) == 268_336
    # 1×1 convolution shortcuts (option B) are prunable like every other convolution
    model = create_model("resnet20", shortcut="B")
    names = list(prunable_weights(model))
    assert "layer2.0.shortcut.0.weight" in names and "layer3.0.shortcut.0.weight" in names
    assert count_prunable(model) == 270_896 == sum(p.numel() for p in model.parameters())


def test_mask_density_and_report():
    mask = Mask({"a.weight": torch.tensor([[1, 0], [0, 0]]), "b.weight": torch.ones(4)})
    assert (mask.num_kept, mask.num_total) == (5, 8)
    assert mask.density == pytest.approx(5 / 8)
    rows = mask.layers()
    assert [(r.name, r.kept, r.total) for r in rows] == [("a.weight", 1, 4), ("b.weight", 4, 4)]
    report = mask.report()
    assert "25.00%" in report and "100.00%" in report
    assert "density 62.50 % (37.50 % pruned)" in report


def test_format_density_reports_kept_and_pruned():
    assert format_density(0.0144) == "density 1.44 % (98.56 % pruned)"


@pytest.mark.parametrize(
    "bad", [torch.tensor([0.0, 0.5]), torch.tensor([2, 1]), torch.tensor([float("nan")])]
)
def test_mask_rejects_non_binary_values(bad):
    with pytest.raises(MaskError, match="not binary|non-finite"):
        Mask({"w": bad})


def test_mask_check_rejects_unknown_missing_and_misshapen(user_net):
    good = Mask.ones_like(user_net)
    good.check(user_net)
    entries = dict(good)
    with pytest.raises(MaskError, match="does not prune: nope.weight"):
        Mask({**entries, "nope.weight": torch.ones(1)}).check(user_net)
    missing = dict(entries)
    del missing["head.weight"]
    with pytest.raises(MaskError, match="lacks prunable weights of the model: head.weight"):
        Mask(missing).check(user_net)
    with pytest.raises(MaskError, match="has shape"):
        Mask({**entries, "head.weight": torch.ones(3, 31)}).check(user_net)


def test_apply_mask_zeroes_exactly_the_pruned_weights(user_net):
    mask = Mask({n: torch.rand(w.shape) < 0.3 for n, w in prunable_weights(user_net).items()})
    before = {n: w.detach().clone() for n, w in prunable_weights(user_net).items()}
    apply_mask(user_net, mask)
    for n, w in prunable_weights(user_net).items():
        assert torch.equal(w, before[n] * mask[n])


def test_mask_save_load_round_trip(tmp_path, user_net):
    mask = Mask({n: torch.rand(w.shape) < 0.5 for n, w in prunable_weights(user_net).items()})
    mask.save(tmp_path / "mask.pt")
    loaded = Mask.load(tmp_path / "mask.pt")
    assert list(loaded) == list(mask)
    assert all(torch.equal(loaded[k], mask[k]) for k in mask)


def test_mask_rejects_empty_and_foreign_masks():
    with pytest.raises(MaskError, match="at least one entry"):
        Mask({})
    with pytest.raises(MaskError, match="does not prune: x.weight"):
        Mask({"x.weight": torch.ones(1)}).check(nn.Sequential(nn.Linear(2, 2)))
