"""A short VGG-16 run that is worth running: λ at a short Adam budget (issue 26, 4).

``--recipe`` runs another row the same way (e.g. MobileNet-V2's, which mines with SGD).

The VGG-16 rows mine with Adam, whose LR cannot carry a shorter budget (a larger LR flips
the masks), so at the paper's λ a short run keeps its scores above 0.5 and every freeze
cuts live weights. For each λ variant — ``rule`` (today's default,
:func:`gemminer.settings.config.budget_scaled_lambda`: Adam's λ × √(the row's steps / the
run's), SGD's raised to a floor on its summed pull; its run folder is named by its value,
so a changed rule mines anew) and any λ given — this mines `gemminer run RECIPE --epochs E
--train-size N --lambda λ` and reports the rare gem (the rounded mask) and the ticket (the
flags, the target density) before finetuning, with λ's summed pull for SGD and the
rounded density against the freezing bound per epoch; the variants named in
``--finetune`` are finetuned too. Finished runs are skipped, so it resumes.

    make data
    .venv/bin/python benchmarks/vgg_short_budget.py --epochs 8 --train-size 10000 \\
        --lambdas rule 1e-6 5e-6 1e-5 --finetune rule
"""

from __future__ import annotations

import argparse
import csv
import shlex
from pathlib import Path

from _common import command_line, machine, markdown_table, pct, portable, today, train_size_flags

from gemminer import stages
from gemminer.cli import resolve_run
from gemminer.masking import format_density
from gemminer.rundir.runs import RunDir
from gemminer.settings.config import DEFAULT_PRECISION, lambda_pull
from gemminer.settings.recipe import load_recipe
from gemminer.settings.resolve import steps_per_epoch
from gemminer.training.runtime import Runtime, start_runtime

HEADER = [
    "λ", "summed pull 2λ·lr·steps (SGD)", "rare gem: density", "rare gem: acc",
    "ticket (flags): density",
    "ticket: pre-finetune acc", "post-finetune acc", "epochs (mine + finetune)", "command",
]  # fmt: skip


def source(lam: float, rule: float, row: float | None) -> str:
    """Where a variant's λ comes from: today's rule, the recipe row's own, or given."""
    names = [n for n, v in (("rule", rule), ("the row's", row)) if v is not None and lam == v]
    return " = ".join(names) or "given"


def pull(cfg) -> str:
    """λ's summed pull over the run for SGD (:func:`gemminer.settings.config.lambda_pull`),
    "—" for Adam, whose step does not scale with the gradient."""
    optim = cfg.prune.optim
    per_epoch = steps_per_epoch(cfg.dataset, cfg.train_size, cfg.val_size, cfg.prune.batch_size)
    if optim.name != "sgd" or per_epoch is None:
        return "—"
    return f"{lambda_pull(cfg.settings['lam'], optim.lr, cfg.prune.epochs * per_epoch):.3g}"


def run_variant(
    args: argparse.Namespace, label: str, runtime: Runtime, rule: float, row_lam: float | None
) -> tuple[list[str], list[dict]]:
    """Mine (and, if asked, finetune) one λ variant; its table row and mining records."""
    argv = [
        args.recipe, "--data-dir", args.data_dir, "--no-download", "--epochs", str(args.epochs),
        *train_size_flags(args.train_size), "--no-epoch-eval", "--no-progress",
        *(["--lambda", label] if label != "rule" else []),
    ]  # fmt: skip
    _, cfg = resolve_run(argv)
    lam = cfg.settings["lam"]
    # the rule's folder is named by its value, so a changed rule mines anew
    out = Path(args.runs) / f"lam-{f'{lam:g}' if label == 'rule' else label}"
    argv += ["--out", str(out)]  # the folder only: the settings are those resolved above
    stages.prune_run(cfg, out, progress=False, runtime=runtime)
    finetune = label in args.finetune
    if finetune and RunDir(out).read_summary().get("post_finetune_acc") is None:
        stages.finetune_run(out, progress=False, runtime=runtime)
    s = RunDir(out).read_summary()
    finetuned = s.get("post_finetune_acc") is not None  # here or by an earlier command
    row = [
        f"{lam:g} ({source(lam, rule, row_lam)})",
        pull(cfg),
        pct(s.get("gem_density")),
        pct(s.get("gem_acc")),
        format_density(s["density"]),
        pct(s["pre_finetune_acc"]),
        pct(s.get("post_finetune_acc")),
        f"{s['epochs_mining']} + {s['epochs_finetune'] if finetuned else 0}",
        "gemminer run "
        + " ".join(shlex.quote(portable(a)) for a in argv)
        + ("" if finetuned else " --no-finetune"),
    ]
    mining = [r for r in RunDir(out).read_metrics() if r.get("phase") == "mine"]
    return row, mining


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--recipe", default="vgg16-cifar10-d1.4")
    p.add_argument("--lambdas", nargs="+", default=["rule", "1e-6", "5e-6", "1e-5"])
    p.add_argument("--finetune", nargs="*", default=["rule"], help="variants to finetune")
    p.add_argument("--data-dir", default=".data/cifar10")
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--train-size", type=int, default=10000)
    p.add_argument("--runs", default="benchmarks/runs/vgg-short")
    p.add_argument("--report", default="benchmarks/results/vgg_short_budget")
    p.add_argument("--notes", default="", help="a reading added under the tables")
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: PyTorch's)")
    p.add_argument("--precision", default=DEFAULT_PRECISION, help="as `gemminer run --precision`")
    args = p.parse_args()

    budget = [args.recipe, "--epochs", str(args.epochs), *train_size_flags(args.train_size)]
    rule = resolve_run(budget)[1].settings["lam"]
    row_lam = load_recipe(args.recipe).lam
    rows, curves = [], {}
    with start_runtime(precision=args.precision, threads=args.threads) as (runtime, _):
        for label in args.lambdas:
            row, mining = run_variant(args, label, runtime, rule, row_lam)
            rows.append(row)
            curves[row[0]] = mining
            print(" | ".join(row[:8]), flush=True)
        where = f"{runtime.precision}" + (
            f" ({runtime.precision_reason})" if runtime.precision_reason else ""
        )

    optimizer = resolve_run([args.recipe, "--epochs", str(args.epochs)])[1].prune.optim.name
    name = "Adam" if optimizer == "adam" else optimizer.upper()
    scaled = (
        "The recipe's Adam LR (kept) and its period scaled to the budget"
        if optimizer == "adam"
        else f"The recipe's {name} LR scaled to the same summed LR and its period to the budget"
    )
    report = Path(args.report)
    with open(report.with_suffix(".csv"), "w", newline="") as f:
        csv.writer(f).writerows([HEADER, *rows])
    epochs = max((len(c) for c in curves.values()), default=0)
    per_epoch = [
        [str(e + 1)]
        + [
            f"{pct(c[e].get('density'))} / {pct(c[e].get('train_acc'))}" if e < len(c) else ""
            for c in curves.values()
        ]
        + [pct(next(iter(curves.values()))[e].get("bound"))]
        for e in range(epochs)
    ]
    text = [
        f"# {args.recipe} at a short budget: λ for {name}",
        "",
        f"- Date: {today()}",
        f"- Machine: {machine(args.threads)}; precision {where}",
        f"- Script: `{command_line(elide=('--notes',))}`",
        f"- Budget: {args.epochs} mining epochs on a seeded {args.train_size}-image subset "
        "of the training set (finetuning as many where listed), accuracy on the full 10k "
        f"test set. {scaled}; λ per row. The "
        "rare gem is the rounded mask 1[p ≥ 0.5] ⊙ q before finetuning (BatchNorm "
        "re-estimated); the ticket is the flags q, which are finetuned.",
        "",
        markdown_table(HEADER, rows),
        "",
        "Per mining epoch: rounded density (after freezing) / training accuracy, and the "
        "freezing bound.",
        "",
        markdown_table(["epoch", *curves, "bound"], per_epoch),
        "",
    ]
    if args.notes:
        text += [args.notes, ""]
    report.with_suffix(".md").write_text("\n".join(text))


if __name__ == "__main__":
    main()
