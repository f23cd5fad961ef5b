"""``gemminer sweep``: grid expansion, folder names, resuming, commands, shards, tables."""

import argparse
import csv
import dataclasses
import itertools
import json
import shlex
import statistics
from pathlib import Path

import pytest
import yaml

from gemminer import cli, stages
from gemminer.errors import ConfigError
from gemminer.rundir.runs import config_hash
from gemminer.sweep import (
    add_sweep_parser,
    expand,
    load_sweep,
    point_status,
    run_sweep,
    shard,
    write_tables,
)

from .conftest import write_image_folder

REPO = Path(__file__).resolve().parents[1]
#: The fast flags of tests/test_cli.py, as a sweep's base.
FAST = {
    "model": "resnet20",
    "dataset": "cifar10",
    "no_download": True,
    "batch_size": 16,
    "epochs": 1,
    "train_size": 12,
    "no_epoch_eval": True,
}


def sweep_main(argv):
    """``gemminer sweep ARGV`` through the sweep's own parser (as cli.py wires it)."""
    parser = argparse.ArgumentParser(prog="gemminer")
    add_sweep_parser(parser.add_subparsers(dest="command", required=True))
    return run_sweep(parser.parse_args(["sweep", *argv]))


def write_sweep(path, data):
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def sweep_of(tmp_path, grid, base=None, **top):
    data = {"base": {**FAST, "data_dir": str(tmp_path / "data"), **(base or {})}, "grid": grid}
    data.update(top)
    path = write_sweep(tmp_path / "sweep.yaml", data)
    return load_sweep(path, out=tmp_path / "out")


def command_config(line):
    """The RunConfig a printed command line resolves to, through cli.py alone."""
    argv = shlex.split(line)
    assert argv[0] == "gemminer"
    if argv[1] == "run":
        return cli.resolve_run(argv[2:])[1], argv
    return cli.config_from_args(cli.build_parser().parse_args(argv[1:])), argv


# -- expansion ------------------------------------------------------------------------


def test_folder_name_of_a_known_point_is_pinned(tmp_path):
    sweep = sweep_of(tmp_path, {"method": ["snip"], "density": [0.05], "seed": [0]})
    (point,), notes = expand(sweep)
    assert notes == []
    # 7cee881bee under the first defaults; runs of today's defaults are other runs
    assert point.folder == tmp_path / "out" / "snip-resnet20-cifar10-d0.05-9c75b76f4d"
    # the same run as the hand-written `gemminer prune` command
    args = cli.build_parser().parse_args(
        "prune --method snip --model resnet20 --dataset cifar10 --no-download --batch-size 16 "
        "--epochs 1 --train-size 12 --no-epoch-eval --density 0.05 --seed 0".split()
    )
    cfg = dataclasses.replace(cli.config_from_args(args), data_dir=str(tmp_path / "data"))
    assert point.config == cfg
    assert config_hash(point.config) == "9c75b76f4d"
    old = dataclasses.replace(point.config, defaults_version=1)
    assert config_hash(old) == "7cee881bee"


def test_grid_expands_in_file_order_last_key_fastest(tmp_path):
    grid = {"method": ["gem-miner", "snip"], "density": [0.05, 0.1], "seed": [0, 1, 2]}
    sweep = sweep_of(tmp_path, grid)
    points, notes = expand(sweep)
    assert sweep.size == len(points) == 12 and notes == []
    assert [tuple(p.values.values()) for p in points] == list(itertools.product(*grid.values()))
    assert [p.index for p in points] == list(range(12))
    assert len({p.folder for p in points}) == 12
    for p in points:
        assert (p.config.method, p.config.prune.density, p.config.seed) == tuple(p.values.values())
        assert p.folder.name.startswith(
            f"{p.config.method}-resnet20-cifar10-d{p.values['density']:g}-"
        )


def test_method_settings_lambda_and_pair_flags_reach_the_config(tmp_path):
    grid = {"set.rewind_epoch": [0, 1], "lr": [0.1, 1.0e-5], "model_arg.affine_bn": [True]}
    sweep = sweep_of(tmp_path, grid, base={"method": "imp", "set": {"rounds": 1}})
    points, _ = expand(sweep)
    assert [(p.config.settings["rewind_epoch"], p.config.prune.optim.lr) for p in points] == [
        (0, 0.1),
        (0, 1e-5),
        (1, 0.1),
        (1, 1e-5),
    ]
    assert all(p.config.settings["rounds"] == 1 for p in points)
    assert all(p.config.model_args == {"affine_bn": True} for p in points)
    assert "--set rounds=1 --set rewind_epoch=0" in points[0].command()
    # the list form of base.set is the same run
    listed = sweep_of(tmp_path, grid, base={"method": "imp", "set": ["rounds=1"]})
    assert [p.folder for p in expand(listed)[0]] == [p.folder for p in points]
    gm = sweep_of(tmp_path, {"lambda": [0.0, 5.0e-5]}, base={"method": "gem-miner"})
    assert [p.config.settings["lam"] for p in expand(gm)[0]] == [0.0, 5e-5]


def test_points_that_do_not_apply_are_errors_or_skipped(tmp_path):
    grid = {"method": ["gem-miner", "snip"], "lambda": [None, 5.0e-5]}
    with pytest.raises(ConfigError) as err:
        expand(sweep_of(tmp_path, grid))
    message = str(err.value)
    assert "1 of 4 grid points do not apply" in message
    assert "point 4 (method=snip lambda=5.0e-05)" in message
    assert "--lambda only applies to gem-miner, not snip" in message
    assert "skip_invalid: true" in message
    points, notes = expand(sweep_of(tmp_path, grid, skip_invalid=True))
    assert [p.describe() for p in points] == [
        "method=gem-miner lambda=null",
        "method=gem-miner lambda=5.0e-05",
        "method=snip lambda=null",
    ]
    assert [p.index for p in points] == [0, 1, 2]
    assert len(notes) == 1 and notes[0].startswith("skipped point 4")
    settings = {"method": ["imp", "random"], "set.rewind_epoch": [2]}
    points, notes = expand(sweep_of(tmp_path, settings, skip_invalid=True))
    assert [p.config.method for p in points] == ["imp"]
    assert "'random' has no setting rewind_epoch" in notes[0]
    with pytest.raises(ConfigError, match="1 of 1 grid points do not apply"):
        expand(sweep_of(tmp_path, {"method": ["snip"], "period": [2]}, skip_invalid=True))


def test_points_that_are_the_same_run_are_run_once(tmp_path):
    # 0.05 written two ways is one run; so is λ left at its default and set to it
    sweep = sweep_of(tmp_path, {"density": [0.05, "0.050"]}, base={"method": "random"})
    points, notes = expand(sweep)
    assert len(points) == 1 and notes == ["point 2 (density=0.050) is the same run as point 1"]
    # the default: Table 8's λ at the default density 1.44 %, raised for the few images
    first = expand(sweep_of(tmp_path, {"lambda": [None]}, base={"method": "gem-miner"}))[0]
    lam = first[0].config.settings["lam"]
    sweep = sweep_of(tmp_path, {"lambda": [None, lam]}, base={"method": "gem-miner"})
    points, notes = expand(sweep)
    assert len(points) == 1 and notes == [f"point 2 (lambda={lam}) is the same run as point 1"]


def test_recipe_base_resolves_like_gemminer_run(tmp_path):
    data = {
        "base": {"recipe": "resnet20-cifar10-d1.44", "epochs": 2, "data_dir": "d"},
        "grid": {"seed": [0, 1], "set.lam": [1.0e-4, 0.0]},
    }
    sweep = load_sweep(write_sweep(tmp_path / "r.yaml", data), out=tmp_path / "o")
    assert sweep.finetune  # as `gemminer run`
    points, _ = expand(sweep)
    assert len(points) == 4
    expected = cli.resolve_run(
        ["resnet20-cifar10-d1.44", "--epochs", "2", "--data-dir", "d", "--seed", "1"]
    )[1]
    assert points[2].config.settings["lam"] == 1e-4
    assert config_hash(points[2].config) == config_hash(expected)
    for p in points:
        cfg, argv = command_config(p.command())
        assert "--no-finetune" not in argv and config_hash(cfg) in p.folder.name
    sweep = load_sweep(write_sweep(tmp_path / "r.yaml", {**data, "finetune": False}))
    assert all(p.command().split()[-3] == "--no-finetune" for p in expand(sweep)[0])
    recipes = {"grid": {"recipe": ["resnet20-cifar10-d1.44", "resnet20-cifar10-d3.73"]}}
    points, _ = expand(load_sweep(write_sweep(tmp_path / "g.yaml", recipes)))
    assert [p.config.prune.density for p in points] == [0.0144, 0.0373]
    assert points[0].folder.parent == Path("runs/sweeps/g")


def test_shipped_example_expands():
    sweep = load_sweep(REPO / "sweeps" / "compare-resnet20.yaml")
    points, notes = expand(sweep)
    assert len(points) == sweep.size == 16 and notes == []
    assert sweep.finetune and sweep.out == Path("runs/sweeps/compare-resnet20")
    assert {p.config.prune.epochs for p in points} == {10}


# -- errors ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("base: {method: snip}\ngrids: {seed: [0]}\n", "unknown keys grids; valid keys: base,"),
        (
            "base: {method: snip, batchsize: 8}\n",
            "base.batchsize: unknown setting 'batchsize' (did you mean 'batch_size'?); "
            "valid settings: method, set.KEY, model,",
        ),
        ("base: {method: snip}\ngrid: {seed: 3}\n", "grid.seed must be a non-empty list"),
        ("base: {method: snip}\ngrid: {seed: []}\n", "grid.seed must be a non-empty list"),
        ("base: {method: snip}\ngrid: {seed: [0, 0]}\n", "grid.seed lists a value twice"),
        ("base: {method: snip}\ngrid: {seed: [0]}\ngrid: {}\n", "key 'grid' is given twice"),
        ("base: {method: snip\n", "is not valid YAML"),
        ("- just\n- a list\n", "a sweep file is a mapping"),
        ("grid: {seed: [0]}\n", "give the method in base or grid"),
        ("base: {method: snip, seed: 1}\ngrid: {seed: [0]}\n", "seed set in both base and grid"),
        ("base: {method: snip, out: x}\n", "out is no sweep setting (the sweep names each run's"),
        ("base: {method: snip, finetune: true}\n", "use the top-level `finetune: true`"),
        ("base: {method: snip, no_download: 1}\n", "no_download is a switch: true or false"),
        ("base: {method: snip}\ngrid: {set: [batches=1]}\n", "write set values as set.KEY"),
        ("base: {method: snip, seed.x: 1}\n", "seed takes no .KEY"),
        ("base: {method: snip, density: [0.1]}\n", "density must be a single value"),
        ("base: {method: snip}\nfinetune: yes please\n", "finetune must be true or false"),
        ("base: {method: snip}\nout: [a]\n", "out must be a folder path"),
        ("base: {recipe: resnet20-cifar10-d1.44}\ngrid: {method: [snip]}\n", "a recipe fixes"),
        (
            "base: {method: snip}\ngrid: {density: [0.5, 1.5]}\n",
            "point 2 (density=1.5): argument --density: density must lie in (0, 1]",
        ),
        ("base: {method: snip}\ngrid: {set.batchez: [1]}\n", "has no setting batchez"),
        ("base: {method: nope}\n", "unknown method 'nope'"),
    ],
)
def test_bad_sweep_files_are_clear_errors(text, message, tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        expand(load_sweep(path))
    assert message in str(err.value)


def test_missing_file_and_bad_shard_are_clear(tmp_path, capsys):
    with pytest.raises(ConfigError, match="cannot read sweep file .*nowhere.yaml"):
        sweep_main([str(tmp_path / "nowhere.yaml"), "--list"])
    for spec in ("2/2", "1", "a/b", "0/0"):
        with pytest.raises(SystemExit):
            sweep_main([str(tmp_path / "x.yaml"), "--shard", spec])
        assert "--shard takes I/N with 0 <= I < N" in capsys.readouterr().err


# -- shards and commands ----------------------------------------------------------------


def test_shards_partition_the_points(tmp_path):
    points, _ = expand(sweep_of(tmp_path, {"method": ["snip", "random"], "seed": [0, 1, 2, 3]}))
    assert shard(points, None) == points
    for n in (1, 2, 3, 5, 9):
        parts = [shard(points, (i, n)) for i in range(n)]
        assert sorted(p.index for part in parts for p in part) == list(range(8))
        assert all(p.index % n == i for i, part in enumerate(parts) for p in part)
    assert [p.index for p in shard(points, (1, 3))] == [1, 4, 7]


def test_printed_commands_resolve_to_the_same_runs(tmp_path, capsys):
    grid = {"method": ["gem-miner", "imp"], "density": [0.05], "set.rounds": [None, 1]}
    base = {"lr": 1.0e-5, "data_arg": {"skip_bad": True}, "weight_init": "kaiming_normal"}
    sweep = sweep_of(tmp_path, grid, base=base, finetune=True, skip_invalid=True)
    points, _ = expand(sweep)
    assert len(points) == 3
    assert sweep_main([str(sweep.path), "--out", str(sweep.out), "--commands"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3
    for line, point in zip(lines, points):
        cfg, argv = command_config(line)
        assert argv[1] == "prune" and "--finetune" in argv and "--lr" in argv
        assert argv[argv.index("--out") + 1] == str(point.folder)
        assert cfg == point.config and point.folder.name.endswith(config_hash(cfg))
    assert (
        sweep_main([str(sweep.path), "--out", str(sweep.out), "--commands", "--shard", "1/2"]) == 0
    )
    assert capsys.readouterr().out.splitlines() == [lines[1]]


# -- tables ---------------------------------------------------------------------------


def _fake_run(point, pre, post, seconds=10.0):
    point.folder.mkdir(parents=True)
    summary = {
        "method": point.config.method,
        "model": point.config.model,
        "dataset": point.config.dataset,
        "target_density": point.config.prune.density,
        "num_kept": 101,
        "num_prunable": 10_000,
        "density": point.config.prune.density * 1.01,
        "pre_finetune_acc": pre,
        "post_finetune_acc": post,
        "epochs_to_mask": 1.5,
        "seconds": seconds,
    }
    (point.folder / "summary.json").write_text(json.dumps(summary))


def test_tables_give_one_row_per_run_and_mean_std_over_seeds(tmp_path):
    grid = {"method": ["snip", "random"], "lr": [0.1], "seed": [0, 1, 2]}
    sweep = sweep_of(tmp_path, grid, finetune=True)
    points, _ = expand(sweep)
    snip, rand = points[:3], points[3:]
    for p, pre, post in zip(snip, (0.2, 0.3, 0.4), (0.5, 0.7, 0.9)):
        _fake_run(p, pre, post, seconds=10.0 * (p.index + 1))
    _fake_run(rand[0], 0.1, 0.6)
    _fake_run(rand[1], 0.15, None)  # mined, not finetuned: partial
    assert [point_status(p, True) for p in rand] == ["done", "partial", "todo"]
    assert point_status(rand[1], False) == "done"

    paths, markdown = write_tables(sweep, points)
    assert sorted(p.name for p in paths) == ["results.csv", "results.md", "results_grouped.csv"]
    assert not list(sweep.out.glob(".*tmp"))
    rows = list(csv.DictReader((sweep.out / "results.csv").open()))
    assert list(rows[0]) == [
        "run", "status", "method", "target_density", "density", "seed", "lr",
        "pre_finetune_acc", "post_finetune_acc", "epochs_to_mask", "seconds",
    ]  # fmt: skip
    assert [r["run"] for r in rows] == [p.folder.name for p in points]
    assert [r["status"] for r in rows] == ["done"] * 4 + ["partial", "todo"]
    assert (
        rows[1]["seed"] == "1" and rows[1]["lr"] == "0.1" and rows[1]["pre_finetune_acc"] == "0.3"
    )
    assert rows[4]["post_finetune_acc"] == "" and rows[5]["density"] == ""

    groups = list(csv.DictReader((sweep.out / "results_grouped.csv").open()))
    assert [(g["method"], g["n"], g["seeds"]) for g in groups] == [
        ("snip", "3", "0 1 2"),
        ("random", "1", "0"),
    ]
    g = groups[0]
    assert float(g["pre_finetune_acc_mean"]) == pytest.approx(0.3)
    assert float(g["pre_finetune_acc_std"]) == pytest.approx(statistics.stdev([0.2, 0.3, 0.4]))
    assert float(g["post_finetune_acc_mean"]) == pytest.approx(0.7)
    assert float(g["post_finetune_acc_std"]) == pytest.approx(0.2)
    assert float(g["seconds_mean"]) == pytest.approx(20.0)
    assert float(g["density_mean"]) == pytest.approx(0.0144 * 1.01)
    assert groups[1]["post_finetune_acc_std"] == ""  # one finished run: no std
    assert "| snip | 1.44 | 0.1 | 3 | 30.00 ± 10.00 | 70.00 ± 20.00 |" in markdown
    assert "6 runs: 4 done, 1 partial, 1 todo" in markdown
    assert (sweep.out / "results.md").read_text() == markdown


# -- running and resuming ---------------------------------------------------------------


@pytest.fixture(scope="module")
def finished_sweep(tmp_path_factory):
    """Four tiny runs (2 methods × 2 seeds) mined for 1 epoch and finetuned for 1."""
    root = tmp_path_factory.mktemp("sweep")
    write_image_folder(root / "data")
    data = {
        "base": {**FAST, "data_dir": str(root / "data"), "finetune_epochs": 1},
        "grid": {"method": ["gem-miner", "random"], "seed": [0, 1]},
        "finetune": True,
        "out": str(root / "out"),
    }
    path = write_sweep(root / "tiny.yaml", data)
    assert sweep_main([str(path), "--no-progress"]) == 0
    return load_sweep(path)


def test_sweep_runs_every_point_and_writes_tables(finished_sweep, capsys):
    points, _ = expand(finished_sweep)
    assert [point_status(p, True) for p in points] == ["done"] * 4
    for p in points:
        summary = json.loads((p.folder / "summary.json").read_text())
        assert summary["method"] == p.config.method and summary["seed"] == p.config.seed
        assert 0 <= summary["post_finetune_acc"] <= 1
        assert json.loads((p.folder / "config.json").read_text())["train_size"] == 12
    assert (finished_sweep.out / "sweep.yaml").read_text() == finished_sweep.path.read_text()
    table = (finished_sweep.out / "results.md").read_text()
    assert "4 runs: 4 done, 0 partial, 0 todo" in table
    assert sweep_main([str(finished_sweep.path), "--list"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[-1] == "4 done, 0 partial, 0 todo of 4 runs"
    assert [line.split()[:2] for line in out[:-1]] == [["done", str(p.folder)] for p in points]
    assert sweep_main([str(finished_sweep.path), "--commands"]) == 0
    assert capsys.readouterr().out == ""


def test_a_rerun_runs_nothing_and_a_partial_run_resumes(finished_sweep, monkeypatch, capsys):
    calls = []
    real_prune, real_finetune = stages.prune_run, stages.finetune_run

    def prune_run(cfg, out, **kw):
        calls.append(("prune", Path(out).name))
        return real_prune(cfg, out, **kw)

    def finetune_run(out, **kw):
        calls.append(("finetune", Path(out).name))
        return real_finetune(out, **kw)

    monkeypatch.setattr(stages, "prune_run", prune_run)
    monkeypatch.setattr(stages, "finetune_run", finetune_run)
    points, _ = expand(finished_sweep)
    mtimes = {p.folder: (p.folder / "mask.pt").stat().st_mtime_ns for p in points}
    assert sweep_main([str(finished_sweep.path), "--no-progress"]) == 0
    assert calls == []
    assert "[4/4]" in capsys.readouterr().err

    # a sweep stopped between mining and finetuning: only the finetuning is run again
    summary_file = points[2].folder / "summary.json"
    summary = json.loads(summary_file.read_text())
    summary_file.write_text(json.dumps({**summary, "post_finetune_acc": None}))
    assert point_status(points[2], True) == "partial"
    assert sweep_main([str(finished_sweep.path), "--no-progress", "--shard", "0/2"]) == 0
    name = points[2].folder.name
    assert calls == [("prune", name), ("finetune", name)]
    assert point_status(points[2], True) == "done"
    assert {p.folder: (p.folder / "mask.pt").stat().st_mtime_ns for p in points} == mtimes


def test_keep_going_reports_failures(finished_sweep, monkeypatch, tmp_path, capsys):
    data = yaml.safe_load(finished_sweep.path.read_text())
    data["grid"]["seed"] = [5, 6]
    data["out"] = str(tmp_path / "out")
    path = write_sweep(tmp_path / "fail.yaml", data)

    def broken(cfg, out, **kw):
        raise RuntimeError(f"out of memory in {Path(out).name}")

    monkeypatch.setattr(stages, "prune_run", broken)
    with pytest.raises(RuntimeError, match="out of memory"):
        sweep_main([str(path), "--no-progress"])
    assert sweep_main([str(path), "--no-progress", "--keep-going"]) == 1
    err = capsys.readouterr().err
    assert "4 runs failed" in err and err.count("RuntimeError: out of memory") == 4
    assert "0 done, 0 partial, 4 todo" in (tmp_path / "out" / "results.md").read_text()


def test_a_stop_signal_ends_the_sweep_even_with_keep_going(finished_sweep, monkeypatch, tmp_path):
    checkpoint = pytest.importorskip("gemminer.training.checkpoint")
    data = yaml.safe_load(finished_sweep.path.read_text())
    data["grid"]["seed"] = [5, 6]
    data["out"] = str(tmp_path / "out")
    path = write_sweep(tmp_path / "stop.yaml", data)
    calls = []

    def stopped(cfg, out, **kw):
        calls.append(out)
        raise checkpoint.TrainingInterrupted("SIGTERM; checkpointed")

    monkeypatch.setattr(stages, "prune_run", stopped)
    with pytest.raises(checkpoint.TrainingInterrupted):
        sweep_main([str(path), "--no-progress", "--keep-going"])
    assert len(calls) == 1


@pytest.mark.skipif(
    "sweep" not in cli.build_parser().format_help(), reason="gemminer sweep not wired in cli.py"
)
def test_wired_into_gemminer_main(finished_sweep, tmp_path, capsys):
    assert cli.main(["sweep", str(finished_sweep.path), "--list"]) == 0
    assert "4 done" in capsys.readouterr().out
    bad = tmp_path / "bad.yaml"
    bad.write_text("base: {method: snip, batchsize: 8}\n")
    assert cli.main(["sweep", str(bad)]) == 2
    assert "did you mean 'batch_size'" in capsys.readouterr().err
