"""A paper experiment's sweep file, run and reported: the measured version of a table or figure.

Runs (or resumes) `gemminer sweep FILE`, draws it with `gemminer report` into
benchmarks/results/<name>/, and writes benchmarks/results/<name>.md: machine, date and
commands, how far the sweep got, the sanity checks as accuracy drops (the paper's
criterion: a mask specific to its weights loses accuracy when shuffled or re-initialized),
and the report's results and paper-comparison tables. Unfinished runs are reported as far
as they got, so it can be run at any time (`--report-only` runs nothing).

    make data
    .venv/bin/python benchmarks/paper_sweeps.py benchmarks/sweeps/table2-prospr-resnet20-short.yaml
    .venv/bin/python benchmarks/paper_sweeps.py benchmarks/sweeps/fig3-fig6-resnet20-short.yaml
"""

from __future__ import annotations

import argparse
import csv
import statistics
from pathlib import Path

from _common import command_line, machine, markdown_table, today

from gemminer.cli import main as gemminer
from gemminer.sweep import load_sweep


def _section(report: str, title: str) -> str:
    """The body of ``## title`` in a report.md (empty if it has none)."""
    head = f"## {title}\n"
    if head not in report:
        return ""
    body = report.split(head, 1)[1]
    return body.split("\n## ", 1)[0].strip()


def _mean(values: list[float]) -> float | None:
    return statistics.mean(values) if values else None


def _pct(values: list[float]) -> str:
    if not values:
        return "—"
    if len(values) == 1:
        return f"{100 * values[0]:.2f} %"
    return f"{100 * statistics.mean(values):.2f} ± {100 * statistics.stdev(values):.2f} %"


def _grid_keys(row: dict[str, str]) -> list[str]:
    """The grid columns of a results row beyond method, density and seed."""
    columns = list(row)
    return columns[columns.index("seed") + 1 : columns.index("pre_finetune_acc")]


def _settings(row: dict[str, str], shown: set[str]) -> str:
    """The grid values of ``row`` among ``shown`` (``lambda=0.0001``; unset: ``default``)."""
    return ", ".join(f"{k}={row[k] or 'default'}" for k in _grid_keys(row) if k in shown)


def _varying(rows: list[dict[str, str]]) -> dict[str, set[str]]:
    """Per method, the grid columns its rows take more than one value of: only those tell
    its rows apart (a value the grid skipped for a method is not named on it)."""
    values: dict[str, dict[str, set[str]]] = {}
    for r in rows:
        for k in _grid_keys(r):
            values.setdefault(r["method"], {}).setdefault(k, set()).add(r[k])
    return {m: {k for k, v in cols.items() if len(v) > 1} for m, cols in values.items()}


def sanity_table(rows: list[dict[str, str]]) -> str:
    """Per method, target density and other grid values: post-finetune accuracy of the
    runs and of each sanity check, and the drop in points (mean over the seeds that have
    both)."""
    finished = [r for r in rows if r["status"] == "done" and r["post_finetune_acc"]]
    groups: dict[tuple[str, str, str], dict[str, dict[str, float]]] = {}
    shown = _varying(finished)
    for r in finished:
        key = (r["method"], r["target_density"], _settings(r, shown.get(r["method"], set())))
        check = r.get("check", "")
        groups.setdefault(key, {}).setdefault(check, {})[r["seed"]] = float(r["post_finetune_acc"])
    table = []
    for (method, density, settings), checks in groups.items():
        base = checks.get("", {})
        for check, by_seed in checks.items():
            if not check:
                continue
            paired = [base[s] - by_seed[s] for s in by_seed if s in base]
            drop = _mean(paired)
            table.append(
                [
                    method + (f" ({settings})" if settings else ""),
                    f"{100 * float(density):.4g} %",
                    _pct(list(base.values())),
                    check,
                    _pct(list(by_seed.values())),
                    "—" if drop is None else f"{100 * drop:+.2f}",
                    str(len(paired)),
                ]
            )
    if not table:
        return "No finished sanity check yet."
    header = ["method", "target density", "post-finetune acc", "check", "check's acc"]
    return markdown_table([*header, "drop (points)", "seeds paired"], table)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("sweep", type=Path, help="sweep file (e.g. benchmarks/sweeps/*.yaml)")
    p.add_argument("--report-only", action="store_true", help="run nothing; report the folder")
    p.add_argument("--results", type=Path, default=None, help="default: benchmarks/results/NAME")
    p.add_argument("--note", action="append", default=[], help="a line for the notes")
    args = p.parse_args()
    sweep = load_sweep(args.sweep)
    name = args.sweep.stem.replace("-", "_")
    results = args.results or Path("benchmarks/results") / name
    sweep_cmd = ["sweep", str(args.sweep), "--no-progress", "--keep-going"]
    report_cmd = ["report", str(sweep.out), "--out", str(results)]
    if not args.report_only:
        gemminer(sweep_cmd)
    gemminer(["sweep", str(args.sweep), "--table"])
    if any(sweep.out.glob("*/summary.json")):
        gemminer(report_cmd)
    rows = list(csv.DictReader((sweep.out / "results.csv").open()))
    counts = {s: sum(r["status"] == s for r in rows) for s in ("done", "partial", "todo")}
    # the file's first comment paragraph says what it reproduces, and at what budget
    header = args.sweep.read_text(encoding="utf-8").split("\n#\n")[0]
    about = " ".join(line.removeprefix("#").strip() for line in header.splitlines())
    report = (results / "report.md").read_text() if (results / "report.md").is_file() else ""
    text = [
        f"# {args.sweep.stem}: measured",
        "",
        f"- date: {today()}",
        f"- machine: {machine()}",
        f"- script: `{command_line()}`",
        f"- runs: `gemminer {' '.join(sweep_cmd)}`; figures and tables: "
        f"`gemminer {' '.join(report_cmd)}` ([report]({results.name}/report.md))",
        f"- progress: {counts['done']} of {len(rows)} runs finished"
        + (
            f" ({counts['partial']} partial, {counts['todo']} to do)"
            if counts["done"] < len(rows)
            else ""
        ),
        *(f"- note: {line}" for line in args.note),
        "",
        f"The sweep file ({args.sweep}): {about}",
        "",
        "## Sanity checks",
        "",
        "Post-finetune test accuracy of each ticket and of its sanity checks; the drop is the "
        "ticket's accuracy minus the check's, in points, averaged over the seeds that have both. "
        "A mask tied to its weights (a lottery ticket) loses accuracy under both checks; a "
        "method that only finds good layer-wise densities does not (Frankle et al., 2021).",
        "",
        sanity_table(rows),
        "",
        "## Results",
        "",
        _section(report, "Results") or "No finished run yet.",
        "",
        "## Beside the paper",
        "",
        _section(report, "Beside the paper") or "—",
        "",
    ]
    Path(f"{results}.md").write_text("\n".join(text), encoding="utf-8")
    print(f"wrote {results}.md")


if __name__ == "__main__":
    main()
