"""benchmarks/paper_budget.py: the headline run's report, finished or not."""

import dataclasses
import json
import shutil
import types

import pytest

from gemminer.cli import build_parser, config_from_args
from gemminer.rundir.runs import RunDir
from gemminer.settings.resolve import resolve

from .conftest import benchmark_script


def _module():
    return benchmark_script("paper_budget")


def _args(module, **rows):
    """The script's runs at bf16, eval every 5 epochs, 2 threads; ``rows`` turns rows on
    (``smart_ratio``, ``dense``, ``their_recipe``, ``their_recipe_144``, ``also``,
    ``candidate``)."""
    args = {"smart_ratio": False, "dense": False, "their_recipe": False, "also": []} | rows
    args.setdefault("their_recipe_144", False)
    args.setdefault("candidate", [])
    return module.argparse.Namespace(
        data_dir="d", precision="bf16", eval_every=5, threads=2, **args
    )


def _folder(path, metrics, **summary):
    path.mkdir()
    (path / "metrics.jsonl").write_text("".join(json.dumps(m) + "\n" for m in metrics))
    if summary:
        (path / "summary.json").write_text(json.dumps(summary))
    return path


def _epoch(phase, epoch, seconds, **figures):
    return {"phase": phase, "epoch": epoch, "train_acc": 0.5, "seconds": seconds, **figures}


def test_a_finished_and_an_unfinished_run_are_reported(tmp_path):
    module = _module()
    times = [(1, 40.0), (2, 3600.0), (3, 50.0)]  # epoch 2 shared the CPU: the median is 50 s
    mined = [_epoch("mine", e, s, density=0.02, bound=0.5) for e, s in times]
    tuned = [_epoch("finetune", e, 30.0, test_acc=0.7) for e in (1, 2)]
    gem = _folder(
        tmp_path / "gm", mined + tuned, density=0.0144, pre_finetune_acc=0.61,
        gem_density=0.0121, gem_acc=0.6, gem_acc_running_bn=0.55, post_finetune_acc=0.7712,
        epochs_finetune=2, precision="bf16",
        seconds=10.0,  # one process's time: not what the report shows
    )  # fmt: skip
    smart = _folder(tmp_path / "sr", [])  # started, nothing finished
    rows = [
        module._row("gem-miner", gem, ["mine", "--density", "0.0144"]),
        module._row("smart-ratio", smart, ["prune", "--method", "smart-ratio"]),
    ]
    report = tmp_path / "results" / "budget"
    module.write_report(rows, [], report, "a CPU (2 threads)", ["resumed twice"])
    lines = (tmp_path / "results" / "budget.md").read_text().splitlines()
    table = [line for line in lines if line.startswith("| ")]
    assert table[1] == (
        "| gem-miner | 3 mining + 2 finetuning | 1.44 % | 61.00 % | 1.21 % | 60.00 % / 55.00 % "
        "| 77.12 % | 70.00 % (epoch 1) | 77.89 % | 1.02 h (50.0 s/epoch) | 0.02 h (30.0 s/epoch) "
        "| bf16 |"
    )
    assert table[2] == "| smart-ratio | 0 mining | — | — | — | — | — | — | 65.61 % | — | — | — |"
    assert "- machine: a CPU (2 threads)" in lines and "- note: resumed twice" in lines
    assert "- gem-miner: `gemminer mine --density 0.0144` → `" + str(gem) + "`" in lines


def test_an_unfinished_run_names_its_last_epoch(tmp_path):
    module = _module()
    folder = _folder(tmp_path / "gm", [_epoch("mine", 1, 40.0, density=0.5, bound=0.9)])
    row = module._row("gem-miner", folder, ["mine"])
    assert row["post"] is None and row["epochs done"] == "1 mining"
    module.write_report([row], [{"method": "gem-miner", **row["last"]}], tmp_path / "r", "cpu", [])
    text = (tmp_path / "r.md").read_text()
    assert '- gem-miner: not finished; last epoch {"phase": "mine", "epoch": 1' in text
    csv = (tmp_path / "r" / "per_epoch.csv").read_text().splitlines()
    assert csv == [
        "method,phase,epoch,loss,train_acc,test_acc,density,bound,lr,seconds,guarded",
        "gem-miner,mine,1,,0.5,,0.5,0.9,,40.0,",
    ]


def test_threads_are_passed_on_without_renaming_the_run_folder():
    module = _module()
    args = _args(module, smart_ratio=True)
    runs = module.commands(args)
    assert runs["gem-miner"][-5:] == ["--threads", "2", "--epochs", "150", "--finetune"]
    as_gm = config_from_args(build_parser().parse_args(runs[module.SR_AS_GM])).finetune
    own = config_from_args(build_parser().parse_args(runs["smart-ratio"]))
    gem_miner = config_from_args(build_parser().parse_args(runs["gem-miner"])).finetune
    assert as_gm == gem_miner  # Table 15's LR 0.01 for 150 epochs, × 0.1 after 80 and 120
    assert (own.finetune.epochs, own.finetune.optim.lr) == (160, 0.1)  # the authors' SR config
    assert own.weight_init == "kaiming_normal_fan_half"
    unthreaded = module.commands(module.argparse.Namespace(**{**vars(args), "threads": 0}))
    assert "--threads" not in unthreaded["gem-miner"]
    assert module.run_folder(runs["gem-miner"]) == module.run_folder(unthreaded["gem-miner"])


def test_finetuning_in_progress_is_read_from_its_checkpoint(tmp_path):
    """Finetuning's epochs reach metrics.jsonl when it ends; before, the report reads them
    from checkpoint-finetune.pt."""
    import torch

    module = _module()
    mined = [_epoch("mine", 1, 40.0, density=0.0144, bound=0.0144)]
    folder = _folder(tmp_path / "gm", mined, density=0.0144, epochs_finetune=0)
    row = module._row("gem-miner", folder, ["mine"])
    assert row["epochs done"] == "1 mining"  # no config, nothing finetuned yet
    RunDir(folder).write_config(resolve({"density": 0.0144, "epochs": 150}))
    history = [_epoch("finetune", e, 44.0, test_acc=0.6) for e in (1, 2, 3)]
    torch.save({"version": 1, "history": history}, folder / "checkpoint-finetune.pt")
    row = module._row("gem-miner", folder, ["mine"])
    assert row["epochs done"] == "1 mining + 3 finetuning of 150"
    assert row["finetuning time"] == "0.04 h (44.0 s/epoch)"
    assert row["last"]["phase"] == "finetune" and row["last"]["epoch"] == 3
    assert [r["phase"] for r in row["records"]] == ["mine", "finetune", "finetune", "finetune"]


def test_long_notes_are_elided_from_the_printed_command(monkeypatch):
    common = benchmark_script("_common")
    argv = ["benchmarks/paper_budget.py", "--report-only", "--note", "a long story", "--x", "y"]
    monkeypatch.setattr(common.sys, "argv", argv)
    assert common.command_line(elide=("--note",)) == (
        "python benchmarks/paper_budget.py --report-only --note ... --x y"
    )


def test_notes_already_in_the_report_can_be_kept(tmp_path):
    module = _module()
    report = tmp_path / "budget"
    assert module.kept_notes(report) == []
    module.write_report([], [], report, "cpu", ["first: a, b", "second"])
    assert module.kept_notes(report) == ["first: a, b", "second"]


def _reported(module, tmp_path):
    """A report with a finished Gem-Miner run (two epochs) and an unfinished Smart Ratio."""
    gem = _folder(
        tmp_path / "gm", [_epoch("mine", 1, 40.0, density=0.1, bound=0.2),
                          _epoch("finetune", 1, 30.0, test_acc=0.7)],
        density=0.0144, pre_finetune_acc=0.61, post_finetune_acc=0.7299, precision="bf16",
    )  # fmt: skip
    smart = _folder(tmp_path / "sr", [_epoch("finetune", 1, 50.0)])
    rows = [
        module._row("gem-miner", gem, ["mine", "--density", "0.0144"]),
        module._row("smart-ratio", smart, ["prune", "--method", "smart-ratio"]),
    ]
    per_epoch = [{"method": r["method"], **e} for r in rows for e in r["records"]]
    report = tmp_path / "results" / "budget"
    module.write_report(rows, per_epoch, report, "cpu", ["a note"])
    return report, rows


def test_a_new_checkout_keeps_the_rows_of_runs_whose_folders_are_gone(tmp_path):
    """Run folders are ignored by git: a finished run reported by an earlier checkout keeps
    its row, records and figures instead of running again."""
    module = _module()
    report, rows = _reported(module, tmp_path)
    table = (tmp_path / "results" / "budget.md").read_text()
    records = (report / "per_epoch.csv").read_text()
    committed = module.committed_rows(report)
    assert sorted(committed) == [str(tmp_path / "gm"), str(tmp_path / "sr")]
    kept = committed[str(tmp_path / "gm")]
    assert kept["kept"] and kept["post"] == "72.99 %" and kept["command"] == rows[0]["command"]
    assert kept["cells"] == module.table_cells(rows[0])
    assert [r["phase"] for r in kept["records"]] == ["mine", "finetune"]
    assert committed[str(tmp_path / "sr")]["post"] is None  # unfinished: runs again

    # the Gem-Miner folder is gone, Smart Ratio has finished since
    new = _folder(tmp_path / "sr2", [_epoch("finetune", 1, 50.0, test_acc=0.66)],
                  density=0.0144, post_finetune_acc=0.6561)  # fmt: skip
    rows = [kept, module._row("smart-ratio", new, ["prune", "--method", "smart-ratio"])]
    figures = module.figures_folder(report, [str(new)], rows)
    assert figures == report / "sr2"  # the kept run's figures stay where they were
    assert module.figures_folder(report, [str(new)], rows[1:]) == report
    per_epoch = [*kept["records"], *({"method": "smart-ratio", **e} for e in rows[1]["records"])]
    module.write_report(rows, per_epoch, report, "cpu", [], figures)
    text = (tmp_path / "results" / "budget.md").read_text()
    line = next(x for x in table.splitlines() if x.startswith("| gem-miner |"))
    assert line in text.splitlines()  # the same row, as reported then
    assert "| smart-ratio | 0 mining + 1 finetuning | 1.44 % |" in text
    assert "- measured in an earlier checkout, whose run folders this one does not hold: " \
        "`gem-miner`" in text  # fmt: skip
    assert "[sr2](budget/sr2/report.md)" in text
    written = (report / "per_epoch.csv").read_text().splitlines()
    assert written[:3] == records.splitlines()[:3]  # the header and Gem-Miner's two epochs
    assert written[3:] == ["smart-ratio,finetune,1,,0.5,0.66,,,,50.0,"]


def test_a_report_with_other_columns_keeps_nothing(tmp_path):
    module = _module()
    report, _ = _reported(module, tmp_path)
    path = tmp_path / "results" / "budget.md"
    path.write_text(path.read_text().replace("| ticket density |", "| density |"))
    assert module.committed_rows(report) == {}
    assert module.committed_rows(tmp_path / "none") == {}


def test_a_report_from_before_the_best_column_gets_it_from_its_records(tmp_path):
    """A report written before "best post-finetune acc" keeps its rows, with the best
    evaluated finetuning epoch read from its per-epoch records."""
    module = _module()
    report, rows = _reported(module, tmp_path)
    path = tmp_path / "results" / "budget.md"
    old = [c for c in module.HEADER if c != module.BEST]
    text = path.read_text().replace(" | ".join(module.HEADER), " | ".join(old))
    text = text.replace("| 72.99 % | 70.00 % (epoch 1) |", "| 72.99 % |")
    text = text.replace("|---" * len(module.HEADER), "|---" * len(old))
    path.write_text(text)
    kept = module.committed_rows(report)[str(tmp_path / "gm")]
    assert kept["cells"] == module.table_cells(rows[0])
    assert kept["cells"][module.HEADER.index(module.BEST)] == "70.00 % (epoch 1)"
    unfinished = module.committed_rows(report)[str(tmp_path / "sr")]
    assert unfinished["last"] == {
        "phase": "finetune",
        "epoch": 1,
        "train_acc": 0.5,
        "seconds": 50.0,
    }


def test_more_gem_miner_runs_are_other_seeds_and_precisions_in_folders_of_their_own():
    module = _module()
    args = _args(module, also=[module._precision_seed("fp32:1"), module._precision_seed("bf16:2")])
    runs = module.commands(args)
    assert list(runs) == ["gem-miner", "gem-miner, seed 1, fp32", "gem-miner, seed 2, bf16"]
    cfg = config_from_args(build_parser().parse_args(runs["gem-miner, seed 1, fp32"]))
    base = config_from_args(build_parser().parse_args(runs["gem-miner"]))
    assert cfg.seed == 1 and base.seed == 0 and "fp32" in runs["gem-miner, seed 1, fp32"]
    assert cfg.prune == base.prune and cfg.finetune == base.finetune
    folders = {module.run_folder(argv) for argv in runs.values()}
    assert len(folders) == 3
    with pytest.raises(module.argparse.ArgumentTypeError, match="PRECISION:SEED"):
        module._precision_seed("fp16:1")


def test_an_unfinished_run_travels_to_the_next_checkout_and_back(tmp_path):
    module = _module()
    run = tmp_path / "runs" / "gm"
    run.mkdir(parents=True)
    for name, data in [("config.json", "{}"), ("checkpoint-prune.pt", "x" * 100)]:
        (run / name).write_text(data)
    (run / "tensorboard").mkdir()  # not carried
    carry = tmp_path / "carry"
    assert "carried 2 files" in module.carry_out(run, carry)
    assert sorted(p.name for p in (carry / "gm").iterdir()) == [
        "checkpoint-prune.pt",
        "config.json",
    ]
    shutil.rmtree(run)  # a new checkout
    module.carry_in(run, carry)
    assert (run / "checkpoint-prune.pt").read_text() == "x" * 100
    (run / "summary.json").write_text(json.dumps({"post_finetune_acc": 0.7}))
    assert module.carry_out(run, carry) == "finished, nothing carried"
    assert not (carry / "gm").exists()


def test_the_spread_of_finished_gem_miner_runs_is_reported(tmp_path):
    module = _module()
    row = {"method": "gem-miner", "post": 0.7299, "best": module.BestEpoch(0.731, 115, "test")}
    full = {"epochs done": "150 mining + 150 finetuning", "ticket": 0.0144, "pre": 0.59,
            "gem": None, "gem_acc": None, "mining time": "—", "finetuning time": "—",
            "precision": "bf16"}  # fmt: skip
    rows = [row | full, row | full | {"method": "gem-miner, seed 1, bf16", "post": 0.7501}]
    rows[1]["best"] = module.BestEpoch(0.7521, 140, "test")
    text = module.gem_miner_spread(rows)
    assert text.startswith("- Gem-Miner over its 2 finished runs: last epoch 74.00 ± 1.43 %")
    assert "best epoch 74.15 ± 1.49 % (paper 77.89 %)" in text
    assert module.gem_miner_spread(rows[:1]) == ""


def test_the_dense_row_is_the_papers_weight_training_and_only_runs_the_rows_named(
    tmp_path, monkeypatch
):
    module = _module()
    args = _args(module, smart_ratio=True, dense=True)
    runs = module.commands(args)
    assert list(runs)[-1] == "dense"
    dense = config_from_args(build_parser().parse_args(runs["dense"]))
    assert (dense.method, dense.prune.density, dense.weight_init) == (
        "dense",
        1.0,
        "kaiming_normal",
    )
    tuned = dense.finetune
    assert (tuned.epochs, tuned.optim.lr, tuned.optim.weight_decay) == (150, 0.1, 1e-4)
    assert [round(m * 150) for m in tuned.optim.milestones] == [80, 120]
    assert "--threads" in runs["dense"] and module.PAPER["dense"] == 0.9125
    # --only dense: Smart Ratio's unfinished row is reported as it stands, not run again
    called = []
    monkeypatch.setattr(module, "gemminer", lambda argv: called.append(argv) or 0)
    monkeypatch.setattr(
        module,
        "run_folder",
        lambda argv: (
            tmp_path / argv[argv.index("--method") + 1] if "--method" in argv else tmp_path / "gm"
        ),
    )
    monkeypatch.setattr(
        "sys.argv",
        ["paper_budget.py", "--smart-ratio", "--dense", "--only", "dense", "--data-dir", "d",
         "--report", str(tmp_path / "results" / "budget")],
    )  # fmt: skip
    module.main()
    assert [argv[argv.index("--method") + 1] for argv in called] == ["dense"]
    assert "| dense | 0 mining |" in (tmp_path / "results" / "budget.md").read_text()


def _outside_the_spread(module, method):
    """Whether a finished row of ``method`` beside one paper-setting run leaves the report's
    mean ± std of the paper setting out (one run: no spread)."""
    cells = ["?"] * len(module.HEADER)
    cells[module.HEADER.index("post-finetune acc")] = "74.00 %"
    cells[module.HEADER.index(module.BEST)] = "74.10 % (epoch 140)"
    row = {"method": method, "post": "x", "kept": True, "cells": cells}
    gm = {"method": "gem-miner", "post": "x", "kept": True, "cells": list(cells)}
    return module.gem_miner_spread([gm, row]) == ""


def _main_runs(module, monkeypatch, tmp_path, flags):
    """The gemminer commands the script's ``main`` runs with ``flags`` (none is run)."""
    called = []
    monkeypatch.setattr(module, "gemminer", lambda argv: called.append(argv) or 0)
    monkeypatch.setattr(module, "run_folder", lambda argv: tmp_path / str(len(argv)))
    report = str(tmp_path / "results" / "b")
    monkeypatch.setattr(
        "sys.argv", ["paper_budget.py", *flags, "--data-dir", "d", "--report", report]
    )
    module.main()
    return called


def test_their_recipe_row_mines_as_the_authors_stored_run_and_stays_out_of_the_spread(
    tmp_path, monkeypatch
):
    module = _module()
    args = _args(module, their_recipe=True)
    runs = module.commands(args)
    assert list(runs) == ["gem-miner", module.THEIRS]
    theirs = config_from_args(build_parser().parse_args(runs[module.THEIRS]))
    ours = config_from_args(build_parser().parse_args(runs["gem-miner"]))
    assert theirs.settings == {
        "period": 8,
        "lam": 5e-5,
        "regularizer": "l2",
        "finetune_mask": "rounded",
    }
    assert (theirs.prune.density, theirs.prune.epochs, theirs.prune.optim) == (
        0.018014,  # 0.8^18: 18 freezes after epochs 9, 17, …, 145, each keeping 80 %
        150,
        ours.prune.optim,
    )
    assert theirs.finetune == ours.finetune and theirs.seed == ours.seed
    assert module.run_folder(runs[module.THEIRS]) != module.run_folder(runs["gem-miner"])
    # its reference is their log's last epoch, and it is no seed of the paper's setting
    row = {"method": module.THEIRS, "post": "76.00 %", "kept": True}
    cells = ["?"] * len(module.HEADER)
    cells[module.HEADER.index("post-finetune acc")] = "76.00 %"
    cells[module.HEADER.index(module.BEST)] = "76.10 % (epoch 140)"
    gm = [{"method": f"gem-miner, seed {i}", "post": "x", "kept": True, "cells": list(cells)}
          for i in range(2)]  # fmt: skip
    spread = module.gem_miner_spread([*gm, {**row, "cells": cells}])
    assert "over its 2 finished runs" in spread
    assert module.PAPER[module.THEIRS] == 0.7935
    # --only their-recipe runs that row alone
    called = _main_runs(module, monkeypatch, tmp_path, ["--their-recipe", "--only", "their-recipe"])
    assert len(called) == 1 and called[0][called[0].index("--period") + 1] == "8"


def test_their_recipe_to_the_papers_density_differs_from_it_only_in_density(tmp_path, monkeypatch):
    """``--their-recipe-1.44``: the stored run's recipe down to 1.44 %, beside the paper's
    77.89 %, outside the paper setting's spread, runnable alone with ``--only``."""
    module = _module()
    runs = module.commands(_args(module, their_recipe=True, their_recipe_144=True))
    assert list(runs) == ["gem-miner", module.THEIRS, module.THEIRS_144]
    to_180, to_144, ours = (
        config_from_args(build_parser().parse_args(runs[name]))
        for name in (module.THEIRS, module.THEIRS_144, "gem-miner")
    )
    assert to_144.settings == to_180.settings
    assert (to_144.prune.density, to_180.prune.density) == (0.0144, 0.018014)
    assert to_144.prune.density == ours.prune.density and to_144.finetune == ours.finetune
    names = {module.run_folder(argv) for argv in runs.values()}
    assert len(names) == 3
    assert module.PAPER[module.THEIRS_144] == 0.7789
    assert _outside_the_spread(module, module.THEIRS_144)
    called = _main_runs(
        module, monkeypatch, tmp_path,
        ["--their-recipe", "--their-recipe-1.44", "--only", "their-recipe-1.44"],
    )  # fmt: skip
    assert len(called) == 1
    assert called[0][called[0].index("--density") + 1] == "0.0144"
    assert called[0][called[0].index("--lambda") + 1] == "5e-5"


def test_the_authors_candidates_differ_from_the_paper_row_only_in_lr_and_lambda(
    tmp_path, monkeypatch
):
    """``--candidate N``: the authors' conf2–6 for 1.44 %, in the candidates sweep's grid
    order (conf1 is the default run), outside the paper setting's spread, ``--only confN``."""
    import itertools

    import yaml

    module = _module()
    sweep = yaml.safe_load(open("sweeps/resnet20-1.44-candidates.yaml"))
    grid = list(itertools.product(sweep["grid"]["lr"], sweep["grid"]["lambda"]))
    assert grid[1:] == [module.CANDIDATES[n] for n in range(2, 7)]
    runs = module.commands(_args(module, candidate=[(2, 0), (6, 0)]))
    ours = config_from_args(build_parser().parse_args(runs["gem-miner"]))
    assert list(runs)[1:] == [module.candidate_row(2), module.candidate_row(6)]
    for n in (2, 6):
        cfg = config_from_args(build_parser().parse_args(runs[module.candidate_row(n)]))
        assert (cfg.prune.optim.lr, cfg.settings["lam"]) == module.CANDIDATES[n]
        assert cfg.settings == {**ours.settings, "lam": module.CANDIDATES[n][1]}
        assert cfg.prune == dataclasses.replace(
            ours.prune, optim=dataclasses.replace(ours.prune.optim, lr=module.CANDIDATES[n][0])
        )
        assert cfg.finetune == ours.finetune and cfg.seed == ours.seed
    assert len({module.run_folder(argv) for argv in runs.values()}) == 3
    assert module.candidate_row(2) == (
        "gem-miner under the authors' 1.44 % candidate conf2 (LR 0.1, λ 5e-05)"
    )
    assert module.PAPER[module.candidate_row(2)] == 0.7789
    assert _outside_the_spread(module, module.candidate_row(2))
    called = _main_runs(
        module, monkeypatch, tmp_path, ["--candidate", "2", "--candidate", "5", "--only", "conf5"]
    )
    assert len(called) == 1
    assert called[0][called[0].index("--lr") + 1] == "0.01"
    assert called[0][called[0].index("--lambda") + 1] == "5e-05"


def test_a_candidate_at_other_seeds_has_rows_of_its_own_and_a_spread_of_its_own(
    tmp_path, monkeypatch
):
    """``--candidate N:SEED``: confN at another seed (only the seed differs from confN's
    row), ``--only confN:SEED`` runs it alone, and two finished seeds of a candidate give
    that candidate's mean ± std, apart from the paper setting's."""
    module = _module()
    assert module._candidate("2") == (2, 0) and module._candidate("2:1") == (2, 1)
    for bad in ("7", "2:x", "conf2", ""):
        with pytest.raises(module.argparse.ArgumentTypeError, match="N:SEED"):
            module._candidate(bad)
    runs = module.commands(_args(module, candidate=[(2, 0), (2, 1)]))
    seeded = module.candidate_row(2, 1)
    assert seeded == "gem-miner under the authors' 1.44 % candidate conf2 (LR 0.1, λ 5e-05), seed 1"
    assert list(runs) == ["gem-miner", module.candidate_row(2), seeded]
    conf2 = config_from_args(build_parser().parse_args(runs[module.candidate_row(2)]))
    cfg = config_from_args(build_parser().parse_args(runs[seeded]))
    assert (conf2.seed, cfg.seed) == (0, 1)
    assert dataclasses.replace(cfg, seed=0) == conf2
    assert module.run_folder(runs[seeded]) != module.run_folder(runs[module.candidate_row(2)])
    assert module.row_name("conf2:1") == seeded and module.row_name("conf9:1") == "conf9:1"
    # its paper column is the candidate's (77.89 %); its seeds have a spread of their own
    assert module.recipe(seeded) == module.candidate_row(2)
    assert module.PAPER[module.recipe(seeded)] == 0.7789
    cells = ["?"] * len(module.HEADER)
    cells[module.HEADER.index("post-finetune acc")] = "75.00 %"
    cells[module.HEADER.index(module.BEST)] = "75.20 % (epoch 140)"
    rows = [
        {"method": method, "post": "x", "kept": True, "cells": list(cells)}
        for method in ("gem-miner", module.candidate_row(2), seeded)
    ]
    rows[2]["cells"][module.HEADER.index("post-finetune acc")] = "76.00 %"
    spread = module.gem_miner_spread(rows)
    assert spread == (
        f"- {module.candidate_row(2)} over its 2 finished runs: last epoch 75.50 ± 0.71 %, "
        "best epoch 75.20 ± 0.00 % (paper 77.89 %)"
    )
    called = _main_runs(
        module,
        monkeypatch,
        tmp_path,
        ["--candidate", "2", "--candidate", "2:1", "--only", "conf2:1"],
    )
    assert len(called) == 1 and called[0][called[0].index("--seed") + 1] == "1"


def test_the_epochs_the_collapse_guard_acted_in_are_counted_and_travel_in_the_csv(tmp_path):
    """A run whose mining the collapse guard held up says so under the table (the authors'
    code has none), and per_epoch.csv's ``guarded`` keeps the count for a later checkout."""
    module = _module()
    mined = [_epoch("mine", e, 30.0, density=0.5, bound=0.6) for e in range(1, 5)]
    mined[1]["guarded"] = {"layer2.0.conv1.weight": 16, "layer3.0.conv1.weight": 56}
    mined[3]["guarded"] = {"layer3.0.conv1.weight": 59}
    run = _folder(tmp_path / "gm", mined, density=0.0144)
    row = module._row("gem-miner", run, ["mine", "--density", "0.0144"])
    assert [r.get("guarded") for r in row["records"]] == [None, 72, None, 59]
    line = module.guard_line(row)
    assert line == (
        "- gem-miner: the collapse guard acted in 2 of its 4 mining epochs (from epoch 2), "
        "keeping up to 72 weights in one epoch that rounded to 0 (the authors' code has no "
        "guard; per_epoch.csv's `guarded`)"
    )
    quiet = module._row("gem-miner", _folder(tmp_path / "q", mined[:1]), ["mine"])
    assert module.guard_line(quiet) == ""
    report = tmp_path / "results" / "budget"
    per_epoch = [{"method": "gem-miner", **r} for r in row["records"]]
    module.write_report([row], per_epoch, report, "here", [])
    assert line in (tmp_path / "results" / "budget.md").read_text()
    csv_text = (report / "per_epoch.csv").read_text().splitlines()
    assert csv_text[0].endswith(",guarded") and csv_text[2].endswith(",72")


def test_a_stopped_run_still_gets_the_report_written_and_later_rows_are_not_started(
    tmp_path, monkeypatch
):
    """SIGTERM stops a long row (gemminer checkpoints and returns EXIT_INTERRUPTED): the
    rows finished before it must reach the report without a separate --report-only."""
    module = _module()
    called = []

    def gemminer(argv):
        called.append(argv)
        return module.EXIT_INTERRUPTED if argv[0] == "mine" else 0

    monkeypatch.setattr(module, "gemminer", gemminer)
    monkeypatch.setattr(module, "run_folder", lambda argv: tmp_path / str(len(argv)))
    report = tmp_path / "results" / "b"
    monkeypatch.setattr(
        "sys.argv", ["paper_budget.py", "--smart-ratio", "--data-dir", "d", "--report", str(report)]
    )
    with pytest.raises(SystemExit, match="gem-miner stopped; run this again to resume it"):
        module.main()
    assert len(called) == 1  # Smart Ratio, the row after the stopped one, was not started
    text = report.with_suffix(".md").read_text()
    assert "| gem-miner |" in text and "| smart-ratio |" in text
    # a run that fails is reported too, and named in the exit
    monkeypatch.setattr(module, "gemminer", lambda argv: 2)
    with pytest.raises(SystemExit, match="failed; its folder"):
        module.main()
    assert report.with_suffix(".md").exists()


def test_a_time_limit_is_shared_by_the_runs_and_stops_the_rows_it_does_not_reach(
    tmp_path, monkeypatch
):
    module = _module()
    called = []
    monkeypatch.setattr(module, "gemminer", lambda argv: called.append(argv) or 0)
    monkeypatch.setattr(module, "run_folder", lambda argv: tmp_path / str(len(argv)))
    report = tmp_path / "results" / "b"
    argv = ["paper_budget.py", "--smart-ratio", "--data-dir", "d", "--report", str(report)]
    monkeypatch.setattr("sys.argv", [*argv, "--time-limit", "2h"])
    module.main()
    runs = [a for a in called if a[0] != "report"]
    assert len(runs) == 3  # Gem-Miner and both Smart Ratio rows, each told what is left of 2 h
    limits = [int(a[a.index("--time-limit") + 1].rstrip("s")) for a in runs]
    assert all(7190 <= s <= 7200 for s in limits)
    commands = report.with_suffix(".md").read_text().split("gemminer mine")[1:]
    assert commands and not any("--time-limit" in c.split("`")[0] for c in commands)
    # once the limit has passed, no further row starts: the report is written, the exit says why
    called.clear()
    clock = iter([0.0, 0.0])  # the start and the first row; later readings are past the limit
    late = types.SimpleNamespace(monotonic=lambda: next(clock, 1e12))
    monkeypatch.setattr(module, "time", late)
    with pytest.raises(
        SystemExit,
        match="the time limit passed before the row 'smart-ratio, finetuned as gem-miner'",
    ):
        module.main()
    assert [a[0] for a in called if a[0] != "report"] == [runs[0][0]]
    assert report.with_suffix(".md").exists()
    monkeypatch.setattr("sys.argv", [*argv, "--time-limit", "90"])  # minutes? seconds?
    with pytest.raises(SystemExit):
        module.main()
