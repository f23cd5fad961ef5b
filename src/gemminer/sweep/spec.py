"""The sweep file: reading it, checking every key and value, as :class:`Sweep`.

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

:func:`load_sweep` checks each key against the options of ``gemminer prune`` (or
``gemminer run``) from one table (:mod:`gemminer.settings.options`), each value's shape (a single
value; a switch true or false), the ``per_method`` and ``sanity`` methods and checks, and
refuses a key given twice, naming the file, the key and the closest valid name. Whether a
point's values apply to its method is checked when the grid is expanded
(:func:`gemminer.sweep.grid.expand`).
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..errors import ConfigError, GemMinerError
from ..settings.options import PAIRS, SWITCH, Option, not_in_sweeps, sweep_options

#: Top-level keys of a sweep file.
SWEEP_KEYS = ("base", "grid", "per_method", "sanity", "finetune", "skip_invalid", "out")
#: Flags that set ``KEY=VALUE`` pairs; in a sweep they are written ``set.KEY``.
_PAIR_FLAGS = tuple(o.key for o in sweep_options("prune").values() if o.kind == PAIRS)
#: Flags of the commands that a sweep sets itself, with what to do instead.
_NOT_SETTINGS = {**not_in_sweeps("prune"), **not_in_sweeps("run")}


def _valid_keys(flags: dict[str, Option], recipe_mode: bool) -> list[str]:
    keys = [f"{k}.KEY" if f.kind == PAIRS else k for k, f in flags.items()]
    return (["recipe"] if recipe_mode else []) + keys


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
    from ..methods import METHODS

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
    from ..stages.sanity import SANITY_CHECKS, Remine

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
