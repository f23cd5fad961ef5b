"""benchmarks/layerwise_vs_authors.py: a ticket's layer densities beside the authors' CSV."""

import json
import sys

import pytest
import torch

from .conftest import benchmark_script


def test_layers_are_matched_in_order_and_weighted_by_their_sizes():
    module = benchmark_script("layerwise_vs_authors")
    ours = {"conv1.weight": 0.5, "layer1.0.conv1.weight": 0.1, "fc.weight": 0.25}
    sizes = {"conv1.weight": 100, "layer1.0.conv1.weight": 1000, "fc.weight": 20}
    result = module.compare(ours, sizes, [0.4, 0.12, 0.25])
    assert result["rows"][1] == ["layer1.0.conv1.weight", 1000, "10.00", "12.00", "-2.00"]
    assert result["ours"] == pytest.approx((50 + 100 + 5) / 1120)
    assert result["theirs"] == pytest.approx((40 + 120 + 5) / 1120)
    assert result["max_abs"] == pytest.approx(0.1)
    assert result["stages"] == [["conv1", "50", "40"], ["layer1", "100", "120"], ["fc", "5", "5"]]
    with pytest.raises(SystemExit, match="3 prunable layers, the column 2"):
        module.compare(ours, sizes, [0.4, 0.12])


def test_the_report_reads_the_run_mask_and_the_authors_column(tmp_path, monkeypatch):
    module = benchmark_script("layerwise_vs_authors")
    run = tmp_path / "run"
    run.mkdir()
    torch.save({"conv1.weight": torch.tensor([1.0, 0.0, 0.0, 0.0]), "fc.weight": torch.ones(2)},
               run / "mask.pt")  # fmt: skip
    summary = {"method": "gem-miner", "model": "resnet20", "dataset": "cifar10",
               "target_density": 0.5, "density": 0.5}  # fmt: skip
    (run / "summary.json").write_text(json.dumps(summary))
    authors = tmp_path / "authors.csv"
    authors.write_text("50,1_4\n30.0,25.0\n90.0,100.0\n")
    out = tmp_path / "out.md"
    argv = ["x", "--run", str(run), "--authors-csv", str(authors), "--column", "1_4",
            "--out", str(out)]  # fmt: skip
    monkeypatch.setattr(sys, "argv", argv)
    module.main()
    text = out.read_text()
    assert "Overall density: gemminer 50.0000 %, authors 50.0000 %" in text
    assert "| conv1.weight | 4 | 25.00 | 25.00 | +0.00 |" in text
    assert "| fc.weight | 2 | 100.00 | 100.00 | +0.00 |" in text
    assert "`resnet20_layerwise_sparsity.csv` (their run's flags before finetuning)" in text
    named = [*argv, "--authors-path", "sr/smart_ratio.csv", "--authors-what", "Smart Ratio"]
    monkeypatch.setattr(sys, "argv", named)
    module.main()
    assert "`sr/smart_ratio.csv` (Smart Ratio)" in out.read_text()
    monkeypatch.setattr(sys, "argv", [*argv[:-3], "no-such", "--out", str(out)])
    with pytest.raises(SystemExit, match="has no column 'no-such'"):
        module.main()
