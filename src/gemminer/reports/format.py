"""What the report, the sweep tables and the stages' messages share: mean ± standard
deviation, markdown tables and settings flattened to dotted names."""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any


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


def markdown_table(
    header: Sequence[str], rows: Iterable[Sequence[str]], align: Sequence[str] | None = None
) -> str:
    """A markdown table (no final newline); ``|`` in a cell is escaped. ``align`` gives
    each column's separator (default ``---``; ``---:`` aligns right)."""

    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |"

    separator = "| " + " | ".join(align or ["---"] * len(header)) + " |"
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
