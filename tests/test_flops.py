"""Forward multiply-adds per image (gemminer.masking.flops), counted by hand on tiny nets,
and recorded in every run summary."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from gemminer.cli import main
from gemminer.masking.flops import count_flops, format_flops, weight_uses
from gemminer.models import create_model
from gemminer.rundir.summary import RunSummary
from tests.conftest import write_image_folder


class TinyNet(nn.Module):
    """3×8×8 input → conv 3×3 (4 ch, pad 1) → conv 3×3 stride 2 (6 ch, no pad) → depthwise
    1×1 (groups 6) → mean pool → linear 6→5 (bias, not counted)."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(3, 4, 3, padding=1, bias=False)
        self.b = nn.Conv2d(4, 6, 3, stride=2, bias=False)
        self.c = nn.Conv2d(6, 6, 1, groups=6, bias=False)
        self.bn = nn.BatchNorm2d(6)
        self.fc = nn.Linear(6, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.bn(self.c(self.b(self.a(x))))
        return self.fc(x.mean((2, 3)))


def test_counts_by_hand():
    net = TinyNet()
    # outputs: a 8×8 (64 positions), b ⌊(8−3)/2⌋+1 = 3 → 3×3 (9), c 3×3 (9), fc once
    assert weight_uses(net, (3, 8, 8)) == {
        "a.weight": 64,
        "b.weight": 9,
        "c.weight": 9,
        "fc.weight": 1,
    }
    dense = 4 * 3 * 9 * 64 + 6 * 4 * 9 * 9 + 6 * 1 * 9 + 6 * 5  # 6912 + 1944 + 54 + 30
    flops = count_flops(net, (3, 8, 8))
    assert flops.dense == flops.ticket == dense == 8940
    mask = {n: torch.zeros_like(p) for n, p in net.named_parameters() if n.endswith("weight")}
    mask["a.weight"].view(-1)[:10] = 1  # 10 kept × 64 positions
    mask["fc.weight"][0, :2] = 1  # 2 kept × once
    del mask["bn.weight"]
    mask["c.weight"][:] = 1  # the depthwise layer dense: 6 × 9
    counted = count_flops(net, (3, 8, 8), mask)
    assert counted.dense == dense
    assert counted.ticket == 10 * 64 + 0 + 6 * 9 + 2
    assert [layer.kept for layer in counted.layers] == [640, 0, 54, 2]
    assert counted.fraction == pytest.approx(696 / 8940)


def test_the_forward_pass_leaves_the_model_as_it_was():
    net = TinyNet().train()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    weight_uses(net, (3, 8, 8))
    assert net.training and not net._forward_hooks and not net.a._forward_hooks
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())  # BN stats too


def test_resnet20_on_cifar10_is_the_known_40_6_million():
    flops = count_flops(create_model("resnet20", num_classes=10), (3, 32, 32))
    assert flops.dense == 40_551_040
    assert format_flops(flops.dense) == "40.6 M"
    assert [format_flops(v) for v in (None, 999, 583_000, 4.09e9)] == [
        "—",
        "999",
        "583 k",
        "4.09 G",
    ]


def test_older_summaries_without_flops_still_read():
    ticket = {"method": "snip", "model": "resnet20", "dataset": "cifar10"}
    old = RunSummary.from_dict(ticket | {"target_density": 0.1, "density": 0.1})
    assert old.dense_flops is None and "dense_flops" not in old.to_dict()
    new = old.updated(dense_flops=100, ticket_flops=7)
    assert RunSummary.from_dict(new.to_dict()) == new


def test_prune_and_sanity_record_dense_and_ticket_flops(tmp_path):
    write_image_folder(tmp_path / "data", n_train=24, n_test=9, size=16)
    out = tmp_path / "run"
    flags = ["--model", "resnet20", "--dataset", "folder", "--data-dir", str(tmp_path / "data")]
    flags += ["--no-download", "--epochs", "0", "--batch-size", "8", "--density", "0.1"]
    assert main(["prune", "--method", "snip", *flags, "--no-progress", "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    # 16×16 images: a quarter of the convolutions' 32×32 count; the head 64 × 3 classes
    assert summary["dense_flops"] == (40_551_040 - 64 * 10) // 4 + 64 * 3
    assert 0 < summary["ticket_flops"] < summary["dense_flops"]
    assert summary["seconds_mask"] >= 0
    assert main(["sanity", str(out), "--check", "shuffle", "--no-progress"]) == 0
    shuffled = json.loads((tmp_path / "run-shuffle" / "summary.json").read_text())
    # shuffling keeps every layer's count, so the same multiply-adds
    assert (shuffled["dense_flops"], shuffled["ticket_flops"]) == (
        summary["dense_flops"],
        summary["ticket_flops"],
    )
