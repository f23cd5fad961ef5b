"""Channel pruning at equal multiply-adds: channel Gem-Miner against its baselines (issue 29).

For each model, fraction of the forward multiply-adds and seed, this prunes with
channel Gem-Miner (``gem-miner --set granularity=channel``; or per weight, then the
channels its ticket keeps most of: ``granularity=channel_from_weight``), random channel
pruning (``channel-random``) and L1-norm filter pruning at initialization (``l1-filter``) —
all keep whole channels, at the same multiply-add target — and, as a reference,
unstructured Gem-Miner at the same fraction *of the weights* (its multiply-adds are
listed: they are not the same), then finetunes every ticket with the same budget.
Accuracy before and after finetuning, on the full test set. Finished runs are skipped,
so it resumes.

    make data
    .venv/bin/python benchmarks/structured_accuracy.py --models resnet20 \\
        --fractions 0.5 0.25 0.1 --seeds 0 1 --epochs 8 --finetune-epochs 8 --threads 2
"""

from __future__ import annotations

import argparse
import csv
import shlex
import statistics
from collections.abc import Callable
from pathlib import Path

from _common import (
    command_line,
    machine,
    markdown_table,
    paired,
    pct,
    portable,
    today,
    train_size_flags,
)

from gemminer.cli import main as gemminer
from gemminer.rundir.runs import RunDir

#: label → (method, extra flags); the label names the row.
METHODS = {
    "channel Gem-Miner": ("gem-miner", ["--set", "granularity=channel"]),
    "channel Gem-Miner (averaged gradient)": (
        "gem-miner",
        ["--set", "granularity=channel", "--set", "channel_gradient=mean"],
    ),
    "channel Gem-Miner (summed gradient)": (
        "gem-miner",
        ["--set", "granularity=channel", "--set", "channel_gradient=sum"],
    ),
    "channel Gem-Miner (Kaiming normal weights)": (
        "gem-miner",
        ["--set", "granularity=channel", "--weight-init", "kaiming_normal"],
    ),
    "channel Gem-Miner (streams whole)": (
        "gem-miner",
        ["--set", "granularity=channel", "--set", "streams=whole"],
    ),
    "channel Gem-Miner (ranked per multiply-add)": (
        "gem-miner",
        ["--set", "granularity=channel", "--set", "channel_rank=score_per_flop"],
    ),
    "channel Gem-Miner (widths from a weight ticket)": (
        "gem-miner",
        ["--set", "granularity=channel_from_weight"],
    ),
    "channel Gem-Miner (widths from a rounded weight ticket)": (
        "gem-miner",
        ["--set", "granularity=channel_from_weight", "--set", "finetune_mask=rounded"],
    ),
    "channel-random": ("channel-random", []),
    "channel-random (streams whole)": ("channel-random", ["--set", "streams=whole"]),
    # Gem-Miner's initialization with uniform widths: how much of a gap is the init's
    "channel-random (signed constant weights)": (
        "channel-random",
        ["--weight-init", "signed_constant"],
    ),
    "l1-filter (at init)": ("l1-filter", []),
    "Gem-Miner (weights, reference)": ("gem-miner", []),
}
#: label → (the row whose tickets it changes, sanity check): the ticket of each seed's run of
#: that row changed by ``gemminer sanity --check`` (same widths and multiply-adds), then
#: finetuned alike — does *which* channels were kept matter, or only how many per set?
CHECKS = {
    "channel Gem-Miner, channels shuffled (sanity check)": ("channel Gem-Miner", "shuffle"),
    "channel Gem-Miner, lowest channels kept (sanity check)": (
        "channel Gem-Miner",
        "invert-posthoc",
    ),
    "channel Gem-Miner ranked per multiply-add, channels shuffled (sanity check)": (
        "channel Gem-Miner (ranked per multiply-add)",
        "shuffle",
    ),
}
#: label → (the row whose tickets it prunes within, the share of their weights kept): Gem-Miner
#: per weight (``--within``) inside each seed's ticket of that row, to that share of its
#: density, mined and finetuned with the same budget — channels first, then weights inside.
WITHIN = {
    "channel Gem-Miner, then half its weights (--within)": ("channel Gem-Miner", 0.5),
    "channel-random, then half its weights (--within)": ("channel-random", 0.5),
}
HEADER = [
    "model", "target (multiply-adds)", "method", "seeds", "multiply-adds kept",
    "density (weights)", "pre-finetune acc", "post-finetune acc (last)", "commands",
]  # fmt: skip


def run_one(
    args: argparse.Namespace, model: str, fraction: float, label: str, seed: int
) -> dict | None:
    """Prune and finetune one run (skipped when finished); its summary and commands (None:
    not finished, with ``--report-only``)."""
    if label in CHECKS or label in WITHIN:
        return derived_row(args, model, fraction, label, seed)
    method, extra = METHODS[label]
    given = (
        "".join(f"-{k}{v:g}" for k, v in (("lr", args.lr), ("lam", args.lam)) if v is not None)
        if method == "gem-miner"
        else ""
    )
    # the values of the extra flags: -channel, -channel-sum, -channel-kaiming_normal
    setting = "".join(f"-{a.rpartition('=')[2]}" for a in extra if not a.startswith("--"))
    slug = f"{model}-{method}{setting}{given}-f{fraction:g}-s{seed}"
    out = Path(args.runs) / slug
    prune = prune_command(args, model, method, extra, fraction, seed, out)
    return finish(args, out, prune, finetune_command(args, out))


def prune_command(
    args: argparse.Namespace,
    model: str,
    method: str,
    extra: list[str],
    density: float,
    seed: int,
    out: Path,
) -> list[str]:
    return [
        "prune", "--method", method, *extra, "--model", model, "--dataset", "cifar10",
        "--data-dir", args.data_dir, "--no-download", *train_size_flags(args.train_size),
        "--density", f"{density:g}", "--epochs", str(args.epochs), "--seed", str(seed),
        "--eval-every", "0", "--no-progress", "--out", str(out),
        *(["--threads", str(args.threads)] if args.threads else []),
        *(["--lr", str(args.lr)] if args.lr and method == "gem-miner" else []),
        *(["--lambda", str(args.lam)] if args.lam is not None and method == "gem-miner" else []),
    ]  # fmt: skip


def finetune_command(args: argparse.Namespace, out: Path) -> list[str]:
    return [
        "finetune", str(out), "--epochs", str(args.finetune_epochs), "--no-progress",
        *(["--lr", str(args.finetune_lr)] if args.finetune_lr else []),
        *(["--threads", str(args.threads)] if args.threads else []),
    ]  # fmt: skip


def finish(
    args: argparse.Namespace, out: Path, make: list[str], finetune: list[str]
) -> dict | None:
    """Make the ticket in ``out`` with ``make`` and finetune it, each step skipped when
    done; the run's summary and commands (None: not finished, with ``--report-only``)."""
    run = RunDir(out)
    finished = (out / "summary.json").is_file() and (
        run.read_summary().get("post_finetune_acc" if args.finetune_epochs else "density")
        is not None
    )
    if args.report_only and not finished:
        return None
    if not (out / "summary.json").is_file() or run.read_summary().get("density") is None:
        if gemminer(make) != 0:
            raise SystemExit(f"making the ticket of {out} failed: see above")
    if args.finetune_epochs and run.read_summary().get("post_finetune_acc") is None:
        if gemminer(finetune) != 0:
            raise SystemExit(f"finetuning {out} failed: see above")
    summary = run.read_summary()
    commands = [
        "gemminer " + " ".join(shlex.quote(portable(a)) for a in argv)
        for argv in (make, finetune if args.finetune_epochs else None)
        if argv
    ]
    return {"summary": summary, "commands": commands, "folder": out}


def derived_one(
    args: argparse.Namespace,
    model: str,
    fraction: float,
    seed: int,
    source_label: str,
    suffix: str,
    make: Callable[[dict, Path], list[str]],
) -> dict | None:
    """A :data:`CHECKS` or :data:`WITHIN` row's run: its source row's run of the same seed
    (made first when missing), turned by the command ``make(source, out)`` into
    ``out = <source>-<suffix>``, then finetuned."""
    source = run_one(args, model, fraction, source_label, seed)
    if source is None:
        return None
    folder = source["folder"]
    out = folder.with_name(f"{folder.name}-{suffix}")
    done = finish(args, out, make(source, out), finetune_command(args, out))
    if done is not None:
        done["commands"] = [source["commands"][0], *done["commands"]]
    return done


def derived_row(
    args: argparse.Namespace, model: str, fraction: float, label: str, seed: int
) -> dict | None:
    """A sanity check of the source row's ticket, or Gem-Miner's weights within it."""
    if label in CHECKS:
        source_label, check = CHECKS[label]
        return derived_one(
            args, model, fraction, seed, source_label, check,
            lambda source, out: ["sanity", str(source["folder"]), "--check", check,
                                 "--no-progress", "--out", str(out)],
        )  # fmt: skip
    source_label, share = WITHIN[label]

    def within(source: dict, out: Path) -> list[str]:
        density = round(share * source["summary"]["density"], 4)
        init = RunDir(source["folder"]).read_config().weight_init  # the same network
        weights = ["--within", str(source["folder"]), "--weight-init", init]
        return prune_command(args, model, "gem-miner", weights, density, seed, out)

    return derived_one(args, model, fraction, seed, source_label, f"within{share:g}", within)


def mean_sd(values: list[float | None]) -> str:
    known = [v for v in values if v is not None]
    if not known:
        return "—"
    if len(known) == 1:
        return pct(known[0])
    return f"{pct(statistics.mean(known))} ± {100 * statistics.stdev(known):.2f}"


def paired_section(
    reference: str, finished: dict[tuple[str, float, str], dict[int, dict]]
) -> list[str]:
    """The report's lines pairing every row with the ``reference`` row of the same model
    and target, seed by seed (post-finetune accuracy, the seeds both finished)."""
    header = [
        "model", "target (multiply-adds)", "method", "seeds paired",
        "difference by seed (points)", "mean ± standard error", "t",
    ]  # fmt: skip
    rows = []
    for (model, fraction, label), runs in finished.items():
        base = finished.get((model, fraction, reference), {})
        if label == reference or not base:
            continue
        acc = {s: d["summary"].get("post_finetune_acc") for s, d in runs.items()}
        ref = {s: d["summary"].get("post_finetune_acc") for s, d in base.items()}
        seeds = [s for s in runs if acc[s] is not None and ref.get(s) is not None]
        if seeds:
            diffs = [acc[s] - ref[s] for s in seeds]
            rows.append([model, pct(fraction), label, ", ".join(map(str, seeds)), *paired(diffs)])
    if not rows:
        return []
    return [
        f"Paired by seed against {reference} (post-finetune accuracy, last epoch; t: the "
        "mean over its standard error, on one degree of freedom fewer than the seeds):",
        "",
        markdown_table(header, rows),
        "",
    ]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=["resnet20"])
    p.add_argument("--fractions", nargs="+", type=float, default=[0.5, 0.25, 0.1])
    p.add_argument(
        "--methods",
        nargs="+",
        default=[*METHODS, *CHECKS, *WITHIN],
        choices=[*METHODS, *CHECKS, *WITHIN],
    )
    p.add_argument("--seeds", nargs="+", type=int, default=[0])
    p.add_argument("--epochs", type=int, default=8, help="mining / L1-training epochs")
    p.add_argument("--finetune-epochs", type=int, default=8)
    p.add_argument(
        "--finetune-lr", type=float, default=None, help="finetuning LR (default: the run's)"
    )
    p.add_argument("--train-size", type=int, default=10000)
    p.add_argument("--lr", type=float, default=None, help="Gem-Miner's LR (default: resolved)")
    p.add_argument("--lam", type=float, default=None, help="Gem-Miner's λ (default: resolved)")
    p.add_argument("--data-dir", default=".data/cifar10")
    p.add_argument("--runs", default="benchmarks/runs/structured")
    p.add_argument("--report", default="benchmarks/results/structured_accuracy")
    p.add_argument("--notes", default="", help="a reading added under the table")
    p.add_argument("--threads", type=int, default=None, help="CPU threads of each run")
    p.add_argument(
        "--report-only", action="store_true",
        help="run nothing: the table of the finished runs among --seeds (each row names its seeds)",
    )  # fmt: skip
    p.add_argument(
        "--paired-against", metavar="LABEL", nargs="+", default=[],
        help="also tabulate each row's post-finetune accuracy minus each of these rows' (of "
        "--methods), paired by seed",
    )  # fmt: skip
    args = p.parse_args()
    for label in args.paired_against:
        if label not in args.methods:
            p.error(f"--paired-against {label!r} is not among --methods")

    rows = []
    finished: dict[tuple[str, float, str], dict[int, dict]] = {}
    for model in args.models:
        for fraction in args.fractions:
            for label in args.methods:
                runs = {seed: run_one(args, model, fraction, label, seed) for seed in args.seeds}
                kept = {seed: d for seed, d in runs.items() if d is not None}
                finished[model, fraction, label] = kept
                seeds, done = list(kept), list(kept.values())
                if not done:
                    continue
                s = [d["summary"] for d in done]
                flops = [x["ticket_flops"] / x["dense_flops"] for x in s if x.get("dense_flops")]
                row = [
                    model,
                    pct(fraction),
                    label,
                    ", ".join(map(str, seeds)),
                    mean_sd(flops),
                    mean_sd([x["density"] for x in s]),
                    mean_sd([x["pre_finetune_acc"] for x in s]),
                    mean_sd([x.get("post_finetune_acc") for x in s]),
                    "<br>".join(f"`{c}`" for c in done[0]["commands"]),
                ]
                rows.append(row)
                print(" | ".join(row[:8]), flush=True)

    report = Path(args.report)
    report.parent.mkdir(parents=True, exist_ok=True)
    with open(report.with_suffix(".csv"), "w", newline="") as f:
        csv.writer(f).writerows([HEADER, *rows])
    text = [
        "# Channel pruning at equal multiply-adds",
        "",
        f"- Date: {today()}",
        f"- Machine: {machine(args.threads)}",
        f"- Script: `{command_line(elide=('--notes',))}`",
        f"- Budget: {args.epochs} pruning epochs (Gem-Miner's mining; none for the one-shot "
        f"baselines) and {args.finetune_epochs} finetuning epochs on a seeded "
        f"{args.train_size or 50000}-image subset of CIFAR-10's training set, accuracy on the "
        "full 10k test set, last epoch. Mean ± standard deviation over the seeds. "
        f"Finetuning LR: {args.finetune_lr or 'the run default (Table 15 by the target)'}; "
        "each method starts from its registered weight initialization (Gem-Miner: signed "
        "constant; the baselines: Kaiming normal).",
        *(
            [
                "- `--report-only`: the finished runs among the seeds given, each row naming "
                "its own; the same command without it runs the missing ones."
            ]
            if args.report_only
            else []
        ),
        "- The target is a fraction of the forward multiply-adds for the channel "
        "methods; the unstructured reference keeps that fraction of the *weights* "
        "(its multiply-adds are the column's).",
        "",
        markdown_table(HEADER, rows),
        "",
    ]
    for reference in args.paired_against:
        text += paired_section(reference, finished)
    if args.notes:
        text += [args.notes, ""]
    report.with_suffix(".md").write_text("\n".join(text))


if __name__ == "__main__":
    main()
