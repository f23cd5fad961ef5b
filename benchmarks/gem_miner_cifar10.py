"""Gem-Miner on the real CIFAR-10 with ResNet-20 at a reduced budget (issue: core path).

Mines a ticket at the target density on the full training set, finetunes it, and writes
a markdown report (pre-/post-finetune test accuracy, achieved density, seconds, per-epoch
curve, command, machine, date). Finished stages are skipped when the script is run again,
so it can be stopped and resumed.

    make data   # unpacks ../shared/datasets/cifar10-jpeg.tar.gz into .data/cifar10
    .venv/bin/python benchmarks/gem_miner_cifar10.py --epochs 10
"""

from __future__ import annotations

import argparse
from pathlib import Path

from _common import command_line, machine, markdown_table, pct, today

from gemminer import pipeline
from gemminer.cli import build_parser, config_from_args
from gemminer.masking import format_density
from gemminer.runs import RunDir


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", default=".data/cifar10")
    p.add_argument("--density", default="0.0144")
    p.add_argument("--epochs", type=int, default=10, help="mining epochs (finetuning uses as many)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--extra", default="", help="extra `gemminer mine` flags, e.g. '--lambda 3e-5'")
    p.add_argument("--runs", default="benchmarks/runs")
    p.add_argument("--report", default="benchmarks/results/gem_miner_resnet20_cifar10.md")
    args = p.parse_args()

    mine_args = [
        "mine",
        "--model",
        "resnet20",
        "--dataset",
        "cifar10",
        "--data-dir",
        args.data_dir,
        "--no-download",
        "--density",
        args.density,
        "--epochs",
        str(args.epochs),
        "--seed",
        str(args.seed),
        *args.extra.split(),
    ]
    cfg = config_from_args(build_parser().parse_args(mine_args))
    out = Path(args.runs) / f"r20-d{args.density}-e{args.epochs}-s{args.seed}"
    pipeline.prune_run(cfg, out)
    if RunDir(out).read_summary().get("post_finetune_acc") is None:
        pipeline.finetune_run(out)
    write_report(RunDir(out), Path(args.report), "gemminer " + " ".join(mine_args))


SUMMARY_HEADER = [
    "method",
    "target",
    "achieved",
    "pre-finetune acc",
    "post-finetune acc",
    "epochs (mine + finetune)",
    "seconds (mine + finetune)",
]


def write_report(run: RunDir, report: Path, mine_command: str) -> None:
    s = run.read_summary()
    cfg = run.read_config()
    metrics = run.read_metrics()
    rows = [
        [
            "Gem-Miner",
            pct(s["target_density"]),
            format_density(s["density"]),
            pct(s["pre_finetune_acc"]),
            pct(s["post_finetune_acc"]),
            f"{s['epochs_mining']} + {s['epochs_finetune']}",
            f"{s['seconds_mask']:.0f} + {s['seconds_finetune']:.0f}",
        ]
    ]
    curve = [
        [
            r["phase"],
            r["epoch"],
            pct(r.get("train_acc")),
            pct(r.get("test_acc")),
            pct(r["density"]),
            pct(r.get("bound")),
            f"{r['lr']:.4g}",
        ]
        for r in metrics
    ]
    text = f"""# Gem-Miner, ResNet-20, CIFAR-10 (reduced budget)

- date: {today()}
- machine: {machine()}
- command: `{command_line()}`
  (equivalent to `{mine_command} --finetune`)
- settings: λ = {cfg.settings["lam"]:g}, period T = {cfg.settings["period"]},
  mining SGD lr {cfg.prune.optim.lr:g} cosine, finetune SGD lr {cfg.finetune.optim.lr:g}
  multistep at 80/150 and 120/150 of the epochs, batch {cfg.prune.batch_size},
  full 50,000-image training set, accuracy on the 10,000-image test set.

{markdown_table(SUMMARY_HEADER, rows)}

Per-epoch curve (test accuracy of the rounded network while mining, of the ticket while finetuning):

{markdown_table(["phase", "epoch", "train acc", "test acc", "density", "bound", "lr"], curve)}
"""
    report.parent.mkdir(parents=True, exist_ok=True)
    report.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
