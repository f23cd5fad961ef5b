"""A sweep's grid expanded into runs: :class:`SweepPoint`, and the :class:`SanityJob` of each.

Grid points are taken in file order, the last grid key varying fastest. The keys are the
options of ``gemminer prune`` (or ``gemminer run``) from one table
(:mod:`gemminer.settings.options`), and each point's values are resolved by the resolver of those
commands (:func:`resolve_point`, :func:`gemminer.settings.resolve.resolve`), so a point and its
printed command (``--commands``) are the same run, in the same folder:
``OUT/<runs.default_run_name(config)>``, named by the hash of its settings. A point whose
flags do not apply to it (``--lambda`` for SNIP, a setting its method lacks) is an error,
or skipped with a note under ``skip_invalid: true``; a point that is the same run as an
earlier one is left out with a note.

``sanity`` runs the named checks (``gemminer sanity RUN --check CHECK``, with
``--finetune`` when the sweep finetunes) on every run of that method once it is finished,
into ``RUN-CHECK`` beside it, as the paper's figures need (Fig. 3 bottom, Table 2); they
are listed, resumed, sharded (with their run) and tabled like the runs (:func:`jobs`).
"""

from __future__ import annotations

import itertools
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ConfigError, GemMinerError
from ..rundir.runs import default_run_name
from ..settings.config import RunConfig
from ..settings.options import (
    DEFAULT_PRECISION,
    PAIRS,
    RUN,
    RUNTIME,
    SWITCH,
    parse_options,
    scalar_text,
    sweep_options,
)
from ..settings.recipe import load_recipe
from ..settings.resolve import resolve
from .spec import Sweep


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
    flags are, the run settings resolved by :func:`gemminer.settings.resolve.resolve` over its
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
