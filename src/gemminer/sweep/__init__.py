"""``gemminer sweep FILE``: a grid of runs (method × density × seed × any flag) from one file.

One module per step:

- :mod:`~gemminer.sweep.spec`: the sweep file (YAML: ``base``, ``grid``, ``per_method``,
  ``sanity``, ``finetune``, ``skip_invalid``, ``out``), read and checked (:func:`load_sweep`);
- :mod:`~gemminer.sweep.grid`: the grid expanded into runs, each resolved as its printed
  command would be and named by the hash of its settings, with the sanity checks of each
  (:func:`expand`, :func:`jobs`);
- :mod:`~gemminer.sweep.shards`: ``--shard I/N`` and ``--shard auto`` (a Slurm job
  array) split the points among processes (:func:`shard`, :func:`slurm_shard`);
- :mod:`~gemminer.sweep.run`: each run's status on disk (:func:`point_status`: finished
  runs are skipped, so a stopped sweep resumes) and running them in turn;
- :mod:`~gemminer.sweep.parallel`: ``--jobs N``, the runs as N processes at once;
- :mod:`~gemminer.sweep.results`: ``OUT/results.csv`` (one row per run),
  ``OUT/results_grouped.csv`` (mean and sample standard deviation over seeds) and
  ``OUT/results.md`` (both tables), built by :mod:`gemminer.reports.sweep_tables`;
- :mod:`~gemminer.sweep.cli`: the command line (:func:`add_sweep_parser`,
  :func:`run_sweep`).
"""

from __future__ import annotations

from .cli import add_sweep_parser, run_sweep
from .grid import (
    Job,
    SanityJob,
    SweepPoint,
    expand,
    jobs,
    point_argv,
    point_options,
    resolve_point,
    sanity_jobs,
)
from .results import result_rows, write_tables
from .run import point_status, run_point, run_sanity
from .shards import shard, slurm_shard
from .spec import SWEEP_KEYS, Sweep, load_sweep

__all__ = [
    "SWEEP_KEYS",
    "Job",
    "SanityJob",
    "Sweep",
    "SweepPoint",
    "add_sweep_parser",
    "expand",
    "jobs",
    "load_sweep",
    "point_argv",
    "point_options",
    "point_status",
    "resolve_point",
    "result_rows",
    "run_point",
    "run_sanity",
    "run_sweep",
    "sanity_jobs",
    "shard",
    "slurm_shard",
    "write_tables",
]
