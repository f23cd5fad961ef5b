"""The report's accuracy figures: against density, before vs after finetuning, sanity checks.

Accuracy after (paper Fig. 3/4 top) and before finetuning (Fig. 6) against density per
method, post- against pre-finetune accuracy (Fig. 9), and each ticket's accuracy beside its
sanity checks' (Fig. 3/4 bottom). Each ``*_figure`` function draws on a
:class:`matplotlib.figure.Figure` from a :class:`~gemminer.reports.collect.Collection` and
returns it, or None when the runs hold no data for it; :mod:`gemminer.reports.figures`
saves it as the report's PNG.
"""

from __future__ import annotations

from typing import Any

from matplotlib.figure import Figure

from .collect import Collection, Group
from .figures_style import (
    _MAX_PANELS,
    ACC_LABEL,
    DENSITY_LABEL,
    _labels,
    _legend_outside,
    _log_axis,
    _marker,
    _method_colors,
    _methods,
    _seeds_text,
    _series,
    _target_text,
)

_CHECK_ORDER = ("shuffle", "reinit", "invert", "invert-posthoc")


# accuracy vs density (Fig. 3/4 top, Fig. 6) ---------------------------------------------


def accuracy_vs_density_figure(collection: Collection, which: str) -> Figure | None:
    """Accuracy against density per method, ``which`` ``"post"`` (after finetuning) or
    ``"pre"`` (before it: Gem-Miner's rounded mask); None when no run has that accuracy."""
    stat = (lambda g: g.post_acc) if which == "post" else (lambda g: g.stat("before_acc"))
    dens = (lambda g: g.density) if which == "post" else (lambda g: g.stat("before_density"))
    groups = [g for g in _methods(collection) if stat(g).mean is not None]
    if not groups:
        return None
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
    return fig


# pre- vs post-finetune accuracy (Fig. 9) -------------------------------------------------


def pre_vs_post_figure(collection: Collection) -> Figure | None:
    """Post- against pre-finetune accuracy per method (for Gem-Miner the rounded mask's
    before finetuning); None when no run has both."""
    groups = [
        g
        for g in _methods(collection)
        if g.stat("before_acc").mean is not None and g.post_acc.mean is not None
    ]
    if not groups:
        return None
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
    return fig


# sanity checks (Fig. 3/4 bottom) ---------------------------------------------------------


def _check_rank(check: str) -> tuple[int, str]:
    return (_CHECK_ORDER.index(check) if check in _CHECK_ORDER else len(_CHECK_ORDER), check)


def sanity_checks_figure(collection: Collection) -> Figure | None:
    """Bars of pre/post accuracy, one panel per ticket beside its sanity checks; None when
    no sanity-check run is given."""
    checks = [g for g in collection.groups if g.sanity_check]
    if not checks:
        return None
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
    return fig
