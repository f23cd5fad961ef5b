"""What a run resolved that the user may not have typed, in words for its first lines.

``gemminer mine --density 0.0144 --epochs 10`` trains at LR 1.5 with period 1: values the
user never wrote. :func:`explain_settings` says which values a run uses and, where they
are the paper's row adjusted to the budget, how they were derived
(:func:`gemminer.settings.resolve.derivation`), so nobody has to read ``config.json`` to learn it.
It describes; it never chooses or derives a value.
"""

from __future__ import annotations

from ..methods import METHODS
from ..methods.gem_miner.settings import channel_gradient
from ..training.optim import milestone_epochs
from .config import RunConfig, lambda_pull
from .resolve import Derivation, derivation


def _num(x: float) -> str:
    return f"{x:g}"


def epochs_text(n: int) -> str:
    """``1 epoch``, ``10 epochs``."""
    return f"{n} epoch" if n == 1 else f"{n} epochs"


def _mining_lr(cfg: RunConfig, how: Derivation) -> str:
    optim = cfg.prune.optim
    text = f"{optim.name.upper() if optim.name == 'sgd' else optim.name.capitalize()} LR "
    text += _num(optim.lr)
    row = how.row
    if row is None or row.lr is None or not how.lr:
        return text
    if how.lr == "row":
        return text + f" (recipe {row.name})"
    return text + (
        f" = {_num(row.lr)} × {row.epochs}/{cfg.prune.epochs} epochs (recipe {row.name}: "
        "the same summed LR for a shorter run)"
    )


def _period(cfg: RunConfig, how: Derivation) -> str:
    period = cfg.settings.get("period")
    if period is None:
        return ""
    text = f"period {period}"
    if how.period and how.row is not None:
        text += f" (= {how.row.period} × {cfg.prune.epochs}/{how.row.epochs}, at least 1)"
    return text


def _lam(cfg: RunConfig, how: Derivation) -> str:
    lam = cfg.settings.get("lam", cfg.settings.get("lambda"))
    if lam is None:
        return ""
    text = f"λ {_num(lam)}"
    row = how.row
    if row is None or row.lam is None or not how.lam:
        return text
    if how.lam == "row":
        return text + f" (recipe {row.name})"
    published, steps = how.steps
    if cfg.prune.optim.name == "sgd":
        lr = cfg.prune.optim.lr
        pulls = (  # at the LR it was derived for: the default one, not a given --lr
            f"from a summed pull 2λ·lr·steps of {lambda_pull(row.lam, lr, steps):.3g} to "
            f"{lambda_pull(lam, lr, steps):.3g}"
            if how.lr
            else f"× {lam / row.lam:.3g} for the recipe's LR"
        )
        return text + (
            f" = {_num(row.lam)} raised {pulls} (recipe {row.name}: SGD's λ for a run of "
            "fewer steps per epoch)"
        )
    return text + (
        f" = {_num(row.lam)} × √({published}/{steps} steps) (recipe {row.name}: Adam's λ for "
        "a run of fewer steps)"
    )


def _finetune(cfg: RunConfig, how: Derivation) -> str:
    ft = cfg.finetune
    # the steps the scheduler takes; one after the last epoch never applies
    steps = [e for e in milestone_epochs(ft.optim, ft.epochs) if e < ft.epochs]
    if ft.optim.schedule != "multistep":
        schedule = f", {ft.optim.schedule} schedule"
    elif steps:
        schedule = (
            f", LR ×{_num(ft.optim.gamma)} after epoch{'s' if len(steps) > 1 else ''} "
            f"{', '.join(map(str, steps))}"
        )
    else:
        schedule = ", constant LR"

    source = f" ({cfg.method}'s authors' finetuning, not Table 15's)" if how.finetune else ""
    return (
        f"finetuning: {epochs_text(ft.epochs)}, {ft.optim.name.upper()} LR {_num(ft.optim.lr)}"
        f"{schedule}, weight decay {_num(ft.optim.weight_decay)}, batch {ft.batch_size}"
        f"{source}"
    )


def explain_settings(cfg: RunConfig) -> list[str]:
    """Lines naming the mining and finetuning settings of ``cfg`` and where they came from."""
    how = derivation(cfg)
    if cfg.prune.epochs > 0 and METHODS.get(cfg.method).trains:
        parts = [
            epochs_text(cfg.prune.epochs),
            _mining_lr(cfg, how),
            f"{cfg.prune.optim.schedule} schedule",
            _period(cfg, how),
            _lam(cfg, how),
            f"batch {cfg.prune.batch_size}",
        ]
        mining = f"{cfg.method}: " + ", ".join(p for p in parts if p)
    elif int(cfg.settings.get("train_epochs", 0) or 0) > 0:  # l1-filter after training
        mining = (
            f"{cfg.method}: scored once after {epochs_text(int(cfg.settings['train_epochs']))} "
            "of dense training"
        )
    else:
        mining = f"{cfg.method}: one shot (no training to find the mask)"
    others = {k: v for k, v in cfg.settings.items() if k not in ("period", "lam", "lambda")}
    if others.get("granularity") == "channel" and others.get("channel_gradient", "auto") == "auto":
        chosen = channel_gradient("auto", cfg.prune.optim.name)
        others["channel_gradient"] = f"{chosen} (auto: {cfg.prune.optim.name})"
    if others:
        mining += "; " + ", ".join(f"{k}={v}" for k, v in sorted(others.items()))
    return [mining, _finetune(cfg, how)]
