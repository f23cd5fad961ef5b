"""Recipes: the paper's hyperparameter tables as YAML files, one per row.

``src/gemminer/recipes/<name>.yaml`` (also reachable as ``recipes/`` from the repository
root) holds one row of Tables 8–14 (network, data set, density, pruning period,
optimizer, LR, λ) with the matching finetuning row of Table 15. These files are the only
copy of those tables: ``gemminer mine`` takes its defaults from the nearest row too.
Where the printed table and the authors' configs (ksreenivasan/pruning_is_enough) that
produced the published numbers disagree, a recipe follows the config, and a comment in
the file gives the printed value and the config file followed.

A recipe's values hold at its own epoch budget. A shorter or longer run (``--epochs``)
rescales the period, for SGD the mining LR and for Adam λ, to the same summed LR or pull
(:meth:`Recipe.mining_at`), and the finetuning epochs by the same factor
(:meth:`Recipe.finetune_epochs_at`); the finetuning milestones keep their fractions of the
epochs.
"""

from __future__ import annotations

import difflib
import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..errors import ConfigError, UnknownNameError
from .config import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_DATASET,
    DEFAULT_METHOD,
    DEFAULT_MODEL,
    DEFAULT_OPTIMIZER,
    FINETUNE_WEIGHT_DECAY,
    OPTIMIZERS,
    FinetuneConfig,
    OptimConfig,
    budget_scaled_lambda,
    check_density,
    mining_lr,
)

RECIPE_DIR = Path(__file__).parent.parent / "recipes"
#: Training images of the data sets the paper's rows ran on, so a row's budget can be
#: counted in optimizer steps (:meth:`Recipe.mining_steps`); Caltech-101 has no fixed split.
TRAIN_IMAGES = {
    "cifar10": 50_000,
    "cifar100": 50_000,
    "tinyimagenet": 100_000,
    "imagenet": 1_281_167,
}
#: Recipe whose rows stand in for a model/data set the paper gives no table for: the
#: paper's main table (Table 8), whose model and data set are also gemminer's defaults.
FALLBACK = (DEFAULT_MODEL, DEFAULT_DATASET)


@dataclass(frozen=True)
class FinetuneRecipe:
    """Table 15: epochs, batch size, LR, the multistep milestones in epochs, and the
    optimizer (Table 15 names none: SGD, momentum 0.9, unless the authors' config says)."""

    epochs: int
    batch_size: int = DEFAULT_BATCH_SIZE
    lr: float = 0.01
    milestones: tuple[int, ...] = ()
    weight_decay: float = FINETUNE_WEIGHT_DECAY
    optimizer: str = DEFAULT_OPTIMIZER

    def config(self, epochs: int | None = None, batch_size: int | None = None) -> FinetuneConfig:
        """The finetuning settings for ``epochs`` (milestones keep their fractions);
        ``None``: the row's epochs and batch size."""
        return FinetuneConfig(
            epochs=self.epochs if epochs is None else epochs,
            batch_size=self.batch_size if batch_size is None else batch_size,
            optim=OptimConfig(
                name=self.optimizer,
                lr=self.lr,
                weight_decay=self.weight_decay,
                schedule="multistep",
                milestones=tuple(m / self.epochs for m in self.milestones),
            ),
        )


@dataclass(frozen=True)
class Recipe:
    """One row of the paper's tables (see the module docstring); ``lam`` is λ."""

    name: str
    paper: str
    model: str
    dataset: str
    density: float
    epochs: int
    finetune: FinetuneRecipe
    method: str = DEFAULT_METHOD
    batch_size: int = DEFAULT_BATCH_SIZE
    optimizer: str = DEFAULT_OPTIMIZER
    lr: float | None = None
    period: int | None = None
    lam: float | None = None
    weight_decay: float | None = None
    image_size: int = 0
    model_args: dict[str, Any] = field(default_factory=dict)
    pretrained: str = ""
    settings: dict[str, Any] = field(default_factory=dict)
    path: str = ""

    @property
    def steps_per_epoch(self) -> int | None:
        """The row's optimizer steps per epoch: its data set's training images
        (:data:`TRAIN_IMAGES`) over its batch size; ``None`` where the count is not known."""
        images = TRAIN_IMAGES.get(self.dataset)
        return None if images is None else math.ceil(images / self.batch_size)

    def mining_steps(self, epochs: int, steps_per_epoch: int | None = None) -> tuple[int, int]:
        """(the row's steps, a run's steps) to find the mask, for a run of ``epochs`` with
        ``steps_per_epoch`` (``None``: the row's); in epochs where the row's steps per epoch
        are not known."""
        own = self.steps_per_epoch
        if own is None:
            return self.epochs, epochs
        return self.epochs * own, epochs * (steps_per_epoch or own)

    def mining_at(
        self, epochs: int, optimizer: str | None = None, steps_per_epoch: int | None = None
    ) -> tuple[int | None, float | None, float | None]:
        """(period, lr, λ) for a run of ``epochs`` with ``optimizer`` (default: the row's)
        and ``steps_per_epoch`` optimizer steps each (default: the row's).

        Period: the row's period T × epochs/budget, rounded to whole epochs and clamped
        to [1, epochs]. It keeps its share of the run only where T × epochs/budget is a
        whole number ≥ 1: below budget/T epochs (30 for Table 8's 150/5) it is 1, so such
        a run freezes after every epoch — ⌊(E−1)/1⌋ = 9 times at E = 10 under the
        authors' schedule (10 under Algorithm 1's), against 29 (30) at 150 epochs — and
        each freeze removes a larger share of the flags. Longer runs get a longer period.

        LR (:func:`gemminer.settings.config.mining_lr`): SGD keeps the summed LR — lr ×
        budget/epochs for a shorter run, so scores can travel as far under the task
        gradient and λ's pull alike; without this a 10-epoch run at the paper's LR barely
        moves its scores and freezing removes mostly random weights (measured:
        benchmarks/results/gem_miner_resnet20_cifar10.md). Adam's LR is never rescaled:
        its step is ≈ lr whatever the gradient, so lr × 15 flips half the mask within one
        epoch (benchmarks/results/score_travel.md). An ``optimizer`` other than the row's
        starts from that optimizer's default LR (:data:`gemminer.settings.config.DEFAULT_LR`), not
        from the row's.

        λ (:func:`gemminer.settings.config.budget_scaled_lambda`): Adam, whose LR keeps its
        size, scales λ instead — × √(the row's steps/the run's) for a run of fewer
        optimizer steps (:meth:`mining_steps`: fewer epochs, a training subset or a larger
        batch). SGD's scaled LR keeps λ's summed pull over fewer epochs, but not over fewer
        steps per epoch (a subset, a larger batch): there λ is raised until its pull
        reaches :func:`~gemminer.settings.config.sgd_pull_target` for the row's density
        (MobileNet-V2 and WRN-28-2 at 1.44 % on a subset; ResNet-20 at 1.44 % keeps its λ).
        """
        period = self.period
        if period is not None:
            period = max(1, min(epochs, round(period * epochs / self.epochs)))
        lr = None
        if self.lr is not None:
            lr = mining_lr(
                optimizer or self.optimizer,
                epochs,
                tuned_lr=self.lr,
                tuned_optimizer=self.optimizer,
                tuned_epochs=self.epochs,
            )
        lam = self.lam
        if lam is not None:
            optimizer = optimizer or self.optimizer
            steps = self.mining_steps(epochs, steps_per_epoch)
            # the summed pull in steps needs the row's optimizer, LR and steps per epoch
            known = optimizer == self.optimizer and self.steps_per_epoch is not None
            lam = budget_scaled_lambda(
                lam,
                *steps,
                optimizer,
                published_lr=self.lr if known else None,
                lr=lr if known else None,
                density=self.density,
            )
        return period, lr, lam

    def finetune_epochs_at(self, epochs: int) -> int:
        """The finetuning epochs of a run mining for ``epochs`` (what ``--finetune-epochs``
        defaults to).

        The row's finetuning epochs × epochs/budget, rounded, at least 1: the row's own at
        its budget, and, as Table 15 pairs mining and finetuning budgets in every shipped
        row, the mining epochs themselves for those rows at any ``epochs``. ``epochs`` = 0
        (a one-shot method, which trains nothing to find its mask) keeps the row's own
        finetuning budget (150 epochs for ResNet-20 on CIFAR-10), as the paper finetunes
        every method's ticket alike.
        """
        if epochs <= 0:
            return self.finetune.epochs
        return max(1, round(self.finetune.epochs * epochs / self.epochs))


_KEYS = {
    "name", "paper", "model", "dataset", "density", "epochs", "finetune", "method",
    "batch_size", "optimizer", "lr", "period", "lambda", "weight_decay", "image_size",
    "model_args", "pretrained", "settings",
}  # fmt: skip
_REQUIRED = ("model", "dataset", "density", "epochs")
_FINETUNE_KEYS = {"epochs", "batch_size", "lr", "milestones", "weight_decay", "optimizer"}


def _number(data: dict, key: str, kind: type, where: str, default: Any = None) -> Any:
    value = data.get(key, default)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{where}: {key} must be a number, got {value!r}")
    if kind is int and value != int(value):
        raise ConfigError(f"{where}: {key} must be a whole number, got {value!r}")
    return kind(value)


def _optimizer(data: dict, where: str, what: str = "optimizer") -> str:
    optimizer = str(data.get("optimizer", DEFAULT_OPTIMIZER))
    if optimizer not in OPTIMIZERS:
        raise ConfigError(f"{where}: unknown {what} {optimizer!r}; valid: {', '.join(OPTIMIZERS)}")
    return optimizer


def _mapping(value: Any, what: str, where: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: {what} must be a mapping, got {value!r}")
    return dict(value)


def parse_recipe(data: Any, where: str = "recipe") -> Recipe:
    """Validate a recipe mapping (as read from YAML) into a :class:`Recipe`."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: a recipe is a mapping of settings, got {type(data).__name__}")
    unknown = sorted(set(data) - _KEYS)
    if unknown:
        raise ConfigError(
            f"{where}: unknown recipe keys {', '.join(unknown)}; valid keys: "
            f"{', '.join(sorted(_KEYS))}"
        )
    missing = [k for k in _REQUIRED if k not in data]
    if missing:
        raise ConfigError(f"{where}: missing recipe keys {', '.join(missing)}")
    ft = _mapping(data.get("finetune"), "finetune", where)
    bad = sorted(set(ft) - _FINETUNE_KEYS)
    if bad:
        raise ConfigError(
            f"{where}: unknown finetune keys {', '.join(bad)}; valid keys: "
            f"{', '.join(sorted(_FINETUNE_KEYS))}"
        )
    epochs = _number(data, "epochs", int, where)
    density = _number(data, "density", float, where)
    if epochs < 1:
        raise ConfigError(f"{where}: epochs must be >= 1, got {epochs}")
    try:
        check_density(density)
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    ft_epochs = _number(ft, "epochs", int, where, epochs)
    milestones = ft.get("milestones", ())
    if not isinstance(milestones, (list, tuple)) or not all(
        isinstance(m, int) and 0 < m < ft_epochs for m in milestones
    ):
        raise ConfigError(
            f"{where}: finetune milestones must be epochs in (0, {ft_epochs}), got {milestones!r}"
        )
    optimizer = _optimizer(data, where)
    ft_optimizer = _optimizer(ft, where, "finetune optimizer")
    name = str(data.get("name") or Path(where).stem)
    return Recipe(
        name=name,
        paper=str(data.get("paper", "")),
        model=str(data["model"]),
        dataset=str(data["dataset"]),
        density=density,
        epochs=epochs,
        finetune=FinetuneRecipe(
            epochs=ft_epochs,
            batch_size=_number(
                ft, "batch_size", int, where, data.get("batch_size", DEFAULT_BATCH_SIZE)
            ),
            lr=_number(ft, "lr", float, where, 0.01),
            milestones=tuple(milestones),
            weight_decay=_number(ft, "weight_decay", float, where, FINETUNE_WEIGHT_DECAY),
            optimizer=ft_optimizer,
        ),
        method=str(data.get("method", DEFAULT_METHOD)),
        batch_size=_number(data, "batch_size", int, where, DEFAULT_BATCH_SIZE),
        optimizer=optimizer,
        lr=_number(data, "lr", float, where),
        period=_number(data, "period", int, where),
        lam=_number(data, "lambda", float, where),
        weight_decay=_number(data, "weight_decay", float, where),
        image_size=_number(data, "image_size", int, where, 0),
        model_args=_mapping(data.get("model_args"), "model_args", where),
        pretrained=str(data.get("pretrained") or ""),
        settings=_mapping(data.get("settings"), "settings", where),
        path=where,
    )


def read_recipe(path: str | Path) -> Recipe:
    """Read and validate the recipe file ``path``."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read recipe {path}: {exc.strerror or exc}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"recipe {path} is not valid YAML: {exc}") from exc
    return parse_recipe(data, str(path))


def list_recipes() -> list[Recipe]:
    """The recipes shipped with gemminer, by name."""
    return list(_shipped_recipes())


@functools.cache
def _shipped_recipes() -> tuple[Recipe, ...]:
    recipes = (read_recipe(p) for p in RECIPE_DIR.glob("*.yaml"))
    return tuple(sorted(recipes, key=lambda r: r.name))


def closest_names(name: str, names: Sequence[str], n: int = 3) -> list[str]:
    """Up to ``n`` of ``names`` closest to a mistyped ``name``: those it begins (in order),
    else the most similar ones (:func:`difflib.get_close_matches`)."""
    if not name:
        return []
    starting = [x for x in names if x.startswith(name)]
    return starting[:n] or difflib.get_close_matches(name, names, n=n, cutoff=0.6)


def _did_you_mean(name: str, names: Sequence[str]) -> str:
    close = closest_names(name, names)
    return f"; did you mean {', '.join(close)}?" if close else ""


def load_recipe(name_or_path: str | Path) -> Recipe:
    """A recipe file, or a shipped recipe by name (``gemminer list recipes``).

    An unknown name (or a missing file whose name is close to a shipped recipe's) raises
    an error suggesting the closest shipped names.
    """
    path = Path(name_or_path)
    if path.is_file():
        return read_recipe(path)
    text = str(name_or_path)
    shipped = RECIPE_DIR / f"{text}.yaml"
    if "/" not in text and shipped.is_file():
        return read_recipe(shipped)
    names = [r.name for r in list_recipes()]
    if text.endswith((".yaml", ".yml")) or "/" in text:
        raise ConfigError(f"recipe file {path} does not exist{_did_you_mean(path.stem, names)}")
    raise UnknownNameError(
        f"unknown recipe {text!r}{_did_you_mean(text, names) or ';'} "
        f"valid recipes: {', '.join(names)}"
    )


def paper_recipe(model: str, dataset: str, density: float) -> Recipe:
    """The shipped row nearest to ``density`` (log scale) for ``model`` on ``dataset``.

    Falls back to the model's rows on another data set, then to ResNet-20 on CIFAR-10
    (Table 8) for models the paper has no table for.
    """
    recipes = [r for r in list_recipes() if r.method == "gem-miner" and r.pretrained == ""]
    for match in (
        lambda r: (r.model, r.dataset) == (model, dataset),
        lambda r: r.model == model,
        lambda r: (r.model, r.dataset) == FALLBACK,
    ):
        rows = [r for r in recipes if match(r)]
        if rows:
            return min(rows, key=lambda r: abs(math.log(r.density) - math.log(density)))
    raise ConfigError("no shipped recipe found; the installation is incomplete")
