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
    figures,  # noqa: E402
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
        "model": extra.pop("model", "tiny"),
        "dataset": extra.pop("dataset", "toy"),
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
    model: str = "tiny",
    dataset: str = "toy",
    target: float | None = None,
    config: dict | None = None,
    summary: dict | None = None,
) -> Path:
    """A small run folder in the official layout, with numbers chosen by the test.

    ``density`` is the mask's; ``target`` (default: ``density``) the one asked for;
    ``config`` and ``summary`` add to or replace entries of config.json and summary.json.
    """
    path = root / name
    path.mkdir(parents=True)
    target = density if target is None else target
    cfg = _config(
        method,
        seed,
        target,
        settings=settings or {},
        sanity_check=sanity_check,
        model=model,
        dataset=dataset,
    )
    cfg.update(config or {})
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
        if post is not None:  # the best epoch is the first, 2 points above the last
            record["test_acc"] = post + 0.02 if epoch == 1 else post
        lines.append(record)
    (path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    extra_summary = summary or {}
    summary = {
        "method": method,
        "model": model,
        "dataset": dataset,
        "target_density": target,
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
    summary.update(extra_summary)
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
    """The row of the results table starting with ``start`` (the compute table below it
    starts its rows alike)."""
    results = text.split("## Results\n", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in results.splitlines() if line.startswith(f"| {start} |")]
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
    # the best finetuning epoch beside the last (older summaries: read from the metrics)
    assert cells[5] == "54.00 ± 2.83 % (epochs 1, 1, on test)"
    # the rare gem (rounded mask) apart from the finetuned ticket
    assert cells[7] == "52.00 ± 2.83 % / 42.00 ± 2.83 %"
    assert cells[8] == "2"
    assert cells[9] == "3"
    density = sum(json.loads((p / "summary.json").read_text())["density"] for p in runs[:2]) / 2
    assert cells[2] == f"{100 * density:.2f} % ({100 - 100 * density:.2f} % pruned)"
    gem = 0.8 * density
    assert cells[6] == f"{100 * gem:.2f} % ({100 - 100 * gem:.2f} % pruned)"
    # one seed: no ± at all; no rounded mask for other methods; dense has no target
    assert (
        "| dense | — | 100.00 % (0.00 % pruned) | 10.00 % | 70.00 % | 72.00 % (epoch 1, on test) "
        "| — | — | 1 | 0.125 |" in text
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


def test_a_test_set_evaluated_every_few_epochs_is_one_line_through_its_points():
    """--eval-every 5 leaves 4 epochs of 5 without a test accuracy (NaN): the figure joins
    the measured points instead of drawing them as isolated markers."""
    from gemminer.reports.figures import _measured

    nan = float("nan")
    assert _measured([nan, nan, 0.25, nan, 0.5]) == ([3, 5], [25.0, 50.0])
    assert _measured([0.1, 0.2]) == ([1, 2], [10.0, 20.0])
    assert _measured([nan, nan]) == ([], [])


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
    assert format_density(0.011709290650286457, label=False) == "1.17 % (98.83 % pruned)"
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


# legends, curves, seeds, dense and ticks (issue 16, item 15) ----------------------------


@pytest.fixture
def drawn(monkeypatch) -> dict:
    """The figures of a report as they were saved, by file name."""
    figs = {}
    save = figures._save

    def keep(fig, path: Path) -> None:
        save(fig, path)
        figs[path.name] = fig

    monkeypatch.setattr(figures, "_save", keep)
    return figs


def _legend(fig, axes: int = 0) -> list[str]:
    return [t.get_text() for t in fig.axes[axes].get_legend().get_texts()]


def test_legends_name_what_differs_between_the_runs_drawn_shortest_first(tmp_path, drawn):
    def gm(name: str, zeta: int, alpha: str) -> Path:
        # beta_twin always changes with zeta: it tells no series apart and is left out
        setting = {"zeta": zeta, "alpha_long_setting": alpha, "beta_twin": 10 * zeta}
        return make_run(tmp_path, name, "gem-miner", settings=setting)

    paths = [
        gm("a", 1, "a"),
        gm("b", 2, "a"),
        gm("c", 1, "bb"),
        make_run(tmp_path, "snip", "snip"),
        make_run(tmp_path, "snip-5", "snip", settings={"iterations": 5}, post=None),
    ]
    write_report(paths, tmp_path / "out")
    assert set(_legend(drawn["accuracy_vs_density_post.png"])) == {
        "gem-miner (zeta=1, alpha_long_setting=a)",
        "gem-miner (zeta=2, alpha_long_setting=a)",
        "gem-miner (zeta=1, alpha_long_setting=bb)",
        "snip",  # snip-5 has no post-finetune accuracy: not drawn, so not told apart
    }
    pre = _legend(drawn["accuracy_vs_density_pre.png"])
    assert {"snip (iterations=default)", "snip (iterations=5)"} <= set(pre)


def test_runs_of_other_models_or_data_are_never_one_curve(tmp_path, drawn):
    same = {"data_args": {"a": 1, "b": 1, "c": 1}}
    paths = [
        make_run(tmp_path, "gm-tiny", "gem-miner", config=same),
        make_run(tmp_path, "gm-tiny2", "gem-miner", model="tiny2", config=same),
        make_run(tmp_path, "gm-toy2", "gem-miner", dataset="toy2", config=same),
        make_run(tmp_path, "gm-other", "gem-miner", config={"data_args": {"a": 2, "b": 2, "c": 2}}),
        make_run(tmp_path, "snip", "snip"),
    ]
    collection = collect_runs(paths)
    assert len(collection.groups) == 5
    assert len({g.label for g in collection.groups}) == 5
    write_report(paths, tmp_path / "out")
    fig = drawn["accuracy_vs_density_post.png"]
    assert len(fig.axes[0].containers) == 5  # one curve per model, data set and setting
    assert sorted(_legend(fig)) == [
        "gem-miner (model=tiny, dataset=toy, data_args.a=1)",
        "gem-miner (model=tiny, dataset=toy, data_args.a=2)",
        "gem-miner (model=tiny, dataset=toy2, data_args.a=1)",
        "gem-miner (model=tiny2, dataset=toy, data_args.a=1)",
        "snip (model=tiny, dataset=toy)",
    ]


def test_n_counts_distinct_seeds_and_repeats_say_so(tmp_path, drawn):
    paths = [
        make_run(tmp_path, "s0", "gem-miner", seed=0, post=0.50),
        make_run(tmp_path, "s0-again", "gem-miner", seed=0, post=0.52),
        make_run(tmp_path, "s1", "gem-miner", seed=1, post=0.60),
    ]
    (group,) = collect_runs(paths).groups
    assert group.distinct_seeds == [0, 1] and group.repeats == 1
    # a repeated seed is averaged first: n = 2 seeds, 51 % and 60 %
    assert group.post_acc.n == 2
    assert group.post_acc.mean == pytest.approx(0.555)
    assert group.post_acc.std == pytest.approx(0.09 / 2**0.5)
    text = write_report(paths, tmp_path / "out").read_text()
    cells = [c.strip() for c in _row(text, "gem-miner").strip("|").split("|")]
    assert cells[4] == "55.50 ± 6.36 %"
    assert cells[8] == "2 (+1 repeat)"
    assert "(seed 0, repeat)" in text
    assert _legend(drawn["accuracy_vs_density_post.png"]) == ["gem-miner (n=2, +1 repeat)"]


def test_dense_shows_no_target_density(tmp_path):
    paths = [
        make_run(tmp_path, "dense-0", "dense", seed=0, density=1.0, post=0.7),
        make_run(tmp_path, "dense-1", "dense", seed=1, density=1.0, target=0.05, post=0.72),
        make_run(tmp_path, "gm", "gem-miner", density=0.05),
    ]
    groups = collect_runs(paths).groups
    dense = next(g for g in groups if g.method == "dense")
    assert dense.seeds == [0, 1]  # the target a dense run was given changes nothing
    assert not dense.targeted and dense.target_density == 1.0
    text = write_report(paths, tmp_path / "out").read_text()
    assert _row(text, "dense").startswith("| dense | — | 100.00 % (0.00 % pruned) |")
    assert "- dense: `" in text
    assert "target 100.00 %" not in text and "dense, target" not in text


def _tick_texts(axis) -> list[str]:
    """The tick labels shown inside the view (major and minor)."""
    lo, hi = sorted(axis.get_view_interval())
    texts = []
    for locs, fmt in (
        (axis.get_majorticklocs(), axis.get_major_formatter()),
        (axis.get_minorticklocs(), axis.get_minor_formatter()),
    ):
        fmt.set_locs(locs)
        texts += [fmt(v, i) for i, v in enumerate(locs) if lo <= v <= hi]
    return [t for t in texts if t]


@pytest.mark.parametrize("densities", [(0.012, 0.015, 0.018), (0.3, 0.34), (0.05, 0.5)])
def test_density_axis_has_readable_ticks(tmp_path, drawn, densities):
    paths = [
        make_run(tmp_path, f"gm-{d}", "gem-miner", density=d, summary={"density": d})
        for d in densities
    ]
    write_report(paths, tmp_path / "out")
    texts = _tick_texts(drawn["accuracy_vs_density_post.png"].axes[0].xaxis)
    assert len(texts) >= 2, texts
    assert len(set(texts)) == len(texts)
    values = [float(t) for t in texts]
    assert min(values) <= 100 * min(densities) * 1.2 and max(values) >= 100 * max(densities) / 1.2


def test_a_setting_that_follows_the_target_density_does_not_split_a_curve(tmp_path, drawn):
    """The paper's λ per density row: one curve, each table row naming its λ; a grid over λ
    at each density still draws a curve per λ."""
    paths = [
        make_run(tmp_path, "gm-10", "gem-miner", density=0.1, settings={"lam": 3e-5}),
        make_run(tmp_path, "gm-2", "gem-miner", density=0.02, settings={"lam": 1e-4}),
        make_run(tmp_path, "gm-2-s1", "gem-miner", density=0.02, seed=1, settings={"lam": 1e-4}),
        make_run(tmp_path, "snip-10", "snip", density=0.1),
        make_run(tmp_path, "snip-2", "snip", density=0.02),
    ]
    groups = collect_runs(paths).groups
    gm = [g for g in groups if g.method == "gem-miner"]
    assert len({g.series for g in gm}) == 1
    assert sorted(g.label for g in gm) == ["gem-miner (lam=0.0001)", "gem-miner (lam=3e-05)"]
    write_report(paths, tmp_path / "out")
    fig = drawn["accuracy_vs_density_post.png"]
    assert sorted(_legend(fig)) == ["gem-miner (n=2)", "snip"]
    assert len(fig.axes[0].containers) == 2

    grid = [
        *paths[:2],
        make_run(tmp_path, "gm-10-b", "gem-miner", density=0.1, settings={"lam": 1e-4}),
        make_run(tmp_path, "gm-2-b", "gem-miner", density=0.02, settings={"lam": 3e-5}),
    ]
    gm = collect_runs(grid).groups
    assert len({g.series for g in gm}) == 2
    assert sorted({g.label for g in gm}) == ["gem-miner (lam=0.0001)", "gem-miner (lam=3e-05)"]
    write_report(grid, tmp_path / "out-grid")
    assert sorted(_legend(drawn["accuracy_vs_density_post.png"])) == sorted(
        ["gem-miner (lam=0.0001)", "gem-miner (lam=3e-05)"]
    )


def test_small_report_wording():
    """Issue 27, 10: the whole training set reads "full"; a dense run names no target."""
    from gemminer.methods import targets_density
    from gemminer.reports.labels import setting_text

    assert setting_text("train_size", "0") == "train_size=full"
    assert setting_text("train_size", "10000") == "train_size=10000"
    assert not targets_density("dense") and targets_density("gem-miner")
    assert targets_density("a-method-of-an-older-gemminer")


def test_the_layer_density_figure_widens_with_its_legend(tmp_path):
    """Issue 27, 10: long legend labels widen the figure instead of squeezing the plot."""
    from PIL import Image

    short = [make_run(tmp_path / "a", f"r{i}", "snip", seed=i) for i in range(2)]
    long = [
        make_run(tmp_path / "b", f"r{i}", "snip", settings={"a_very_long_setting_name": i * 1e-5})
        for i in range(5)
    ]
    sizes = []
    for runs, out in ((short, tmp_path / "ra"), (long, tmp_path / "rb")):
        write_report(runs, out)
        with Image.open(out / "layer_density.png") as img:
            sizes.append(img.size[0])
    assert sizes[1] > sizes[0]
