"""benchmarks/structured_inference.py: uniform channel masks and run folders, timed and
reported on a tiny setting."""

from __future__ import annotations

import csv

import pytest
import torch

from gemminer.cli import main as gemminer_main
from gemminer.masking.channels import cost_of
from gemminer.models import create_model

from .conftest import benchmark_script


def test_uniform_masks_stay_within_their_target():
    module = benchmark_script("structured_inference")
    sets, cost = cost_of(create_model("resnet20"), (3, 32, 32))
    for target in (0.5, 0.25, 0.1):
        counts = module.uniform_counts(cost, target)
        assert all(1 <= k <= s.size for k, s in zip(counts, sets))
        assert 0.8 * target * cost.dense < cost.flops(counts) <= target * cost.dense
    assert module.uniform_counts(cost, 1e-6) == [1] * len(sets)  # below the floor


def test_the_script_times_dense_and_compact_and_writes_its_report(tmp_path, capsys):
    module = benchmark_script("structured_inference")
    report = tmp_path / "out" / "structured"
    argv = [
        "--models", "resnet20", "--fractions", "0.5", "--batch-sizes", "1", "2",
        "--repeats", "1", "--warmup", "0", "--threads", "1", "--devices", "cpu", "cuda",
        "--profile", "2", "--report", str(report),
    ]  # fmt: skip
    rows = module.main(argv)
    assert [r[:4] for r in rows] == [
        ["resnet20", "50 % target", "cpu", "1"],
        ["resnet20", "50 % target", "cpu", "2"],
    ]
    assert "skipped (no CUDA device): cuda" in capsys.readouterr().out
    text = report.with_suffix(".md").read_text()
    assert "| dense ms | compact ms | speed-up |" in text and "skipped: cuda" in text
    assert "| resnet20 | 50 % target | cpu | 1 |" in text and "of 40.6 M)" in text
    with open(report.with_suffix(".csv"), newline="") as f:
        table = list(csv.reader(f))
    assert table[0] == module.HEADER and len(table) == 3
    assert float(table[1][6]) > 0 and float(table[1][7]) > 0 and table[1][8].endswith("×")
    # the same models with their BatchNorm folded in, timed beside them
    assert table[0][9:12] == ["dense, BN folded ms", "compact, BN folded ms", "speed-up, BN folded"]
    assert float(table[1][9]) > 0 and float(table[1][10]) > 0 and table[1][11].endswith("×")
    assert "`gemminer.fold_batchnorm`" in text
    # multiply-adds a second: the batch's multiply-adds over the BN-folded pass's time
    dense_rate, compact_rate = float(table[2][12]), float(table[2][13])
    assert dense_rate == pytest.approx(2 * 40.6e6 / float(table[2][9]) / 1e6, rel=0.02)
    assert compact_rate == pytest.approx(2 * 20e6 / float(table[2][10]) / 1e6, rel=0.05)
    # --profile: the costliest operators of a batch-1 pass, dense once and the compact one
    section = text.split("## Where a batch-1 pass spends its time")[1]
    lines = [x for x in section.splitlines() if x.startswith("| resnet20 |")]
    assert {x.split(" | ")[1] for x in lines} == {"dense, BN folded", "50 % target, BN folded"}
    assert len(lines) == 8 and any("conv" in x for x in lines)
    shares = [float(x.split(" | ")[5].rstrip(" %|")) for x in lines[:4]]
    assert shares == sorted(shares, reverse=True) and 0 < sum(shares) <= 100.05


class Counted(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        return x


@pytest.mark.parametrize("block, calls", [(1, 2 + 5), (3, 2 + 5 + 2), (10, 2 + 5 + 1)])
def test_models_take_turns_in_blocks_of_timed_passes(block, calls):
    module = benchmark_script("structured_inference")
    models = {"a": Counted(), "b": Counted()}
    ms = module.time_models(models, torch.zeros(1), repeats=5, warmup=2, block=block)
    assert set(ms) == {"a", "b"} and all(v >= 0 for v in ms.values())
    # warm-up, the timed passes, and one untimed pass ahead of each block of several
    assert [m.calls for m in models.values()] == [calls, calls]


def test_block_and_profile_must_be_whole_numbers(tmp_path, capsys):
    module = benchmark_script("structured_inference")
    for flag, value in (("--block", "0"), ("--profile", "-1")):
        with pytest.raises(SystemExit) as exit:
            module.main([flag, value, "--report", str(tmp_path / "r")])
        assert exit.value.code == 2
        assert "--block takes a whole number >= 1" in capsys.readouterr().err


def test_a_folded_network_that_differs_stops_the_script(monkeypatch):
    module = benchmark_script("structured_inference")
    case = module.uniform_cases(["resnet20"], [0.5])[0]
    assert module.check_outputs(case) < 1e-5
    with torch.no_grad():
        case.compact_folded.conv1.bias.add_(1.0)
    with pytest.raises(SystemExit, match="compact folded outputs differ from the dense ones"):
        module.check_outputs(case)


def test_the_script_takes_the_masks_of_run_folders(data_dir, tmp_path):
    run = tmp_path / "run"
    args = [
        "prune", "--method", "random", "--model", "resnet20", "--model-arg", "width=4",
        "--dataset", "cifar10", "--no-download", "--data-dir", str(data_dir),
        "--batch-size", "8", "--no-progress", "--density", "0.3", "--epochs", "1",
        "--finetune", "--finetune-epochs", "1", "--out", str(run),
    ]  # fmt: skip
    assert gemminer_main(args) == 0
    module = benchmark_script("structured_inference")
    report = tmp_path / "r"
    argv = ["--runs", str(run), "--batch-sizes", "1", "--repeats", "1", "--warmup", "0"]
    rows = module.main([*argv, "--threads", "1", "--report", str(report)])
    assert [r[:4] for r in rows] == [["resnet20", "run", "cpu", "1"]]
    assert sorted(p.name for p in run.glob("*.safetensors")) == []  # nothing written there
    assert "finetuned tickets of 1 run folder(s)" in report.with_suffix(".md").read_text()


def test_channels_last_runs_every_network_and_input_in_nhwc(tmp_path):
    module = benchmark_script("structured_inference")
    case = module.uniform_cases(["resnet20"], [0.5])[0]
    case.to_channels_last()
    for model in (case.dense, case.compact, case.dense_folded, case.compact_folded):
        convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
        assert convs and all(
            c.weight.is_contiguous(memory_format=torch.channels_last)
            and not c.weight.is_contiguous()
            for c in convs
            if c.weight.shape[1] * c.weight.shape[2] * c.weight.shape[3] > 1
        )
    x = module.batch_of(2, case.shape, channels_last=True)
    assert x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
    assert module.check_outputs(case) < 1e-5  # the same outputs in the other layout
    report = tmp_path / "cl"
    argv = ["--models", "resnet20", "--fractions", "0.5", "--batch-sizes", "1", "--repeats", "1"]
    rows = module.main([*argv, "--threads", "1", "--channels-last", "--report", str(report)])
    assert len(rows) == 1 and rows[0][8].endswith("×")
    assert "memory format: channels-last (NHWC)" in report.with_suffix(".md").read_text()
