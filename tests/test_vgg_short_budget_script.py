"""benchmarks/vgg_short_budget.py: λ variants of a short Adam run, mined, reported, resumed."""

import sys

import pytest

from .conftest import benchmark_script, write_image_folder


@pytest.fixture(scope="module")
def cifar_like(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    write_image_folder(root, n_train=24, n_test=9, size=32)  # VGG-16 pools 32 to 1
    return root


def test_each_lambda_is_mined_the_rule_finetuned_and_a_rerun_skips_them(
    cifar_like, tmp_path, monkeypatch
):
    module = benchmark_script("vgg_short_budget")
    report = tmp_path / "report"
    argv = [
        "x", "--data-dir", str(cifar_like), "--epochs", "2", "--train-size", "0",
        "--lambdas", "rule", "1e-6", "--finetune", "rule", "--runs", str(tmp_path / "runs"),
        "--report", str(report), "--notes", "Reading: a note.",
    ]  # fmt: skip
    monkeypatch.setattr(sys, "argv", argv)
    module.main()
    text = report.with_suffix(".md").read_text()
    rows = [line for line in text.splitlines() if line.startswith("| 1e-05 (rule)")]
    assert len(rows) == 1 and "| 2 + 2 |" in rows[0]  # 1e-6 × √(200/2 epochs), finetuned
    given = [line for line in text.splitlines() if line.startswith("| 1e-06 (the row's) | — |")]
    assert len(given) == 1 and "| — |" in given[0] and "--no-finetune" in given[0]
    assert "--lambda 1e-6" in given[0] and "--lambda" not in rows[0]
    assert "| 1 |" in text and "| 2 |" in text  # the per-epoch table
    assert "Reading: a note." in text and "--notes ..." in text
    runs = tmp_path / "runs"
    assert sorted(p.name for p in runs.iterdir()) == ["lam-1e-05", "lam-1e-6"]  # rule: its value
    stamps = {p: p.stat().st_mtime_ns for p in runs.rglob("summary.json")}
    module.main()  # finished runs are skipped: no summary rewritten
    assert {p: p.stat().st_mtime_ns for p in runs.rglob("summary.json")} == stamps
