"""A sweep's results tables, from the runs on disk: ``OUT/results.csv`` (one row per run),
``OUT/results_grouped.csv`` (mean and sample standard deviation over seeds) and
``OUT/results.md`` (both tables).

The rows (:func:`result_rows`) are the sweep's: each run's status, its resolved method,
target density and seed, its other grid values and its figures from ``summary.json``.
The tables themselves — grouping over seeds, CSV, markdown — are the report's
(:mod:`gemminer.reports.sweep_tables`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..reports.sweep_tables import RESULT_COLUMNS, sweep_tables
from ..rundir.files import atomic_write_text
from .grid import SanityJob, SweepPoint, jobs
from .run import job_summary, point_status
from .spec import Sweep

#: Grid keys shown by their resolved value in the fixed columns.
FIXED_KEYS = ("method", "density", "seed")


def extra_keys(sweep: Sweep) -> list[str]:
    """The sweep's grid keys other than :data:`FIXED_KEYS`: a column each, in file order."""
    return [k for k in sweep.grid if k not in FIXED_KEYS]


def result_rows(sweep: Sweep, points: Sequence[SweepPoint]) -> list[dict[str, Any]]:
    """One row per run, each point's sanity checks after it: its settings, status and
    figures (None where not yet known)."""
    rows = []
    for job in jobs(sweep, points):
        point = job.source if isinstance(job, SanityJob) else job
        summary = job_summary(job)
        row: dict[str, Any] = {
            "run": job.folder.name,
            "status": point_status(job, sweep.finetune),
            "method": point.config.method,
        }
        if sweep.sanity:
            row["check"] = job.check if isinstance(job, SanityJob) else ""
        row.update(
            target_density=point.config.prune.density,
            density=summary.density,
            seed=point.config.seed,
        )
        row.update({k: point.values[k] for k in extra_keys(sweep)})
        row.update({k: getattr(summary, k) for k in RESULT_COLUMNS})
        rows.append(row)
    return rows


def write_tables(sweep: Sweep, points: Sequence[SweepPoint]) -> tuple[list[Path], str]:
    """Write results.csv, results_grouped.csv and results.md into the sweep folder
    (atomically); returns their paths and the markdown."""
    rows = result_rows(sweep, points)
    tables = sweep_tables(sweep.path.name, rows, extra_keys(sweep), bool(sweep.sanity))
    paths = []
    for name, text in tables.items():
        paths.append(sweep.out / name)
        atomic_write_text(sweep.out / name, text)
    return paths, tables["results.md"]
