"""The report's figures: one function per PNG, each drawn from collected run records.

Each function takes a :class:`~gemminer.reports.collect.Collection` and a PNG path, writes
the figure and returns True, or returns False (writing nothing) when the runs hold no data
for it. Figures are drawn on :class:`matplotlib.figure.Figure` objects (the Agg canvas),
never through ``pyplot``, so no global backend or figure state is touched.

The drawing lives beside this module, by concern: the shared look (colors, markers, log
axes, legends) in :mod:`~gemminer.reports.figures_style`, the accuracy figures in
:mod:`~gemminer.reports.figures_accuracy`, the figures over epochs in
:mod:`~gemminer.reports.figures_epochs` and the layer-wise density in
:mod:`~gemminer.reports.figures_layers`; here each figure is saved (:func:`_save`, within
:data:`MAX_BYTES`) and listed in :data:`FIGURES`, the report's figures in order.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from matplotlib.figure import Figure

from .collect import Collection
from .figures_accuracy import accuracy_vs_density_figure, pre_vs_post_figure, sanity_checks_figure
from .figures_epochs import _measured as _measured  # the test-set line's points, re-exported
from .figures_epochs import accuracy_over_epochs_figure, density_over_epochs_figure
from .figures_layers import layer_density_figure
from .figures_style import ACC_LABEL, DENSITY_LABEL

__all__ = [
    "ACC_LABEL",
    "DENSITY_LABEL",
    "DPI",
    "FIGURES",
    "MAX_BYTES",
    "FigureSpec",
    "accuracy_over_epochs",
    "accuracy_vs_density_post",
    "accuracy_vs_density_pre",
    "density_over_epochs",
    "layer_density",
    "pre_vs_post",
    "sanity_checks",
]

#: The largest PNG written; a figure over it is saved again at a lower resolution.
MAX_BYTES = 200_000
DPI = 110


def _save(fig: Figure, path: Path) -> None:
    for dpi in (DPI, 96, 72, 56):
        fig.savefig(path, dpi=dpi, bbox_inches="tight", metadata={"Software": None})
        if path.stat().st_size <= MAX_BYTES:
            return


def _write(fig: Figure | None, path: Path) -> bool:
    """Save ``fig`` to ``path`` and return True; False (writing nothing) when None."""
    if fig is None:
        return False
    _save(fig, path)
    return True


def accuracy_vs_density_post(collection: Collection, path: Path) -> bool:
    """Post-finetune accuracy against achieved density per method (paper Fig. 3/4 top)."""
    return _write(accuracy_vs_density_figure(collection, "post"), path)


def accuracy_vs_density_pre(collection: Collection, path: Path) -> bool:
    """Accuracy before finetuning against density per method (paper Fig. 6): for
    Gem-Miner the rounded mask (the rare gem) at its own density, for the others the
    ticket."""
    return _write(accuracy_vs_density_figure(collection, "pre"), path)


def layer_density(collection: Collection, path: Path) -> bool:
    """Per-layer density of each method's mask, with each layer's size (paper Fig. 7)."""
    return _write(layer_density_figure(collection), path)


def density_over_epochs(collection: Collection, path: Path) -> bool:
    """Density of the rounded mask per mining epoch, of the weights not yet frozen (the
    flags, which the freezing keeps under the bound) and the exponential bound (Fig. 2)."""
    return _write(density_over_epochs_figure(collection), path)


def accuracy_over_epochs(collection: Collection, path: Path) -> bool:
    """Train and test accuracy through mask search then finetuning on one axis (Fig. 5)."""
    return _write(accuracy_over_epochs_figure(collection), path)


def pre_vs_post(collection: Collection, path: Path) -> bool:
    """Post- against pre-finetune accuracy per method (paper Fig. 9); for Gem-Miner the
    rounded mask's (the rare gem's) accuracy before finetuning."""
    return _write(pre_vs_post_figure(collection), path)


def sanity_checks(collection: Collection, path: Path) -> bool:
    """Pre/post accuracy of each ticket beside its sanity checks (Fig. 3/4 bottom rows)."""
    return _write(sanity_checks_figure(collection), path)


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
