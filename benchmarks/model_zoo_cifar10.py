"""Gem-Miner on the real CIFAR-10 with the paper's other networks, from their recipes.

For each recipe: `gemminer run RECIPE --epochs E --train-size N --no-epoch-eval` (mine, then
finetune), at a reduced budget; then a markdown + CSV report of every finished run
(achieved density, pre-/post-finetune test accuracy, seconds, the exact command, machine,
date). Finished runs are skipped when the script is run again, so it can be resumed.

    make data
    .venv/bin/python benchmarks/model_zoo_cifar10.py --epochs 8 --train-size 10000 \\
        --recipes vgg16-cifar10-d1.4 mobilenetv2-cifar10-d1.44
"""

from __future__ import annotations

import argparse
import csv
import shlex
from pathlib import Path

from _common import command_line, machine, markdown_table, pct, today, train_size_flags

from gemminer import stages
from gemminer.cli import resolve_run
from gemminer.masking import format_density
from gemminer.rundir.runs import RunDir
from gemminer.settings.recipe import load_recipe

HEADER = [
    "recipe", "paper", "density", "pre-finetune acc", "post-finetune acc",
    "rare gem: density, acc (BN re-est. / mining's BN)",
    "epochs (mine + finetune)", "mining lr", "seconds (mine + finetune)", "command",
]  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--recipes", nargs="+", default=["vgg16-cifar10-d1.4", "mobilenetv2-cifar10-d1.44"]
    )
    p.add_argument("--data-dir", default=".data/cifar10")
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--train-size", type=int, default=10000)
    p.add_argument("--extra", default="", help="extra `gemminer run` flags for every recipe")
    p.add_argument("--runs", default="benchmarks/runs/zoo")
    p.add_argument("--report", default="benchmarks/results/model_zoo_cifar10")
    args = p.parse_args()

    rows = []
    for name in args.recipes:
        out = Path(args.runs) / name
        argv = [
            name, "--data-dir", args.data_dir, "--no-download", "--epochs", str(args.epochs),
            *train_size_flags(args.train_size), "--no-epoch-eval", *shlex.split(args.extra),
            "--out", str(out),
        ]  # fmt: skip
        _, cfg = resolve_run(argv)
        stages.prune_run(cfg, out)
        if RunDir(out).read_summary().get("post_finetune_acc") is None:
            stages.finetune_run(out)
        s = RunDir(out).read_summary()
        rows.append([
            name, load_recipe(name).paper, format_density(s["density"]),
            pct(s["pre_finetune_acc"]), pct(s["post_finetune_acc"]),
            f"{pct(s.get('gem_density'))}, {pct(s.get('gem_acc'))} / "
            f"{pct(s.get('gem_acc_running_bn'))}",
            f"{s['epochs_mining']} + {s['epochs_finetune']}",
            f"{cfg.prune.optim.name} {cfg.prune.optim.lr:g}",
            f"{s['seconds_mask']:.0f} + {s['seconds_finetune']:.0f}",
            "gemminer run " + " ".join(shlex.quote(a) for a in argv),
        ])  # fmt: skip
        print(" | ".join(rows[-1][:9]), flush=True)

    report = Path(args.report)
    with open(report.with_suffix(".csv"), "w", newline="") as f:
        csv.writer(f).writerows([HEADER, *rows])
    text = [
        "# Gem-Miner on CIFAR-10 with the paper's other networks (reduced budget)",
        "",
        f"- Date: {today()}",
        f"- Machine: {machine()}",
        f"- Script: `{command_line()}`",
        f"- Budget: {args.epochs} mining + {args.epochs} finetune epochs on a seeded "
        f"{args.train_size}-image subset of the training set; accuracy on the full 10k test "
        "set. Each recipe's settings are its paper row as the authors' configs ran it (see "
        "the paper column and the recipe file), with the period rescaled to the shorter "
        "budget and, for SGD, the mining LR too (same summed LR; Adam's LR is kept); "
        f"`--extra` flags: `{args.extra or 'none'}`. Density and pre-finetune accuracy are "
        "the finetuned ticket's; the rare gem is Gem-Miner's rounded mask before finetuning.",
        "",
        markdown_table(HEADER, rows),
        "",
    ]
    report.with_suffix(".md").write_text("\n".join(text))


if __name__ == "__main__":
    main()
