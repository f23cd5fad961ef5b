"""Does the finetuning LR schedule at short budgets explain the gap to the authors' code?

gemminer places Table 15's LR steps at 80/150 and 120/150 of any finetuning budget
(rounded: epochs 5 and 8 of 10). The authors' `utils/schedulers.py:get_scheduler` uses
[80, 120] at 150 epochs too, but [⌊E/2⌋, ⌊2E/3⌋] at budgets it does not list (epochs 5 and
6 of 10). This script copies finished runs of `benchmarks/fidelity.py` (mined with today's
defaults), sets their finetuning milestones to the authors' rule and finetunes each again
with a plain `gemminer finetune` (same ticket, same data order), so the two schedules differ
in nothing else.

    .venv/bin/python benchmarks/finetune_milestones.py --seeds 0,1,2
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import time
from pathlib import Path

from _common import command_line, machine, markdown_table, mean_std, pct, today

from gemminer.cli import main as gemminer
from gemminer.rundir.runs import RunDir

#: Files of a mined run that finetuning reads; the rest (finetuned weights) is left behind.
MINED = ("config.json", "metrics.jsonl", "mask.pt", "scores.pt", "ticket.pt", "summary.json")


def authors_milestones(epochs: int) -> list[float]:
    """The authors' LR steps for an unlisted budget, as fractions that gemminer rounds back
    to the same epochs: ⌊E/2⌋ and ⌊2E/3⌋."""
    return [(epochs // 2) / epochs, (2 * epochs // 3) / epochs]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--fidelity-runs", default="benchmarks/runs/fidelity")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--runs", default="benchmarks/runs/finetune-milestones")
    p.add_argument("--report", default="benchmarks/results/finetune_milestones_resnet20_cifar10")
    args = p.parse_args()

    rows, ours, theirs = [], [], []
    for seed in [int(s) for s in args.seeds.split(",")]:
        source = Path(args.fidelity_runs) / f"all-changes-s{seed}"
        base = RunDir(source).read_summary()
        if base.get("post_finetune_acc") is None:
            raise SystemExit(f"{source}: run benchmarks/fidelity.py first")
        out = Path(args.runs) / f"authors-milestones-s{seed}"
        if RunDir(out).read_summary().get("post_finetune_acc") is None:
            out.mkdir(parents=True, exist_ok=True)
            for name in MINED:
                shutil.copy2(source / name, out / name)
            config = json.loads((out / "config.json").read_text())
            epochs = config["finetune"]["epochs"]
            config["finetune"]["optim"]["milestones"] = authors_milestones(epochs)
            (out / "config.json").write_text(json.dumps(config, indent=2))
            start = time.time()
            if gemminer(["finetune", str(out), "--no-progress"]) != 0:
                raise SystemExit(f"finetuning {out} failed")
            print(f"seed {seed}: {time.time() - start:.0f} s", flush=True)
        milestones = json.loads((out / "config.json").read_text())["finetune"]["optim"]
        after = RunDir(out).read_summary()["post_finetune_acc"]
        ours.append(base["post_finetune_acc"])
        theirs.append(after)
        rows.append([seed, pct(base["post_finetune_acc"]), pct(after), milestones["milestones"]])

    gap = statistics.mean(t - o for t, o in zip(theirs, ours))
    Path(args.report).parent.mkdir(parents=True, exist_ok=True)
    Path(args.report).with_suffix(".md").write_text(
        f"""# Finetuning milestones at a short budget: gemminer's vs the authors' rule

- date: {today()}
- machine: {machine()}
- script: `{command_line()}`
- tickets: `{args.fidelity_runs}/all-changes-s<seed>` (ResNet-20, CIFAR-10 10k subset,
  density 1.44 %, 10 mining epochs with today's defaults); each finetuned for 10 epochs,
  SGD LR 0.01, momentum 0.9, weight decay 1e-4, steps ×0.1.

{
            markdown_table(
                [
                    "seed",
                    "post-finetune, steps at 5 and 8 (gemminer)",
                    "post-finetune, steps at 5 and 6 (authors' rule)",
                    "milestones (fractions)",
                ],
                rows,
            )
        }

Mean: {mean_std(ours)} (gemminer) vs {mean_std(theirs)} (authors' rule); difference
{100 * gap:+.2f} points.
"""  # fmt: skip
    )


if __name__ == "__main__":
    main()
