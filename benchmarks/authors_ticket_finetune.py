"""The authors' own ResNet-20 ticket, finetuned by gemminer on the JPEG copy of CIFAR-10.

Separates the data from the method (issue 26, 3a). The authors' repository keeps, at
commit 6c135221, one full-budget run (results/SGD_finetune_L2/..._idx_10/): its initial
weights, the mined model before finetuning (scores, flags, BatchNorm statistics) and the
log of its finetuning on the exact CIFAR-10 pixels (acc_and_sparsity.csv: rare gem 74.00 %,
79.35 % after 150 epochs). This script

1. reads those files from a clone of ksreenivasan/pruning_is_enough (`git show`; nothing of
   theirs is copied into this repository),
2. makes a gemminer run folder holding their ticket — their weights and BatchNorm
   statistics, their mask exactly as their code rounds it, ``(scores > 0.5) * flag``
   (4,687 of 268,336 weights) — by making a folder with ``gemminer prune --method random
   --epochs 0`` and replacing its ticket, mask and figures,
3. finetunes it with ``gemminer finetune`` for 150 epochs at the authors' finetuning recipe
   (gemminer's default for this density: SGD 0.01, momentum 0.9, weight decay 1e-4, ×0.1
   after epochs 80 and 120, batch 128), resumable like any run,
4. writes benchmarks/results/authors_ticket_finetune.md: our curve on the copy beside
   theirs on the exact pixels.

The same ticket through both codes: what is left between the curves is the data (and
seed noise). gemminer's finetuning starts from fresh BatchNorm statistics, theirs from
mining's; the script says so in the report.

    git clone https://github.com/ksreenivasan/pruning_is_enough .authors/pruning_is_enough
    make data
    .venv/bin/python benchmarks/authors_ticket_finetune.py --authors-repo \\
        .authors/pruning_is_enough --threads 2 --eval-every 5

Longer than a working session on a 2-core CPU: ``--carry-out`` copies the unfinished run's
small files (config, records, ticket, checkpoint) into ``benchmarks/carry/`` to commit, and
the same command in the next checkout puts them back and resumes; finishing drops the copy.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import shutil
import subprocess
import sys
from pathlib import Path

import torch
from _common import (
    add_carry_arguments,
    carry_in,
    carry_out,
    command_line,
    finetuning_so_far,
    machine,
    markdown_table,
    pct,
    today,
)

from gemminer.cli import main as gemminer
from gemminer.masking import Mask
from gemminer.models import create_model
from gemminer.rundir.runs import RunDir
from gemminer.rundir.summary import best_epoch
from gemminer.stages.evaluate import eval_run
from gemminer.stages.ticket import save_ticket

COMMIT = "6c135221"
RUN = (
    "results/SGD_finetune_L2/results_pruning_CIFAR10_resnet20_hc_iter_0_2_8_reg_L2_5e-05_sgd_"
    "cosine_lr_0_1_0_1_50_finetune_0_01_fan_False_signed_constant_unif_width_1_0_seed_42_idx_10"
)
#: Their log's rows: 150 mining epochs (0–149), then finetuning epoch 0 (the rare gem,
#: again numbered 149) and finetuning epochs 1–150 (numbered 150–299).
MINING_ROWS = 150


def authors_file(repo: Path, name: str, commit: str = COMMIT) -> bytes:
    """A file of their run at ``commit``, read with ``git show`` from a clone."""
    done = subprocess.run(
        ["git", "-C", str(repo), "show", f"{commit}:{RUN}/{name}"], capture_output=True
    )
    if done.returncode != 0:
        raise SystemExit(
            f"cannot read {name} at {commit} from {repo}: {done.stderr.decode().strip()}"
        )
    return done.stdout


def authors_ticket(state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], Mask]:
    """gemminer's ResNet-20 state (their weights and BatchNorm buffers: the same names) and
    their mask, ``(scores > 0.5) * flag`` for every prunable weight, as their code rounds."""
    model = create_model("resnet20", num_classes=10)
    ours = model.state_dict()
    missing = sorted(set(ours) - set(state))
    if missing:
        raise SystemExit(f"their model lacks {', '.join(missing)}: another architecture?")
    # their classifier is a 1×1 convolution: the same numbers as our Linear's weight
    weights = {k: state[k].reshape(ours[k].shape).to(ours[k].dtype).clone() for k in ours}
    mask = Mask(
        {
            f"{name}.weight": (
                (state[f"{name}.scores"] > 0.5) & (state[f"{name}.flag"] != 0)
            ).reshape(m.weight.shape)
            for name, m in model.named_modules()
            if isinstance(m, torch.nn.Conv2d | torch.nn.Linear)
        }
    )
    mask.check(model)
    return weights, mask


def their_curve(log: str) -> dict[int, float]:
    """Finetuning epoch → their test accuracy (fractions), epoch 0 the rare gem."""
    rows = list(csv.DictReader(io.StringIO(log)))[MINING_ROWS:]
    return {i: float(r["test_acc"]) / 100 for i, r in enumerate(rows)}


def copy_curve(readme: str) -> dict[int, float]:
    """Finetuning epoch → test accuracy (fractions) of the authors' own ``finetune()`` on
    the copy, from the table of ../shared/tools/authors-models/README.md (rows "finetuning
    epoch" and "on the copy"); empty when the table is not there."""
    rows = {}
    for line in readme.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if cells and cells[0] in ("finetuning epoch", "on the copy"):
            rows[cells[0]] = cells[1:]
    if len(rows) < 2:
        return {}
    epochs, accs = rows["finetuning epoch"], rows["on the copy"]
    return {int(e): float(a) / 100 for e, a in zip(epochs, accs, strict=True)}


def own_curves(per_epoch: str) -> dict[str, dict[int, float]]:
    """gemminer's own tickets' finetuning curves (method → epoch → test accuracy) from the
    paper-budget report's per_epoch.csv: the Gem-Miner rows, their evaluated epochs."""
    curves: dict[str, dict[int, float]] = {}
    for row in csv.DictReader(io.StringIO(per_epoch)):
        if row["method"].startswith("gem-miner") and row["phase"] == "finetune":
            if row["test_acc"]:
                curves.setdefault(row["method"], {})[int(row["epoch"])] = float(row["test_acc"])
    return curves


def make_run(args: argparse.Namespace, out: Path) -> None:
    """A run folder holding their ticket (skipped when it is there already)."""
    if (out / "summary.json").is_file() and (out / "authors_ticket.json").is_file():
        return
    state = torch.load(
        io.BytesIO(authors_file(args.authors_repo, "model_before_finetune.pth")),
        map_location="cpu",
        weights_only=True,
    )
    weights, mask = authors_ticket(state)
    prune = ["prune", "--method", "random", "--model", "resnet20", "--dataset", "cifar10",
             "--data-dir", args.data_dir, "--density", f"{mask.density:.6f}", "--epochs", "0",
             "--seed", "42", "--weight-init", "signed_constant", "--precision", args.precision,
             "--eval-every", str(args.eval_every), "--finetune-epochs", str(args.epochs),
             "--finetune-lr", "0.01", "--out", str(out),
             "--overwrite", "--no-progress", *threads(args)]  # fmt: skip
    if gemminer(prune) != 0:
        raise SystemExit("making the run folder failed")
    run = RunDir(out)
    save_ticket(run, create_model("resnet20", num_classes=10), weights, mask)
    pre = eval_run(out)["pre_finetune_acc"]  # their BatchNorm statistics, on the copy
    run.write_summary(
        run.summary().updated(
            density=mask.density,
            num_kept=mask.num_kept,
            num_prunable=mask.num_total,
            layer_density={row.name: row.density for row in mask.layers()},
            pre_finetune_acc=pre,
            ticket_flops=None,
        )
    )
    (out / "authors_ticket.json").write_text(
        json.dumps({"commit": COMMIT, "run": RUN, "kept": mask.num_kept}, indent=2) + "\n"
    )


def read_if_there(path: Path) -> str:
    return path.read_text() if path.is_file() else ""


def threads(args: argparse.Namespace) -> list[str]:
    return ["--threads", str(args.threads)] if args.threads else []


def mean_difference(a: dict[int, float], b: dict[int, float], epochs: list[int]) -> str:
    """Mean of a − b in points over the finetuning epochs (≥ 1) both hold, and how many."""
    diffs = [a[e] - b[e] for e in epochs if e > 0 and e in a and e in b]
    if not diffs:
        return "—"
    return f"{100 * sum(diffs) / len(diffs):+.2f} points over {len(diffs)} epochs"


def write_report(
    args: argparse.Namespace,
    out: Path,
    theirs: dict[int, float],
    on_copy: dict[int, float],
    own: dict[str, dict[int, float]],
) -> str:
    run = RunDir(out)
    summary = run.summary()
    records = [r for r in run.read_metrics() if r.get("phase") == "finetune"]
    records = records or finetuning_so_far(out)  # still under way: its checkpoint's
    ours = {0: summary.pre_finetune_acc} | {
        r["epoch"]: r["test_acc"] for r in records if r.get("test_acc") is not None
    }
    shown = sorted(e for e in set(ours) | set(on_copy) if e in theirs)
    rows = [
        [str(e), pct(ours.get(e)), pct(on_copy.get(e)), pct(theirs[e]),
         f"{100 * (ours[e] - theirs[e]):+.2f}" if e in ours else "—",
         *(pct(curve.get(e)) for curve in own.values())]
        for e in shown
    ]  # fmt: skip
    best = best_epoch(records)
    theirs_best = max((a, -e) for e, a in theirs.items() if e > 0)
    done = len(records)
    header = ["finetuning epoch", "their ticket, gemminer on the copy",
              "their ticket, their finetune() on the copy", "their ticket, their log on "
              "the exact pixels", "gemminer − their log (points)",
              *(f"gemminer's own ticket ({name})" for name in own)]  # fmt: skip
    table = markdown_table(header, rows)
    own_last = "; ".join(
        f"{name} {pct(curve[max(curve)])} at epoch {max(curve)}" for name, curve in own.items()
    )
    same_copy = mean_difference(ours, on_copy, shown)
    copy_vs_exact = mean_difference(ours, theirs, shown)
    text = f"""# The authors' ResNet-20 ticket finetuned by gemminer on the JPEG copy

- date: {today()}
- machine: {machine(args.threads or None)}
- command: `{command_line()}`
- their run: ksreenivasan/pruning_is_enough at {COMMIT}, `{RUN}` (mask `(scores > 0.5) *
  flag`: {summary.num_kept:,} of {summary.num_prunable:,} weights, density
  {100 * summary.density:.4f} %)
- ours: `gemminer finetune {out}` for {args.epochs} epochs ({done} done), {args.precision},
  the copy's 50,000 training and 10,000 test images; BatchNorm statistics reset at the
  start of finetuning (theirs continue from mining's)
- their `finetune()` on the copy: their unchanged code on the same images, fp32, the first
  {max(on_copy) if on_copy else 0} epochs ({args.authors_on_copy}, its table)
- gemminer's own tickets: the paper-budget report's Gem-Miner runs ({args.own_curves};
  1.44 % unless the name says otherwise)

{table}

Epoch 0 is the ticket before finetuning, with the BatchNorm statistics mining left.

- gemminer − their `finetune()`, the same ticket on the same copy: {same_copy}
- gemminer on the copy − their log on the exact pixels: {copy_vs_exact}
- last: ours {pct(ours.get(done)) if done else "—"} at epoch {done}, theirs
  {pct(theirs[max(theirs)])} at epoch {max(theirs)}; best evaluated epoch: ours
  {best.describe() if best else "—"}, theirs {100 * theirs_best[0]:.2f} % at epoch
  {-theirs_best[1]} (of all 150)
- gemminer's own tickets, last epoch: {own_last or "—"}
"""
    Path(args.report).write_text(text)
    return table


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--authors-repo", type=Path, required=True, help="a clone of their repo")
    p.add_argument("--data-dir", default=".data/cifar10")
    p.add_argument("--precision", default="fp32", choices=("fp32", "bf16"))
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--eval-every", type=int, default=5)
    p.add_argument("--epochs", type=int, default=150)
    p.add_argument("--out", type=Path, default=Path("runs/authors-ticket-6c135221"))
    p.add_argument("--report", default="benchmarks/results/authors_ticket_finetune.md")
    p.add_argument("--report-only", action="store_true")
    p.add_argument(
        "--authors-on-copy",
        type=Path,
        default=Path("../shared/tools/authors-models/README.md"),
        help="the table of their finetune() on the copy (a column left empty when absent)",
    )
    p.add_argument(
        "--own-curves",
        type=Path,
        default=Path("benchmarks/results/paper_budget_resnet20_cifar10/per_epoch.csv"),
        help="gemminer's own tickets' curves (the paper-budget report's per_epoch.csv)",
    )
    add_carry_arguments(p)
    args = p.parse_args(argv)
    if args.carry_out:
        print(carry_out(args.out, args.carry, extra=("authors_ticket.json",)))
        return
    carry_in(args.out, args.carry)
    theirs = their_curve(authors_file(args.authors_repo, "acc_and_sparsity.csv").decode())
    on_copy = copy_curve(read_if_there(args.authors_on_copy))
    own = own_curves(read_if_there(args.own_curves))
    if not args.report_only:
        make_run(args, args.out)
        summary = RunDir(args.out).summary()
        if summary.post_finetune_acc is None or summary.epochs_finetune != args.epochs:
            finetune = ["finetune", str(args.out), "--epochs", str(args.epochs), "--lr", "0.01"]
            finetune += ["--precision", args.precision, "--no-progress"]
            if gemminer([*finetune, *threads(args)]) != 0:
                sys.exit(f"finetuning stopped or failed; run this again to resume {args.out}")
        shutil.rmtree(args.carry / args.out.name, ignore_errors=True)  # finished
    print(write_report(args, args.out, theirs, on_copy, own))


if __name__ == "__main__":
    main()
