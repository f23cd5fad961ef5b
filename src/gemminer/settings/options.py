"""The settings of ``gemminer mine|prune|run`` as one table, with help text beside each.

Like open_lth's hparams dataclasses, which build their own flags, every setting is one
:class:`Option` in :data:`OPTIONS` — its key, how a value is read and checked, its
default when that does not depend on anything, the commands taking it, its help — and
the rest is generated from the table: the flags of the command line (:func:`add_flags`),
the keys of a sweep file (:func:`sweep_options`), and the checked mapping that
:func:`gemminer.settings.resolve.resolve` turns into a RunConfig (:func:`parse_options`). A new
setting is one entry here, plus what the resolver does with it.

Keys are the long flag names with ``_`` (``batch_size`` for ``--batch-size``, ``lambda``
for ``--lambda``). A value may be text (the command line) or a plain value (a sweep file,
Python); each option's parser takes both, with one wording per mistake, which reads
``argument --epochs: must be a whole number >= 1, got 0`` from the command line, a sweep
and a mapping alike. Pair options (``set``, ``model_arg``, ``data_arg``) take a mapping or
``KEY=VALUE`` texts. ``None``, and a switch's ``False``, mean "not given": the resolver
chooses (the recipe's row, the method's default, the budget's scaling).
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import yaml

from ..errors import ConfigError
from .config import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_DATASET,
    DEFAULT_DENSITY,
    DEFAULT_DEVICE,
    DEFAULT_EPOCHS,
    DEFAULT_LR,
    DEFAULT_METHOD,
    DEFAULT_MODEL,
    DEFAULT_PRECISION,
    DEFAULT_REGULARIZER,
    OPTIMIZERS,
    REGULARIZERS,
    RunConfig,
    check_density,
    default_data_dir,
    whole_number_message,
)
from .recipe import closest_names

Parser = Callable[[Any], Any]

#: Kinds of option: a value, a switch (true when given), repeatable ``KEY=VALUE`` pairs.
VALUE, SWITCH, PAIRS = "value", "switch", "pairs"
#: Groups of option: the settings of a run (what :func:`gemminer.settings.resolve.resolve` reads),
#: how the process trains (not part of a run's settings), what a command does with a run.
RUN, RUNTIME, COMMAND = "run", "runtime", "command"
#: The commands that find a ticket, and those that also train a run folder's ticket.
RUN_COMMANDS = ("mine", "prune", "run")
TRAIN_COMMANDS = (*RUN_COMMANDS, "finetune", "sanity")


# -- values -------------------------------------------------------------------------------


def scalar_text(value: Any) -> str:
    """A plain value as command-line text that argparse and YAML both read back
    (``True`` → ``true``, ``None`` → ``null``, ``1e-05`` → ``1.0e-05``)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        text = repr(value)
        if "e" in text and "." not in text:  # YAML 1.1 reads 1e-05 as a string
            text = text.replace("e", ".0e")
        return text
    return str(value)


def _text(value: Any) -> str:
    return value if isinstance(value, str) else scalar_text(value)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def text(value: Any) -> str:
    """Any scalar, as text (``model: 18`` in a sweep is the model ``"18"``)."""
    return _text(value)


def whole_number(minimum: int | None = 1) -> Parser:
    """A whole number >= ``minimum`` (``None``: any), else the one wording of every count
    (``must be a whole number >= 1, got 0``). Counts not given are ``None``, so 0 never
    stands for a default."""

    def parse(value: Any) -> int:
        number: int | None = value if _is_int(value) else None
        if number is None:
            try:
                number = int(_text(value))
            except ValueError:
                number = None
        if number is None or (minimum is not None and number < minimum):
            if minimum is None:
                raise ConfigError(f"must be a whole number, got {_text(value)}")
            raise ConfigError(whole_number_message(minimum, _text(value)))
        return number

    return parse


def _converter(kind: type) -> Parser:
    def parse(value: Any) -> Any:
        if _is_int(value) or (kind is float and isinstance(value, float)):
            return kind(value)
        try:
            return kind(_text(value))
        except ValueError:
            raise ConfigError(f"invalid {kind.__name__} value: {_text(value)!r}") from None

    return parse


#: A float (``--lr 0.3``), an integer (``--seed -1``): argparse's ``type=float``/``int``.
real = _converter(float)
integer = _converter(int)


def density(value: Any) -> float:
    """A target density in (0, 1] (the one check:
    :func:`gemminer.settings.config.check_density`)."""
    return check_density(value if isinstance(value, (int, float, str)) else _text(value))


def milestones(value: Any) -> tuple[int, ...]:
    """Finetuning epochs after which the LR drops ×0.1: ``80,120`` (or a list), each a
    whole number >= 1, increasing."""
    items = value if isinstance(value, (list, tuple)) else _text(value).split(",")
    if not items or any(_text(i).strip() == "" for i in items):
        raise ConfigError(f"must be epochs like 80,120, got {_text(value)!r}")
    epochs = tuple(_positive(i.strip() if isinstance(i, str) else i) for i in items)
    if any(b <= a for a, b in zip(epochs, epochs[1:])):
        raise ConfigError(f"must increase, got {','.join(map(str, epochs))}")
    return epochs


def choice(names: Callable[[], Sequence[str]]) -> Parser:
    """One of ``names()`` (read when used, so registries may grow), else argparse's
    wording of a bad choice, naming the closest valid ones. ``parse.choices`` is
    ``names``, for the flag's ``{a,b}`` in ``--help``."""

    def parse(value: Any) -> str:
        name, valid = _text(value), list(names())
        if name not in valid:
            close = closest_names(name, valid)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            listed = ", ".join(map(repr, valid))
            raise ConfigError(f"invalid choice: {name!r} (choose from {listed}){hint}")
        return name

    parse.choices = names  # type: ignore[attr-defined]
    return parse


_DURATION = re.compile(r"(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m)?(?:(\d+(?:\.\d+)?)s)?")


def duration(value: Any) -> float:
    """Seconds of a wall-clock duration: ``2h50m``, ``90m``, ``45s``, ``1.5h`` or
    ``H:MM:SS`` (as a cluster's job limit is written); more than 0. A bare number is
    refused: minutes or seconds would be a guess."""
    raw = _text(value).strip()
    parts = raw.split(":")
    seconds = None
    if len(parts) == 3 and all(p.isdigit() for p in parts):
        hours, minutes, secs = map(int, parts)
        seconds = 3600.0 * hours + 60.0 * minutes + secs
    elif raw and (match := _DURATION.fullmatch(raw)) and any(match.groups()):
        h, m, sec = (float(g or 0) for g in match.groups())
        seconds = 3600 * h + 60 * m + sec
    if seconds is None:
        raise ConfigError(f"must be a duration like 2h50m, 90m, 45s or 2:50:00, got {raw!r}")
    if seconds <= 0:
        raise ConfigError(f"must be longer than 0, got {raw!r}")
    return seconds


def yaml_scalar(value: Any) -> Any:
    """``--model-arg k=v`` values: text read as a YAML scalar (true, 3, 0.5, text)."""
    if not isinstance(value, str):
        return value
    return yaml.safe_load(value) if value else ""


def _weight_inits() -> list[str]:
    from ..masking import WEIGHT_INITS

    return WEIGHT_INITS.names()


def _precisions() -> tuple[str, ...]:
    from ..training.runtime import PRECISION_CHOICES

    return PRECISION_CHOICES


# -- the table ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Option:
    """One setting: ``key`` (the flag is ``--key`` with ``-``), its ``help``, the
    ``parse`` of one value (of each value, for pairs), its ``default`` when not given
    (``None``: :func:`gemminer.settings.resolve.resolve` chooses), the ``commands`` taking it and
    its ``group``. ``sweep``: why a sweep file does not take it (empty: it does).
    ``required_in``: commands that require it; ``strict``: a stricter parser for a command
    (``mine`` trains: ``--epochs`` >= 1). ``method``/``setting``: the one method that
    takes it, as its setting ``setting`` (``--lambda`` is Gem-Miner's ``lam``)."""

    key: str
    help: str
    parse: Parser = text
    kind: str = VALUE
    default: Any = None
    commands: tuple[str, ...] = RUN_COMMANDS
    group: str = RUN
    sweep: str = ""
    metavar: str | None = None
    required_in: tuple[str, ...] = ()
    strict: Mapping[str, Parser] = field(default_factory=dict)
    method: str = ""
    setting: str = ""

    @property
    def flag(self) -> str:
        return "--" + self.key.replace("_", "-")

    def parser(self, command: str | None = None) -> Parser:
        return self.strict.get(command or "", self.parse)


_positive = whole_number(1)
_GM = "Gem-Miner"

OPTIONS: tuple[Option, ...] = (
    Option("method", "registered method (`gemminer list methods`)", commands=("prune",),
           default=DEFAULT_METHOD, required_in=("prune",)),
    Option("set", "a method setting (`gemminer list methods -v`)", kind=PAIRS),
    Option("model", f"registered model (`gemminer list models`; default {DEFAULT_MODEL}; "
           "run: the recipe's)", default=DEFAULT_MODEL),
    Option("model_arg", "an option of the model, e.g. affine_bn=true", yaml_scalar, PAIRS),
    Option("pretrained", "weights loaded over the initialization: a state-dict file or "
           "torchvision:<arch>", default=""),
    Option("within", "prune within the ticket of this finished run, keeping a subset of "
           "its weights (Gem-Miner per weight; the run's model, data set, initialization "
           "and seed): e.g. the weights inside a channel ticket's channels", default="",
           metavar="RUN"),
    Option("dataset", f"registered data set (default {DEFAULT_DATASET}; run: the recipe's)",
           default=DEFAULT_DATASET),
    Option("data_dir", "data folder, downloaded into when empty "
           f"({default_data_dir('DATASET')})"),
    Option("data_arg", "an option of the data set, e.g. skip_bad=true", yaml_scalar, PAIRS),
    Option("image_size", "resize images to this size (data sets allowing it; default: the "
           "data set's)", _positive),
    Option("no_download", "never download; fail if data is missing", kind=SWITCH),
    Option("val_size", "hold out this many training images for validation (default: none)",
           whole_number(0)),
    Option("train_size", "train on a seeded random subset of this size (default: the whole "
           "training set)", _positive),
    Option("density", f"target fraction of weights kept (default {DEFAULT_DENSITY}; run: "
           "the recipe's)", density, default=DEFAULT_DENSITY),
    # the minimum is the method's (0 for one-shot ones), checked once the method is known
    Option("epochs", "epochs to find the mask (per round if iterative; 0: one-shot "
           f"methods; default {DEFAULT_EPOCHS}; run: the recipe's)", whole_number(None),
           default=DEFAULT_EPOCHS,
           strict={"mine": _positive}),
    Option("period", f"{_GM}: freeze every T epochs (default: paper's, scaled to --epochs)",
           _positive, method="gem-miner", setting="period"),
    Option("lambda", f"{_GM}: regularization weight (default: paper's, by density; "
           "Adam's × √(paper's/run's optimizer steps) for shorter runs)", real,
           method="gem-miner", setting="lam"),
    Option("regularizer", f"{_GM}: score regularizer (default {DEFAULT_REGULARIZER})",
           choice(lambda: REGULARIZERS), method="gem-miner", setting="regularizer"),
    Option("lr", "learning rate to find the mask (default: the paper's; SGD's × paper "
           "epochs/--epochs for shorter runs; Adam's unscaled; "
           f"{DEFAULT_LR['adam']} for --optimizer adam on an SGD row)", real),
    Option("weight_decay", "weight decay to find the mask (default: the method's)", real),
    Option("optimizer", "default: the paper's", choice(lambda: OPTIMIZERS)),
    Option("batch_size", f"default: the paper's ({DEFAULT_BATCH_SIZE})", _positive),
    Option("weight_init", "default: the method's", choice(_weight_inits)),
    Option("seed", f"default {RunConfig.seed}", integer, default=RunConfig.seed),
    Option("device", f"{DEFAULT_DEVICE}, cpu, cuda, cuda:1, ...", default=DEFAULT_DEVICE),
    Option("out", "run folder (default: runs/<method>-<model>-<dataset>-d<density>-<hash>)",
           group=COMMAND, sweep="the sweep names each run's folder; set the top-level "
           "`out:` for the sweep's"),
    Option("overwrite", "replace a run folder holding other settings", kind=SWITCH,
           group=COMMAND, sweep="a sweep never replaces runs with other settings"),
    Option("finetune", "finetune the ticket right away", kind=SWITCH, group=COMMAND,
           sweep="use the top-level `finetune: true`"),
    Option("print_config", "print the resolved settings and stop", kind=SWITCH,
           group=COMMAND, sweep="use `gemminer sweep FILE --commands` or --list"),
    Option("finetune_epochs", "default: the recipe's (Table 15), scaled to --epochs: "
           "--epochs itself for the paper's rows; the row's (150 for ResNet-20) after a "
           "one-shot method's --epochs 0", _positive),
    Option("finetune_lr", "default: Table 15's row (Smart Ratio: its authors' configs)", real),
    Option("finetune_milestones", "finetuning epochs after which the LR drops ×0.1, e.g. "
           "80,120 (default: the row's, scaled with the finetuning epochs)", milestones,
           metavar="E1,E2"),
    Option("no_epoch_eval", "evaluate on the test set only at the end, not after every "
           "epoch", kind=SWITCH),
    Option("eval_every", "evaluate on the test set every N epochs and after the last "
           f"(0: only after the last; default {RunConfig.eval_every})", integer,
           default=RunConfig.eval_every,
           metavar="N"),
    Option("no_progress", "no progress bars", kind=SWITCH, commands=TRAIN_COMMANDS,
           group=RUNTIME, sweep="pass --no-progress to `gemminer sweep`"),
    Option("precision", "auto (default): what was measured fastest on the device: bf16 on "
           "CPUs with AMX/AVX512-BF16, fp32 on CUDA GPUs and elsewhere; bf16: bfloat16 "
           "autocast, scores, weights and the optimizer kept in fp32", choice(_precisions),
           default=DEFAULT_PRECISION, commands=TRAIN_COMMANDS, group=RUNTIME),
    Option("compile", "torch.compile the training step (GPUs)", kind=SWITCH,
           commands=TRAIN_COMMANDS, group=RUNTIME),
    Option("threads", "CPU threads of each process (default: PyTorch's; under torchrun: "
           "OMP_NUM_THREADS)", _positive, commands=TRAIN_COMMANDS, group=RUNTIME),
    Option("time_limit", "stop once this long has passed (2h50m, 90m, 2:50:00), as on "
           "SIGTERM: checkpoint at the next step and exit with status 130; the same "
           "command again goes on (a cluster job's wall-clock limit)", duration,
           commands=TRAIN_COMMANDS, group=RUNTIME, metavar="DURATION",
           sweep="stop a sweep with SIGTERM (`timeout -s TERM 2h50m gemminer sweep ...`): "
           "its runs checkpoint and the sweep resumes them"),
    Option("tensorboard", "also log epoch metrics to RUN_DIR/tensorboard (needs the "
           "tensorboard package)", kind=SWITCH, commands=TRAIN_COMMANDS, group=RUNTIME,
           sweep="run a point's printed command (--commands) with --tensorboard"),
    Option("no_finetune", "stop after finding the mask", kind=SWITCH, commands=("run",),
           group=COMMAND, sweep="use the top-level `finetune: false`"),
)  # fmt: skip
OPTIONS_BY_KEY = {o.key: o for o in OPTIONS}
#: The settings of a run, which :func:`gemminer.settings.resolve.resolve` reads.
RUN_OPTIONS = tuple(o for o in OPTIONS if o.group == RUN)


def options_for(command: str) -> tuple[Option, ...]:
    """The options of ``gemminer COMMAND``, in the order of its flags."""
    return tuple(o for o in OPTIONS if command in o.commands)


def sweep_options(command: str) -> dict[str, Option]:
    """The options a sweep file may set for points run as ``gemminer COMMAND``, by key."""
    return {o.key: o for o in options_for(command) if not o.sweep}


def not_in_sweeps(command: str) -> dict[str, str]:
    """Options of ``gemminer COMMAND`` that a sweep sets itself: key → what to do instead."""
    return {o.key: o.sweep for o in options_for(command) if o.sweep}


def static_defaults() -> dict[str, Any]:
    """The run settings whose default depends on nothing (model, density, epochs, ...)."""
    return {o.key: o.default for o in RUN_OPTIONS if o.default is not None}


# -- reading values -----------------------------------------------------------------------


def parse_pairs(option: Option, value: Any) -> dict[str, Any]:
    """``["k=v", ...]`` (the command line) or ``{k: v}`` → {k: value}, each value read by
    ``option.parse``; ``None`` values are left out (not given)."""
    if isinstance(value, Mapping):
        items = list(value.items())
    elif isinstance(value, (list, tuple)):
        items = []
        for pair in value:
            key, sep, raw = str(pair).partition("=")
            if not sep or not key:
                raise ConfigError(f"{option.flag} takes KEY=VALUE, got {pair!r}")
            items.append((key, raw))
    else:
        raise ConfigError(f"{option.flag} takes KEY=VALUE pairs, got {value!r}")
    return {str(k): option.parse(v) for k, v in items if v is not None}


def parse_value(option: Option, value: Any, command: str | None = None) -> Any:
    """``value`` of ``option`` as what it stands for; a :class:`ConfigError` in the command
    line's wording (``argument --density: ...``) otherwise."""
    if option.kind == PAIRS:
        return parse_pairs(option, value)
    if option.kind == SWITCH:
        if not isinstance(value, bool):
            raise ConfigError(f"argument {option.flag}: true or false, got {_text(value)}")
        return value
    try:
        return option.parser(command)(value)
    except ConfigError as exc:
        raise ConfigError(f"argument {option.flag}: {exc}") from None


def _is_given(value: Any) -> bool:
    return not (value is None or value is False or (isinstance(value, (list, dict)) and not value))


def unknown_option(key: str, valid: Sequence[str], what: str = "run setting") -> ConfigError:
    """The error for an option ``key`` not among ``valid``, naming the closest one."""
    close = closest_names(key, list(valid), n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return ConfigError(f"unknown {what} {key!r}{hint}; valid: {', '.join(valid)}")


def parse_options(
    options: Mapping[str, Any], command: str | None = None, group: str | None = RUN
) -> dict[str, Any]:
    """The given values of ``options`` (keys of :data:`OPTIONS`), read and checked in the
    table's order, as the command line checks its flags; not given ones left out.

    ``command``: only its options are valid (and its stricter parsers apply);
    ``group``: only options of that group are valid (``None``: any)."""
    valid = [
        o
        for o in (options_for(command) if command else OPTIONS)
        if group is None or o.group == group
    ]
    keys = {o.key for o in valid}
    for key in options:
        if key not in keys:
            raise unknown_option(str(key), [o.key for o in valid])
    out: dict[str, Any] = {}
    for option in valid:
        if option.key in options and _is_given(options[option.key]):
            value = parse_value(option, options[option.key], command)
            if _is_given(value):
                out[option.key] = value
    return out


def given(args: argparse.Namespace, group: str = RUN) -> dict[str, Any]:
    """The options of ``group`` given on the command line ``args`` (as parsed by flags of
    :func:`add_flags`), by key; pairs still as their ``KEY=VALUE`` texts."""
    values = vars(args)
    return {
        o.key: values[o.key]
        for o in OPTIONS
        if o.group == group and o.key in values and _is_given(values[o.key])
    }


# -- flags --------------------------------------------------------------------------------


def flag_type(parse: Parser, name: str) -> Callable[[str], Any]:
    """An argparse ``type``: ``parse``'s mistakes become argparse's (``argument --x: ...``)."""

    def convert(text: str) -> Any:
        try:
            return parse(text)
        except ConfigError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    convert.__name__ = name
    return convert


def add_flags(parser: argparse.ArgumentParser, command: str) -> None:
    """Add the flags of ``gemminer COMMAND`` (every option it takes) to ``parser``.

    Run settings default to ``None`` (not given: the resolver chooses); the others to
    their :attr:`Option.default`."""
    for o in options_for(command):
        if o.kind == SWITCH:
            parser.add_argument(o.flag, dest=o.key, action="store_true", help=o.help)
        elif o.kind == PAIRS:
            parser.add_argument(
                o.flag,
                dest=o.key,
                action="append",
                default=[],
                metavar="KEY=VALUE",
                help=f"{o.help} (repeatable)",
            )
        else:
            parse = o.parser(command)
            choices = getattr(parse, "choices", None)
            metavar = o.metavar or ("{" + ",".join(choices()) + "}" if choices else None)
            parser.add_argument(
                o.flag,
                dest=o.key,
                type=flag_type(parse, o.key),
                default=None if o.group == RUN else o.default,
                metavar=metavar,
                required=command in o.required_in,
                help=o.help,
            )
