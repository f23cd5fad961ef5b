"""A sweep's results tables: ``results.csv`` (one row per run), ``results_grouped.csv``
(mean and sample standard deviation over seeds) and ``results.md`` (both tables, in %).

The rows are plain dicts, one per run (:func:`gemminer.sweep.results.result_rows`): the
columns :data:`RUN_COLUMNS` (with ``check``, the sanity check of a row, after ``method``
in a sweep with checks), the sweep's other grid keys, then :data:`RESULT_COLUMNS`; a
figure not yet known is None. The finished runs that differ only in their seed are
grouped, and their figures taken over the seeds as the report takes them
(:func:`gemminer.reports.format.over_seeds`).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping, Sequence
from operator import itemgetter
from typing import Any

from ..settings.options import scalar_text
from .format import markdown_table, over_seeds, percent

#: Columns of the per-run table before the grid values, and after them.
RUN_COLUMNS = ("run", "status", "method", "target_density", "density", "seed")
RESULT_COLUMNS = ("pre_finetune_acc", "post_finetune_acc", "epochs_to_mask", "seconds")
#: The figures given as mean and standard deviation over seeds (``seconds``: mean alone).
GROUPED_FIGURES = ("pre_finetune_acc", "post_finetune_acc", "density", "epochs_to_mask")
#: The statuses of a sweep's runs (:func:`gemminer.sweep.run.point_status`).
STATUSES = ("done", "partial", "todo")


def _check(check: bool) -> list[str]:
    """``check`` (the sanity check of a row; empty for a grid point) when the sweep has any."""
    return ["check"] if check else []


def run_columns(extra: Sequence[str], check: bool) -> list[str]:
    """The columns of ``results.csv``: a row per run, ``extra`` the sweep's other grid keys."""
    return [*RUN_COLUMNS[:3], *_check(check), *RUN_COLUMNS[3:], *extra, *RESULT_COLUMNS]


def group_keys(extra: Sequence[str], check: bool) -> list[str]:
    """What the runs of one group share: all but the seed."""
    return ["method", *_check(check), "target_density", *extra]


def group_columns(extra: Sequence[str], check: bool) -> list[str]:
    """The columns of ``results_grouped.csv``."""
    figures = [f"{c}_{s}" for c in GROUPED_FIGURES for s in ("mean", "std")]
    return [*group_keys(extra, check), "n", "seeds", *figures, "seconds_mean"]


def grouped_rows(rows: Sequence[Mapping[str, Any]], keys: Sequence[str]) -> list[dict[str, Any]]:
    """The finished runs grouped over seeds, groups in the order of their first row: the
    ``keys`` they share, their number ``n`` and seeds, and each figure's mean and sample
    standard deviation (n − 1) over the seeds (:func:`~gemminer.reports.format.over_seeds`)."""
    groups: dict[tuple, list[Mapping[str, Any]]] = {}
    for row in rows:
        groups.setdefault(tuple(repr(row[k]) for k in keys), []).append(row)
    seed = itemgetter("seed")
    out = []
    for members in groups.values():
        done = [r for r in members if r["status"] == "done"]
        group: dict[str, Any] = {k: members[0][k] for k in keys}
        group["n"] = len(done)
        group["seeds"] = " ".join(str(r["seed"]) for r in done)
        for column in GROUPED_FIGURES:
            stat = over_seeds(done, itemgetter(column), seed)
            group[f"{column}_mean"], group[f"{column}_std"] = stat.mean, stat.std
        group["seconds_mean"] = over_seeds(done, itemgetter("seconds"), seed).mean
        out.append(group)
    return out


def results_csv(rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> str:
    """``rows`` as CSV (a header line, then the ``columns`` of each row; None empty)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow(["" if row[c] is None else scalar_text(row[c]) for c in columns])
    return buffer.getvalue()


def _num(value: float | None, fmt: str = ".1f") -> str:
    return "—" if value is None else format(value, fmt)


def _cell(value: Any) -> str:
    return "default" if value is None else scalar_text(value)  # a grid value left at its default


def _method_cell(row: Mapping[str, Any]) -> str:
    """``gem-miner``, or ``gem-miner + shuffle`` for a sanity check's row."""
    return f"{row['method']} + {row['check']}" if row.get("check") else str(row["method"])


def results_markdown(
    name: str,
    rows: Sequence[Mapping[str, Any]],
    groups: Sequence[Mapping[str, Any]],
    extra: Sequence[str],
) -> str:
    """Both tables of the sweep file ``name`` as markdown: accuracies and densities in %."""
    counts = {s: sum(r["status"] == s for r in rows) for s in STATUSES}
    grouped = markdown_table(
        ["method", "target %", *extra, "n", "pre-finetune acc %", "post-finetune acc %"]
        + ["density %", "epochs to mask", "seconds"],
        [
            [
                _method_cell(g),
                f"{100 * g['target_density']:.4g}",
                *(_cell(g[k]) for k in extra),
                str(g["n"]),
                percent(g["pre_finetune_acc_mean"], g["pre_finetune_acc_std"], unit=""),
                percent(g["post_finetune_acc_mean"], g["post_finetune_acc_std"], unit=""),
                percent(g["density_mean"], digits=3, unit=""),
                _num(g["epochs_to_mask_mean"], ".2f"),
                _num(g["seconds_mean"], ".0f"),
            ]
            for g in groups
        ],
    )
    runs = markdown_table(
        ["run", "status", "method", "target %", "density %", "seed", *extra]
        + ["pre-finetune acc %", "post-finetune acc %", "epochs to mask", "seconds"],
        [
            [
                r["run"],
                r["status"],
                _method_cell(r),
                f"{100 * r['target_density']:.4g}",
                percent(r["density"], digits=3, unit=""),
                str(r["seed"]),
                *(_cell(r[k]) for k in extra),
                percent(r["pre_finetune_acc"], unit=""),
                percent(r["post_finetune_acc"], unit=""),
                _num(r["epochs_to_mask"], ".2f"),
                _num(r["seconds"], ".0f"),
            ]
            for r in rows
        ],
    )
    return (
        f"# Sweep {name}\n\n"
        f"{len(rows)} runs: {counts['done']} done, {counts['partial']} partial, "
        f"{counts['todo']} todo. Test accuracy in %; mean ± sample standard deviation over "
        "the finished runs of each group (n).\n\n"
        f"## Over seeds\n\n{grouped}\n\n## Runs\n\n{runs}\n"
    )


def sweep_tables(
    name: str, rows: Sequence[Mapping[str, Any]], extra: Sequence[str], check: bool
) -> dict[str, str]:
    """The text of ``results.csv``, ``results_grouped.csv`` and ``results.md`` (by file name)
    of the sweep file ``name`` from its ``rows``; ``extra``: its grid keys other than
    method, density and seed; ``check``: whether it runs sanity checks."""
    groups = grouped_rows(rows, group_keys(extra, check))
    return {
        "results.csv": results_csv(rows, run_columns(extra, check)),
        "results_grouped.csv": results_csv(groups, group_columns(extra, check)),
        "results.md": results_markdown(name, rows, groups, extra),
    }
