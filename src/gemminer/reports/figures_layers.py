"""The report's layer-wise density figure (paper Fig. 7), read from each run's mask.pt.

The density of each method's mask per layer, over bars of each layer's size, one panel per
model and target density. :func:`layer_density_figure` draws on a
:class:`matplotlib.figure.Figure` and returns it, or None when no pruned run holds a mask;
:mod:`gemminer.reports.figures` saves it as the report's PNG.
"""

from __future__ import annotations

from matplotlib.figure import Figure

from .collect import Collection, Group
from .figures_style import _MAX_PANELS, _labels, _log_axis, _marker, _method_colors, _methods

# layer-wise density (Fig. 7) -------------------------------------------------------------


def _layer_densities(group: Group) -> dict[str, float]:
    """Per layer, the density averaged over the group's runs that hold a mask."""
    sums: dict[str, list[float]] = {}
    for run in group.runs:
        for layer in run.layers:
            sums.setdefault(layer.name, []).append(layer.density)
    return {name: sum(v) / len(v) for name, v in sums.items()}


def layer_density_figure(collection: Collection) -> Figure | None:
    """Per-layer density of each method's mask over its layers' sizes, a panel per model
    and target; None when no pruned run holds a mask."""
    groups = [
        g
        for g in _methods(collection)
        if any(r.layers for r in g.runs) and g.density.mean is not None and g.density.mean < 1
    ]
    if not groups:
        return None
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
    return fig
