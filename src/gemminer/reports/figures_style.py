"""The report figures' shared look: labels, colors, markers, log axes and legends.

Every figure (:mod:`gemminer.reports.figures`) draws a method series in the same color and
with the same marker (:func:`_method_colors`, :func:`_marker`), names it by what tells it
apart from the other series drawn (:func:`_labels`), shows log axes in plain numbers
(:func:`_log_axis`) and puts its legend right of the axes (:func:`_legend_outside`).
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Sequence
from typing import Any

from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator

from .collect import Collection, Group, series_labels

DENSITY_LABEL = "density (fraction of weights kept, %)"
ACC_LABEL = "test accuracy (%)"
_MARKERS = "osD^vPX*h<>p"
_MAX_PANELS = 4


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
