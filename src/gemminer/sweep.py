"""``gemminer sweep FILE``: a grid of runs (method × density × seed × any flag) from one file.

A sweep file (YAML)::

    base:                        # flags of `gemminer prune`, as a mapping ...
      model: resnet20
      dataset: cifar10
      data_dir: .data/cifar10
      epochs: 10
      set: {bn_recalibration_batches: 10}   # --set, also as set.KEY: VALUE
    grid:                        # flag -> list of values; every combination is one run
      method: [gem-miner, snip]
      density: [0.0144, 0.05]
      seed: [0, 1, 2]
      lambda: [null, 1.0e-4]     # null: the flag left out (its default)
      set.rewind_epoch: [0, 2]   # a method setting; model_arg.KEY, data_arg.KEY alike
    per_method:                  # flags for the points of one method, over base
      imp: {epochs: 3, set.rounds: 3}
    sanity:                      # sanity checks of each finished run of a method
      gem-miner: [shuffle, reinit, invert]
    finetune: true               # default: as the command (prune: no; run: yes)
    skip_invalid: true           # skip points whose flags do not apply (λ for SNIP)
    out: runs/sweeps/compare     # default: runs/sweeps/<file name>

``base`` may instead name a recipe (``recipe: NAME`` or a file, plus flags of
``gemminer run`` overriding it); ``recipe`` may also be a grid key. A recipe fixes the
method, so ``method`` is then no setting. Keys are the long flag names with ``_`` or ``-``
(``batch_size``, ``lambda``, ``no_epoch_eval: true``); switches take true or false.

Grid points are taken in file order, the last grid key varying fastest. The keys are the
options of ``gemminer prune`` (or ``gemminer run``) from one table
(:mod:`gemminer.options`), and each point's values are resolved by the resolver of those
commands (:func:`resolve_point`, :func:`gemminer.resolve.resolve`), so a point and its
printed command (``--commands``) are the same run, in the same folder:
``OUT/<runs.default_run_name(config)>``, named by the hash of its settings. A point whose
flags do not apply to it (``--lambda`` for SNIP, a setting its method lacks) is an error,
or skipped with a note under ``skip_invalid: true``.

``sanity`` runs the named checks (``gemminer sanity RUN --check CHECK``, with
``--finetune`` when the sweep finetunes) on every run of that method once it is finished,
into ``RUN-CHECK`` beside it, as the paper's figures need (Fig. 3 bottom, Table 2); they
are listed, resumed, sharded (with their run) and tabled like the runs.

Runs go one after another in this process. Finished runs (``summary.json`` with the
post-finetune accuracy, or the pre-finetune one without finetuning) are skipped, so a
stopped sweep resumes where it stopped; ``--shard I/N`` takes every N-th point from
point I for parallel processes, and ``--shard auto`` takes I and N from a Slurm job array
(``sbatch --array=0-{N-1}``, see :func:`slurm_shard`). Afterwards (or with ``--table``)
the results go to ``OUT/results.csv`` (one row per run), ``OUT/results_grouped.csv`` (mean
and sample standard deviation over seeds) and ``OUT/results.md`` (both tables).
"""

from __future__ import annotations

import argparse
import csv
import difflib
import io
import itertools
import os
import shlex
import sys
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml

from . import stages
from .config import RunConfig
from .errors import ConfigError, GemMinerError
from .files import atomic_write_text
from .options import (
    DEFAULT_PRECISION,
    PAIRS,
    RUN,
    RUNTIME,
    SWITCH,
    Option,
    not_in_sweeps,
    parse_options,
    scalar_text,
    sweep_options,
)
from .recipe import load_recipe
from .reports.format import Stat, markdown_table
from .resolve import resolve
from .runs import RunDir, default_run_name
from .summary import RunSummary
from .training.checkpoint import TrainingInterrupted
from .training.runtime import Runtime, start_runtime

#: Top-level keys of a sweep file.
SWEEP_KEYS = ("base", "grid", "per_method", "sanity", "finetune", "skip_invalid", "out")
#: Flags that set ``KEY=VALUE`` pairs; in a sweep they are written ``set.KEY``.
_PAIR_FLAGS = tuple(o.key for o in sweep_options("prune").values() if o.kind == PAIRS)
#: Flags of the commands that a sweep sets itself, with what to do instead.
_NOT_SETTINGS = {**not_in_sweeps("prune"), **not_in_sweeps("run")}
#: Columns of the per-run table before the grid values, and after them.
_RUN_COLUMNS = ("run", "status", "method", "target_density", "density", "seed")
_RESULT_COLUMNS = ("pre_finetune_acc", "post_finetune_acc", "epochs_to_mask", "seconds")
#: Grid keys shown by their resolved value in the fixed columns.
_FIXED_KEYS = ("method", "density", "seed")


# -- options of the commands -----------------------------------------------------------


def _valid_keys(flags: dict[str, Option], recipe_mode: bool) -> list[str]:
    keys = [f"{k}.KEY" if f.kind == PAIRS else k for k, f in flags.items()]
    return (["recipe"] if recipe_mode else []) + keys


def point_options(settings: dict[str, Any]) -> dict[str, Any]:
    """A point's base and grid values as options: ``set.KEY`` values gathered into
    ``set: {KEY: value}``; null values left out (not given)."""
    options: dict[str, Any] = {}
    for key, value in settings.items():
        head, dot, tail = key.partition(".")
        if value is None:
            continue
        if dot:
            options.setdefault(head, {})[tail] = value
        else:
            options[key] = value
    return options


def resolve_point(sweep: Sweep, settings: dict[str, Any]) -> tuple[RunConfig, dict[str, Any]]:
    """The RunConfig of one point, and how it runs: its values checked as the command's
    flags are, the run settings resolved by :func:`gemminer.resolve.resolve` over its
    recipe, if any; the runtime options (``precision``, default ``auto``, ``compile``,
    ``threads``), which do not name its folder, apart."""
    run, runtime = _point_values(sweep, settings)
    recipe = settings.get("recipe")
    config = resolve(run, load_recipe(str(recipe)) if recipe is not None else None)
    return config, {"precision": DEFAULT_PRECISION, **runtime}


def _point_values(sweep: Sweep, settings: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """A point's checked values, split into run settings and runtime options."""
    options = point_options(settings)
    options.pop("recipe", None)
    command = "run" if sweep.recipe_mode else "prune"
    values = parse_options(options, command, group=None)
    flags = sweep_options(command)
    run = {k: v for k, v in values.items() if flags[k].group == RUN}
    return run, {k: v for k, v in values.items() if flags[k].group == RUNTIME}


# -- the sweep file -------------------------------------------------------------------


class _StrictLoader(yaml.SafeLoader):
    """YAML that refuses a key given twice in one mapping (PyYAML keeps the last)."""


def _no_duplicates(loader: _StrictLoader, node: yaml.MappingNode) -> dict:
    seen: set = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node)
        if key in seen:
            raise ConfigError(f"line {key_node.start_mark.line + 1}: key {key!r} is given twice")
        seen.add(key)
    return loader.construct_mapping(node)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _no_duplicates)


def _key(raw: Any) -> str:
    """``batch-size`` → ``batch_size``; ``set.rewind_epoch`` keeps the setting's own name."""
    head, dot, tail = str(raw).partition(".")
    head = head.replace("-", "_")
    return f"{head}.{tail}" if dot else head


def _is_scalar(value: Any) -> bool:
    return value is None or isinstance(value, (str, int, float, bool))


@dataclass(frozen=True)
class Sweep:
    """A parsed sweep file: fixed flags, the grid, and what to do with each run."""

    path: Path
    base: dict[str, Any]  # key -> value; pair flags as "set.KEY"
    grid: dict[str, list[Any]]  # key -> values, in file order
    finetune: bool
    skip_invalid: bool
    out: Path
    per_method: dict[str, dict[str, Any]] = field(default_factory=dict)  # method -> base items
    sanity: dict[str, tuple[str, ...]] = field(default_factory=dict)  # method -> checks

    @property
    def recipe_mode(self) -> bool:
        return "recipe" in self.base or "recipe" in self.grid

    @property
    def size(self) -> int:
        """The number of grid combinations (before invalid or duplicate points are dropped)."""
        n = 1
        for values in self.grid.values():
            n *= len(values)
        return n


def _check_key(key: str, value: Any, flags: dict[str, Option], recipe_mode: bool, where: str):
    head, dot, tail = key.partition(".")
    if key == "recipe" and recipe_mode:
        return
    if head in _NOT_SETTINGS:
        raise ConfigError(f"{where}: {head} is no sweep setting ({_NOT_SETTINGS[head]})")
    if head == "method" and recipe_mode:
        raise ConfigError(
            f"{where}: a recipe fixes its method (`gemminer run` has no --method); "
            "sweep methods with plain flags of `gemminer prune` in base instead of a recipe"
        )
    flag = flags.get(head)
    if flag is None:
        valid = _valid_keys(flags, recipe_mode)
        close = difflib.get_close_matches(head, [k.split(".")[0] for k in valid], n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ConfigError(
            f"{where}: unknown setting {head!r}{hint}; valid settings: {', '.join(valid)}"
        )
    if flag.kind == PAIRS and not (dot and tail):
        raise ConfigError(f"{where}: write {head} values as {head}.KEY, e.g. {head}.period")
    if flag.kind != PAIRS and dot:
        raise ConfigError(f"{where}: {head} takes no .KEY (only {', '.join(_PAIR_FLAGS)} do)")
    if not _is_scalar(value):
        raise ConfigError(f"{where}: {key} must be a single value, got {value!r}")
    if flag.kind == SWITCH and not (value is None or isinstance(value, bool)):
        raise ConfigError(f"{where}: {key} is a switch: true or false, got {value!r}")


def _base_items(data: Any, where: str) -> dict[str, Any]:
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: must be a mapping of flags to values, got {data!r}")
    out: dict[str, Any] = {}
    for raw, value in data.items():
        key = _key(raw)
        if key in _PAIR_FLAGS and isinstance(value, (dict, list)):  # set: {k: v} or [k=v]
            pairs = value if isinstance(value, dict) else {}
            if isinstance(value, list):
                for pair in value:
                    k, sep, v = str(pair).partition("=")
                    if not sep or not k:
                        raise ConfigError(f"{where}.{key}: expected KEY=VALUE, got {pair!r}")
                    pairs[k] = yaml.safe_load(v) if v else ""
            for k, v in pairs.items():
                out[f"{key}.{k}"] = v
        else:
            out[key] = value
    return out


def load_sweep(path: str | Path, out: str | Path | None = None) -> Sweep:
    """Read and validate the sweep file ``path`` (``out`` overrides its ``out:``)."""
    path = Path(path)
    try:
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=_StrictLoader)
    except OSError as exc:
        raise ConfigError(f"cannot read sweep file {path}: {exc.strerror or exc}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {exc}") from exc
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a sweep file is a mapping with keys {', '.join(SWEEP_KEYS)}")
    unknown = sorted(str(k) for k in set(data) - set(SWEEP_KEYS))
    if unknown:
        raise ConfigError(
            f"{path}: unknown keys {', '.join(unknown)}; valid keys: {', '.join(SWEEP_KEYS)}"
        )
    base = _base_items(data.get("base"), f"{path}: base")
    raw_grid = data.get("grid") or {}
    if not isinstance(raw_grid, dict):
        raise ConfigError(f"{path}: grid must be a mapping of flags to lists of values")
    grid: dict[str, list[Any]] = {}
    for raw, values in raw_grid.items():
        key = _key(raw)
        if key in grid:
            raise ConfigError(f"{path}: grid: {key} is given twice")
        if not isinstance(values, list) or not values:
            raise ConfigError(
                f"{path}: grid.{key} must be a non-empty list of values, got {values!r} "
                "(put a single value in base)"
            )
        grid[key] = values
    both = [k for k in grid if k in base]
    if both:
        raise ConfigError(f"{path}: {', '.join(both)} set in both base and grid")
    recipe_mode = "recipe" in base or "recipe" in grid
    flags = sweep_options("run" if recipe_mode else "prune")
    for key, value in base.items():
        _check_key(key, value, flags, recipe_mode, f"{path}: base.{key}")
    for key, values in grid.items():
        for value in values:
            _check_key(key, value, flags, recipe_mode, f"{path}: grid.{key}")
        if len({repr(v) for v in values}) < len(values):
            raise ConfigError(f"{path}: grid.{key} lists a value twice: {values!r}")
    if not recipe_mode and "method" not in base and "method" not in grid:
        raise ConfigError(f"{path}: give the method in base or grid (or a recipe in base)")
    per_method = _per_method(data.get("per_method"), grid, flags, recipe_mode, path)
    sanity = _sanity(data.get("sanity"), path)
    flags_of = {"finetune": data.get("finetune"), "skip_invalid": data.get("skip_invalid")}
    for key, value in flags_of.items():
        if value is not None and not isinstance(value, bool):
            raise ConfigError(f"{path}: {key} must be true or false, got {value!r}")
    if data.get("out") is not None and not isinstance(data["out"], str):
        raise ConfigError(f"{path}: out must be a folder path, got {data['out']!r}")
    folder = out if out is not None else data.get("out") or Path("runs/sweeps") / path.stem
    return Sweep(
        path=path,
        base=base,
        grid=grid,
        finetune=recipe_mode if flags_of["finetune"] is None else flags_of["finetune"],
        skip_invalid=bool(flags_of["skip_invalid"]),
        out=Path(folder),
        per_method=per_method,
        sanity=sanity,
    )


def _method_name(raw: Any, where: str) -> str:
    """``raw`` as a registered method's name; an error naming the closest otherwise."""
    from .methods import METHODS

    name = str(raw)
    if name not in METHODS:
        close = difflib.get_close_matches(name, METHODS.names(), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ConfigError(f"{where}: unknown method {name!r}{hint}")
    return name


def _per_method(
    data: Any, grid: dict[str, list[Any]], flags: dict[str, Option], recipe_mode: bool, path: Path
) -> dict[str, dict[str, Any]]:
    """``per_method``: method -> flags (as in base) for that method's points."""
    if data is None:
        return {}
    if recipe_mode:
        raise ConfigError(f"{path}: per_method: a recipe fixes its method; set its flags in base")
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: per_method must map method names to flags, got {data!r}")
    out: dict[str, dict[str, Any]] = {}
    for raw, items in data.items():
        where = f"{path}: per_method.{raw}"
        method = _method_name(raw, where)
        values = _base_items(items, where)
        for key, value in values.items():
            if key == "method":
                raise ConfigError(f"{where}: the method is the key, not a flag")
            _check_key(key, value, flags, recipe_mode, f"{where}.{key}")
            if key in grid:
                raise ConfigError(f"{where}.{key}: {key} is also a grid key; set it in one place")
        out[method] = values
    return out


def _sanity(data: Any, path: Path) -> dict[str, tuple[str, ...]]:
    """``sanity``: method -> the checks to run on each of its finished runs."""
    from .stages.sanity import SANITY_CHECKS, Remine

    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(
            f"{path}: sanity must map method names to lists of checks "
            f"({', '.join(SANITY_CHECKS)}), got {data!r}"
        )
    out: dict[str, tuple[str, ...]] = {}
    for raw, checks in data.items():
        where = f"{path}: sanity.{raw}"
        method = _method_name(raw, where)
        checks = [checks] if isinstance(checks, str) else checks
        if not isinstance(checks, list) or not checks:
            raise ConfigError(f"{where}: give a list of checks ({', '.join(SANITY_CHECKS)})")
        if len(set(map(str, checks))) < len(checks):
            raise ConfigError(f"{where} lists a check twice: {checks!r}")
        for check in map(str, checks):
            try:
                spec = SANITY_CHECKS.get(check)
            except GemMinerError as exc:
                raise ConfigError(f"{where}: {exc}") from None
            if isinstance(spec, Remine) and spec.method != method:
                raise ConfigError(
                    f"{where}: the {check} check mines again with {spec.method}; it does not "
                    f"apply to {method} (invert-posthoc does, for a method that stores scores)"
                )
        out[method] = tuple(map(str, checks))
    return out


# -- grid points ----------------------------------------------------------------------


@dataclass(frozen=True)
class SweepPoint:
    """One run of a sweep: its grid values, command line, resolved config and folder."""

    index: int  # position among the sweep's valid points (what --shard counts)
    values: dict[str, Any]  # grid key -> value
    argv: tuple[str, ...]  # `gemminer ARGV` runs this point (without --out)
    config: RunConfig
    folder: Path
    runtime: Mapping[str, Any] = field(default_factory=lambda: {"precision": DEFAULT_PRECISION})

    def describe(self) -> str:
        return " ".join(f"{k}={scalar_text(v)}" for k, v in self.values.items()) or "(no grid)"

    def cli_args(self, finetune: bool) -> list[str]:
        """The ``gemminer`` arguments that run this point on its own (``finetune`` is
        already in :attr:`argv`)."""
        return [*self.argv, "--out", str(self.folder)]

    def command(self, finetune: bool = True) -> str:
        """The plain command line of this point, runnable on its own."""
        return shlex.join(["gemminer", *self.cli_args(finetune)])


@dataclass(frozen=True)
class SanityJob:
    """A sanity check of one point's run (``sanity:`` in the sweep file), into
    ``RUN-CHECK`` beside it, finetuned when the sweep finetunes."""

    source: SweepPoint
    check: str

    @property
    def folder(self) -> Path:
        return self.source.folder.with_name(f"{self.source.folder.name}-{self.check}")

    def describe(self) -> str:
        return f"{self.check} check of {self.source.folder.name}"

    def cli_args(self, finetune: bool) -> list[str]:
        """The ``gemminer`` arguments of this check (its run must be finished first)."""
        argv = ["sanity", str(self.source.folder), "--check", self.check]
        argv += ["--finetune"] if finetune else []
        argv += runtime_flags(self.source.runtime)
        return [*argv, "--out", str(self.folder)]

    def command(self, finetune: bool) -> str:
        """The plain command line of this check (its run must be finished first)."""
        return shlex.join(["gemminer", *self.cli_args(finetune)])


#: What a sweep runs: a grid point, or a sanity check of one.
Job = SweepPoint | SanityJob


def runtime_flags(runtime: Mapping[str, Any]) -> list[str]:
    """``--precision``, ``--compile``, ``--threads`` of a point's runtime options, as flags
    (the default precision left out)."""
    flags = []
    if runtime.get("precision", DEFAULT_PRECISION) != DEFAULT_PRECISION:
        flags += ["--precision", str(runtime["precision"])]
    if runtime.get("compile"):
        flags.append("--compile")
    if runtime.get("threads") is not None:
        flags += ["--threads", str(runtime["threads"])]
    return flags


def sanity_jobs(sweep: Sweep, point: SweepPoint) -> list[SanityJob]:
    """The sanity checks the sweep runs on ``point``'s run, in file order."""
    return [SanityJob(point, check) for check in sweep.sanity.get(point.config.method, ())]


def jobs(sweep: Sweep, points: Sequence[SweepPoint]) -> list[Job]:
    """Each point followed by its sanity checks."""
    return [job for p in points for job in (p, *sanity_jobs(sweep, p))]


def point_argv(sweep: Sweep, settings: dict[str, Any]) -> list[str]:
    """The ``gemminer`` arguments of one point: base and grid values as flags."""
    recipe_mode = sweep.recipe_mode
    argv = ["run", str(settings["recipe"])] if recipe_mode else ["prune"]
    for key, flag in sweep_options("run" if recipe_mode else "prune").items():
        if flag.kind == PAIRS:
            for name, value in settings.items():
                head, dot, tail = name.partition(".")
                if head == key and dot and value is not None:
                    argv += [flag.flag, f"{tail}={scalar_text(value)}"]
        elif settings.get(key) is not None:
            value = settings[key]
            if flag.kind == SWITCH:
                argv += [flag.flag] if value else []
            else:
                text = scalar_text(value)
                argv += [f"{flag.flag}={text}"] if text.startswith("-") else [flag.flag, text]
    if recipe_mode and not sweep.finetune:
        argv.append("--no-finetune")
    elif not recipe_mode and sweep.finetune:
        argv.append("--finetune")
    return argv


def expand(sweep: Sweep) -> tuple[list[SweepPoint], list[str]]:
    """The sweep's runs in grid order, and notes on points skipped or merged.

    Raises :class:`ConfigError` for points that do not apply unless ``skip_invalid``.
    """
    keys = list(sweep.grid)
    points: list[SweepPoint] = []
    notes: list[str] = []
    invalid: list[str] = []
    by_folder: dict[Path, int] = {}
    for number, combo in enumerate(itertools.product(*sweep.grid.values()), 1):
        values = dict(zip(keys, combo))
        desc = " ".join(f"{k}={scalar_text(v)}" for k, v in values.items())
        method = values.get("method", sweep.base.get("method"))
        settings = {**sweep.base, **sweep.per_method.get(str(method), {}), **values}
        argv = point_argv(sweep, settings)
        try:
            cfg, runtime = resolve_point(sweep, settings)
        except GemMinerError as exc:
            invalid.append(f"point {number} ({desc}): {exc}")
            continue
        folder = sweep.out / default_run_name(cfg)
        if folder in by_folder:
            notes.append(f"point {number} ({desc}) is the same run as point {by_folder[folder]}")
            continue
        by_folder[folder] = number
        points.append(SweepPoint(len(points), values, tuple(argv), cfg, folder, runtime))
    if invalid and (not sweep.skip_invalid or not points):
        shown = "; ".join(invalid[:5]) + (
            f"; and {len(invalid) - 5} more" if len(invalid) > 5 else ""
        )
        hint = "" if sweep.skip_invalid else " (add `skip_invalid: true` to skip such points)"
        raise ConfigError(
            f"{sweep.path}: {len(invalid)} of {sweep.size} grid points do not apply{hint}: {shown}"
        )
    used = {p.config.method for p in points}
    for key, methods in (("per_method", sweep.per_method), ("sanity", sweep.sanity)):
        for method in methods:
            if method not in used:
                raise ConfigError(
                    f"{sweep.path}: {key}.{method}: no run of this sweep uses {method}"
                )
    notes = [f"skipped {line}" for line in invalid] + notes
    return points, notes


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


def _shard_spec(text: str) -> tuple[int, int] | str:
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


# -- status and running ---------------------------------------------------------------


def _summary(point: Job) -> RunSummary:
    """The run's summary (every figure None before it has one)."""
    return RunDir(point.folder).summary() if point.folder.is_dir() else RunSummary()


def point_status(point: Job, finetune: bool) -> str:
    """``done`` (the final accuracy is in summary.json), ``partial`` or ``todo``."""
    summary = _summary(point)
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
    """The runtime of ``point`` (its precision and compile option) with its thread count
    set for the duration (the process's own count afterwards)."""
    threads = point.runtime.get("threads")
    before = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        with start_runtime(
            point.config.device,
            precision=point.runtime["precision"],
            compile=bool(point.runtime.get("compile", False)),
        ) as (runtime, _):
            yield runtime
    finally:
        torch.set_num_threads(before)


def _stops_the_sweep(exc: BaseException) -> bool:
    """A stop signal (the run has checkpointed itself) ends the sweep even with --keep-going."""
    return isinstance(exc, TrainingInterrupted)


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# -- results tables -------------------------------------------------------------------


def _extra_keys(sweep: Sweep) -> list[str]:
    return [k for k in sweep.grid if k not in _FIXED_KEYS]


def _check_columns(sweep: Sweep) -> list[str]:
    """``check`` (the sanity check of a row; empty for a grid point) when the sweep has any."""
    return ["check"] if sweep.sanity else []


def result_rows(sweep: Sweep, points: Sequence[SweepPoint]) -> list[dict[str, Any]]:
    """One row per run, each point's sanity checks after it: its settings, status and
    figures (None where not yet known)."""
    rows = []
    for job in jobs(sweep, points):
        point = job.source if isinstance(job, SanityJob) else job
        summary = _summary(job)
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
        row.update({k: point.values[k] for k in _extra_keys(sweep)})
        row.update({k: getattr(summary, k) for k in _RESULT_COLUMNS})
        rows.append(row)
    return rows


def grouped_rows(sweep: Sweep, rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Finished runs grouped over seeds: mean and sample standard deviation (n − 1)."""
    keys = ["method", *_check_columns(sweep), "target_density", *_extra_keys(sweep)]
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault(tuple(repr(row[k]) for k in keys), []).append(row)
    out = []
    for members in groups.values():
        done = [r for r in members if r["status"] == "done"]
        group: dict[str, Any] = {k: members[0][k] for k in keys}
        group["n"] = len(done)
        group["seeds"] = " ".join(str(r["seed"]) for r in done)
        for column in ("pre_finetune_acc", "post_finetune_acc", "density", "epochs_to_mask"):
            stat = Stat.of(r[column] for r in done)
            group[f"{column}_mean"], group[f"{column}_std"] = stat.mean, stat.std
        group["seconds_mean"] = Stat.of(r["seconds"] for r in done).mean
        out.append(group)
    return out


def _csv(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow(["" if row[c] is None else scalar_text(row[c]) for c in columns])
    return buffer.getvalue()


def _pct(value: float | None, std: float | None = None, digits: int = 2) -> str:
    if value is None:
        return "—"
    text = f"{100 * value:.{digits}f}"
    return text if std is None else f"{text} ± {100 * std:.{digits}f}"


def _num(value: float | None, fmt: str = ".1f") -> str:
    return "—" if value is None else format(value, fmt)


def _cell(value: Any) -> str:
    return "default" if value is None else scalar_text(value)  # a grid value left at its default


def _method_cell(row: Mapping[str, Any]) -> str:
    """``gem-miner``, or ``gem-miner + shuffle`` for a sanity check's row."""
    return f"{row['method']} + {row['check']}" if row.get("check") else str(row["method"])


def results_markdown(
    sweep: Sweep, rows: Sequence[dict[str, Any]], groups: Sequence[dict[str, Any]]
) -> str:
    """Both tables as markdown: accuracies and densities in %."""
    extra = _extra_keys(sweep)
    counts = {s: sum(r["status"] == s for r in rows) for s in ("done", "partial", "todo")}
    grouped = markdown_table(
        ["method", "target %", *extra, "n", "pre-finetune acc %", "post-finetune acc %"]
        + ["density %", "epochs to mask", "seconds"],
        [
            [
                _method_cell(g),
                f"{100 * g['target_density']:.4g}",
                *(_cell(g[k]) for k in extra),
                str(g["n"]),
                _pct(g["pre_finetune_acc_mean"], g["pre_finetune_acc_std"]),
                _pct(g["post_finetune_acc_mean"], g["post_finetune_acc_std"]),
                _pct(g["density_mean"], digits=3),
                _num(g["epochs_to_mask_mean"], ".2f"),
                _num(g["seconds_mean"], ".0f"),
            ]
            for g in groups
        ],
    )
    runs = markdown_table(
        ["run", "status", "method", "target %", "density %", "seed", *extra]
        + ["pre-finetune acc %", "post-finetune acc %", "epochs to mask", "seconds"],
        [
            [
                r["run"],
                r["status"],
                _method_cell(r),
                f"{100 * r['target_density']:.4g}",
                _pct(r["density"], digits=3),
                str(r["seed"]),
                *(_cell(r[k]) for k in extra),
                _pct(r["pre_finetune_acc"]),
                _pct(r["post_finetune_acc"]),
                _num(r["epochs_to_mask"], ".2f"),
                _num(r["seconds"], ".0f"),
            ]
            for r in rows
        ],
    )
    return (
        f"# Sweep {sweep.path.name}\n\n"
        f"{len(rows)} runs: {counts['done']} done, {counts['partial']} partial, "
        f"{counts['todo']} todo. Test accuracy in %; mean ± sample standard deviation over "
        "the finished runs of each group (n).\n\n"
        f"## Over seeds\n\n{grouped}\n\n## Runs\n\n{runs}\n"
    )


def write_tables(sweep: Sweep, points: Sequence[SweepPoint]) -> tuple[list[Path], str]:
    """Write results.csv, results_grouped.csv and results.md into the sweep folder
    (atomically); returns their paths and the markdown."""
    rows = result_rows(sweep, points)
    groups = grouped_rows(sweep, rows)
    extra = _extra_keys(sweep)
    check = _check_columns(sweep)
    run_columns = [*_RUN_COLUMNS[:3], *check, *_RUN_COLUMNS[3:], *extra, *_RESULT_COLUMNS]
    group_columns = ["method", *check, "target_density", *extra, "n", "seeds"] + [
        f"{c}_{s}"
        for c in ("pre_finetune_acc", "post_finetune_acc", "density", "epochs_to_mask")
        for s in ("mean", "std")
    ]
    group_columns.append("seconds_mean")
    markdown = results_markdown(sweep, rows, groups)
    files = {
        sweep.out / "results.csv": _csv(rows, run_columns),
        sweep.out / "results_grouped.csv": _csv(groups, group_columns),
        sweep.out / "results.md": markdown,
    }
    for path, text in files.items():
        atomic_write_text(path, text)
    return list(files), markdown


# -- command line ---------------------------------------------------------------------


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
        type=_shard_spec,
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
        _log(f"gemminer sweep: {note}")
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
        _log(f"gemminer sweep: wrote {', '.join(map(str, paths))}")
        return 0

    sweep.out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(sweep.out / "sweep.yaml", sweep.path.read_text(encoding="utf-8"))
    todo = jobs(sweep, selected)
    if args.jobs > 1:
        failed = _run_parallel(sweep, todo, args)
    else:
        failed = _run_in_turn(sweep, todo, args)
    paths, markdown = write_tables(sweep, points)
    print(markdown.split("\n## Runs")[0].rstrip())  # the table over seeds; all in results.md
    _log(f"gemminer sweep: wrote {', '.join(map(str, paths))}")
    if failed:
        _log(f"gemminer sweep: {len(failed)} runs failed:\n  " + "\n  ".join(failed))
        return 1
    return 0


def _unfinished(
    sweep: Sweep, todo: Sequence[Job], short: bool = False
) -> Iterator[tuple[str, Job, str]]:
    """(tag, job, status) of each job not done yet, saying which finished ones are skipped;
    the tag numbers the job among all and names its folder (``short``: by name only)."""
    for n, job in enumerate(todo, 1):
        tag = f"[{n}/{len(todo)}] {job.folder.name if short else job.folder}"
        status = point_status(job, sweep.finetune)
        if status == "done":
            _log(f"{tag}: done, skipping")
        else:
            yield tag, job, status


def _run_parallel(sweep: Sweep, todo: Sequence[Job], args: argparse.Namespace) -> list[str]:
    """Run the unfinished jobs as ``--jobs`` processes at once (:mod:`gemminer.sweep_jobs`);
    returns the failures. A failed run stops the others (they checkpoint) unless
    ``--keep-going``."""
    from .sweep_jobs import JobRunner, Task

    tasks = []
    for tag, job, _ in _unfinished(sweep, todo, short=True):
        argv = job.cli_args(sweep.finetune) + (["--no-progress"] if args.no_progress else [])
        after = job.source.folder if isinstance(job, SanityJob) else None
        tasks.append(Task(tag, job.folder, argv, after))
    _log(f"gemminer sweep: {len(tasks)} runs to do, {args.jobs} at a time")
    outcome = JobRunner(
        tasks, args.jobs, sweep.out / "logs", keep_going=args.keep_going, log=_log
    ).run()
    if outcome.stopped:
        _log(
            f"gemminer sweep: {len(outcome.stopped)} runs stopped after the failure, "
            "checkpointed; the same command resumes them"
        )
    return outcome.failed + outcome.skipped


def _run_in_turn(sweep: Sweep, todo: Sequence[Job], args: argparse.Namespace) -> list[str]:
    """Run the unfinished jobs one after another in this process; returns the failures."""
    failed: list[str] = []
    broken: set[Path] = set()  # points that failed: their checks cannot run
    for tag, job, status in _unfinished(sweep, todo):
        if isinstance(job, SanityJob) and job.source.folder in broken:
            _log(f"{tag}: skipped, its run failed")
            continue
        _log(f"{tag}: {job.describe()}{' (resuming)' if status == 'partial' else ''}")
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
            _log(f"{tag}: failed: {exc}")
    return failed
