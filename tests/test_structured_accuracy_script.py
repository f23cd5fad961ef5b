"""benchmarks/structured_accuracy.py: the table pairing each row with a reference row,
seed by seed."""

from __future__ import annotations

import pytest

from .conftest import benchmark_script


def _runs(acc: dict[int, float | None]) -> dict[int, dict]:
    return {seed: {"summary": {"post_finetune_acc": a}} for seed, a in acc.items()}


def test_paired_differences_their_mean_standard_error_and_t():
    common = benchmark_script("_common")
    # mean 1.25 points, sample std 1.7078 → standard error 0.8539, t = 1.46
    assert common.paired([0.02, -0.01, 0.03, 0.01]) == [
        "+2.00, −1.00, +3.00, +1.00",
        "+1.25 ± 0.85",
        "1.46",
    ]
    assert common.paired([0.01]) == ["+1.00", "—", "—"]
    assert common.paired([0.01, 0.01])[2] == "—"  # no spread: no t


def test_rows_pair_only_the_seeds_both_finished_and_skip_the_reference():
    script = benchmark_script("structured_accuracy")
    finished = {
        ("resnet20", 0.25, "channel Gem-Miner"): _runs({0: 0.60, 1: 0.62, 2: None, 3: 0.64}),
        ("resnet20", 0.25, "channel-random"): _runs({0: 0.61, 1: 0.60, 2: 0.70}),
        ("resnet20", 0.5, "channel Gem-Miner"): _runs({0: 0.66}),  # no reference there
    }
    lines = script.paired_section("channel-random", finished)
    rows = [x for x in "\n".join(lines).splitlines() if x.startswith("| resnet20 |")]
    assert rows == [
        "| resnet20 | 25.00 % | channel Gem-Miner | 0, 1 | −1.00, +2.00 | +0.50 ± 1.50 | 0.33 |"
    ]
    assert "Paired by seed against channel-random" in lines[0]
    assert script.paired_section("l1-filter (at init)", finished) == []


def test_a_reference_outside_the_methods_is_refused(monkeypatch, capsys):
    script = benchmark_script("structured_accuracy")
    argv = ["structured_accuracy.py", "--methods", "channel-random", "--paired-against", "x"]
    monkeypatch.setattr("sys.argv", argv)
    with pytest.raises(SystemExit):
        script.main()
    assert "--paired-against 'x' is not among --methods" in capsys.readouterr().err
