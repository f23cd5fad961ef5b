"""``gemminer report`` on a sweep folder: the paper's printed numbers beside ours, and the
compute each method spent (epochs, forward multiply-adds, seconds)."""

from __future__ import annotations

import pytest

pytest.importorskip("matplotlib")

from gemminer.reports import collect_runs, write_report  # noqa: E402
from gemminer.reports.paper import PAPER_VALUES, paper_values  # noqa: E402
from tests.test_reports import make_run  # noqa: E402

R20 = {"model": "resnet20", "dataset": "cifar10"}
FLOPS = {"dense_flops": 40_551_040, "ticket_flops": 583_935, "seconds_mask": 1520.0}


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    """A finished sweep folder (run folders inside, as `gemminer sweep` writes them)."""
    root = tmp_path_factory.mktemp("sweeps") / "table4"
    gm = {"period": 5, "lam": 1e-4, "regularizer": "l2"}
    for seed, post in ((0, 0.78), (1, 0.80)):
        make_run(root, f"gm-{seed}", "gem-miner", seed=seed, density=0.0144, post=post,
                 settings=gm, summary={**FLOPS, "epochs_to_mask": 150}, **R20)  # fmt: skip
    make_run(root, "long", "gem-miner", density=0.0144, post=0.79,
             settings={**gm, "period": 150}, summary={"epochs_to_mask": 3000}, **R20)  # fmt: skip
    make_run(root, "imp", "imp", density=0.0144, post=0.75, summary={"epochs_to_mask": 2850},
             settings={"rewind": "1000it"}, **R20)  # fmt: skip
    make_run(root, "snip", "snip", density=0.5, post=0.9, **R20)  # no paper number at 50 %
    make_run(root, "gm-0-shuffle", "gem-miner", density=0.0372, post=0.7,
             sanity_check="shuffle", source_run=str(root / "gm-0"), **R20)  # fmt: skip
    (root / "results.csv").write_text("run\n")  # the sweep's own tables are not runs
    return root


@pytest.fixture(scope="module")
def report(sweep, tmp_path_factory):
    return write_report([sweep], tmp_path_factory.mktemp("out")).read_text()


def _rows(text, section):
    body = text.split(f"## {section}\n", 1)[1].split("\n## ", 1)[0]
    return [line for line in body.splitlines() if line.startswith("| ") and "---" not in line]


def test_a_sweep_folder_stands_for_its_run_folders(sweep):
    collection = collect_runs([sweep])
    assert sorted(r.name for r in collection.runs) == [
        "gm-0", "gm-0-shuffle", "gm-1", "imp", "long", "snip"
    ]  # fmt: skip
    assert not collection.skipped


def test_paper_column_beside_ours_where_the_setting_matches(report):
    rows = _rows(report, "Beside the paper")
    text = "\n".join(rows)
    # Gem-Miner at 1.44 %: 79.00 ± 1.41 % ours; the paper prints 77.89 % in Tables 4 and 16
    (gm,) = [r for r in rows if r.startswith("| gem-miner (period=5)") and "after" in r]
    assert "79.00 ± 1.41 %" in gm and "77.89 % (Table 4, Table 16; GM (cold)" in gm
    # Long Gem-Miner (period 150): Table 4's own entry wins over Gem-Miner's
    (long,) = [r for r in rows if r.startswith("| gem-miner (period=150)") and "after" in r]
    assert "79.50 % (Table 4; Long GM" in long and "77.89" not in long
    assert "3,000 (Table 4)" in text  # its epochs
    (imp,) = [r for r in rows if r.startswith("| imp") and "after" in r]
    assert "74.52 % (Table 4" in imp
    assert "2,850 (Table 1)" in text and "3,000 (Table 4)" in text  # IMP's epochs, both tables
    # the shuffled Gem-Miner ticket at 3.72 %: Table 2
    assert any("78.73 % (Table 2)" in r and "shuffle" in r for r in rows)
    assert not any(r.startswith("| snip") for r in rows)


def test_compute_table_names_epochs_flops_and_seconds(report):
    header, *rows = _rows(report, "Compute")
    assert "epochs to find the mask" in header and "seconds to find the mask" in header
    assert "forward multiply-adds per image, dense → ticket" in header
    (gm,) = [r for r in rows if r.startswith("| gem-miner (period=5)")]
    assert "40.6 M → 584 k (1.44 %)" in gm and "1520 s" in gm and "| 150 |" in gm
    (long,) = [r for r in rows if r.startswith("| gem-miner (period=150)")]
    assert "| 3,000 |" in long and "| — |" in long  # no FLOPs in this (older) summary
    assert not any("shuffle" in r for r in rows)  # a sanity check finds no mask of its own


def test_every_paper_value_names_its_source_and_matches_itself():
    for v in PAPER_VALUES:
        assert v.source.startswith(("Table ", "Fig. ")), v
        settings = {k: repr(x).replace("'", '"') for k, x in v.where}
        found = paper_values(v.model, v.dataset, v.method, v.sanity_check, v.density, settings)
        assert v in found[v.figure], v
