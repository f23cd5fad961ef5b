"""Running a sweep's jobs: their status on disk, and each run in turn or as ``--jobs N``.

A job is finished (``done``) once its ``summary.json`` holds the post-finetune accuracy, or
the pre-finetune one when the sweep does not finetune; a folder without it is ``partial``
and resumes where it stopped, so a stopped sweep resumes where it stopped. Without
``--jobs``, runs go one after another in this process, each with its own runtime options
(precision, compile, threads), a point's sanity checks after it; with ``--jobs N`` each is
its own ``gemminer`` process (:mod:`gemminer.sweep.parallel`). ``--keep-going`` goes on
after a failed run (its checks are skipped); a stop signal ends the sweep regardless.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from .. import stages
from ..rundir.runs import RunDir
from ..rundir.summary import RunSummary
from ..training.checkpoint import TrainingInterrupted
from ..training.runtime import Runtime, start_runtime
from .grid import Job, SanityJob, SweepPoint
from .spec import Sweep


def job_summary(point: Job) -> RunSummary:
    """The run's summary (every figure None before it has one)."""
    return RunDir(point.folder).summary() if point.folder.is_dir() else RunSummary()


def point_status(point: Job, finetune: bool) -> str:
    """``done`` (the final accuracy is in summary.json), ``partial`` or ``todo``."""
    summary = job_summary(point)
    final = summary.post_finetune_acc if finetune else summary.pre_finetune_acc
    if final is not None:
        return "done"
    return "partial" if point.folder.exists() else "todo"


def run_point(point: SweepPoint, finetune: bool, progress: bool = True) -> RunSummary:
    """Prune (skipped when the mask is already found) and finetune one point, with its
    runtime options (precision, compile, threads) as its printed command would."""
    with point_runtime_context(point) as runtime:
        summary = stages.prune_run(point.config, point.folder, progress=progress, runtime=runtime)
        if finetune and summary.post_finetune_acc is None:
            summary = stages.finetune_run(point.folder, progress=progress, runtime=runtime)
    return summary


def run_sanity(job: SanityJob, finetune: bool, progress: bool = True) -> RunSummary:
    """Apply the check to its (finished) run and finetune the new ticket; a check whose
    ticket is already made is skipped, a stopped one resumes (as its command would)."""
    with point_runtime_context(job.source) as runtime:
        summary = stages.sanity_run(
            job.source.folder, job.check, out=job.folder, progress=progress, runtime=runtime
        )
        if finetune and summary.post_finetune_acc is None:
            summary = stages.finetune_run(job.folder, progress=progress, runtime=runtime)
    return summary


@contextmanager
def point_runtime_context(point: SweepPoint) -> Iterator[Runtime]:
    """The runtime of ``point`` (its precision, compile option and thread count, the
    process's own count restored afterwards), from the one run-time resolver."""
    with start_runtime(
        point.config.device,
        precision=point.runtime["precision"],
        compile=bool(point.runtime.get("compile", False)),
        threads=point.runtime.get("threads"),
    ) as (runtime, _):
        yield runtime


def _stops_the_sweep(exc: BaseException) -> bool:
    """A stop signal (the run has checkpointed itself) ends the sweep even with --keep-going."""
    return isinstance(exc, TrainingInterrupted)


def log(message: str) -> None:
    """A line of the sweep's own, to stderr at once."""
    print(message, file=sys.stderr, flush=True)


def _unfinished(
    sweep: Sweep, todo: Sequence[Job], short: bool = False
) -> Iterator[tuple[str, Job, str]]:
    """(tag, job, status) of each job not done yet, saying which finished ones are skipped;
    the tag numbers the job among all and names its folder (``short``: by name only)."""
    for n, job in enumerate(todo, 1):
        tag = f"[{n}/{len(todo)}] {job.folder.name if short else job.folder}"
        status = point_status(job, sweep.finetune)
        if status == "done":
            log(f"{tag}: done, skipping")
        else:
            yield tag, job, status


def run_parallel(sweep: Sweep, todo: Sequence[Job], args: argparse.Namespace) -> list[str]:
    """Run the unfinished jobs as ``--jobs`` processes at once (:mod:`gemminer.sweep.parallel`);
    returns the failures. A failed run stops the others (they checkpoint) unless
    ``--keep-going``."""
    from .parallel import JobRunner, Task

    tasks = []
    for tag, job, _ in _unfinished(sweep, todo, short=True):
        argv = job.cli_args(sweep.finetune) + (["--no-progress"] if args.no_progress else [])
        after = job.source.folder if isinstance(job, SanityJob) else None
        tasks.append(Task(tag, job.folder, argv, after))
    log(f"gemminer sweep: {len(tasks)} runs to do, {args.jobs} at a time")
    outcome = JobRunner(
        tasks, args.jobs, sweep.out / "logs", keep_going=args.keep_going, log=log
    ).run()
    if outcome.stopped:
        log(
            f"gemminer sweep: {len(outcome.stopped)} runs stopped after the failure, "
            "checkpointed; the same command resumes them"
        )
    return outcome.failed + outcome.skipped


def run_in_turn(sweep: Sweep, todo: Sequence[Job], args: argparse.Namespace) -> list[str]:
    """Run the unfinished jobs one after another in this process; returns the failures."""
    failed: list[str] = []
    broken: set[Path] = set()  # points that failed: their checks cannot run
    for tag, job, status in _unfinished(sweep, todo):
        if isinstance(job, SanityJob) and job.source.folder in broken:
            log(f"{tag}: skipped, its run failed")
            continue
        log(f"{tag}: {job.describe()}{' (resuming)' if status == 'partial' else ''}")
        try:
            if isinstance(job, SanityJob):
                run_sanity(job, sweep.finetune, progress=not args.no_progress)
            else:
                run_point(job, sweep.finetune, progress=not args.no_progress)
        except Exception as exc:
            if not args.keep_going or _stops_the_sweep(exc):
                raise
            broken.add(job.folder)
            failed.append(f"{job.folder}: {type(exc).__name__}: {exc}")
            log(f"{tag}: failed: {exc}")
    return failed
