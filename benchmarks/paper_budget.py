"""The paper's headline at the paper's budget: ResNet-20, CIFAR-10, density 1.44 %, 150 + 150.

Runs (or resumes, from the run folder's checkpoint) exactly the README's main job —
`make demo PRECISION=<p> EVAL_EVERY=<n>`, i.e. `gemminer mine ... --epochs 150 --finetune`
into its default run folder under runs/ — and, with `--smart-ratio`, Smart Ratio at the same
density twice: finetuned as Gem-Miner's ticket is (Table 15: LR 0.01, 150 epochs, plain Kaiming
weights; the issue's comparison) and with its own defaults, its authors' configuration
(configs/sr/resnet20/resnet20_sr.yml: LR 0.1, 160 epochs, Kaiming √2 wider; what produced the
paper's 65.61 %, see gemminer.methods.smart_ratio). Then writes
benchmarks/results/paper_budget_resnet20_cifar10.md (+ a per-epoch CSV and the `gemminer
report` figures) beside the paper's figures. A run that has not finished yet is reported as
far as it got, so the script can be run at any time.

    make data
    .venv/bin/python benchmarks/paper_budget.py --precision bf16 --eval-every 5 --threads 2
    .venv/bin/python benchmarks/paper_budget.py --precision bf16 --eval-every 5 --threads 2 \
        --report-only --keep-notes

`--dense` adds the dense ResNet-20 (the paper's weight training, beside He et al.'s
published 91.25 %); `--their-recipe` Gem-Miner under the recipe of the authors' one stored
full-budget run (λ 5e-5, period 8, to 1.80 %: is our mining theirs, given their recipe?);
`--their-recipe-1.44` the same recipe down to the paper's 1.44 % (recipe or density?);
`--candidate N` (repeatable, 2–6) the authors' tuning candidate confN for this row (mining LR
and λ; conf1 is the default run), `--candidate N:SEED` the same at another seed (rows
"..., seed S"; the report gives a candidate's mean ± std once two of its seeds have finished);
`--only ROW` runs only the rows named (`their-recipe`, `their-recipe-1.44`, `confN` or
`confN:SEED` for those) and reports the others as they stand.
`--also fp32:1` adds a Gem-Miner run of another seed and precision (repeatable), and the
report the mean ± std of the finished Gem-Miner runs' last and best epochs. A run longer
than a working session travels to the next checkout: `--carry-out` copies each unfinished
run's small files (config, records, mining's outputs, the stage's checkpoint: ~6 MiB for
ResNet-20) into `benchmarks/carry/` to commit, and the next run of the script puts them back
and resumes; a run that finishes drops its carried copy. A run stopped (SIGTERM or Ctrl-C:
it checkpoints first) or failed still gets the report written, every row as it stands, and
the rows after it are not started; the script then exits with the reason. `--time-limit
2h50m` stops that way by itself before a session or job ends (each run gets what is left
as gemminer's `--time-limit`).

`--keep-notes` keeps the notes of the report already written (a resumed run that finishes
rewrites the report; pass it there too). Run folders are ignored by git, so a new checkout
holds none: a finished run whose folder is gone keeps the row, per-epoch records and figures
of the report already written rather than running again (delete its row to rerun it); the
figures of runs finished since then go to a folder of their own beside them.

Times are the sums of the epochs' own seconds (training and the epoch's evaluation; a run
resumed across sessions adds its processes' epochs), with the median epoch beside them: an
epoch run while other jobs shared the CPU is slower, the median is the machine alone.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import re
import shutil
import statistics
import time
from pathlib import Path

from _common import (
    add_carry_arguments,
    carry_in,
    carry_out,
    command_line,
    finetuning_so_far,
    machine,
    markdown_table,
    mean_std,
    pct,
    today,
)

from gemminer.cli import EXIT_INTERRUPTED, build_parser, config_from_args
from gemminer.cli import main as gemminer
from gemminer.errors import ConfigError
from gemminer.rundir.runs import RunDir, default_run_name
from gemminer.rundir.summary import BestEpoch, best_epoch
from gemminer.settings.options import duration

#: The paper's figures for this setting: Gem-Miner (Fig. 3, Table 4) and Smart Ratio
#: (Table 16), post-finetune test accuracy at density 1.44 %.
#: The label of Smart Ratio finetuned as Gem-Miner's ticket is (Table 15's row); the paper
#: prints one Smart Ratio figure, made under its authors' finetuning.
SR_AS_GM = "smart-ratio, finetuned as gem-miner"
PAPER = {"gem-miner": 0.7789, "smart-ratio": 0.6561, SR_AS_GM: 0.6561}
#: A row at another seed is its recipe's row + this + the seed (+ ", precision").
SEED_SUFFIX = ", seed "
#: Dense weight training (``--dense``): the paper plots its dense line without printing it;
#: the reference is ResNet-20's published 8.75 % error (He et al. 2016, Table 6).
PAPER["dense"] = 0.9125
#: ``--their-recipe``: Gem-Miner under the recipe of the one full-budget run whose ticket
#: the authors stored (commit 6c135221, results/SGD_finetune_L2/...: λ 5e-5, a fifth of the
#: live weights frozen every 8 epochs, 18 times, to 0.8^18 = 1.8014 %; their rare gem
#: 1.7467 %, the rounded mask r(p) ⊙ q their code of that time finetuned, as here); beside
#: it their log's last finetuning epoch (exact pixels).
THEIRS = "gem-miner under their stored run's recipe (λ 5e-5, period 8, to 1.80 %)"
PAPER[THEIRS] = 0.7935
#: ``--their-recipe-1.44``: the same recipe down to the paper's 1.44 % (18 freezes keeping
#: 0.0144^(1/18) = 79.0 % each): with ``--their-recipe``, it parts the recipe's effect from
#: the density's; beside it the paper's 77.89 %, whose own recipe the authors did not store.
THEIRS_144 = "gem-miner under their stored run's recipe (λ 5e-5, period 8), to 1.44 %"
PAPER[THEIRS_144] = PAPER["gem-miner"]
#: ``--candidate N``: the authors' tuning candidates for this row (their commit a952c340,
#: configs/param_tuning/resnet20_1_44/confN.yml, in sweeps/resnet20-1.44-candidates.yaml's
#: grid order): mining LR and λ, all else Table 8's row (SGD cosine, period 5, the flags
#: finetuned). conf1 (LR 0.1, λ 1e-4) is that row itself, the "gem-miner" run.
CANDIDATES = {2: (0.1, 5e-5), 3: (0.1, 5e-4), 4: (0.01, 1e-4), 5: (0.01, 5e-5), 6: (0.01, 5e-4)}


def candidate_row(n: int, seed: int = 0) -> str:
    """The row of the authors' candidate ``confN`` at ``seed`` (outside the paper setting's
    spread; its seeds have a spread of their own)."""
    lr, lam = CANDIDATES[n]
    row = f"gem-miner under the authors' 1.44 % candidate conf{n} (LR {lr:g}, λ {lam:g})"
    return row if seed == 0 else f"{row}{SEED_SUFFIX}{seed}"


#: Which of the six gave the published 77.89 % is not stored: each stands beside it.
PAPER |= {candidate_row(n): PAPER["gem-miner"] for n in CANDIDATES}
#: Short names for ``--only`` (a row's own name works too; ``confN:SEED`` too, see ``row_name``).
ROW_NAMES = {
    "their-recipe": THEIRS,
    "their-recipe-1.44": THEIRS_144,
    **{f"conf{n}": candidate_row(n) for n in CANDIDATES},
}


def row_name(name: str) -> str:
    """The row ``--only``'s ``name`` means: a short name, ``confN:SEED``, or a row's own."""
    conf = re.fullmatch(r"conf(\d+):(\d+)", name)
    if conf and int(conf[1]) in CANDIDATES:
        return candidate_row(int(conf[1]), int(conf[2]))
    return ROW_NAMES.get(name, name)


def recipe(method: str) -> str:
    """The row ``method`` is a seed of (``"gem-miner, seed 1, fp32"`` → ``"gem-miner"``)."""
    return method.split(SEED_SUFFIX)[0]


#: ``guarded``: the weights (or channels) the collapse guard kept in that mining epoch.
COLUMNS = (
    "phase", "epoch", "loss", "train_acc", "test_acc", "density", "bound", "lr", "seconds",
    "guarded",
)  # fmt: skip


def _with(argv: list[str], flag: str, value: str) -> list[str]:
    """``argv`` with ``flag``'s value replaced by ``value``."""
    i = argv.index(flag)
    return [*argv[: i + 1], value, *argv[i + 2 :]]


def commands(args: argparse.Namespace) -> dict[str, list[str]]:
    common = ["--dataset", "cifar10", "--data-dir", args.data_dir, "--density", "0.0144"]
    common += ["--precision", args.precision, "--eval-every", str(args.eval_every)]
    if args.threads:
        common += ["--threads", str(args.threads)]  # not part of the run folder's name
    runs = {
        "gem-miner": ["mine", "--model", "resnet20", *common, "--epochs", "150", "--finetune"],
    }
    for spec in args.also:  # more Gem-Miner runs: other seeds and precisions
        precision, seed = spec
        runs[f"gem-miner{SEED_SUFFIX}{seed}, {precision}"] = [
            "mine", "--model", "resnet20", *_with(common, "--precision", precision),
            "--seed", str(seed), "--epochs", "150", "--finetune",
        ]  # fmt: skip
    theirs = ["--lambda", "5e-5", "--period", "8", "--set", "finetune_mask=rounded"]
    if args.their_recipe:
        runs[THEIRS] = [
            "mine", "--model", "resnet20", *_with(common, "--density", "0.018014"), *theirs,
            "--epochs", "150", "--finetune",
        ]  # fmt: skip
    if args.their_recipe_144:
        runs[THEIRS_144] = [
            "mine", "--model", "resnet20", *common, *theirs, "--epochs", "150", "--finetune",
        ]  # fmt: skip
    for n, seed in args.candidate:
        lr, lam = CANDIDATES[n]
        runs[candidate_row(n, seed)] = [
            "mine", "--model", "resnet20", *common, "--lr", f"{lr:g}", "--lambda", f"{lam:g}",
            *(["--seed", str(seed)] if seed else []), "--epochs", "150", "--finetune",
        ]  # fmt: skip
    if args.smart_ratio:
        smart = [
            "prune",
            "--method",
            "smart-ratio",
            "--model",
            "resnet20",
            *common,
            "--epochs",
            "0",
        ]
        runs[SR_AS_GM] = [
            *smart, "--finetune-epochs", "150", "--finetune-lr", "0.01",
            "--finetune-milestones", "80,120", "--weight-init", "kaiming_normal", "--finetune",
        ]  # fmt: skip
        runs["smart-ratio"] = [*smart, "--finetune"]
    if args.dense:  # the paper's weight training: Table 15's LR 0.1, 150 epochs, Kaiming
        runs["dense"] = [
            "prune", "--method", "dense", "--model", "resnet20", *_with(common, "--density", "1"),
            "--epochs", "0", "--finetune",
        ]  # fmt: skip
    return runs


def _precision_seed(text: str) -> tuple[str, int]:
    precision, _, seed = text.partition(":")
    if precision not in ("fp32", "bf16") or not seed.isdigit():
        raise argparse.ArgumentTypeError(f"expected PRECISION:SEED such as fp32:1, not {text!r}")
    return precision, int(seed)


def _candidate(text: str) -> tuple[int, int]:
    n, _, seed = text.partition(":")
    if not n.isdigit() or int(n) not in CANDIDATES or (seed and not seed.isdigit()):
        raise argparse.ArgumentTypeError(
            f"expected a candidate {min(CANDIDATES)}-{max(CANDIDATES)}, optionally with a "
            f"seed (N or N:SEED, such as 2 or 2:1), not {text!r}"
        )
    return int(n), int(seed or 0)


def run_folder(argv: list[str]) -> Path:
    """The default folder the command writes to (as `make demo` does, no --out)."""
    return Path("runs") / default_run_name(config_from_args(build_parser().parse_args(argv)))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", default=".data/cifar10")
    p.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16"))
    p.add_argument("--eval-every", type=int, default=1)
    p.add_argument(
        "--smart-ratio", action="store_true", help="also run Smart Ratio (both finetunings)"
    )
    p.add_argument(
        "--dense",
        action="store_true",
        help="also train the dense ResNet-20 (the paper's weight training: LR 0.1, 150 epochs)",
    )
    p.add_argument(
        "--their-recipe",
        action="store_true",
        help="also mine with the recipe of the authors' stored full-budget run "
        "(λ 5e-5, period 8, to 1.80 %%)",
    )
    p.add_argument(
        "--their-recipe-1.44",
        dest="their_recipe_144",
        action="store_true",
        help="also mine with that recipe down to the paper's 1.44 %% (parts recipe from density)",
    )
    p.add_argument(
        "--candidate",
        type=_candidate,
        action="append",
        default=[],
        metavar="N[:SEED]",
        help="also mine with the authors' 1.44 %% tuning candidate confN, 2-6, at seed SEED "
        "(default 0; repeatable; --only confN or confN:SEED runs it alone)",
    )
    p.add_argument("--report-only", action="store_true", help="report what the folders hold")
    p.add_argument(
        "--only",
        action="append",
        default=[],
        metavar="ROW",
        help="run only this row (repeatable, e.g. dense, their-recipe-1.44); report the others",
    )
    p.add_argument("--threads", type=int, default=0, help="CPU threads (default: PyTorch's)")
    p.add_argument(
        "--time-limit",
        type=_duration,
        metavar="DURATION",
        help="stop once this long has passed (2h50m, 2:50:00): each run gets what is left as "
        "gemminer's --time-limit, checkpoints and stops; the report is written, then "
        "--carry-out can follow",
    )
    p.add_argument("--note", action="append", default=[], help="a line for the report")
    p.add_argument(
        "--keep-notes",
        action="store_true",
        help="keep the notes of the report already there (then add --note's)",
    )
    p.add_argument(
        "--also",
        type=_precision_seed,
        action="append",
        default=[],
        metavar="PRECISION:SEED",
        help="another Gem-Miner run, e.g. fp32:1 (repeatable; rows 'gem-miner, seed 1, fp32')",
    )
    add_carry_arguments(p)
    p.add_argument("--report", default="benchmarks/results/paper_budget_resnet20_cifar10")
    args = p.parse_args()
    if args.carry_out:
        for method, argv in commands(args).items():
            print(f"{method}: {carry_out(run_folder(argv), args.carry)}")
        return

    deadline = None if args.time_limit is None else time.monotonic() + args.time_limit
    report = Path(args.report)
    committed = committed_rows(report)
    rows, per_epoch = [], []
    stopped = ""  # why a run stopped: the rows after it are reported as they stand, not run
    for method, argv in commands(args).items():
        out = run_folder(argv)
        carry_in(out, args.carry)
        kept = committed.get(str(out))
        only = {row_name(name) for name in args.only}
        run_it = not args.report_only and not stopped and (not args.only or method in only)
        if not out.is_dir() and kept and (kept["post"] is not None or not run_it):
            rows.append(kept)  # a new checkout holds no run folders: keep what was measured
            per_epoch += kept["records"]
            continue
        finished = RunDir(out).read_summary().get("post_finetune_acc") is not None
        left = None if deadline is None else deadline - time.monotonic()
        if run_it and not finished and left is not None and left < 1:
            stopped = f"the time limit passed before the row {method!r} started; run this again"
            run_it = False
        limit = [] if left is None else ["--time-limit", f"{math.ceil(left)}s"]
        status = gemminer([*argv, *limit]) if run_it and not finished else 0
        if status == EXIT_INTERRUPTED:
            stopped = f"{method} stopped; run this again to resume it from {out}"
        elif status != 0:
            stopped = f"{method} failed; its folder {out} keeps what was done"
        rows.append(_row(method, out, argv))
        if rows[-1]["post"] is not None:
            shutil.rmtree(args.carry / out.name, ignore_errors=True)  # finished: nothing to carry
        per_epoch += [{"method": method, **r} for r in rows[-1]["records"]]
    notes = [*(kept_notes(report) if args.keep_notes else []), *args.note]
    finished = [r["folder"] for r in rows if r["post"] is not None and not r.get("kept")]
    figures = figures_folder(report, finished, rows)
    write_report(rows, per_epoch, report, machine(args.threads or None), notes, figures)
    if finished:
        gemminer(["report", *finished, "--out", str(figures)])
    if stopped:  # the report holds every row so far, the stopped one as it stands
        raise SystemExit(stopped)


def _duration(text: str) -> float:
    """``--time-limit``'s seconds (gemminer's own reading of a duration)."""
    try:
        return duration(text)
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def figures_folder(report: Path, finished: list[str], rows: list[dict]) -> Path:
    """Where `gemminer report` draws the finished runs: the report's folder, or, while rows
    are kept from an earlier checkout (their figures are already there and their folders are
    gone), a folder of its own beside them, named after the first new run's folder."""
    if not finished or not any(r.get("kept") and r["post"] is not None for r in rows):
        return report
    return report / Path(finished[0]).name


def kept_notes(report: Path) -> list[str]:
    """The notes of the report ``report``.md already written (none if there is none)."""
    path = Path(f"{report}.md")
    if not path.is_file():
        return []
    prefix = "- note: "
    return [
        line[len(prefix) :] for line in path.read_text().splitlines() if line.startswith(prefix)
    ]


HEADER = ["method", "epochs done", "ticket density", "ticket pre-finetune acc",
          "rounded mask (rare gem) density", "rare gem acc (BN re-estimated / mining's)",
          "post-finetune acc", "best post-finetune acc (epoch)", "paper", "mining time",
          "finetuning time", "precision"]  # fmt: skip
#: The column added after a report was first written: rows of a report without it get it
#: from their per-epoch records.
BEST = "best post-finetune acc (epoch)"
_COMMAND = re.compile(r"^- (?P<method>.+?): `gemminer (?P<argv>.+)` → `(?P<folder>.+)`$")


def committed_rows(report: Path) -> dict[str, dict]:
    """The rows of the report ``report``.md already written, by run folder, with their
    per-epoch records from its CSV. Run folders are ignored by git, so a new checkout has
    none: a finished run whose folder is gone keeps the figures it was reported with
    (``"kept": True``) instead of running again for hours."""
    path = Path(f"{report}.md")
    lines = path.read_text().splitlines() if path.is_file() else []
    before_best = [c for c in HEADER if c != BEST]
    tops = {"| " + " | ".join(h) + " |": h for h in (HEADER, before_best)}
    found = [t for t in tops if t in lines]
    if not found:
        return {}  # no report yet, or one written with other columns
    records: dict[str, list[dict]] = {}
    table = report / "per_epoch.csv"
    if table.is_file():
        with open(table, newline="") as f:
            for r in csv.DictReader(f):
                records.setdefault(r["method"], []).append(_typed(r))
    cells = {}
    for line in lines[lines.index(found[0]) + 2 :]:
        if not line.startswith("| "):
            break
        row = [c.strip() for c in line.strip()[2:-2].split(" | ")]
        if tops[found[0]] is before_best:
            row.insert(HEADER.index(BEST), best_cell(best_epoch(records.get(row[0], []))))
        cells[row[0]] = row
    rows = {}
    for line in lines:
        match = _COMMAND.match(line)
        if match and match["method"] in cells:
            row = cells[match["method"]]
            post = row[HEADER.index("post-finetune acc")]
            rows[match["folder"]] = {
                "method": match["method"],
                "folder": match["folder"],
                "command": "gemminer " + match["argv"],
                "cells": row,
                "post": None if post == "—" else post,
                # an unfinished run's last epoch, for the report's progress line
                "last": {k: v for k, v in last.items() if k != "method"}
                if post == "—" and (last := (records.get(match["method"]) or [None])[-1])
                else None,
                "records": records.get(match["method"], []),
                "kept": True,
            }
    return rows


def _typed(record: dict[str, str]) -> dict:
    """A per-epoch CSV row as its record was: numbers as numbers, empty cells left out."""
    out: dict = {}
    for key, value in record.items():
        if key in ("method", "phase"):
            out[key] = value
        elif value not in ("", None):
            out[key] = int(value) if key == "epoch" else float(value)
    return out


def best_cell(best: BestEpoch | None) -> str:
    """``"73.10 % (epoch 115)"``: the best evaluated finetuning epoch's test accuracy."""
    return "—" if best is None else f"{pct(best.test_acc)} (epoch {best.epoch})"


def _row(method: str, out: Path, argv: list[str]) -> dict:
    s = RunDir(out).read_summary()
    metrics = RunDir(out).read_metrics()
    mined = [_guard_count(r) for r in metrics if r.get("phase") == "mine"]
    tuned = [r for r in metrics if r.get("phase") == "finetune"] or finetuning_so_far(out)
    finished = s.get("post_finetune_acc") is not None
    return {
        "method": method,
        "folder": str(out),
        "command": "gemminer " + " ".join(argv),
        "epochs done": f"{len(mined)} mining"
        + (f" + {len(tuned)} finetuning" if tuned else "")
        + ("" if finished or not tuned else f" of {planned_finetune_epochs(out)}"),
        "ticket": s.get("density"),
        "gem": s.get("gem_density"),
        "pre": s.get("pre_finetune_acc"),
        "gem_acc": s.get("gem_acc"),
        "gem_running_bn": s.get("gem_acc_running_bn"),
        "post": s.get("post_finetune_acc"),
        "best": best_epoch(tuned),
        "mining time": phase_time(mined),
        "finetuning time": phase_time(tuned),
        "precision": s.get("precision"),
        "last": (tuned or mined or [None])[-1],
        "records": mined + tuned,
    }


def _guard_count(record: dict) -> dict:
    """A mining record with ``guarded`` (layer → weights the collapse guard kept) summed."""
    guarded = record.get("guarded")
    return {**record, "guarded": sum(guarded.values())} if guarded else record


def guard_line(r: dict) -> str:
    """``"- ROW: the collapse guard acted in N of its M mining epochs ..."`` ("" if it never
    acted in the records at hand: a kept row's, from an older report, may lack the column)."""
    mined = [x for x in r["records"] if x.get("phase") == "mine"]
    guarded = [x for x in mined if x.get("guarded")]
    if not guarded:
        return ""
    most = max(int(x["guarded"]) for x in guarded)
    return (
        f"- {r['method']}: the collapse guard acted in {len(guarded)} of its {len(mined)} "
        f"mining epochs (from epoch {guarded[0]['epoch']}), keeping up to {most} weights in "
        "one epoch that rounded to 0 (the authors' code has no guard; per_epoch.csv's "
        "`guarded`)"
    )


def planned_finetune_epochs(out: Path) -> int | str:
    """The finetuning epochs the run's config asks for ("?" without a config)."""
    run = RunDir(out)
    return run.read_config().finetune.epochs if run.file("config.json").is_file() else "?"


def phase_time(records: list[dict]) -> str:
    """``1.23 h (45.6 s/epoch)``: the epochs' seconds summed, and the median epoch's."""
    seconds = [r["seconds"] for r in records if r.get("seconds") is not None]
    if not seconds:
        return "—"
    return f"{sum(seconds) / 3600:.2f} h ({statistics.median(seconds):.1f} s/epoch)"


def _fraction(cell: str) -> float | None:
    """``"72.99 %"`` or ``"73.10 % (epoch 115)"`` → 0.7299 / 0.731; ``"—"`` → None."""
    return None if cell.startswith("—") else float(cell.split(" %")[0]) / 100


def gem_miner_spread(rows: list[dict]) -> str:
    """The last and best accuracies, mean ± std, of each recipe with two or more finished
    runs (the paper setting's seeds and precisions; a candidate's seeds), beside the paper
    ("" with none); one line each."""
    last: dict[str, list[float]] = {}
    best: dict[str, list[float]] = {}
    for r in rows:
        if r["post"] is None or not recipe(r["method"]).startswith("gem-miner"):
            continue
        cells = table_cells(r)
        last.setdefault(recipe(r["method"]), []).append(
            _fraction(cells[HEADER.index("post-finetune acc")])
        )
        best.setdefault(recipe(r["method"]), []).append(_fraction(cells[HEADER.index(BEST)]))
    lines = []
    for method, accs in last.items():
        if len(accs) < 2:
            continue
        shown = mean_std(accs) + ", best epoch "
        shown += mean_std([b for b in best[method] if b is not None])
        name = "Gem-Miner" if method == "gem-miner" else method
        lines.append(
            f"- {name} over its {len(accs)} finished runs: last epoch {shown} "
            f"(paper {pct(PAPER[method])})"
        )
    return "\n".join(lines)


def table_cells(r: dict) -> list[str]:
    """A row of the report's table (a kept row's as it was written)."""
    if r.get("kept"):
        return r["cells"]
    return [r["method"], r["epochs done"], pct(r["ticket"]), pct(r["pre"]), pct(r["gem"]),
            " / ".join(pct(r[k]) for k in ("gem_acc", "gem_running_bn")) if r["gem_acc"] else "—",
            pct(r["post"]), best_cell(r["best"]),
            pct(PAPER.get(r["method"]) or PAPER[recipe(r["method"])]),
            r["mining time"], r["finetuning time"], r["precision"] or "—"]  # fmt: skip


def write_report(
    rows: list[dict],
    per_epoch: list[dict],
    report: Path,
    where: str,
    notes: list[str],
    figures: Path | None = None,
) -> None:
    report.mkdir(parents=True, exist_ok=True)
    with open(report / "per_epoch.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["method", *COLUMNS], extrasaction="ignore")
        writer.writeheader()
        writer.writerows(per_epoch)
    progress = [
        f"- {r['method']}: not finished; last epoch "
        f"{json.dumps({k: r['last'].get(k) for k in COLUMNS if k in r['last']})}"
        for r in rows
        if r["post"] is None and r["last"]
    ]
    kept = [f"`{r['method']}`" for r in rows if r.get("kept")]
    if kept:
        progress.insert(
            0,
            f"- measured in an earlier checkout, whose run folders this one does not hold: "
            f"{', '.join(kept)} (row, records and figures as reported then)",
        )
    figures = figures or report
    seeds = gem_miner_spread(rows)
    if seeds:
        progress.insert(0, seeds)
    progress += [line for line in map(guard_line, rows) if line]
    if any(r["method"] == THEIRS for r in rows):
        progress.append(
            f"- {THEIRS}: its paper column is their stored run's log, last finetuning epoch "
            "(exact pixels, their rare gem at 1.7467 %); the same ticket finetuned by "
            "gemminer on the copy reached 76.77 % ([authors_ticket_finetune.md]"
            "(authors_ticket_finetune.md))"
        )
    links = [f"[report]({report.name}/report.md)"]
    if figures != report:
        links.append(f"[{figures.name}]({report.name}/{figures.name}/report.md)")
    Path(f"{report}.md").write_text(
        f"""# The paper's budget: ResNet-20, CIFAR-10, density 1.44 %, 150 + 150 epochs

- date: {today()}
- machine: {where}
- script: `{command_line(elide=("--note",))}`
- the full 50,000 training images, the 10,000-image test set (the JPEG copy in
  ../shared/datasets: the paper used the PNG-exact original), today's defaults.

{markdown_table(HEADER, [table_cells(r) for r in rows])}

"post-finetune acc" is the last epoch's test accuracy; "best" the highest of the evaluated
finetuning epochs' (every `--eval-every` epochs), picked on the test set itself: the paper
reports "the best model chosen based on the validation accuracy", and the authors' full-data
runs validate on the test set (their `data/cifar.py`) after every epoch, so theirs is a
maximum over all 150 epochs, ours over fewer. "paper": Gem-Miner 77.89 % (Fig. 3, Table 4),
Smart Ratio 65.61 % (Table 16; the authors'
Smart Ratio runs finetuned at LR 0.1 for 160 epochs, configs/sr/resnet20/resnet20_sr.yml:
"{SR_AS_GM}" is Table 15's LR 0.01 for 150 epochs, as Gem-Miner's ticket); dense
(`--dense`: the paper's weight training, Kaiming normal weights, LR 0.1 for 150 epochs, ×0.1
after 80 and 120): ResNet-20's published 91.25 % (He et al. 2016, Table 6; the paper plots
its own dense line without printing it). Per-epoch
records: [per_epoch.csv]({report.name}/per_epoch.csv); figures (density against the bound,
accuracy over epochs): {", ".join(links)} once a run has finished. Times:
the epochs' seconds summed (median epoch in brackets).
{chr(10).join(progress)}
{chr(10).join(f"- note: {note}" for note in notes)}

## Commands

{chr(10).join(f"- {r['method']}: `{r['command']}` → `{r['folder']}`" for r in rows)}
"""
    )


if __name__ == "__main__":
    main()
