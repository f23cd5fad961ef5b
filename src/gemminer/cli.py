"""The ``gemminer`` command line: ``mine``, ``finetune``, ``eval`` and ``list``.

User mistakes (a bad value, a missing folder, an unknown name) end with a one-line
message on stderr and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from .config import (
    FinetuneConfig,
    MineConfig,
    OptimConfig,
    RunConfig,
    default_finetune_optim,
    paper_mining_defaults,
)
from .data import DATASETS
from .errors import GemMinerError
from .masking import WEIGHT_INITS, format_density
from .methods import METHODS
from .models import MODELS
from .runs import default_run_name

EXIT_USAGE = 2


def _density(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"density must be a number, got {text!r}") from None
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(
            f"density must lie in (0, 1] (the fraction of weights kept), got {text}"
        )
    return value


def _add_run_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--model", default="resnet20", help="registered model (see `gemminer list models`)"
    )
    p.add_argument("--dataset", default="cifar10", help="registered data set")
    p.add_argument(
        "--data-dir", default=".data/cifar10", help="data folder; downloaded into when empty"
    )
    p.add_argument(
        "--no-download", action="store_true", help="never download; fail if data is missing"
    )
    p.add_argument(
        "--val-size", type=int, default=0, help="hold out this many training images as validation"
    )
    p.add_argument(
        "--density", type=_density, default=0.0144, help="target fraction of weights kept"
    )
    p.add_argument("--epochs", type=int, default=150, help="mining epochs E")
    p.add_argument(
        "--lambda",
        dest="lam",
        type=float,
        default=None,
        help="regularization weight (default: paper's, by density)",
    )
    p.add_argument("--regularizer", choices=("l2", "l1"), default="l2")
    p.add_argument(
        "--period",
        type=int,
        default=None,
        help="freeze every T epochs (default: paper's, scaled to --epochs)",
    )
    p.add_argument("--lr", type=float, default=None, help="mining learning rate (default: paper's)")
    p.add_argument("--optimizer", choices=("sgd", "adam"), default="sgd")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--weight-init", default="signed_constant", choices=WEIGHT_INITS.names())
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")
    p.add_argument(
        "--out",
        default=None,
        help="run folder (default: runs/<method>-<model>-<dataset>-d<density>-<hash>)",
    )
    p.add_argument(
        "--overwrite", action="store_true", help="replace a run folder holding other settings"
    )
    p.add_argument("--finetune", action="store_true", help="finetune the ticket right after mining")
    p.add_argument(
        "--finetune-epochs", type=int, default=None, help="default: the mining epochs (Table 15)"
    )
    p.add_argument("--finetune-lr", type=float, default=None, help="default: Table 15's by density")


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gemminer", description="Find sparse, trainable subnetworks at initialization."
    )
    sub = parser.add_subparsers(dest="command", required=True)

    mine = sub.add_parser("mine", help="mine a ticket with Gem-Miner (optionally finetune it)")
    _add_run_flags(mine)
    _add_common(mine)

    ft = sub.add_parser("finetune", help="finetune the ticket of a mined run folder")
    ft.add_argument("run_dir", type=Path)
    ft.add_argument("--epochs", type=int, default=None)
    ft.add_argument("--lr", type=float, default=None)
    ft.add_argument("--batch-size", type=int, default=None)
    ft.add_argument("--data-dir", default=None, help="read the data from here instead")
    ft.add_argument("--device", default=None)
    _add_common(ft)

    ev = sub.add_parser("eval", help="evaluate a run folder's ticket before and after finetuning")
    ev.add_argument("run_dir", type=Path)
    ev.add_argument("--data-dir", default=None)
    ev.add_argument("--device", default=None)

    ls = sub.add_parser("list", help="list registered models, data sets, methods or weight inits")
    ls.add_argument("what", choices=("models", "datasets", "methods", "inits"))
    return parser


def config_from_args(args: argparse.Namespace) -> RunConfig:
    """Resolve the flags of ``gemminer mine`` into a full RunConfig (paper defaults filled in)."""
    period, lr, lam = paper_mining_defaults(args.model, args.density, args.epochs)
    MODELS.get(args.model)  # unknown names fail early, listing the valid ones
    DATASETS.get(args.dataset)
    mine = MineConfig(
        density=args.density,
        epochs=args.epochs,
        period=args.period if args.period is not None else period,
        lam=args.lam if args.lam is not None else lam,
        regularizer=args.regularizer,
        batch_size=args.batch_size,
        optim=OptimConfig(
            name=args.optimizer, lr=args.lr if args.lr is not None else lr, schedule="cosine"
        ),
    )
    ft_optim = default_finetune_optim(args.density)
    if args.finetune_lr is not None:
        ft_optim = OptimConfig(**{**ft_optim.__dict__, "lr": args.finetune_lr})
    finetune = FinetuneConfig(
        epochs=args.finetune_epochs or args.epochs, batch_size=args.batch_size, optim=ft_optim
    )
    return RunConfig(
        model=args.model,
        dataset=args.dataset,
        data_dir=args.data_dir,
        download=not args.no_download,
        val_size=args.val_size,
        weight_init=args.weight_init,
        seed=args.seed,
        device=args.device,
        mine=mine,
        finetune=finetune,
    )


def _run(args: argparse.Namespace) -> int:
    from . import pipeline  # heavy imports only when a stage runs

    if args.command == "list":
        registry = {
            "models": MODELS,
            "datasets": DATASETS,
            "methods": METHODS,
            "inits": WEIGHT_INITS,
        }[args.what]
        print("\n".join(registry.names()))
        return 0
    if args.command == "mine":
        cfg = config_from_args(args)
        out = Path(args.out) if args.out else Path("runs") / default_run_name(cfg)
        summary = pipeline.mine_run(
            cfg, out, overwrite=args.overwrite, progress=not args.no_progress
        )
        if args.finetune:
            summary = pipeline.finetune_run(out, progress=not args.no_progress)
        _print_summary(out, summary)
        return 0
    if args.command == "finetune":
        summary = pipeline.finetune_run(
            args.run_dir,
            epochs=args.epochs,
            lr=args.lr,
            batch_size=args.batch_size,
            data_dir=args.data_dir,
            device=args.device,
            progress=not args.no_progress,
        )
        _print_summary(args.run_dir, summary)
        return 0
    result = pipeline.eval_run(args.run_dir, data_dir=args.data_dir, device=args.device)
    print(json.dumps(result, indent=2))
    return 0


def _print_summary(run_dir: Path, summary: dict) -> None:
    def pct(v: float | None) -> str:
        return "—" if v is None else f"{100 * v:.2f} %"

    print(
        f"{run_dir}: {format_density(summary['density'])} "
        f"(target {100 * summary['target_density']:.2f} %), "
        f"pre-finetune accuracy {pct(summary['pre_finetune_acc'])}, "
        f"post-finetune accuracy {pct(summary.get('post_finetune_acc'))}, "
        f"{summary['seconds']:.0f} s"
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return _run(args)
    except GemMinerError as exc:
        print(f"gemminer: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("gemminer: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
