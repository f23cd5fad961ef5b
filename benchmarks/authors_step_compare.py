"""Gem-Miner's mining loop beside the authors' own, step for step, in one process.

Imports the authors' code (a checkout of ksreenivasan/pruning_is_enough, e.g. by `git
clone`; nothing of it is copied here) next to gemminer, builds their ResNet-20 from their
config, copies its initial weights and scores into gemminer's score model, and mines with
both loops — theirs (`trainers/default.py:train`, `utils/net_utils.py:prune`, their SGD and
cosine schedule) and gemminer's `mine_scores` — on the same batches. After every epoch it
compares the scores, the flags and the rounded masks. Identical loops give identical masks
and scores equal up to float rounding; the first epoch that differs is where they part.

`--data fixed` feeds both the first STEPS unaugmented batches of a seeded shuffle of the
training subset (bit-for-bit comparable); `--data gemminer` feeds gemminer's augmented
loader (one epoch = the whole subset) — with `--only authors` it runs the authors' loop on
gemminer's data pipeline, to compare with their own runs.

Needs a Python with torch *and* torchvision (their code imports it) and gemminer on the path,
run from the repository root (their `.cuda()` calls are made no-ops on a CPU):

    PYTHONPATH=$PWD/src SCRATCH/bin/python benchmarks/authors_step_compare.py \\
        --authors-code PATH --steps 20 --epochs 4
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import torch
from _common import command_line, machine, markdown_table, today

from gemminer.data import load_dataset
from gemminer.data.loader import training_batches
from gemminer.masking import score_layers, to_score_model
from gemminer.methods.gem_miner import MineConfig, mine_scores
from gemminer.models import create_model
from gemminer.settings.config import OptimConfig

CONFIG = "configs/hypercube/resnet20/resnet20_sparsity_1_44_unflagT_real.yml"


class _Loader:
    """What the authors' `train` reads of a DataLoader: iteration, len and batch_size.
    Batches are made contiguous (NCHW), the layout their code trains in: gemminer's loader
    yields channels-last tensors, whose BatchNorm kernel rounds differently, and one score
    rounded the other way at 0.5 is enough for two runs to part."""

    def __init__(self, batches, batch_size: int) -> None:
        self.batches, self.batch_size = batches, batch_size

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self):
        return ((x.contiguous(), y) for x, y in self.batches)


def load_authors(code: Path, config: str, epochs: int, lr: float, seed: int):
    """Their modules, parsed with their config as `main.py --config ...` would be."""
    if not (code / config).is_file():
        raise SystemExit(f"{code / config} not found: --authors-code must be their checkout")
    sys.path.insert(0, str(code))
    os.chdir(code)  # their config reader and modules use paths relative to the checkout
    if not torch.cuda.is_available():  # their code calls .cuda() everywhere
        torch.Tensor.cuda = lambda self, *a, **k: self
        torch.nn.Module.cuda = lambda self, *a, **k: self
    try:  # their utils/utils.py uses a style name that matplotlib 3.6 renamed
        import matplotlib.style

        old, new = "seaborn-whitegrid", "seaborn-v0_8-whitegrid"
        if old not in matplotlib.style.library and new in matplotlib.style.library:
            matplotlib.style.library[old] = matplotlib.style.library[new]
    except ImportError:
        pass
    sys.argv = ["main.py", "--config", str(code / config), "--epochs", str(epochs),
                "--lr", str(lr), "--iter-period", "1", "--seed", str(seed)]  # fmt: skip
    from args_helper import parser_args
    from main_utils import get_model, get_optimizer, set_seed
    from trainers.default import train
    from utils.net_utils import get_layers, get_prune_rate, prune
    from utils.schedulers import get_scheduler

    parser_args.gpu = None
    set_seed(seed)
    model = get_model(parser_args)
    parser_args.prune_rate = get_prune_rate(parser_args.target_sparsity, parser_args.iter_period)
    names = {id(m): n for n, m in model.named_modules()}
    conv, linear = get_layers(parser_args.arch, model)
    layers = {names[id(m)]: m for m in [*conv, *linear]}
    return {
        "args": parser_args, "model": model, "layers": layers, "train": train, "prune": prune,
        "optimizer": get_optimizer(parser_args, model),
        "scheduler": lambda opt: get_scheduler(opt, parser_args.lr_policy),
    }  # fmt: skip


def _commit(code: Path) -> str:
    """The checkout's commit, if it is a git work tree."""
    try:
        git = ["git", "-C", str(code), "rev-parse", "--short", "HEAD"]
        return subprocess.run(git, capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return ""


def state(layers: dict, flag: str) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    return {
        n: (m.scores.detach().clone(), getattr(m, flag).detach().clone().float())
        for n, m in layers.items()
    }


def compare(theirs: dict, ours: dict) -> dict:
    """Scores (theirs clamped into [0, 1], as their next step does) on the weights active
    in both, flags and rounded masks of one epoch's two states."""
    total = dscore = flags = rounded = kept_t = kept_o = round_t = round_o = 0
    for name, (s_o, f_o) in ours.items():
        s_t, f_t = (t.reshape(s_o.shape) for t in theirs[name])
        active = (f_t > 0) & (f_o > 0)
        if active.any():
            dscore = max(dscore, float((s_t.clamp(0, 1) - s_o)[active].abs().max()))
        r_t, r_o = (s_t >= 0.5).float() * f_t, (s_o >= 0.5).float() * f_o
        flags += int((f_t != f_o).sum())
        rounded += int((r_t != r_o).sum())
        total += s_o.numel()
        kept_t, kept_o = kept_t + float(f_t.sum()), kept_o + float(f_o.sum())
        round_t, round_o = round_t + float(r_t.sum()), round_o + float(r_o.sum())
    return {
        "max score difference": f"{dscore:.2e}", "flags differing": flags,
        "rounded differing": rounded, "flag density (theirs / ours)":
        f"{kept_t / total:.4%} / {kept_o / total:.4%}",
        "rounded density (theirs / ours)": f"{round_t / total:.4%} / {round_o / total:.4%}",
    }  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--authors-code", type=Path, required=True)
    p.add_argument("--authors-commit", default="", help="their commit (a folder without git)")
    p.add_argument("--config", default=CONFIG)
    p.add_argument("--data-dir", default=".data/cifar10")
    p.add_argument("--train-size", type=int, default=10000)
    p.add_argument("--data", choices=("fixed", "gemminer"), default="fixed")
    p.add_argument("--only", choices=("both", "authors"), default="both")
    p.add_argument("--steps", type=int, default=20, help="batches per epoch with --data fixed")
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--lr", type=float, default=1.5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/authors_step_compare.md"))
    args = p.parse_args()
    command = command_line()  # before the authors' argument parser takes sys.argv
    commit = args.authors_commit or _commit(args.authors_code)
    out = args.out.resolve()
    splits = load_dataset("cifar10", args.data_dir, download=False, train_size=args.train_size,
                          seed=args.seed)  # fmt: skip
    a = load_authors(args.authors_code.resolve(), args.config, args.epochs, args.lr, args.seed)
    batch = a["args"].batch_size
    mean, std = splits.mean, splits.std
    if args.data == "fixed":
        loader = training_batches(splits.train, batch_size=batch, mean=mean, std=std,
                                  device="cpu", seed=args.seed, augmentation="none")  # fmt: skip
        batches = [b for _, b in zip(range(args.steps), loader)]
    else:
        batches = training_batches(splits.train, batch_size=batch, mean=mean, std=std,
                                   device="cpu", seed=args.seed)  # fmt: skip

    ours = to_score_model(create_model("resnet20", num_classes=10))
    layers = score_layers(ours)
    if sorted(layers) != sorted(a["layers"]):
        raise SystemExit(f"layers differ: {sorted(layers)} vs {sorted(a['layers'])}")
    with torch.no_grad():
        for name, m in layers.items():
            m.weight.copy_(a["layers"][name].weight.reshape(m.weight.shape))
            m.scores.copy_(a["layers"][name].scores.reshape(m.scores.shape))

    theirs_by_epoch, records = [], []
    optimizer = a["optimizer"]
    scheduler = a["scheduler"](optimizer)
    for epoch in range(args.epochs):  # main.py's loop: train, schedule, prune after epoch ≥ 1
        acc = a["train"](_Loader(batches, batch), a["model"], torch.nn.CrossEntropyLoss(),
                         optimizer, epoch, a["args"], writer=None)  # fmt: skip
        scheduler.step()
        if epoch % a["args"].iter_period == 0 and epoch != 0:
            a["prune"](a["model"])
        theirs_by_epoch.append((acc[0] / 100, state(a["layers"], "flag")))

    ours_by_epoch = []
    if args.only == "both":
        cfg = MineConfig(
            density=a["args"].target_sparsity / 100, epochs=args.epochs, period=1,
            lam=a["args"].lmbda, batch_size=batch, collapse_guard=False,
            optim=OptimConfig("sgd", lr=args.lr, momentum=a["args"].momentum, weight_decay=0.0),
        )  # fmt: skip

        def on_epoch(record: dict) -> None:
            ours_by_epoch.append((record["train_acc"], state(layers, "flags")))

        mine_scores(ours, _Loader(batches, batch), cfg, torch.device("cpu"), on_epoch=on_epoch)

    for epoch, (acc, theirs_state) in enumerate(theirs_by_epoch, start=1):
        row = {"epoch": epoch, "train acc (theirs)": f"{acc:.2%}"}
        if ours_by_epoch:
            row["train acc (ours)"] = f"{ours_by_epoch[epoch - 1][0]:.2%}"
            row.update(compare(theirs_state, ours_by_epoch[epoch - 1][1]))
        else:
            rounded = sum(float(((s >= 0.5).float() * f).sum()) for s, f in theirs_state.values())
            total = sum(s.numel() for s, _ in theirs_state.values())
            row["rounded density (theirs)"] = f"{rounded / total:.4%}"
        records.append(row)
        print(row, flush=True)

    what = (f"the first {args.steps} unaugmented batches of a seeded shuffle" if args.data ==
            "fixed" else "gemminer's augmented training loader, whole epochs")  # fmt: skip
    out.parent.mkdir(parents=True, exist_ok=True)
    if args.only == "both":
        title = "Gem-Miner's mining loop beside the authors', step for step"
        how = (
            "their ResNet-20's initial weights and scores copied into gemminer's; both loops; "
            "scores compared on the weights active in both, the authors' clamped into [0, 1] "
            "as their next step does"
        )
    else:
        title = "The authors' mining loop on gemminer's data pipeline"
        how = "their own initialization (their seed); the authors' loop only"
    out.write_text(
        f"""# {title}

- date: {today()}
- machine: {machine()}
- command: `PYTHONPATH=$PWD/src {command}` (a venv with torch and torchvision)
- the authors' code: ksreenivasan/pruning_is_enough{f" at commit {commit}" if commit else ""},
  unchanged (this script makes `.cuda()` a no-op on a CPU and maps a renamed matplotlib
  style), config `{args.config}` with `--epochs {args.epochs} --lr {args.lr} --iter-period 1
  --seed {args.seed}`
- batches: {what} of the {args.train_size or "full"}-image CIFAR-10 training set, NCHW
- {how}

{markdown_table(list(records[0]), [list(r.values()) for r in records])}
"""
    )
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
