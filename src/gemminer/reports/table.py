"""The report's markdown: a table with one row per group of runs, the figures, the notes."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from ..masking import format_density
from ..masking.flops import format_flops
from .collect import Collection, Group
from .format import Stat, markdown_table, percent
from .paper import PaperValue, paper_values


def format_accuracy(stat: Stat) -> str:
    """``"54.79 ± 0.12 %"`` over several seeds, ``"54.79 %"`` for one, ``"—"`` for none."""
    return percent(stat.mean, stat.std)


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
    re-estimated / with mining's statistics), seeds, epochs to the mask. The post-finetune
    accuracy is the last epoch's; the best epoch's is beside it (picked on the validation
    split where there is one, else on the test set, as the authors' full-data runs did). The
    label names the model and data set where they vary."""
    header = [
        "method",
        "target density",
        "ticket density",
        "ticket pre-finetune accuracy",
        "post-finetune accuracy (last epoch)",
        "best post-finetune accuracy (epoch)",
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
                format_best(g),
                format_density(g.stat("gem_density").mean, label=False) if gem else "—",
                f"{format_accuracy(g.stat('gem_acc'))} / "
                f"{format_accuracy(g.stat('gem_acc_running_bn'))}"
                if gem
                else "—",
                format_seeds(g),
                format_epochs(g.epochs_to_mask),
            ]
        )
    return markdown_table(header, rows, align=["---"] * 2 + ["---:"] * 8) + "\n"


def format_best(group: Group) -> str:
    """The best finetuning epoch's test accuracy and the epoch(s), e.g. ``"73.40 % (epoch
    141, on test)"``; over seeds ``"73.40 ± 0.50 % (epochs 141, 139, 150, on test)"`` — "on
    test": picked on the test set (no validation split), "on val": on the validation split."""
    bests = [r.best for r in group.runs if r.best is not None]
    if not bests:
        return "—"
    epochs = ", ".join(str(b.epoch) for b in bests)
    on = "/".join(sorted({b.picked_on for b in bests}))
    word = "epoch" if len(bests) == 1 else "epochs"
    return f"{format_accuracy(group.stat('best_post_acc'))} ({word} {epochs}, on {on})"


def format_epoch_count(stat: Stat) -> str:
    """Epochs to a mask: ``"2,850"``, ``"150"``, ``"0.0026"`` (one batch of a one-shot
    method); ± the spread over seeds where there is one."""
    if stat.mean is None:
        return "—"
    text = f"{stat.mean:,.0f}" if stat.mean >= 100 else f"{stat.mean:.3g}"
    return f"{text} ± {stat.std:.2g}" if stat.std else text


def format_seconds(stat: Stat) -> str:
    """``"152 s"``, ``"2.5 h"``; ``"—"`` unknown."""
    if stat.mean is None:
        return "—"
    if stat.mean >= 7200:
        return f"{stat.mean / 3600:.1f} h"
    return f"{stat.mean:.3g} s" if stat.mean < 100 else f"{stat.mean:.0f} s"


def format_compute(group: Group) -> str:
    """Forward multiply-adds per image, dense → ticket: ``"40.6 M → 583 k (1.44 %)"``."""
    dense, ticket = group.stat("dense_flops").mean, group.stat("ticket_flops").mean
    if dense is None or ticket is None:
        return "—"
    return f"{format_flops(dense)} → {format_flops(ticket)} ({100 * ticket / dense:.3g} %)"


def compute_table(groups: Sequence[Group]) -> str:
    """One row per method group (sanity checks left out: they reuse their source's mask
    search): what finding the mask cost — training epochs (IMP: all its rounds; one-shot
    methods: the fraction of an epoch they read), wall-clock seconds — and what the ticket
    costs to run: forward multiply-adds per image of the dense network and of the ticket
    (Conv2d/Linear weights only; the share of the dense cost in parentheses)."""
    header = [
        "method",
        "target density",
        "ticket density",
        "epochs to find the mask",
        "forward multiply-adds per image, dense → ticket",
        "seconds to find the mask",
        "seeds",
    ]
    rows = [
        [
            g.label,
            format_target(g),
            format_density(g.density.mean, label=False),
            format_epoch_count(g.epochs_to_mask),
            format_compute(g),
            format_seconds(g.stat("seconds_mask")),
            format_seeds(g),
        ]
        for g in groups
        if not g.sanity_check
    ]
    return markdown_table(header, rows, align=["---"] * 2 + ["---:"] * 5) + "\n"


#: How the paper's figures are named in the report, and how ours are read from a group.
_FIGURE_NAMES = {
    "post_acc": "accuracy after finetuning",
    "before_acc": "accuracy before finetuning",
    "epochs_to_mask": "epochs to find the mask",
}


def _paper_text(figure: str, entries: Sequence[PaperValue]) -> str:
    """``"77.89 % (Table 4, Table 16)"``, notes after a semicolon."""
    value = entries[0].value
    number = f"{100 * value:.2f} %" if figure != "epochs_to_mask" else f"{value:,g}"
    sources = ", ".join(dict.fromkeys(e.source for e in entries))
    notes = "; ".join(dict.fromkeys(e.note for e in entries if e.note))
    return f"{number} ({sources}{'; ' + notes if notes else ''})"


def _ours(group: Group, figure: str) -> str:
    """Our figure; after finetuning the last epoch's, and the best epoch's beside it (the
    paper's "best model chosen based on the validation accuracy")."""
    stat = group.stat(figure)
    if figure == "epochs_to_mask":
        return format_epoch_count(stat)
    if figure == "post_acc" and group.stat("best_post_acc").mean is not None:
        return f"{format_accuracy(stat)} last, {format_best(group)} best"
    return format_accuracy(stat)


def paper_rows(groups: Sequence[Group]) -> list[list[str]]:
    """Rows of :func:`paper_table`: each group with a setting the paper prints a figure for
    (:func:`gemminer.reports.paper.paper_values`), one row per figure."""
    rows = []
    for g in groups:
        run = g.first
        found = paper_values(
            run.model,
            run.dataset,
            run.method,
            run.sanity_check,
            g.target_density,
            dict(run.settings),
        )
        for figure, entries in found.items():
            for value in sorted({e.value for e in entries}):
                same = [e for e in entries if e.value == value]
                rows.append(
                    [
                        g.label,
                        f"{run.model}, {run.dataset}",
                        format_target(g),
                        _FIGURE_NAMES[figure],
                        _ours(g, figure),
                        _paper_text(figure, same),
                    ]
                )
    return rows


def paper_table(groups: Sequence[Group]) -> str:
    """Ours beside the paper's printed numbers, where the runs have the paper's setting
    (model, data set, method, sanity check, target density); empty when none has."""
    rows = paper_rows(groups)
    if not rows:
        return ""
    header = ["method", "model, data set", "target density", "figure", "ours", "paper"]
    return markdown_table(header, rows, align=["---"] * 4 + ["---:"] * 2) + "\n"


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
        beside = paper_table(collection.groups)
        if beside:
            lines += [
                "## Beside the paper",
                "",
                "Our runs (mean ± std over seeds) beside the numbers the paper prints for "
                "the same model, data set, method, sanity check and target density (within "
                "5 %; the paper's 1.4 % is the 1.44 % row), with the table or figure "
                "printing them. Our budgets are those of the runs (see the run folders' "
                "config.json), not necessarily the paper's.",
                "",
                beside,
            ]
        if any(not g.sanity_check for g in collection.groups):
            lines += [
                "## Compute",
                "",
                "Epochs to find the mask: training epochs spent (iterative methods: all "
                "rounds; one-shot methods: the fraction of an epoch read). Forward "
                "multiply-adds per image: of the Conv2d/Linear weights, dense network → "
                "ticket (kept weights only), as a sparse kernel would skip pruned ones. "
                "Seconds to find the mask: wall-clock, on the runs' own devices. Finetuning "
                "is not counted (equal for every ticket).",
                "",
                compute_table(collection.groups),
            ]
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
