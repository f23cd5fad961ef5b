"""``gemminer report``: records, grouping over seeds, figures and the markdown table."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("matplotlib")

from PIL import Image  # noqa: E402

from gemminer.errors import GemMinerError, RunError  # noqa: E402
from gemminer.reports import (  # noqa: E402
    Group,
    Stat,
    add_report_parser,
    collect_runs,
    read_run,
    run_report,
    write_report,
)
from gemminer.reports.figures import FIGURES, MAX_BYTES  # noqa: E402
from gemminer.reports.table import format_accuracy, format_density  # noqa: E402

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
LAYERS = {"conv1.weight": (4, 3, 3, 3), "layer1.conv.weight": (8, 4, 3, 3), "fc.weight": (10, 8)}


def _config(method: str, seed: int, density: float, **extra) -> dict:
    return {
        "model": "tiny",
        "dataset": "toy",
        "data_dir": f"/data/{seed}",  # never part of the grouping
        "seed": seed,
        "device": "cpu",
        "method": method,
        "prune": {"density": density, "epochs": 3, "batch_size": 8, "optim": {"lr": 0.1}},
        "settings": extra.pop("settings", {}),
        "finetune": {"epochs": 2, "batch_size": 8, "optim": {"lr": 0.01}},
        "sanity_check": extra.pop("sanity_check", ""),
        "sanity_seed": 0,
        "eval_each_epoch": True,
        **extra,
    }


def make_run(
    root: Path,
    name: str,
    method: str,
    *,
    seed: int = 0,
    density: float = 0.1,
    pre: float | None = 0.3,
    post: float | None = 0.5,
    settings: dict | None = None,
    sanity_check: str = "",
    source_run: str = "",
    finished: bool = True,
) -> Path:
    """A small run folder in the official layout, with numbers chosen by the test."""
    path = root / name
    path.mkdir(parents=True)
    cfg = _config(method, seed, density, settings=settings or {}, sanity_check=sanity_check)
    (path / "config.json").write_text(json.dumps(cfg))
    if not finished:
        return path
    gen = torch.Generator().manual_seed(seed)
    mask = {k: torch.rand(shape, generator=gen) < density for k, shape in LAYERS.items()}
    mask["fc.weight"][0, 0] = True
    if density < 1:
        mask["layer1.conv.weight"][:] = False  # a fully pruned layer (log axis floor)
    torch.save(mask, path / "mask.pt")
    kept = sum(int(m.sum()) for m in mask.values())
    total = sum(m.numel() for m in mask.values())
    lines = []
    if method == "gem-miner" and not sanity_check:
        for epoch, bound in enumerate((0.6, 0.3, density), 1):
            lines.append(
                {
                    "phase": "mine",
                    "epoch": epoch,
                    "train_acc": 0.1 * epoch,
                    "density": bound * 0.8,
                    "bound": bound,
                    "test_acc": 0.1 * epoch + 0.01,
                }
            )
    for epoch in (1, 2):
        record = {"phase": "finetune", "epoch": epoch, "train_acc": 0.4 + 0.05 * epoch}
        if epoch == 2 and post is not None:
            record["test_acc"] = post
        lines.append(record)
    (path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    summary = {
        "method": method,
        "model": "tiny",
        "dataset": "toy",
        "target_density": density,
        "density": kept / total,
        "num_kept": kept,
        "num_prunable": total,
        "pre_finetune_acc": pre,
        "post_finetune_acc": post,
        "epochs_to_mask": 3 if method == "gem-miner" else 0.125,
        "seed": seed,
    }
    if method == "gem-miner" and not sanity_check and pre is not None:
        # the rounded mask: sparser than the flags, accurate before finetuning
        summary.update(gem_density=0.8 * kept / total, gem_acc=pre + 0.1, gem_acc_running_bn=pre)
    if sanity_check:
        summary.update(sanity_check=sanity_check, source_run=source_run)
    (path / "summary.json").write_text(json.dumps(summary))
    return path


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> list[Path]:
    root = tmp_path_factory.mktemp("runs")
    paths = [
        make_run(root, "gm-s0", "gem-miner", seed=0, pre=0.40, post=0.50),
        make_run(root, "gm-s1", "gem-miner", seed=1, pre=0.44, post=0.54),
        make_run(root, "gm-low", "gem-miner", seed=0, density=0.02, pre=0.2, post=0.3),
        make_run(root, "snip-s0", "snip", seed=0, pre=0.10, post=0.40),
        make_run(root, "snip-s1", "snip", seed=1, pre=0.12, post=0.46),
        make_run(root, "snip-lr", "snip", seed=0, settings={"iterations": 5}, post=0.2),
        make_run(root, "dense", "dense", density=1.0, pre=0.1, post=0.7),
    ]
    paths.append(
        make_run(
            root,
            "gm-s0-shuffle",
            "gem-miner",
            pre=0.1,
            post=0.35,
            sanity_check="shuffle",
            source_run=str(paths[0]),
        )
    )
    paths.append(make_run(root, "still-running", "snip", finished=False))
    return paths


@pytest.fixture(scope="module")
def report(runs, tmp_path_factory) -> Path:
    return write_report(runs, tmp_path_factory.mktemp("report") / "out")


def _row(text: str, start: str) -> str:
    rows = [line for line in text.splitlines() if line.startswith(f"| {start} |")]
    assert len(rows) == 1, rows
    return rows[0]


def test_every_figure_is_a_small_valid_png(report):
    text = report.read_text()
    for spec in FIGURES:
        path = report.parent / spec.file
        assert path.read_bytes()[:8] == PNG_SIGNATURE, spec.file
        assert path.stat().st_size <= MAX_BYTES, spec.file
        with Image.open(path) as img:
            img.verify()
        assert f"]({spec.file})" in text


def test_table_mean_and_sample_std_over_seeds(runs, report):
    text = report.read_text()
    # gem-miner at 10 %: pre 40 / 44 -> 42 ± 2.83, post 50 / 54 -> 52 ± 2.83 (ddof=1)
    row = _row(text, "gem-miner | 10.00 %")
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[1] == "10.00 %"
    assert cells[3] == "42.00 ± 2.83 %"
    assert cells[4] == "52.00 ± 2.83 %"
    # the rare gem (rounded mask) apart from the finetuned ticket
    assert cells[6] == "52.00 ± 2.83 % / 42.00 ± 2.83 %"
    assert cells[7] == "2"
    assert cells[8] == "3"
    density = sum(json.loads((p / "summary.json").read_text())["density"] for p in runs[:2]) / 2
    assert cells[2] == f"{100 * density:.2f} % ({100 - 100 * density:.2f} % pruned)"
    gem = 0.8 * density
    assert cells[5] == f"{100 * gem:.2f} % ({100 - 100 * gem:.2f} % pruned)"
    # one seed: no ± at all; no rounded mask for other methods
    assert (
        "| dense | 100.00 % | 100.00 % (0.00 % pruned) | 10.00 % | 70.00 % | — | — | 1 | 0.125 |"
        in text
    )
    sanity = _row(text, "gem-miner + shuffle")
    assert "35.00 %" in sanity


def test_runs_group_across_seeds_and_split_on_settings(runs):
    collection = collect_runs(runs)
    by = {(g.label, g.target_density): g for g in collection.groups}
    assert by[("gem-miner", 0.1)].seeds == [0, 1]
    assert by[("gem-miner", 0.02)].seeds == [0]
    # a setting apart from the seed splits a method into series named by that setting
    assert by[("snip (iterations=default)", 0.1)].seeds == [0, 1]
    assert by[("snip (iterations=5)", 0.1)].seeds == [0]
    assert by[("gem-miner + shuffle", 0.1)].seeds == [0]
    assert len(collection.groups) == 6
    assert [p.name for p in collection.unfinished] == ["still-running"]
    shuffle = by[("gem-miner + shuffle", 0.1)]
    assert collection.source_group(shuffle) is by[("gem-miner", 0.1)]
    gm = by[("gem-miner", 0.1)]
    assert gm.post_acc.mean == pytest.approx(0.52)
    assert gm.post_acc.std == pytest.approx(0.02828427, rel=1e-6)
    run = gm.runs[0]
    assert [layer.total for layer in run.layers] == [108, 288, 80]
    assert run.layers[1].kept == 0


def test_unfinished_run_is_noted_not_read(report):
    text = report.read_text()
    assert "## Unfinished runs (skipped)" in text
    assert "still-running`: unfinished (no summary.json)" in text


def test_figures_without_data_are_skipped_with_a_note(runs, tmp_path):
    out = tmp_path / "report"
    out.mkdir()
    (out / "sanity_checks.png").write_bytes(b"stale")
    report = write_report([runs[3], runs[4]], out)  # two snip seeds: no sanity, no mining
    text = report.read_text()
    assert "_Skipped: no sanity-check runs given" in text
    assert "_Skipped: no run logged Gem-Miner's mining epochs" in text
    assert not (out / "sanity_checks.png").exists()
    assert not (out / "density_over_epochs.png").exists()
    assert (out / "accuracy_vs_density_post.png").is_file()
    assert "Unfinished" not in text


@pytest.mark.parametrize("kind", ["missing", "file", "not-a-run"])
def test_a_path_that_is_not_a_run_folder_is_named(tmp_path, kind):
    bad = tmp_path / "bad-path"
    if kind == "file":
        bad.write_text("x")
    elif kind == "not-a-run":
        bad.mkdir()
        (bad / "notes.txt").write_text("x")
    with pytest.raises(RunError, match="bad-path"):
        write_report([bad], tmp_path / "out")
    with pytest.raises(GemMinerError, match="bad-path"):
        read_run(bad)


def test_sanity_source_written_relative_to_another_folder(runs):
    # sanity runs store the source folder as typed then; it is matched by the path's tail
    collection = collect_runs([runs[0], runs[7]])
    shuffle = next(g for g in collection.groups if g.sanity_check)
    assert collection.source_group(shuffle).first.path == runs[0]

    def with_source(source: str) -> Group:
        return dataclasses.replace(
            shuffle, runs=(dataclasses.replace(shuffle.first, source_run=source),)
        )

    tail = Path(runs[0].parent.name) / runs[0].name
    assert collection.source_group(with_source(str(tail))).first.path == runs[0]
    assert collection.source_group(with_source(str("elsewhere" / tail))) is None


def test_missing_matplotlib_says_how_to_install(runs, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(GemMinerError, match=r"pip install 'gemminer\[report\]'"):
        write_report(runs[:1], tmp_path / "out")


def test_command_line_parser_and_entry(runs, tmp_path, capsys):
    parser = argparse.ArgumentParser(prog="gemminer")
    add_report_parser(parser.add_subparsers(dest="command"))
    out = tmp_path / "cli"
    args = parser.parse_args(["report", str(runs[0]), str(runs[1]), "--out", str(out)])
    assert args.command == "report"
    assert run_report(args) == 0
    assert (out / "report.md").is_file()
    assert "report.md" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        parser.parse_args(["report", str(runs[0])])  # --out is required


def test_formatting_helpers():
    assert format_density(0.011709290650286457) == "1.17 % (98.83 % pruned)"
    assert format_accuracy(Stat.of([0.5])) == "50.00 %"
    assert format_accuracy(Stat.of([None, None])) == "—"
    assert Stat.of([1.0, 2.0, 3.0]).std == pytest.approx(1.0)


def test_before_finetuning_is_the_rare_gem_for_gem_miner(runs):
    """Pre-finetune figures judge Gem-Miner by its rounded mask, other methods by the ticket."""
    by = {(g.label, g.target_density): g for g in collect_runs(runs).groups}
    gm, dense = by[("gem-miner", 0.1)], by[("dense", 1.0)]
    assert gm.stat("before_acc").mean == pytest.approx(0.52)  # gem_acc = pre + 0.1
    assert gm.stat("before_density").mean == pytest.approx(0.8 * gm.density.mean)
    assert dense.stat("before_acc").mean == dense.pre_acc.mean
    assert dense.stat("gem_acc").mean is None
