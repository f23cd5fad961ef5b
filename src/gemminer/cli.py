"""The ``gemminer`` command line: ``mine``, ``prune``, ``run``, ``finetune``, ``eval``, ``sanity``,
``report``, ``sweep``, ``export``, ``list``.

User mistakes (a bad value, a missing folder, an unknown name) end with a one-line
message on stderr and exit status 2, never a traceback; a mistake in the flags themselves
adds a second line naming the command's ``--help``. A count flag not given is ``None``
(its default is resolved later, e.g. from the paper's row); 0 and negative numbers are
refused with one wording (:func:`whole_number`), except where 0 means zero (``--val-size``,
a one-shot method's ``--epochs``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import typing
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
import yaml

from .config import OptimConfig, PruneConfig, RunConfig, mining_lr, whole_number_message
from .data import DATASETS
from .errors import ConfigError, GemMinerError
from .masking import WEIGHT_INITS, format_density
from .methods import METHODS, MethodSpec
from .models import MODELS
from .recipe import Recipe, closest_names, list_recipes, load_recipe, paper_recipe
from .reports import add_report_parser, run_report
from .runs import default_run_name
from .sanity import SANITY_CHECKS, sanity_run
from .sweep import add_sweep_parser, run_sweep
from .training.checkpoint import TrainingInterrupted
from .training.runtime import PRECISION_CHOICES, Runtime, start_runtime

EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


class ArgumentParser(argparse.ArgumentParser):
    """argparse, but a mistake in the flags prints one line and where to read more:

    ``gemminer mine: error: <message>`` then ``see `gemminer mine --help```, exit status 2
    (plain argparse prints the whole usage first). Subparsers inherit the class.
    """

    def error(self, message: str) -> typing.NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\nsee `{self.prog} --help`\n")

    def _check_value(self, action: argparse.Action, value: Any) -> None:
        """argparse's check of ``choices``, naming the closest valid ones."""
        try:
            super()._check_value(action, value)
        except argparse.ArgumentError as exc:
            close = closest_names(str(value), [str(c) for c in action.choices or ()])
            if not close:
                raise
            message = f"{exc.message}; did you mean {', '.join(close)}?"
            raise argparse.ArgumentError(action, message) from None

    def parse_args(  # type: ignore[override]
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> argparse.Namespace:
        parsed, extra = self.parse_known_args(args, namespace)
        if extra:  # named by the subcommand they were given to, not by `gemminer`
            self._command_parser(parsed).error(f"unrecognized arguments: {' '.join(extra)}")
        return parsed

    def _command_parser(self, parsed: argparse.Namespace) -> argparse.ArgumentParser:
        """The (sub)parser of the innermost subcommand in ``parsed``."""
        for action in self._actions:
            if isinstance(action, argparse._SubParsersAction):
                sub = action.choices.get(getattr(parsed, action.dest, None))
                if isinstance(sub, ArgumentParser):
                    return sub._command_parser(parsed)
        return self


def whole_number(minimum: int | None = 1) -> Callable[[str], int]:
    """An argparse ``type``: a whole number >= ``minimum`` (``None``: any), else the one
    wording of every count flag (``argument --epochs: must be a whole number >= 1, got 0``).
    Flags using it default to ``None`` ("not given"), so 0 never stands for a default."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or (minimum is not None and value < minimum):
            if minimum is None:
                raise argparse.ArgumentTypeError(f"must be a whole number, got {text}")
            raise argparse.ArgumentTypeError(whole_number_message(minimum, text))
        return value

    parse.__name__ = "whole number"
    return parse


_positive = whole_number(1)
_count = whole_number(0)


def _check_epochs(method: str, epochs: int) -> None:
    """Gem-Miner trains to find its mask (>= 1 epoch); one-shot methods may take 0."""
    minimum = 1 if method == "gem-miner" else 0
    if epochs < minimum:
        raise ConfigError(f"argument --epochs: {whole_number_message(minimum, epochs)}")


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


def _pairs_flag(p: argparse.ArgumentParser, flag: str, dest: str, help: str) -> None:
    """A repeatable ``KEY=VALUE`` flag collected into a list."""
    p.add_argument(
        flag,
        dest=dest,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help=f"{help} (repeatable)",
    )


def _add_run_flags(p: argparse.ArgumentParser, *, method: bool, mine: bool = False) -> None:
    if method:
        p.add_argument(
            "--method", required=True, help="registered method (`gemminer list methods`)"
        )
        _pairs_flag(p, "--set", "settings", "a method setting (`gemminer list methods -v`)")
    p.add_argument("--model", default="resnet20", help="registered model (`gemminer list models`)")
    _pairs_flag(p, "--model-arg", "model_args", "an option of the model, e.g. affine_bn=true")
    p.add_argument(
        "--pretrained",
        default="",
        help="weights loaded over the initialization: a state-dict file or torchvision:<arch>",
    )
    p.add_argument("--dataset", default="cifar10", help="registered data set")
    p.add_argument(
        "--data-dir", default=None, help="data folder, downloaded into when empty (.data/DATASET)"
    )
    _pairs_flag(p, "--data-arg", "data_args", "an option of the data set, e.g. skip_bad=true")
    p.add_argument(
        "--image-size",
        type=_positive,
        default=None,
        help="resize images to this size (data sets allowing it; default: the data set's)",
    )
    p.add_argument(
        "--no-download", action="store_true", help="never download; fail if data is missing"
    )
    p.add_argument(
        "--val-size",
        type=_count,
        default=None,
        help="hold out this many training images for validation (default: none)",
    )
    p.add_argument(
        "--train-size",
        type=_positive,
        default=None,
        help="train on a seeded random subset of this size (default: the whole training set)",
    )
    p.add_argument(
        "--density", type=_density, default=0.0144, help="target fraction of weights kept"
    )
    p.add_argument(
        "--epochs",
        # mine: Gem-Miner trains, >= 1; prune/run: the method's minimum, checked once known
        type=_positive if mine else whole_number(None),
        default=150,
        help="epochs to find the mask (per round if iterative; 0: one-shot methods)",
    )
    p.add_argument(
        "--lambda",
        dest="lam",
        type=float,
        default=None,
        help="Gem-Miner: regularization weight (default: paper's, by density)",
    )
    p.add_argument(
        "--regularizer",
        choices=("l2", "l1"),
        default=None,
        help="Gem-Miner: score regularizer (default l2)",
    )
    p.add_argument(
        "--period",
        type=_positive,
        default=None,
        help="Gem-Miner: freeze every T epochs (default: paper's, scaled to --epochs)",
    )
    p.add_argument(
        "--lr",
        type=float,
        default=None,
        help="learning rate to find the mask (default: the paper's; SGD's × paper epochs/"
        "--epochs for shorter runs; Adam's unscaled; 0.01 for --optimizer adam on an SGD row)",
    )
    p.add_argument(
        "--weight-decay",
        type=float,
        default=None,
        help="weight decay to find the mask (default: the method's)",
    )
    p.add_argument(
        "--optimizer", choices=("sgd", "adam"), default=None, help="default: the paper's"
    )
    p.add_argument("--batch-size", type=_positive, default=None, help="default: the paper's (128)")
    p.add_argument(
        "--weight-init", default=None, choices=WEIGHT_INITS.names(), help="default: the method's"
    )
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
    p.add_argument("--finetune", action="store_true", help="finetune the ticket right away")
    p.add_argument(
        "--print-config", action="store_true", help="print the resolved settings and stop"
    )
    p.add_argument(
        "--finetune-epochs",
        type=_positive,
        default=None,
        help="default: the recipe's (Table 15), scaled to --epochs: --epochs itself for the "
        "paper's rows; the row's (150 for ResNet-20) after a one-shot method's --epochs 0",
    )
    p.add_argument("--finetune-lr", type=float, default=None, help="default: Table 15's row")
    p.add_argument(
        "--no-epoch-eval",
        action="store_true",
        help="evaluate on the test set only at the end, not after every epoch",
    )
    p.add_argument(
        "--eval-every",
        type=int,
        default=1,
        metavar="N",
        help="evaluate on the test set every N epochs and after the last (default 1)",
    )
    _add_common(p)


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument(
        "--precision",
        choices=PRECISION_CHOICES,
        default="auto",
        help="auto (default): bf16 where the device runs it fast (CUDA GPUs with bf16, CPUs "
        "with AMX/AVX512-BF16), else fp32; bf16: bfloat16 autocast, scores, weights and the "
        "optimizer kept in fp32",
    )
    p.add_argument("--compile", action="store_true", help="torch.compile the training step (GPUs)")
    p.add_argument(
        "--threads",
        type=_positive,
        default=None,
        help="CPU threads of each process (default: PyTorch's; under torchrun: OMP_NUM_THREADS)",
    )
    p.add_argument(
        "--tensorboard",
        action="store_true",
        help="also log epoch metrics to RUN_DIR/tensorboard (needs the tensorboard package)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(
        prog="gemminer", description="Find sparse, trainable subnetworks at initialization."
    )
    sub = parser.add_subparsers(dest="command", required=True)

    mine = sub.add_parser("mine", help="find a ticket with Gem-Miner")
    _add_run_flags(mine, method=False, mine=True)
    _pairs_flag(mine, "--set", "settings", "a Gem-Miner setting (`gemminer list methods -v`)")
    _add_run_flags(
        sub.add_parser("prune", help="find a ticket with any registered method"), method=True
    )

    ft = sub.add_parser("finetune", help="finetune the ticket of a run folder")
    ft.add_argument("run_dir", type=Path)
    ft.add_argument("--epochs", type=_positive, default=None, help="default: the run's")
    ft.add_argument("--lr", type=float, default=None, help="default: the run's")
    ft.add_argument("--batch-size", type=_positive, default=None, help="default: the run's")
    ft.add_argument("--data-dir", default=None, help="read the data from here instead")
    ft.add_argument("--device", default=None)
    _add_common(ft)

    ev = sub.add_parser("eval", help="evaluate a run folder's ticket before and after finetuning")
    ev.add_argument("run_dir", type=Path)
    ev.add_argument("--data-dir", default=None)
    ev.add_argument("--device", default=None)

    ex = sub.add_parser("export", help="write a run's ticket as a compact safetensors file")
    ex.add_argument("run_dir", type=Path)
    ex.add_argument(
        "--out",
        type=Path,
        default=None,
        help="default: RUN_DIR/ticket.safetensors (--ticket: ticket-unfinetuned.safetensors)",
    )
    ex.add_argument(
        "--ticket", action="store_true", help="export the ticket before finetuning instead"
    )

    sa = sub.add_parser("sanity", help="a sanity check of a run's ticket, as a new run folder")
    sa.add_argument("run_dir", type=Path)
    sa.add_argument("--check", required=True, choices=SANITY_CHECKS.names())
    sa.add_argument("--seed", type=int, default=1, help="seed of the shuffle / re-initialization")
    sa.add_argument("--out", default=None, help="default: <run_dir>-<check>")
    sa.add_argument("--overwrite", action="store_true")
    sa.add_argument("--finetune", action="store_true", help="finetune the new ticket right away")
    _add_common(sa)

    run = sub.add_parser(
        "run",
        help="mine (or prune) and finetune with a recipe of the paper's settings",
        description="Run a recipe: a YAML file, or a shipped one by name (`gemminer list "
        "recipes`). Any flag of `gemminer prune` overrides the recipe; another --epochs "
        "rescales the period (and, for SGD, the mining LR to the same summed LR).",
    )
    run.add_argument("recipe", help="recipe file (recipes/NAME.yaml) or shipped recipe name")
    _add_run_flags(run, method=False)
    _pairs_flag(run, "--set", "settings", "a method setting (`gemminer list methods -v`)")
    run.add_argument("--no-finetune", action="store_true", help="stop after finding the mask")
    for action in run._actions:  # only the flags given on the command line override
        if action.dest not in ("help", "recipe"):
            action.default = argparse.SUPPRESS

    add_report_parser(sub)
    add_sweep_parser(sub)

    ls = sub.add_parser(
        "list", help="list registered models, data sets, methods, weight inits or recipes"
    )
    ls.add_argument("what", choices=("models", "datasets", "methods", "inits", "recipes"))
    ls.add_argument("-v", "--verbose", action="store_true", help="methods: show their settings")
    return parser


def _coerce(value: str, kind: Any, key: str) -> Any:
    try:
        if kind is bool:
            if value.lower() in ("1", "true", "yes", "on"):
                return True
            if value.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError(value)
        return kind(value)
    except ValueError:
        raise ConfigError(f"setting {key}={value!r} is not a valid {kind.__name__}") from None


def parse_settings(spec: MethodSpec, pairs: Sequence[str]) -> dict[str, Any]:
    """``["k=v", ...]`` → the method's settings as typed plain values (validated)."""
    hints = typing.get_type_hints(spec.settings)
    values: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise ConfigError(f"--set takes KEY=VALUE, got {pair!r}")
        if key not in hints:
            spec.build_settings({key: value})  # raises, listing the valid settings
        values[key] = _coerce(value, hints[key], key)
    spec.build_settings(values)
    return values


def _parse_pairs(pairs: Sequence[str], what: str) -> dict[str, Any]:
    """``["k=v", ...]`` → {k: v} with YAML scalars (true, 3, 0.5, text)."""
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ConfigError(f"{what} takes KEY=VALUE, got {pair!r}")
        out[key] = yaml.safe_load(value) if value else ""
    return out


def config_from_args(args: argparse.Namespace, recipe: Recipe | None = None) -> RunConfig:
    """Resolve the flags of ``gemminer prune``/``mine``/``run`` into a full RunConfig.

    Defaults come from ``recipe`` when given (``gemminer run``), else from the paper's
    row nearest to the model, data set and density (``gemminer list recipes``). The
    mining LR, unless ``--lr`` is given: the row's (or, for another method, the method's)
    LR when ``--optimizer`` is unset or the same as the row's, else that optimizer's
    default (Adam: 0.01); scaled to ``--epochs`` for SGD only
    (:func:`gemminer.config.mining_lr`, :meth:`gemminer.recipe.Recipe.mining_at`).

    Finetuning epochs, first that applies: ``--finetune-epochs``; else the row's finetune
    epochs scaled by ``--epochs`` / the row's mining epochs
    (:meth:`gemminer.recipe.Recipe.finetune_epochs_at`) — a recipe's own
    ``finetune.epochs`` when ``--epochs`` is not given, and ``--epochs`` itself on every
    shipped row, as Table 15 pairs the two budgets; for a one-shot method's ``--epochs 0``,
    the row's finetuning budget (150 for ResNet-20 on CIFAR-10). A method that ignores
    the target density (dense trains the whole network) takes its finetuning settings,
    e.g. the LR, from the row for density 1 (the densest), not the target's.
    """
    method = getattr(args, "method", "gem-miner")
    spec = METHODS.get(method)
    MODELS.get(args.model)  # unknown names fail early, listing the valid ones
    DATASETS.get(args.dataset)
    settings = dict(recipe.settings) if recipe else {}
    settings.update(parse_settings(spec, getattr(args, "settings", [])))
    # a method ignoring the target (dense) takes the row of the density it trains at
    density = args.density if spec.fixed_density is None else spec.fixed_density
    row = recipe or paper_recipe(args.model, args.dataset, density)
    _check_epochs(method, args.epochs)
    # a one-shot method's 0 epochs: the period and LR default as for 1 epoch
    epochs = max(args.epochs, 1)
    optimizer = args.optimizer or (row.optimizer if row.method == method else "sgd")
    period, lr, lam = row.mining_at(epochs, optimizer)
    if row.method != method or lr is None:  # the method's default LR is an SGD one
        lr = mining_lr(optimizer, args.epochs, tuned_lr=spec.lr, tuned_epochs=spec.lr_epochs)
    gm_flags = {"period": args.period, "lam": args.lam, "regularizer": args.regularizer}
    if method == "gem-miner":
        defaults = {"period": period, "lam": lam, "regularizer": "l2"}
        for key, flag in gm_flags.items():
            if flag is not None:
                settings[key] = flag
            elif key not in settings and defaults[key] is not None:
                settings[key] = defaults[key]
    else:
        used = [f"--{'lambda' if k == 'lam' else k}" for k, v in gm_flags.items() if v is not None]
        if used:
            raise ConfigError(f"{', '.join(used)} only apply to gem-miner, not {method}")
    weight_decay = row.weight_decay if row.method == method else None
    prune = PruneConfig(
        density=args.density,
        epochs=args.epochs,
        batch_size=args.batch_size if args.batch_size is not None else row.batch_size,
        optim=OptimConfig(
            name=optimizer,
            lr=args.lr if args.lr is not None else lr,
            weight_decay=next(
                w for w in (args.weight_decay, weight_decay, spec.weight_decay) if w is not None
            ),
            schedule="cosine",
        ),
    )
    if method == "gem-miner":  # validate the whole of Algorithm 1's settings now (e.g. T <= E)
        from .methods.gem_miner import mine_config

        mine_config(prune, spec.build_settings(settings))
    else:
        spec.build_settings(settings)
    finetune_epochs = args.finetune_epochs
    if finetune_epochs is None:
        finetune_epochs = row.finetune_epochs_at(args.epochs)
    finetune = row.finetune.config(finetune_epochs, args.batch_size)
    if args.finetune_lr is not None:
        finetune = dataclasses.replace(
            finetune, optim=dataclasses.replace(finetune.optim, lr=args.finetune_lr)
        )
    model_args = dict(recipe.model_args) if recipe else {}
    model_args.update(_parse_pairs(args.model_args, "--model-arg"))
    return RunConfig(
        model=args.model,
        dataset=args.dataset,
        data_dir=args.data_dir or f".data/{args.dataset}",
        model_args=model_args,
        pretrained=args.pretrained,
        image_size=args.image_size or 0,  # None (recipe: 0): the data set's own size
        data_args=_parse_pairs(args.data_args, "--data-arg"),
        download=not args.no_download,
        val_size=args.val_size or 0,
        train_size=args.train_size or 0,  # 0 in a RunConfig: the whole training set
        weight_init=args.weight_init or spec.default_init,
        seed=args.seed,
        device=args.device,
        method=method,
        prune=prune,
        settings=settings,
        finetune=finetune,
        eval_each_epoch=not args.no_epoch_eval,
        eval_every=args.eval_every,
    )


def recipe_args(recipe: Recipe, given: argparse.Namespace) -> argparse.Namespace:
    """``gemminer prune`` flags set to ``recipe``'s values, then to the flags ``given``."""
    args = build_parser().parse_args(["prune", "--method", recipe.method])
    for key in ("model", "dataset", "density", "epochs", "image_size", "pretrained", "method"):
        setattr(args, key, getattr(recipe, key))
    for key, value in vars(given).items():
        if key not in ("command", "recipe"):
            setattr(args, key, value)
    args.finetune = not getattr(args, "no_finetune", False)
    return args


def resolve_run(argv: Sequence[str]) -> tuple[argparse.Namespace, RunConfig]:
    """The flags and RunConfig of ``gemminer run RECIPE [flags]`` (argv without "run")."""
    given = build_parser().parse_args(["run", *argv])
    recipe = load_recipe(given.recipe)
    args = recipe_args(recipe, given)
    return args, config_from_args(args, recipe)


def _list(what: str, verbose: bool) -> None:
    if what == "recipes":
        for r in list_recipes():
            print(f"{r.name:<30} {r.paper}")
        return
    registry = {"models": MODELS, "datasets": DATASETS, "methods": METHODS, "inits": WEIGHT_INITS}[
        what
    ]
    for name in registry.names():
        if what == "methods":
            spec = METHODS.get(name)
            line = f"{name:<28} {spec.description}"
            if verbose:
                fields = ", ".join(
                    f"{f.name}={f.default!r}" for f in dataclasses.fields(spec.settings)
                )
                line += f"\n{'':<28} settings: {fields or 'none'}; init: {spec.default_init}"
            print(line.rstrip())
        else:
            print(name)


def _run(args: argparse.Namespace) -> int:
    if args.command == "report":
        return run_report(args)
    if args.command == "sweep":
        return run_sweep(args)
    from . import pipeline  # heavy imports only when a stage runs

    if args.command == "list":
        _list(args.what, args.verbose)
        return 0
    if args.command == "export":
        from .export import export_run

        info = export_run(args.run_dir, args.out, which="ticket" if args.ticket else "finetuned")
        print(info.describe())
        return 0
    if args.command in ("mine", "prune", "run", "finetune", "sanity"):
        threads = getattr(args, "threads", None)
        if threads is not None:
            torch.set_num_threads(threads)
        device = getattr(args, "device", None) or "auto"
        precision = getattr(args, "precision", "fp32")
        with start_runtime(
            device, precision=precision, compile=getattr(args, "compile", False)
        ) as (runtime, device):
            return _train(args, pipeline, runtime, device)
    result = pipeline.eval_run(args.run_dir, data_dir=args.data_dir, device=args.device)
    print(json.dumps(result, indent=2))
    return 0


def _train(args: argparse.Namespace, pipeline: Any, runtime: Runtime, device: str) -> int:
    """mine, prune, run, finetune and sanity: one process, or every rank under torchrun."""
    progress = not getattr(args, "no_progress", False)
    tb = getattr(args, "tensorboard", False)
    show = _print_summary if runtime.is_main else lambda *_: None
    if args.command in ("mine", "prune", "run"):
        if args.command == "run":
            recipe = load_recipe(args.recipe)
            args = recipe_args(recipe, args)
            cfg = config_from_args(args, recipe)
        else:
            cfg = config_from_args(args)
        if args.print_config:
            if runtime.is_main:
                print(json.dumps(cfg.to_dict(), indent=2))
            return 0
        out = Path(args.out) if args.out else Path("runs") / default_run_name(cfg)
        cfg = dataclasses.replace(cfg, device=device)
        summary = pipeline.prune_run(
            cfg, out, overwrite=args.overwrite, progress=progress, tensorboard=tb, runtime=runtime
        )
        if args.finetune:
            summary = pipeline.finetune_run(out, progress=progress, tensorboard=tb, runtime=runtime)
        show(out, summary)
        return 0
    if args.command == "finetune":
        summary = pipeline.finetune_run(
            args.run_dir,
            epochs=args.epochs,
            lr=args.lr,
            batch_size=args.batch_size,
            data_dir=args.data_dir,
            device=device if runtime.distributed else args.device,
            progress=progress,
            tensorboard=tb,
            runtime=runtime,
        )
        show(args.run_dir, summary)
        return 0
    out = Path(args.out) if args.out else Path(f"{args.run_dir}-{args.check}")
    summary = sanity_run(
        args.run_dir,
        args.check,
        out=out,
        seed=args.seed,
        overwrite=args.overwrite,
        progress=progress,
        runtime=runtime,
    )
    runtime.barrier()
    if args.finetune:
        summary = pipeline.finetune_run(
            out,
            device=device if runtime.distributed else None,
            progress=progress,
            tensorboard=tb,
            runtime=runtime,
        )
    show(out, summary)
    return 0


def _print_summary(run_dir: Path, summary: dict) -> None:
    def pct(v: float | None) -> str:
        return "—" if v is None else f"{100 * v:.2f} %"

    check = f" + {summary['sanity_check']}" if summary.get("sanity_check") else ""
    gem = (
        f"rare gem (rounded mask) {100 * summary['gem_density']:.2f} % kept at "
        f"{pct(summary.get('gem_acc'))}, "
        if summary.get("gem_density") is not None
        else ""
    )
    print(
        f"{run_dir}: {summary['method']}{check}, {format_density(summary['density'])} "
        f"(target {100 * summary['target_density']:.2f} %), "
        f"pre-finetune accuracy {pct(summary['pre_finetune_acc'])}, {gem}"
        f"post-finetune accuracy {pct(summary.get('post_finetune_acc'))}, "
        f"{summary['epochs_to_mask']:g} epochs to the mask, {summary['seconds']:.0f} s"
    )
    print(f"  {next_step(run_dir, summary)}")


def next_step(run_dir: Path, summary: dict) -> str:
    """Where a stage's files are and the command that usually comes next."""
    if summary.get("post_finetune_acc") is None:
        return f"files in {run_dir}/; next: gemminer finetune {run_dir}"
    return (
        f"files in {run_dir}/ (finetuned.pt, summary.json, metrics.jsonl); next: "
        f"gemminer report {run_dir} --out {run_dir}/report, or gemminer export {run_dir}"
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return _run(args)
    except TrainingInterrupted as exc:
        print(f"gemminer: interrupted: {exc}", file=sys.stderr)
        return EXIT_INTERRUPTED
    except GemMinerError as exc:
        print(f"gemminer: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("gemminer: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
