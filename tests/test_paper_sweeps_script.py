"""benchmarks/paper_sweeps.py: the sanity checks as accuracy drops, paired by seed."""

from .conftest import benchmark_script


def _module():
    return benchmark_script("paper_sweeps")


def _row(method, check, seed, acc, status="done", lam=None):
    """A row as results.csv has it (grid values between seed and the figures)."""
    row = {"run": "r", "status": status, "method": method, "check": check}
    row.update(target_density="0.05", density="0.05", seed=str(seed))
    if lam is not None:
        row["lambda"] = lam
    row.update(pre_finetune_acc="0.1", post_finetune_acc="" if acc is None else str(acc))
    return row


def test_sanity_drops_are_paired_by_seed():
    rows = [
        _row("gem-miner", "", 0, 0.60),
        _row("gem-miner", "", 1, 0.50),
        _row("gem-miner", "shuffle", 0, 0.40),
        _row("gem-miner", "shuffle", 1, 0.45),
        _row("gem-miner", "reinit", 2, 0.30),  # no ticket of seed 2: nothing to pair
        _row("prospr", "", 0, 0.40),
        _row("prospr", "shuffle", 0, 0.41),
        _row("prospr", "reinit", 0, None, status="partial"),
    ]
    table = _module().sanity_table(rows).splitlines()
    assert table[2] == (
        "| gem-miner | 5 % | 55.00 ± 7.07 % | shuffle | 42.50 ± 3.54 % | +12.50 | 2 |"
    )
    assert table[3] == "| gem-miner | 5 % | 55.00 ± 7.07 % | reinit | 30.00 % | — | 0 |"
    assert table[4] == "| prospr | 5 % | 40.00 % | shuffle | 41.00 % | -1.00 | 1 |"
    assert len(table) == 5  # the unfinished check is left out


def test_no_finished_check_says_so():
    assert _module().sanity_table([_row("snip", "", 0, 0.3)]) == "No finished sanity check yet."


def test_other_grid_values_are_separate_groups():
    rows = [
        _row("gem-miner", "", 0, 0.60, lam=""),
        _row("gem-miner", "shuffle", 0, 0.50, lam=""),
        _row("gem-miner", "", 0, 0.70, lam="0.0001"),
        _row("gem-miner", "shuffle", 0, 0.40, lam="0.0001"),
        # λ skipped for ProsPr (one value): not named on its rows
        _row("prospr", "", 0, 0.40, lam=""),
        _row("prospr", "shuffle", 0, 0.45, lam=""),
    ]
    table = _module().sanity_table(rows).splitlines()
    assert table[2].startswith("| gem-miner (lambda=default) | 5 % | 60.00 % | shuffle | 50.00 %")
    assert table[3].startswith("| gem-miner (lambda=0.0001) | 5 % | 70.00 % | shuffle | 40.00 %")
    assert "+30.00" in table[3]
    assert table[4] == "| prospr | 5 % | 40.00 % | shuffle | 45.00 % | -5.00 | 1 |"
