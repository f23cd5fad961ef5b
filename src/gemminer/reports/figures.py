"""The report's figures: one function per PNG, each drawn from collected run records.

Each function takes a :class:`~gemminer.reports.collect.Collection` and a PNG path, writes
the figure and returns True, or returns False (writing nothing) when the runs hold no data
for it. Figures are drawn on :class:`matplotlib.figure.Figure` objects (the Agg canvas),
never through ``pyplot``, so no global backend or figure state is touched.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator

from .collect import Collection, Group, RunRecord, series_labels

#: The largest PNG written; a figure over it is saved again at a lower resolution.
MAX_BYTES = 200_000
DPI = 110
DENSITY_LABEL = "density (fraction of weights kept, %)"
ACC_LABEL = "test accuracy (%)"
_MARKERS = "osD^vPX*h<>p"
_SEARCH_PHASES = ("mine", "prune")
_CHECK_ORDER = ("shuffle", "reinit", "invert", "invert-posthoc")
_MAX_PANELS = 4


def _save(fig: Figure, path: Path) -> None:
    for dpi in (DPI, 96, 72, 56):
        fig.savefig(path, dpi=dpi, bbox_inches="tight", metadata={"Software": None})
        if path.stat().st_size <= MAX_BYTES:
            return


def _colors(keys: Sequence[Hashable]) -> dict[Any, tuple]:
    """A color per key, in order: tab10, then tab20's light hues."""
    from matplotlib import colormaps

    tab10, tab20 = colormaps["tab10"], colormaps["tab20"]
    palette = [tab10(i) for i in range(10)] + [tab20(2 * i + 1) for i in range(10)]
    unique = list(dict.fromkeys(keys))
    return {key: palette[i % len(palette)] for i, key in enumerate(unique)}


def _method_colors(collection: Collection) -> dict[tuple, tuple]:
    """One color per method series (:attr:`Group.series`), the same in every figure."""
    return _colors([g.series for g in _methods(collection)])


def _labels(groups: Sequence[Group]) -> dict[tuple, str]:
    """The legend label of each series drawn: what tells it apart from the others drawn."""
    return series_labels([g.series for g in groups])


def _target_text(group: Group) -> str:
    return f"target {100 * group.target_density:.2f} %" if group.targeted else "no target"


def _epoch_styles(collection: Collection, groups: Sequence[Group]) -> list[tuple[str, tuple, str]]:
    """(label, color, marker) per group of a figure over epochs; with several target
    densities drawn, each group is its own curve and says its target."""
    labels = _labels(groups)
    if len({g.target_density for g in groups}) > 1:
        texts = [
            f"{labels[g.series]}, {100 * g.target_density:.2f} %"
            if g.targeted
            else labels[g.series]
            for g in groups
        ]
        colors = _colors(texts)
        return [(t, colors[t], _marker(colors, t)) for t in texts]
    colors = _method_colors(collection)
    return [(labels[g.series], colors[g.series], _marker(colors, g.series)) for g in groups]


def _marker(colors: dict[Any, tuple], key: Hashable) -> str:
    """The marker of ``key``: by its place in ``colors``, the same in every figure."""
    return _MARKERS[list(colors).index(key) % len(_MARKERS)]


def _lead(v: float) -> float:
    """``v`` over its power of ten: 250 → 2.5."""
    return round(v / 10 ** math.floor(math.log10(v) + 1e-9), 6)


def _log_labels(lo: float, hi: float) -> int:
    """How many ticks a log axis from ``lo`` to ``hi`` labels: the powers of ten, and the 2
    and 5 between them when it spans under two decades."""
    if lo <= 0 or hi <= lo:
        return 0
    leads = (1.0, 2.0, 5.0) if hi / lo <= 100 else (1.0,)
    first, last = math.floor(math.log10(lo)), math.ceil(math.log10(hi))
    return sum(lo <= lead * 10.0**k <= hi for k in range(first, last + 1) for lead in leads)


class _LogTicks(LogLocator):
    """Powers of ten, as a log axis has; a view too narrow to hold two labelled log ticks
    (e.g. densities from 1.2 to 1.8 %) gets evenly spaced plain values instead."""

    def tick_values(self, vmin: float, vmax: float):
        lo, hi = sorted((vmin, vmax))
        if lo > 0 and _log_labels(lo, hi) < 2:
            ticks = MaxNLocator(nbins=4, steps=[1, 2, 2.5, 5, 10]).tick_values(lo, hi)
            return ticks[ticks > 0]
        return super().tick_values(vmin, vmax)


def _log_axis(axis, fmt: str = "g") -> None:
    """Plain numbers on a log axis (``0.1``, ``1``, ``10``, not ``10^{-1}``); the 2 and 5
    between powers of ten are labelled too when the axis spans under two decades, and a
    narrower axis gets evenly spaced values (:class:`_LogTicks`)."""

    def text(v: float) -> str:
        return format(v, ",.0f" if fmt == "count" and v >= 1 else "g")

    def minor(v: float, _pos: int) -> str:
        lo, hi = sorted(axis.get_view_interval())
        if lo <= 0 or hi / lo > 100 or v <= 0 or _log_labels(lo, hi) < 2:
            return ""
        return text(v) if _lead(v) in (2.0, 5.0) else ""

    axis.set_major_locator(_LogTicks())
    axis.set_major_formatter(FuncFormatter(lambda v, _: text(v)))
    axis.set_minor_formatter(FuncFormatter(minor))


def _methods(collection: Collection) -> list[Group]:
    return [g for g in collection.groups if not g.sanity_check]


def _series(groups: Sequence[Group]) -> dict[tuple, list[Group]]:
    """The groups of each curve: one per :attr:`Group.series` (never joined by label)."""
    out: dict[tuple, list[Group]] = {}
    for g in groups:
        out.setdefault(g.series, []).append(g)
    return out


def _seeds_text(members: Sequence[Group]) -> str:
    """``n=2`` (distinct seeds), ``n=2, +1 repeat`` where a seed was run again; empty for
    one seed and no repeat."""
    n = max(len(g.distinct_seeds) for g in members)
    repeats = sum(g.repeats for g in members)
    if repeats:
        return f"n={n}, +{repeats} repeat{'s' * (repeats > 1)}"
    return f"n={n}" if n > 1 else ""


def _legend_outside(ax: Any, styles: dict[str, Any] | None = None) -> None:
    """The legend right of the axes: the plotted series, then ``styles`` (label → proxy
    artist) explaining line styles."""
    handles, texts = ax.get_legend_handles_labels()
    styles = styles or {}
    ax.legend(
        [*handles, *styles.values()],
        [*texts, *styles],
        loc="upper left",
        bbox_to_anchor=(1.01, 1.0),
        fontsize=8,
        frameon=False,
    )


# accuracy vs density (Fig. 3/4 top, Fig. 6) ---------------------------------------------


def _accuracy_vs_density(collection: Collection, path: Path, which: str) -> bool:
    stat = (lambda g: g.post_acc) if which == "post" else (lambda g: g.stat("before_acc"))
    dens = (lambda g: g.density) if which == "post" else (lambda g: g.stat("before_density"))
    groups = [g for g in _methods(collection) if stat(g).mean is not None]
    if not groups:
        return False
    labels = _labels(groups)
    colors = _method_colors(collection)
    fig = Figure(figsize=(8.5, 4.8))
    ax = fig.add_subplot()
    for key, members in _series(groups).items():
        members = sorted(members, key=lambda g: dens(g).mean)
        xs = [100 * dens(g).mean for g in members]
        ys = [100 * stat(g).mean for g in members]
        errs = [100 * stat(g).err for g in members]
        seeds = _seeds_text(members)
        text = f"{labels[key]} ({seeds})" if seeds else labels[key]
        if all(dens(g).mean >= 1.0 for g in members):  # the dense reference
            ax.axhline(ys[0], color=colors[key], ls="--", lw=1.2)
        ax.errorbar(
            xs,
            ys,
            yerr=errs if any(errs) else None,
            color=colors[key],
            marker=_marker(colors, key),
            ms=6,
            lw=1.4,
            capsize=3,
            label=text,
        )
    ax.set_xscale("log")
    _log_axis(ax.xaxis)
    ax.set_xlabel(DENSITY_LABEL)
    ax.set_ylabel(ACC_LABEL)
    title = (
        "after finetuning, mean ± std over seeds"
        if which == "post"
        else "before finetuning, mean ± std over seeds (Gem-Miner: its rounded mask, the rare gem)"
    )
    ax.set_title(f"Accuracy {title}", fontsize=11)
    ax.grid(True, which="both", alpha=0.3)
    _legend_outside(ax)
    _save(fig, path)
    return True


def accuracy_vs_density_post(collection: Collection, path: Path) -> bool:
    """Post-finetune accuracy against achieved density per method (paper Fig. 3/4 top)."""
    return _accuracy_vs_density(collection, path, "post")


def accuracy_vs_density_pre(collection: Collection, path: Path) -> bool:
    """Accuracy before finetuning against density per method (paper Fig. 6): for
    Gem-Miner the rounded mask (the rare gem) at its own density, for the others the
    ticket."""
    return _accuracy_vs_density(collection, path, "pre")


# layer-wise density (Fig. 7) -------------------------------------------------------------


def _layer_densities(group: Group) -> dict[str, float]:
    """Per layer, the density averaged over the group's runs that hold a mask."""
    sums: dict[str, list[float]] = {}
    for run in group.runs:
        for layer in run.layers:
            sums.setdefault(layer.name, []).append(layer.density)
    return {name: sum(v) / len(v) for name, v in sums.items()}


def layer_density(collection: Collection, path: Path) -> bool:
    """Per-layer density of each method's mask, with each layer's size (paper Fig. 7)."""
    groups = [
        g
        for g in _methods(collection)
        if any(r.layers for r in g.runs) and g.density.mean is not None and g.density.mean < 1
    ]
    if not groups:
        return False
    panels: dict[tuple[str, float], list[Group]] = {}
    for g in groups:
        panels.setdefault((g.first.model, g.target_density), []).append(g)
    keys = list(panels)[:_MAX_PANELS]
    colors = _method_colors(collection)
    n_layers = max(len(next(r for r in g.runs if r.layers).layers) for g in groups)
    # the legend sits right of the plot: the figure widens by its longest label, so that
    # the plot keeps its width however many series and settings the legend names
    longest = max(len(label) for key in panels for label in _labels(panels[key]).values())
    width = min(16.0, max(8.5, 0.32 * n_layers + 4)) + 0.07 * max(longest, 26)
    fig = Figure(figsize=(width, 4.2 * len(keys)))
    axes = fig.subplots(len(keys), 1, squeeze=False)[:, 0]
    for ax, key in zip(axes, keys):
        members = panels[key]
        layers = next(r for r in members[0].runs if r.layers).layers
        names = [layer.name for layer in layers]
        idx = list(range(len(names)))
        counts = ax.twinx()
        counts.bar(idx, [layer.total for layer in layers], color="0.85", width=0.8)
        counts.set_yscale("log")
        _log_axis(counts.yaxis, "count")
        counts.set_ylabel("weights in the layer (bars)", color="0.4")
        counts.tick_params(axis="y", colors="0.4")
        ax.set_zorder(counts.get_zorder() + 1)
        ax.patch.set_visible(False)
        curves = {}
        for g in members:
            dens = _layer_densities(g)
            curves[g.series] = [100 * dens[n] if n in dens else float("nan") for n in names]
        labels = _labels(members)
        positive = [y for ys in curves.values() for y in ys if y > 0]
        floor = min(positive, default=1.0) / 3  # log axis: a fully pruned layer sits here
        for series, ys in curves.items():
            ax.plot(
                idx,
                [floor if y == 0 else y for y in ys],
                marker=_marker(colors, series),
                ms=4,
                lw=1.2,
                color=colors[series],
                label=labels[series],
            )
        if any(y == 0 for ys in curves.values() for y in ys):
            ax.axhline(floor, color="0.3", ls=":", lw=1, label="0 % (layer fully pruned)")
            ax.set_ylim(bottom=floor / 1.5)
        ax.set_yscale("log")
        _log_axis(ax.yaxis)
        ax.set_ylabel("layer density (% kept)")
        ax.set_xticks(idx)
        ax.set_xticklabels(
            [f"{layer.name.removesuffix('.weight')} ({layer.total:,})" for layer in layers],
            rotation=90,
            fontsize=7,
        )
        ax.set_xlim(-0.6, len(names) - 0.4)
        ax.grid(True, axis="y", which="major", alpha=0.3)
        model, target = key
        ax.set_title(f"Layer-wise density, {model}, target {100 * target:.2f} %", fontsize=11)
        ax.legend(loc="upper left", bbox_to_anchor=(1.13, 1.0), fontsize=8, frameon=False)
    fig.tight_layout()
    _save(fig, path)
    return True


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


def density_over_epochs(collection: Collection, path: Path) -> bool:
    """Density of the rounded mask per mining epoch, of the weights not yet frozen (the
    flags, which the freezing keeps under the bound) and the exponential bound (Fig. 2)."""
    groups = [
        g
        for g in _methods(collection)
        if any(m.get("phase") == "mine" and "bound" in m for r in g.runs for m in r.metrics)
    ]
    if not groups:
        return False
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
    _save(fig, path)
    return True


# accuracy over epochs (Fig. 5) -----------------------------------------------------------


def accuracy_over_epochs(collection: Collection, path: Path) -> bool:
    """Train and test accuracy through mask search then finetuning on one axis (Fig. 5)."""

    def has(g: Group, phases: Sequence[str]) -> bool:
        return any(m.get("phase") in phases for r in g.runs for m in r.metrics)

    groups = [g for g in _methods(collection) if has(g, _SEARCH_PHASES) and has(g, ("finetune",))]
    if not groups:
        return False
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
    _save(fig, path)
    return True


# pre- vs post-finetune accuracy (Fig. 9) -------------------------------------------------


def pre_vs_post(collection: Collection, path: Path) -> bool:
    """Post- against pre-finetune accuracy per method (paper Fig. 9); for Gem-Miner the
    rounded mask's (the rare gem's) accuracy before finetuning."""
    groups = [
        g
        for g in _methods(collection)
        if g.stat("before_acc").mean is not None and g.post_acc.mean is not None
    ]
    if not groups:
        return False
    labels = _labels(groups)
    colors = _method_colors(collection)
    fig = Figure(figsize=(7.5, 5.5))
    ax = fig.add_subplot()
    for key, members in _series(groups).items():
        for j, g in enumerate(members):
            ax.errorbar(
                100 * g.stat("before_acc").mean,
                100 * g.post_acc.mean,
                xerr=100 * g.stat("before_acc").err or None,
                yerr=100 * g.post_acc.err or None,
                color=colors[key],
                marker=_marker(colors, key),
                ms=7,
                capsize=3,
                ls="none",
                label=labels[key] if j == 0 else None,
            )
            if len(members) > 1:
                ax.annotate(
                    f"{100 * g.target_density:.2g} %",
                    (100 * g.stat("before_acc").mean, 100 * g.post_acc.mean),
                    textcoords="offset points",
                    xytext=(5, -9),
                    fontsize=7,
                    color=colors[key],
                )
    lo, hi = min(ax.get_xlim()[0], ax.get_ylim()[0]), max(ax.get_xlim()[1], ax.get_ylim()[1])
    ax.plot([lo, hi], [lo, hi], color="0.5", ls=":", lw=1, label="post = pre")
    ax.set_xlim(lo, hi)
    ax.set_ylim(lo, hi)
    ax.set_aspect("equal")
    ax.set_xlabel("test accuracy before finetuning (%; Gem-Miner: rounded mask)")
    ax.set_ylabel("test accuracy after finetuning (%)")
    ax.set_title("Accuracy before vs after finetuning", fontsize=11)
    ax.grid(True, alpha=0.3)
    _legend_outside(ax)
    _save(fig, path)
    return True


# sanity checks (Fig. 3/4 bottom) ---------------------------------------------------------


def _check_rank(check: str) -> tuple[int, str]:
    return (_CHECK_ORDER.index(check) if check in _CHECK_ORDER else len(_CHECK_ORDER), check)


def sanity_checks(collection: Collection, path: Path) -> bool:
    """Pre/post accuracy of each ticket beside its sanity checks (Fig. 3/4 bottom rows)."""
    checks = [g for g in collection.groups if g.sanity_check]
    if not checks:
        return False
    sources = {id(g): collection.source_group(g) for g in checks}
    labels = _labels([s for s in sources.values() if s is not None])
    clusters: dict[Any, tuple[str, Group | None, list[Group]]] = {}
    for g in checks:
        source = sources[id(g)]
        if source is not None:  # one panel per source group, never two joined by label
            key: Any = (source.series, source.target_density)
            title = f"{labels[source.series]}, {_target_text(source)}"
        else:
            key = title = f"{g.first.source_run or '?'} (source run not given)"
        clusters.setdefault(key, (title, source, []))[2].append(g)
    keys = list(clusters)[:_MAX_PANELS]
    fig = Figure(figsize=(min(16.0, 4.2 * len(keys) + 1), 4.6))
    axes = fig.subplots(1, len(keys), squeeze=False, sharey=True)[0]
    for ax, key in zip(axes, keys):
        title, source, members = clusters[key]
        bars = ([("original", source)] if source is not None else []) + [
            (g.sanity_check, g) for g in sorted(members, key=lambda g: _check_rank(g.sanity_check))
        ]
        xs = range(len(bars))
        for offset, which, style in (
            (-0.2, "pre", {"color": "#9ecae1", "hatch": "//", "edgecolor": "#3182bd"}),
            (0.2, "post", {"color": "#3182bd"}),
        ):
            stats = [g.pre_acc if which == "pre" else g.post_acc for _, g in bars]
            heights = [100 * s.mean if s.mean is not None else 0.0 for s in stats]
            errs = [100 * s.std if s.std else float("nan") for s in stats]  # NaN: no bar
            label = "before finetuning" if which == "pre" else "after finetuning"
            rects = ax.bar(
                [x + offset for x in xs],
                heights,
                width=0.4,
                yerr=errs if any(e == e for e in errs) else None,
                capsize=3,
                label=label,
                **style,
            )
            ax.bar_label(
                rects,
                labels=["" if s.mean is None else f"{100 * s.mean:.1f}" for s in stats],
                fontsize=7,
                padding=2,
            )
        ax.set_xticks(list(xs))
        ax.set_xticklabels([name for name, _ in bars])
        ax.set_title(title, fontsize=9)
        ax.grid(True, axis="y", alpha=0.3)
    axes[0].set_ylabel(ACC_LABEL)
    axes[0].legend(fontsize=8, loc="upper right")
    fig.suptitle("Sanity checks beside the original ticket (mean ± std over seeds)", fontsize=11)
    fig.tight_layout()
    _save(fig, path)
    return True


@dataclass(frozen=True)
class FigureSpec:
    """One figure of the report: its file, title, drawing function and a note when empty."""

    file: str
    title: str
    draw: Callable[[Collection, Path], bool]
    empty: str


FIGURES: tuple[FigureSpec, ...] = (
    FigureSpec(
        "accuracy_vs_density_post.png",
        "Accuracy after finetuning vs density (paper Fig. 3/4, top)",
        accuracy_vs_density_post,
        "no run has a post-finetune accuracy (run `gemminer finetune` first)",
    ),
    FigureSpec(
        "accuracy_vs_density_pre.png",
        "Accuracy before finetuning vs density (paper Fig. 6)",
        accuracy_vs_density_pre,
        "no run has a pre-finetune accuracy",
    ),
    FigureSpec(
        "layer_density.png",
        "Layer-wise density with each layer's size (paper Fig. 7)",
        layer_density,
        "no pruned run holds a mask.pt",
    ),
    FigureSpec(
        "density_over_epochs.png",
        "Density while mining and the exponential bound (paper Fig. 2)",
        density_over_epochs,
        "no run logged Gem-Miner's mining epochs (metrics.jsonl with phase mine and bound)",
    ),
    FigureSpec(
        "accuracy_over_epochs.png",
        "Accuracy through mask search and finetuning (paper Fig. 5)",
        accuracy_over_epochs,
        "no run logged both mask-search and finetuning epochs in metrics.jsonl",
    ),
    FigureSpec(
        "pre_vs_post.png",
        "Accuracy before vs after finetuning (paper Fig. 9)",
        pre_vs_post,
        "no run has both pre- and post-finetune accuracies",
    ),
    FigureSpec(
        "sanity_checks.png",
        "Sanity checks beside the original ticket (paper Fig. 3/4, bottom)",
        sanity_checks,
        "no sanity-check runs given (`gemminer sanity RUN --check shuffle|reinit|invert`)",
    ),
)
