"""The report's markdown: a table with one row per group of runs, the figures, the notes."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from ..masking import format_density
from .collect import Collection, Group
from .format import Stat, markdown_table


def format_accuracy(stat: Stat) -> str:
    """``"54.79 ± 0.12 %"`` over several seeds, ``"54.79 %"`` for one, ``"—"`` for none."""
    if stat.mean is None:
        return "—"
    if stat.std is None:
        return f"{100 * stat.mean:.2f} %"
    return f"{100 * stat.mean:.2f} ± {100 * stat.std:.2f} %"


def format_epochs(stat: Stat) -> str:
    if stat.mean is None:
        return "—"
    if stat.std:
        return f"{stat.mean:.3g} ± {stat.std:.2g}"
    return f"{stat.mean:.3g}"


def format_seeds(group: Group) -> str:
    """``"2"`` distinct seeds, ``"2 (+1 repeat)"`` where runs repeat a seed."""
    n, repeats = len(group.distinct_seeds), group.repeats
    return f"{n} (+{repeats} repeat{'s' * (repeats > 1)})" if repeats else str(n)


def format_target(group: Group) -> str:
    """``"5.00 %"``; ``"—"`` for a method that ignores the target (dense training)."""
    return f"{100 * group.target_density:.2f} %" if group.targeted else "—"


def results_table(groups: Sequence[Group]) -> str:
    """One row per group: method (+ sanity check), the finetuned ticket's density and
    accuracies, Gem-Miner's rounded mask (the rare gem: density, accuracy with BatchNorm
    re-estimated / with mining's statistics), seeds, epochs to the mask. The label names the
    model and data set where they vary."""
    header = [
        "method",
        "target density",
        "ticket density",
        "ticket pre-finetune accuracy",
        "post-finetune accuracy",
        "rare gem density",
        "rare gem accuracy (BN re-estimated / mining's BN)",
        "seeds",
        "epochs to mask",
    ]
    rows = []
    for g in groups:
        gem = g.stat("gem_density").mean is not None
        rows.append(
            [
                g.label,
                format_target(g),
                format_density(g.density.mean, label=False),
                format_accuracy(g.pre_acc),
                format_accuracy(g.post_acc),
                format_density(g.stat("gem_density").mean, label=False) if gem else "—",
                f"{format_accuracy(g.stat('gem_acc'))} / "
                f"{format_accuracy(g.stat('gem_acc_running_bn'))}"
                if gem
                else "—",
                format_seeds(g),
                format_epochs(g.epochs_to_mask),
            ]
        )
    return markdown_table(header, rows, align=["---"] * 2 + ["---:"] * 7) + "\n"


def _relative(path: Path, start: Path) -> str:
    try:
        return os.path.relpath(path.resolve(), start.resolve())
    except ValueError:  # another drive on Windows
        return str(path)


def _folders(group: Group, out: Path) -> list[str]:
    """Each run folder of ``group`` with its seed; a run repeating a seed says so."""
    seen: set[int] = set()
    texts = []
    for r in group.runs:
        repeat = ", repeat" if r.seed in seen else ""
        seen.add(r.seed)
        texts.append(f"`{_relative(r.path, out)}` (seed {r.seed}{repeat})")
    return texts


def render_report(
    collection: Collection,
    figures: Sequence[tuple[str, str, str | None]],
    out: Path,
    provenance: str = "",
) -> str:
    """The whole report.md: ``figures`` holds (file, title, note) — note None when drawn;
    ``provenance`` (e.g. the command and date) goes under the title."""
    runs = collection.runs
    lines = ["# gemminer report", ""]
    if provenance:
        lines += [provenance, ""]
    lines.append(
        f"{len(runs)} finished run{'s' * (len(runs) != 1)} in {len(collection.groups)} "
        f"group{'s' * (len(collection.groups) != 1)}. Density is the fraction of prunable "
        "weights kept. Accuracies are test-set top-1; with several seeds, mean ± sample "
        "standard deviation (n − 1) over the distinct seeds (runs repeating a seed are "
        "averaged first). Runs are grouped by method, sanity check, target density (not for "
        "dense training, which ignores it) and every setting except the seeds and those "
        "that cannot change a result (data_dir, device, download, eval_each_epoch, "
        "eval_every)."
    )
    cases = sorted({(r.model, r.dataset) for r in runs})
    if len(cases) == 1:
        lines.append(f"All runs: {cases[0][0]} on {cases[0][1]}.")
    lines.append("")
    if collection.groups:
        lines += ["## Results", "", results_table(collection.groups)]
    else:
        lines += ["No finished run (with a summary.json) was given.", ""]
    lines += ["## Figures", ""]
    for file, title, note in figures:
        lines.append(f"### {title}")
        lines.append("")
        lines.append(f"![{title}]({file})" if note is None else f"_Skipped: {note}._")
        lines.append("")
    if collection.unfinished:
        lines += ["## Unfinished runs (skipped)", ""]
        lines += [
            f"- `{_relative(p, out)}`: unfinished (no summary.json)" for p in collection.unfinished
        ]
        lines.append("")
    if collection.groups:
        lines += ["## Run folders", ""]
        for g in collection.groups:
            folders = ", ".join(_folders(g, out))
            target = f", target {100 * g.target_density:.2f} %" if g.targeted else ""
            lines.append(f"- {g.label}{target}: {folders}")
        lines.append("")
    return "\n".join(lines)
