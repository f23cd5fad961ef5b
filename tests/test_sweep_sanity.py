"""Sweep files beyond the grid: ``sanity`` checks of finished runs, ``per_method`` flags,
and the runtime options (precision, threads) each point runs with."""

import csv
import json
import shlex

import pytest
import torch
import yaml

from gemminer import cli, stages
from gemminer.errors import ConfigError
from gemminer.sweep import expand, jobs, load_sweep, point_status, shard

from .conftest import write_image_folder
from .test_sweep import FAST, command_config, sweep_main, sweep_of, write_sweep

# -- per_method -------------------------------------------------------------------------


def test_per_method_flags_reach_only_that_methods_points(tmp_path):
    per_method = {"imp": {"epochs": 2, "set": {"rounds": 2}}, "snip": {"set.batches": 3}}
    sweep = sweep_of(
        tmp_path, {"method": ["imp", "snip", "random"], "seed": [0]}, per_method=per_method
    )
    imp, snip, rand = expand(sweep)[0]
    assert imp.config.prune.epochs == 2 and imp.config.settings["rounds"] == 2
    assert snip.config.prune.epochs == 1 and snip.config.settings["batches"] == 3
    assert rand.config.prune.epochs == 1 and "rounds" not in rand.config.settings
    # each point's printed command is the same run
    for point in (imp, snip, rand):
        config, _ = command_config(point.command())
        assert config == point.config


def test_per_method_flags_override_base(tmp_path):
    sweep = sweep_of(
        tmp_path, {"method": ["snip", "random"]}, base={"seed": 3}, per_method={"snip": {"seed": 7}}
    )
    snip, rand = expand(sweep)[0]
    assert (snip.config.seed, rand.config.seed) == (7, 3)


@pytest.mark.parametrize(
    ("top", "message"),
    [
        ({"per_method": {"snipp": {"seed": 1}}}, "per_method.snipp: unknown method 'snipp' (did"),
        ({"per_method": {"snip": {"seed": 1}}}, "per_method.snip: no run of this sweep uses snip"),
        ({"per_method": {"random": {"method": "snip"}}}, "the method is the key, not a flag"),
        ({"per_method": {"random": {"density": 0.5}}}, "density is also a grid key"),
        ({"per_method": {"random": {"batchsize": 8}}}, "did you mean 'batch_size'?"),
        ({"per_method": ["random"]}, "per_method must map method names to flags"),
        ({"sanity": {"random": ["shufle"]}}, "sanity.random: unknown sanity check 'shufle'"),
        ({"sanity": {"random": []}}, "sanity.random: give a list of checks"),
        ({"sanity": {"random": ["reinit", "reinit"]}}, "lists a check twice"),
        ({"sanity": {"random": ["invert"]}}, "the invert check mines again with gem-miner"),
        ({"sanity": {"snip": ["shuffle"]}}, "sanity.snip: no run of this sweep uses snip"),
        ({"sanity": ["shuffle"]}, "sanity must map method names to lists of checks"),
    ],
)
def test_bad_per_method_and_sanity_are_clear_errors(tmp_path, top, message):
    path = write_sweep(
        tmp_path / "bad.yaml",
        {"base": {**FAST}, "grid": {"method": ["random"], "density": [0.1]}, **top},
    )
    with pytest.raises(ConfigError) as err:
        expand(load_sweep(path))
    assert message in str(err.value)


def test_per_method_is_refused_with_a_recipe(tmp_path):
    path = write_sweep(
        tmp_path / "r.yaml",
        {"base": {"recipe": "resnet20-cifar10-d1.44"}, "per_method": {"imp": {"seed": 1}}},
    )
    with pytest.raises(ConfigError, match="a recipe fixes its method"):
        load_sweep(path)


# -- sanity: listing, commands, shards ----------------------------------------------------


def test_sanity_checks_follow_their_run_in_lists_commands_and_shards(tmp_path, capsys):
    grid = {"method": ["random", "snip"], "seed": [0, 1]}
    sweep = sweep_of(tmp_path, grid, finetune=True, sanity={"random": ["shuffle", "reinit"]})
    points, _ = expand(sweep)
    all_jobs = jobs(sweep, points)
    assert [j.folder.name for j in all_jobs] == [
        points[0].folder.name,
        f"{points[0].folder.name}-shuffle",
        f"{points[0].folder.name}-reinit",
        points[1].folder.name,
        f"{points[1].folder.name}-shuffle",
        f"{points[1].folder.name}-reinit",
        points[2].folder.name,
        points[3].folder.name,
    ]
    # a shard takes its points' checks along; shards still partition everything
    parts = [jobs(sweep, shard(points, (i, 2))) for i in range(2)]
    assert sorted(j.folder.name for part in parts for j in part) == sorted(
        j.folder.name for j in all_jobs
    )
    assert [j.folder.name for j in parts[1]][:3] == [j.folder.name for j in all_jobs[3:6]]

    assert sweep_main([str(sweep.path), "--out", str(sweep.out), "--list"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[-1] == "0 done, 0 partial, 8 todo of 8 runs"
    assert "shuffle check of " + points[0].folder.name in out[1]

    assert sweep_main([str(sweep.path), "--out", str(sweep.out), "--commands"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 8
    argv = shlex.split(lines[1])
    assert argv[:6] == [
        "gemminer",
        "sanity",
        str(points[0].folder),
        "--check",
        "shuffle",
        "--finetune",
    ]
    assert argv[-2:] == ["--out", f"{points[0].folder}-shuffle"]
    parsed = cli.build_parser().parse_args(argv[1:])  # a command the CLI takes as it is
    assert (parsed.check, parsed.finetune) == ("shuffle", True)


# -- sanity: running ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def sanity_sweep(tmp_path_factory):
    """Two tiny random-pruning runs, each with its shuffle and reinit checks, finetuned."""
    root = tmp_path_factory.mktemp("sanity-sweep")
    write_image_folder(root / "data")
    data = {
        "base": {
            **FAST,
            "data_dir": str(root / "data"),
            "finetune_epochs": 1,
            "density": 0.3,
            "precision": "fp32",
        },
        "grid": {"method": ["random"], "seed": [0, 1]},
        "sanity": {"random": ["shuffle", "reinit"]},
        "finetune": True,
        "out": str(root / "out"),
    }
    path = write_sweep(root / "tiny.yaml", data)
    assert sweep_main([str(path), "--no-progress"]) == 0
    return load_sweep(path)


def test_sanity_checks_run_finetuned_beside_their_run(sanity_sweep):
    points, _ = expand(sanity_sweep)
    for point in points:
        source_mask = torch.load(point.folder / "mask.pt", weights_only=True)
        source_weights = torch.load(point.folder / "ticket.pt", weights_only=True)
        for check in ("shuffle", "reinit"):
            folder = point.folder.with_name(f"{point.folder.name}-{check}")
            summary = json.loads((folder / "summary.json").read_text())
            assert summary["sanity_check"] == check
            assert summary["source_run"] == str(point.folder)
            assert 0 <= summary["post_finetune_acc"] <= 1
            mask = torch.load(folder / "mask.pt", weights_only=True)
            weights = torch.load(folder / "ticket.pt", weights_only=True)
            same_mask = all(torch.equal(mask[n], source_mask[n]) for n in source_mask)
            same_counts = all(int(mask[n].sum()) == int(source_mask[n].sum()) for n in source_mask)
            same_weights = all(torch.equal(weights[n], source_weights[n]) for n in mask)
            assert same_counts
            if check == "shuffle":  # the mask moves within each layer, the weights stay
                assert not same_mask and same_weights
            else:  # the mask stays, the weights are drawn again
                assert same_mask and not same_weights


def test_sanity_rows_are_tabled_and_a_rerun_runs_nothing(sanity_sweep, monkeypatch, capsys):
    points, _ = expand(sanity_sweep)
    rows = list(csv.DictReader((sanity_sweep.out / "results.csv").open()))
    assert [(r["method"], r["check"], r["status"]) for r in rows] == [
        ("random", "", "done"),
        ("random", "shuffle", "done"),
        ("random", "reinit", "done"),
    ] * 2
    groups = list(csv.DictReader((sanity_sweep.out / "results_grouped.csv").open()))
    assert [(g["method"], g["check"], g["n"]) for g in groups] == [
        ("random", "", "2"),
        ("random", "shuffle", "2"),
        ("random", "reinit", "2"),
    ]
    assert "| random + shuffle | 30 | 2 |" in (sanity_sweep.out / "results.md").read_text()

    calls = []
    for name in ("prune_run", "finetune_run", "sanity_run"):
        real = getattr(stages, name)

        def spy(*args, _real=real, _name=name, **kwargs):
            calls.append(_name)
            return _real(*args, **kwargs)

        monkeypatch.setattr(stages, name, spy)
    assert sweep_main([str(sanity_sweep.path), "--no-progress"]) == 0
    assert calls == [] and "[6/6]" in capsys.readouterr().err

    # a check stopped before its finetuning: only that finetuning runs again
    shuffled = points[1].folder.with_name(f"{points[1].folder.name}-shuffle")
    summary = json.loads((shuffled / "summary.json").read_text())
    (shuffled / "summary.json").write_text(json.dumps({**summary, "post_finetune_acc": None}))
    assert point_status(jobs(sanity_sweep, points)[4], True) == "partial"
    assert sweep_main([str(sanity_sweep.path), "--no-progress"]) == 0
    assert calls == ["sanity_run", "finetune_run"]
    assert json.loads((shuffled / "summary.json").read_text())["post_finetune_acc"] is not None


def test_a_failed_run_skips_its_checks_with_keep_going(sanity_sweep, monkeypatch, tmp_path, capsys):
    data = yaml.safe_load(sanity_sweep.path.read_text())
    data["grid"]["seed"] = [5]
    data["out"] = str(tmp_path / "out")
    path = write_sweep(tmp_path / "fail.yaml", data)

    def broken(cfg, out, **kw):
        raise RuntimeError("out of memory")

    monkeypatch.setattr(stages, "prune_run", broken)
    monkeypatch.setattr(stages, "sanity_run", lambda *a, **k: pytest.fail("ran a check"))
    assert sweep_main([str(path), "--no-progress", "--keep-going"]) == 1
    err = capsys.readouterr().err
    assert err.count("skipped, its run failed") == 2 and "1 runs failed" in err


# -- runtime options ------------------------------------------------------------------------


def test_points_run_with_their_precision_and_threads(tmp_path, monkeypatch):
    seen = []

    def prune_run(cfg, out, *, runtime, **kw):
        seen.append((runtime.precision, torch.get_num_threads()))
        raise RuntimeError("stop here")

    monkeypatch.setattr(stages, "prune_run", prune_run)
    before = torch.get_num_threads()
    grid = {"method": ["random", "snip"]}
    per_method = {"random": {"precision": "bf16"}}
    sweep = sweep_of(tmp_path, grid, base={"threads": 1}, per_method=per_method)
    points, _ = expand(sweep)
    assert [dict(p.runtime) for p in points] == [
        {"precision": "bf16", "threads": 1},
        {"precision": "auto", "threads": 1},
    ]
    # precision and threads do not name the folder: the command line's run
    assert [command_config(p.command())[0] for p in points] == [p.config for p in points]
    assert "--precision bf16 --threads 1" in points[0].command()
    assert sweep_main([str(sweep.path), "--out", str(sweep.out), "--keep-going"]) == 1
    assert seen == [("bf16", 1), ("fp32", 1)]
    assert torch.get_num_threads() == before

    # unset: `auto`, as the printed command (here, as in every test, auto means fp32)
    seen.clear()
    sweep = sweep_of(tmp_path, {"method": ["random"]})
    assert dict(expand(sweep)[0][0].runtime) == {"precision": "auto"}
    assert sweep_main([str(sweep.path), "--out", str(sweep.out), "--keep-going"]) == 1
    assert seen == [("fp32", before)]
