"""``gemminer report``: figures and a markdown table from finished run folders alone.

Reads config.json, summary.json, metrics.jsonl and mask.pt of each run folder (no data set,
no model evaluation), groups seeds of one experiment, and writes PNG figures (matplotlib,
an optional dependency: ``pip install 'gemminer[report]'``) and ``report.md`` into ``--out``.

    gemminer report runs/* --out report/
    gemminer report runs/sweeps/table4-long-gem-miner-resnet20 --out report/   # a sweep's runs

Beside the results: the compute each method spent (epochs, forward multiply-adds per
image, seconds) and, where the runs have a setting the paper prints numbers for, those
numbers (:mod:`gemminer.reports.paper`).
"""

from __future__ import annotations

import argparse
import datetime
import shlex
from collections.abc import Iterable
from pathlib import Path

from ..errors import GemMinerError
from .collect import Collection, Group, RunRecord, collect_runs, group_runs, read_run
from .format import Stat

__all__ = [
    "Collection",
    "Group",
    "RunRecord",
    "Stat",
    "add_report_parser",
    "collect_runs",
    "group_runs",
    "read_run",
    "run_report",
    "write_report",
]

REPORT_FILE = "report.md"


def _require_matplotlib() -> None:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise GemMinerError(
            "gemminer report draws with matplotlib, which is not installed: "
            "install matplotlib (pip install 'gemminer[report]')"
        ) from None


def write_report(run_dirs: Iterable[str | Path], out: str | Path, provenance: str = "") -> Path:
    """Write the figures and ``report.md`` of ``run_dirs`` into ``out``; returns report.md.

    Figures without data are skipped with a note in report.md; unfinished runs (no
    summary.json) are listed, not read. A path that is not a run folder raises
    :class:`~gemminer.errors.RunError` naming it.
    """
    run_dirs = list(run_dirs)
    if not run_dirs:
        raise GemMinerError("gemminer report needs at least one run folder")
    _require_matplotlib()
    from .figures import FIGURES
    from .table import render_report

    collection = collect_runs(run_dirs)
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise GemMinerError(f"--out {out} exists and is not a folder")
    out.mkdir(parents=True, exist_ok=True)
    drawn: list[tuple[str, str, str | None]] = []
    for spec in FIGURES:
        path = out / spec.file
        if spec.draw(collection, path):
            drawn.append((spec.file, spec.title, None))
        else:
            path.unlink(missing_ok=True)  # no stale figure from an earlier report
            drawn.append((spec.file, spec.title, spec.empty))
    report = out / REPORT_FILE
    report.write_text(render_report(collection, drawn, out, provenance))
    return report


def add_report_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``gemminer report RUN_DIR... --out DIR`` to the command line's subcommands."""
    p = subparsers.add_parser(
        "report",
        help="figures (PNG) and a markdown table from finished run folders",
        description="Read run folders (no data, no evaluation), group seeds of one "
        "experiment, and write PNG figures and report.md into --out. Needs matplotlib "
        "(pip install 'gemminer[report]').",
    )
    p.add_argument(
        "run_dirs",
        type=Path,
        nargs="+",
        metavar="RUN_DIR",
        help="run folders, or sweep folders (the run folders in them)",
    )
    p.add_argument("--out", type=Path, required=True, help="folder for report.md and the PNGs")
    return p


def run_report(args: argparse.Namespace) -> int:
    """The ``gemminer report`` command: write the report, print where it is."""
    command = "gemminer report " + " ".join(
        shlex.quote(str(a)) for a in [*args.run_dirs, "--out", args.out]
    )
    made = f"Made by `{command}` on {datetime.date.today().isoformat()}."
    report = write_report(args.run_dirs, args.out, made)
    print(f"wrote {report} and its figures")
    return 0
