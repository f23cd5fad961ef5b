"""Read run folders into typed records and group them across seeds.

Only the files a run folder already holds are read (config.json, summary.json,
metrics.jsonl, mask.pt): no data set, no model evaluation.

Runs are grouped by method, sanity check, target density and every config setting except
the seeds and the settings that cannot change a result (:data:`IGNORED_SETTINGS`), so the
seeds of one experiment land in one :class:`Group` and are reported as mean ± standard
deviation.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import RunError
from ..runs import safe_torch_load

#: Config settings left out of the grouping key: the seeds (averaged over) and the settings
#: that do not change a run's results (where data lives, the device, whether to download,
#: and whether the test set is also evaluated after every epoch). ``method``,
#: ``sanity_check`` and ``prune.density`` are grouped on explicitly.
IGNORED_SETTINGS = frozenset(
    {
        "seed",
        "sanity_seed",
        "data_dir",
        "device",
        "download",
        "eval_each_epoch",
        "eval_every",
        "method",
        "sanity_check",
        "prune.density",
    }
)
#: At most this many distinguishing settings are written into a label.
_MAX_LABEL_SETTINGS = 3


@dataclass(frozen=True)
class LayerCount:
    """One prunable layer of a mask: its weight name, size and kept weights."""

    name: str
    total: int
    kept: int

    @property
    def density(self) -> float:
        return self.kept / self.total if self.total else 0.0


@dataclass(frozen=True)
class RunRecord:
    """What a finished run folder says about its run."""

    path: Path
    method: str
    model: str
    dataset: str
    sanity_check: str
    source_run: str
    seed: int
    target_density: float
    density: float
    pre_acc: float | None
    post_acc: float | None
    epochs_to_mask: float | None
    settings: tuple[tuple[str, str], ...]
    metrics: tuple[dict[str, Any], ...] = ()
    layers: tuple[LayerCount, ...] = ()
    gem_density: float | None = None
    gem_acc: float | None = None
    gem_acc_running_bn: float | None = None

    @property
    def before_density(self) -> float:
        """Density of the network judged before finetuning: Gem-Miner's rounded mask (the
        rare gem) where the run has one, else the ticket's."""
        return self.gem_density if self.gem_density is not None else self.density

    @property
    def before_acc(self) -> float | None:
        """Accuracy before finetuning of :attr:`before_density`'s network."""
        return self.gem_acc if self.gem_acc is not None else self.pre_acc

    @property
    def name(self) -> str:
        return self.path.name


@dataclass(frozen=True)
class Stat:
    """Mean and sample standard deviation (``ddof=1``; None below two values)."""

    mean: float | None
    std: float | None
    n: int

    @classmethod
    def of(cls, values: Iterable[float | None]) -> Stat:
        xs = [float(v) for v in values if v is not None]
        if not xs:
            return cls(None, None, 0)
        mean = sum(xs) / len(xs)
        if len(xs) < 2:
            return cls(mean, None, len(xs))
        var = sum((x - mean) ** 2 for x in xs) / (len(xs) - 1)
        return cls(mean, math.sqrt(var), len(xs))

    @property
    def err(self) -> float:
        """The standard deviation, 0 when unknown (for error bars)."""
        return self.std or 0.0


@dataclass(frozen=True)
class Group:
    """Runs of one experiment that differ only in their seeds.

    ``label`` names the series (method, sanity check, distinguishing settings); the groups
    of one series differ only in their target density.
    """

    label: str
    runs: tuple[RunRecord, ...]

    @property
    def first(self) -> RunRecord:
        return self.runs[0]

    @property
    def method(self) -> str:
        return self.first.method

    @property
    def sanity_check(self) -> str:
        return self.first.sanity_check

    @property
    def target_density(self) -> float:
        return self.first.target_density

    @property
    def seeds(self) -> list[int]:
        return sorted(r.seed for r in self.runs)

    @property
    def density(self) -> Stat:
        return Stat.of(r.density for r in self.runs)

    @property
    def pre_acc(self) -> Stat:
        return Stat.of(r.pre_acc for r in self.runs)

    def stat(self, field: str) -> Stat:
        """Mean ± std of a :class:`RunRecord` figure (e.g. ``"gem_acc"``) over the seeds."""
        return Stat.of(getattr(r, field) for r in self.runs)

    @property
    def post_acc(self) -> Stat:
        return Stat.of(r.post_acc for r in self.runs)

    @property
    def epochs_to_mask(self) -> Stat:
        return Stat.of(r.epochs_to_mask for r in self.runs)


@dataclass
class Collection:
    """The finished runs (grouped) and the unfinished run folders that were skipped."""

    groups: list[Group]
    unfinished: list[Path] = field(default_factory=list)

    @property
    def runs(self) -> list[RunRecord]:
        return [r for g in self.groups for r in g.runs]

    def source_group(self, group: Group) -> Group | None:
        """The group holding the source run of the sanity-check ``group`` (if given)."""
        sources = [_find_run(self.runs, r.source_run) for r in group.runs]
        for g in self.groups:
            if not g.sanity_check and any(s is not None and s in g.runs for s in sources):
                return g
        return None


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise RunError(f"{path} is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise RunError(f"{path} does not hold a JSON object")
    return data


def _read_metrics(path: Path) -> tuple[dict[str, Any], ...]:
    if not path.is_file():
        return ()
    records = []
    for i, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as exc:
            raise RunError(f"{path}, line {i} is not valid JSON: {exc}") from exc
    return tuple(records)


def _read_layers(path: Path) -> tuple[LayerCount, ...]:
    if not path.is_file():
        return ()
    mask = safe_torch_load(path)
    if not isinstance(mask, dict):
        raise RunError(f"{path} does not hold a mask (a dict of weight name -> tensor)")
    return tuple(
        LayerCount(name, int(m.numel()), int(m.bool().sum().item())) for name, m in mask.items()
    )


def _flatten(config: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """``{"prune": {"epochs": 10}}`` → ``{"prune.epochs": "10"}`` (values as JSON text)."""
    out: dict[str, str] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):  # an empty dict adds no key: same as a missing one
            out.update(_flatten(value, f"{name}."))
        else:
            out[name] = json.dumps(value, sort_keys=True)
    return out


def read_run(path: str | Path, *, layers: bool = True) -> RunRecord | None:
    """One run folder as a record; None when it is unfinished (no summary.json yet).

    Raises :class:`RunError` naming ``path`` when it is not a run folder.
    """
    path = Path(path)
    if not path.is_dir():
        raise RunError(f"{path} is not a run folder (no such directory)")
    if not (path / "config.json").is_file():
        raise RunError(
            f"{path} is not a gemminer run folder (no config.json); pass run folders, e.g. runs/*"
        )
    config = _read_json(path / "config.json")
    if not (path / "summary.json").is_file():
        return None
    summary = _read_json(path / "summary.json")
    prune = config.get("prune") if isinstance(config.get("prune"), dict) else {}
    target = summary.get("target_density", prune.get("density"))
    density = summary.get("density", target)
    if target is None or density is None:
        raise RunError(f"{path}/summary.json names no density")
    settings = {k: v for k, v in _flatten(config).items() if k not in IGNORED_SETTINGS}
    return RunRecord(
        path=path,
        method=str(summary.get("method", config.get("method", "?"))),
        model=str(summary.get("model", config.get("model", "?"))),
        dataset=str(summary.get("dataset", config.get("dataset", "?"))),
        sanity_check=str(summary.get("sanity_check") or config.get("sanity_check") or ""),
        source_run=str(summary.get("source_run") or ""),
        seed=int(summary.get("seed", config.get("seed", 0))),
        target_density=float(target),
        density=float(density),
        pre_acc=summary.get("pre_finetune_acc"),
        post_acc=summary.get("post_finetune_acc"),
        epochs_to_mask=summary.get("epochs_to_mask"),
        settings=tuple(sorted(settings.items())),
        metrics=_read_metrics(path / "metrics.jsonl"),
        layers=_read_layers(path / "mask.pt") if layers else (),
        gem_density=summary.get("gem_density"),
        gem_acc=summary.get("gem_acc"),
        gem_acc_running_bn=summary.get("gem_acc_running_bn"),
    )


def _find_run(runs: Sequence[RunRecord], source: str) -> RunRecord | None:
    """The run whose folder is ``source`` (as written when the sanity run was made)."""
    if not source:
        return None
    target = Path(source)
    for run in runs:
        if run.path.resolve() == target.resolve():
            return run
    parts = target.parts
    for run in runs:  # written relative to another working folder: match the path's tail
        if run.path.resolve().parts[-len(parts) :] == parts:
            return run
    return None


def _series_key(run: RunRecord) -> tuple:
    return (run.method, run.sanity_check, run.settings)


def _setting_text(name: str, value: str | None) -> str:
    """``settings.lam``, ``"0.0001"`` → ``lam=0.0001``; a missing value reads ``default``."""
    name = name.removeprefix("settings.")
    if value is None:
        return f"{name}=default"
    text = json.loads(value)
    return f"{name}={text if isinstance(text, str) else value}"


def _series_labels(runs: Sequence[RunRecord]) -> dict[tuple, str]:
    """A label per series: method (+ sanity check), plus the settings telling apart the
    series of the same method and check."""
    by_name: dict[tuple[str, str], list[tuple]] = {}
    for run in runs:
        keys = by_name.setdefault((run.method, run.sanity_check), [])
        if _series_key(run) not in keys:
            keys.append(_series_key(run))
    labels = {}
    for (method, check), keys in by_name.items():
        base = f"{method} + {check}" if check else method
        dicts = [dict(k[2]) for k in keys]
        names = sorted({n for d in dicts for n in d})
        differing = [n for n in names if len({d.get(n) for d in dicts}) > 1]
        for key, d in zip(keys, dicts):
            if not differing:
                labels[key] = base
                continue
            shown = [_setting_text(n, d.get(n)) for n in differing[:_MAX_LABEL_SETTINGS]]
            if len(differing) > _MAX_LABEL_SETTINGS:
                shown.append("…")
            labels[key] = f"{base} ({', '.join(shown)})"
    return labels


def group_runs(runs: Sequence[RunRecord]) -> list[Group]:
    """Group runs differing only in seeds; ordered by target density, then method order
    of first appearance, sanity checks after their methods."""
    labels = _series_labels(runs)
    grouped: dict[tuple, list[RunRecord]] = {}
    for run in runs:
        grouped.setdefault((*_series_key(run), run.target_density), []).append(run)
    groups = [
        Group(
            label=labels[key[:3]],
            runs=tuple(sorted(members, key=lambda r: (r.seed, str(r.path)))),
        )
        for key, members in grouped.items()
    ]
    order = {label: i for i, label in enumerate(dict.fromkeys(labels.values()))}
    return sorted(groups, key=lambda g: (-g.target_density, bool(g.sanity_check), order[g.label]))


def collect_runs(paths: Iterable[str | Path], *, layers: bool = True) -> Collection:
    """Read every run folder in ``paths``; unfinished ones are listed, not read."""
    runs: list[RunRecord] = []
    unfinished: list[Path] = []
    seen: set[Path] = set()
    for p in paths:
        path = Path(p)
        resolved = path.resolve()
        if resolved in seen:
            continue
        seen.add(resolved)
        run = read_run(path, layers=layers)
        if run is None:
            unfinished.append(path)
        else:
            runs.append(run)
    return Collection(group_runs(runs), unfinished)
