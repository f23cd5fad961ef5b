"""bf16 autocast against fp32: Gem-Miner on ResNet-20, the real CIFAR-10, several seeds.

The decision rule of the paper-budget issue: if bf16's accuracies lie within fp32's
seed-to-seed spread, `--precision auto` (bf16 where the device runs it fast) may be the
default. Every row is one plain `gemminer mine ... && gemminer finetune ...` command into its
own folder under --runs (finished rows are skipped, so the script resumes). The fp32 command
is exactly `benchmarks/fidelity.py`'s "all changes" row: pass `--reuse benchmarks/runs/fidelity`
to take those finished folders instead of training them again (the report says so).

    make data
    .venv/bin/python benchmarks/precision.py --train-size 10000 --epochs 10 --seeds 0,1,2
"""

from __future__ import annotations

import argparse
import csv
import shutil
import statistics
import time
from pathlib import Path

from _common import command_line, machine, markdown_table, mean_std, pct, today, train_size_flags

from gemminer.cli import main as gemminer
from gemminer.rundir.runs import RunDir

PRECISIONS = ("fp32", "bf16")
COLUMNS = {
    "ticket density": "density",
    "rare gem density": "gem_density",
    "rare gem acc": "gem_acc",
    "rare gem acc (mining's BN)": "gem_acc_running_bn",
    "post-finetune acc": "post_finetune_acc",
}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", default=".data/cifar10")
    p.add_argument("--density", default="0.0144")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--finetune-epochs", type=int, default=10)
    p.add_argument("--train-size", type=int, default=10000)
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--runs", default="benchmarks/runs/precision")
    p.add_argument(
        "--reuse", default="", help="a fidelity.py --runs folder whose all-changes-s<seed> are fp32"
    )
    p.add_argument("--report", default="benchmarks/results/precision_resnet20_cifar10")
    p.add_argument("--note", action="append", default=[], help="a line for the report's notes")
    args = p.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]

    runs, records = Path(args.runs), []
    for precision in PRECISIONS:
        for seed in seeds:
            out = runs / f"{precision}-s{seed}"
            argv = [
                "mine", "--model", "resnet20", "--data-dir", args.data_dir, "--no-download",
                *train_size_flags(args.train_size), "--density", args.density,
                "--epochs", str(args.epochs), "--finetune-epochs", str(args.finetune_epochs),
                "--seed", str(seed), "--no-epoch-eval", "--no-progress",
                "--precision", precision, "--out", str(out),
            ]  # fmt: skip
            finetune = ["finetune", str(out), "--no-progress", "--precision", precision]
            reused = Path(args.reuse) / f"all-changes-s{seed}"
            reuse = precision == "fp32" and bool(args.reuse)
            if reuse and not out.exists():
                if RunDir(reused).read_summary().get("post_finetune_acc") is None:
                    raise SystemExit(f"{reused} holds no finished run to reuse")
                shutil.copytree(reused, out)
            if RunDir(out).read_summary().get("post_finetune_acc") is None:
                start = time.time()
                if gemminer(argv) != 0 or gemminer(finetune) != 0:
                    raise SystemExit(f"{precision}, seed {seed} failed")
                print(f"{precision}, seed {seed}: {time.time() - start:.0f} s", flush=True)
            source = f"benchmarks/fidelity.py ({reused})" if reuse else "this script"
            s = RunDir(out).read_summary()
            records.append(
                {"precision": precision, "seed": seed,
                 **{key: s.get(key) for key in COLUMNS.values()},
                 "seconds_mask": round(s.get("seconds_mask", 0.0)),
                 "seconds": round(s.get("seconds", 0.0)), "ran_by": source,
                 "command": "gemminer " + " ".join(argv) + " && gemminer " + " ".join(finetune)}
            )  # fmt: skip
            write_report(records, Path(args.report), args)


def _verdict(records: list[dict]) -> str:
    """Is bf16's mean post-finetune accuracy within, above or below fp32's spread (fp32's
    mean ± 1 sample std)?"""
    acc = {p: [r["post_finetune_acc"] for r in records if r["precision"] == p] for p in PRECISIONS}
    if min(len(v) for v in acc.values()) < 2:
        return "Too few seeds yet for a verdict."
    fp32_mean, fp32_std = statistics.mean(acc["fp32"]), statistics.stdev(acc["fp32"])
    bf16_mean = statistics.mean(acc["bf16"])
    gap = bf16_mean - fp32_mean
    where = "within" if abs(gap) <= fp32_std else ("above" if gap > 0 else "below")
    secs = {p: statistics.mean(r["seconds"] for r in records if r["precision"] == p)
            for p in PRECISIONS}  # fmt: skip
    return (
        f"bf16 − fp32, mean post-finetune accuracy: {100 * gap:+.2f} points; fp32's "
        f"seed-to-seed std: {100 * fp32_std:.2f} points → bf16 is {where} fp32's spread "
        "(the rule: bf16 may be the default unless below). Mean wall-clock per run (mining + "
        f"finetuning): fp32 {secs['fp32']:.0f} s, bf16 {secs['bf16']:.0f} s. These seconds are "
        "only as clean as the machine was quiet; the step speed of each precision is measured "
        "by `benchmarks/throughput.py` (interleaved rounds)."
    )


def write_report(records: list[dict], report: Path, args: argparse.Namespace) -> None:
    report.parent.mkdir(parents=True, exist_ok=True)
    with open(report.with_suffix(".csv"), "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(records[0]))
        writer.writeheader()
        writer.writerows(records)
    rows = [
        [r["precision"], r["seed"], *(pct(r[k]) for k in COLUMNS.values()),
         r["seconds_mask"], r["seconds"], r["ran_by"]]
        for r in records
    ]  # fmt: skip
    summary = [
        [p, *(mean_std([r[k] for r in records if r["precision"] == p and r[k] is not None])
              for k in COLUMNS.values())]
        for p in PRECISIONS
        if any(r["precision"] == p for r in records)
    ]  # fmt: skip
    header = ["precision", "seed", *COLUMNS, "seconds (mining)", "seconds (all)", "ran by"]
    density = f"{float(args.density):.2%}"
    commands = "\n".join(f"- {r['precision']}, seed {r['seed']}: `{r['command']}`" for r in records)
    notes = "".join(f"- note: {line}\n" for line in args.note)
    report.with_suffix(".md").write_text(
        f"""# Precision: bf16 autocast vs fp32, Gem-Miner, ResNet-20, CIFAR-10, density {density}

- date: {today()}
- machine: {machine()}
- script: `{command_line()}`
{notes}- budget: {args.train_size or 50000} training images (seeded subset), the full 10,000-image
  test set; {args.epochs} mining + {args.finetune_epochs} finetune epochs, today's defaults.
- bf16: autocast of the forward and backward passes; scores, weights, gradients and the
  optimizer stay fp32.

## Every run

{markdown_table(header, rows)}

## Mean ± sample std over seeds

{markdown_table(["precision", *COLUMNS], summary)}

{_verdict(records)}

## Commands

{commands}
"""
    )


if __name__ == "__main__":
    main()
