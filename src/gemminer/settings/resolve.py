"""One settings resolver: the only place that chooses a run's defaults.

``gemminer mine|prune|run`` turn their flags into a mapping of options
(:mod:`gemminer.settings.options`), ``gemminer sweep`` each grid point, and both call
:func:`resolve`, and so does the Python API (:func:`gemminer.mine`; :func:`gemminer.finetune`
takes Table 15's row through :func:`finetune_defaults`). So the same inputs resolve to the same
RunConfig — and the same run folder, named by its hash — whichever way they were given.

Where a setting comes from, first that applies:

1. the option given;
2. the recipe (``gemminer run``), or else the paper's row nearest to the model, data set
   and density (:func:`paper_row`; a method that ignores the target density, e.g. dense,
   takes the row of the density it trains at, so its finetuning LR is the densest row's);
3. the method's own defaults (its LR, weight decay, weight initialization);
4. the fixed defaults of the options table (:func:`gemminer.settings.options.static_defaults`).

Budget scaling: another ``epochs`` than the row's rescales the period, for SGD the mining LR
(the same summed LR; λ is raised where fewer steps per epoch — a subset, a larger batch —
leave its summed pull below a floor) and for Adam λ (the same lead over the noise)
(:meth:`gemminer.settings.recipe.Recipe.mining_at`), and the finetuning epochs
(:meth:`gemminer.settings.recipe.Recipe.finetune_epochs_at`: the mining epochs themselves on
every shipped row; the row's own after a one-shot method's 0 epochs).
"""

from __future__ import annotations

import dataclasses
import math
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..data import DATASETS
from ..errors import ConfigError
from ..methods import METHODS, MethodSpec
from ..models import MODELS
from .config import (
    DEFAULT_DATASET,
    DEFAULT_MODEL,
    DEFAULT_OPTIMIZER,
    DEFAULT_REGULARIZER,
    MINING_SCHEDULE,
    FinetuneConfig,
    OptimConfig,
    PruneConfig,
    RunConfig,
    default_data_dir,
    mining_lr,
    whole_number_message,
)
from .options import OPTIONS_BY_KEY, RUN_OPTIONS, parse_options, parse_pairs, scalar_text
from .options import static_defaults as _static_defaults
from .recipe import TRAIN_IMAGES, Recipe, load_recipe, paper_recipe

#: The settings of a recipe that stand in for options (``gemminer run``'s defaults).
_RECIPE_OPTIONS = ("model", "dataset", "density", "epochs", "image_size", "pretrained", "method")


@dataclasses.dataclass(frozen=True)
class MiningDefaults:
    """What finds a mask when not given: the optimizer, its LR and weight decay, and the
    row's Gem-Miner period and λ at the run's budget (``None`` where the row has none)."""

    optimizer: str
    lr: float
    weight_decay: float
    period: int | None
    lam: float | None


def paper_row(spec: MethodSpec, model: str, dataset: str, density: float) -> Recipe:
    """The paper's row that ``spec`` takes its defaults from: nearest to ``density``, or
    to the density the method trains at if it ignores the target (dense: 1)."""
    fixed = spec.fixed_density
    return paper_recipe(model, dataset, density if fixed is None else fixed)


def steps_per_epoch(dataset: str, train_size: int, val_size: int, batch_size: int) -> int | None:
    """A run's optimizer steps per epoch: its training images (``train_size`` of them, or
    the data set's :data:`~gemminer.settings.recipe.TRAIN_IMAGES` less ``val_size``) over
    ``batch_size``; ``None`` for a data set whose size is not known before loading it."""
    images = TRAIN_IMAGES.get(dataset)
    if images is None:
        return None
    images = min(train_size, images - val_size) if train_size else images - val_size
    return math.ceil(max(images, 1) / batch_size)


def mining_defaults(
    spec: MethodSpec,
    row: Recipe,
    epochs: int,
    optimizer: str | None = None,
    steps: int | None = None,
) -> MiningDefaults:
    """The mining defaults of method ``spec`` for ``epochs`` from ``row``.

    Optimizer: ``optimizer``, else the row's (for the row's own method), else SGD. LR: the
    row's for its method (:meth:`Recipe.mining_at`: another optimizer than the row's
    starts from that optimizer's default; SGD scaled to ``epochs``), else the method's own
    (:func:`gemminer.settings.config.mining_lr`). A one-shot method's 0 epochs take the period
    and LR of 1 epoch. λ: the row's, for Adam scaled to the run's optimizer steps
    (``steps`` per epoch, :func:`steps_per_epoch`), for SGD raised where those steps leave
    its summed pull below a floor (:func:`gemminer.settings.config.budget_scaled_lambda`).
    Weight decay: the row's, else the method's."""
    own_row = row.method == spec.name
    optimizer = optimizer or (row.optimizer if own_row else DEFAULT_OPTIMIZER)
    period, lr, lam = row.mining_at(max(epochs, 1), optimizer, steps)
    if not own_row or lr is None:  # the method's default LR is an SGD one
        lr = mining_lr(optimizer, epochs, tuned_lr=spec.lr, tuned_epochs=spec.lr_epochs)
    weight_decay = row.weight_decay if own_row else None
    return MiningDefaults(
        optimizer=optimizer,
        lr=lr,
        weight_decay=spec.weight_decay if weight_decay is None else weight_decay,
        period=period,
        lam=lam,
    )


@dataclasses.dataclass(frozen=True)
class Derivation:
    """Where a resolved run's mining values came from, as far as its config shows:
    ``row`` is the paper's row its method's defaults come from (``None`` when the method
    has no row of its own, or none fits); ``lr`` is ``"row"`` (the row's LR), ``"budget"``
    (the row's LR scaled to the epochs) or ``""`` (given, or the method's own);
    ``period`` is ``"budget"`` when the row's period was scaled to the epochs; ``lam`` is
    ``"row"`` (the row's λ) or ``"budget"`` (the row's λ scaled to the run's optimizer
    steps, ``steps``: the row's and the run's — Adam's by their root, SGD's to a floor on
    its summed pull);
    ``finetune`` is ``"method"`` when the finetuning is the method's authors' row
    (:attr:`MethodSpec.finetune_rows`), not Table 15's. :mod:`gemminer.settings.explain`
    puts it in words."""

    row: Recipe | None = None
    lr: str = ""
    period: str = ""
    lam: str = ""
    steps: tuple[int, int] = (0, 0)
    finetune: str = ""


def _close(a: float | None, b: float | None) -> bool:
    return a is not None and b is not None and math.isclose(a, b, rel_tol=1e-9)


def _lam_source(lam: float | None, row: float | None, scaled: float | None) -> str:
    if _close(lam, row):
        return "row"
    return "budget" if _close(lam, scaled) else ""


def derivation(cfg: RunConfig) -> Derivation:
    """How :func:`resolve` derived ``cfg``'s mining LR, period and λ from the paper's row
    (the same :func:`paper_row` and :func:`mining_defaults` that chose them), and whose
    finetuning row it took."""
    spec = METHODS.get(cfg.method)
    own = spec.finetune_row(cfg.model, cfg.dataset)
    finetune = "method" if own is not None and _close(cfg.finetune.optim.lr, own.lr) else ""
    try:
        row = paper_row(spec, cfg.model, cfg.dataset, cfg.prune.density)
    except ConfigError:
        return Derivation(finetune=finetune)
    if row.method != spec.name:
        return Derivation(finetune=finetune)
    optim, epochs = cfg.prune.optim, cfg.prune.epochs
    steps = steps_per_epoch(cfg.dataset, cfg.train_size, cfg.val_size, cfg.prune.batch_size)
    defaults = mining_defaults(spec, row, epochs, optim.name, steps)
    lr = ""
    if row.lr is not None and optim.name == row.optimizer:
        lr = (
            "row" if _close(optim.lr, row.lr) else "budget" if _close(optim.lr, defaults.lr) else ""
        )
    period = cfg.settings.get("period")
    scaled = row.period is not None and row.epochs != epochs and period == defaults.period
    return Derivation(
        row=row,
        lr=lr,
        period="budget" if scaled else "",
        lam=_lam_source(cfg.settings.get("lam"), row.lam, defaults.lam),
        steps=row.mining_steps(max(epochs, 1), steps),
        finetune=finetune,
    )


def check_epochs(spec: MethodSpec, epochs: int) -> None:
    """At least the method's :attr:`~MethodSpec.min_epochs` (Gem-Miner and Edge-Popup
    train to find their mask: 1; one-shot methods may take 0)."""
    if epochs < spec.min_epochs:
        flag = OPTIONS_BY_KEY["epochs"].flag
        raise ConfigError(f"argument {flag}: {whole_number_message(spec.min_epochs, epochs)}")


def _coerce(value: Any, kind: Any, key: str) -> Any:
    if not isinstance(value, str):
        if type(value) is kind:
            return value
        value = scalar_text(value)  # read as the same text on the command line
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


def parse_settings(spec: MethodSpec, values: Mapping[str, Any] | Sequence[str]) -> dict[str, Any]:
    """The method's settings given as ``{key: value}`` or ``["key=value", ...]`` (``--set``),
    typed as the method declares them (text read as on the command line) and validated."""
    if not isinstance(values, Mapping):
        values = parse_pairs(OPTIONS_BY_KEY["set"], values)
    hints = typing.get_type_hints(spec.settings)
    typed: dict[str, Any] = {}
    for key, value in values.items():
        if key not in hints:
            spec.build_settings({key: value})  # raises, listing the valid settings
        typed[key] = _coerce(value, hints[key], key)
    spec.build_settings(typed)
    return typed


def _flagged_settings(
    spec: MethodSpec, given: Mapping[str, Any], settings: dict[str, Any], mining: MiningDefaults
) -> None:
    """Method settings with their own flag (Gem-Miner's ``--period``, ``--lambda``,
    ``--regularizer``): the flag, else the recipe's setting, else the row's, into
    ``settings``; an error if the method has no such setting."""
    flagged = [o for o in RUN_OPTIONS if o.setting]
    wrong = [o for o in flagged if o.method != spec.name and o.key in given]
    if wrong:
        methods = ", ".join(sorted({o.method for o in wrong}))
        flags = ", ".join(o.flag for o in wrong)
        verb = "applies" if len(wrong) == 1 else "apply"
        raise ConfigError(f"{flags} only {verb} to {methods}, not {spec.name}")
    row = {"period": mining.period, "lam": mining.lam, "regularizer": DEFAULT_REGULARIZER}
    for o in flagged:
        if o.method != spec.name:
            continue
        if o.key in given:
            settings[o.setting] = given[o.key]
        elif o.setting not in settings and row.get(o.setting) is not None:
            settings[o.setting] = row[o.setting]


def _check_settings(spec: MethodSpec, prune: PruneConfig, settings: Mapping[str, Any]) -> None:
    """Validate the method's settings with the budget (its registered ``validate``, e.g.
    Gem-Miner's period no longer than the epochs), so no run starts to fail later."""
    built = spec.build_settings(settings)
    if spec.validate is not None:
        spec.validate(prune, built)


def _check_within(spec: MethodSpec, within: str, settings: Mapping[str, Any]) -> None:
    """``--within`` only for a method that prunes within a ticket, per weight."""
    if not within:
        return
    if not spec.mines_within:
        able = ", ".join(n for n in METHODS.names() if METHODS.get(n).mines_within)
        raise ConfigError(
            f"argument --within: {spec.name} cannot prune within a ticket; methods that can: {able}"
        )
    if settings.get("granularity", "weight") != "weight":
        raise ConfigError(
            "argument --within: channel Gem-Miner cannot mine within a ticket: mine the "
            "channels first, then the weights inside them (granularity=weight)"
        )


def _prune_config(values: Mapping[str, Any], row: Recipe, mining: MiningDefaults) -> PruneConfig:
    return PruneConfig(
        density=values["density"],
        epochs=values["epochs"],
        batch_size=values.get("batch_size", row.batch_size),
        optim=OptimConfig(
            name=mining.optimizer,
            lr=values.get("lr", mining.lr),
            weight_decay=values.get("weight_decay", mining.weight_decay),
            schedule=MINING_SCHEDULE,
        ),
    )


def _finetune_config(values: Mapping[str, Any], row: Recipe, spec: MethodSpec) -> FinetuneConfig:
    """Table 15's row — or the method's own row for the model and data set
    (:attr:`MethodSpec.finetune_rows`) unless ``row`` is a recipe of that method —, its
    epochs scaled to the mining epochs, then the finetuning flags (:func:`finetune_overrides`)."""
    own = spec.finetune_row(values["model"], values["dataset"])
    if own is not None and row.method != spec.name:
        row = dataclasses.replace(row, finetune=own)
    finetune = row.finetune.config(row.finetune_epochs_at(values["epochs"]))
    return finetune_overrides(finetune, values)


def finetune_overrides(finetune: FinetuneConfig, values: Mapping[str, Any]) -> FinetuneConfig:
    """``finetune`` with the finetuning options of ``values`` that are given (not ``None``):
    ``finetune_epochs`` (the milestones keep their fractions), ``batch_size``,
    ``finetune_lr`` and ``finetune_milestones`` (epochs, each before the last). Used for a
    new run's settings and for ``gemminer finetune RUN --epochs/--lr/--batch-size``."""
    given = {key: value for key, value in values.items() if value is not None}
    epochs = given.get("finetune_epochs") or finetune.epochs
    optim = finetune.optim
    if "finetune_lr" in given:
        optim = dataclasses.replace(optim, lr=given["finetune_lr"])
    if "finetune_milestones" in given:
        late = [m for m in given["finetune_milestones"] if m > epochs]
        if late:
            raise ConfigError(
                f"argument --finetune-milestones: {late[0]} is past the {epochs} finetuning epochs"
            )
        optim = dataclasses.replace(
            optim, milestones=tuple(m / epochs for m in given["finetune_milestones"])
        )
    return dataclasses.replace(
        finetune,
        epochs=epochs,
        batch_size=given.get("batch_size", finetune.batch_size),
        optim=optim,
    )


def finetune_defaults(
    density: float,
    epochs: int,
    batch_size: int | None = None,
    model: str = DEFAULT_MODEL,
    dataset: str = DEFAULT_DATASET,
) -> FinetuneConfig:
    """Table 15's finetuning for a ticket of ``density`` (the row of ``model`` on
    ``dataset`` nearest to it) over ``epochs``, the milestones keeping their fractions:
    what the Python API's :func:`gemminer.finetune` uses where it is not told."""
    return paper_recipe(model, dataset, density).finetune.config(epochs, batch_size)


def _recipe_options(recipe: Recipe | None) -> dict[str, Any]:
    return {key: getattr(recipe, key) for key in _RECIPE_OPTIONS} if recipe else {}


def resolve(options: Mapping[str, Any], recipe: Recipe | str | Path | None = None) -> RunConfig:
    """The RunConfig of a run from its ``options`` (keys of
    :data:`gemminer.settings.options.OPTIONS` in the run group:
    ``{"density": 0.05, "epochs": 10, "set": {"lam": 0}}``, values as plain values or as
    their command-line text) and, for ``gemminer run``, a ``recipe``
    (a :class:`Recipe`, a file or a shipped name) whose settings they override.

    Defaults come from ``recipe``, else the paper's row nearest to the model, data set and
    density (``gemminer list recipes``), see the module docstring. Mistakes raise a
    :class:`ConfigError` in the command line's wording (``argument --density: ...``).
    """
    given = parse_options(options)
    if recipe is not None and not isinstance(recipe, Recipe):
        recipe = load_recipe(recipe)
    values = {**_static_defaults(), **_recipe_options(recipe), **given}
    spec = METHODS.get(values["method"])
    MODELS.get(values["model"])  # unknown names fail early, listing the valid ones
    DATASETS.get(values["dataset"])
    settings = dict(recipe.settings) if recipe else {}
    settings.update(parse_settings(spec, given.get("set", {})))
    row = recipe or paper_row(spec, values["model"], values["dataset"], values["density"])
    check_epochs(spec, values["epochs"])
    steps = steps_per_epoch(
        values["dataset"],
        values.get("train_size") or 0,
        values.get("val_size") or 0,
        values.get("batch_size", row.batch_size),
    )
    mining = mining_defaults(spec, row, values["epochs"], given.get("optimizer"), steps)
    _flagged_settings(spec, given, settings, mining)
    prune = _prune_config(values, row, mining)
    _check_settings(spec, prune, settings)
    _check_within(spec, values["within"], settings)
    return RunConfig(
        model=values["model"],
        dataset=values["dataset"],
        data_dir=values.get("data_dir") or default_data_dir(values["dataset"]),
        model_args={**(recipe.model_args if recipe else {}), **given.get("model_arg", {})},
        pretrained=values["pretrained"],
        image_size=values.get("image_size") or 0,  # 0: the data set's own size
        data_args=given.get("data_arg", {}),
        download=not values.get("no_download", False),
        val_size=values.get("val_size") or 0,
        train_size=values.get("train_size") or 0,  # 0: the whole training set
        weight_init=values.get("weight_init") or spec.default_init,
        seed=values["seed"],
        device=values["device"],
        method=spec.name,
        prune=prune,
        settings=settings,
        finetune=_finetune_config(values, row, spec),
        eval_every=0 if values.get("no_epoch_eval") else values["eval_every"],
        within=values["within"],
    )
