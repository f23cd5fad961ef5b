"""The report's figures over epochs, read from each run's metrics.jsonl.

Density while mining against the exponential bound (paper Fig. 2), and train and test
accuracy through mask search then finetuning (Fig. 5). Each ``*_figure`` function draws on
a :class:`matplotlib.figure.Figure` from a :class:`~gemminer.reports.collect.Collection`
and returns it, or None when the runs logged no such epochs;
:mod:`gemminer.reports.figures` saves it as the report's PNG.
"""

from __future__ import annotations

from collections.abc import Sequence

from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator

from .collect import Collection, Group, RunRecord
from .figures_style import DENSITY_LABEL, _epoch_styles, _legend_outside, _log_axis, _methods

_SEARCH_PHASES = ("mine", "prune")


# density over epochs with the bound (Fig. 2) ---------------------------------------------


def _mean_by_index(runs: Sequence[RunRecord], phases: Sequence[str], key: str) -> list[float]:
    """``key`` per epoch of ``phases``, averaged over runs (NaN where no run has it)."""
    rows = [[m.get(key) for m in r.metrics if m.get("phase") in phases] for r in runs]
    length = max((len(r) for r in rows), default=0)
    out = []
    for i in range(length):
        values = [r[i] for r in rows if i < len(r) and r[i] is not None]
        out.append(sum(values) / len(values) if values else float("nan"))
    return out


def _measured(values: Sequence[float]) -> tuple[list[int], list[float]]:
    """The epochs (from 1) at which ``values`` were measured, and those values in %: a test
    set evaluated every few epochs (``--eval-every``) is one line through its points."""
    points = [(i, 100 * v) for i, v in enumerate(values, start=1) if v == v]
    return [x for x, _ in points], [y for _, y in points]


def density_over_epochs_figure(collection: Collection) -> Figure | None:
    """Density per mining epoch with the bound (and the flags where logged); None when no
    run logged Gem-Miner's mining epochs."""
    groups = [
        g
        for g in _methods(collection)
        if any(m.get("phase") == "mine" and "bound" in m for r in g.runs for m in r.metrics)
    ]
    if not groups:
        return None
    styles = _epoch_styles(collection, groups)
    fig = Figure(figsize=(8.5, 4.8))
    ax = fig.add_subplot()
    for g, (label, color, marker) in zip(groups, styles):
        density = _mean_by_index(g.runs, ("mine",), "density")
        bound = _mean_by_index(g.runs, ("mine",), "bound")
        epochs = list(range(1, len(density) + 1))
        ax.plot(
            epochs,
            [100 * d for d in density],
            marker=marker,
            ms=4,
            color=color,
            label=label,
        )
        ax.plot(epochs, [100 * b for b in bound], ls=":", lw=1.8, color=color)
        flags = _measured(_mean_by_index(g.runs, ("mine",), "flag_density"))
        if flags[0]:
            ax.plot(*flags, ls="--", lw=1, color=color)
    for target in sorted({g.target_density for g in groups if g.targeted}):
        ax.axhline(100 * target, color="0.5", lw=0.8, ls="--")
    ax.set_yscale("log")
    _log_axis(ax.yaxis)
    ax.set_xlabel("mining epoch")
    ax.set_ylabel(DENSITY_LABEL)
    ax.set_title("Density while mining, and the exponential bound", fontsize=11)
    ax.grid(True, which="both", alpha=0.3)
    _legend_outside(
        ax,
        {
            "density of the rounded mask": Line2D([], [], color="0.3", marker="o", ms=4),
            "not yet frozen (dashed)": Line2D([], [], color="0.3", ls="--", lw=1),
            "bound (dotted)": Line2D([], [], color="0.3", ls=":", lw=1.8),
            "target density": Line2D([], [], color="0.5", ls="--", lw=0.8),
        },
    )
    return fig


# accuracy over epochs (Fig. 5) -----------------------------------------------------------


def accuracy_over_epochs_figure(collection: Collection) -> Figure | None:
    """Train and test accuracy per epoch through mask search then finetuning; None when no
    run logged both."""

    def has(g: Group, phases: Sequence[str]) -> bool:
        return any(m.get("phase") in phases for r in g.runs for m in r.metrics)

    groups = [g for g in _methods(collection) if has(g, _SEARCH_PHASES) and has(g, ("finetune",))]
    if not groups:
        return None
    styles = _epoch_styles(collection, groups)
    fig = Figure(figsize=(8.5, 4.8))
    ax = fig.add_subplot()
    switches = set()
    for g, (label, color, marker) in zip(groups, styles):
        train = _mean_by_index(g.runs, _SEARCH_PHASES, "train_acc")
        train += _mean_by_index(g.runs, ("finetune",), "train_acc")
        test = _mean_by_index(g.runs, _SEARCH_PHASES, "test_acc")
        switch = len(test)
        test += _mean_by_index(g.runs, ("finetune",), "test_acc")
        switches.add(switch)
        xs = list(range(1, len(train) + 1))
        ax.plot(xs, [100 * v for v in train], color=color, lw=1.4, label=label)
        tested = _measured(test)  # NaN: no test accuracy that epoch
        if tested[0]:
            ax.plot(
                *tested,
                color=color,
                ls="--",
                marker=marker,
                ms=5,
                lw=1,
            )
    for switch in sorted(switches):
        ax.axvline(switch + 0.5, color="0.2" if len(switches) == 1 else "0.6", lw=1, ls="-.")
    if len(switches) == 1:
        (switch,) = switches
        ax.text(switch + 0.5, 1.01, " finetuning →", transform=ax.get_xaxis_transform(), fontsize=8)
        ax.text(
            switch + 0.5,
            1.01,
            "← mask search ",
            transform=ax.get_xaxis_transform(),
            fontsize=8,
            ha="right",
        )
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epoch (mask search, then finetuning)")
    ax.set_ylabel("accuracy (%)")
    ax.set_title("Accuracy through mask search and finetuning", fontsize=11, pad=16)
    ax.grid(True, alpha=0.3)
    _legend_outside(
        ax,
        {
            "train accuracy (solid)": Line2D([], [], color="0.3", lw=1.4),
            "test accuracy (dashed)": Line2D([], [], color="0.3", ls="--", marker="o", ms=5, lw=1),
            "finetuning starts": Line2D([], [], color="0.4", ls="-.", lw=1),
        },
    )
    return fig
