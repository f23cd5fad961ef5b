"""Typed, frozen settings. Validation happens on construction, naming the bad value.

Defaults follow the paper: mining from Table 8 (ResNet-20, CIFAR-10; SGD, cosine LR, no
weight decay on scores, batch 128) and finetuning from Table 15 (SGD momentum 0.9, multistep
LR at 80/150 and 120/150 of the epochs, weight decay 1e-4 as in the authors' code). The
``DEFAULT_*`` constants below name them once: the dataclasses, the options table
(:mod:`gemminer.settings.options`), the resolver (:mod:`gemminer.settings.resolve`) and the
Python API read them from here. What a run actually uses is chosen by
:func:`gemminer.settings.resolve.resolve`.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import asdict, dataclass, field, fields, is_dataclass
from typing import Any

from ..errors import ConfigError

#: Training batches used to re-estimate BatchNorm statistics of a mask before evaluation.
CALIBRATION_BATCHES = 20

OPTIMIZERS = ("sgd", "adam")
SCHEDULES = ("cosine", "multistep", "constant")
REGULARIZERS = ("l2", "l1")
#: Gem-Miner's freezing schedules: the authors' code (default) or the printed Algorithm 1.
FREEZE_SCHEDULES = ("authors", "algorithm1")
#: Which mask Gem-Miner hands to finetuning: the flags q (the authors' configs) or r(p) ⊙ q.
FINETUNE_MASKS = ("flags", "rounded")
#: Which scores a freeze removes: the lowest (Gem-Miner) or the highest (the authors'
#: score-inversion sanity check).
FREEZE_ORDERS = ("lowest", "highest")
#: What Gem-Miner scores: every weight (the paper's), every channel of a channel set, or
#: every weight, the ticket then turned into channels (the target a fraction of the
#: multiply-adds for both of the latter).
GRANULARITIES = ("weight", "channel", "channel_from_weight")
#: The generation of defaults new runs are made with (see :class:`RunConfig`).
DEFAULTS_VERSION = 2

#: A run where nothing else is said: the paper's main setting, Table 8's row for ResNet-20
#: on CIFAR-10 at density 1.44 % (150 epochs, batch 128, SGD with a cosine LR, L2 on scores).
DEFAULT_MODEL = "resnet20"
DEFAULT_DATASET = "cifar10"
DEFAULT_METHOD = "gem-miner"
DEFAULT_DENSITY = 0.0144
DEFAULT_EPOCHS = 150
DEFAULT_BATCH_SIZE = 128
DEFAULT_OPTIMIZER = "sgd"
DEFAULT_REGULARIZER = "l2"
DEFAULT_DEVICE = "auto"
#: ``--precision`` when not given: what was measured fastest on the device, bf16 on CPUs
#: with bf16 matrix instructions, else fp32 (:func:`gemminer.training.runtime.auto_precision`).
DEFAULT_PRECISION = "auto"
#: The LR schedule that finds a mask (Table 8: cosine); finetuning's is multistep.
MINING_SCHEDULE = "cosine"
#: The LR that finds a mask with an optimizer other than the one a recipe row (or a
#: method's default LR) was tuned for: SGD 0.1 (Table 8), Adam 0.01 (the authors' Adam
#: LR: Tables 13–14 and their VGG-16 configs).
DEFAULT_LR = {"sgd": 0.1, "adam": 0.01}
#: Finetuning (Table 15): weight decay (the authors' code; the table lists none) and the
#: multistep milestones as fractions of the epochs (80 and 120 of 150).
FINETUNE_WEIGHT_DECAY = 1e-4
FINETUNE_MILESTONES = (80 / 150, 120 / 150)


def default_data_dir(dataset: str) -> str:
    """Where a data set is read from (and downloaded into) unless told: ``.data/<dataset>``."""
    return f".data/{dataset}"


def require(ok: bool, message: str) -> None:
    """A :class:`ConfigError` with ``message`` unless ``ok``."""
    if not ok:
        raise ConfigError(message)


def whole_number_message(minimum: int, value: object) -> str:
    """The one wording for a count out of range: ``must be a whole number >= 1, got 0``."""
    return f"must be a whole number >= {minimum}, got {value}"


def check_whole(value: object, minimum: int, what: str) -> int:
    """``value`` if it is an integer >= ``minimum``; a :class:`ConfigError` naming ``what``
    and the value otherwise (the CLI's count flags say the same, see :mod:`gemminer.cli`)."""
    ok = isinstance(value, numbers.Integral) and not isinstance(value, bool)
    require(ok and value >= minimum, f"{what} {whole_number_message(minimum, value)}")
    return int(value)  # type: ignore[call-overload]


def check_density(density: object) -> float:
    """``density`` as a float if it lies in (0, 1]; a :class:`ConfigError` naming it
    otherwise. The one check of a target density: the API, the configs, recipe files, and
    ``--density`` or a sweep's ``density`` (which may give it as text, e.g. ``"0.05"``)."""
    value = density
    if isinstance(density, str):
        try:
            value = float(density)
        except ValueError:
            raise ConfigError(f"density must be a number, got {density!r}") from None
    require(
        isinstance(value, numbers.Real)
        and not isinstance(value, bool)
        and 0 < value <= 1,  # also refuses nan
        f"density must lie in (0, 1] (the fraction of weights kept), got {density}",
    )
    return float(value)  # type: ignore[arg-type]


def check_choice(value: str, valid: tuple[str, ...], what: str) -> None:
    """A :class:`ConfigError` naming ``value`` and the ``valid`` ones unless it is one."""
    require(value in valid, f"unknown {what} {value!r}; valid {what}s: {', '.join(valid)}")


@dataclass(frozen=True)
class OptimConfig:
    """Optimizer and learning-rate schedule. ``milestones`` are fractions of the epochs."""

    name: str = DEFAULT_OPTIMIZER
    lr: float = DEFAULT_LR[DEFAULT_OPTIMIZER]
    momentum: float = 0.9
    weight_decay: float = 0.0
    schedule: str = MINING_SCHEDULE
    milestones: tuple[float, ...] = ()
    gamma: float = 0.1

    def __post_init__(self) -> None:
        check_choice(self.name, OPTIMIZERS, "optimizer")
        check_choice(self.schedule, SCHEDULES, "schedule")
        require(math.isfinite(self.lr) and self.lr > 0, f"learning rate must be > 0, got {self.lr}")
        require(0 <= self.momentum < 1, f"momentum must lie in [0, 1), got {self.momentum}")
        require(self.weight_decay >= 0, f"weight decay must be >= 0, got {self.weight_decay}")
        require(
            all(0 < m < 1 for m in self.milestones),
            f"milestones are fractions of the epochs in (0, 1), got {self.milestones}",
        )
        object.__setattr__(self, "milestones", tuple(float(m) for m in self.milestones))


def default_finetune_optim(density: float) -> OptimConfig:
    """Table 15: LR 0.1 at 50 % density, 0.01 below; milestones 80 and 120 of 150 epochs."""
    return OptimConfig(
        lr=0.1 if density >= 0.5 else 0.01,
        weight_decay=FINETUNE_WEIGHT_DECAY,
        schedule="multistep",
        milestones=FINETUNE_MILESTONES,
    )


@dataclass(frozen=True)
class FinetuneConfig:
    """Weight training of a ticket with its mask fixed."""

    epochs: int = DEFAULT_EPOCHS
    batch_size: int = DEFAULT_BATCH_SIZE
    optim: OptimConfig = field(default_factory=lambda: default_finetune_optim(DEFAULT_DENSITY))

    def __post_init__(self) -> None:
        check_whole(self.epochs, 1, "epochs")
        check_whole(self.batch_size, 1, "batch size")


@dataclass(frozen=True)
class PruneConfig:
    """What every pruning method shares: the target and the budget to find the mask.

    ``epochs`` is the training budget of methods that train to find their mask (per
    round for iterative ones); ``optim`` and ``batch_size`` go with it.
    """

    density: float = DEFAULT_DENSITY
    epochs: int = DEFAULT_EPOCHS
    batch_size: int = DEFAULT_BATCH_SIZE
    optim: OptimConfig = field(default_factory=OptimConfig)

    def __post_init__(self) -> None:
        check_density(self.density)
        check_whole(self.epochs, 0, "epochs")  # 0: methods that do not train (SNIP, ...)
        check_whole(self.batch_size, 1, "batch size")


@dataclass(frozen=True)
class RunConfig:
    """A whole run: what to build, what data to read, how to prune and finetune.

    ``settings`` holds the method's own settings (see ``gemminer list methods``), as
    plain values so the config stays JSON; ``model_args`` are extra arguments of the
    model factory (e.g. ``affine_bn``); ``pretrained`` is a weights file (or
    ``torchvision:<arch>``) loaded over the initialization; ``image_size`` resizes images
    of data sets that allow it (0: the data set's own size); ``data_args`` are options of
    the data set (e.g. ``skip_bad``, ``test_fraction`` of ``folder``).
    ``defaults_version`` names the generation of gemminer's defaults a run was made with:
    1 before they followed the authors' runs (option-B ResNet shortcuts, Algorithm 1's
    freezing, the rounded mask finetuned), 2 since. A run folder of other defaults is
    neither skipped as finished nor resumed; a config.json without it is version 1.
    """

    model: str = DEFAULT_MODEL
    dataset: str = DEFAULT_DATASET
    data_dir: str = default_data_dir(DEFAULT_DATASET)
    model_args: dict[str, Any] = field(default_factory=dict)
    pretrained: str = ""
    image_size: int = 0
    data_args: dict[str, Any] = field(default_factory=dict)
    download: bool = True
    val_size: int = 0
    train_size: int = 0
    weight_init: str = "signed_constant"
    seed: int = 0
    device: str = DEFAULT_DEVICE
    method: str = DEFAULT_METHOD
    prune: PruneConfig = field(default_factory=PruneConfig)
    settings: dict[str, Any] = field(default_factory=dict)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    sanity_check: str = ""
    sanity_seed: int = 0
    #: Evaluate the test set every this many epochs and after the last (0: only after the
    #: last, ``--no-epoch-eval``).
    eval_every: int = 1
    defaults_version: int = DEFAULTS_VERSION
    #: A finished run whose ticket the method prunes within (``--within``; "": none).
    within: str = ""

    def __post_init__(self) -> None:
        # 0: none held out, the whole training set, the data set's own image size
        check_whole(self.val_size, 0, "validation size")
        check_whole(self.train_size, 0, "training subset size")
        check_whole(self.image_size, 0, "image size")
        check_whole(self.eval_every, 0, "--eval-every")

    def to_dict(self) -> dict[str, Any]:
        """The settings as config.json stores them. ``eval_every`` is written in the layout
        run folders have always had — ``eval_each_epoch`` (false for 0) and ``eval_every``
        (1 for 0) — so the hashes in folder names and the checkpoints' keys, both made
        from this dict, stay those of the runs made before the two became one setting;
        for the same reason ``within`` is left out when empty."""
        out: dict[str, Any] = {}
        for key, value in asdict(self).items():
            if key == "within" and not value:
                continue
            if key == "eval_every":
                out["eval_each_epoch"] = value != 0
                value = value or 1
            out[key] = value
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunConfig:
        data = {"defaults_version": 1, **data}
        if not data.pop("eval_each_epoch", True):  # see to_dict
            data["eval_every"] = 0
        return _build(cls, data)


def _build(cls: type, data: dict[str, Any]) -> Any:
    """Rebuild nested frozen dataclasses from ``asdict`` output; unknown keys are errors."""
    known = {f.name: f for f in fields(cls)}
    unknown = sorted(set(data) - set(known))
    require(not unknown, f"unknown {cls.__name__} settings: {', '.join(unknown)}")
    kwargs: dict[str, Any] = {}
    for name, value in data.items():
        factory = known[name].default_factory
        default = factory() if callable(factory) else None
        if is_dataclass(default) and isinstance(value, dict):
            value = _build(type(default), value)
        elif isinstance(value, list):
            value = tuple(value)
        kwargs[name] = value
    return cls(**kwargs)


def budget_scaled_lr(
    lr: float, published_epochs: int, epochs: int, optimizer: str = DEFAULT_OPTIMIZER
) -> float:
    """The LR for a run of ``epochs`` of an ``lr`` published for ``published_epochs``.

    SGD: ``lr`` × published_epochs/epochs for a shorter run, so the summed LR — how far
    scores can travel, as an SGD step is lr × gradient — stays the published one; a
    longer run keeps ``lr``. Adam: ``lr`` unchanged at any budget, as its step is ≈ lr
    whatever the size of the gradient: scaling it makes every step larger, and at
    lr × 15 half of the scores cross 0.5 within one epoch
    (benchmarks/results/score_travel.md). ``published_epochs`` ≤ 0: ``lr`` unchanged.
    """
    check_choice(optimizer, OPTIMIZERS, "optimizer")
    if optimizer != "sgd" or published_epochs <= 0 or epochs <= 0:
        return lr
    return lr * max(1.0, published_epochs / epochs)


#: The summed pull of λ on the scores, 2λ · Σ lr (Σ over the run's steps of the schedule's
#: peak LR), that an SGD run of fewer steps per epoch than its row is raised to at density
#: :data:`SGD_LAMBDA_PULL_DENSITY` (:func:`sgd_pull_target`). Measured on the 10,000-image
#: subset, 8 mining epochs, at 1.44 %: MobileNet-V2 mines at chance at its row's 0.07 (rare
#: gem 10.43 %), 43.68 % at 0.2 and 33.43 % at its paper run's 0.35; WRN-28-2 reads 18.28 % at
#: its row's 0.02, 15.11 % at its paper run's 0.12 and 41.56 % at 0.2; ResNet-20 reads 43.62 %
#: at its row's 0.24 and 24.26 % at its paper run's 1.17 (benchmarks/results/README.md;
#: benchmarks/results/*short_budget*.md).
SGD_LAMBDA_PULL = 0.2
#: The density at which :data:`SGD_LAMBDA_PULL` was measured.
SGD_LAMBDA_PULL_DENSITY = 0.0144


def sgd_pull_target(published: float, density: float | None = None) -> float:
    """The summed pull λ is raised to in a short SGD run of a row whose own (paper) run
    pulled ``published``, mining to ``density``.

    The row's own run's pull, and at least :data:`SGD_LAMBDA_PULL` × ln(0.5/density) /
    ln(0.5/0.0144): λ has to carry the rounded density from about 50 % (U[0, 1] scores,
    rounded) to the target ahead of the freezing bound, a pull per e-fold of density —
    0.2 at 1.44 % (measured), 0.073 at 13.74 %, none at 50 % (an assumption away from
    1.44 %; the rows measured there keep their paper run's pull: ResNet-20 at 13.74 %,
    0.117, rare gem 12.01 % → 50.00 %). At most :data:`SGD_LAMBDA_PULL`: the paper run's
    full pull prunes a short run past its target (ResNet-20 at 1.44 %). ``density``
    ``None``: the row's own run's pull, capped alike.
    """
    floor = 0.0
    if density is not None and 0 < density < 0.5:
        floor = SGD_LAMBDA_PULL * math.log(0.5 / density) / math.log(0.5 / SGD_LAMBDA_PULL_DENSITY)
    return min(SGD_LAMBDA_PULL, max(published, floor))


def lambda_pull(lam: float, lr: float, steps: int) -> float:
    """λ's summed pull on the scores over ``steps`` SGD steps at peak LR ``lr``: 2λ · lr ·
    steps. An SGD step moves a score p by lr · 2λp towards 0 on top of the task's gradient,
    so this is how far (in log p, before momentum and the schedule's shape) λ alone could
    carry every score."""
    return 2 * lam * lr * steps


def budget_scaled_lambda(
    lam: float,
    published_steps: int,
    steps: int,
    optimizer: str = DEFAULT_OPTIMIZER,
    *,
    published_lr: float | None = None,
    lr: float | None = None,
    density: float | None = None,
) -> float:
    """The λ for a run of ``steps`` optimizer steps of a ``lam`` published for
    ``published_steps``.

    Adam: ``lam`` × √(published_steps/steps) for a run of fewer steps. Adam's step is
    ≈ lr · (mean gradient)/(its spread), so over S steps λ's steady pull moves a score by
    ∝ S·λ while the task gradient's noise moves it by ∝ √S: λ × √(published/steps) keeps
    the pull's lead over the noise the published run had. Adam's LR cannot carry a
    shorter budget (:func:`budget_scaled_lr`), and at the published λ a short run keeps its
    scores above 0.5, so every freeze cuts live weights. Measured on VGG-16 at 1.4 %, 8
    epochs on 10,000 images (632 steps against the row's 78,200): λ 1e-6 (the row's)
    leaves the rare gem at chance (9.27 %), 5e-6 at 15.72 %; 1e-5 gives 64.57 % at 1.36 %,
    on the target; 2.5e-5 (× epochs alone) 62.25 % but at 0.39 %, pruned past it
    (benchmarks/results/vgg_short_budget.md); the rule gives 1.1e-5.

    SGD, given the run's peak ``lr`` and the row's ``published_lr``: :func:`budget_scaled_lr`
    keeps the summed LR over fewer *epochs*, and with it λ's summed pull
    (:func:`lambda_pull`); fewer steps per epoch (a training subset, a larger batch) still
    shrink it. There ``lam`` is raised until the pull reaches :func:`sgd_pull_target` for
    the row's ``density``: the published run's pull, at least a floor for the density (0.2
    at 1.44 %), at most 0.2. A row whose pull is strong enough keeps its λ (ResNet-20 at
    1.44 %: 0.24 on a 10,000-image subset, where the published 1.17 prunes past the
    target); a weak one is raised (MobileNet-V2 at 1.44 %: 0.07 → 0.2, λ × 2.8). Without
    the LRs, at the target or more, or at the published run's pull (the full training set
    at any epochs: measured rows only on subsets): unchanged.

    As many steps or more, ``published_steps`` ≤ 0, or ``lam`` = 0: unchanged.
    """
    check_choice(optimizer, OPTIMIZERS, "optimizer")
    if lam <= 0 or published_steps <= 0 or steps <= 0 or steps >= published_steps:
        return lam
    if optimizer == "adam":
        factor = math.sqrt(published_steps / steps)
    elif published_lr is None or lr is None or lr <= 0:
        return lam
    else:
        run = lambda_pull(lam, lr, steps)
        published = lambda_pull(lam, published_lr, published_steps)
        target = sgd_pull_target(published, density)
        if run >= target or run >= published * (1 - 1e-9):  # the full set: the same pull
            return lam
        factor = target / run
    return float(f"{lam * factor:.4g}")  # 1.112e-05, as typed


def mining_lr(
    optimizer: str,
    epochs: int,
    *,
    tuned_lr: float,
    tuned_optimizer: str = DEFAULT_OPTIMIZER,
    tuned_epochs: int = 0,
) -> float:
    """The default LR to find a mask with ``optimizer`` in ``epochs``.

    ``tuned_lr`` was tuned for ``tuned_optimizer`` over ``tuned_epochs`` (a recipe row, or
    a method's default). It holds for that optimizer only: another one starts from its
    own :data:`DEFAULT_LR` (one optimizer's LR means nothing to another: Adam at SGD's
    0.1 moves every score by ≈ 0.1 a step). Then :func:`budget_scaled_lr` for the budget.
    """
    check_choice(optimizer, OPTIMIZERS, "optimizer")
    lr = tuned_lr if optimizer == tuned_optimizer else DEFAULT_LR[optimizer]
    return budget_scaled_lr(lr, tuned_epochs, epochs, optimizer)
