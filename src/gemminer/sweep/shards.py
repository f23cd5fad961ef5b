"""``gemminer sweep --shard I/N`` and ``--shard auto``: a sweep's points split among processes.

``--shard I/N`` takes every N-th point from point I (counted among the valid points, each
with its sanity checks), so N processes, on one machine or many, run the sweep between them
into one folder; ``--shard auto`` takes I and N from a Slurm job array
(``sbatch --array=0-{N-1}``, see :func:`slurm_shard`).
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence

from ..errors import ConfigError
from .grid import SweepPoint


def shard(points: Sequence[SweepPoint], spec: tuple[int, int] | None) -> list[SweepPoint]:
    """Every ``n``-th point from point ``i`` for ``spec = (i, n)``; all points for None."""
    if spec is None:
        return list(points)
    i, n = spec
    return [p for p in points if p.index % n == i]


#: ``--shard auto``: the shard from a Slurm job array (``sbatch --array``).
SLURM_TASK_VARS = ("SLURM_ARRAY_TASK_ID", "SLURM_ARRAY_TASK_COUNT")


def slurm_shard(environ: Mapping[str, str]) -> tuple[int, int]:
    """(I, N) of this Slurm array task: its position among the array's ``N`` =
    ``SLURM_ARRAY_TASK_COUNT`` tasks, counted from ``SLURM_ARRAY_TASK_MIN`` in steps of
    ``SLURM_ARRAY_TASK_STEP`` (so ``--array=1-8`` and ``--array=0-14:2`` work too)."""
    missing = [v for v in SLURM_TASK_VARS if not environ.get(v, "").strip()]
    if missing:
        raise ConfigError(
            f"--shard auto takes the shard from a Slurm job array, but {' and '.join(missing)} "
            "is not set (run it under `sbatch --array=0-N`), or give --shard I/N"
        )
    try:
        task, count = (int(environ[v]) for v in SLURM_TASK_VARS)
        low = int(environ.get("SLURM_ARRAY_TASK_MIN") or 0)
        step = int(environ.get("SLURM_ARRAY_TASK_STEP") or 1)
    except ValueError as exc:
        raise ConfigError(f"--shard auto: a Slurm array variable is not a number: {exc}") from exc
    index = (task - low) // step if step > 0 else -1
    if count < 1 or not 0 <= index < count or (task - low) % max(step, 1):
        raise ConfigError(
            f"--shard auto: Slurm array task {task} (min {low}, step {step}) is not one of the "
            f"{count} tasks; use a plain --array=0-{max(count, 1) - 1} or give --shard I/N"
        )
    return index, count


def shard_spec(text: str) -> tuple[int, int] | str:
    """The value of ``--shard``: (I, N), or ``"auto"``; an argparse error otherwise."""
    if text == "auto":
        return text
    i, sep, n = text.partition("/")
    try:
        spec = int(i), int(n)
    except ValueError:
        spec = (-1, 0)
    if not sep or spec[1] < 1 or not 0 <= spec[0] < spec[1]:
        raise argparse.ArgumentTypeError(
            f"--shard takes I/N with 0 <= I < N, or auto, got {text!r}"
        )
    return spec
