"""Gem-Miner on the real CIFAR-10 with ResNet-20 at a reduced budget (the core path).

Mines a ticket at the target density on the full training set, finetunes it, and writes
a markdown report of every finished variant (pre-/post-finetune test accuracy, achieved
density, seconds, per-epoch curves, commands, machine, date). Finished stages are skipped
when the script is run again, so it can be stopped and resumed.

    make data   # unpacks ../shared/datasets/cifar10-jpeg.tar.gz into .data/cifar10
    .venv/bin/python benchmarks/gem_miner_cifar10.py --epochs 10                     # defaults
    .venv/bin/python benchmarks/gem_miner_cifar10.py --epochs 10 --label paper-lr --extra "--lr 0.1"
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from _common import command_line, machine, markdown_table, pct, today

from gemminer import stages
from gemminer.cli import build_parser, config_from_args
from gemminer.masking import format_density
from gemminer.rundir.runs import RunDir
from gemminer.training.runtime import Runtime, resolve_precision

SUMMARY_HEADER = [
    "variant",
    "mining lr",
    "achieved density",
    "pre-finetune acc",
    "post-finetune acc",
    "epochs (mine + finetune)",
    "seconds (mine + finetune)",
]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", default=".data/cifar10")
    p.add_argument("--density", default="0.0144")
    p.add_argument("--epochs", type=int, default=10, help="mining epochs (finetuning uses as many)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--label", default="default", help="name of this variant in the report")
    p.add_argument("--extra", default="", help="extra `gemminer mine` flags, e.g. '--lr 0.1'")
    p.add_argument("--runs", default="benchmarks/runs")
    p.add_argument("--report", default="benchmarks/results/gem_miner_resnet20_cifar10.md")
    args = p.parse_args()

    mine_args = [
        "mine", "--data-dir", args.data_dir, "--no-download", "--density", args.density,
        "--epochs", str(args.epochs), "--seed", str(args.seed), *args.extra.split(),
    ]  # fmt: skip
    prefix = f"r20-d{args.density}-e{args.epochs}-s{args.seed}"
    out = Path(args.runs) / f"{prefix}-{args.label}"
    parsed = build_parser().parse_args(mine_args)
    cfg = config_from_args(parsed)
    precision = resolve_precision(parsed.precision, cfg.device)  # --extra flags
    runtime = Runtime(precision=precision, compile=parsed.compile)
    stages.prune_run(cfg, out, runtime=runtime)
    if RunDir(out).read_summary().get("post_finetune_acc") is None:
        stages.finetune_run(out, runtime=runtime)
    RunDir(out).update_summary(
        command=f"{command_line()}  # = gemminer {' '.join(mine_args)} --finetune"
    )
    write_report(sorted(Path(args.runs).glob(f"{prefix}-*")), prefix, Path(args.report))


def write_report(folders: list[Path], prefix: str, report: Path) -> None:
    rows, curves, commands = [], [], []
    for folder in folders:
        run = RunDir(folder)
        s = run.read_summary()
        if s.get("post_finetune_acc") is None:
            continue
        label = folder.name.removeprefix(f"{prefix}-")
        config = json.loads(run.file("config.json").read_text())
        rows.append([
            label, f"{config['prune']['optim']['lr']:g}", format_density(s["density"]),
            pct(s["pre_finetune_acc"]), pct(s["post_finetune_acc"]),
            f"{s['epochs_to_mask']:g} + {s['epochs_finetune']}",
            f"{s['seconds_mask']:.0f} + {s['seconds_finetune']:.0f}",
        ])  # fmt: skip
        note = f" ({s['note']})" if s.get("note") else ""
        commands.append(f"- {label}: `{s.get('command', '')}`{note}")
        curve = [
            [r["phase"], r["epoch"], pct(r.get("train_acc")), pct(r.get("test_acc")),
             pct(r["density"]), pct(r.get("bound")), f"{r['lr']:.4g}"]
            for r in run.read_metrics()
        ]  # fmt: skip
        header = ["phase", "epoch", "train acc", "test acc", "density", "bound", "lr"]
        curves.append(f"### {label}\n\n{markdown_table(header, curve)}\n")
    text = f"""# Gem-Miner, ResNet-20, CIFAR-10, density 1.44 % (reduced budget)

- date: {today()}
- machine: {machine()}
- data: the full 50,000-image training set of ../shared/datasets/cifar10-jpeg.tar.gz
  (JPEG re-encoded CIFAR-10), accuracy on its 10,000-image test set.
- settings: Table 8's λ = 1e-4 for 1.44 %, period T scaled to the budget (5 × 10/150 → 1),
  SGD momentum 0.9, cosine LR, batch 128; finetuning per Table 15 (SGD lr 0.01, steps at
  80/150 and 120/150 of the epochs, weight decay 1e-4). Pre-finetune accuracy is the
  mined ticket (original signed-constant weights ⊙ mask) with BatchNorm statistics
  re-estimated on 20 training batches.

{markdown_table(SUMMARY_HEADER, rows)}

Commands:

{chr(10).join(commands)}

Per-epoch curves (test accuracy of the rounded network after each epoch's freezing while
mining; of the ticket while finetuning):

{chr(10).join(curves)}"""
    report.parent.mkdir(parents=True, exist_ok=True)
    report.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
