"""``gemminer sweep FILE``: the command line of a sweep (:func:`add_sweep_parser`,
:func:`run_sweep`).

It reads the sweep file (:mod:`gemminer.sweep.spec`), expands its grid
(:mod:`gemminer.sweep.grid`), takes this process's shard (:mod:`gemminer.sweep.shards`),
and then lists the runs (``--list``), prints their commands (``--commands``), writes the
tables alone (``--table``), or runs every unfinished one (:mod:`gemminer.sweep.run`) and
writes the tables afterwards (:mod:`gemminer.sweep.results`), printing the table over
seeds. A mistake in the file or the flags is a :class:`~gemminer.errors.GemMinerError`
(exit status 2); runs that failed without ending the sweep (``--keep-going``, ``--jobs``)
make the exit status 1 at the end.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from ..rundir.files import atomic_write_text
from .grid import expand, jobs
from .results import write_tables
from .run import log, point_status, run_in_turn, run_parallel
from .shards import shard, shard_spec, slurm_shard
from .spec import load_sweep


def add_sweep_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``gemminer sweep`` to the sub-command parsers of ``gemminer``."""
    p = subparsers.add_parser(
        "sweep",
        help="run a grid of runs (method × density × seed × any flag) from a YAML file",
        description="Run every point of a sweep file's grid, one after another, skipping "
        "finished runs; then write results tables (CSV + markdown) into its folder. "
        "See sweeps/compare-resnet20.yaml.",
    )
    p.add_argument("file", type=Path, help="sweep file (YAML: base, grid, finetune, out, ...)")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument(
        "--list", action="store_true", help="print each point's folder and status, run nothing"
    )
    mode.add_argument(
        "--commands",
        action="store_true",
        help="print one `gemminer prune`/`run` command per unfinished point, run nothing",
    )
    mode.add_argument(
        "--table", action="store_true", help="only write the results tables from the runs on disk"
    )
    p.add_argument(
        "--shard",
        type=shard_spec,
        default=None,
        metavar="I/N|auto",
        help="only every N-th point, from point I (0 <= I < N), for N parallel processes; "
        "auto: I and N from a Slurm job array (SLURM_ARRAY_TASK_ID / SLURM_ARRAY_TASK_COUNT)",
    )
    p.add_argument("--out", default=None, help="sweep folder (default: the file's `out:`)")
    p.add_argument(
        "--keep-going",
        action="store_true",
        help="when a run fails, go on with the next (exit status 1 at the end)",
    )
    p.add_argument(
        "--jobs",
        type=_jobs_count,
        default=1,
        metavar="N",
        help="run N points at once, each its own process, spread over the visible GPUs "
        "(on a CPU: the cores shared out); each prints a progress line, tagged, and keeps "
        "a log in FOLDER/logs/; Ctrl-C stops them all, checkpointed (default 1: in turn, "
        "in this process)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    return p


def _jobs_count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"--jobs takes a whole number >= 1, not {text!r}")
    return value


def run_sweep(args: argparse.Namespace) -> int:
    """``gemminer sweep``; user mistakes raise :class:`GemMinerError` (exit status 2)."""
    sweep = load_sweep(args.file, out=args.out)
    points, notes = expand(sweep)
    for note in notes:
        log(f"gemminer sweep: {note}")
    spec = slurm_shard(os.environ) if args.shard == "auto" else args.shard
    selected = shard(points, spec)
    if args.list:
        counts = dict.fromkeys(("done", "partial", "todo"), 0)
        listed = jobs(sweep, selected)
        for job in listed:
            status = point_status(job, sweep.finetune)
            counts[status] += 1
            print(f"{status:<8} {job.folder}  {job.describe()}")
        print(", ".join(f"{n} {s}" for s, n in counts.items()) + f" of {len(listed)} runs")
        return 0
    if args.commands:
        for job in jobs(sweep, selected):
            if point_status(job, sweep.finetune) != "done":
                print(job.command(sweep.finetune))
        return 0
    if args.table:
        paths, markdown = write_tables(sweep, points)
        print(markdown)
        log(f"gemminer sweep: wrote {', '.join(map(str, paths))}")
        return 0

    sweep.out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(sweep.out / "sweep.yaml", sweep.path.read_text(encoding="utf-8"))
    todo = jobs(sweep, selected)
    if args.jobs > 1:
        failed = run_parallel(sweep, todo, args)
    else:
        failed = run_in_turn(sweep, todo, args)
    paths, markdown = write_tables(sweep, points)
    print(markdown.split("\n## Runs")[0].rstrip())  # the table over seeds; all in results.md
    log(f"gemminer sweep: wrote {', '.join(map(str, paths))}")
    if failed:
        log(f"gemminer sweep: {len(failed)} runs failed:\n  " + "\n  ".join(failed))
        return 1
    return 0
