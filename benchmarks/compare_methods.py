"""The paper's comparison on the real CIFAR-10 with ResNet-20 at one shared, reduced budget.

Every row is one plain `gemminer` command (printed in the report) run into its own folder
under --runs; rows whose folder already holds a finetuned ticket are skipped, so the
script can be stopped and resumed. All methods get the same epochs to find their mask
(where they train to find it) and the same finetuning epochs.

    make data
    .venv/bin/python benchmarks/compare_methods.py --train-size 10000 --epochs 10
"""

from __future__ import annotations

import argparse
import csv
import time
from pathlib import Path

from _common import command_line, machine, markdown_table, pct, today, train_size_flags

from gemminer.cli import main as gemminer
from gemminer.rundir.runs import RunDir


def rows(epochs: int, imp_rounds: int) -> list[tuple[str, list[str]]]:
    """(label, `gemminer` arguments) for every row; sanity checks refer to the gem-miner run."""
    imp_epochs = max(1, epochs // imp_rounds)
    return [
        ("gem-miner", ["prune", "--method", "gem-miner", "--epochs", str(epochs)]),
        ("edge-popup", ["prune", "--method", "edge-popup", "--epochs", str(epochs)]),
        (
            "edge-popup-global-gradual",
            ["prune", "--method", "edge-popup-global-gradual", "--epochs", str(epochs)],
        ),
        ("smart-ratio", ["prune", "--method", "smart-ratio", "--epochs", "0"]),
        ("random", ["prune", "--method", "random", "--epochs", "0"]),
        ("snip", ["prune", "--method", "snip", "--epochs", "0"]),
        ("grasp", ["prune", "--method", "grasp", "--epochs", "0"]),
        ("synflow", ["prune", "--method", "synflow", "--epochs", "0"]),
        (
            f"imp (cold, {imp_rounds} rounds × {imp_epochs} epochs)",
            [
                "prune",
                "--method",
                "imp",
                "--epochs",
                str(imp_epochs),
                "--set",
                f"rounds={imp_rounds}",
            ],
        ),
        ("dense", ["prune", "--method", "dense", "--epochs", "0", "--density", "1"]),
        ("gem-miner + shuffle", ["sanity", "--check", "shuffle"]),
        ("gem-miner + reinit", ["sanity", "--check", "reinit"]),
        ("gem-miner + invert", ["sanity", "--check", "invert"]),
    ]


def folder(label: str) -> str:
    return label.split(" (")[0].replace(" + ", "-")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", default=".data/cifar10")
    p.add_argument("--density", default="0.0144")
    p.add_argument(
        "--epochs", type=int, default=10, help="epochs to find a mask (training methods)"
    )
    p.add_argument("--finetune-epochs", type=int, default=10)
    p.add_argument("--train-size", type=int, default=10000, help="seeded training subset (0 = all)")
    p.add_argument("--imp-rounds", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--runs", default="benchmarks/runs/compare")
    p.add_argument("--report", default="benchmarks/results/compare_resnet20_cifar10")
    p.add_argument("--only", default="", help="comma-separated row labels to run (default: all)")
    args = p.parse_args()

    common = [
        "--data-dir",
        args.data_dir,
        "--no-download",
        *train_size_flags(args.train_size),
        "--density",
        args.density,
        "--seed",
        str(args.seed),
        "--no-epoch-eval",
        "--no-progress",
        "--finetune-epochs",
        str(args.finetune_epochs),
    ]
    runs = Path(args.runs)
    commands: dict[str, str] = {}
    for label, argv in rows(args.epochs, args.imp_rounds):
        out = runs / folder(label)
        if argv[0] == "sanity":
            full = [
                "sanity",
                str(runs / "gem-miner"),
                *argv[1:],
                "--out",
                str(out),
                "--no-progress",
            ]
        else:
            full = [*argv[:2], argv[2], *common, *argv[3:], "--out", str(out)]
            if "--density" in argv[3:]:  # a row's own density (dense) wins over the shared one
                i = full.index("--density")
                del full[i : i + 2]
        commands[label] = "gemminer " + " ".join(full) + " && gemminer finetune " + str(out)
        if args.only and label not in args.only.split(","):
            continue
        if RunDir(out).read_summary().get("post_finetune_acc") is not None:
            print(f"skip {label}: finished")
            continue
        start = time.time()
        if gemminer(full) != 0 or gemminer(["finetune", str(out), "--no-progress"]) != 0:
            raise SystemExit(f"row {label} failed")
        print(f"{label}: {time.time() - start:.0f} s", flush=True)
    write_report(runs, Path(args.report), commands, args)


def write_report(
    runs: Path, report: Path, commands: dict[str, str], args: argparse.Namespace
) -> None:
    header = [
        "method",
        "density",
        "pre-finetune acc",
        "post-finetune acc",
        "rare gem: density, acc (BN re-est. / mining's BN)",
        "epochs to mask",
        "seconds (mask + finetune)",
    ]
    table, records = [], []
    for label, command in commands.items():
        s = RunDir(runs / folder(label)).read_summary()
        if s.get("post_finetune_acc") is None:
            continue
        seconds = f"{s.get('seconds_mask', 0):.0f} + {s.get('seconds_finetune', 0):.0f}"
        gem = (
            f"{pct(s['gem_density'])}, {pct(s.get('gem_acc'))} / {pct(s.get('gem_acc_running_bn'))}"
            if s.get("gem_density") is not None
            else "—"
        )
        table.append(
            [
                label,
                pct(s["density"]),
                pct(s["pre_finetune_acc"]),
                pct(s["post_finetune_acc"]),
                gem,
                f"{s['epochs_to_mask']:.3g}",
                seconds,
            ]
        )
        records.append(
            {
                "method": label,
                "density": s["density"],
                "pre_finetune_acc": s["pre_finetune_acc"],
                "post_finetune_acc": s["post_finetune_acc"],
                "gem_density": s.get("gem_density"),
                "gem_acc": s.get("gem_acc"),
                "gem_acc_running_bn": s.get("gem_acc_running_bn"),
                "epochs_to_mask": s["epochs_to_mask"],
                "seconds_mask": s.get("seconds_mask"),
                "seconds_finetune": s.get("seconds_finetune"),
                "command": command,
            }
        )
    report.parent.mkdir(parents=True, exist_ok=True)
    with open(report.with_suffix(".csv"), "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(records[0]) if records else ["method"])
        writer.writeheader()
        writer.writerows(records)
    command_list = "\n".join(f"- {label}: `{cmd}`" for label, cmd in commands.items())
    report.with_suffix(".md").write_text(
        f"""# Method comparison: ResNet-20, CIFAR-10, target density {float(args.density):.2%}

- date: {today()}
- machine: {machine()}
- script: `{command_line()}`
- budget: {args.train_size or 50000} training images (seeded subset of the 50,000), the full
  10,000-image test set; {args.epochs} epochs to find a mask for methods that train (IMP:
  all its rounds together), {args.finetune_epochs} finetune epochs for every ticket
  (Table 15's schedule scaled to them). Pre-finetune accuracy: the ticket as found (BatchNorm
  statistics re-estimated on 20 training batches), before any weight training. Gem-Miner
  finetunes its flags (the authors' default); its rounded mask, the "rare gem", is judged
  apart: BatchNorm re-estimated, and with the statistics left by mining (the authors'
  protocol). Gem-Miner + invert mines again with every freeze removing the highest scores
  (the authors' inversion check).

{markdown_table(header, table)}

Commands of each row:

{command_list}
"""
    )
    print(report.with_suffix(".md").read_text())


if __name__ == "__main__":
    main()
