"""Automatic λ (beyond the paper) against the recipe's fixed λ, on the real CIFAR-10.

Mines ResNet-20 at density 1.44 % on a seeded training subset at a reduced budget, once
with Table 8's fixed λ and once with ``--set auto_lambda=true`` (λ starts at the same
value and is adapted every epoch so the rounded density meets the freezing bound), then
finetunes both tickets. Writes a markdown report with the per-epoch λ and density, the
exact commands, machine and date. Finished runs are skipped when run again.

    make data
    .venv/bin/python benchmarks/auto_lambda.py --epochs 10 --train-size 10000
"""

from __future__ import annotations

import argparse
import shlex
from pathlib import Path

from _common import command_line, machine, markdown_table, pct, today, train_size_flags

from gemminer import stages
from gemminer.cli import build_parser, config_from_args
from gemminer.masking import format_density
from gemminer.rundir.runs import RunDir

VARIANTS = {"fixed λ (Table 8)": [], "automatic λ": ["--set", "auto_lambda=true"]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", default=".data/cifar10")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--train-size", type=int, default=10000)
    p.add_argument("--density", default="0.0144")
    p.add_argument("--runs", default="benchmarks/runs/auto-lambda")
    p.add_argument("--report", default="benchmarks/results/auto_lambda_resnet20_cifar10.md")
    args = p.parse_args()

    rows, curves = [], []
    for label, extra in VARIANTS.items():
        out = Path(args.runs) / ("auto" if extra else "fixed")
        argv = [
            "prune", "--method", "gem-miner", "--data-dir", args.data_dir, "--no-download",
            "--density", args.density, "--epochs", str(args.epochs),
            *train_size_flags(args.train_size), "--no-epoch-eval", *extra, "--out", str(out),
        ]  # fmt: skip
        cfg = config_from_args(build_parser().parse_args(argv))
        stages.prune_run(cfg, out)
        if RunDir(out).read_summary().get("post_finetune_acc") is None:
            stages.finetune_run(out)
        s = RunDir(out).read_summary()
        mined = [r for r in RunDir(out).read_metrics() if r["phase"] == "mine"]
        rows.append([
            label, format_density(s["density"]), pct(s["pre_finetune_acc"]),
            pct(s["post_finetune_acc"]), f"{mined[-1]['lam']:.3g}",
            f"{s['seconds_mask']:.0f} + {s['seconds_finetune']:.0f}",
            "`gemminer " + " ".join(shlex.quote(a) for a in argv) + " --finetune`",
        ])  # fmt: skip
        curves.append((label, mined))
        print(" | ".join(rows[-1][:6]), flush=True)

    lines = [
        "# Automatic λ vs the recipe's fixed λ (ResNet-20, CIFAR-10, density 1.44 %)",
        "",
        f"- Date: {today()}",
        f"- Machine: {machine()}",
        f"- Script: `{command_line()}`",
        f"- Budget: {args.epochs} mining + {args.epochs} finetune epochs on a seeded "
        f"{args.train_size}-image training subset; test accuracy on the full 10k test set.",
        "",
        markdown_table(
            ["variant", "density", "pre-finetune", "post-finetune", "last λ", "seconds", "command"],
            rows,
        ),  # fmt: skip
        "",
        "Per epoch of mining: λ used, rounded density (after freezing) and the bound.",
        "",
    ]
    header = ["epoch"]
    for label, _ in curves:
        header += [f"{label}: λ", f"{label}: density", f"{label}: train acc"]
    header.append("bound")
    table = []
    for i in range(len(curves[0][1])):
        row: list[object] = [curves[0][1][i]["epoch"]]
        for _, mined in curves:
            r = mined[i]
            row += [f"{r['lam']:.3g}", f"{100 * r['density']:.2f} %", pct(r["train_acc"])]
        row.append(f"{100 * curves[0][1][i]['bound']:.2f} %")
        table.append(row)
    lines += [markdown_table(header, table), ""]
    Path(args.report).write_text("\n".join(lines))


if __name__ == "__main__":
    main()
