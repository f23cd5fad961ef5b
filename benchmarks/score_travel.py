"""How far Gem-Miner's scores move at a given learning rate (why short runs scale the lr).

Mines ResNet-20 on a CIFAR-10 training subset without freezing or regularization
(Gem-Miner(0)) at each learning rate and reports the mean and median |Δp| of the scores,
the fraction of scores that crossed 0.5 (changed the mask), and test accuracy.
``--optimizer adam`` does the same with Adam: its step is ≈ lr whatever the size of the
gradient, so its travel grows with the lr alone (why Adam's lr is not budget-scaled).
``--append`` adds the section to the report instead of replacing the report.

    .venv/bin/python benchmarks/score_travel.py --train-size 5000 --epochs 3 --lrs 0.1 1.0
    .venv/bin/python benchmarks/score_travel.py --optimizer adam --epochs 1 --lrs 0.01 0.15 \
        --append
"""

from __future__ import annotations

import argparse
import copy
import os
import time
from pathlib import Path

import torch
from _common import command_line, machine, markdown_table, pct, today

from gemminer import MineConfig, OptimConfig, create_model, init_weights, load_dataset
from gemminer.data.loader import BatchLoader
from gemminer.masking import score_layers, to_score_model
from gemminer.methods.gem_miner import mine_scores

_STEPS = {"sgd": "SGD steps, momentum 0.9", "adam": "Adam steps, betas (0.9, 0.999)"}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", default=".data/cifar10")
    p.add_argument("--train-size", type=int, default=5000)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--lrs", type=float, nargs="+", default=[0.1, 1.0])
    p.add_argument("--optimizer", choices=tuple(_STEPS), default="sgd")
    p.add_argument("--report", default="benchmarks/results/score_travel.md")
    p.add_argument("--append", action="store_true", help="append a section to --report")
    args = p.parse_args()

    splits = load_dataset("cifar10", args.data_dir, download=False, train_size=args.train_size)
    stats = {"mean": splits.mean, "std": splits.std}
    train = BatchLoader(splits.train, batch_size=128, train=True, seed=0, **stats)
    test = BatchLoader(splits.test, batch_size=500, **stats)
    base = init_weights(create_model("resnet20"), "signed_constant", 0)
    steps = args.epochs * len(train)
    rows = []
    for lr in args.lrs:
        model = to_score_model(copy.deepcopy(base), torch.Generator().manual_seed(1))
        before = {n: m.scores.detach().clone() for n, m in score_layers(model).items()}
        cfg = MineConfig(
            density=1.0, epochs=args.epochs, period=1, lam=0.0,
            optim=OptimConfig(name=args.optimizer, lr=lr, schedule="constant"),
        )  # fmt: skip
        start = time.perf_counter()
        result = mine_scores(model, train, cfg, torch.device("cpu"), eval_batches={"test": test})
        seconds = time.perf_counter() - start
        after = {n: m.scores.detach() for n, m in score_layers(model).items()}
        moved = torch.cat([(after[n] - before[n]).abs().flatten() for n in before])
        crossed = torch.cat([((after[n] >= 0.5) != (before[n] >= 0.5)).flatten() for n in before])
        share = crossed.float().mean().item()
        rows.append([
            f"{lr:g}", f"{moved.mean():.4f}", f"{moved.median():.4f}", pct(share),
            pct(result.history[-1]["test_acc"]), f"{seconds:.0f}",
        ])  # fmt: skip
    header = ["lr", "mean abs(Δp)", "median abs(Δp)", "scores crossing 0.5", "test acc", "seconds"]
    name = {"sgd": ", SGD", "adam": ", Adam"}[args.optimizer]
    where = f"{os.cpu_count()}-core CPU" if not torch.cuda.is_available() else "GPU host"
    heading = "##" if args.append else "#"
    section = f"""{heading} Score travel of Gem-Miner(0){name}, ResNet-20, CIFAR-10

- date: {today()}
- machine: {where} ({machine()}); the runs use the CPU
- command: `{command_line()}`
- {args.train_size} training images, {args.epochs} epoch(s) ({steps} {_STEPS[args.optimizer]},
  constant lr, no freezing, λ = 0), scores U[0, 1], signed-constant weights.

{markdown_table(header, rows)}
"""
    report = Path(args.report)
    text = section
    if args.append and report.exists():
        text = report.read_text().rstrip("\n") + "\n\n" + section
    report.write_text(text)
    print(section)


if __name__ == "__main__":
    main()
