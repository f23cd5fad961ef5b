"""Helpers shared by the benchmark scripts: machine description, command line, and result
tables (the formatting of :mod:`gemminer.reports.format`)."""

from __future__ import annotations

import argparse
import datetime as _dt
import os
import platform
import shlex
import shutil
import statistics
import sys
from pathlib import Path

import torch

from gemminer.reports.format import markdown_table as report_table
from gemminer.reports.format import percent
from gemminer.rundir.files import safe_torch_load
from gemminer.rundir.runs import RunDir
from gemminer.stages.claim import FINETUNE_CHECKPOINT


def machine(threads: int | None = None) -> str:
    """A one-line description of where the benchmark ran (``threads``: the runs' CPU
    threads, when they were not this process's)."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
        if names:
            cpu = names[0]
    except OSError:
        pass
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    threads = torch.get_num_threads() if threads is None else threads
    return (
        f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__} "
        f"({threads} thread{'s' if threads > 1 else ''}), {device}, "
        f"Python {platform.python_version()}"
    )


#: The repository root: committed results name paths relative to it.
REPO = Path(__file__).resolve().parents[1]


def portable(arg: str) -> str:
    """A command-line argument as a committed result shows it: an absolute path inside the
    repository relative to its root, one elsewhere on the machine as ``.../<its name>``
    (the machine's own folders are no one else's)."""
    if not arg.startswith("/"):
        return arg
    path = Path(arg)
    try:
        return str(path.resolve().relative_to(REPO))
    except ValueError:
        return f".../{path.name}"


def command_line(elide: tuple[str, ...] = ()) -> str:
    """This script's command line, its paths made :func:`portable`; the values of the flags
    in ``elide`` (e.g. long notes that the report prints anyway) shown as ``...``."""
    args = [portable(a) for a in sys.argv]
    for i in range(1, len(args)):
        if args[i - 1] in elide:
            args[i] = "..."
    return "python " + " ".join(a if a == "..." else shlex.quote(a) for a in args)


def today() -> str:
    return _dt.date.today().isoformat()


def markdown_table(header: list[str], rows: list[list[object]]) -> str:
    """:func:`gemminer.reports.format.markdown_table` with the tight separator line
    (``|---|---|``) that the committed results have."""
    return report_table(header, rows, tight=True)


def pct(value: float | None) -> str:
    """``"54.79 %"`` of a fraction; ``"—"`` unknown (:func:`gemminer.reports.format.percent`)."""
    return percent(value)


def mean_std(values: list[float]) -> str:
    """``a ± b %`` (mean ± sample std) of fractions; one value as :func:`pct`."""
    if len(values) < 2:
        return pct(values[0]) if values else "—"
    return percent(statistics.mean(values), statistics.stdev(values))


def paired(differences: list[float]) -> list[str]:
    """Paired differences of fractions (method − reference, one per seed) as the cells
    ``["+2.06, −1.56", "+0.25 ± 1.81", "0.14"]``: each in points, their mean ± standard
    error, and Student's t of the mean (``—`` with fewer than two)."""
    cells = ", ".join(f"{100 * d:+.2f}".replace("-", "−") for d in differences)
    if len(differences) < 2:
        return [cells or "—", "—", "—"]
    mean = statistics.mean(differences)
    se = statistics.stdev(differences) / len(differences) ** 0.5
    t = f"{mean / se:.2f}".replace("-", "−") if se > 0 else "—"
    return [cells, f"{100 * mean:+.2f} ± {100 * se:.2f}".replace("-", "−"), t]


def train_size_flags(train_size: int) -> list[str]:
    """``--train-size N`` for a seeded subset; no flag for 0 (the whole training set)."""
    return ["--train-size", str(train_size)] if train_size else []


#: What an unfinished run needs to resume in another checkout: its settings, its records so
#: far, what mining left (for a run in finetuning) and the stage's checkpoint.
CARRIED = ("config.json", "metrics.jsonl", "summary.json", "mask.pt", "ticket.pt",
           "scores.pt", "density.txt", "checkpoint-prune.pt", FINETUNE_CHECKPOINT)  # fmt: skip


def carry_out(folder: Path, carry: Path, extra: tuple[str, ...] = ()) -> str:
    """Copy an unfinished run's folder (:data:`CARRIED` and the ``extra`` file names) into
    ``carry`` (replacing an older copy); drop the copy of a finished one. Returns what was
    done."""
    target = carry / folder.name
    if not folder.is_dir():
        return "no run folder"
    if RunDir(folder).read_summary().get("post_finetune_acc") is not None:
        shutil.rmtree(target, ignore_errors=True)
        return "finished, nothing carried"
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir(parents=True)
    files = [folder / name for name in (*CARRIED, *extra) if (folder / name).is_file()]
    for path in files:
        shutil.copy2(path, target / path.name)
    size = sum(p.stat().st_size for p in files) / 2**20
    return f"carried {len(files)} files ({size:.1f} MiB) into {target}"


def carry_in(folder: Path, carry: Path) -> None:
    """Put a carried run back where its command resumes it (a new checkout has no run
    folders); a folder already there is left alone."""
    source = carry / folder.name
    if not folder.exists() and source.is_dir():
        shutil.copytree(source, folder)
        print(f"resuming {folder} from {source}")


def finetuning_so_far(out: Path) -> list[dict]:
    """The finished epochs of a finetuning still in progress (they reach metrics.jsonl only
    when it ends; until then they are in its checkpoint)."""
    path = out / FINETUNE_CHECKPOINT
    return list(safe_torch_load(path).get("history", [])) if path.is_file() else []


def add_carry_arguments(parser: argparse.ArgumentParser) -> None:
    """``--carry`` and ``--carry-out``: a run longer than a working session travels to the
    next checkout (:func:`carry_out`, :func:`carry_in`)."""
    parser.add_argument(
        "--carry",
        type=Path,
        default=Path("benchmarks/carry"),
        help="where unfinished runs travel between checkouts (small files, committed)",
    )
    parser.add_argument(
        "--carry-out",
        action="store_true",
        help="run nothing: copy each unfinished run's small files (config, records, ticket, "
        "checkpoint) into --carry, and drop the carried copies of runs that have finished",
    )
