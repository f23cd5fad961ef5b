"""What the report, the sweep tables, the benchmarks and the stages' messages share: mean ±
standard deviation (over the distinct seeds of a group of runs: :func:`over_seeds`),
percentages, markdown tables and settings flattened to dotted names."""

from __future__ import annotations

import statistics
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class Stat:
    """Mean and sample standard deviation (n − 1; None below two values) of some figures."""

    mean: float | None
    std: float | None
    n: int

    @classmethod
    def of(cls, values: Iterable[float | None]) -> Stat:
        """The figures in ``values`` that are known (not None)."""
        xs = [float(v) for v in values if v is not None]
        if not xs:
            return cls(None, None, 0)
        return cls(statistics.fmean(xs), statistics.stdev(xs) if len(xs) > 1 else None, len(xs))

    @property
    def err(self) -> float:
        """The standard deviation, 0 when unknown (for error bars)."""
        return self.std or 0.0


def over_seeds(
    runs: Iterable[T],
    value: Callable[[T], float | None],
    seed: Callable[[T], Hashable],
) -> Stat:
    """Mean ± sample standard deviation of ``value`` over the distinct seeds of ``runs``
    (runs differing only in their seed): the known values of one seed averaged first, so a
    run repeating a seed does not count twice; unknown ones (None) left out. The one
    grouping over seeds of the report (:meth:`gemminer.reports.collect.Group.stat`) and of
    a sweep's table (:func:`gemminer.reports.sweep_tables.grouped_rows`)."""
    by_seed: dict[Hashable, list[float]] = {}
    for run in runs:
        figure = value(run)
        if figure is not None:
            by_seed.setdefault(seed(run), []).append(float(figure))
    return Stat.of(sum(v) / len(v) for v in by_seed.values())


def percent(
    value: float | None, std: float | None = None, digits: int = 2, unit: str = " %"
) -> str:
    """A fraction in percent: ``"54.79 %"``, ``"54.79 ± 0.12 %"`` with a standard deviation;
    ``"—"`` unknown. ``unit=""`` leaves the sign out (a column that says "%" itself)."""
    if value is None:
        return "—"
    text = f"{100 * value:.{digits}f}"
    if std is not None:
        text = f"{text} ± {100 * std:.{digits}f}"
    return text + unit


def markdown_table(
    header: Sequence[str],
    rows: Iterable[Sequence[object]],
    align: Sequence[str] | None = None,
    *,
    tight: bool = False,
) -> str:
    """A markdown table (no final newline); ``|`` in a cell is escaped. ``align`` gives
    each column's separator (default ``---``; ``---:`` aligns right); ``tight`` writes the
    separator line without spaces (``|---|---|``, as the benchmarks' results have it)."""

    def line(cells: Sequence[object]) -> str:
        return "| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |"

    marks = align or ["---"] * len(header)
    separator = f"|{'|'.join(marks)}|" if tight else "| " + " | ".join(marks) + " |"
    return "\n".join([line(header), separator, *(line(r) for r in rows)])


def flatten(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"prune": {"epochs": 10}}`` → ``{"prune.epochs": 10}``; an empty mapping adds no
    key (as if it were missing)."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, Mapping):
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out
