"""The ``gemminer`` command line: ``mine``, ``prune``, ``run``, ``finetune``, ``eval``, ``sanity``,
``report``, ``sweep``, ``export``, ``list``.

The flags of ``mine``, ``prune`` and ``run`` come from the options table
(:mod:`gemminer.settings.options`); what was given goes, as a mapping, to the one resolver
(:func:`gemminer.settings.resolve.resolve`), which chooses every default. User mistakes (a bad
value, a missing folder, an unknown name) end with a one-line message on stderr and exit
status 2, never a traceback; a mistake in the flags themselves adds a second line naming
the command's ``--help``. A count flag not given is ``None`` (its default is resolved
later, e.g. from the paper's row); 0 and negative numbers are refused with one wording
(:func:`gemminer.settings.options.whole_number`), except where 0 means zero (``--val-size``, a
one-shot method's ``--epochs``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from . import stages
from .data import DATASETS
from .data.base import check_batching
from .errors import ConfigError, GemMinerError
from .masking import WEIGHT_INITS, format_density
from .methods import METHODS, targets_density
from .models import MODELS
from .notices import is_main_process
from .reports import add_report_parser, run_report
from .rundir.compact import parse_input_shape
from .rundir.runs import default_run_name
from .rundir.summary import BestEpoch, RunSummary
from .settings.config import RunConfig
from .settings.options import RUN_COMMANDS, add_flags, flag_type, given, whole_number
from .settings.recipe import closest_names, list_recipes, load_recipe
from .settings.resolve import parse_settings, resolve
from .stages import SANITY_CHECKS
from .sweep import add_sweep_parser, run_sweep
from .training.checkpoint import TrainingInterrupted
from .training.runtime import Runtime, start_runtime
from .version import __version__

__all__ = ["build_parser", "config_from_args", "main", "parse_settings", "resolve_run"]

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


_positive = flag_type(whole_number(1), "whole number")


def _add_run_parsers(sub: Any) -> None:
    """``mine``, ``prune`` and ``run``: their flags are the options table's."""
    add_flags(sub.add_parser("mine", help="find a ticket with Gem-Miner"), "mine")
    add_flags(sub.add_parser("prune", help="find a ticket with any registered method"), "prune")
    run = sub.add_parser(
        "run",
        help="mine (or prune) and finetune with a recipe of the paper's settings",
        description="Run a recipe: a YAML file, or a shipped one by name (`gemminer list "
        "recipes`). Any flag of `gemminer prune` overrides the recipe; another --epochs "
        "rescales the period (and, for SGD, the mining LR to the same summed LR).",
    )
    run.add_argument("recipe", help="recipe file (recipes/NAME.yaml) or shipped recipe name")
    add_flags(run, "run")


def _add_finetune_parser(sub: Any) -> None:
    ft = sub.add_parser("finetune", help="finetune the ticket of a run folder")
    ft.add_argument("run_dir", type=Path)
    ft.add_argument("--epochs", type=_positive, default=None, help="default: the run's")
    ft.add_argument("--lr", type=float, default=None, help="default: the run's")
    ft.add_argument("--batch-size", type=_positive, default=None, help="default: the run's")
    ft.add_argument("--data-dir", default=None, help="read the data from here instead")
    ft.add_argument("--device", default=None)
    ft.add_argument(
        "--again",
        action="store_true",
        help="finetune again a run already finetuned with these settings (its finetuned.pt, "
        "metrics and summary are replaced); without it such a run is left as it is",
    )
    add_flags(ft, "finetune")


def _add_folder_parsers(sub: Any) -> None:
    """``eval``, ``export`` and ``sanity``: commands on a run folder."""
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
        help="default: RUN_DIR/ticket.safetensors (--ticket: ticket-unfinetuned.safetensors; "
        "--compact: ticket[-unfinetuned]-compact.safetensors)",
    )
    ex.add_argument(
        "--ticket", action="store_true", help="export the ticket before finetuning instead"
    )
    ex.add_argument(
        "--compact",
        action="store_true",
        help="write a smaller dense network instead: the channels the ticket no longer reads "
        "cut out (format gemminer-compact)",
    )
    ex.add_argument(
        "--input-shape",
        type=flag_type(parse_input_shape, "input shape"),
        default=None,
        help="--compact: one input's shape, C,H,W (default: the run's)",
    )

    sa = sub.add_parser("sanity", help="a sanity check of a run's ticket, as a new run folder")
    sa.add_argument("run_dir", type=Path)
    sa.add_argument("--check", required=True, choices=SANITY_CHECKS.names())
    sa.add_argument("--seed", type=int, default=1, help="seed of the shuffle / re-initialization")
    sa.add_argument("--out", default=None, help="default: <run_dir>-<check>")
    sa.add_argument("--overwrite", action="store_true")
    sa.add_argument("--finetune", action="store_true", help="finetune the new ticket right away")
    add_flags(sa, "sanity")


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(
        prog="gemminer", description="Find sparse, trainable subnetworks at initialization."
    )
    parser.add_argument(
        "--version",
        action="version",
        version=f"gemminer {__version__} (PyTorch {torch.__version__})",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    _add_run_parsers(sub)
    _add_finetune_parser(sub)
    _add_folder_parsers(sub)
    add_report_parser(sub)
    add_sweep_parser(sub)
    ls = sub.add_parser(
        "list", help="list registered models, data sets, methods, weight inits or recipes"
    )
    ls.add_argument("what", choices=("models", "datasets", "methods", "inits", "recipes"))
    ls.add_argument("-v", "--verbose", action="store_true", help="methods: show their settings")
    return parser


def config_from_args(args: argparse.Namespace, recipe: Any = None) -> RunConfig:
    """The RunConfig of parsed ``gemminer mine|prune|run`` flags: the options given,
    resolved by :func:`gemminer.settings.resolve.resolve` (``run``: over its recipe, or over
    ``recipe`` when given), which chooses every default."""
    if recipe is None and getattr(args, "recipe", None) is not None:
        recipe = load_recipe(args.recipe)
    return resolve(given(args), recipe)


def resolve_run(argv: Sequence[str]) -> tuple[argparse.Namespace, RunConfig]:
    """The flags and RunConfig of ``gemminer run RECIPE [flags]`` (argv without "run")."""
    args = build_parser().parse_args(["run", *argv])
    return args, config_from_args(args)


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
    if args.command == "list":
        _list(args.what, args.verbose)
        return 0
    if args.command == "export":
        from .rundir.export import export_run

        which = "ticket" if args.ticket else "finetuned"
        if args.input_shape is not None and not args.compact:
            raise ConfigError("--input-shape is for --compact exports only")
        shape = args.input_shape
        info = export_run(args.run_dir, args.out, which, compact=args.compact, input_shape=shape)
        print(info.describe())
        return 0
    if args.command in ("mine", "prune", "run", "finetune", "sanity"):
        # settings are resolved and checked before any process-group work, so that under
        # torchrun a user mistake ends every rank at once, before a file is written
        cfg = _checked_config(args) if args.command in RUN_COMMANDS else None
        with start_runtime(
            getattr(args, "device", None),  # sanity: the default device
            precision=args.precision,
            compile=args.compile,
            threads=args.threads,
            time_limit=args.time_limit,
        ) as (runtime, device):
            return _train(args, runtime, device, cfg)
    result = stages.eval_run(args.run_dir, data_dir=args.data_dir, device=args.device)
    print(json.dumps(result, indent=2))
    return 0


def _checked_config(args: argparse.Namespace) -> RunConfig:
    """The resolved settings of ``mine``/``prune``/``run``, with what the process count
    decides checked too (the batch sizes must divide over torchrun's processes)."""
    cfg = config_from_args(args)
    world = int(os.environ.get("WORLD_SIZE", "1") or 1)
    for batch in (cfg.prune.batch_size, cfg.finetune.batch_size):
        check_batching(batch, (0, world), train=True)
    return cfg


def _train(
    args: argparse.Namespace, runtime: Runtime, device: str, cfg: RunConfig | None = None
) -> int:
    """mine, prune, run, finetune and sanity: one process, or every rank under torchrun."""
    progress = not getattr(args, "no_progress", False)
    tb = getattr(args, "tensorboard", False)
    show = _print_summary if runtime.is_main else lambda *_: None
    if args.command in RUN_COMMANDS:
        cfg = cfg if cfg is not None else config_from_args(args)
        if args.print_config:
            if runtime.is_main:
                print(json.dumps(cfg.to_dict(), indent=2))
            return 0
        out = Path(args.out) if args.out else Path("runs") / default_run_name(cfg)
        cfg = dataclasses.replace(cfg, device=device)
        summary = stages.prune_run(
            cfg, out, overwrite=args.overwrite, progress=progress, tensorboard=tb, runtime=runtime
        )
        # `run` finetunes unless told not to; `mine` and `prune` when told to
        if not args.no_finetune if args.command == "run" else args.finetune:
            summary = stages.finetune_run(out, progress=progress, tensorboard=tb, runtime=runtime)
        show(out, summary)
        return 0
    if args.command == "finetune":
        summary = stages.finetune_run(
            args.run_dir,
            epochs=args.epochs,
            lr=args.lr,
            batch_size=args.batch_size,
            data_dir=args.data_dir,
            device=device if runtime.distributed else args.device,
            again=args.again,
            progress=progress,
            tensorboard=tb,
            runtime=runtime,
        )
        show(args.run_dir, summary)
        return 0
    out = Path(args.out) if args.out else Path(f"{args.run_dir}-{args.check}")
    summary = stages.sanity_run(
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
        summary = stages.finetune_run(
            out,
            device=device if runtime.distributed else None,
            progress=progress,
            tensorboard=tb,
            runtime=runtime,
        )
    show(out, summary)
    return 0


def _print_summary(run_dir: Path, figures: RunSummary) -> None:
    summary = figures.to_dict()

    def pct(v: float | None) -> str:
        return "—" if v is None else f"{100 * v:.2f} %"

    check = f" + {summary['sanity_check']}" if summary.get("sanity_check") else ""
    gem = (
        f"rare gem (rounded mask) {100 * summary['gem_density']:.2f} % kept at "
        f"{pct(summary.get('gem_acc'))}, "
        if summary.get("gem_density") is not None
        else ""
    )
    target = (
        f" (target {100 * summary['target_density']:.2f} %)"
        if targets_density(summary["method"])
        else ""
    )
    kept = f"{format_density(summary['density'])}{target}"
    if figures.budget == "flops" and figures.dense_flops:  # the target counts multiply-adds
        flops = 100 * figures.ticket_flops / figures.dense_flops
        kept = f"multiply-adds {flops:.2f} %{target}, {format_density(summary['density'])}"
    best_epoch = BestEpoch.of(figures)
    best = f" (last epoch), {best_epoch.describe()}" if best_epoch is not None else ""
    print(
        f"{run_dir}: {summary['method']}{check}, {kept}, "
        f"pre-finetune accuracy {pct(summary['pre_finetune_acc'])}, {gem}"
        f"post-finetune accuracy {pct(summary.get('post_finetune_acc'))}{best}, "
        f"{summary['epochs_to_mask']:g} epoch{'' if summary['epochs_to_mask'] == 1 else 's'} "
        f"to the mask, {summary['seconds']:.0f} s"
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
        _say(f"gemminer: interrupted: {exc}")
        return EXIT_INTERRUPTED
    except GemMinerError as exc:
        _say(f"gemminer: error: {exc}")
        return EXIT_USAGE
    except KeyboardInterrupt:
        _say("gemminer: interrupted")
        return EXIT_INTERRUPTED


def _say(line: str) -> None:
    """One line on stderr, from rank 0 alone under torchrun (every rank ends the same way)."""
    if is_main_process():
        print(line, file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
